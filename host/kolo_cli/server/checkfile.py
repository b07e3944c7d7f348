"""``python -m kolo_cli.server.checkfile PATH NAME``: kolo's data check of one uploaded file, in a process of its own.

Why a process: the check's memory grows with the file (and with its warnings: a file of repeated rows yields one
duplicate warning per row), and the server's must not. Why not ``python -m kolo_trainer check --json``: that prints
every warning, which the server would then have to read. Here at most :data:`LIMIT` problems and warnings are kept
in the answer, with their total counts.
"""

from __future__ import annotations

import json
import sys

LIMIT = 1000


def main(argv: list[str]) -> int:
    from kolo_trainer import data

    path, name = argv
    res = data.load(path, "auto", display_name=name, keep_rows=False)
    doc = {"format": res.format, "rows": (res.stats or {}).get("rows", res.rows_valid), "stats": res.stats or {},
           "problems": [str(p) for p in res.problems[:LIMIT]], "problem_count": len(res.problems),
           "warning_count": len(res.warnings)}
    sys.stdout.write(json.dumps(doc, default=str, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
