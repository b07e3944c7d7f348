"""The plan of one training run: what the options resolve to on this machine, the memory/disk/time figures, the
verdict, and the changes that make a run fit (each found by estimating again with the change, never guessed).

Light: stdlib + the option model; config.json, the data file and the tokenizer files are read (tokenizers /
sentencepiece when installed), no weights, no transformers, no network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import arch as arch_mod
from . import disk as disk_mod
from . import memory as mem
from .machine import GIB, Machine

#: Characters per token when the model's tokenizer files are not at hand: the common rule of thumb of ~4
#: characters per token for English BPE vocabularies; said in the output whenever it is used.
CHARS_PER_TOKEN = 4
#: Characters of template markup per message (role headers, turn delimiters), same rough rule.
MARKUP_CHARS = 16
#: Model FLOP utilisation assumed for the time estimate (6N FLOPs/token for full training, 4N for LoRA whose
#: frozen weights need no weight gradients, +2N with checkpointing's recompute: Kaplan et al. 2020 / the
#: Chinchilla accounting). A rough figure: the output says "rough".
MFU = 0.35
#: Dense bf16 peak TFLOPS of common GPUs (vendor data sheets); unknown GPUs get no time estimate on GPU.
GPU_TFLOPS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L40": 181, "A6000": 155, "A10": 125,
              "L4": 121, "4090": 165, "3090": 71, "4080": 97, "3080": 60, "T4": 65, "V100": 125}
#: Effective fp32 training throughput of one CPU core. Order of magnitude measured here: a full fine-tune of the
#: 85M-parameter model of bench/plan_accuracy.py ran 3 steps of 4 x ~52 tokens (6N FLOPs each) in 32 s on two busy
#: cores, ~10 GFLOPS in all.
CPU_FLOPS_PER_CORE = 5e9


@dataclass
class DataInfo:
    rows: int = 0
    tokens: int = 0
    longest: int = 0
    source: str = ""  # how tokens were counted


@dataclass
class Plan:
    model: str
    config: str
    arch: arch_mod.Arch | None
    setup: mem.Setup | None = None
    machine: Machine | None = None
    data: DataInfo = field(default_factory=DataInfo)
    memory: mem.Memory | None = None
    host_ram: int = 0
    disk: disk_mod.Disk | None = None
    free_disk: int | None = None
    side_bytes: int = 0  # tokenizer/config files copied into every save
    total_steps: int = 0
    seconds_per_epoch: float | None = None
    problems: list[str] = field(default_factory=list)  # why it does not fit (memory), one per line
    disk_problem: str | None = None
    advice: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits_memory(self) -> bool:
        return not self.problems

    @property
    def fits(self) -> bool:
        return not self.problems and self.disk_problem is None


#: Rows tokenised to measure the tokenizer's tokens per character (evenly spaced over the file).
SAMPLE_ROWS = 512
#: Files above this size are not re-read for a sample (the plan stays quick): characters / 4 instead.
SAMPLE_MAX_BYTES = 64 * 1024 ** 2
#: Tokens of template markup per message (role header, end of turn) when the tokenizer is known: 5 in Llama 3's
#: and ChatML's templates; a small vocabulary splits the role names further (the tiny test model: ~8).
MARKUP_TOKENS = 8


def _tokenizer(folder: Path | None) -> Any:
    """A callable text -> token count from the model folder's tokenizer files, through the light tokenizer
    libraries (tokenizers for tokenizer.json, sentencepiece for tokenizer.model; no transformers, no torch), or
    None when neither the files nor the libraries are there."""
    if folder is None:
        return None
    try:
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
        if (folder / "tokenizer.model").is_file():
            import sentencepiece

            sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
            return lambda text: len(sp.encode(text))
    except Exception:  # a tokenizer these libraries cannot read: fall back to characters / 4
        return None
    return None


def _tokens_per_char(path: Path, fmt: str, display: str, folder: Path | None) -> float | None:
    count = _tokenizer(folder)
    if count is None or path.stat().st_size > SAMPLE_MAX_BYTES:
        return None
    from .. import data

    rows = data.load(str(path), fmt, display_name=display).rows
    step = max(1, len(rows) // SAMPLE_ROWS)
    texts = [str(m.get("content", "")) for r in rows[::step] for m in (r.get("messages") if isinstance(r, dict)
                                                                         else getattr(r, "messages", []))]
    chars = sum(map(len, texts))
    return sum(map(count, texts)) / chars if chars else None


def data_info(path: Path | None, display: str, fmt: str, max_len: int, folder: Path | None = None) -> DataInfo:
    """Rows and a token count from kolo's own (stdlib) data loader's statistics: characters x the base model's
    tokens per character measured on a sample of rows (when its tokenizer files are at hand), else characters / 4."""
    if path is None or not path.is_file():
        return DataInfo(source="no data file: sequences taken as --max-seq-length long")
    from .. import data

    st = data.load(str(path), fmt, display_name=display, keep_rows=False).stats or {}
    rows = int(st.get("rows") or 0)
    if not rows:
        return DataInfo(source="no valid rows: sequences taken as --max-seq-length long")
    chars, turns = st.get("chars") or {}, st.get("turns_per_row") or {}
    system = 1 if st.get("rows_with_system") else 0
    msgs_mean, msgs_max = float(turns.get("mean") or 0) + system, int(turns.get("max") or 0) + system
    ratio = _tokens_per_char(path, fmt, display, folder)
    if ratio is None:
        per_char, markup, source = 1 / CHARS_PER_TOKEN, MARKUP_CHARS / CHARS_PER_TOKEN, \
            f"characters / {CHARS_PER_TOKEN} (no tokenizer files the plan can read)"
    else:
        per_char, markup, source = ratio, MARKUP_TOKENS, f"the model's tokenizer on {min(rows, SAMPLE_ROWS)} rows"
    tokens = (float(chars.get("mean") or 0) * per_char + markup * msgs_mean) * rows
    longest = math.ceil(int(chars.get("max") or 0) * per_char + markup * msgs_max)
    return DataInfo(rows=rows, tokens=int(min(tokens, rows * max_len)), longest=min(longest, max_len),
                    source=source)


def setup(a: arch_mod.Arch, opts: Any, m: Machine, seq_len: int) -> mem.Setup:
    """The dtype / checkpointing / targets the trainer will choose (train/backends.py: precision, load_hf)."""
    if m.kind == "cpu":
        wb, cb = 4, 2 if opts.bf16 else 4
    else:
        bf16 = m.bf16_ok if opts.bf16 is None else bool(opts.bf16)
        wb = 2 if bf16 or opts.method != "full" else 4
        cb = 2
    gc = (m.kind == "cuda") if opts.gradient_checkpointing is None else bool(opts.gradient_checkpointing)
    # --packing needs no term of its own: a packed micro-batch is its rows laid end to end (FlattenCollator), at
    # most batch x the longest row -- the same bound as padding to the longest row; packing saves the padding.
    shapes = a.linear_shapes()
    targets = tuple(shapes) if "all-linear" in opts.target_modules or not opts.target_modules \
        else tuple(t for t in opts.target_modules if t in shapes)
    return mem.Setup(method=opts.method, device=m.kind, weight_bytes=wb, compute_bytes=cb, gradient_checkpointing=gc,
                     batch_size=opts.batch_size, seq_len=seq_len, lora_rank=opts.lora_rank, targets=targets,
                     modules_to_save=tuple(opts.modules_to_save), world=opts.world_size, nproc=opts.nproc,
                     fsdp=bool(opts.fsdp))


def seconds_per_epoch(a: arch_mod.Arch, s: mem.Setup, m: Machine, tokens: int) -> float | None:
    n = a.total_params()
    flops_per_token = (6 if s.method == "full" else 4) * n + (2 * n if s.gradient_checkpointing else 0)
    if m.kind == "cpu":
        rate = m.cpus * CPU_FLOPS_PER_CORE  # several processes share the same cores: no faster
    else:
        peak = next((t for k, t in GPU_TFLOPS.items() if m.gpu_name and k in m.gpu_name.upper()), None)
        if peak is None:
            return None
        rate = peak * 1e12 * MFU * s.world  # data parallel: each device takes 1/world of the tokens
    return tokens * flops_per_token / rate if tokens else None


def gib(n: int | float | None) -> str:
    """A size for messages: GiB, or MiB below one GiB."""
    if n is None:
        return "?"
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024 ** 2:.1f} MiB"


def _steps(opts: Any, rows: int) -> int | None:
    """Optimizer steps as Trainer counts them (the one rule: train.trainer.steps_plan), None when unknown."""
    from ..train.trainer import steps_plan

    if rows <= 0:
        return opts.max_steps if opts.max_steps > 0 else None
    return steps_plan(max(1, int(rows * (1 - opts.eval_split))), opts)[1]


def evaluate(p: Plan, opts: Any) -> Plan:
    """Fill the figures and the verdict of ``p`` (whose arch, machine and data are known) for ``opts``."""
    a, m = p.arch, p.machine
    seq = p.data.longest or opts.max_seq_length
    p.setup = s = setup(a, opts, m, min(seq, opts.max_seq_length))
    p.memory = mem.estimate(a, s)
    p.host_ram = mem.host_ram(a, s, p.memory)
    steps = _steps(opts, p.data.rows)
    p.total_steps = steps or 0
    p.disk = disk_mod.estimate(a, s, total_steps=steps if steps is not None else opts.save_steps *
                               opts.save_total_limit, save_steps=opts.save_steps,
                               save_total_limit=opts.save_total_limit, quantizations=list(opts.quantization),
                               side=p.side_bytes)
    p.seconds_per_epoch = seconds_per_epoch(a, s, m, p.data.tokens)
    p.problems, p.disk_problem = _judge(p), None
    if p.free_disk is not None and p.disk.need_bytes > p.free_disk:
        p.disk_problem = (f"the run needs ~{gib(p.disk.need_bytes)} of disk (checkpoints, saved model"
                          f"{', export' if opts.quantization else ''}) and {gib(p.free_disk)} is free")
    return p


def need(p: Plan) -> int:
    """What is compared with the device's memory: the GPU peak plus what torch does not count, or the RSS."""
    return mem.gpu_need(p.memory.peak) if p.setup.device == "cuda" else p.host_ram


