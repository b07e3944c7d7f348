"""Names are data: checks for the file and folder names users pass (output dirs, data files, model folders).

A name is refused when it could escape the data root or break a line-oriented format: empty, absolute, a ``..``
segment, a NUL, a newline or another control character. Quotes, spaces and ``;`` are allowed: kolo never builds a
shell string, so such a name travels as one inert argv element (tests/test_names.py shows it).

Functions raise ``ValueError`` (pydantic turns it into a per-option message); :func:`resolve_under` raises
:class:`~kolo_trainer.errors.NameError_` for callers outside option validation.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import NameError_


def check_text(value: str) -> None:
    """No NUL, newline or other control characters (tabs included)."""
    for ch in value:
        if ord(ch) < 32 or ch == "\x7f":
            raise ValueError(f"contains a control character ({ch!r}); use a plain name")


def check_relative(value: str) -> None:
    """A relative path inside the data root: no absolute path, no '..', no empty segments."""
    check_text(value)
    if not value.strip():
        raise ValueError("must not be empty")
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise ValueError("must be relative to the data root, not an absolute path "
                         "(copy the file in with `kolo data add FILE`)")
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if ".." in parts:
        raise ValueError("must not contain '..' (it would leave the data root)")


def check_plain(value: str) -> None:
    """A single folder name: a relative name without '/' or '\\'."""
    check_relative(value)
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a single folder name, without '/'")


def resolve_under(root: str | os.PathLike, rel: str, what: str = "name") -> Path:
    """``root/rel``, refusing anything that escapes ``root`` (symlinks included)."""
    try:
        check_relative(rel)
    except ValueError as e:
        raise NameError_(f"{what} {rel!r}: {e}") from None
    root_p = Path(root).resolve()
    p = (root_p / rel).resolve()
    if p != root_p and root_p not in p.parents:
        raise NameError_(f"{what} {rel!r} resolves outside the data root {root_p}")
    return p
