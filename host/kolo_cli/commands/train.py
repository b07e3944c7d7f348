"""`kolo train`: every TrainOptions field as a flag, plus --config FILE.yaml and --dry-run.

Order of work, so a typo never costs a container start or a model load: merge YAML + flags, validate every option
AND the files they name (data under the data root, a local base model), report all problems at once, and only
then touch the runtime. With ``--quantization`` the export runs after training, as its own trainer process
(``kolo_cli.pipeline``).
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

def resolve_options(flags: dict[str, Any], config: Path | None, root: Any, check_files: bool = True,
                    files_here: bool = True) -> tuple[Any, dict[str, Any], list[str]]:
    """(validated TrainOptions, explicit values, path problems) or one OptionsError listing every problem.

    The checks are ``kolo_trainer.preflight``'s, the same the trainer repeats: option values, the files they name
    under the data root, the run folder (user files, in use, finished), free disk. With ``check_files`` False
    (--dry-run) path problems are returned instead of raised: a dry run shows the command even before the data is
    in place, and says what is still missing. ``files_here`` False (a remote engine's data root): the files are
    not on this machine, so none is looked for here; the trainer on the engine checks them."""
    from kolo_trainer import preflight, spec
    from kolo_trainer.options import TrainOptions

    problems: list[str] = []
    cfg: dict[str, Any] = {}
    if config is not None:
        try:
            cfg = spec.load_yaml(TrainOptions, config)
        except OptionsError as e:
            problems += e.problems
    result = explicit = None
    try:
        result, explicit = spec.merge(TrainOptions, cfg, flags)
    except OptionsError as e:
        problems += e.problems
    missing = preflight.path_problems(root, {**cfg, **flags}) if files_here and (
        check_files or problems or root.path.is_dir()) else []
    if problems or (check_files and missing):
        raise OptionsError(problems + (missing if check_files or problems else []), hint="see `kolo train --help`")
    if check_files:
        preflight.train(root, result)  # the run folder and the disk (option/path problems are known to be none)
    return result, explicit, missing


def train(flags: dict[str, Any], config: Optional[Path], dry_run: bool) -> None:
    from ..docker_ctl import is_remote
    from ..pipeline import run_steps, train_steps
    from ..transport import make_transport

    root = STATE.data()
    # A remote engine's data root is not here: the trainer runs the same file checks there, before any model loads.
    remote = not dry_run and STATE.runtime == "docker" and is_remote()
    opts, explicit, missing = resolve_options(flags, config, root, check_files=not dry_run and not remote,
                                              files_here=not remote)
    transport = make_transport(STATE.runtime, STATE.container, root.path, debug=STATE.debug)
    steps = train_steps(opts, explicit, transport.data_root)
    if dry_run:
        from ..console import warn

        for problem in missing:
            warn(problem)
        for argv in steps:
            print(transport.dry_run_line(argv))
        return
    from ..render import make_renderer

    rc = run_steps(transport, steps, make_renderer)
    if rc != 0:
        raise typer.Exit(rc)


def config_param() -> inspect.Parameter:
    """``--config FILE.yaml``: the train options from a file (kolo train and kolo plan take the same)."""
    return inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                             default=typer.Option(None, "--config", "-c", metavar="FILE.yaml",
                                                  help="YAML file of options; flags override its keys.",
                                                  rich_help_panel="Run"))


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command

    extra = [
        config_param(),
        inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--dry-run", help="Print the exact command (one shell-quoted "
                                               "line) and run nothing.", rich_help_panel="Run")),
    ]
    # By name: `kolo --help` then never imports pydantic or builds the ~50 train flags (optionflags.LazyTyperGroup).
    make_command(app, "train", "kolo_trainer.options:TrainOptions", train, HELP, extra, rich_help_panel="Training")
