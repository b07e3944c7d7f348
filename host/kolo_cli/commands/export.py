"""`kolo export OUTPUT_DIR [options]` and `kolo chat OUTPUT_DIR [options]`.

Both run in the trainer (``python -m kolo_trainer export|chat``) through the one argv builder
(``transport.trainer_argv``) and the same transports as `kolo train`; both commands are built from their option
model (ExportOptions, ChatOptions) by ``optionflags.make_command``. Before any container exec, the options are
validated (every problem at once) and the run is checked on the host data root through ``runfolder`` (a missing
run, a folder that is not a run, a link, a damaged kolo.json, an unfinished training, a missing GGUF): a typo never
costs a container exec or a model load.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

import typer

from kolo_trainer.errors import KoloError, OptionsError

from ..state import STATE

EXPORT_HELP = (
    "Merge a finished run, convert it to GGUF (F16 + the quantisations you ask for), write an Ollama Modelfile per "
    "GGUF and verify the result (tokens, greedy output and the template against the trained model).\n\n"
    "Safe to re-run: finished stages are skipped, an interrupted export is completed.\n\n"
    "Example: kolo export my-run --quantization Q4_K_M --quantization Q8_0"
)

CHAT_HELP = (
    "Chat with an exported GGUF through its Modelfile (TEMPLATE, SYSTEM, stop strings), without Ollama.\n\n"
    "Example: kolo chat my-run --prompt \"What is kolo?\"   |   kolo chat my-run   (interactive; Ctrl-D ends)   |   "
    "kolo chat my-run --web   (in the browser)"
)


def _validate(model: type, flags: dict[str, Any], run: str) -> tuple[dict[str, Any], list[str]]:
    """The explicit option values (OUTPUT_DIR included) and every option problem."""
    from kolo_trainer import spec

    problems: list[str] = []
    if "output_dir" in flags and flags["output_dir"] != run:
        problems.append(f"OUTPUT_DIR {run!r} and --output-dir {flags['output_dir']!r} disagree; give one")
    explicit: dict[str, Any] = {}
    try:
        _, explicit = spec.merge(model, {}, {**flags, "output_dir": run})
    except OptionsError as e:
        problems += e.problems
    return explicit, problems


def _check_run(run: str, problems: list[str], check: Callable[[Any], Any], verb: str) -> None:
    """Check the run on the host data root (the container sees the same folder) and report everything at once:
    with option problems, one OptionsError listing all; alone, the run's own error and exit code."""
    from kolo_trainer import names

    try:
        names.check_run_name(run)
    except ValueError:
        run = ""  # the option model already reports the bad name, once
    if run and not _remote():  # a remote engine's runs are on the box: the trainer checks the run there
        try:
            check(STATE.data().check().run(run, "OUTPUT_DIR"))
        except KoloError as e:
            if not problems:
                raise
            problems.append(e.message + (f" ({e.hint})" if e.hint else ""))
    if problems:
        raise OptionsError(problems, hint=f"see `kolo {verb} --help`")


def _remote() -> bool:
    from ..docker_ctl import is_remote

    return STATE.runtime == "docker" and is_remote()


def _run_trainer(verb: str, model: type, explicit: dict[str, Any], dry_run: bool, interactive: bool,
                 renderer: Any = None) -> None:
    from ..transport import make_transport, trainer_argv

    transport = make_transport(STATE.runtime, STATE.container, STATE.root(), debug=STATE.debug)
    argv = trainer_argv(verb, model, explicit, transport.data_root)
    if dry_run:
        print(transport.dry_run_line(argv))
        return
    if interactive:
        # The chat talks to the terminal directly (input prompts, streamed answer): no progress renderer.
        rc = transport.run(argv, interactive=True)
    else:
        from ..render import make_renderer

        rc = transport.run(argv, renderer if renderer is not None else make_renderer())
    if rc != 0:
        raise typer.Exit(rc)


