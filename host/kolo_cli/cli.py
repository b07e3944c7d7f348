"""The `kolo` command: a typer app whose verbs live in kolo_cli/commands/<group>.py.

Each commands module exposes ``register(app)``. This module only wires global options and the single error
handler (:func:`main`): a KoloError prints one short coloured message (plus a hint naming the fix) and exits with
its code; an OSError (disk full, read-only, permission) is turned into one too; anything else is reported as an
internal error in one line. A traceback appears only with ``--debug``. User text is always printed inert
(``kolo_cli.console``). Heavy imports (docker SDK, httpx) happen inside the verbs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer

from kolo_trainer.errors import KoloError, NameError_

from .optionflags import LazyTyperGroup, click_command
from .state import STATE

#: commands modules, in the order their verbs appear in `kolo --help`.
COMMAND_MODULES = ["lifecycle", "data", "train", "plan", "export", "eval", "pull", "ollama", "serve", "rag"]

app = typer.Typer(
    name="kolo",
    cls=LazyTyperGroup,
    help="Fine-tune an LLM on your own machine and chat with it in Ollama minutes later.\n\n"
    "Example: kolo up && kolo data add chats.jsonl && kolo train --train-data data/chats.jsonl --quantization Q4_K_M",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    runtime: str = typer.Option(None, "--runtime", envvar="KOLO_RUNTIME", metavar="docker|local",
                                help="Run trainer work in the kolo container (docker) or as a local subprocess."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", envvar="KOLO_DATA",
                                             help="Host folder mounted at /var/kolo_data (default ./kolo_data)."),
    container: str = typer.Option(None, "--container", envvar="KOLO_CONTAINER",
                                  help="Container name (default kolo)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    docker_host: Optional[str] = typer.Option(None, "--docker-host", metavar="URL",
                                              help="Docker engine for every container verb (ssh://user@gpu-box, "
                                              "tcp://host:2376, unix:///path); default DOCKER_HOST, else the "
                                              "current docker context."),
    docker_context: Optional[str] = typer.Option(None, "--context", metavar="NAME",
                                                 help="A docker context (`docker context ls`) naming the engine."),
    remote: Optional[bool] = typer.Option(None, "--remote/--no-remote", envvar="KOLO_REMOTE",
                                          help="The engine is another machine: its data root is a Docker volume "
                                          "there (default: yes for ssh:// and tcp://)."),
) -> None:
    if runtime is not None:
        if runtime not in ("docker", "local"):
            raise KoloError(f"--runtime must be docker or local, not {runtime!r}")
        STATE.runtime = runtime
    if data_root is not None:
        if not str(data_root).strip() or str(data_root) == ".":
            # typer turns '' into Path('.'): an empty --data-root must not silently mean the current folder.
            raw = _raw_option("--data-root")
            if raw is not None and not raw.strip():
                raise NameError_("--data-root is empty", hint="give a folder: --data-root DIR (or set KOLO_DATA)")
        STATE.data_root = data_root
    if container is not None:
        STATE.container = container
    STATE.debug = debug
    if docker_host is not None or docker_context is not None or remote is not None:
        from .docker_ctl import select_engine

        select_engine(docker_host, docker_context, remote)


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"kolo_cli.commands.{_name}")
    except ModuleNotFoundError as _e:  # a commands module not written yet
        if _e.name != f"kolo_cli.commands.{_name}":
            raise
        continue
    _mod.register(app)


def _raw_option(flag: str) -> str | None:
    """The value given for ``flag`` on the command line as typed (``--flag V`` or ``--flag=V``), else None."""
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def report(e: KoloError) -> None:
    from .console import report as _report

    _report(e.message, e.hint)


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        rc = click_command(app).main(args=argv, prog_name="kolo", standalone_mode=False)
    except KoloError as e:
        if debug:
            raise
        report(e)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # typer.Exit / click exits with a code
        return int(e.code or 0)
    except Exception as e:  # click usage errors and friends (typer vendors click as typer._click)
        from typer._click import exceptions as click_exc

        if isinstance(e, click_exc.ClickException):
            e.show()  # "Usage: ... Error: No such option: --x" on stderr
            return e.exit_code
        # typer's vendored click has no Abort class (typer raises KeyboardInterrupt instead); older ones do.
        if isinstance(e, getattr(click_exc, "Abort", ())):
            print("aborted", file=sys.stderr)
            return 130
        if debug:
            raise
        # The trainer's one error path (OSError -> the fix, anything else -> "internal error" in one line).
        from kolo_trainer.cli import as_kolo_error

        err = as_kolo_error(e)
        report(err)
        return err.exit_code
    return rc if isinstance(rc, int) else 0