def _judge(p: Plan) -> list[str]:
    m = p.machine
    out = []
    if m.kind == "cuda":
        if m.gpu_bytes is not None and need(p) > m.gpu_bytes:
            out.append(f"it needs ~{gib(need(p))} of GPU memory (peak {gib(p.memory.peak)} + "
                       f"{int(mem.ALLOCATOR_SLACK * 100)} % allocator slack + {gib(mem.CUDA_CONTEXT)} CUDA context) "
                       f"and the GPU has {gib(m.gpu_bytes)} ({m.gpu_name or 'GPU'}, {m.source})")
        if p.host_ram > m.ram_bytes:
            out.append(f"it needs ~{gib(p.host_ram)} of host RAM and {gib(m.ram_bytes)} is available")
    elif p.host_ram > m.ram_bytes:
        procs = f" ({p.setup.nproc} processes)" if p.setup.nproc > 1 else ""
        out.append(f"it needs ~{gib(p.host_ram)} of RAM (CPU training{procs}) and {gib(m.ram_bytes)} is available")
    return out


def _flags(changes: dict[str, Any]) -> str:
    from ..spec import flag_name

    out = []
    for k, v in changes.items():
        if isinstance(v, bool):
            out.append(flag_name(k) if v else "--no-" + flag_name(k)[2:])
        else:
            out.append(f"{flag_name(k)} {v}")
    return " ".join(out)


