"""``python -m kolo_trainer plan [train options] [--json] --data-root ROOT``: the estimate of a training run.

Runs where training would run (the container, or locally), so it sees the same GPU, Hugging Face cache and disk.
Emits the plan as a ``result`` event (stage ``plan``) for ``kolo plan`` to render, and prints a plain summary; with
``--json`` it prints the plan as one JSON document instead.

Exit codes: 0 the run fits; 2 it does not fit the GPU / RAM (the options must change, as for any bad option);
1 it fits in memory but not on the disk (as ``kolo train``'s free-disk refusal); 1 when no estimate is possible
(the model's config.json is not readable here).
"""

from __future__ import annotations

import json

from .. import preflight, progress, spec
from ..errors import KoloError, OptionsError
from ..options import TrainOptions
from ..runfolder import DataRoot
from .estimate import Plan, gib, to_dict

PROG = "python -m kolo_trainer plan"

#: Exit code of a plan that does not fit the memory (same as kolo train's refusal: OptionsError).
EXIT_MEMORY = OptionsError.exit_code
#: Exit code of a plan that fits in memory but not on the disk (same as kolo train's free-disk refusal).
EXIT_DISK = KoloError.exit_code


def resolve(root: DataRoot, opts: TrainOptions) -> preflight.TrainPlan:
    """The base model folder (a bad --base-model is an error) and the data file (missing: planned without it)."""
    problems: list[str] = []
    tp = preflight.TrainPlan(run=None)  # type: ignore[arg-type]
    tp.base_local = preflight.local_model(root, opts.base_model, problems)
    if problems:
        raise OptionsError(problems, hint="see `kolo plan --help`")
    try:
        tp.train_path = root.file(opts.train_data, "--train-data")
    except KoloError:
        tp.train_path = None
    return tp


def exit_code(p: Plan) -> int:
    if not p.fits_memory:
        return EXIT_MEMORY
    return EXIT_DISK if p.disk_problem else 0


def summary(p: Plan) -> list[str]:
    """Plain lines (the host renders a table from the event instead)."""
    d = to_dict(p)
    mem = d["memory"]
    where = "GPU" if mem["device"] == "cuda" else "RAM"
    lines = [f"{p.model}: {d['params']['total']:,} parameters, {d['params']['trainable']:,} trainable "
             f"({p.setup.method})",
             f"peak {where}: {gib(mem['peak_bytes'])} of {gib(mem['budget_bytes'])} "
             f"({', '.join(f'{k} {gib(v)}' for k, v in mem['parts'].items())})",
             f"disk: {gib(d['disk']['need_bytes'])} needed, {gib(d['disk']['free_bytes'])} free"]
    lines += [f"does not fit: {x}" for x in d["problems"]]
    lines += [f"fits with: {a['flags']} (~{gib(a['need_bytes'])})" for a in p.advice if a["fits"]]
    lines += [f"note: {n}" for n in p.notes]
    lines.append("verdict: fits" if p.fits else "verdict: does not fit")
    return lines


def run(argv: list[str]) -> int:
    root_s, rest = spec.pop_data_root(list(argv))
    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    if any(a in ("-h", "--help") for a in rest):
        spec.build_parser(TrainOptions, PROG, __doc__.splitlines()[0]).print_help()
        return 0
    opts, _ = spec.parse_argv(TrainOptions, rest, prog=PROG)
    root = DataRoot(root_s).check()
    tp = resolve(root, opts)
    p = preflight.estimate(root, opts, tp)
    if p.arch is None:
        raise KoloError(f"cannot plan {opts.base_model}: {p.config}",
                        hint="put the model folder under the data root (models/NAME), or let the container "
                             "download it once")
    if as_json:
        print(json.dumps(to_dict(p), indent=2, default=str))
    else:
        progress.emit("result", stage="plan", plan=to_dict(p))
        print("\n".join(summary(p)))
    return exit_code(p)
