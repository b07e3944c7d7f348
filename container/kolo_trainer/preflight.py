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

class DoesNotFit(OptionsError):
    """The estimate says the run cannot fit the GPU / RAM: options must change (exit 2, like any bad option),
    with the changes that fit in the hint."""

    def __init__(self, problems: list[str], hint: str | None = None):
        KoloError.__init__(self, "this run does not fit this machine:\n" + "\n".join(f"  - {p}" for p in problems),
                           hint)
        self.problems = list(problems)


@dataclass
class TrainPlan:
    """What the checks resolved, for the trainer to use (paths resolved once, here)."""

    run: Run
    train_path: Path | None = None
    eval_path: Path | None = None
    base_local: Path | None = None
    estimate: Any = None  # the kolo_trainer.plan.Plan the checks judged by (recorded in kolo.json)


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
    plan.estimate = estimate(root, opts, plan)
    if opts.plan_check:
        check_estimate(root, opts, plan)
    return plan


def estimate(root: DataRoot, opts: Any, tp: TrainPlan) -> Any:
    """The plan of this run on this machine (kolo_trainer.plan): config.json and the data only, no weights."""
    import shutil

    from . import plan

    return plan.make(opts, base_local=tp.base_local, train_path=tp.train_path, machine=plan.detect(opts.gpu_memory),
                     free_disk=shutil.disk_usage(root.path).free)


def advice_hint(p: Any) -> str:
    """The changes the estimate found to fit, as flags, for an error's hint."""
    from .plan.estimate import gib

    fits = [f"{a['flags']} (~{gib(a['need_bytes'])})" for a in p.advice if a["fits"]]
    if fits:
        head = "each of these fits: " + "; ".join(fits)
    elif p.advice:
        best = p.advice[0]
        head = f"even {best['flags']} needs ~{gib(best['need_bytes'])}: use a bigger GPU or a smaller model"
    else:
        head = "use a smaller model or a machine with more memory"
    return head + " (see `kolo plan` with the same options; --no-plan-check trains anyway)"


def check_estimate(root: DataRoot, opts: Any, tp: TrainPlan) -> None:
    """Refuse a run the estimate says cannot fit: memory as OptionsError (exit 2, with the changes that fit),
    disk as the data root's free-disk error (exit 1). An unknown architecture is not judged."""
    p = tp.estimate
    if p is None or p.arch is None:
        return
    if not p.fits_memory:
        raise DoesNotFit(p.problems, hint=advice_hint(p))
    try:
        root.require_free(p.disk.need_bytes, f"training {tp.run.label}" + (" and its export" if opts.quantization
                                                                            else "") + " (checkpoints included)")
    except KoloError as e:
        e.hint = (e.hint + "; " if e.hint else "") + "fewer checkpoints (--save-total-limit), or --no-plan-check"
        raise


def run_state(run: Run, opts: Any) -> None:
    """The run folder can take this training: not a file, not the user's own files, not in use, and not a
    finished run unless --resume / --overwrite say what to do with it. (The trainer repeats this with the lock
    held, where checkpoints decide between resume and refusal.)"""
    if getattr(opts, "node_rank", 0) > 0:
        return  # a second node of a multi-node run: the run folder is node 0's (its rank 0 takes the lock)
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
    from .plan.disk import model_bytes_16

    return model_bytes_16(folder)


def export_disk_bytes(f16: int, quantizations: list[str], merged: bool = True) -> int:
    """Free disk an export needs (kolo_trainer.plan.disk owns the figures)."""
    from .plan.disk import export_bytes

    return export_bytes(f16, quantizations, merged)
