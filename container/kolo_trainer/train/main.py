"""``python -m kolo_trainer train [options] --data-root ROOT``: the training pipeline, one function per stage.

check -> lock -> data -> tokenizer + template -> encode -> model -> train -> save -> plot -> sample -> manifest.
Everything a user can get wrong is checked before the first slow step (``kolo_trainer.preflight``, the same checks
the host runs); each stage emits ``stage`` events (start/done) and the training loop emits ``progress`` events (see
``kolo_trainer.progress``). The run folder is ``kolo_trainer.runfolder``'s.

Export is NOT run from here: ``--quantization`` is recorded, and the caller (``kolo train`` on the host, the job
server) starts ``python -m kolo_trainer export`` as a separate process once training exits 0. So a trainer's
patched model code (unsloth's Triton kernels) never reaches export's CPU reference model, and neither package
imports the other.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import manifest, preflight, progress, spec
from ..errors import KoloError, OptionsError, OutputExistsError
from ..options import TrainOptions
from ..runfolder import EXPORT_ENTRIES, DataRoot, Run
from .checkpoints import valid_checkpoints
from .distributed import Dist

PROG = "python -m kolo_trainer train"


@dataclass
class Ctx:
    """Everything the stages share. Filled in stage by stage."""

    opts: TrainOptions
    explicit: dict
    root_obj: DataRoot
    run: Run
    t0: float = field(default_factory=time.perf_counter)
    timings: dict = field(default_factory=dict)
    train_path: Path | None = None
    eval_path: Path | None = None
    base_local: Path | None = None
    device: Any = None
    backend: str = ""
    lock: Any = None
    created_run_dir: bool = False
    resume_from: str | None = None
    train_rows: list = field(default_factory=list)  # list[list[message dict]]
    eval_rows: list = field(default_factory=list)
    data_section: dict = field(default_factory=dict)
    tokenizer: Any = None
    template: Any = None
    system: str | None = None
    train_examples: list = field(default_factory=list)
    eval_examples: list = field(default_factory=list)
    loaded: Any = None
    manifest_started: bool = False
    peak_gpu_before: int | None = None
    estimate: Any = None  # kolo_trainer.plan's Plan (from preflight), recorded next to what the run measured
    dist: Dist = field(default_factory=Dist)  # this process's rank when several train together (--nproc/--nnodes)

    @property
    def root(self) -> Path:
        return self.root_obj.path

    @property
    def run_dir(self) -> Path:
        return self.run.path


# ------------------------------------------------------------------------------------------------ helpers


def _stage(name: str, status: str, **detail: Any) -> None:
    progress.emit("stage", stage=name, status=status, **detail)


class _Timed:
    def __init__(self, ctx: Ctx, name: str, key: str | None = None):
        self.ctx, self.name, self.key = ctx, name, key or f"{name}_s"

    def __enter__(self) -> "_Timed":
        self.t = time.perf_counter()
        _stage(self.name, "start")
        return self

    def __exit__(self, exc_type, *a) -> None:
        dt = round(time.perf_counter() - self.t, 3)
        self.ctx.timings[self.key] = dt
        if exc_type is None:
            _stage(self.name, "done", seconds=dt)



def _peak_rss() -> int:
    # ru_maxrss is in KiB on Linux (the trainer runs on Linux: the container, or a Linux host)
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _peak_gpu() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def _messages(row: Any) -> list[dict]:
    """The normalised messages of a data row (kolo_trainer.data gives rows with ``messages``)."""
    msgs = row.get("messages") if isinstance(row, dict) else getattr(row, "messages", row)
    return [dict(m) for m in msgs]


# ------------------------------------------------------------------------------------------------ stages


def stage_check(ctx: Ctx) -> None:
    """Every path and option combination, all problems at once, before anything is loaded or locked."""
    if ctx.opts.report_to == "wandb":
        from .trainer import wandb_problems

        problems = wandb_problems(os.environ)
        if problems:
            raise OptionsError(problems)
    plan = preflight.train(ctx.root_obj, ctx.opts, environment=True)
    ctx.train_path, ctx.eval_path, ctx.base_local = plan.train_path, plan.eval_path, plan.base_local
    ctx.estimate = plan.estimate


def stage_device(ctx: Ctx) -> None:
    from . import backends

    ctx.device = backends.detect_device()
    if ctx.opts.fsdp and ctx.device.kind != "cuda":
        # Not torch's limit (FSDP2 trains on CPU over gloo) but accelerate's: 1.15.0 turns FSDP on only for
        # accelerator process groups (AcceleratorState.__init__, accelerate/state.py:986-1016, MULTI_CPU not in the
        # list), so on CPU processes the Trainer's FSDP settings are dropped and it trains plain DDP. See
        # docs/scale-out.md.
        raise OptionsError(["--fsdp: FSDP shards across CUDA GPUs and none was found; drop --fsdp to train with "
                            "DDP (a full copy per process)"])
    ctx.backend = backends.choose_backend(ctx.opts.backend, ctx.opts.method, ctx.device, ctx.dist.world)
    progress.emit("metric", stage="check", name="device", value=ctx.device.describe())
    progress.emit("metric", stage="check", name="backend", value=ctx.backend)


def stage_lock(ctx: Ctx) -> None:
    """Take the run lock, then decide fresh / resume / refuse from what the folder holds."""
    o = ctx.opts
    ctx.run.check_kind()
    ctx.created_run_dir = not ctx.run_dir.exists()
    ctx.lock = ctx.run.lock().acquire()
    ctx.run.refuse_foreign()  # again, now that nobody else can be writing here
    manifest.clean_stale_tmp(ctx.run_dir)
    old = ctx.run.manifest()
    status = old.get("status")
    ckpts = valid_checkpoints(ctx.run_dir / "checkpoints")
    has_outputs = (ctx.run_dir / "adapter").exists() or (ctx.run_dir / "model").exists()
    label = f"outputs/{o.output_dir}"
    if o.overwrite:
        return  # cleared in stage_prepare_output, once everything else checked out
    if o.resume:
        from .checkpoints import incomplete_checkpoints

        skipped = [c.name for c in incomplete_checkpoints(ctx.run_dir / "checkpoints")
                   if not ckpts or int(c.name.split("-", 1)[1]) > int(ckpts[-1].name.split("-", 1)[1])]
        if skipped:
            progress.emit("warning", message=f"{label}: skipping incomplete checkpoint(s) {', '.join(skipped)} "
                                             "(a file in it is truncated: killed or out of disk while saving)")
        if ckpts:
            ctx.resume_from = str(ckpts[-1])
            changed = [k for k, v in (old.get("options") or {}).items()
                       if k not in ("resume", "overwrite", "quantization", "sample_prompt", "report_to",
                                    "node_rank", "master_addr", "master_port", "plan_check", "gpu_memory")
                       and getattr(o, k, v) != v]
            if changed:
                progress.emit("warning", message=f"resuming {label} with changed options ({', '.join(changed)}); "
                                                 "the checkpoint's step count and data order may not match")
            return
        if status == "finished":
            raise OutputExistsError(f"{label} holds a finished run without checkpoints; nothing to resume",
                                    hint="use --overwrite to train it again, or choose another --output-dir")
        progress.emit("warning", message=f"--resume: no checkpoint in {label}; starting from the beginning")
        return
    if status == "finished" or has_outputs:
        raise OutputExistsError(f"{label} already holds a finished run",
                                hint="add --resume to continue it, --overwrite to replace it, or choose another "
                                     "--output-dir")
    if ckpts:
        raise OutputExistsError(f"{label} holds an unfinished run with checkpoints (up to {ckpts[-1].name})",
                                hint="add --resume to continue it, --overwrite to start over, or choose another "
                                     "--output-dir")


def stage_check_and_lock_once(ctx: Ctx) -> None:
    """Several processes: rank 0 alone checks the run folder and takes the lock (one lock, one fresh/resume
    decision; a rank checking while rank 0 holds the lock would find the run "in use"); the others take its
    answer, the resolved paths included."""
    from . import distributed

    keys = ("train_path", "eval_path", "base_local", "resume_from")
    decision: dict = {"failed": True}
    try:
        if ctx.dist.main:
            stage_check(ctx)
            stage_lock(ctx)
        decision = {"failed": False, **{k: getattr(ctx, k) for k in keys}}
    finally:
        decision = distributed.broadcast(ctx.dist, decision)
    if decision["failed"]:
        raise distributed.PeerFailed("rank 0 could not start the run (its own error says why)")
    for k in keys:
        setattr(ctx, k, decision[k])


def load_file(path: Path, name: str, fmt: str, skip_invalid: bool) -> tuple[list[list[dict]], Any, Any]:
    """(messages per valid row, LoadResult, DropReport); raises DataError listing every bad row unless
    --skip-invalid (file-level problems always raise)."""
    from .. import data

    result = data.load(str(path), fmt, display_name=name)
    report = data.raise_if_invalid(result, skip_invalid)
    return [_messages(r) for r in result.rows], result, report


def stage_data(ctx: Ctx) -> None:
    o = ctx.opts
    rows, result, report = load_file(ctx.train_path, o.train_data, o.data_format, o.skip_invalid)
    dropped = list(report.dropped)
    for w in getattr(result, "warnings", []) or []:
        progress.emit("warning", message=str(w))
    if dropped:
        progress.emit("warning", message=f"{len(dropped)} invalid row(s) in {o.train_data} skipped "
                                         "(--skip-invalid); listed in kolo.json data.dropped")
    ctx.train_rows = rows
    total = int(getattr(result, "rows_total", 0) or len(rows) + len(dropped))
    ctx.data_section = {
        "train_file": o.train_data, "sha256": manifest.sha256_file(ctx.train_path),
        "format": getattr(result, "format", o.data_format), "rows_total": total, "rows_kept": len(rows),
        "rows_dropped": len(dropped), "dropped": dropped, "eval_file": o.eval_data, "eval_rows": 0,
    }
    if ctx.eval_path is not None:
        erows, _, ereport = load_file(ctx.eval_path, o.eval_data, o.data_format, o.skip_invalid)
        ctx.eval_rows = erows
        ctx.data_section["eval_sha256"] = manifest.sha256_file(ctx.eval_path)
        ctx.data_section["eval_dropped"] = list(ereport.dropped)
    # The dataset's shared system prompt (if every row has the same one) becomes the Modelfile's SYSTEM default.
    systems = {m[0]["content"] if m and m[0].get("role") == "system" else None for m in rows}
    ctx.system = next(iter(systems)) if len(systems) == 1 else None
    progress.emit("metric", stage="data", name="rows", value=len(rows))


def stage_template(ctx: Ctx) -> None:
    from transformers import AutoTokenizer

    from .. import templates

    src = str(ctx.base_local) if ctx.base_local else ctx.opts.base_model
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=ctx.base_local is not None or _offline())
    except (OSError, ValueError) as e:
        from .backends import _load_error

        raise _load_error(ctx.opts.base_model, e) from None
    ctx.tokenizer = tok
    ctx.template = templates.resolve(ctx.opts.chat_template, getattr(tok, "chat_template", None), ctx.root,
                                     bos_token=tok.bos_token or "", eos_token=tok.eos_token)
    missing = [t for t in getattr(ctx.template, "special_tokens", []) or []
               if len(tok(t, add_special_tokens=False)["input_ids"]) != 1]
    if missing:
        progress.emit("warning", message="the tokenizer splits the template's special tokens "
                                         f"{', '.join(missing)} into several pieces; the model will learn them as "
                                         "plain text (a base model with its own matching template avoids this)")
    progress.emit("metric", stage="template", name="chat_template", value=ctx.template.name)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"


def encode_rows(ctx: Ctx, rows: list[list[dict]], what: str) -> tuple[list, list[int], list[dict]]:
    """Encode with the full length (for the statistics), then truncate. Rows left with no trained token after
    truncation are dropped and reported: they would cost compute and teach nothing."""
    from .. import masking
    from .collate import IGNORE, Example

    max_len = ctx.opts.max_seq_length
    examples, lengths, dropped = [], [], []
    for i, msgs in enumerate(rows):
        enc = masking.encode(ctx.tokenizer, msgs, ctx.template.jinja, train_on_inputs=ctx.opts.train_on_inputs,
                             max_length=None)
        ids, labels = list(enc.input_ids), list(enc.labels)
        lengths.append(len(ids))
        ids, labels = ids[:max_len], labels[:max_len]
        if all(x == IGNORE for x in labels[1:]):
            dropped.append({"row": i + 1, "reason": f"no assistant token within --max-seq-length {max_len}"})
            continue
        examples.append(Example(ids, labels, i))
    return examples, lengths, dropped


def held_out(n: int, split: float, seed: int) -> set[int]:
    """Which of ``n`` encoded rows ``--eval-split`` holds out (seeded, so `kolo eval` finds the same rows again)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return set(order[:max(1, round(n * split))])


