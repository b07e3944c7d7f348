"""The hot path of ``kolo data check`` and of every load: records in, rows (or statistics), problems and
warnings out. Three tiers, all with the same results as the reference (per-row, stdlib):

* a chunk of :data:`CHUNK` rows that all parse (orjson) and are all well-formed conversations is validated,
  hashed for duplicates and summarised with whole-chunk C-level ``map``s (:meth:`Consumer.batch`), no per-row
  Python, with a cache of valid role sequences;
* otherwise each row takes the per-row path (``checks.fast_conversation``, then :func:`conversation` for
  reasons);
* a row that orjson rejects, or that is not a valid conversation, is judged on the stdlib's own object, so every
  reason is worded exactly as before (orjson is stricter: NaN, lone surrogates, big integers as float).

An orjson object is kept only for a row that is valid, whose outcome depends on its strings alone, and orjson
and ``json`` decode valid UTF-8 strings identically.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import chain, islice, repeat
from operator import contains, itemgetter
from typing import Any, Iterable, Optional

from . import checks, readers
from .formats import BY_NAME, FIELD_HINT, detect, message_list_key, not_format
from .readers import Lines
from .results import Bad, LoadResult, Problem, Row, shown, type_name
from .rowstats import StatsAccumulator

#: Rows validated together by the batched fast path (small enough that freed objects' memory stays cache-hot).
CHUNK = 128
#: Rows in no known format read before giving up on detecting the format.
DETECT_LIMIT = 1000


def conversation(obj: dict, fmt: str) -> tuple[tuple, list]:
    """The row as (roles, contents); raises Bad with every reason when it is not a valid conversation."""
    f = BY_NAME[fmt]
    if f.list_keys:
        key = message_list_key(f, obj)
        if key is None:
            raise Bad(not_format(obj, fmt), "wrong_format")
        fast = checks.fast_conversation(obj[key])
        if fast is not None:
            return fast
        msgs = checks.messages(obj[key], key)
    else:
        msgs = f.to_messages(obj)
    return tuple(m["role"] for m in msgs), [m["content"] for m in msgs]


def _fast_key(fmt: Optional[str]) -> Optional[str]:
    """The key holding the message list, for the fast paths (None: the format has none, or is not known yet)."""
    f = BY_NAME.get(fmt or "")
    return f.list_keys[0] if f is not None and f.list_keys else None


def _row_messages_of(roles: tuple, contents: tuple) -> list:
    return [{"role": r, "content": c} for r, c in zip(roles, contents)]


class Consumer:
    """Validates every record of one file into a :class:`LoadResult`; ``seen`` (conversation hash -> first line)
    and ``acc`` (the statistics, when rows are not kept) stay available for :mod:`.parallel` to merge."""

    __slots__ = ("res", "name", "seen", "acc", "detected", "pending", "total", "valid", "fast_key", "loads",
                 "decoder", "keep_rows")

    def __init__(self, res: LoadResult, fmt: str, keep_rows: bool):
        self.res, self.name, self.keep_rows = res, res.file, keep_rows
        self.seen: dict[int, int] = {}  # hash of a conversation -> line of its first occurrence
        self.acc = StatsAccumulator() if not keep_rows else None
        self.detected: Optional[str] = None if fmt == "auto" else fmt
        self.pending: list[tuple[int, dict]] = []  # rows read before the format could be detected
        self.total = self.valid = 0
        self.fast_key = _fast_key(self.detected)
        self.loads = readers.fast_parser()
        self.decoder = json.JSONDecoder()

    def run(self, pieces: Iterable[Any]) -> "Consumer":
        """Consume lists of (line, object or Bad) and, for JSONL, :class:`Lines` of raw bytes; then finish."""
        for piece in pieces:
            if type(piece) is Lines:
                self.lines(piece)
            else:
                self.items(piece)
            if self.gave_up:
                break
        self.finish()
        return self

    @property
    def gave_up(self) -> bool:
        return len(self.pending) >= DETECT_LIMIT

    # -------------------------------------------------------------------------------------------- one row

    def accept(self, line: int, roles: tuple, contents: list) -> None:
        first = self.seen.setdefault(hash((roles, tuple(contents))), line)
        if first != line:
            self.res.warnings.append(Problem(self.name, line, checks.dup_reason(first), "duplicate", first))
        if roles[-1] == "user":
            self.res.warnings.append(Problem(self.name, line, checks.TRAILING_USER, "trailing_user"))
        self.valid += 1
        if self.acc is not None:
            self.acc.add(roles, contents)
        else:
            self.res.rows.append(Row(_row_messages_of(roles, contents), line, self.name))

    def handle(self, line: int, obj: dict, fmt: str, raw: Optional[bytes] = None) -> None:
        try:
            roles, contents = conversation(obj, fmt)
        except Bad as b:
            if raw is not None:  # an orjson object: word the reason from the stdlib's
                self.handle(line, readers.std_loads(raw), fmt)
                return
            self.res.problems.append(Problem(self.name, line, b.reason, b.kind))
            return
        self.accept(line, roles, contents)

    def one(self, line: int, obj: Any, raw: Optional[bytes] = None) -> None:
        """The reference path for one row; ``raw`` (the line's bytes) when ``obj`` came from orjson."""
        if type(obj) is not dict:
            if raw is not None:
                self.one(line, readers.std_loads(raw))
            elif type(obj) is Bad:
                self.res.problems.append(Problem(self.name, line, obj.reason, obj.kind))
            else:
                self.res.problems.append(Problem(self.name, line, f"a row must be a JSON object, got "
                                                 f"{type_name(obj)}", "wrong_type"))
            return
        if self.fast_key is not None:  # inline fast path (messages / sharegpt)
            fast = checks.fast_conversation(obj.get(self.fast_key))
            if fast is not None:
                self.accept(line, fast[0], fast[1])
                return
        elif self.detected is None and not self._detect(line, obj):
            return
        self.handle(line, obj, self.detected, raw)  # type: ignore[arg-type]

    def _detect(self, line: int, obj: dict) -> bool:
        """Learn the format from ``obj``; False (the row kept pending) while no row has shown it yet."""
        detected = detect(obj)
        if detected is None:
            self.pending.append((line, obj))
            return False
        self.detected, self.fast_key = detected, _fast_key(detected)
        for pl, pobj in self.pending:
            self.handle(pl, pobj, detected)
        self.pending.clear()
        return True

    # -------------------------------------------------------------------------------------------- many rows

    def items(self, batch: list[tuple[int, Any]]) -> None:
        """(line, object or Bad) records: as one chunk when possible, else row by row."""
        self.total += len(batch)
        if self.fast_key is not None and len(batch) > 8:
            lines, objs = zip(*batch)
            if self.batch(lines, list(objs)):
                return
        for line, obj in batch:
            self.one(line, obj)
            if self.gave_up:
                return

    def lines(self, piece: Lines) -> None:
        """Raw JSONL lines, :data:`CHUNK` at a time: orjson and the batch path once the format is known."""
        all_lines, first = piece.lines, piece.first
        for s in range(0, len(all_lines), CHUNK):
            chunk = all_lines[s:s + CHUNK]
            if self.loads is None or self.detected is None or max(map(len, chunk)) > readers.MAX_ROW_BYTES:
                for b in Lines(first + s, chunk).reference(self.decoder):
                    self.items(b)
                    if self.gave_up:
                        return
            else:
                self._fast_chunk(chunk, first + s)

    def _fast_chunk(self, chunk: list, ln0: int) -> None:
        try:
            objs = list(map(self.loads, chunk))
        except (ValueError, RecursionError):  # a line orjson rejects: row by row
            self._row_by_row(chunk, ln0)
            return
        self.total += len(objs)
        if self.fast_key is not None and self.batch(range(ln0, ln0 + len(objs)), objs, trusted=True):
            return
        for i, obj in enumerate(objs):
            self.one(ln0 + i, obj, chunk[i])

    def _row_by_row(self, chunk: list, ln0: int) -> None:
        loads = self.loads
        for i, raw in enumerate(chunk):
            try:
                obj = loads(raw)
            except (ValueError, RecursionError):  # blank, invalid, or orjson stricter than json
                for b in Lines(ln0 + i, [raw]).reference(self.decoder):
                    self.items(b)
                continue
            self.total += 1
            self.one(ln0 + i, obj, raw)

    def batch(self, lines: Any, objs: list, trusted: bool = False) -> bool:
        """The whole chunk at C speed when every row is a well-formed conversation; False = take the per-row path
        (nothing recorded). Same acceptance as ``checks.fast_conversation``, same hashes, warnings and statistics.
        ``trusted``: the objects come from orjson, which refuses lone surrogates, so they need no look for one."""
        got = _well_formed(objs, self.fast_key, trusted)
        if got is None:
            return False
        self._record(lines, *got)
        return True

    def _record(self, lines: Any, canon: list, counts: list, row_contents: list) -> None:
        """Book a chunk of valid rows: duplicates, trailing user turns, statistics or rows."""
        name, warnings, seen = self.name, self.res.warnings, self.seen
        n = len(canon)
        before = len(seen)
        firsts = list(map(seen.setdefault, map(hash, zip(canon, row_contents)), lines))
        if len(seen) - before != n:
            for line, first in zip(lines, firsts):
                if first != line:
                    warnings.append(Problem(name, line, checks.dup_reason(first), "duplicate", first))
        shapes = Counter(canon)
        if any(shape[-1] == "user" for shape in shapes):
            warnings.extend(Problem(name, line, checks.TRAILING_USER, "trailing_user")
                            for line, c in zip(lines, canon) if c[-1] == "user")
        self.valid += n
        if self.acc is not None:
            self.acc.add_rows(canon, shapes, counts, row_contents)
        else:
            self.res.rows.extend(map(Row, map(_row_messages_of, canon, row_contents), lines, repeat(name)))

    # -------------------------------------------------------------------------------------------- the end

    def finish(self) -> None:
        res, name = self.res, self.name
        for pl, pobj in self.pending:
            keys = ", ".join(shown(str(k)) for k in list(pobj)[:8]) or "none"
            res.problems.append(Problem(name, pl, f"unrecognised row (keys: {keys}); expected {FIELD_HINT}, "
                                        "or pass --format", "wrong_format"))
        if self.gave_up:
            res.problems.append(Problem(name, self.pending[-1][0], f"no row in the first {DETECT_LIMIT} is in a "
                                        "known format; stopped reading", "file"))
        res.problems.sort(key=lambda p: p.line)
        res.warnings.sort(key=lambda p: p.line)
        res.rows_total, res.rows_valid = self.total, self.valid
        res.format = self.detected or res.format
        if self.acc is not None:
            res.stats = self.acc.result()


def _well_formed(objs: list, key: Optional[str], trusted: bool) -> Optional[tuple[list, list, list]]:
    """(canonical role tuples, message counts, content tuples) when every object's ``key`` holds a well-formed
    conversation, computed with whole-list C-level maps; None when any row needs a closer look."""
    try:
        raws = list(map(itemgetter(key), objs))  # TypeError: a row that is not an object (or a Bad)
        if set(map(type, raws)) != {list}:
            return None
        counts = list(map(len, raws))
        if 0 in counts:
            return None
        flat = list(chain.from_iterable(raws))
        if set(map(type, flat)) != {dict}:
            return None
        try:
            roles = list(map(checks.get_role, flat))
            contents = list(map(checks.get_content, flat))
        except KeyError:  # ShareGPT's from/value (per row, "role" in the first message would win)
            if any(map(contains, flat, repeat("role"))):
                return None
            roles = list(map(checks.get_from, flat))
            contents = list(map(checks.get_value, flat))
        # str.strip raises TypeError for a non-string content; an all-blank content strips to "" (falsy).
        if not all(map(str.strip, contents)) or (not trusted and checks.any_lone_surrogate(contents)):
            return None
        row_roles = list(map(tuple, map(islice, repeat(iter(roles)), counts)))
        canon = list(map(checks.shape_get, row_roles))  # TypeError: an unhashable role
        if None in canon:  # a shape not cached yet, or not a valid conversation
            canon = list(map(checks.canonical_shape, row_roles))
            if None in canon:
                return None
    except (KeyError, TypeError):
        return None
    return canon, counts, list(map(tuple, map(islice, repeat(iter(contents)), counts)))
