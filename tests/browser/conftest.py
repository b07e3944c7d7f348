"""The browser suite's fixture: Debian's chromium headless shell driven by Playwright (the Python package).

Playwright's own browser download cannot work here, so the suite launches the apt package's binary
(`apt-get install chromium-headless-shell`; scripts/test.sh installs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/lib/chromium/chromium-headless-shell")


@pytest.fixture()
def browser():
    pw = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/install.sh --dev)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium-headless-shell (scripts/test.sh does)")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()