def stage_encode(ctx: Ctx) -> None:
    from .collate import token_stats

    o = ctx.opts
    ex, lengths, dropped = encode_rows(ctx, ctx.train_rows, "train")
    if o.eval_split > 0 and not ctx.eval_rows:
        if len(ex) < 2:
            raise OptionsError([f"--eval-split {o.eval_split}: {len(ex)} usable row(s) is too few to hold some out"])
        held = held_out(len(ex), o.eval_split, o.seed)
        ctx.eval_examples = [e for i, e in enumerate(ex) if i in held]
        ex = [e for i, e in enumerate(ex) if i not in held]
    elif ctx.eval_rows:
        ctx.eval_examples, _, _ = encode_rows(ctx, ctx.eval_rows, "eval")
    if not ex:
        from ..errors import DataError

        raise DataError([f"{o.train_data}: no row has an assistant token within --max-seq-length {o.max_seq_length}"],
                        hint="raise --max-seq-length")
    ctx.train_examples = ex
    stats = token_stats(lengths, o.max_seq_length)
    stats["trained_tokens"] = sum(sum(1 for x in e.labels if x != -100) for e in ex)
    ctx.data_section.update(tokens=stats, eval_rows=len(ctx.eval_examples), rows_train=len(ex),
                            rows_no_target=len(dropped))
    if dropped:
        ctx.data_section["dropped_by_length"] = dropped
        progress.emit("warning", message=f"{len(dropped)} row(s) have no assistant token left after truncation "
                                         f"to --max-seq-length {o.max_seq_length}; not trained on")
    if stats["truncated_rows"]:
        progress.emit("warning", message=f"{stats['truncated_rows']} of {len(lengths)} row(s) are longer than "
                                         f"--max-seq-length {o.max_seq_length} and were truncated "
                                         f"(longest {stats['max']} tokens)")
    progress.emit("result", stage="encode", tokens=stats, train_rows=len(ex), eval_rows=len(ctx.eval_examples))


