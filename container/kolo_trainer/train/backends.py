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
from dataclasses import dataclass, field
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


def detect_device() -> Device:
    import torch

    if torch.cuda.is_available():
        return Device("cuda", torch.cuda.get_device_name(0), bool(torch.cuda.is_bf16_supported()))
    return Device("cpu", "cpu", False)


def _unsloth_importable() -> tuple[bool, str]:
    try:
        import unsloth  # noqa: F401  (imported for its patches; must precede transformers)
    except Exception as e:  # ImportError, or unsloth's own "no GPU" NotImplementedError
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return True, ""


def choose_backend(requested: str, method: str, device: Device) -> str:
    """Resolve ``--backend auto`` and refuse combinations that cannot run here, before anything slow."""
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


def _load_error(path: str, e: Exception) -> KoloError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return KoloError(f"cannot load base model {path!r}: {first}",
                     hint="check --base-model: a folder under the data root (e.g. models/tiny) or a Hugging Face id "
                          "that is already in the cache (this machine may have no network)")


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
        kwargs["device_map"] = {"": 0}
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
        )
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(path, e) from None
    revision = getattr(getattr(model, "config", None), "_commit_hash", None)
    targets: list[str] = []
    if opts.method in ("lora", "qlora"):
        targets = resolve_targets(model, opts.target_modules)
        _check_modules_to_save(model, opts.modules_to_save)
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
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.use_cache = False  # as in load_hf: and packed rows are only isolated without a KV cache
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


def versions(backend: str, method: str) -> dict[str, str | None]:
    import platform

    from .. import __version__

    names = ["torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "sentencepiece"]
    if backend == "unsloth":
        names += ["unsloth", "unsloth_zoo", "trl", "xformers"]
    if method == "qlora":
        names.append("bitsandbytes")
    out: dict[str, str | None] = {"python": platform.python_version(), "kolo_trainer": __version__}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out