def export(flags: dict[str, Any], run: str, dry_run: bool) -> None:
    from kolo_trainer.errors import ExportError
    from kolo_trainer.options import ExportOptions

    explicit, problems = _validate(ExportOptions, flags, run)
    if not dry_run:
        _check_run(run, problems, lambda r: r.require(finished=True, verb="export", error=ExportError), "export")
    elif problems:
        raise OptionsError(problems, hint="see `kolo export --help`")
    _run_trainer("export", ExportOptions, explicit, dry_run, interactive=False)


def chat(flags: dict[str, Any], run: str, dry_run: bool, web: bool = False, port: int = 7860) -> None:
    from kolo_trainer.export.chat import exported
    from kolo_trainer.options import ChatOptions

    explicit, problems = _validate(ChatOptions, flags, run)
    if web:
        problems += [f"--{k.replace('_', '-')} is for the terminal chat; the browser chat has its own field"
                     for k in ("prompt", "max_tokens") if k in explicit] + \
            (["--dry-run runs nothing; --web starts a server"] if dry_run else [])
        _check_run(run, problems, lambda r: exported(r, explicit.get("quantization")), "chat")
        _web_chat(run, port)
        return
    if not dry_run:
        _check_run(run, problems, lambda r: exported(r, explicit.get("quantization")), "chat")
    elif problems:
        raise OptionsError(problems, hint="see `kolo chat --help`")
    _run_trainer("chat", ChatOptions, explicit, dry_run, interactive=True)


def _web_chat(run: str, port: int) -> None:
    """`kolo chat RUN --web`: the Training Manager's app (its chat page; no job worker: that is `kolo serve`'s) on
    127.0.0.1 only, with the key rules of `kolo serve` (created at the first start, 0600, shown once)."""
    import socket

    try:
        import uvicorn

        from ..server.app import ServerConfig, create_app, read_key
        from ..server.routes_chat import chat_url
    except ImportError as e:
        raise KoloError(f"kolo chat --web needs the server extra ({e.name} is not installed)",
                        hint="pip install -e 'host[server]' (scripts/install.sh installs it)") from None
    from .serve import _new_key

    with socket.socket() as probe:  # a port in use is one message now, not a uvicorn traceback later
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise OptionsError([f"--port {port}: 127.0.0.1:{port} is in use"], hint="pick another with --port N")
    root = STATE.data()
    cfg = ServerConfig(data_root=root.path, runtime=STATE.runtime, container=STATE.container, debug=STATE.debug,
                       jobs=False)
    key = read_key(cfg) or _new_key(cfg, root)
    print(f"kolo chat: {chat_url('127.0.0.1', port, run)} (the page asks once for the API key; "
          "`kolo serve --show-key` prints it; Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(cfg, key), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _extras(run_help: str) -> list[inspect.Parameter]:
    """OUTPUT_DIR (positional) and --dry-run: what both verbs take besides their option model's fields."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("run", kw, annotation=str,
                          default=typer.Argument(..., metavar="OUTPUT_DIR", help=run_help)),
        inspect.Parameter("dry_run", kw, annotation=bool,
                          default=typer.Option(False, "--dry-run", help="Print the exact command (one shell-quoted "
                                               "line) and run nothing.", rich_help_panel="Run")),
    ]


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command

    make_command(app, "export", "kolo_trainer.options:ExportOptions", export, EXPORT_HELP,
                 _extras("The training run to export (folder name under outputs/)."), rich_help_panel="Export")
    kw = inspect.Parameter.KEYWORD_ONLY
    web = [inspect.Parameter("web", kw, annotation=bool, default=typer.Option(
               False, "--web", help="Chat in the browser: the Training Manager's chat page on 127.0.0.1 (answers "
               "stream in; conversations are saved in outputs/RUN/chats/).", rich_help_panel="Browser")),
           inspect.Parameter("port", kw, annotation=int, default=typer.Option(
               7860, "--port", min=1, max=65535, help="Port of the browser chat (with --web).",
               rich_help_panel="Browser"))]
    make_command(app, "chat", "kolo_trainer.options:ChatOptions", chat, CHAT_HELP,
                 _extras("The exported run (folder name under outputs/).") + web, rich_help_panel="Export")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `kolo export` or `kolo chat`")
