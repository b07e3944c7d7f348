"""Training data in: JSONL / JSON / CSV files in the shapes people have -> conversations, with every problem reported.

Formats (``fmt``; ``auto`` detects it from the first recognisable row):

==================  ==========================================================================================
``messages``         OpenAI ``{"messages": [{"role": "system|user|assistant", "content": "..."}]}``, multi-turn
``sharegpt``         ``{"conversations": [{"from": "system|human|gpt", "value": "..."}]}`` (user/assistant too)
``alpaca``           ``{"instruction", "input"?, "output", "system"?}`` -> user = instruction (+ "\\n\\n" + input)
``prompt_completion`` ``{"prompt", "completion"}`` strings (one user + one assistant turn), or lists of messages
``text``             ``{"text": "..."}`` -> ``[{"role": "text", "content": ...}]``: a plain document. It is trained
                     as continued pre-training: no chat template, BOS + text + EOS, loss on every token
                     (``masking.encode`` handles the "text" role). Text rows need no assistant turn.
==================  ==========================================================================================

Role names are normalised (case-insensitive): human -> user, gpt/model -> assistant. Every conversation is
``[system?] user assistant (user assistant)* [user]``: at most one system message and only first, strictly
alternating user/assistant, starting with a user turn, at least one assistant turn, non-empty string contents.

Every bad row becomes a :class:`Problem` ``file:line: reason``; nothing is dropped silently.
:func:`raise_if_invalid` turns problems into one :class:`~kolo_trainer.errors.DataError` (or, with
``skip_invalid``, a report of what was dropped). Exact duplicate conversations are warnings naming both lines.

Speed (issue 7 compares ``kolo data check`` with a plain ``json.loads`` loop): JSONL is read in 8 MiB blocks split
into lines at C speed and parsed by orjson when it is installed (else by the stdlib's C scanner); chunks of
well-formed conversations are validated, hashed for duplicates and summarised with whole-chunk C-level ``map``s
and a cache of valid role sequences (see :func:`_consume`), and only suspicious rows take the slow path that
words every reason, on the stdlib's own object; the cyclic GC is paused while loading; and a big JSONL file
checked without keeping rows (``keep_rows=False``) on a machine with idle cores is split into byte ranges checked
by several processes (``KOLO_DATA_WORKERS`` overrides the count). Results are identical on every path (tested
against a slow reference). A row longer than :data:`MAX_ROW_BYTES` is reported and skipped without being held
in memory.
Stdlib only (orjson optional): the host CLI imports this module for ``kolo data check``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import math
import os
import sys
from array import array
from collections import Counter
from itertools import chain, islice, repeat
from operator import add, contains, itemgetter, sub
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from .errors import DataError

FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text")

#: One row (one JSONL line, one CSV record) may not exceed this; longer rows are reported, not loaded.
MAX_ROW_BYTES = 16 * 1024 * 1024
_BLOCK = 8 * 1024 * 1024

_ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "model": "assistant",
}
_FIELD_HINT = ("messages (OpenAI), conversations (ShareGPT), instruction/output (Alpaca), prompt/completion "
               "or text")


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


# ------------------------------------------------------------------------------------------------ normalisation


class _Bad(Exception):
    def __init__(self, reason: str, kind: str = "invalid"):
        self.reason, self.kind = reason, kind


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _content(v: Any, where: str) -> str:
    if type(v) is str:
        return v
    if type(v) is list:  # OpenAI content parts: only text parts can be trained on
        parts = []
        for p in v:
            if type(p) is dict and p.get("type") == "text" and type(p.get("text")) is str:
                parts.append(p["text"])
            else:
                raise _Bad(f"{where}: only text content parts are supported, got {_type_name(p)} "
                           f"{(p.get('type') if type(p) is dict else '')!s}".rstrip(), "wrong_type")
        return "".join(parts)
    raise _Bad(f"{where}: content must be a string, got {_type_name(v)}", "wrong_type")


def _messages(raw: Any, key: str) -> list:
    """Normalise a list of role/content (or from/value) dicts and check the conversation's shape."""
    if type(raw) is not list:
        raise _Bad(f"'{key}' must be a list of messages, got {_type_name(raw)}", "wrong_type")
    if not raw:
        raise _Bad(f"'{key}' is empty", "empty")
    out = []
    reasons = []
    aliases = _ROLE_ALIASES
    for i, m in enumerate(raw, 1):
        if type(m) is not dict:
            reasons.append(f"message {i} must be an object, got {_type_name(m)}")
            continue
        if "role" in m:
            role, content = m["role"], m.get("content")
        elif "from" in m:
            role, content = m["from"], m.get("value")
        else:
            reasons.append(f"message {i} has no 'role' (or 'from')")
            continue
        if type(role) is not str:
            reasons.append(f"message {i}: role must be a string, got {_type_name(role)}")
            continue
        r = aliases.get(role) or aliases.get(role.strip().lower())
        if r is None:
            reasons.append(f"message {i}: unknown role {role!r} (use system, user or assistant)")
            continue
        try:
            text = _content(content, f"message {i} ({r})")
        except _Bad as b:
            reasons.append(b.reason)
            continue
        if not text.strip():
            reasons.append(f"message {i} ({r}): empty content")
        out.append({"role": r, "content": text})
    if len(out) == len(raw):  # every message understood: the conversation's shape can be judged too
        _check_shape(out, reasons)
    if reasons:
        raise _Bad("; ".join(reasons), "invalid")
    return out