def stage_model(ctx: Ctx) -> None:
    from . import backends

    src = str(ctx.base_local) if ctx.base_local else ctx.opts.base_model
    local_only = ctx.base_local is not None or _offline()
    loader = backends.load_unsloth if ctx.backend == "unsloth" else backends.load_hf
    # Seed before the model is built: LoRA's A matrices (and any newly initialised weights) are drawn here, so
    # seeding only at the Trainer would make two runs with the same --seed start from different adapters.
    from transformers import set_seed

    set_seed(ctx.opts.seed)
    ctx.loaded = loader(src, ctx.opts, ctx.device, local_only)
    ld = ctx.loaded
    progress.emit("metric", stage="model", name="trainable_params", value=ld.trainable_params)
    progress.emit("metric", stage="model", name="total_params", value=ld.total_params)


def stage_prepare_output(ctx: Ctx) -> None:
    """Clear what a fresh run must not inherit, then write the manifest with status running."""
    from .callbacks import truncate_log

    o = ctx.opts
    if o.overwrite or not ctx.resume_from:
        # Overwrite: the old run goes (its GGUFs too: they would no longer match), kolo's own entries only. A
        # fresh start in a folder without checkpoints (e.g. a run that failed early) drops its leftovers the same way.
        ctx.run.remove_entries()
    else:
        step = int(Path(ctx.resume_from).name.split("-", 1)[1])
        truncate_log(ctx.run_dir / "train_log.jsonl", step)
        # The old export came from the old weights: it must never be offered as this run's model again.
        ctx.run.remove_entries(EXPORT_ENTRIES)
        manifest.update(ctx.run_dir, export=None)
    ld = ctx.loaded
    base_rel = os.path.relpath(ctx.base_local, ctx.root) if ctx.base_local else None
    manifest.update(
        ctx.run_dir,
        kolo_version=_version(), status="running", options=o.model_dump(), data=ctx.data_section,
        base_model={"id": o.base_model, "revision": ld.revision, "local_path": base_rel},
        chat_template=ctx.template.manifest(ctx.system) if hasattr(ctx.template, "manifest") else {
            "name": ctx.template.name, "jinja": ctx.template.jinja, "ollama_template": ctx.template.ollama,
            "stop": list(ctx.template.stop), "system": ctx.system},
        backend=ld.backend, method=ld.method, device=ld.device.describe(),
        precision={"dtype": ld.dtype, "bf16": ld.bf16, "fp16": ld.fp16,
                   "gradient_checkpointing": ld.gradient_checkpointing},
        lora={"target_modules": ld.target_modules, "modules_to_save": list(o.modules_to_save)}
        if ld.method != "full" else None,
        params={"trainable": ld.trainable_params, "total": ld.total_params},
        versions=__import__("kolo_trainer.train.backends", fromlist=["versions"]).versions(ld.backend, ld.method),
        resumed_from=os.path.relpath(ctx.resume_from, ctx.run_dir) if ctx.resume_from else None,
    )
    ctx.manifest_started = True


