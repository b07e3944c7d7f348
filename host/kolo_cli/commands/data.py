"""`kolo data add | check | list`: getting training files into <data root>/data/, checked on the host.

All parsing and validation is ``kolo_trainer.data`` (stdlib only, the same code the trainer runs), so a file that
passes `kolo data check` here passes the trainer's check in the container. Nothing here imports torch.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import typer

from kolo_trainer.data.formats import FORMATS
from kolo_trainer.errors import DataError, NameError_, OutputExistsError

from ..state import STATE

data_app = typer.Typer(help="Add, check and list training files in <data root>/data/.", no_args_is_help=True)

_FORMAT_HELP = "Input format (default: detect)."


def _check_args(file: Path) -> list[str]:
    """``check_main``'s FILE arguments: FILE as given; a relative FILE that is not here but is under the data
    root means that one (named as given, resolved by the data root's rules)."""
    if file.exists() or file.is_symlink():
        return [str(file)]
    if not file.is_absolute() and (STATE.root() / file).exists():
        return [str(file), "--data-root", str(STATE.root())]
    raise DataError([f"{file}:1: file not found"])


@data_app.command("check")
def check(
    file: Path = typer.Argument(..., help="JSONL, JSON or CSV file (a path here, or relative to the data root)."),
    fmt: str = typer.Option("auto", "--format", metavar="|".join(FORMATS), help=_FORMAT_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of text."),
) -> None:
    """Validate a training file and print its statistics; every problem cites file:line.

    Example: kolo data check chats.jsonl   |   kolo data check data/chats.jsonl --json
    """
    from kolo_trainer import data

    data.check_format(fmt)
    args = _check_args(file) + ["--format", fmt] + (["--json"] if as_json else [])
    rc = data.check_main(args)
    if rc:
        raise typer.Exit(rc)


@data_app.command("add")
def add(
    file: Path = typer.Argument(..., help="The file to copy in (JSONL, JSON or CSV)."),
    name: Optional[str] = typer.Option(None, "--as", help="File name under <data root>/data/ (default: the "
                                       "file's own name)."),
    fmt: str = typer.Option("auto", "--format", metavar="|".join(FORMATS), help=_FORMAT_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing file of that name."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Copy even when some rows are invalid "
                                      "(train with --skip-invalid to drop them)."),
) -> None:
    """Validate a training file, then copy it into <data root>/data/ (never overwriting without --force).

    With a remote engine (--docker-host, --context, --remote) the file is uploaded into the data root on that
    engine, through the Docker API.

    Example: kolo data add ~/chats.jsonl   |   kolo data add export.json --as support.json --force
    """
    from kolo_trainer import data, names

    data.check_format(fmt)
    src = file
    problem = data.file_problem(src)  # before anything opens it: a FIFO would block, a device never end
    if problem:
        raise DataError([f"{src}:1: {problem}"])
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
    rel = f"data/{target}"
    if not _place(src, rel, force):
        return
    rows = (res.stats or {}).get("rows", res.rows_valid)
    print(f"added {rel} ({res.format}, {rows} valid row(s) of {res.rows_total})")
    for p in res.problems[:20]:
        print(f"warning: {p}", file=sys.stderr)
    print(f"train with: kolo train --train-data {rel}" + (" --skip-invalid" if res.problems else ""))


def _place(src: Path, rel: str, force: bool) -> bool:
    """Into the data root the trainer reads: this machine's folder, or, with a remote engine, the volume in its
    container (uploaded through the Docker API). False when an identical file is already there."""
    from .. import docker_ctl

    if STATE.runtime == "docker" and docker_ctl.is_remote():
        from .. import remote_data

        return remote_data.upload(docker_ctl.require_running(STATE.container), src, rel, force)
    return _copy_in(src, rel, force)


def _copy_in(src: Path, rel: str, force: bool) -> bool:
    """Copy ``src`` to ``rel`` under the data root, atomically; False when an identical file is already there."""
    from kolo_trainer import manifest

    root = STATE.root()
    dest = STATE.data().resolve(rel, "data file")
    if dest.exists():
        if dest.is_file() and manifest.sha256_file(dest) == manifest.sha256_file(src):
            print(f"{rel} is already in the data root (identical); nothing to do")
            return False
        if not force:
            raise OutputExistsError(f"{rel} already exists in {root}",
                                    "pass --force to replace it, or --as NAME to add it under another name")
        if dest.is_dir():
            raise OutputExistsError(f"{rel} is a folder", "choose another name with --as NAME")
    # A `kolo data add` killed mid-copy leaves its temporary file; remove those whose writer is gone.
    for left in manifest.clean_stale_tmp(dest.parent) or ():
        print(f"removed {Path(left).name}, left in {dest.parent.name}/ by an interrupted write", file=sys.stderr)
    # Copy to a temporary name beside the target and rename: a crash never leaves half a dataset under the name.
    # (shutil.copyfile refuses a source swapped for a FIFO since the check: SpecialFileError.)
    with manifest.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return True


# ------------------------------------------------------------------------------------------------ list


class _Entry(NamedTuple):
    rel: str  # relative to the data root, as --train-data takes it
    size: Optional[int]  # None: not a file kolo can use
    mtime: Optional[float]
    note: str  # why it is not usable, or where a link leads


def _shown(rel: str) -> str:
    """A file name as the file system gave it, printable: undecodable bytes and control characters escaped."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _link_entry(root: Path, path: Path, rel: str) -> _Entry:
    """A symbolic link: usable when it leads to a regular file inside the data root (as --train-data resolves)."""
    from kolo_trainer import data

    try:
        target = STATE.data().resolve(rel, "data file")
    except NameError_:
        return _Entry(rel, None, None, f"link to {os.readlink(path)}, outside the data root: not used")
    problem = data.file_problem(target)
    if problem:
        return _Entry(rel, None, None, f"link to {target.relative_to(root)}: {problem}")
    st = target.stat()
    return _Entry(rel, st.st_size, st.st_mtime, f"link to {target.relative_to(root)}")


def _entries(root: Path, folder: Path) -> Iterator[_Entry]:
    """Every visible entry under ``folder``, links not followed (one leading out of the data root is only named),
    an unreadable entry named with its reason instead of ending the listing."""
    from kolo_trainer import data

    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                found = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            yield _Entry(str(d.relative_to(root)), None, None, f"cannot read this folder: {e.strerror or e}")
            continue
        for e in found:
            path = Path(e.path)
            rel = str(path.relative_to(root))
            try:
                if e.is_symlink():
                    yield _link_entry(root, path, rel)
                elif e.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    st = e.stat(follow_symlinks=False)
                    problem = data.file_problem(path)
                    yield _Entry(rel, None if problem else st.st_size, st.st_mtime, problem or "")
            except OSError as err:
                yield _Entry(rel, None, None, f"cannot read: {err.strerror or err}")


@data_app.command("list")
def list_() -> None:
    """List the training files in <data root>/data/ (a link that leads out of the data root is named, not used).

    Example: kolo data list
    """
    root = STATE.root()
    folder = root / "data"
    if folder.is_symlink():
        try:
            STATE.data().resolve("data", "data folder")
        except NameError_:
            print(f"{folder} is a link to {os.readlink(folder)}, outside the data root: kolo does not use files "
                  "there (replace the link with a folder and `kolo data add` the files)")
            return
    found = sorted(_entries(root, folder.resolve()), key=lambda x: x.rel) if folder.is_dir() else []
    if not found:
        print(f"no training files in {folder} (add one with `kolo data add FILE`)")
        return
    _print_table(str(folder), found)


def _print_table(title: str, found: list[_Entry]) -> None:
    import datetime as dt

    from rich.table import Table
    from rich.text import Text

    from ..console import out

    t = Table(title=Text(_shown(title)), show_edge=False)
    t.add_column("file (use as --train-data)")
    t.add_column("size", justify="right")
    t.add_column("modified")
    notes = any(x.note for x in found)
    if notes:
        t.add_column("note")
    for x in found:
        size = "" if x.size is None else (f"{x.size / 2**20:.1f} MiB" if x.size >= 2**20 else
                                          f"{x.size / 1024:.1f} KiB")
        when = "" if x.mtime is None else dt.datetime.fromtimestamp(x.mtime).strftime("%Y-%m-%d %H:%M")
        t.add_row(Text(_shown(x.rel)), size, when, *([Text(_shown(x.note))] if notes else []))
    out().print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", rich_help_panel="Data")
