"""Model loading for the two backends, and the training methods (lora, qlora, full).

* ``hf``: transformers + peft. Runs anywhere (CPU included).
* ``unsloth``: unsloth's ``FastLanguageModel`` (its fused kernels and offloaded gradient checkpointing). CUDA only.

Both return a :class:`Loaded` that the rest of the pipeline treats the same way: the same Trainer, collator and
callbacks train it, so outputs and progress events are identical. Heavy imports live inside the functions: unsloth
must be imported before transformers/peft to patch them, so :func:`choose_backend` (which imports it) runs before
anything else imports transformers.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KoloError, OptionsError


@dataclass
class Device:
    kind: str  # "cuda" | "cpu"
    name: str  # "NVIDIA H100 80GB HBM3" | "cpu"
    bf16_ok: bool = False

    def describe(self) -> str:
        return self.kind if self.kind == "cpu" else f"{self.kind} ({self.name})"


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    backend: str
    method: str
    device: Device
    dtype: str
    bf16: bool
    fp16: bool
    gradient_checkpointing: bool
    target_modules: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    revision: str | None = None


#: torch 2.14.1 from PyPI is a CUDA 13.0 build, and the image's llama.cpp is compiled with CUDA 13: both need an
#: NVIDIA driver of the 580 series or newer. One constant for the trainer, ``kolo doctor`` and the GPU smoke check.
MIN_NVIDIA_DRIVER = 580


@dataclass
class CudaProbe:
    """What this machine says about CUDA: torch's answer plus the NVIDIA driver's own traces."""

    torch_cuda: str | None  # torch.version.cuda: None for a CPU-only torch build
    available: bool  # torch.cuda.is_available()
    init_error: str  # why torch could not initialise CUDA ("" when it could, or did not try)
    nvidia_present: bool  # an NVIDIA kernel driver / device node exists
    driver: str | None  # the driver version, e.g. "575.57.08"


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver's version from /proc (no subprocess), else from nvidia-smi; None without one."""
    try:
        m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)",
                      Path("/proc/driver/nvidia/version").read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out and re.match(r"^\d+\.", out[0].strip()) else None


def driver_problem(version: str | None) -> str | None:
    """Why this driver cannot run kolo's CUDA 13 builds, or None when it can (or is unknown)."""
    if not version:
        return None
    try:
        major = int(version.split(".")[0])
    except ValueError:
        return None
    if major < MIN_NVIDIA_DRIVER:
        return (f"NVIDIA driver {version} is older than {MIN_NVIDIA_DRIVER}, the minimum for CUDA 13.0 "
                f"(torch 2.14 cu130 and kolo's llama.cpp build)")
    return None


def nvidia_present() -> bool:
    """An NVIDIA GPU is meant to be used here: its kernel driver or a device node exists, and CUDA_VISIBLE_DEVICES
    does not hide every GPU on purpose. Light: no torch, no subprocess."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def probe_cuda() -> CudaProbe:
    import torch

    present = nvidia_present()
    available = bool(torch.cuda.is_available())
    error = ""
    if not available and present and torch.version.cuda:
        try:  # is_available() swallows the reason; init() raises it
            torch.cuda.init()
        except Exception as e:
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CudaProbe(torch.version.cuda, available, error, present, nvidia_driver_version() if present else None)


def detect_device(probe: CudaProbe | None = None) -> Device:
    """cuda when torch can use the GPU, cpu when there is none; a KoloError when there is one torch cannot start.

    Training a 1B model on the CPU because the driver is too old would run for days without a word, so an NVIDIA
    driver that is present but unusable for this CUDA build of torch stops the run instead.
    """
    p = probe or probe_cuda()
    if p.available:
        import torch

        return Device("cuda", torch.cuda.get_device_name(0), bool(torch.cuda.is_bf16_supported()))
    if p.nvidia_present and p.torch_cuda:
        why = driver_problem(p.driver) or f"torch (CUDA {p.torch_cuda}) cannot initialise the GPU"
        raise KoloError(f"an NVIDIA GPU is present but unusable: {why}"
                        + (f" ({p.init_error})" if p.init_error else ""),
                        hint=f"install NVIDIA driver >= {MIN_NVIDIA_DRIVER} (`nvidia-smi` shows the version) and "
                             "restart; or hide the GPU (CUDA_VISIBLE_DEVICES= / a container without --gpus) to "
                             "train on the CPU on purpose")
    return Device("cpu", "cpu", False)


def unsloth_environment() -> None:
    """Settings unsloth reads at import time: no usage statistics sent to the hub, and its generated kernels in
    kolo's cache instead of ``unsloth_compiled_cache/`` in the working directory (the data root)."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kolo" / "unsloth_compiled_cache"
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(cache))


