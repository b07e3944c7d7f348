"""Cheap checks before slow work: the one place that decides whether a ``train`` or ``export`` can start.

Run twice with the same code: on the host, before a container is touched (``kolo train`` / ``kolo export``), and in
the trainer, before a model is loaded (the container may see a different file system state, and the trainer can be
started without the host). Everything is collected and reported at once: option problems as one
:class:`~kolo_trainer.errors.OptionsError` (exit 2); a run folder that cannot be used (user files, in use, already
finished) as :class:`~kolo_trainer.errors.OutputExistsError` (exit 4); a missing or read-only data root, or too
little free disk, as a :class:`~kolo_trainer.errors.KoloError` naming the fix.

Light: stdlib + the option models; nothing here opens a model or a dataset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import names
from .errors import KoloError, OptionsError, OutputExistsError
from .runfolder import DataRoot, Run

#: A base model given as a path under the data root starts with one of these (anything else is a hub id, unless
#: such a folder exists under the data root).
LOCAL_PREFIXES = ("models/", "./", "outputs/", "models\\", ".\\")

#: Size of each GGUF relative to F16 (llama.cpp's bits per weight / 16, rounded up): the free-disk estimate.
GGUF_RATIO = {"F16": 1.0, "BF16": 1.0, "Q8_0": 0.54, "Q6_K": 0.42, "Q5_K_M": 0.37, "Q4_K_M": 0.32, "Q4_0": 0.29}


@dataclass
class TrainPlan:
    """What the checks resolved, for the trainer to use (paths resolved once, here)."""

    run: Run
    train_path: Path | None = None
    eval_path: Path | None = None
    base_local: Path | None = None


def _problem(e: KoloError) -> str:
    return e.message + (f" ({e.hint})" if e.hint else "")


def _data_file(root: DataRoot, rel: str | None, flag: str, problems: list[str]) -> Path | None:
    if rel is None:
        return None
    try:
        return root.file(rel, flag)
    except KoloError as e:
        problems.append(_problem(e))
        return None


def is_local_model(root: DataRoot, base: str) -> bool:
    """A folder under the data root rather than a hub id (``org/name``)."""
    bm = base.strip()
    return bm.startswith(LOCAL_PREFIXES) or bm.startswith(("/", "\\", "..")) or bm.count("/") > 1 \
        or (root.path / bm).exists()


#: What the Hugging Face Hub accepts as a repo id ("name" or "org/name"; no leading or trailing '-' or '.').
HUB_ID = re.compile(r"^(?:[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?/)?[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?$")


def local_model(root: DataRoot, base: str, problems: list[str]) -> Path | None:
    """The local base model folder (with a config.json), or None for a hub id; problems are appended."""
    if not is_local_model(root, base):
        if not HUB_ID.match(base.strip()) or "--" in base or ".." in base:
            problems.append(f"--base-model: {base!r} is neither a model folder under the data root (models/NAME) "
                            "nor a Hugging Face id (org/name)")
        return None
    bm = base.strip()
    try:
        p = root.resolve(bm, "--base-model")
    except KoloError as e:
        problems.append(_problem(e))
        return None
    if not (p / "config.json").is_file():
        what = "not found" if not p.exists() else "has no config.json (not a Hugging Face model folder)"
        problems.append(f"--base-model: {bm} {what} under the data root {root.display} (put the model folder "
                        "there, or use a Hugging Face id)")
        return None
    return p


def _option_problems(opts: Any) -> list[str]:
    problems = []
    if opts.eval_data is not None and opts.eval_split > 0:
        problems.append("--eval-data and --eval-split exclude each other; give one")
    if opts.resume and opts.overwrite:
        problems.append("--resume and --overwrite exclude each other: continue the run, or replace it")
    if opts.early_stopping_patience and opts.eval_data is None and opts.eval_split <= 0:
        problems.append("--early-stopping-patience needs eval data: add --eval-split 0.05 or --eval-data FILE")
    return problems


def _environment_problems(opts: Any) -> list[str]:
    """Packages the trainer needs here (only checked where it runs: the host may lack them legitimately)."""
    import importlib.util

    if opts.report_to == "none":
        return []
    mod = {"tensorboard": "tensorboard", "wandb": "wandb"}[opts.report_to]
    if importlib.util.find_spec(mod) is None:
        return [f"--report-to {opts.report_to}: the {mod} package is not installed "
                f"(pip install {mod}, or --report-to none)"]
    return []


def _default(field: str) -> Any:
    from .options import TrainOptions

    return TrainOptions.model_fields[field].get_default(call_default_factory=True)


def path_problems(root: DataRoot, values: dict[str, Any], plan: TrainPlan | None = None) -> list[str]:
    """Problems with the files and folders that training options name (given as raw values, so the host can
    report them together with option problems even when validation failed). Fills ``plan`` when given."""
    plan = plan if plan is not None else TrainPlan(run=None)  # type: ignore[arg-type]
    problems: list[str] = []
    name = values.get("output_dir", _default("output_dir"))
    if isinstance(name, str) and _valid(names.check_run_name, name):  # a bad name: validation reports it, once
        try:
            plan.run = root.run(name, "--output-dir")
        except KoloError as e:
            problems.append(_problem(e))
    for key, flag in (("train_data", "--train-data"), ("eval_data", "--eval-data")):
        rel = values.get(key, _default(key))
        if isinstance(rel, str) and _valid(names.check_relative, rel):
            setattr(plan, key.replace("_data", "_path"), _data_file(root, rel, flag, problems))
    base = values.get("base_model", _default("base_model"))
    if isinstance(base, str) and _valid(names.check_text, base) and base.strip():
        plan.base_local = local_model(root, base, problems)
    return problems


def _valid(check: Any, value: str) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


def train(root: DataRoot, opts: Any, environment: bool = False) -> TrainPlan:
    """Every check of a training run that costs no model load. Raises; returns the resolved paths."""
    root.check(writable=True)
    plan = TrainPlan(run=None)  # type: ignore[arg-type]
    problems = _option_problems(opts) + path_problems(root, opts.model_dump(), plan)
    if environment:
        problems += _environment_problems(opts)
    if problems:
        raise OptionsError(problems, hint="see `kolo train --help`")
    run_state(plan.run, opts)
    need = train_disk_bytes(plan.base_local, opts)
    if need:
        root.require_free(need, f"training {plan.run.label}" + (" and its export" if opts.quantization else ""))
    return plan


def run_state(run: Run, opts: Any) -> None:
    """The run folder can take this training: not a file, not the user's own files, not in use, and not a
    finished run unless --resume / --overwrite say what to do with it. (The trainer repeats this with the lock
    held, where checkpoints decide between resume and refusal.)"""
    run.refuse_foreign()
    # A lock of another host (the container's, seen from the host) is judged by the trainer, which runs there
    # and takes the lock itself; refusing it here would block --resume after the container was restarted.
    holder = run.holder(foreign_is_live=False)
    if holder:
        raise OutputExistsError(f"{run.label} is in use by another kolo process (pid {holder.get('pid')} on "
                                f"{holder.get('host')}, started {holder.get('started')})",
                                hint="wait for it to finish, or choose another --output-dir")
    if run.is_run() and not (opts.resume or opts.overwrite):
        status = run.manifest().get("status")
        if status == "finished":
            raise OutputExistsError(f"{run.label} already holds a finished run",
                                    hint="add --resume to continue it, --overwrite to replace it, or choose another "
                                         "--output-dir")


def model_bytes(folder: Path | None) -> int:
    """Bytes of a local model's weights in 16-bit (what merged/ and the F16 GGUF take); 0 when unknown."""
    if folder is None or not folder.is_dir():
        return 0
    size = sum(p.stat().st_size for p in folder.glob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    return size // 2 if "32" in dtype else size


def train_disk_bytes(base_local: Path | None, opts: Any) -> int:
    """A low estimate of what training (and the chained export) writes; 0 when the base model's size is unknown
    (a hub id): then only a full disk during the run can tell, and that is reported too."""
    f16 = model_bytes(base_local)
    if not f16:
        return 0
    need = 2 * f16 if opts.method == "full" else f16 // 50  # full: model/ + a checkpoint; LoRA: adapters
    return need + export_disk_bytes(f16, ["F16", *opts.quantization]) if opts.quantization else need


def export_disk_bytes(f16: int, quantizations: list[str], merged: bool = True) -> int:
    return (f16 if merged else 0) + int(sum(GGUF_RATIO.get(q, 1.0) for q in dict.fromkeys(quantizations)) * f16)
