"""Names are data: checks for the file and folder names users pass (output dirs, data files, model folders).

A name is refused when it could escape the data root, break a line-oriented format or fail at a later stage:
empty, absolute, a ``..`` segment, a NUL, a newline or another control character, an invisible Unicode format
character (e.g. U+202E, which reverses how the name is shown), a lone surrogate (not encodable: no file system or
Modelfile takes it), or a segment too long for the file names kolo derives from it (``RUN-Q4_K_M.gguf``,
``.tmp-PID-RUN``). Quotes, spaces and ``;`` are allowed: kolo never builds a shell string, so such a name travels
as one inert argv element (tests/unit/trainer/test_names.py shows it). Every later stage (export, Ollama, LM
Studio) accepts what passes here, so a bad name is refused before training, not after.

Functions raise ``ValueError`` (pydantic turns it into a per-option message). Resolving a name against the data
root (links included) is :meth:`kolo_trainer.runfolder.DataRoot.resolve`'s job.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath


#: Longest path segment in UTF-8 bytes: file systems allow 255, and kolo derives names up to ~50 bytes longer
#: (``.tmp-<pid>-old-<name>``, ``<run>-lora-F16.gguf``).
MAX_SEGMENT_BYTES = 200
#: Longest run name: it also becomes GGUF file names, an Ollama model name and an LM Studio folder.
MAX_RUN_NAME_BYTES = 128


def check_text(value: str) -> None:
    """No NUL, newline or other control characters (tabs included), no invisible format characters (bidi
    overrides, zero-width joiners) and no lone surrogates."""
    for ch in value:
        cat = unicodedata.category(ch)
        if ord(ch) < 32 or ch == "\x7f" or cat == "Cc":
            raise ValueError(f"contains a control character ({ch!r}); use a plain name")
        if cat == "Cs":
            raise ValueError(f"contains a lone surrogate ({ch!r}), which is not valid Unicode; use a plain name")
        if cat == "Cf":
            raise ValueError(f"contains an invisible formatting character (U+{ord(ch):04X} "
                             f"{unicodedata.name(ch, '')}); use a plain name")


def _check_lengths(value: str, limit: int = MAX_SEGMENT_BYTES) -> None:
    for seg in PurePosixPath(value.replace("\\", "/")).parts:
        n = len(seg.encode("utf-8"))
        if n > limit:
            raise ValueError(f"a name of {n} bytes is too long (at most {limit}; kolo adds suffixes such as "
                             "-Q4_K_M.gguf to it)")


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
    _check_lengths(value)


def check_plain(value: str) -> None:
    """A single folder name: a relative name without '/' or '\\'."""
    check_relative(value)
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a single folder name, without '/'")


def check_run_name(value: str) -> None:
    """A run folder name (``--output-dir``): one plain folder name, short enough for every name derived from it."""
    check_text(value)
    _check_lengths(value, MAX_RUN_NAME_BYTES)  # before check_plain's general limit, so the message names this one
    check_plain(value)