def _check_shape(msgs: list, reasons: list[str]) -> None:
    prev = None
    seen_user = False
    has_assistant = False
    for i, m in enumerate(msgs, 1):
        r = m["role"]
        if r == "system":
            if i != 1:
                reasons.append(f"message {i}: a system message must come first (and only once)")
        else:
            if r == prev:
                reasons.append(f"messages {i - 1} and {i}: two {r} turns in a row")
            if r == "assistant":
                has_assistant = True
                if not seen_user:
                    reasons.append(f"message {i}: assistant turn before any user turn")
            else:
                seen_user = True
        prev = r
    if not has_assistant:
        reasons.append("no assistant turn (nothing to train on)")


def _text_field(obj: dict, key: str, required: bool = True) -> str:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"missing '{key}'", "missing_field")
        return ""
    if type(v) is not str:
        raise _Bad(f"'{key}' must be a string, got {_type_name(v)}", "wrong_type")
    if required and not v.strip():
        raise _Bad(f"'{key}' is empty", "empty")
    return v


_get_role, _get_content = itemgetter("role"), itemgetter("content")
_get_from, _get_value = itemgetter("from"), itemgetter("value")
_shape_cache: dict[tuple, Optional[tuple]] = {}


def _canonical_shape(roles: tuple) -> Optional[tuple]:
    """Canonical role tuple when ``roles`` is a valid conversation shape, else None (cached: few distinct shapes)."""
    try:
        return _shape_cache[roles]
    except KeyError:
        pass
    canon = []
    for r in roles:
        c = _ROLE_ALIASES.get(r) if type(r) is str else None
        if c is None and type(r) is str:
            c = _ROLE_ALIASES.get(r.strip().lower())
        if c is None:
            canon = None
            break
        canon.append(c)
    result: Optional[tuple] = None
    if canon is not None:
        reasons: list[str] = []
        _check_shape([{"role": c} for c in canon], reasons)
        result = None if reasons else tuple(canon)
    if len(_shape_cache) < 4096:
        _shape_cache[roles] = result
    return result


def _fast_conversation(raw: Any) -> Optional[tuple[tuple, list]]:
    """(roles, contents) for a well-formed message list, using C-level map/itemgetter; None means "look closer".

    Most rows are fine, so the exact (and slower) diagnosis in :func:`_messages` runs only for the rest.
    """
    if type(raw) is not list or not raw or type(raw[0]) is not dict:
        return None
    try:
        if "role" in raw[0]:
            roles = tuple(map(_get_role, raw))
            contents = list(map(_get_content, raw))
        else:
            roles = tuple(map(_get_from, raw))
            contents = list(map(_get_value, raw))
        canon = _canonical_shape(roles)
        # str.strip raises TypeError for a non-string content; an all-blank content strips to "" (falsy).
        if canon is None or not all(map(str.strip, contents)):
            return None
    except (KeyError, TypeError):
        return None
    return canon, contents


def _conversation(obj: dict, fmt: str) -> tuple[tuple, list]:
    """The row as (roles, contents); raises _Bad with every reason when it is not a valid conversation."""
    if fmt == "messages" or fmt == "sharegpt":
        key = ("messages" if "messages" in obj else None) if fmt == "messages" else (
            "conversations" if "conversations" in obj else "messages" if "messages" in obj else None)
        if key is None:
            raise _Bad(_not_format(obj, fmt), "wrong_format")
        fast = _fast_conversation(obj[key])
        if fast is not None:
            return fast
        msgs = _messages(obj[key], key)
    else:
        msgs = _row_messages(obj, fmt)
    return tuple(m["role"] for m in msgs), [m["content"] for m in msgs]


def _row_messages(obj: dict, fmt: str) -> list:
    if fmt == "messages":
        if "messages" not in obj:
            raise _Bad(_not_format(obj, fmt), "wrong_format")
        return _messages(obj["messages"], "messages")
    if fmt == "sharegpt":
        key = "conversations" if "conversations" in obj else "messages" if "messages" in obj else None
        if key is None:
            raise _Bad(_not_format(obj, fmt), "wrong_format")
        return _messages(obj[key], key)
    if fmt == "alpaca":
        if "instruction" not in obj or "output" not in obj:
            raise _Bad(_not_format(obj, fmt), "wrong_format")
        instruction = _text_field(obj, "instruction")
        inp = _text_field(obj, "input", required=False)
        output = _text_field(obj, "output")
        system = _text_field(obj, "system", required=False)
        msgs = [{"role": "system", "content": system}] if system.strip() else []
        user = instruction + ("\n\n" + inp if inp.strip() else "")
        return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if fmt == "prompt_completion":
        if "prompt" not in obj or "completion" not in obj:
            raise _Bad(_not_format(obj, fmt), "wrong_format")
        p, c = obj["prompt"], obj["completion"]
        if type(p) is list and type(c) is list:  # TRL's conversational prompt/completion
            return _messages(p + c, "prompt + completion")
        return [{"role": "user", "content": _text_field(obj, "prompt")},
                {"role": "assistant", "content": _text_field(obj, "completion")}]
    if fmt == "text":
        if "text" not in obj:
            raise _Bad(_not_format(obj, fmt), "wrong_format")
        return [{"role": "text", "content": _text_field(obj, "text")}]
    raise ValueError(fmt)


