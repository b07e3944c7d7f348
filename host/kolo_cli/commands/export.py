"""`kolo export OUTPUT_DIR [options]` and `kolo chat OUTPUT_DIR [--quantization Q] [--prompt TEXT]`.

Both run in the trainer (``python -m kolo_trainer export|chat``) through the same argv builder and transports as
`kolo train`. Options are validated here first (ExportOptions, every problem at once) and the run folder is checked
on the host data root, so a typo never costs a container exec or a model load.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Optional

import typer

from kolo_trainer.errors import OptionsError

from ..state import STATE

EXPORT_HELP = (
    "Merge a finished run, convert it to GGUF (F16 + the quantisations you ask for), write an Ollama Modelfile per "
    "GGUF and verify the result (tokens, greedy output and the template against the trained model).\n\n"
    "Safe to re-run: finished stages are skipped, an interrupted export is completed.\n\n"
    "Example: kolo export my-run --quantization Q4_K_M --quantization Q8_0"
)


def _run_problems(run: str) -> list[str]:
    """The run folder must exist on the host data root (the container sees the same folder)."""
    from kolo_trainer import names

    try:
        names.check_plain(run)
    except ValueError:
        return []  # the option spec's own check of output_dir already reports the bad name, once
    root = STATE.root()
    if not (root / "outputs" / run / "kolo.json").is_file():
        return [f"OUTPUT_DIR: no training run {run!r} under {root / 'outputs'} (see `kolo list`, or train one with "
                f"`kolo train --output-dir {run} ...`)"]
    return []


def export(flags: dict[str, Any], run: str, dry_run: bool) -> None:
    from kolo_trainer import spec
    from kolo_trainer.options import ExportOptions

    from ..transport import make_transport, trainer_argv

    if "output_dir" in flags and flags["output_dir"] != run:
        raise OptionsError([f"OUTPUT_DIR {run!r} and --output-dir {flags['output_dir']!r} disagree; give one"])
    flags = {**flags, "output_dir": run}
    problems: list[str] = []
    explicit: dict[str, Any] = {}
    try:
        _, explicit = spec.merge(ExportOptions, {}, flags)
    except OptionsError as e:
        problems += e.problems
    if not dry_run:
        problems += _run_problems(run)
    if problems:
        raise OptionsError(problems, hint="see `kolo export --help`")
    root = STATE.root()
    transport = make_transport(STATE.runtime, STATE.container, root, debug=STATE.debug)
    argv = trainer_argv("export", ExportOptions, explicit, transport.data_root)
    if dry_run:
        print(transport.dry_run_line(argv))
        return
    from ..render import make_renderer

    rc = transport.run(argv, make_renderer())
    if rc != 0:
        raise typer.Exit(rc)


def chat(
    run: str = typer.Argument(..., metavar="OUTPUT_DIR", help="The exported run (folder name under outputs/)."),
    quantization: Optional[str] = typer.Option(None, "--quantization", "-q", help="Which GGUF to chat with "
                                               "(default: Q4_K_M when exported, else the smallest)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Ask one question, print the answer, exit."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Override the Modelfile's "
                                                "temperature (0 = greedy)."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Longest answer in tokens."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact command and run nothing."),
) -> None:
    """Chat with an exported GGUF through its Modelfile (TEMPLATE, SYSTEM, stop strings), without Ollama.

    Example: kolo chat my-run --prompt "What is kolo?"   |   kolo chat my-run   (interactive; Ctrl-D ends)
    """
    from ..transport import make_transport, trainer_argv

    problems = [] if dry_run else _run_problems(run)
    if quantization is not None:
        from kolo_trainer.options import QUANTIZATIONS

        if quantization.strip().upper() not in QUANTIZATIONS:
            problems.append(f"--quantization: unknown quantization {quantization!r}; choose from "
                            f"{', '.join(QUANTIZATIONS)}")
    if problems:
        raise OptionsError(problems, hint="see `kolo chat --help`")
    extra = ["--output-dir", run, "--max-tokens", str(max_tokens)]
    if quantization is not None:
        extra += ["--quantization", quantization.strip().upper()]
    if prompt is not None:
        extra += ["--prompt", prompt]
    if temperature is not None:
        extra += ["--temperature", repr(float(temperature))]
    root = STATE.root()
    transport = make_transport(STATE.runtime, STATE.container, root, debug=STATE.debug)
    argv = trainer_argv("chat", None, {}, transport.data_root, extra=extra)
    if dry_run:
        print(transport.dry_run_line(argv))
        return
    # The chat talks to the terminal directly (input prompts, streamed answer): no progress renderer.
    rc = transport.run(argv, interactive=True)
    if rc != 0:
        raise typer.Exit(rc)


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command

    extra = [
        inspect.Parameter("run", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Argument(..., metavar="OUTPUT_DIR",
                                                 help="The training run to export (folder name under outputs/).")),
        inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--dry-run", help="Print the exact command (one shell-quoted "
                                               "line) and run nothing.", rich_help_panel="Run")),
    ]
    make_command(app, "export", "kolo_trainer.options:ExportOptions", export, EXPORT_HELP, extra,
                 rich_help_panel="Export")
    app.command("chat", rich_help_panel="Export")(chat)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `kolo export` or `kolo chat`")
