"""A multipart upload streamed straight to one file on disk, with a size limit enforced while it streams.

Why not FastAPI's ``UploadFile``: Starlette reads the whole body into a temporary file before the route runs, so a
limit could only be checked after the disk had taken every byte, and the bytes would be copied twice. Here
python-multipart's push parser gets the body chunk by chunk and the ``file`` part is written as it arrives; the
first byte over the limit ends the request with 413 and the partial file is removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from python_multipart.multipart import MultipartParser, parse_options_header

#: Small form fields (``name``) are held in memory; anything longer is refused.
MAX_FIELD_BYTES = 4096


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    filename: Optional[str] = None  # as the client sent it: a display name, never a path
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


class _Sink:
    """The parser's callbacks: headers of each part, then its data into the file or a small field."""

    def __init__(self, out: Any, limit: int, upload: Upload):
        self.out, self.limit, self.upload = out, limit, upload
        self.header_field, self.header_value = b"", b""
        self.disposition: dict[bytes, bytes] = {}
        self.name: Optional[str] = None
        self.buf = bytearray()
        self.seen_file = False

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.hfield, "on_header_value": self.hvalue,
                "on_header_end": self.hend, "on_part_data": self.data, "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self.disposition, self.name, self.buf = {}, None, bytearray()
        self.header_field = self.header_value = b""

    def hfield(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def hvalue(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def hend(self) -> None:
        if self.header_field.lower() == b"content-disposition":
            _, self.disposition = parse_options_header(self.header_value)
            self.name = self.disposition.get(b"name", b"").decode("utf-8", "replace")
            if self.name == "file":
                if self.seen_file:
                    raise UploadError(400, "send one file per upload (field `file`)")
                self.seen_file = True
                raw = self.disposition.get(b"filename")
                self.upload.filename = None if raw is None else raw.decode("utf-8", "replace")
        self.header_field = self.header_value = b""

    def data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self.name == "file":
            self.upload.size += n
            if self.upload.size > self.limit:
                raise UploadError(413, f"the file is larger than this server's upload limit of {self.limit:,} "
                                       "bytes (kolo serve --max-upload)")
            self.out.write(data[start:end])
        elif self.name is not None:
            if len(self.buf) + n > MAX_FIELD_BYTES:
                raise UploadError(400, f"form field {self.name!r} is longer than {MAX_FIELD_BYTES} bytes")
            self.buf += data[start:end]

    def part_end(self) -> None:
        if self.name and self.name != "file":
            self.upload.fields[self.name] = self.buf.decode("utf-8", "replace")


async def receive(request: Any, dest: Path, limit: int) -> Upload:
    """Stream the request's multipart body into ``dest`` (the ``file`` field); the other fields are returned.
    Raises :class:`UploadError` (and removes ``dest``) on a bad body or one over ``limit`` bytes."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UploadError(415, "send the dataset as multipart/form-data with the file in the field `file` "
                               "(curl -F file=@data.jsonl)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise UploadError(413, f"the upload ({int(declared):,} bytes) is larger than this server's upload limit of "
                               f"{limit:,} bytes (kolo serve --max-upload)")
    upload = Upload()
    try:
        with open(dest, "xb") as out:
            sink = _Sink(out, limit, upload)
            parser = MultipartParser(boundary, sink.callbacks())
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
    except BaseException as e:
        dest.unlink(missing_ok=True)
        if isinstance(e, UploadError):
            raise
        if isinstance(e, Exception) and type(e).__module__.startswith("python_multipart"):
            raise UploadError(400, f"malformed multipart body ({e})") from None
        raise
    if not sink.seen_file:
        dest.unlink(missing_ok=True)
        raise UploadError(422, "no file: send it in the multipart field `file` (curl -F file=@data.jsonl)")
    return upload


def remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
