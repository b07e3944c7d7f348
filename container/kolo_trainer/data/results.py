"""What reading a data file produces: rows, problems (``file:line: reason``), and the report of dropped rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(slots=True)
class Row:
    """One conversation: ``messages`` is ``[{"role", "content"}]``; ``line`` is where the row starts (1-based)."""

    messages: list
    line: int
    source: str


@dataclass(slots=True)
class Problem:
    file: str
    line: int
    reason: str
    kind: str = "invalid"
    ref: int = 0  # for duplicates: the line of the first occurrence

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LoadResult:
    rows: list[Row]
    problems: list[Problem]
    warnings: list[Problem]
    format: str
    file: str = ""
    rows_total: int = 0  # rows read (valid + invalid), blank lines excluded
    rows_valid: int = 0
    stats: Optional[dict] = None  # filled by load(keep_rows=False) so callers need not keep the rows


@dataclass
class DropReport:
    """What ``--skip-invalid`` dropped: count, count per kind of problem, and each dropped ``{line, reason}``."""

    count: int
    by_kind: dict[str, int]
    dropped: list[dict]

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(self.by_kind.items(), key=lambda x: -x[1]))
        return f"dropped {self.count} invalid row(s)" + (f" ({kinds})" if kinds else "")


class Bad(Exception):
    """One row (or the whole file, kind ``file``) is unusable; ``reason`` is worded for the user."""

    def __init__(self, reason: str, kind: str = "invalid"):
        self.reason, self.kind = reason, kind


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def type_name(v: Any) -> str:
    """A JSON value's type as a user would say it ("an object", "a number", ...)."""
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def shown(text: str) -> str:
    """User text (a key, a file name) safe to print: lone surrogates and undecodable bytes as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
