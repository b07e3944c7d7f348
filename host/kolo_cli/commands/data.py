"""`kolo data add | check | list`: getting training files into <data root>/data/, checked on the host.

All parsing and validation is ``kolo_trainer.data`` (stdlib only, the same code the trainer runs), so a file that
passes `kolo data check` here passes the trainer's check in the container. Nothing here imports torch.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

import typer

from kolo_trainer.errors import DataError, NameError_, OutputExistsError

from ..state import STATE

data_app = typer.Typer(help="Add, check and list training files in <data root>/data/.", no_args_is_help=True)


def _resolve_input(file: Path) -> Path:
    """FILE as given; a relative FILE that is not here but is under the data root means that one."""
    if file.exists():
        return file
    if not file.is_absolute() and (STATE.root() / file).exists():
        return STATE.root() / file
    raise DataError([f"{file}:1: file not found"])


@data_app.command("check")
def check(
    file: Path = typer.Argument(..., help="JSONL, JSON or CSV file (a path here, or relative to the data root)."),
    fmt: str = typer.Option("auto", "--format", metavar="auto|messages|sharegpt|alpaca|prompt_completion|text",
                            help="Input format (default: detect)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of text."),
) -> None:
    """Validate a training file and print its statistics; every problem cites file:line.

    Example: kolo data check chats.jsonl   |   kolo data check data/chats.jsonl --json
    """
    from kolo_trainer import data

    args = [str(_resolve_input(file)), "--format", fmt] + (["--json"] if as_json else [])
    rc = data.check_main(args)
    if rc:
        raise typer.Exit(rc)


@data_app.command("add")
def add(
    file: Path = typer.Argument(..., help="The file to copy in (JSONL, JSON or CSV)."),
    name: Optional[str] = typer.Option(None, "--as", help="File name under <data root>/data/ (default: the "
                                       "file's own name)."),
    fmt: str = typer.Option("auto", "--format", help="Input format (default: detect)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file of that name."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Copy even when some rows are invalid "
                                      "(train with --skip-invalid to drop them)."),
) -> None:
    """Validate a training file, then copy it into <data root>/data/ (never overwriting without --force).

    Example: kolo data add ~/chats.jsonl   |   kolo data add export.json --as support.json --force
    """
    from kolo_trainer import data, manifest, names

    src = file
    if not src.is_file():
        raise DataError([f"{src}:1: file not found" if not src.exists() else f"{src}:1: is not a file"])
    target = name if name is not None else src.name
    try:
        names.check_plain(target)
    except ValueError as e:
        raise NameError_(f"--as {target!r}: {e}") from None
    res = data.load(src, fmt, display_name=str(src), keep_rows=False)
    fatal = [p for p in res.problems if p.kind == "file"]
    if res.problems and (fatal or not skip_invalid or not (res.stats or {}).get("rows")):
        raise DataError([str(p) for p in res.problems],
                        hint=None if fatal else "fix them, or pass --skip-invalid to copy it anyway")
    root = STATE.root()
    dest = names.resolve_under(root, f"data/{target}", "data file")
    rel = f"data/{target}"
    if dest.exists():
        if dest.is_file() and manifest.sha256_file(dest) == manifest.sha256_file(src):
            print(f"{rel} is already in the data root (identical); nothing to do")
            return
        if not force:
            raise OutputExistsError(f"{rel} already exists in {root}",
                                    "pass --force to replace it, or --as NAME to add it under another name")
        if dest.is_dir():
            raise OutputExistsError(f"{rel} is a folder", "choose another name with --as NAME")
    # Copy to a temporary name beside the target and rename: a crash never leaves half a dataset under the name.
    with manifest.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    rows = (res.stats or {}).get("rows", res.rows_valid)
    print(f"added {rel} ({res.format}, {rows} valid row(s) of {res.rows_total})")
    for p in res.problems[:20]:
        print(f"warning: {p}", file=sys.stderr)
    print(f"train with: kolo train --train-data {rel}" + (" --skip-invalid" if res.problems else ""))


@data_app.command("list")
def list_() -> None:
    """List the training files in <data root>/data/.

    Example: kolo data list
    """
    root = STATE.root()
    folder = root / "data"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    if not files:
        print(f"no training files in {folder} (add one with `kolo data add FILE`)")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=str(folder), show_edge=False)
    t.add_column("file (use as --train-data)")
    t.add_column("size", justify="right")
    t.add_column("modified")
    import datetime as dt

    for p in files:
        st = p.stat()
        size = st.st_size
        human = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"
        t.add_row(str(p.relative_to(root)), human,
                  dt.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M"))
    Console(highlight=False, soft_wrap=True).print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", rich_help_panel="Data")

