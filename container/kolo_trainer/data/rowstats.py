"""Length statistics of the valid rows: rows, turns, chars and words per row, role counts, a shared system prompt.

Gathered while rows stream by (so ``kolo data check`` never holds the whole file), row by row or for a whole
chunk at once, and mergeable across the processes of :mod:`.parallel`.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from itertools import repeat
from operator import add, itemgetter, sub
from typing import Any

from .results import Row


class StatsAccumulator:
    """Statistics gathered while rows stream by (so ``kolo data check`` never holds the whole file).

    Words are estimated as spaces + newlines + 1 per message: exact for single-spaced text, and ~10x cheaper
    than ``len(text.split())``, which would allocate every word and dominate ``kolo data check``'s run time.
    """

    def __init__(self) -> None:
        self.chars = array("q")
        self.words = array("q")
        self.turns = array("q")
        self.shapes: dict[tuple, int] = {}  # role sequence -> rows; expanded into role counts at the end
        self.system: Any = _UNSET
        self.rows_with_system = 0

    def add(self, roles: tuple, contents: list) -> None:
        # One joined copy of the row (a memcpy) instead of a Python-level pass per message:
        # chars = len(j) - separators; words = spaces + newlines + 1 per message (see the class docstring).
        j = "\n".join(contents)
        self.chars.append(len(j) - len(contents) + 1)
        self.words.append(j.count(" ") + j.count("\n") + 1)
        shapes = self.shapes
        shapes[roles] = shapes.get(roles, 0) + 1
        if roles[0] == "system":
            self.rows_with_system += 1
            system = contents[0]
            self.turns.append(len(roles) - 1)
        else:
            system = None
            self.turns.append(len(roles))
        if self.system is _UNSET:
            self.system = system
        elif self.system is not _MIXED and self.system != system:
            self.system = _MIXED

    def add_rows(self, canon: list, shapes: Counter, counts: list, row_contents: list) -> None:
        """:meth:`add` for many valid rows at once (canonical role tuples, their Counter, message counts, content
        tuples), with whole-list C-level ``map``s instead of Python per row; the same figures."""
        js = list(map("\n".join, row_contents))
        self.chars.extend(map(sub, map(len, js), map(sub, counts, repeat(1))))
        self.words.extend(map(add, map(add, map(str.count, js, repeat(" ")), map(str.count, js, repeat("\n"))),
                              repeat(1)))
        own, turns_of = self.shapes, _TURNS_OF
        with_system = 0
        for shape, k in shapes.items():
            own[shape] = own.get(shape, 0) + k
            if shape not in turns_of:
                turns_of[shape] = len(shape) - (shape[0] == "system")
            if shape[0] == "system":
                with_system += k
        self.turns.extend(map(turns_of.__getitem__, canon))
        self.rows_with_system += with_system
        if with_system == 0:
            self._fold_system(None)
        elif with_system == len(canon):
            prompts = set(map(itemgetter(0), row_contents))
            self._fold_system(prompts.pop() if len(prompts) == 1 else _MIXED)
        else:
            self._fold_system(_MIXED)

    def _fold_system(self, other: Any) -> None:
        """Fold in later rows whose system prompt is ``other`` (None: no system message; _MIXED: several)."""
        if self.system is _UNSET:
            self.system = other
        elif self.system is not _MIXED and (other is _MIXED or self.system != other):
            self.system = _MIXED

    def state(self) -> tuple:
        """Picklable form (the sentinels are module objects that would not survive pickling)."""
        system = ("unset", None) if self.system is _UNSET else ("mixed", None) if self.system is _MIXED else (
            "value", self.system)
        return self.chars, self.words, self.turns, self.shapes, system, self.rows_with_system

    def merge(self, state: tuple) -> None:
        """Append the rows summarised by another accumulator's :meth:`state` (rows that come after ours)."""
        chars, words, turns, shapes, (kind, value), with_system = state
        self.chars.extend(chars)
        self.words.extend(words)
        self.turns.extend(turns)
        for k, v in shapes.items():
            self.shapes[k] = self.shapes.get(k, 0) + v
        self.rows_with_system += with_system
        if kind != "unset":
            self._fold_system(_MIXED if kind == "mixed" else value)

    def result(self) -> dict:
        n = len(self.chars)
        shared = self.system if isinstance(self.system, str) else None
        roles: dict[str, int] = {}
        for shape, count in self.shapes.items():
            for r in shape:
                roles[r] = roles.get(r, 0) + count
        return {
            "rows": n,
            "turns": int(sum(self.turns)),
            "turns_per_row": summary(self.turns),
            "chars": summary(self.chars),
            "words": summary(self.words),
            "roles": dict(sorted(roles.items())),
            "rows_with_system": self.rows_with_system,
            "shared_system_prompt": shared,
        }


_UNSET = object()
_MIXED = object()
_TURNS_OF: dict[tuple, int] = {}  # canonical role tuple -> turns (messages other than the system one)


def summary(values: array) -> dict:
    """min / mean / max / p50 / p95 of ``values`` (nearest-rank percentiles)."""
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0, "p50": 0, "p95": 0}
    s = sorted(values)
    n = len(s)

    def pct(p: float) -> int:  # nearest-rank percentile
        return int(s[min(n - 1, max(0, math.ceil(p * n) - 1))])

    return {"min": int(s[0]), "mean": round(sum(s) / n, 1), "max": int(s[-1]), "p50": pct(0.50), "p95": pct(0.95)}


def stats(rows: list[Row]) -> dict:
    """rows, turns, chars/words (min/mean/max/p50/p95), role counts, and the system prompt if every row shares it."""
    acc = StatsAccumulator()
    for r in rows:
        acc.add(tuple(m["role"] for m in r.messages), [m["content"] for m in r.messages])
    return acc.result()