def _unsloth_importable() -> tuple[bool, str]:
    unsloth_environment()
    try:
        import unsloth  # noqa: F401  (imported for its patches; must precede transformers)
    except Exception as e:  # ImportError, or unsloth's own "no GPU" NotImplementedError
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return True, ""


def choose_backend(requested: str, method: str, device: Device, world: int = 1) -> str:
    """Resolve ``--backend auto`` and refuse combinations that cannot run here, before anything slow.

    Several processes (``world`` > 1) train with hf: kolo runs unsloth on one GPU only (TrainOptions refuses an
    explicit ``--backend unsloth`` there; see the reason in options.py)."""
    problems = []
    if method == "qlora" and device.kind != "cuda":
        problems.append("--method qlora: 4-bit bitsandbytes training needs a CUDA GPU and none was found; "
                        "use --method lora (or full) on this machine")
    if requested == "unsloth" and device.kind != "cuda":
        problems.append("--backend unsloth: unsloth needs a CUDA GPU and none was found; use --backend hf (or auto)")
    if problems:
        raise OptionsError(problems)
    if method == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except Exception as e:
            raise KoloError(f"--method qlora needs bitsandbytes, which does not import here ({e})",
                            hint="install the GPU extras: pip install 'kolo-trainer[gpu]' (the kolo image has them)")
    if requested == "hf":
        return "hf"
    if device.kind != "cuda":
        return "hf"  # auto on CPU
    if world > 1:
        from .. import progress

        progress.emit("warning", message=f"{world} training processes: using the hf backend (transformers + peft "
                                         "under DDP); kolo trains with unsloth on one GPU only")
        return "hf"
    ok, why = _unsloth_importable()
    if ok:
        return "unsloth"
    if requested == "unsloth":
        raise KoloError(f"--backend unsloth: unsloth does not import ({why})",
                        hint="install the GPU extras: pip install 'kolo-trainer[gpu]', or use --backend hf")
    from .. import progress

    progress.emit("warning", message=f"CUDA is available but unsloth does not import ({why}); training with the "
                                     "hf backend (transformers + peft) instead")
    return "hf"


def precision(device: Device, method: str, bf16_opt: bool | None) -> tuple[str, bool, bool]:
    """(weight dtype name, bf16 autocast, fp16 autocast).

    CPU: fp32 weights and no autocast by default (bf16 on a CPU without AMX is slower, and the tiny models used
    here gain nothing). CUDA: bf16 where supported. Without bf16 on CUDA, LoRA keeps a fp16 base (peft keeps the
    adapter in fp32, so fp16 AMP works) while a full fine-tune needs fp32 master weights for the grad scaler.
    """
    if device.kind == "cpu":
        return "float32", bool(bf16_opt), False
    bf16 = device.bf16_ok if bf16_opt is None else bool(bf16_opt)
    if bf16 and not device.bf16_ok:
        raise OptionsError([f"--bf16: this GPU ({device.name}) does not support bf16; use --no-bf16"])
    if bf16:
        return "bfloat16", True, False
    if method == "full":
        return "float32", False, True
    return "float16", False, True


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of every linear layer except the output head: what "all-linear" means for this architecture."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for full_name, module in model.named_modules():
        if module is head or full_name.split(".")[-1] == "lm_head":
            continue
        if isinstance(module, torch.nn.Linear):
            leaf = full_name.split(".")[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def resolve_targets(model: Any, requested: list[str]) -> list[str]:
    if not requested or requested == ["all-linear"]:
        names = linear_module_names(model)
        if not names:
            raise KoloError("this model has no linear layers for LoRA to adapt", hint="use --method full")
        return names
    known = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in requested if t != "all-linear" and t not in known]
    if missing:
        raise OptionsError([f"--target-modules: no module named {m!r} in this model (it has e.g. "
                            f"{', '.join(linear_module_names(model)[:8])})" for m in missing])
    return [t for t in requested if t != "all-linear"] + (linear_module_names(model) if "all-linear" in requested
                                                          else [])