def _not_format(obj: dict, fmt: str) -> str:
    keys = ", ".join(list(map(str, obj))[:8]) or "none"
    return f"row is not in {fmt} format (keys: {keys}); expected {_FIELD_HINT}"


def detect(obj: Any) -> Optional[str]:
    """The format a single row looks like, or None."""
    if type(obj) is not dict:
        return None
    if "messages" in obj:
        msgs = obj["messages"]
        if type(msgs) is list and msgs and type(msgs[0]) is dict and "from" in msgs[0] and "role" not in msgs[0]:
            return "sharegpt"
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "text"
    return None


# ------------------------------------------------------------------------------------------------ readers
# Each reader yields (line, obj) for a parsed row or (line, _Bad) for a row that could not be parsed.


def _json_error(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return "invalid JSON (nested too deeply)"
    return "invalid JSON"


def _decode_error(e: UnicodeDecodeError, data: bytes) -> str:
    bad = data[e.start:e.start + 1]
    return f"not valid UTF-8 text (byte 0x{bad.hex()} at column {e.start + 1}); save the file as UTF-8"


def _too_long() -> str:
    size = f"{MAX_ROW_BYTES // (1024 * 1024)} MiB" if MAX_ROW_BYTES >= 1024 * 1024 else f"{MAX_ROW_BYTES} bytes"
    return f"line is longer than {size}; one row may not be that large"


_SMALL_BATCH = 64


def _parse_block(text: str, first_line: int, decoder: json.JSONDecoder) -> Iterator[list[tuple[int, Any]]]:
    """Parse every line of ``text`` (which ends with a newline), yielding small lists of (line, object or _Bad).

    Uses the C scanner at each line start (no per-line decode, slicing or regex), and checks that each value ends
    on its own line, so a value can never silently span two lines. The lists are small on purpose: the consumer
    drops each row's objects before the next list is parsed, so the allocator keeps reusing cache-hot memory
    (handing over a whole 8 MiB block of parsed rows at once made parsing ~2x slower than json.loads per line).
    """
    scan = decoder.scan_once  # type: ignore[attr-defined]
    find = text.find
    out: list[tuple[int, Any]] = []
    append = out.append
    pos, n, ln = 0, len(text), first_line - 1
    limit = MAX_ROW_BYTES
    quarter = limit // 4  # a UTF-8 character is at most 4 bytes: shorter lines cannot exceed the limit
    while pos < n:
        nl = find("\n", pos)
        if nl < 0:
            nl = n
        ln += 1
        if nl - pos > quarter and len(text[pos:nl].encode("utf-8")) > limit:  # same rule as across blocks
            append((ln, _Bad(_too_long(), "too_long")))
        elif pos < nl and text[pos] == "{":
            try:
                obj, end = scan(text, pos)
            except (StopIteration, json.JSONDecodeError, RecursionError):
                append((ln, _Bad(_json_error(text[pos:nl]), "invalid_json")))
            else:
                if end == nl or (end < nl and text[end:nl].isspace()):
                    append((ln, obj))
                else:  # trailing data on the line, or a value running past the end of the line
                    append((ln, _Bad(_json_error(text[pos:nl]), "invalid_json")))
        else:
            line = text[pos:nl]
            if line.strip():  # blank lines are allowed and skipped
                try:
                    append((ln, json.loads(line)))
                except json.JSONDecodeError as e:
                    append((ln, _Bad(f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json")))
                except RecursionError:
                    append((ln, _Bad("invalid JSON (nested too deeply)", "invalid_json")))
        pos = nl + 1
        if len(out) >= _SMALL_BATCH:
            yield out
            out = []
            append = out.append
    if out:
        yield out


class _Lines:
    """Complete JSONL lines as bytes (no newline), the first being line ``first``; parsed by the consumer."""

    __slots__ = ("first", "lines")

    def __init__(self, first: int, lines: list):
        self.first, self.lines = first, lines

    def reference(self, decoder: json.JSONDecoder) -> Iterator[list[tuple[int, Any]]]:
        """The lines parsed by the reference (stdlib) parser: (line, object or _Bad), blank lines skipped."""
        if self.lines:
            yield from _parse_chunk(b"\n".join(self.lines) + b"\n", self.first, decoder)


def _jsonl_pieces(f: Any, bom: bool = True) -> Iterator[Any]:
    """JSONL, block by block: each block's complete lines as one :class:`_Lines` (split at C speed), and an
    over-long line as ``[(line, _Bad)]``. Only a line that crosses a block boundary is copied, and one longer
    than MAX_ROW_BYTES is skipped, never accumulated."""
    carry = b""  # the start of a line that continues in the next block
    line_no = 0  # complete lines handed out so far
    skipping = False  # inside an over-long line: discard until its newline
    too_long = _too_long()
    if bom and f.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark (Windows editors) is not part of line 1
        f.seek(0)
    while True:
        block = f.read(_BLOCK)
        if not block:
            break
        parts = block.split(b"\n")  # parts[:-1] end with a newline; parts[-1] continues in the next block
        del block
        k = len(parts) - 1
        i = 0
        if skipping:
            if k == 0:
                continue
            skipping = False
            line_no += 1
            i = 1
        if i == k:  # no line ends in (the rest of) this block
            if len(carry) + len(parts[i]) > MAX_ROW_BYTES:
                yield [(line_no + 1, _Bad(too_long, "too_long"))]
                carry, skipping = b"", True
            else:
                carry += parts[i]
            continue
        if carry:  # finish the line begun in the previous block(s)
            if len(carry) + len(parts[i]) > MAX_ROW_BYTES:
                yield [(line_no + 1, _Bad(too_long, "too_long"))]
                line_no += 1
                i += 1
            else:
                parts[i] = carry + parts[i]
            carry = b""
        if i < k:
            yield _Lines(line_no + 1, parts[i:k])
            line_no += k - i
        carry = parts[k]
    if carry and not skipping:
        yield _Lines(line_no + 1, [carry])


def _jsonl_batches(f: Any, bom: bool = True) -> Iterator[list[tuple[int, Any]]]:
    """JSONL as lists of (line, object or _Bad), parsed by the reference (stdlib) parser."""
    decoder = json.JSONDecoder()
    for piece in _jsonl_pieces(f, bom):
        if type(piece) is _Lines:
            yield from piece.reference(decoder)
        else:
            yield piece


def _read_jsonl(f: Any, bom: bool = True) -> Iterator[tuple[int, Any]]:
    for batch in _jsonl_batches(f, bom):
        yield from batch


def _batched(records: Iterator[tuple[int, Any]], size: int = 512) -> Iterator[list[tuple[int, Any]]]:
    batch: list[tuple[int, Any]] = []
    for r in records:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _parse_chunk(chunk: bytes | memoryview, first_line: int,
                 decoder: json.JSONDecoder) -> Iterator[list[tuple[int, Any]]]:
    try:
        text = str(chunk, "utf-8")
    except UnicodeDecodeError:
        # Rare: find the undecodable line(s) one by one and parse the rest normally.
        ln = first_line
        for raw_line in bytes(chunk).split(b"\n")[:-1]:
            try:
                t = raw_line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield [(ln, _Bad(_decode_error(e, raw_line), "not_utf8"))]
            else:
                yield from _parse_block(t + "\n", ln, decoder)
            ln += 1
        return
    yield from _parse_block(text, first_line, decoder)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _read_json(data: bytes) -> Iterator[tuple[int, Any]]:
    """A JSON file holding a list of rows; each row's line is where its element starts."""
    text = data.decode("utf-8-sig")
    decoder = json.JSONDecoder()
    ws = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]
    pos = ws(text, 0).end()
    if pos < len(text) and text[pos] == "{":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":  # one object per line: it is JSONL with a .json name
                yield from _read_jsonl(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
                return
            yield e.lineno, _Bad(f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json")
            return
        yield 1, _Bad("a .json file must hold a list of rows ([{...}, {...}]); for one row per line use .jsonl "
                      f"(the object has keys: {', '.join(list(map(str, obj))[:8])})", "wrong_format")
        return
    if pos >= len(text) or text[pos] != "[":
        yield _line_of(text, pos), _Bad("a .json file must hold a list of rows ([{...}, {...}])", "wrong_format")
        return
    pos = ws(text, pos + 1).end()
    line, last = 1, 0
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line += text.count("\n", last, pos)
        last = pos
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield e.lineno, _Bad(f"invalid JSON ({e.msg} at column {e.colno}); stopped reading the file",
                                 "invalid_json")
            return
        yield line, obj
        pos = ws(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws(text, pos + 1).end()
            continue
        if pos < len(text) and text[pos] == "]":
            rest = ws(text, pos + 1).end()
            if rest != len(text):
                yield _line_of(text, rest), _Bad("extra data after the closing ']'", "invalid_json")
            return
        yield _line_of(text, pos), _Bad("invalid JSON (expected ',' or ']' after a row)", "invalid_json")
        return


def _read_csv(f: io.BufferedReader) -> Iterator[tuple[int, Any]]:
    """A CSV file with a header row; a 'messages'/'conversations' column holds JSON text."""
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    prev_end = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        cols = [h.strip() for h in header]
        prev_end = reader.line_num
        for record in reader:
            start, prev_end = prev_end + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(cols):
                yield start, _Bad(f"has {len(record)} fields but the header has {len(cols)}", "wrong_type")
                continue
            obj: dict[str, Any] = dict(zip(cols, record))
            bad = None
            for key in ("messages", "conversations", "prompt", "completion"):
                v = obj.get(key)
                if key in ("messages", "conversations") and v is not None or (
                        key in ("prompt", "completion") and isinstance(v, str) and v.lstrip().startswith("[{")):
                    try:
                        obj[key] = json.loads(v)
                    except json.JSONDecodeError as e:
                        bad = _Bad(f"column '{key}': invalid JSON ({e.msg} at column {e.colno})", "invalid_json")
                        break
            yield start, bad if bad is not None else obj
    except UnicodeDecodeError as e:
        yield prev_end + 1, _Bad(f"not valid UTF-8 text (byte 0x{e.object[e.start:e.start + 1].hex()}); "
                                 "save the file as UTF-8; stopped reading", "not_utf8")
    except csv.Error as e:
        yield reader.line_num or 1, _Bad(f"malformed CSV ({e}); stopped reading", "invalid_csv")


# ------------------------------------------------------------------------------------------------ stats


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
            "turns_per_row": _summary(self.turns),
            "chars": _summary(self.chars),
            "words": _summary(self.words),
            "roles": dict(sorted(roles.items())),
            "rows_with_system": self.rows_with_system,
            "shared_system_prompt": shared,
        }


_UNSET = object()
_MIXED = object()
_TURNS_OF: dict[tuple, int] = {}  # canonical role tuple -> turns (messages other than the system one)


def _summary(values: array) -> dict:
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


# ------------------------------------------------------------------------------------------------ load


def _kind_of(path: Path, head: bytes) -> str:
    ext = path.suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json":
        return "json"
    if ext == ".csv":
        return "csv"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return {b"{": "jsonl", b"[": "json"}.get(first, "unknown")


def load(path: str | os.PathLike, fmt: str = "auto", display_name: Optional[str] = None, *,
         keep_rows: bool = True) -> LoadResult:
    """Read and validate a training file. Never raises for bad data: see ``problems`` / :func:`raise_if_invalid`.

    ``display_name`` is how the file is named in messages (e.g. relative to the data root). With
    ``keep_rows=False`` the rows are not kept, only counted and summarised into ``result.stats``.
    """
    if fmt not in FORMATS:
        raise DataError([f"unknown data format {fmt!r}; choose from {', '.join(FORMATS)}"])
    p = Path(path)
    name = display_name or str(path)
    res = LoadResult(rows=[], problems=[], warnings=[], format=fmt, file=name)

    def fatal(reason: str, line: int = 1) -> LoadResult:
        res.problems.append(Problem(name, line, reason, "file"))
        return res

    if not p.exists():
        return fatal("file not found")
    if p.is_dir():
        return fatal("is a folder, not a data file")
    try:
        f = open(p, "rb")
    except OSError as e:
        return fatal(f"cannot read ({e.strerror or e})")
    with f:
        head = f.read(65536)
        if not head.strip(b"\xef\xbb\xbf \t\r\n"):
            return fatal("empty file (no rows)")
        if b"\x00" in head:
            return fatal("binary file (contains NUL bytes); expected UTF-8 text: JSONL, JSON or CSV")
        kind = _kind_of(p, head)
        f.seek(0)
        if kind == "jsonl" and not keep_rows and _workers(p) > 1:
            parallel = _load_parallel(p, f, fmt, name, _workers(p))
            if parallel is not None:
                return parallel
            f.seek(0)
        if kind == "jsonl":
            records = _jsonl_pieces(f)
        elif kind == "csv":
            records = _batched(_read_csv(f))  # type: ignore[arg-type]
        elif kind == "json":
            data = f.read()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                return fatal(_decode_error(e, data).split(" (")[0] + "; save the file as UTF-8",
                             data.count(b"\n", 0, e.start) + 1)
            records = _batched(_read_json(data))
        else:
            return fatal(f"unsupported file type {p.suffix or '(no extension)'!r}; use .jsonl, .json or .csv")
        # Parsing allocates millions of small objects that all stay alive (rows) or die young (check): the cyclic
        # GC would scan them again and again for nothing (JSON cannot make cycles), costing ~30% of the run time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            _consume(records, res, fmt, name, keep_rows)
        finally:
            if gc_was_enabled:
                gc.enable()
    if res.rows_total == 0 and not res.problems:
        res.problems.append(Problem(name, 1, "no rows (only blank lines or a header)", "file"))
    return res


def _dup_reason(first: int) -> str:
    return f"duplicate of line {first} (same conversation)"


#: Rows validated together by the batched fast path (small enough that freed objects' memory stays cache-hot).
_CHUNK = 128


def _fast_parser() -> Any:
    """orjson's ``loads`` when installed (a dependency of kolo-trainer), else None (the stdlib parser is used).

    Why: orjson parses UTF-8 bytes about twice as fast as ``json`` (no decode to ``str`` first), which is most of
    what ``kolo data check`` does. It is imported on first use, not with this module (it pulls in datetime and
    uuid). Its objects are used only where they cannot change a result: see :func:`_consume`.
    """
    global _FAST_LOADS
    if _FAST_LOADS is None:
        try:
            from orjson import loads  # type: ignore[import-not-found]
        except ImportError:
            loads = False
        _FAST_LOADS = loads
    return _FAST_LOADS or None


_FAST_LOADS: Any = None


def _std_loads(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def _consume(pieces: Iterator[Any], res: LoadResult, fmt: str, name: str,
             keep_rows: bool) -> tuple[dict[int, int], Optional["StatsAccumulator"]]:
    """Validate every record, collecting rows (or only statistics), problems and warnings into ``res``.

    ``pieces`` are lists of (line, object or _Bad) or, for JSONL, :class:`_Lines` of raw bytes. This loop is the
    hot path of ``kolo data check``. Three tiers, all with the same results as the reference (per-row, stdlib):

    * a chunk of :data:`_CHUNK` rows that all parse (orjson) and are all well-formed conversations is validated,
      hashed for duplicates and summarised with whole-chunk C-level ``map``s (:meth:`_batch`), no per-row Python;
    * otherwise each row takes the per-row path (``_fast_conversation``, then ``_conversation`` for reasons);
    * a row that orjson rejects, or that is not a valid conversation, is judged on the stdlib's own object, so
      every reason is worded exactly as before (orjson is stricter: NaN, lone surrogates, big integers as float).

    An orjson object is kept only for a row that is valid, whose outcome depends on its strings alone, and orjson
    and ``json`` decode valid UTF-8 strings identically.
    """
    seen: dict[int, int] = {}  # hash of a conversation -> line of its first occurrence
    acc = StatsAccumulator() if not keep_rows else None
    add = acc.add if acc is not None else None
    rows, problems, warnings = res.rows, res.problems, res.warnings
    detected = None if fmt == "auto" else fmt
    pending: list[tuple[int, dict]] = []  # rows read before the format could be detected
    total = valid = 0
    fast_keys = {"messages": "messages", "sharegpt": "conversations"}
    fast_key = fast_keys.get(detected or "")  # the key holding the message list, for the fast paths
    setdefault = seen.setdefault
    loads = _fast_parser()
    decoder = json.JSONDecoder()
    shape_get = _shape_cache.get

    def accept(line: int, roles: tuple, contents: list) -> None:
        nonlocal valid
        first = setdefault(hash((roles, tuple(contents))), line)
        if first != line:
            warnings.append(Problem(name, line, _dup_reason(first), "duplicate", first))
        if roles[-1] == "user":
            warnings.append(Problem(name, line, "ends with a user turn, which is not trained on", "trailing_user"))
        valid += 1
        if add is not None:
            add(roles, contents)
        else:
            rows.append(Row([{"role": r, "content": c} for r, c in zip(roles, contents)], line, name))

    def handle(line: int, obj: dict, f: str, raw: Optional[bytes] = None) -> None:
        try:
            roles, contents = _conversation(obj, f)
        except _Bad as b:
            if raw is not None:  # an orjson object: word the reason from the stdlib's
                handle(line, _std_loads(raw), f)
                return
            problems.append(Problem(name, line, b.reason, b.kind))
            return
        accept(line, roles, contents)

    def one(line: int, obj: Any, raw: Optional[bytes] = None) -> None:
        """The reference path for one row; ``raw`` (the line's bytes) when ``obj`` came from orjson."""
        nonlocal detected, fast_key
        if type(obj) is not dict:
            if raw is not None:
                one(line, _std_loads(raw))
            elif type(obj) is _Bad:
                problems.append(Problem(name, line, obj.reason, obj.kind))
            else:
                problems.append(Problem(name, line, f"a row must be a JSON object, got {_type_name(obj)}",
                                        "wrong_type"))
            return
        if fast_key is not None:  # inline fast path (messages / sharegpt)
            fast = _fast_conversation(obj.get(fast_key))
            if fast is not None:
                accept(line, fast[0], fast[1])
                return
            handle(line, obj, detected, raw)  # type: ignore[arg-type]
            return
        if detected is None:
            detected = detect(obj)
            if detected is None:
                pending.append((line, obj))
                return
            for pl, pobj in pending:
                handle(pl, pobj, detected)
            pending.clear()
            fast_key = fast_keys.get(detected)
        handle(line, obj, detected, raw)

    def batch(lines: Any, objs: list) -> bool:
        """The whole chunk at C speed when every row is a well-formed conversation; False = take the per-row path
        (nothing recorded). Same acceptance as ``_fast_conversation``, same hashes, warnings and statistics."""
        nonlocal valid
        try:
            raws = list(map(itemgetter(fast_key), objs))  # TypeError: a row that is not an object (or a _Bad)
            if set(map(type, raws)) != {list}:
                return False
            counts = list(map(len, raws))
            if 0 in counts:
                return False
            flat = list(chain.from_iterable(raws))
            if set(map(type, flat)) != {dict}:
                return False
            try:
                roles = list(map(_get_role, flat))
                contents = list(map(_get_content, flat))
            except KeyError:  # ShareGPT's from/value (per row, "role" in the first message would win)
                if any(map(contains, flat, repeat("role"))):
                    return False
                roles = list(map(_get_from, flat))
                contents = list(map(_get_value, flat))
            # str.strip raises TypeError for a non-string content; an all-blank content strips to "" (falsy).
            if not all(map(str.strip, contents)):
                return False
            row_roles = list(map(tuple, map(islice, repeat(iter(roles)), counts)))
            canon = list(map(shape_get, row_roles))  # TypeError: an unhashable role
            if None in canon:  # a shape not cached yet, or not a valid conversation
                canon = list(map(_canonical_shape, row_roles))
                if None in canon:
                    return False
        except (KeyError, TypeError):
            return False
        row_contents = list(map(tuple, map(islice, repeat(iter(contents)), counts)))
        n = len(objs)
        before = len(seen)
        firsts = list(map(setdefault, map(hash, zip(canon, row_contents)), lines))
        if len(seen) - before != n:
            for line, first in zip(lines, firsts):
                if first != line:
                    warnings.append(Problem(name, line, _dup_reason(first), "duplicate", first))
        shapes = Counter(canon)
        for shape in shapes:
            if shape[-1] == "user":
                for line, c in zip(lines, canon):
                    if c[-1] == "user":
                        warnings.append(Problem(name, line, "ends with a user turn, which is not trained on",
                                                "trailing_user"))
                break
        valid += n
        if acc is not None:
            acc.add_rows(canon, shapes, counts, row_contents)
        else:
            rows.extend(map(Row, map(_row_messages_of, canon, row_contents), lines, repeat(name)))
        return True

    def items(batch_: list[tuple[int, Any]]) -> None:
        nonlocal total
        total += len(batch_)
        if fast_key is not None and len(batch_) > 8:
            lines, objs = zip(*batch_)
            if batch(lines, list(objs)):
                return
        for line, obj in batch_:
            one(line, obj)
            if len(pending) >= 1000:
                return

    for piece in pieces:
        if type(piece) is not _Lines:
            items(piece)
        else:
            all_lines, first = piece.lines, piece.first
            for s in range(0, len(all_lines), _CHUNK):
                chunk = all_lines[s:s + _CHUNK]
                ln0 = first + s
                if loads is None or detected is None or max(map(len, chunk)) > MAX_ROW_BYTES:
                    for b in _Lines(ln0, chunk).reference(decoder):
                        items(b)
                        if len(pending) >= 1000:
                            break
                    if len(pending) >= 1000:
                        break
                    continue
                try:
                    objs = list(map(loads, chunk))
                except (ValueError, RecursionError):  # a line orjson rejects: row by row
                    for i, raw in enumerate(chunk):
                        try:
                            obj = loads(raw)
                        except (ValueError, RecursionError):  # blank, invalid, or orjson stricter than json
                            for b in _Lines(ln0 + i, [raw]).reference(decoder):
                                items(b)
                            continue
                        total += 1
                        one(ln0 + i, obj, raw)
                    continue
                total += len(objs)
                if fast_key is not None and batch(range(ln0, ln0 + len(objs)), objs):
                    continue
                for i, obj in enumerate(objs):
                    one(ln0 + i, obj, chunk[i])
        if len(pending) >= 1000:
            break
    for pl, pobj in pending:
        keys = ", ".join(list(map(str, pobj))[:8]) or "none"
        problems.append(Problem(name, pl, f"unrecognised row (keys: {keys}); expected {_FIELD_HINT}, "
                                "or pass --format", "wrong_format"))
    if pending and len(pending) >= 1000:
        problems.append(Problem(name, pending[-1][0], "no row in the first 1000 is in a known format; stopped "
                                "reading", "file"))
    problems.sort(key=lambda p: p.line)
    warnings.sort(key=lambda p: p.line)
    res.rows_total = total
    res.rows_valid = valid
    res.format = detected or fmt
    if acc is not None:
        res.stats = acc.result()
    return seen, acc


def _row_messages_of(roles: tuple, contents: tuple) -> list:
    return [{"role": r, "content": c} for r, c in zip(roles, contents)]


#: JSONL files at least this big are checked (``keep_rows=False``) by several processes, one byte range each.
PARALLEL_MIN_BYTES = 64 * 1024 * 1024


def _workers(path: Path) -> int:
    """How many processes check ``path``: 1 unless it is big, the machine has idle cores and fork is available."""
    try:
        wanted = int(os.environ.get("KOLO_DATA_WORKERS", "0"))
    except ValueError:
        wanted = 0
    if wanted == 1:
        return 1
    if wanted < 1:
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
        wanted = max(1, min(cores, 8, int(cores - busy + 1)))
        if wanted == 1:
            return 1
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return wanted


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
        seen, acc = _consume(_jsonl_pieces(reader, bom=False), res, fmt, name, keep_rows=False)
    assert acc is not None
    return res.problems, res.warnings, res.rows_total, res.rows_valid, seen, acc.state(), reader.newlines


def _first_rows(f: Any) -> Iterator[tuple[int, Any]]:
    """The first rows of a JSONL file as the reference parser reads them, one line at a time (detecting the
    format needs only a few, not a whole block)."""
    decoder = json.JSONDecoder()
    for piece in _jsonl_pieces(f):
        if type(piece) is not _Lines:
            yield from piece
            continue
        for i, raw in enumerate(piece.lines):
            for batch in _Lines(piece.first + i, [raw]).reference(decoder):
                yield from batch


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


def _load_parallel(p: Path, f: Any, fmt: str, name: str, n: int) -> Optional[LoadResult]:
    """The same result as the sequential path, computed by ``n`` processes; None = use the sequential path."""
    import multiprocessing

    if fmt == "auto":  # decide the format once, from the first rows, exactly as the sequential path would
        f.seek(0)
        for i, (_, obj) in enumerate(_first_rows(f)):
            fmt = detect(obj) or "auto"
            if fmt != "auto" or i >= 1000:
                break
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
    res = LoadResult(rows=[], problems=[], warnings=[], format=fmt, file=name)
    acc = StatsAccumulator()
    first_seen: dict[int, int] = {}
    offset = 0
    for problems, warnings, total, valid, seen, state, newlines in parts:
        # The worker's lines (and duplicate references) count from the start of its range.
        for x in problems:
            x.line += offset
        for w in warnings:
            w.line += offset
            if w.kind == "duplicate":
                w.ref += offset
        # A conversation first seen in this range may repeat one from an earlier range.
        remap: dict[int, int] = {}  # its first line in this range -> its first line in the file
        if offset:
            seen = dict(zip(seen, map(add, seen.values(), repeat(offset))))
        for h in seen.keys() & first_seen.keys():  # (set operations: no Python loop over every row)
            ln = seen.pop(h)
            first = first_seen[h]
            remap[ln] = first
            warnings.append(Problem(name, ln, _dup_reason(first), "duplicate", first))
        first_seen.update(seen)
        if remap:
            for w in warnings:
                if w.kind == "duplicate" and w.ref in remap:
                    w.ref = remap[w.ref]
                    w.reason = _dup_reason(w.ref)
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


def raise_if_invalid(result: LoadResult, skip_invalid: bool) -> DropReport:
    """Raise one DataError listing every problem; with ``skip_invalid``, report what is dropped instead.

    File-level problems (missing, empty, binary) and a file with no valid row always raise.
    """
    problems = result.problems
    fatal = [p for p in problems if p.kind == "file"]
    if fatal or (problems and not skip_invalid):
        raise DataError([str(p) for p in problems],
                        hint=None if fatal else "fix them, or pass --skip-invalid to train on the valid rows "
                        "(the dropped rows are listed in the run's kolo.json)")
    valid = result.rows_valid
    if valid <= 0:
        raise DataError([str(p) for p in problems] or [f"{result.file}:1: no valid rows"],
                        head=f"no valid rows in {result.file}")
    by_kind: dict[str, int] = {}
    dropped_lines: dict[int, str] = {}
    for p in problems:
        if p.line not in dropped_lines:
            by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
            dropped_lines[p.line] = p.reason
    return DropReport(count=len(dropped_lines), by_kind=by_kind,
                      dropped=[{"line": ln, "reason": r} for ln, r in dropped_lines.items()])


# ------------------------------------------------------------------------------------------------ check CLI


def _format_summary(s: dict) -> str:
    return "min {min} / mean {mean} / p50 {p50} / p95 {p95} / max {max}".format(**s)


class _CheckParser(argparse.ArgumentParser):
    """argparse that raises OptionsError instead of exiting (like ``spec._Parser``, without importing pydantic:
    ``spec`` costs ~50 ms of start-up that ``kolo data check`` does not need)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        from .errors import OptionsError

        raise OptionsError([message])


def check_main(argv: list[str]) -> int:
    """``python -m kolo_trainer check FILE [--format F] [--json] [--data-root ROOT]``."""
    ap = _CheckParser(prog="kolo_trainer check", description="Validate a training file and print statistics.")
    ap.add_argument("file", help="JSONL, JSON or CSV file (relative to the data root when --data-root is given)")
    ap.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: detect)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    ap.add_argument("--data-root", default=None, help="resolve FILE under this folder")
    args = ap.parse_args(argv)
    path: Path
    if args.data_root and not os.path.isabs(args.file):
        from .names import resolve_under

        path = resolve_under(args.data_root, args.file, "data file")
    else:
        path = Path(args.file)
    res = load(path, args.format, display_name=args.file, keep_rows=False)
    st = res.stats or StatsAccumulator().result()
    if args.json:
        doc = {"file": res.file, "format": res.format, "rows_total": res.rows_total, "rows_valid": st["rows"],
               "problems": [str(p) for p in res.problems], "warnings": [str(w) for w in res.warnings],
               "stats": st}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        return 3 if res.problems else 0
    out = sys.stdout
    out.write(f"{res.file}: format {res.format}, {res.rows_total} row(s), {st['rows']} valid, "
              f"{len(res.problems)} problem(s), {len(res.warnings)} warning(s)\n")
    if st["rows"]:
        out.write(f"  turns per row: {_format_summary(st['turns_per_row'])}\n")
        out.write(f"  chars per row: {_format_summary(st['chars'])}\n")
        out.write(f"  words per row: {_format_summary(st['words'])}\n")
        out.write("  roles: " + ", ".join(f"{k} {v}" for k, v in st["roles"].items()) + "\n")
        if st["shared_system_prompt"] is not None:
            sp = st["shared_system_prompt"]
            out.write(f"  shared system prompt: {sp[:100]!r}{'...' if len(sp) > 100 else ''}\n")
    for w in res.warnings[:50]:
        out.write(f"warning: {w}\n")
    if len(res.warnings) > 50:
        out.write(f"warning: ... and {len(res.warnings) - 50} more\n")
    out.flush()
    if res.problems:
        raise DataError([str(p) for p in res.problems],
                        hint="fix them, or pass --skip-invalid to `kolo train` to train on the valid rows")
    return 0
