"""make_command is generic: any option model becomes a typer command whose handler sees only given flags."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from kolo_cli.optionflags import make_command
from kolo_trainer.options import ExportOptions, TrainOptions


def test_export_options_command_sees_only_given_flags():
    app = typer.Typer()
    seen = {}

    def handler(flags, run, dry_run):
        seen.update(flags=flags, run=run, dry_run=dry_run)

    import inspect

    extra = [inspect.Parameter("run", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                               default=typer.Argument(..., help="run name")),
             inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                               default=typer.Option(False, "--dry-run"))]
    make_command(app, "export", ExportOptions, handler, "Export a run.", extra)

    @app.command("other")
    def other() -> None:  # a second command keeps typer from collapsing the group
        pass

    r = CliRunner().invoke(app, ["export", "myrun", "--quantization", "Q8_0", "--quantization", "f16",
                                 "--no-verify", "--temperature", "0"])
    assert r.exit_code == 0, r.output
    assert seen == {"flags": {"quantization": ["Q8_0", "f16"], "verify": False, "temperature": "0"},
                    "run": "myrun", "dry_run": False}
    r = CliRunner().invoke(app, ["export", "--help"])
    assert "--adapter-only" in r.output and "--no-adapter-only" in r.output


def test_train_flags_default_to_not_given():
    app = typer.Typer()
    seen = {}
    make_command(app, "train", TrainOptions, lambda flags: seen.update(flags), "Train.")

    @app.command("other")
    def other() -> None:
        pass

    r = CliRunner().invoke(app, ["train"])
    assert r.exit_code == 0, r.output
    assert seen == {}
    r = CliRunner().invoke(app, ["train", "--weight-decay", "0", "--bf16"])
    assert seen == {"weight_decay": "0", "bf16": True}