def _count(model: Any) -> tuple[int, int]:
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _load_error(path: str, e: Exception) -> KoloError:
    return KoloError(f"cannot load base model {path!r}: {_first_line(e)}",
                     hint="check --base-model: a folder under the data root (e.g. models/tiny) or a Hugging Face id "
                          "that is already in the cache (this machine may have no network)")


def unsloth_error(stage: str, path: str, e: Exception, modules_to_save: list[str]) -> KoloError | None:
    """The kolo error for what unsloth raised while loading (``stage`` "load") or adding LoRA ("peft"); None for
    an exception that is not the user's to fix (a bug: let it surface).

    unsloth reports an unsupported or broken model with RuntimeError and a modules_to_save other than lm_head /
    embed_tokens with TypeError, where transformers/peft use OSError/ValueError; without this they are tracebacks.
    """
    if isinstance(e, (OSError, ValueError, KeyError)) or (stage == "load" and isinstance(e, RuntimeError)):
        err = _load_error(path, e)
        if isinstance(e, RuntimeError):
            err.hint = ("unsloth cannot load this model; check --base-model, or train it with --backend hf "
                        "(transformers + peft support more architectures)")
        return err
    if stage == "peft" and isinstance(e, TypeError) and modules_to_save:
        bad = [m for m in modules_to_save if m not in ("lm_head", "embed_tokens")]
        if bad:
            return OptionsError([f"--modules-to-save {', '.join(bad)}: the unsloth backend trains only lm_head and "
                                 f"embed_tokens fully ({_first_line(e)})"],
                                hint="use --modules-to-save lm_head / embed_tokens, or --backend hf")
    if stage == "peft" and isinstance(e, TypeError):
        return KoloError(f"unsloth cannot add LoRA adapters to {path!r}: {_first_line(e)}",
                         hint="check --target-modules / --lora-rank, or use --backend hf")
    return None