def _version() -> str:
    from .. import __version__

    return __version__


def stage_train(ctx: Ctx) -> tuple[Any, int | None]:
    """Returns (trainer, exit code if interrupted else None)."""
    from .callbacks import StopFlag, make_callbacks
    from .collate import EncodedDataset, FlattenCollator, PadCollator
    from .trainer import make_trainer, training_arguments

    o, ld = ctx.opts, ctx.loaded
    import torch
    from transformers import set_seed

    set_seed(o.seed)
    train_ds = EncodedDataset(ctx.train_examples)
    eval_ds = EncodedDataset(ctx.eval_examples) if ctx.eval_examples else None
    tok = ctx.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    collator = FlattenCollator(max_length=o.max_seq_length) if o.packing else PadCollator(pad_id)
    args = training_arguments(o, ctx.run_dir / "checkpoints", ld, eval_ds is not None, len(train_ds))
    stop = StopFlag()
    ref: dict = {}
    trainer = make_trainer(model=ld.model, args=args, train_ds=train_ds, eval_ds=eval_ds, collator=collator,
                           tokenizer=tok, callbacks=make_callbacks(ctx.run_dir / "train_log.jsonl", stop, ref, ctx.dist),
                           lengths=train_ds.lengths, seed=o.seed, early_stopping=o.early_stopping_patience)
    ref["trainer"] = trainer
    # before = the peak while loading (weights, 4-bit packing); after = the peak during training alone.
    ctx.peak_gpu_before = _peak_gpu()
    if ld.device.kind == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stop.install()
    try:
        trainer.train(resume_from_checkpoint=ctx.resume_from)
    finally:
        stop.restore()
    if stop.signum is not None:
        return trainer, stop.exit_code
    return trainer, None


