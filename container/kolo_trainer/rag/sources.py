"""Documents in: files and folders under the data root -> passages (paragraph text + where it came from).

Every path goes through :class:`kolo_trainer.runfolder.DataRoot` (nothing outside the data root; a link that leaves
it is refused). Rows of .jsonl/.json/.csv files are read by :func:`kolo_trainer.data.load`, the same reader and the
same ``file:line`` problems as ``kolo data check``; a conversation is flattened to ``role: content`` lines. PDF pages
are read with pypdf. Nothing here writes anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..runfolder import DataRoot

TEXT_SUFFIXES = (".txt", ".md")
ROW_SUFFIXES = (".jsonl", ".json", ".csv")
PDF_SUFFIXES = (".pdf",)
SUFFIXES = TEXT_SUFFIXES + ROW_SUFFIXES + PDF_SUFFIXES
_BLANK = re.compile(r"\n[ \t]*\n")


@dataclass
class Passage:
    """One paragraph (or row, or page paragraph) and its source: ``{"file", "line"}``, ``{"file", "row"}`` (the
    row's line) or ``{"file", "page", "line"}``."""

    text: str
    source: dict


def files_of(root: DataRoot, sources: list[str]) -> list[tuple[str, Path]]:
    """(name relative to the data root, resolved path) of every document the sources name, in a stable order.
    A named file must have a known suffix; a folder contributes its known files (hidden ones skipped)."""
    out: list[tuple[str, Path]] = []
    problems = []
    for rel in sources:
        p = root.resolve(rel, "--source")
        if p.is_dir():
            found = _walk(root, rel, p)
            if not found:
                problems.append(f"{rel}:1: the folder holds no documents ({', '.join(SUFFIXES)})")
            out += found
        elif not p.exists():
            problems.append(f"{rel}:1: not found under the data root {root.display}")
        elif p.suffix.lower() not in SUFFIXES:
            problems.append(f"{rel}:1: unknown kind of document {p.suffix or '(no suffix)'!r}; give "
                            f"{', '.join(SUFFIXES)}")
        else:
            out.append((rel, root.file(rel, "--source")))
    if problems:
        raise DataError(problems, hint="point --source at documents under the data root (`kolo data list`)")
    seen: set[Path] = set()
    return [(r, p) for r, p in out if not (p in seen or seen.add(p))]


def _walk(root: DataRoot, rel: str, folder: Path) -> list[tuple[str, Path]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or Path(f).suffix.lower() not in SUFFIXES:
                continue
            sub = os.path.relpath(os.path.join(dirpath, f), folder)
            name = f"{rel.rstrip('/')}/{sub}"
            found.append((name, root.file(name, "--source")))  # a link out of the data root is refused here
    return found


def read(rel: str, path: Path) -> list[Passage]:
    """The passages of one document; a file that is not what its suffix says is a DataError naming it."""
    suffix = path.suffix.lower()
    if suffix in ROW_SUFFIXES:
        return _rows(rel, path)
    if suffix in PDF_SUFFIXES:
        return _pdf(rel, path)
    return paragraphs(_text(rel, path), rel)


def _text(rel: str, path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data:
        raise DataError([f"{rel}:1: a binary file (it holds NUL bytes), not text"],
                        hint="give .txt/.md text files; convert other documents to text first")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError([f"{rel}:{line}: not UTF-8 text ({e.reason} at byte {e.start})"],
                        hint="save the file as UTF-8") from None


def paragraphs(text: str, rel: str, **extra: int) -> list[Passage]:
    """Blank-line separated paragraphs with the line each starts on."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out, pos = [], 0
    for m in [*_BLANK.finditer(text), None]:
        end = m.start() if m else len(text)
        para = text[pos:end]
        if para.strip():
            lead = len(para) - len(para.lstrip())
            line = text.count("\n", 0, pos + lead) + 1
            out.append(Passage(para.strip(), {"file": rel, **extra, "line": line}))
        pos = m.end() if m else end
    return out


def _rows(rel: str, path: Path) -> list[Passage]:
    from ..data import load

    res = load(path, display_name=rel)
    if res.problems:
        raise DataError([str(p) for p in res.problems], hint=f"see `kolo data check {rel}`")
    out = []
    for row in res.rows:
        msgs = row.messages
        text = msgs[0]["content"] if len(msgs) == 1 else \
            "\n".join(f"{m['role']}: {m['content']}" for m in msgs)
        if text.strip():
            out.append(Passage(text.strip(), {"file": rel, "row": row.line}))
    return out


def _pdf(rel: str, path: Path) -> list[Passage]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:  # pragma: no cover - pypdf is in the rag extra
        raise DataError([f"{rel}:1: reading PDF needs pypdf (pip install 'kolo-trainer[rag]')"]) from None
    try:
        pages = [p.extract_text() or "" for p in PdfReader(str(path)).pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as e:
        raise DataError([f"{rel}:1: not a readable PDF ({type(e).__name__}: {str(e)[:200]})"]) from None
    return [para for n, page in enumerate(pages, 1) for para in paragraphs(page, rel, page=n)]