def load_hf(path: str, opts: Any, device: Device, local_only: bool) -> Loaded:
    """transformers + peft."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype_name, bf16, fp16 = precision(device, opts.method, opts.bf16)
    dtype = getattr(torch, dtype_name)
    gc = (device.kind == "cuda") if opts.gradient_checkpointing is None else bool(opts.gradient_checkpointing)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only}
    if opts.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16)
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this rank's GPU (distributed.init set it)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(path, e) from None
    if device.kind == "cuda" and opts.method != "qlora":
        model = model.to("cuda")
    # The KV cache is useless in training and costs memory; also, transformers isolates packed rows (--packing,
    # restarting position_ids) only when no cache is passed.
    model.config.use_cache = False
    revision = getattr(model.config, "_commit_hash", None)
    targets: list[str] = []
    if opts.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        if opts.method == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs={"use_reentrant": False})
        targets = resolve_targets(model, opts.target_modules)
        _check_modules_to_save(model, opts.modules_to_save)
        config = LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                            target_modules=targets, use_rslora=opts.use_rslora, bias="none",
                            modules_to_save=list(opts.modules_to_save) or None, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    trainable, total = _count(model)
    return Loaded(model, tokenizer, "hf", opts.method, device, dtype_name, bf16, fp16, gc, targets, trainable, total,
                  revision)


def _check_modules_to_save(model: Any, wanted: list[str]) -> None:
    known = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [m for m in wanted if m not in known]
    if missing:
        raise OptionsError([f"--modules-to-save: no module named {m!r} in this model" for m in missing])


def load_unsloth(path: str, opts: Any, device: Device, local_only: bool) -> Loaded:
    """unsloth's FastLanguageModel: 4-bit loading for qlora, its own offloaded gradient checkpointing."""
    unsloth_environment()
    from unsloth import FastLanguageModel  # first: it patches transformers/peft on import

    dtype_name, bf16, fp16 = precision(device, opts.method, opts.bf16)
    import torch

    gc = True if opts.gradient_checkpointing is None else bool(opts.gradient_checkpointing)
    gc_mode: Any = "unsloth" if gc else False
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=path,
            max_seq_length=opts.max_seq_length,
            dtype=None if dtype_name == "float32" else getattr(torch, dtype_name),
            load_in_4bit=opts.method == "qlora",  # unsloth defaults to True: always say it
            load_in_8bit=False,
            full_finetuning=opts.method == "full",
            use_gradient_checkpointing=gc_mode,
            random_state=opts.seed,
            local_files_only=local_only,
            # Without it unsloth swaps the repo (e.g. to its "-unsloth-bnb-4bit" copy, or unsloth/* for
            # meta-llama/*): the run would train another model than the manifest's id and revision say.
            use_exact_model_name=True,
        )
    except Exception as e:
        mapped = unsloth_error("load", path, e, opts.modules_to_save)
        if mapped is None:
            raise
        raise mapped from None
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    targets: list[str] = []
    if opts.method in ("lora", "qlora"):
        targets = resolve_targets(model, opts.target_modules)
        _check_modules_to_save(model, opts.modules_to_save)
        try:
            model = FastLanguageModel.get_peft_model(
                model,
                r=opts.lora_rank,
                target_modules=targets,
                lora_alpha=opts.lora_alpha,
                lora_dropout=opts.lora_dropout,
                bias="none",
                use_gradient_checkpointing=gc_mode,
                random_state=opts.seed,
                use_rslora=opts.use_rslora,
                modules_to_save=list(opts.modules_to_save) or None,
            )
        except Exception as e:
            mapped = unsloth_error("peft", path, e, opts.modules_to_save)
            if mapped is None:
                raise
            raise mapped from None
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.use_cache = False  # as in load_hf; unsloth also drops packed-row isolation when a KV cache is on
    # unsloth may return a tokenizer wrapper (processor) for some models; the text tokenizer is what we need.
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    trainable, total = _count(model)
    return Loaded(model, tokenizer, "unsloth", opts.method, device, dtype_name, bf16, fp16, gc, targets, trainable,
                  total, revision)


def for_inference(loaded: Loaded) -> None:
    """Switch to generation mode (unsloth has its own fast path that must be enabled explicitly)."""
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(loaded.model)
    loaded.model.eval()
    cfg = getattr(loaded.model, "config", None)
    if cfg is not None:
        cfg.use_cache = True


def xformers_status() -> str | None:
    """The xformers version unsloth actually loaded, else why not. PyPI's xformers wheels are built for another
    torch/CUDA than the image's cu130 torch; unsloth then falls back to SDPA, and the manifest must say so."""
    try:
        installed = md.version("xformers")
    except md.PackageNotFoundError:
        return None
    try:
        from unsloth.models import _utils as unsloth_utils
    except Exception:
        return f"{installed} (not loaded: unsloth does not import)"
    loaded = getattr(unsloth_utils, "xformers_version", None)
    return str(loaded) if loaded else f"{installed} (installed, not loaded: built for another torch/CUDA)"


def versions(backend: str, method: str) -> dict[str, str | None]:
    import platform

    from .. import __version__

    names = ["torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "sentencepiece"]
    if backend == "unsloth":
        names += ["unsloth", "unsloth_zoo", "trl"]
    if method == "qlora":
        names.append("bitsandbytes")
    out: dict[str, str | None] = {"python": platform.python_version(), "kolo_trainer": __version__}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    if backend == "unsloth":
        out["xformers"] = xformers_status()
    return out