def _candidates(p: Plan, opts: Any) -> list[tuple[str, dict[str, Any]]]:
    """Single changes that lower the peak, in the order a user would rather make them."""
    s, out = p.setup, []
    if not s.gradient_checkpointing:
        out.append(("gradient checkpointing", {"gradient_checkpointing": True}))
    b = opts.batch_size // 2
    while b >= 1:  # same effective batch through accumulation: the training itself stays the same
        out.append(("smaller batch", {"batch_size": b, "gradient_accumulation_steps":
                                      opts.gradient_accumulation_steps * math.ceil(opts.batch_size / b)}))
        b //= 2
    n = s.seq_len // 2
    while n >= 128:
        out.append(("shorter sequences", {"max_seq_length": n}))
        n //= 2
    if opts.method == "full":
        out.append(("LoRA", {"method": "lora"}))
    if p.machine.kind == "cuda" and opts.method != "qlora":
        out.append(("QLoRA", {"method": "qlora"}))
    return out


def advise(p: Plan, opts: Any) -> list[dict]:
    """For each kind of change, the mildest that fits (estimated again with the change); when none fits alone,
    the combination of all of them, fitting or not."""
    found: dict[str, dict] = {}
    for kind, changes in _candidates(p, opts):
        if kind in found:
            continue
        q = evaluate(_again(p), opts.model_copy(update=changes))
        if q.fits_memory:
            found[kind] = {"change": kind, "flags": _flags(changes), "need_bytes": need(q), "fits": True}
    if found:
        return list(found.values())
    combo: dict[str, Any] = {"gradient_checkpointing": True, "batch_size": 1,
                             "gradient_accumulation_steps": opts.gradient_accumulation_steps * opts.batch_size}
    if opts.method == "full" or p.machine.kind == "cuda":
        combo["method"] = "qlora" if p.machine.kind == "cuda" else "lora"
    if p.setup.gradient_checkpointing:
        del combo["gradient_checkpointing"]  # already on: not a change
    q = evaluate(_again(p), opts.model_copy(update=combo))
    return [{"change": "all together", "flags": _flags(combo), "need_bytes": need(q), "fits": q.fits_memory}]


