"""Reading data files: JSONL (block by block), JSON (a list of rows) and CSV (a header row), opened only when
they are regular files.

Each reader yields ``(line, object)`` for a parsed row or ``(line, Bad)`` for a row that could not be parsed;
JSONL also yields :class:`Lines` (raw line bytes) that the consumer parses itself, so the fast parser can take
whole chunks. A row longer than :data:`MAX_ROW_BYTES` is reported and skipped without being held in memory.

JSONL is read in :data:`BLOCK`-sized blocks split into lines at C speed; orjson parses lines when installed
(:func:`fast_parser`), else the stdlib's C scanner does (:func:`parse_block`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from typing import Any, BinaryIO, Iterator, Optional

from .formats import CSV_JSON_COLUMNS, CSV_MAYBE_JSON_COLUMNS
from .results import Bad

#: One row (one JSONL line, one CSV record) may not exceed this; longer rows are reported, not loaded.
MAX_ROW_BYTES = 16 * 1024 * 1024
BLOCK = 8 * 1024 * 1024
_SMALL_BATCH = 64


# ------------------------------------------------------------------------------------------------ opening

_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def not_regular_reason(mode: int) -> Optional[str]:
    """Why a file of this ``st_mode`` cannot be a data file (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a data file"
    what = next((w for test, w in _SPECIAL if test(mode)), "a special file")
    return f"not a regular file ({what}); give a JSONL, JSON or CSV file"


def file_problem(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` cannot be read as a data file (missing, a folder, a FIFO or device, unreadable), or None.
    Looks without opening: opening a FIFO would block until something writes to it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    return not_regular_reason(st.st_mode)


def open_data_file(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for reading when it is a regular file; raises Bad (kind ``file``) otherwise.

    Opened non-blocking and judged again on what was opened, so that a file swapped for a FIFO after the first
    look still cannot block (on a regular file O_NONBLOCK changes nothing)."""
    reason = file_problem(path)
    if reason:
        raise Bad(reason, "file")
    nonblock = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise Bad(f"cannot read ({e.strerror or e})", "file") from None
    reason = not_regular_reason(os.fstat(fd).st_mode)
    if reason:
        os.close(fd)
        raise Bad(reason, "file")
    if nonblock:
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def kind_of(name: str, head: bytes) -> str:
    """jsonl, json, csv or unknown: from the extension, else from the first character."""
    ext = os.path.splitext(name)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json":
        return "json"
    if ext == ".csv":
        return "csv"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return {b"{": "jsonl", b"[": "json"}.get(first, "unknown")


# ------------------------------------------------------------------------------------------------ parsers

_FAST_LOADS: Any = None


def fast_parser() -> Any:
    """orjson's ``loads`` when installed (a dependency of kolo-trainer), else None (the stdlib parser is used).

    Why: orjson parses UTF-8 bytes about twice as fast as ``json`` (no decode to ``str`` first), which is most of
    what ``kolo data check`` does. It is imported on first use, not with this module (it pulls in datetime and
    uuid). Its objects are used only where they cannot change a result: see :mod:`.consume`.
    """
    global _FAST_LOADS
    if _FAST_LOADS is None:
        try:
            from orjson import loads  # type: ignore[import-not-found]
        except ImportError:
            loads = False
        _FAST_LOADS = loads
    return _FAST_LOADS or None


def std_loads(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def json_error(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return "invalid JSON (nested too deeply)"
    return "invalid JSON"


def decode_error(e: UnicodeDecodeError, data: bytes) -> str:
    bad = data[e.start:e.start + 1]
    return f"not valid UTF-8 text (byte 0x{bad.hex()} at column {e.start + 1}); save the file as UTF-8"


def too_long() -> str:
    size = f"{MAX_ROW_BYTES // (1024 * 1024)} MiB" if MAX_ROW_BYTES >= 1024 * 1024 else f"{MAX_ROW_BYTES} bytes"
    return f"line is longer than {size}; one row may not be that large"


# ------------------------------------------------------------------------------------------------ JSONL


_BLANK = object()


def _parse_other_line(line: str) -> Any:
    """A line that does not start with ``{``: blank (:data:`_BLANK`), a JSON value, or Bad."""
    if not line.strip():  # blank lines are allowed and skipped
        return _BLANK
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        return Bad(f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json")
    except RecursionError:
        return Bad("invalid JSON (nested too deeply)", "invalid_json")


def parse_block(text: str, first_line: int, decoder: json.JSONDecoder) -> Iterator[list[tuple[int, Any]]]:
    """Parse every line of ``text`` (which ends with a newline), yielding small lists of (line, object or Bad).

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
            append((ln, Bad(too_long(), "too_long")))
        elif pos < nl and text[pos] == "{":
            try:
                obj, end = scan(text, pos)
            except (StopIteration, json.JSONDecodeError, RecursionError):
                append((ln, Bad(json_error(text[pos:nl]), "invalid_json")))
            else:
                if end == nl or (end < nl and text[end:nl].isspace()):
                    append((ln, obj))
                else:  # trailing data on the line, or a value running past the end of the line
                    append((ln, Bad(json_error(text[pos:nl]), "invalid_json")))
        else:
            obj = _parse_other_line(text[pos:nl])
            if obj is not _BLANK:
                append((ln, obj))
        pos = nl + 1
        if len(out) >= _SMALL_BATCH:
            yield out
            out = []
            append = out.append
    if out:
        yield out


def parse_chunk(chunk: bytes, first_line: int, decoder: json.JSONDecoder) -> Iterator[list[tuple[int, Any]]]:
    """:func:`parse_block` on bytes; an undecodable line is reported on its own and the rest parsed normally."""
    try:
        text = str(chunk, "utf-8")
    except UnicodeDecodeError:  # rare: find the undecodable line(s) one by one
        ln = first_line
        for raw_line in bytes(chunk).split(b"\n")[:-1]:
            try:
                t = raw_line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield [(ln, Bad(decode_error(e, raw_line), "not_utf8"))]
            else:
                yield from parse_block(t + "\n", ln, decoder)
            ln += 1
        return
    yield from parse_block(text, first_line, decoder)


class Lines:
    """Complete JSONL lines as bytes (no newline), the first being line ``first``; parsed by the consumer."""

    __slots__ = ("first", "lines")

    def __init__(self, first: int, lines: list):
        self.first, self.lines = first, lines

    def reference(self, decoder: json.JSONDecoder) -> Iterator[list[tuple[int, Any]]]:
        """The lines parsed by the reference (stdlib) parser: (line, object or Bad), blank lines skipped."""
        if self.lines:
            yield from parse_chunk(b"\n".join(self.lines) + b"\n", self.first, decoder)


def jsonl_pieces(f: Any, bom: bool = True) -> Iterator[Any]:
    """JSONL, block by block: each block's complete lines as one :class:`Lines` (split at C speed), and an
    over-long line as ``[(line, Bad)]``. Only a line that crosses a block boundary is copied, and one longer
    than MAX_ROW_BYTES is skipped, never accumulated."""
    carry = b""  # the start of a line that continues in the next block
    line_no = 0  # complete lines handed out so far
    skipping = False  # inside an over-long line: discard until its newline
    reason = too_long()
    if bom and f.read(3) != b"\xef\xbb\xbf":  # a UTF-8 byte-order mark (Windows editors) is not part of line 1
        f.seek(0)
    while True:
        block = f.read(BLOCK)
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
                yield [(line_no + 1, Bad(reason, "too_long"))]
                carry, skipping = b"", True
            else:
                carry += parts[i]
            continue
        if carry:  # finish the line begun in the previous block(s)
            if len(carry) + len(parts[i]) > MAX_ROW_BYTES:
                yield [(line_no + 1, Bad(reason, "too_long"))]
                line_no += 1
                i += 1
            else:
                parts[i] = carry + parts[i]
            carry = b""
        if i < k:
            yield Lines(line_no + 1, parts[i:k])
            line_no += k - i
        carry = parts[k]
    if carry and not skipping:
        yield Lines(line_no + 1, [carry])


def read_jsonl(f: Any, bom: bool = True) -> Iterator[tuple[int, Any]]:
    """JSONL as (line, object or Bad), parsed by the reference (stdlib) parser."""
    decoder = json.JSONDecoder()
    for piece in jsonl_pieces(f, bom):
        if type(piece) is Lines:
            for batch in piece.reference(decoder):
                yield from batch
        else:
            yield from piece


def batched(records: Iterator[tuple[int, Any]], size: int = 512) -> Iterator[list[tuple[int, Any]]]:
    batch: list[tuple[int, Any]] = []
    for r in records:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------------ JSON, CSV


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_not_a_list(text: str, data: bytes) -> Iterator[tuple[int, Any]]:
    """A .json file that starts with ``{``: JSONL under a .json name, or one object (not a list of rows)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line: it is JSONL with a .json name
            yield from read_jsonl(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
            return
        yield e.lineno, Bad(f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json")
        return
    yield 1, Bad("a .json file must hold a list of rows ([{...}, {...}]); for one row per line use .jsonl "
                 f"(the object has keys: {', '.join(list(map(str, obj))[:8])})", "wrong_format")


def read_json(data: bytes) -> Iterator[tuple[int, Any]]:
    """A JSON file holding a list of rows; each row's line is where its element starts."""
    text = data.decode("utf-8-sig")
    decoder = json.JSONDecoder()
    ws = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]
    pos = ws(text, 0).end()
    if pos < len(text) and text[pos] == "{":
        yield from _json_not_a_list(text, data)
        return
    if pos >= len(text) or text[pos] != "[":
        yield _line_of(text, pos), Bad("a .json file must hold a list of rows ([{...}, {...}])", "wrong_format")
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
            yield e.lineno, Bad(f"invalid JSON ({e.msg} at column {e.colno}); stopped reading the file",
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
                yield _line_of(text, rest), Bad("extra data after the closing ']'", "invalid_json")
            return
        yield _line_of(text, pos), Bad("invalid JSON (expected ',' or ']' after a row)", "invalid_json")
        return


def _csv_row(cols: list[str], record: list[str]) -> Any:
    """One CSV record as a row object (its JSON columns parsed), or Bad."""
    if len(record) != len(cols):
        return Bad(f"has {len(record)} fields but the header has {len(cols)}", "wrong_type")
    obj: dict[str, Any] = dict(zip(cols, record))
    for key in CSV_JSON_COLUMNS + CSV_MAYBE_JSON_COLUMNS:
        v = obj.get(key)
        if v is None or (key in CSV_MAYBE_JSON_COLUMNS and not v.lstrip().startswith("[{")):
            continue
        try:
            obj[key] = json.loads(v)
        except json.JSONDecodeError as e:
            return Bad(f"column '{key}': invalid JSON ({e.msg} at column {e.colno})", "invalid_json")
    return obj


def read_csv(f: BinaryIO) -> Iterator[tuple[int, Any]]:
    """A CSV file with a header row; the columns that hold messages hold them as JSON text (see
    :data:`.formats.CSV_JSON_COLUMNS`)."""
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)
    reader = csv.reader(io.TextIOWrapper(f, encoding="utf-8-sig", newline=""))
    prev_end = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        cols = [h.strip() for h in header]
        prev_end = reader.line_num
        for record in reader:
            start, prev_end = prev_end + 1, reader.line_num
            if any(cell.strip() for cell in record):
                yield start, _csv_row(cols, record)
    except UnicodeDecodeError as e:
        yield prev_end + 1, Bad(f"not valid UTF-8 text (byte 0x{e.object[e.start:e.start + 1].hex()}); "
                                "save the file as UTF-8; stopped reading", "not_utf8")
    except csv.Error as e:
        yield reader.line_num or 1, Bad(f"malformed CSV ({e}); stopped reading", "invalid_csv")