def _final_losses(trainer: Any) -> tuple[float | None, float | None]:
    loss = ev = None
    for rec in trainer.state.log_history:
        if "loss" in rec:
            loss = rec["loss"]
        if "eval_loss" in rec:
            ev = rec["eval_loss"]
    return loss, ev


#: Files that make up a tokenizer in a HF model folder (copied verbatim from the base model, see save_tokenizer).
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model.v3",
                   "chat_template.jinja", "chat_template.json")


def _tokenizer_source(ctx: Ctx) -> Path | None:
    """The folder the training tokenizer was loaded from: the local base model, or its hub cache snapshot."""
    if ctx.base_local is not None:
        return ctx.base_local
    try:
        from transformers.utils import cached_file

        f = cached_file(ctx.opts.base_model, "tokenizer_config.json", local_files_only=True)
    except Exception:  # not cached in a way we can find: fall back to save_pretrained
        return None
    return Path(f).parent if f else None


def save_tokenizer(ctx: Ctx, out: Path) -> None:
    """The base model's tokenizer files, byte for byte, with the trained chat template set.

    Why not ``tokenizer.save_pretrained``: transformers 5 rewrites a SentencePiece tokenizer as tokenizer.json and
    drops ``tokenizer.model`` and ``legacy``; the reloaded tokenizer then splits text differently from the one the
    model was trained with (seen on the tiny model: other ids, no BOS), and llama.cpp's converter wants
    tokenizer.model. Copying the files keeps training, export and chat on the same tokenisation; the round trip
    is checked below.
    """
    import json as _json

    src = _tokenizer_source(ctx)
    copied = False
    if src is not None and (src / "tokenizer_config.json").is_file():
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
        copied = True
    else:
        ctx.tokenizer.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = _json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    cfg["chat_template"] = ctx.template.jinja
    cfg_path.write_text(_json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # transformers 5 reads chat_template.jinja in preference to the config key: keep both the same.
    (out / "chat_template.jinja").write_text(ctx.template.jinja, encoding="utf-8")
    _check_tokenizer_round_trip(ctx, out, copied)


def _check_tokenizer_round_trip(ctx: Ctx, out: Path, copied: bool) -> None:
    from transformers import AutoTokenizer

    probe = ctx.template.jinja[:200] + " Hello, world! 123 " + " ".join(
        m["content"] for m in (ctx.train_rows[0] if ctx.train_rows else [])[:3])
    try:
        again = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
        same = again(probe)["input_ids"] == ctx.tokenizer(probe)["input_ids"]
    except Exception as e:  # a tokenizer that does not even load back is the same problem, louder
        same, why = False, f" ({type(e).__name__}: {e})"
    else:
        why = ""
    if not same:
        progress.emit("warning", message="the saved tokenizer does not tokenise like the one used in training"
                                         f"{why}; export and chat may disagree with training "
                                         f"({'copied from the base model' if copied else 'written by transformers'})")


def stage_save(ctx: Ctx, trainer: Any) -> list[str]:
    """adapter/ (LoRA) or model/ (full), each with the tokenizer carrying the trained chat template.

    Under FSDP every rank holds a shard: all ranks call this, Trainer.save_model gathers the full weights
    (FULL_STATE_DICT) and rank 0 writes them, into rank 0's temporary folder."""
    from . import distributed

    ld = ctx.loaded
    final = ctx.run_dir / ("model" if ld.method == "full" else "adapter")
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False))
    if not ctx.dist.main:
        trainer.save_model(distributed.broadcast(ctx.dist, None))
        return []
    with manifest.atomic_path(final) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        if sharded:
            trainer.save_model(distributed.broadcast(ctx.dist, str(tmp)))
        else:
            ld.model.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(ctx, tmp)
    return [str(p.relative_to(ctx.run_dir)) for p in sorted(final.rglob("*")) if p.is_file()]


