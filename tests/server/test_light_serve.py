"""`kolo --help` and `kolo serve --help` stay light: the web stack is imported only when the server starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "host"))
from test_light import imported_modules  # noqa: E402  (the same -X importtime probe)

WEB = ("fastapi", "starlette", "uvicorn", "sqlmodel", "sqlalchemy", "alembic", "sse_starlette", "jinja2",
       "python_multipart")


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]])
def test_help_does_not_import_the_web_stack(kolo, args) -> None:
    r, mods = imported_modules(kolo, args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(mods) > 50, "importtime output was not captured"
    assert sorted(m for m in mods if m.split(".")[0] in WEB) == []
