"""The host stays light: `kolo --help`, `kolo train --dry-run ...` and `kolo status` never import the ML stack.

Each command runs in a fresh interpreter under ``-X importtime``, which lists every module the process imported
(the console script itself is run, the exact file users run), so a heavy import anywhere on the path fails here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "numpy", "llama_cpp", "unsloth")


def imported_modules(kolo, args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", *kolo.argv(*args)], capture_output=True, text=True,
                       env=kolo._env(None), cwd=kolo.cwd, timeout=120)
    mods = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                mods.add(name)
    return r, mods


@pytest.mark.parametrize("args", [
    ["--help"],
    ["train", "--dry-run", "--epochs", "3", "--lora-rank", "16", "--weight-decay", "0", "--output-dir", "it's a test"],
    ["status"],
    ["status", "--json"],
    ["rag", "query", "some-index", "a question", "--retrieve-only", "--json", "--dry-run"],
    ["rag", "build", "some-index", "--source", "data/docs", "--dry-run"],
])
def test_no_heavy_imports(args, kolo):
    r, mods = imported_modules(kolo, args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(mods) > 50, "importtime output was not captured"
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert heavy == [], f"`kolo {' '.join(args)}` imported {heavy[:10]}"


def test_help_does_not_import_the_docker_sdk_or_build_the_option_models(kolo):
    """`kolo --help` is the start-time benchmark: the Docker SDK and pydantic (the option models, built lazily by
    optionflags.LazyTyperGroup only when `kolo train` runs) stay out of it."""
    _, mods = imported_modules(kolo, ["--help"])
    assert not [m for m in mods if m.split(".")[0] in ("docker", "requests", "urllib3", "pydantic", "httpx")]