def stage_sample(ctx: Ctx) -> dict:
    from . import backends, sample

    backends.for_inference(ctx.loaded)
    trained = [ctx.train_rows[e.row] for e in ctx.train_examples if 0 <= e.row < len(ctx.train_rows)]
    msgs, expected = sample.pick_conversation(trained, ctx.opts.sample_prompt, ctx.system)
    if not msgs:
        return {"prompt": None, "response": None}
    text = sample.generate(ctx.loaded.model, ctx.tokenizer, ctx.template.jinja, list(ctx.template.stop), msgs)
    prompt = msgs[-1]["content"]
    print(f"sample prompt: {prompt}\nsample reply:  {text}", flush=True)
    out = {"prompt": prompt, "messages": msgs, "response": text, "expected": expected,
           "matches_data": (text == expected.strip()) if expected is not None else None}
    progress.emit("result", stage="sample", prompt=prompt, response=text)
    return out


# ------------------------------------------------------------------------------------------------ driver


def run(argv: list[str]) -> int:
    """Parse argv, run every stage. Returns the exit code (0, or 128+signal when interrupted).

    Under torchrun (``--nproc``/``--nnodes`` above 1) each rank runs this; see ``train/distributed.py``."""
    from . import distributed

    dist = distributed.current()
    if dist.active:
        return distributed.run_worker(lambda a: _run_argv(a, dist), list(argv), dist)
    return _run_argv(argv, dist)


