"""Which conversations ``kolo eval`` measures on, and their token ids.

In order: ``--eval-data FILE``; else the run's own eval file (``kolo train --eval-data``); else the rows its
``--eval-split`` held out, found again with the trainer's own steps (its loader, its encoding with the run's
masking options and length limit, and :func:`kolo_trainer.train.main.held_out` with the run's seed); else the
training rows, with a warning (a run that held nothing out can still compare its GGUFs with its HF model, but its
loss is then measured on rows it was trained on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

from .. import manifest, masking, progress
from ..runfolder import DataRoot
from .metrics import positions


@dataclass
class Selection:
    rows: list[list[dict]]
    source: str
    file: str
    warnings: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # each row's number among the file's valid rows (1-based)

    def __post_init__(self) -> None:
        self.numbers = self.numbers or list(range(1, len(self.rows) + 1))


def _load(root: DataRoot, rel: str, fmt: str, skip_invalid: bool, what: str) -> list[list[dict]]:
    """Valid rows of a data file (every bad row listed, file:line, unless the run skipped invalid rows)."""
    from ..train.main import load_file

    path = root.file(rel, what)
    rows, _result, _report = load_file(path, rel, fmt, skip_invalid)
    return rows


def select(root: DataRoot, data: dict, eval_data: Optional[str], tok: Any, jinja: str) -> Selection:
    """The conversations to measure (see the module docstring). Reads files only: no model is loaded."""
    o = data.get("options") or {}
    fmt, skip = o.get("data_format") or "auto", bool(o.get("skip_invalid"))
    if eval_data:
        return Selection(_load(root, eval_data, "auto", False, "--eval-data"), f"{eval_data} (--eval-data)",
                         eval_data)
    if o.get("eval_data"):
        rel = o["eval_data"]
        return Selection(_load(root, rel, fmt, skip, "the run's eval file"), f"{rel} (the run's --eval-data)", rel)
    rel = (data.get("data") or {}).get("train_file") or o.get("train_data")
    rows = _load(root, rel, fmt, skip, "the run's training file")
    warnings = []
    sha = (data.get("data") or {}).get("sha256")
    if sha and sha != manifest.sha256_file(root.file(rel, "the run's training file")):
        warnings.append(f"{rel} changed since the run was trained: its held-out rows may differ from the ones "
                        "training held out")
    split = float(o.get("eval_split") or 0)
    if split <= 0:
        warnings.append(f"the run held no rows out (no --eval-split or --eval-data): loss and perplexity are "
                        f"measured on {rel}, which it was trained on; give --eval-data FILE for unseen rows")
        return Selection(rows, f"{rel} (training rows: the run held none out)", rel, warnings)
    held = _held_out_rows(rows, o, tok, jinja)
    return Selection([rows[i] for i in held], f"{rel}: the {len(held)} row(s) --eval-split {split} held out "
                     f"(seed {o.get('seed')})", rel, warnings, [i + 1 for i in held])


def _held_out_rows(rows: list[list[dict]], o: dict, tok: Any, jinja: str) -> list[int]:
    from ..train.main import encode_rows, held_out

    ctx = SimpleNamespace(opts=SimpleNamespace(max_seq_length=int(o.get("max_seq_length") or 2048),
                                               train_on_inputs=bool(o.get("train_on_inputs"))),
                          tokenizer=tok, template=SimpleNamespace(jinja=jinja))
    examples, _lengths, _dropped = encode_rows(ctx, rows, "train")
    held = held_out(len(examples), float(o["eval_split"]), int(o.get("seed") or 0))
    return [e.row for i, e in enumerate(examples) if i in held]


@dataclass
class Item:
    """One measured conversation: its messages, token ids, and the assistant positions."""

    row: int
    messages: list[dict]
    enc: masking.Encoded
    pos: list[int]


def encode(rows: list[list[dict]], tok: Any, jinja: str, max_length: int, max_rows: int,
           date: Optional[str]) -> list[Item]:
    """Assistant-only ids of the first ``max_rows`` rows that keep an assistant token within ``max_length``."""
    items = []
    for i, msgs in enumerate(rows):
        enc = masking.encode(tok, msgs, jinja, train_on_inputs=False, max_length=max_length, date=date)
        pos = positions(enc.labels)
        if pos:
            items.append(Item(i, msgs, enc, pos))
        if len(items) >= max_rows:
            break
    if len(items) < len(rows) and len(items) < max_rows:
        progress.emit("warning", message=f"{len(rows) - len(items)} row(s) have no assistant token within "
                                         f"{max_length} tokens; not measured")
    return items
