"""`kolo train`: every TrainOptions field as a flag, plus --config FILE.yaml and --dry-run.

Order of work, so a typo never costs a container start or a model load: merge YAML + flags, validate every option
AND the files they name (data under the data root, a local base model), report all problems at once, and only
then touch the runtime. ``--quantization`` is passed through: the trainer exports after training.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from kolo_trainer.errors import OptionsError

from ..state import STATE

HELP = (
    "Fine-tune a model on a dataset in the data root (LoRA by default), in the container or locally.\n\n"
    "Every option can also come from --config FILE.yaml (keys are the option names; flags win). Only the options "
    "you give are sent to the trainer, so an explicit 0 stays 0. --dry-run prints the exact command.\n\n"
    "Example: kolo train --train-data data/chats.jsonl --base-model unsloth/Llama-3.2-1B-Instruct --epochs 3 "
    "--quantization Q4_K_M"
)

LOCAL_MODEL_PREFIXES = ("models/", "./", "models\\", ".\\")


def file_problems(values: dict[str, Any], root: Path) -> list[str]:
    """Problems with the files the options name, checked on the host data root (which the container mounts)."""
    from kolo_trainer import names

    problems: list[str] = []
    for key in ("train_data", "eval_data"):
        rel = values.get(key)
        if key == "train_data" and rel is None:
            from kolo_trainer.options import TrainOptions

            rel = TrainOptions.model_fields["train_data"].default
        if not isinstance(rel, str):
            continue
        try:
            names.check_relative(rel)
        except ValueError:
            continue  # the option validation already reports the bad name
        path = root / rel
        if not path.is_file():
            flag = "--" + key.replace("_", "-")
            problems.append(f"{flag}: {rel} not found under the data root {root} "
                            f"(copy it in with `kolo data add FILE`)")
    base = values.get("base_model")
    if isinstance(base, str) and base:
        local = base.startswith(LOCAL_MODEL_PREFIXES)
        if local:
            try:
                names.check_relative(base)
            except ValueError as e:
                problems.append(f"--base-model: {e} (got {base!r})")
                return problems
            if not (root / base).is_dir():
                problems.append(f"--base-model: {base} not found under the data root {root} "
                                f"(put the model folder there, or use a Hugging Face id)")
    return problems


def resolve_options(flags: dict[str, Any], config: Path | None, root: Path,
                    check_files: bool = True) -> tuple[Any, dict[str, Any], list[str]]:
    """(validated TrainOptions, explicit values, file problems) or one OptionsError listing every problem.

    With ``check_files`` False (--dry-run) missing files are returned instead of raised: a dry run shows the
    command even before the data is in place, and says what is still missing."""
    from kolo_trainer import spec
    from kolo_trainer.options import TrainOptions

    problems: list[str] = []
    cfg: dict[str, Any] = {}
    if config is not None:
        try:
            cfg = spec.load_yaml(TrainOptions, config)
        except OptionsError as e:
            problems += e.problems
    given = {**cfg, **flags}
    result = explicit = None
    try:
        result, explicit = spec.merge(TrainOptions, cfg, flags)
    except OptionsError as e:
        problems += e.problems
    missing = file_problems(given, root)
    if check_files or problems:
        problems += missing
    if problems:
        raise OptionsError(problems, hint="see `kolo train --help`")
    return result, explicit, missing


def train(flags: dict[str, Any], config: Optional[Path], dry_run: bool) -> None:
    from kolo_trainer.options import TrainOptions

    from ..transport import make_transport, trainer_argv

    root = STATE.root()
    _, explicit, missing = resolve_options(flags, config, root, check_files=not dry_run)
    transport = make_transport(STATE.runtime, STATE.container, root, debug=STATE.debug)
    argv = trainer_argv("train", TrainOptions, explicit, transport.data_root)
    if dry_run:
        for problem in missing:
            print(f"warning: {problem}", file=sys.stderr)
        print(transport.dry_run_line(argv))
        return
    from ..render import make_renderer

    rc = transport.run(argv, make_renderer())
    if rc != 0:
        raise typer.Exit(rc)


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command

    extra = [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--config", "-c", metavar="FILE.yaml",
                                               help="YAML file of options; flags override its keys.",
                                               rich_help_panel="Run")),
        inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--dry-run", help="Print the exact command (one shell-quoted "
                                               "line) and run nothing.", rich_help_panel="Run")),
    ]
    # By name: `kolo --help` then never imports pydantic or builds the ~50 train flags (optionflags.LazyTyperGroup).
    make_command(app, "train", "kolo_trainer.options:TrainOptions", train, HELP, extra, rich_help_panel="Training")