def _run_argv(argv: list[str], dist: Dist) -> int:
    root_s, rest = spec.pop_data_root(list(argv))
    if any(a in ("-h", "--help") for a in rest):
        spec.build_parser(TrainOptions, PROG, __doc__.splitlines()[0]).print_help()
        return 0
    opts, explicit = spec.parse_argv(TrainOptions, rest, prog=PROG)
    root = DataRoot(root_s)
    run = root.run(opts.output_dir, "--output-dir")
    ctx = Ctx(opts=opts, explicit=explicit, root_obj=root, run=run, dist=dist)
    try:
        return _run(ctx)
    finally:
        if ctx.lock is not None:
            ctx.lock.release()
        # A run that failed before writing anything must not leave an empty folder behind.
        if ctx.created_run_dir and ctx.run_dir.is_dir() and not any(ctx.run_dir.iterdir()):
            ctx.run_dir.rmdir()


def _run(ctx: Ctx) -> int:
    _prepare(ctx)
    try:
        with _Timed(ctx, "train"):
            trainer, interrupted = stage_train(ctx)
        if not ctx.dist.main:  # the run folder is rank 0's (manifest, save, plot, sample); FSDP saves together
            if interrupted is None and getattr(trainer, "is_fsdp_enabled", False):
                stage_save(ctx, trainer)
            return interrupted or 0
        section, memory = _train_section(ctx, trainer)
        if interrupted is not None:
            manifest.update(ctx.run_dir, status="interrupted", train=section, memory=memory, timings=ctx.timings)
            ckpts = valid_checkpoints(ctx.run_dir / "checkpoints")
            print(f"interrupted at step {trainer.state.global_step}; checkpoint "
                  f"{ckpts[-1].name if ckpts else '(none)'} saved. Continue with --resume.", file=sys.stderr)
            return interrupted
        _finish(ctx, trainer, section, memory)
    except KeyboardInterrupt:
        _record_end(ctx, status="interrupted")
        raise
    except BaseException as e:
        _record_end(ctx, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
        full = _disk_full_error(ctx, e)
        if full is not None:
            raise full from e
        raise
    return 0


def _prepare(ctx: Ctx) -> None:
    """Every stage before training: checks and the lock (rank 0's, handed to the others), data, template,
    encoding, the model, and a cleared run folder."""
    from . import distributed

    if ctx.dist.active:
        with _Timed(ctx, "check"):
            stage_device(ctx)
            distributed.init(ctx.dist, ctx.device.kind)
        with _Timed(ctx, "lock"):
            stage_check_and_lock_once(ctx)
    else:
        with _Timed(ctx, "check"):
            stage_check(ctx)
            stage_device(ctx)
        with _Timed(ctx, "lock"):
            stage_lock(ctx)
    with _Timed(ctx, "data"):
        stage_data(ctx)
    with _Timed(ctx, "template"):
        stage_template(ctx)
    with _Timed(ctx, "encode"):
        stage_encode(ctx)
    with _Timed(ctx, "model", "load_s"):
        stage_model(ctx)
    if ctx.dist.main:
        stage_prepare_output(ctx)
    distributed.barrier(ctx.dist)  # nobody trains (and writes its RNG state) before rank 0 has cleared the folder


def _train_section(ctx: Ctx, trainer: Any) -> tuple[dict, dict]:
    """kolo.json's ``train`` and ``memory`` sections as training left them."""
    loss, eval_loss = _final_losses(trainer)
    st = trainer.state
    section = {"global_step": st.global_step, "max_steps": st.max_steps, "final_loss": loss,
               "final_eval_loss": eval_loss, "epochs": st.epoch, "tokens_seen": st.num_input_tokens_seen}
    cb = next((c for c in trainer.callback_handler.callbacks if type(c).__name__ == "ProgressCallback"), None)
    if cb is not None and cb.train_time > 0:
        section["tokens_per_s"] = round((st.num_input_tokens_seen - cb.start_tokens) / cb.train_time, 1)
    memory = {"peak_gpu_bytes_before": ctx.peak_gpu_before, "peak_gpu_bytes_after": _peak_gpu(),
              "peak_rss_bytes": _peak_rss()}
    return section, memory


def _finish(ctx: Ctx, trainer: Any, section: dict, memory: dict) -> None:
    """A run that trained to its end (or stopped early): save, plot, sample, and the manifest says finished."""
    section["stopped_early"] = trainer.state.global_step < trainer.state.max_steps
    if trainer.state.best_model_checkpoint:  # early stopping: the saved weights are this checkpoint's
        section.update(best_checkpoint=os.path.relpath(trainer.state.best_model_checkpoint, ctx.run_dir),
                       best_eval_loss=trainer.state.best_metric)
    with _Timed(ctx, "save"):
        artifacts = stage_save(ctx, trainer)
    with _Timed(ctx, "plot"):
        from .callbacks import read_log
        from .plot import plot_loss

        if plot_loss(read_log(ctx.run_dir / "train_log.jsonl"), ctx.run_dir / "loss.png",
                     f"{ctx.opts.output_dir}: {ctx.loaded.method} on {ctx.opts.base_model}"):
            artifacts.append("loss.png")
    with _Timed(ctx, "sample"):
        # A sharded model generates only with every rank taking part; the other ranks have left by now.
        sample_section = stage_sample(ctx) if not getattr(trainer, "is_fsdp_enabled", False) else {
            "prompt": None, "response": None, "skipped": "--fsdp: the model is sharded over the processes"}
    artifacts.append("train_log.jsonl")
    ctx.timings["total_s"] = round(time.perf_counter() - ctx.t0, 3)
    from ..plan.record import section as plan_section

    manifest.update(ctx.run_dir, status="finished", train=section, memory=memory, timings=ctx.timings,
                    sample=sample_section, plan=plan_section(ctx.estimate, {**memory, "peak_rss_bytes": _peak_rss()},
                                                             ctx.run_dir))
    manifest.add_artifacts(ctx.run_dir, artifacts)
    progress.emit("result", stage="train", output_dir=f"outputs/{ctx.opts.output_dir}",
                  global_step=section["global_step"], final_loss=section["final_loss"],
                  final_eval_loss=section["final_eval_loss"])


def _record_end(ctx: Ctx, **fields: Any) -> None:
    """Mark the manifest; when the disk is full even that can fail, and must not hide the real error."""
    if not ctx.dist.main:
        return  # kolo.json is rank 0's; the launcher records another rank's failure there
    try:
        manifest.update(ctx.run_dir, timings=ctx.timings, last_resort=True, **fields)
    except OSError as e:
        print(f"warning: could not record the run's status in kolo.json ({e.strerror or e})", file=sys.stderr)


def _disk_full_error(ctx: Ctx, e: BaseException) -> KoloError | None:
    """A failed write on a full disk surfaces as many exception types (OSError from safetensors, RuntimeError
    "file write failed" from torch.save): ask the disk instead of parsing messages."""
    if isinstance(e, KoloError):
        return None
    try:
        free = shutil.disk_usage(ctx.run_dir).free
    except OSError:
        return None
    if free > 64 * 2**20 and not (isinstance(e, OSError) and e.errno in (28, 122)):  # ENOSPC, EDQUOT
        return None
    return KoloError(f"the disk holding the data root ran out of space while training {ctx.run.label} "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                     hint="free some space, then run the same command with --resume to continue from the last "
                          "complete checkpoint")
