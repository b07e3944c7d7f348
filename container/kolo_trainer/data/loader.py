"""``load``: one training file in, a :class:`LoadResult` out (rows or statistics, every problem with its line).

Parsing allocates millions of small objects that all stay alive (rows) or die young (check), so the cyclic GC is
paused while loading; a big JSONL file checked without keeping rows may be split across processes
(:mod:`.parallel`). Results are identical on every path (tested against a slow reference).
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

from . import parallel, readers
from .consume import Consumer
from .formats import check_format
from .results import Bad, LoadResult, Problem


class _FileBad(Bad):
    """The whole file is unusable (kind ``file``), first seen on ``line``."""

    def __init__(self, reason: str, line: int = 1):
        super().__init__(reason, "file")
        self.line = line


def load(path: str | os.PathLike, fmt: str = "auto", display_name: Optional[str] = None, *,
         keep_rows: bool = True) -> LoadResult:
    """Read and validate a training file. Never raises for bad data: see ``problems`` / ``raise_if_invalid``
    (an unknown ``fmt`` is a bad option: OptionsError).

    ``display_name`` is how the file is named in messages (e.g. relative to the data root). With
    ``keep_rows=False`` the rows are not kept, only counted and summarised into ``result.stats``.
    """
    check_format(fmt)
    p = Path(path)
    name = display_name or str(path)
    res = LoadResult(rows=[], problems=[], warnings=[], format=fmt, file=name)
    try:
        with readers.open_data_file(p) as f:
            kind = _sniff(f, p)
            if kind == "jsonl" and not keep_rows:
                done = parallel.load_parallel(p, f, fmt, name)
                if done is not None:
                    return done
                f.seek(0)
            records = _records(f, kind, p)
            with _gc_paused():
                Consumer(res, fmt, keep_rows).run(records)
    except Bad as b:
        res.problems.append(Problem(name, getattr(b, "line", 1), b.reason, "file"))
        return res
    if res.rows_total == 0 and not res.problems:
        res.problems.append(Problem(name, 1, "no rows (only blank lines or a header)", "file"))
    return res


def _sniff(f: BinaryIO, p: Path) -> str:
    """The reader for ``f`` (jsonl, json or csv), after refusing an empty or binary file; rewinds ``f``."""
    head = f.read(65536)
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise _FileBad("empty file (no rows)")
    if b"\x00" in head:
        raise _FileBad("binary file (contains NUL bytes); expected UTF-8 text: JSONL, JSON or CSV")
    kind = readers.kind_of(p.name, head)
    if kind == "unknown":
        raise _FileBad(f"unsupported file type {p.suffix or '(no extension)'!r}; use .jsonl, .json or .csv")
    f.seek(0)
    return kind


def _records(f: BinaryIO, kind: str, p: Path) -> Iterator[Any]:
    """What :class:`Consumer` eats: :class:`readers.Lines` for JSONL, lists of (line, object or Bad) otherwise."""
    if kind == "jsonl":
        return readers.jsonl_pieces(f)
    if kind == "csv":
        return readers.batched(readers.read_csv(f))
    data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _FileBad(readers.decode_error(e, data).split(" (")[0] + "; save the file as UTF-8",
                       data.count(b"\n", 0, e.start) + 1) from None
    return readers.batched(readers.read_json(data))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic GC would scan the parsed objects again and again for nothing (JSON cannot make cycles),
    costing ~30% of the run time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
