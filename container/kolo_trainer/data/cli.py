"""``python -m kolo_trainer check`` (and, in-process, ``kolo data check``): validate one file, print statistics."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import DataError, OptionsError
from .formats import FORMATS, help_text
from .loader import load
from .results import LoadResult, shown
from .rowstats import StatsAccumulator


class _CheckParser(argparse.ArgumentParser):
    """argparse that raises OptionsError instead of exiting (like ``spec._Parser``, without importing pydantic:
    ``spec`` costs ~50 ms of start-up that ``kolo data check`` does not need)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise OptionsError([message])


def _parser() -> argparse.ArgumentParser:
    ap = _CheckParser(prog="kolo_trainer check", description="Validate a training file and print statistics.",
                      epilog="formats:\n" + "\n".join("  " + line for line in help_text().splitlines()),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="JSONL, JSON or CSV file (relative to the data root when --data-root is given)")
    ap.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: detect)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    ap.add_argument("--data-root", default=None, help="resolve FILE under this folder")
    return ap


def check_main(argv: list[str]) -> int:
    """``python -m kolo_trainer check FILE [--format F] [--json] [--data-root ROOT]``."""
    args = _parser().parse_args(argv)
    path: Path
    if args.data_root and not os.path.isabs(args.file):
        from ..runfolder import DataRoot  # the data root's one path rule: no name or link leads out of it

        path = DataRoot(args.data_root).resolve(args.file, "data file")
    else:
        path = Path(args.file)
    res = load(path, args.format, display_name=shown(args.file), keep_rows=False)
    st = res.stats or StatsAccumulator().result()
    if args.json:
        _print_json(res, st)
        return 3 if res.problems else 0
    fatal = any(p.kind == "file" for p in res.problems)
    if not (fatal and res.rows_total == 0):  # (no summary of a file that could not be read at all)
        _print_text(res, st)
    if res.problems:
        raise DataError([str(p) for p in res.problems],
                        hint=None if fatal else "fix them, or pass --skip-invalid to `kolo train` to train on the "
                        "valid rows")
    return 0


def _print_json(res: LoadResult, st: dict) -> None:
    doc = {"file": res.file, "format": res.format, "rows_total": res.rows_total, "rows_valid": st["rows"],
           "problems": [str(p) for p in res.problems], "warnings": [str(w) for w in res.warnings], "stats": st}
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def _summary_line(s: dict) -> str:
    return "min {min} / mean {mean} / p50 {p50} / p95 {p95} / max {max}".format(**s)


def _print_text(res: LoadResult, st: dict) -> None:
    out = sys.stdout
    out.write(f"{res.file}: format {res.format}, {res.rows_total} row(s), {st['rows']} valid, "
              f"{len(res.problems)} problem(s), {len(res.warnings)} warning(s)\n")
    if st["rows"]:
        out.write(f"  turns per row: {_summary_line(st['turns_per_row'])}\n")
        out.write(f"  chars per row: {_summary_line(st['chars'])}\n")
        out.write(f"  words per row: {_summary_line(st['words'])}\n")
        out.write("  roles: " + ", ".join(f"{k} {v}" for k, v in st["roles"].items()) + "\n")
        if st["shared_system_prompt"] is not None:
            sp = st["shared_system_prompt"]
            out.write(f"  shared system prompt: {sp[:100]!r}{'...' if len(sp) > 100 else ''}\n")
    for w in res.warnings[:50]:
        out.write(f"warning: {w}\n")
    if len(res.warnings) > 50:
        out.write(f"warning: ... and {len(res.warnings) - 50} more\n")
    out.flush()
