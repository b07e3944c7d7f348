"""A big JSONL file checked without keeping rows, on a machine with idle cores, is split into byte ranges checked
by several processes (``KOLO_DATA_WORKERS`` overrides the count). The merged result is exactly the sequential
one: lines, problems, duplicates across ranges, statistics (tested).
"""

from __future__ import annotations

import gc
import json
import os
from itertools import repeat
from operator import add
from pathlib import Path
from typing import Any, Iterator, Optional

from . import checks, readers
from .consume import DETECT_LIMIT, Consumer
from .formats import detect
from .results import LoadResult, Problem
from .rowstats import StatsAccumulator

#: JSONL files at least this big are checked (``keep_rows=False``) by several processes, one byte range each.
PARALLEL_MIN_BYTES = 64 * 1024 * 1024


def workers(path: Path) -> int:
    """How many processes check ``path``: 1 unless it is big, the machine has idle cores and fork is available."""
    try:
        wanted = int(os.environ.get("KOLO_DATA_WORKERS", "0"))
    except ValueError:
        wanted = 0
    if wanted == 1:
        return 1
    if wanted < 1:
        wanted = _idle_cores(path)
        if wanted == 1:
            return 1
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return wanted


def _idle_cores(path: Path) -> int:
    try:
        if path.stat().st_size < PARALLEL_MIN_BYTES:
            return 1  # (before importing multiprocessing: start-up counts for small files)
    except OSError:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Only idle cores help: on a 2-core machine already running ~5 other processes, 2 processes took 25-60%
    # longer than 1 (measured), as the extra process only adds its start-up, merging and cache contention.
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores, 8, int(cores - busy + 1)))


class _RangeReader:
    """``read()`` limited to ``length`` bytes of ``f``, counting the newlines it hands out."""

    def __init__(self, f: Any, length: int):
        self.f, self.left, self.newlines = f, length, 0

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        b = self.f.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(b)
        self.newlines += b.count(b"\n")
        return b


def _check_range(path: str, start: int, end: int, fmt: str, name: str) -> tuple:
    """Worker: check bytes [start, end) of a JSONL file; line numbers are relative to ``start``."""
    gc.disable()
    with open(path, "rb") as f:
        if start == 0 and f.read(3) == b"\xef\xbb\xbf":
            start = 3
        f.seek(start)
        reader = _RangeReader(f, end - start)
        res = LoadResult(rows=[], problems=[], warnings=[], format=fmt, file=name)
        c = Consumer(res, fmt, keep_rows=False).run(readers.jsonl_pieces(reader, bom=False))
    assert c.acc is not None
    return res.problems, res.warnings, res.rows_total, res.rows_valid, c.seen, c.acc.state(), reader.newlines


def _first_rows(f: Any) -> Iterator[tuple[int, Any]]:
    """The first rows of a JSONL file as the reference parser reads them, one line at a time (detecting the
    format needs only a few, not a whole block)."""
    decoder = json.JSONDecoder()
    for piece in readers.jsonl_pieces(f):
        if type(piece) is not readers.Lines:
            yield from piece
            continue
        for i, raw in enumerate(piece.lines):
            for batch in readers.Lines(piece.first + i, [raw]).reference(decoder):
                yield from batch


def _detect_format(f: Any) -> str:
    """The format the sequential path would detect (``auto`` when none of the first rows shows one)."""
    f.seek(0)
    for i, (_, obj) in enumerate(_first_rows(f)):
        fmt = detect(obj)
        if fmt is not None:
            return fmt
        if i >= DETECT_LIMIT:
            break
    return "auto"


def _split_points(f: Any, size: int, n: int) -> list[int]:
    points = [0]
    for i in range(1, n):
        pos = max(size * i // n, points[-1])
        f.seek(pos)
        while True:  # advance to just after the next newline (a line never straddles two ranges)
            piece = f.read(1 << 16)
            if not piece:
                pos = size
                break
            nl = piece.find(b"\n")
            if nl >= 0:
                pos += nl + 1
                break
            pos += len(piece)
        if pos > points[-1] and pos < size:
            points.append(pos)
    return points + [size]


def load_parallel(p: Path, f: Any, fmt: str, name: str) -> Optional[LoadResult]:
    """The same result as the sequential path, computed by several processes; None = use the sequential path
    (one worker is enough, or the format cannot be detected up front)."""
    n = workers(p)
    if n <= 1:
        return None
    import multiprocessing

    if fmt == "auto":  # decide the format once, from the first rows, exactly as the sequential path would
        fmt = _detect_format(f)
        if fmt == "auto":
            return None
    size = p.stat().st_size
    f.seek(0)
    points = _split_points(f, size, n)
    jobs = [(str(p), a, b, fmt, name) for a, b in zip(points, points[1:])]
    with multiprocessing.get_context("fork").Pool(len(jobs) - 1) as pool:
        later = pool.starmap_async(_check_range, jobs[1:])
        gc_was_enabled = gc.isenabled()
        try:
            parts = [_check_range(*jobs[0])]  # this process checks the first range meanwhile
        finally:
            if gc_was_enabled:
                gc.enable()
        parts += later.get()
    return _merge(parts, fmt, name)


def _merge(parts: list[tuple], fmt: str, name: str) -> LoadResult:
    """One result from the ranges' results, in file order: lines shifted, duplicates across ranges found."""
    res = LoadResult(rows=[], problems=[], warnings=[], format=fmt, file=name)
    acc = StatsAccumulator()
    first_seen: dict[int, int] = {}
    offset = 0
    for problems, warnings, total, valid, seen, state, newlines in parts:
        _shift(problems, warnings, offset)
        _cross_range_duplicates(seen, first_seen, warnings, offset, name)
        res.problems += problems
        res.warnings += warnings
        res.rows_total += total
        res.rows_valid += valid
        acc.merge(state)
        offset += newlines
    res.problems.sort(key=lambda x: x.line)
    # On one line the sequential order is "duplicate" then "trailing_user"; a duplicate found across ranges here
    # was appended after the worker's warnings, hence the second key.
    res.warnings.sort(key=lambda x: (x.line, x.kind != "duplicate"))
    res.stats = acc.result()
    return res


def _shift(problems: list[Problem], warnings: list[Problem], offset: int) -> None:
    """A worker's lines (and duplicate references) count from the start of its range."""
    for x in problems:
        x.line += offset
    for w in warnings:
        w.line += offset
        if w.kind == "duplicate":
            w.ref += offset


def _cross_range_duplicates(seen: dict[int, int], first_seen: dict[int, int], warnings: list[Problem],
                            offset: int, name: str) -> None:
    """A conversation first seen in this range may repeat one from an earlier range: warn, and point this
    range's later copies at the file's first occurrence. Adds this range's new conversations to ``first_seen``."""
    remap: dict[int, int] = {}  # its first line in this range -> its first line in the file
    if offset:
        seen = dict(zip(seen, map(add, seen.values(), repeat(offset))))
    for h in seen.keys() & first_seen.keys():  # (set operations: no Python loop over every row)
        ln = seen.pop(h)
        first = first_seen[h]
        remap[ln] = first
        warnings.append(Problem(name, ln, checks.dup_reason(first), "duplicate", first))
    first_seen.update(seen)
    if remap:
        for w in warnings:
            if w.kind == "duplicate" and w.ref in remap:
                w.ref = remap[w.ref]
                w.reason = checks.dup_reason(w.ref)