def _again(p: Plan) -> Plan:
    return Plan(model=p.model, config=p.config, arch=p.arch, machine=p.machine, data=p.data, free_disk=None,
                side_bytes=p.side_bytes)


def make(opts: Any, *, base_local: Path | None, train_path: Path | None, machine: Machine,
         free_disk: int | None) -> Plan:
    """The plan of ``opts`` on ``machine``; an unknown architecture gives a plan with a note and no verdict."""
    a, src = arch_mod.load(base_local, opts.base_model)
    p = Plan(model=opts.base_model, config=src, arch=a, machine=machine, free_disk=free_disk,
             side_bytes=disk_mod.side_files(base_local))
    if a is None:
        p.notes.append(f"no estimate: {src}")
        return p
    tok_folder = base_local if base_local is not None else (Path(src).parent if a is not None else None)
    p.data = data_info(train_path, opts.train_data, opts.data_format, opts.max_seq_length, tok_folder)
    evaluate(p, opts)
    if not p.fits_memory:
        p.advice = advise(p, opts)
    if opts.method == "qlora" and machine.kind == "cpu":
        p.notes.append("--method qlora needs a CUDA GPU; the trainer will refuse it here")
    if getattr(opts, "nproc", 1) * getattr(opts, "nnodes", 1) > 1:
        p.notes.append("several training processes: the memory figures are per process (each holds a full copy; "
                       "--fsdp shards weights, gradients and optimizer states, so they are an upper bound there)")
    if machine.kind == "cuda" and opts.backend != "hf":
        p.notes.append("figures are for the hf backend; unsloth (chosen by --backend auto on CUDA) usually needs "
                       "less, so they are an upper bound there")
    return p


def to_dict(p: Plan) -> dict[str, Any]:
    """The machine-readable plan (``kolo plan --json``, the manifest's ``plan.estimate``)."""
    from dataclasses import asdict

    out: dict[str, Any] = {"model": p.model, "config": p.config, "fits": p.fits if p.arch else None,
                           "problems": p.problems + ([p.disk_problem] if p.disk_problem else []),
                           "advice": p.advice, "notes": p.notes}
    if p.arch is None:
        return out
    s, d = p.setup, p.disk
    out["arch"] = asdict(p.arch)
    out["params"] = {"total": p.arch.total_params(), "trainable": mem.trainable_params(p.arch, s)}
    out["setup"] = {**asdict(s), "targets": list(s.targets), "modules_to_save": list(s.modules_to_save)}
    out["machine"] = asdict(p.machine)
    out["memory"] = {"device": s.device, "parts": dict(p.memory.parts), "peak_bytes": p.memory.peak,
                     "need_bytes": need(p),
                     "host_ram_bytes": p.host_ram, "budget_bytes": p.machine.gpu_bytes if s.device == "cuda"
                     else p.machine.ram_bytes, "fits": p.fits_memory}
    out["disk"] = {"checkpoint_bytes": d.checkpoint_each, "checkpoints": d.checkpoints,
                   "checkpoints_kept": d.checkpoints_kept, "final_bytes": d.final, "merged_bytes": d.merged,
                   "gguf_bytes": d.gguf, "requested": d.requested, "train_bytes": d.train_bytes,
                   "export_bytes": d.export_bytes, "written_bytes": d.written_bytes, "need_bytes": d.need_bytes,
                   "free_bytes": p.free_disk, "fits": p.disk_problem is None}
    out["time"] = {"rows": p.data.rows, "tokens_per_epoch": p.data.tokens, "token_count": p.data.source,
                   "total_steps": p.total_steps, "seconds_per_epoch": p.seconds_per_epoch, "rough": True}
    return out
