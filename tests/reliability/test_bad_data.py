"""Bad data input through the real `kolo` console script (issue 10): FIFOs and devices given as data files, lone
surrogates, bad ``--format`` values, leftovers of a killed ``kolo data add``, and ``kolo data list`` over links
that leave the data root and entries it cannot read.

Each refusal must exit with the documented code (2 bad options, 3 bad data), say what is wrong in one short line
matching the case's pattern, print no traceback, and change nothing in the data root or the working folder (both
hashed before and after with ``rel_helpers.tree_digest``). Every command runs with a timeout, so a hang (a FIFO
opened for reading blocks until something writes to it) fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from rel_helpers import GOOD_ROWS, tree_digest

LOCAL = {"KOLO_RUNTIME": "local"}
GOOD = json.dumps(GOOD_ROWS[0]) + "\n"
#: A user turn holding JSON's "\ud800" escape: json.loads accepts it, but it is not Unicode (a tokenizer crashes).
SURROGATE = '{"messages": [{"role": "user", "content": "caf\\ud800"}, {"role": "assistant", "content": "ok"}]}\n'
FIFO_LINE = r"not a regular file \(a FIFO\); give a JSONL, JSON or CSV file"
DEVICE_LINE = r"/dev/zero:1: not a regular file \(a character device\); give a JSONL, JSON or CSV file"
BAD_FORMAT = r"unknown data format 'yaml'; choose from auto, messages, sharegpt, alpaca, prompt_completion, text"


def _fifo(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(p)
    return setup


def _write(rel: str, content: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content, encoding="utf-8")
    return setup


#: (id, argv, setup, env, exit code, pattern one output line must match). The runner's cwd is data_root/../cwd.
CASES: list[tuple[str, list[str], Callable[[Path], None] | None, dict, int, str]] = [
    ("check-fifo", ["data", "check", "data/x.jsonl"], _fifo("data/x.jsonl"), {}, 3, r"^\s*data/x\.jsonl:1: " + FIFO_LINE),
    ("check-fifo-here", ["data", "check", "pipe.jsonl"], _fifo("../cwd/pipe.jsonl"), {}, 3,
     r"pipe\.jsonl:1: " + FIFO_LINE),
    ("check-dev-zero", ["data", "check", "/dev/zero"], None, {}, 3, DEVICE_LINE),
    ("check-lone-surrogate", ["data", "check", "data/s.jsonl"], _write("data/s.jsonl", GOOD + SURROGATE), {}, 3,
     r"data/s\.jsonl:2: message 1 \(user\): contains a lone surrogate \(invalid Unicode\) at character 4"),
    ("check-bad-format", ["data", "check", "data/good.jsonl", "--format", "yaml"], None, {}, 2, BAD_FORMAT),
    ("add-bad-format", ["data", "add", "in.jsonl", "--format", "yaml"], _write("../cwd/in.jsonl", GOOD), {}, 2,
     BAD_FORMAT),
    ("add-fifo", ["data", "add", "pipe.jsonl"], _fifo("../cwd/pipe.jsonl"), {}, 3, r"pipe\.jsonl:1: " + FIFO_LINE),
    ("add-dev-zero", ["data", "add", "/dev/zero", "--as", "zero.jsonl"], None, {}, 3, DEVICE_LINE),
    ("add-lone-surrogate", ["data", "add", "s.jsonl"], _write("../cwd/s.jsonl", SURROGATE), {}, 3,
     r"s\.jsonl:1: .*contains a lone surrogate \(invalid Unicode\)"),
    # The defect: the check passed, then tokenisation crashed. Now the trainer's own data check names the row.
    ("train-lone-surrogate", ["train", "--base-model", "models/fake", "--train-data", "data/s.jsonl"],
     _write("data/s.jsonl", GOOD + SURROGATE), LOCAL, 3, r"data/s\.jsonl:2: .*lone surrogate \(invalid Unicode\)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_data_fails_cleanly_and_changes_nothing(case, kolo, seeded_root: Path) -> None:
    _, argv, setup, env, code, pattern = case
    if setup is not None:
        setup(seeded_root)
    cwd_before = tree_digest(kolo.cwd)
    before = tree_digest(seeded_root)
    r = kolo(*argv, env=env, timeout=120)  # a hang raises TimeoutExpired: the test fails
    out = r.stdout + r.stderr
    shown = out[-3000:]
    assert r.returncode == code, f"exit {r.returncode}, expected {code}:\n{shown}"
    assert "Traceback" not in out, f"a traceback instead of a message:\n{shown}"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    matching = [ln for ln in lines if re.search(pattern, ln)]
    assert len(matching) == 1, f"not one line matches {pattern!r}:\n{shown}"
    assert len(matching[0]) <= 400, "the line naming the problem is not short"
    assert sum(ln.lstrip().lower().startswith("error:") for ln in lines) == 1, f"not one error line:\n{shown}"
    assert len(lines) <= 15, f"{len(lines)} lines of output for one problem:\n{shown}"
    assert tree_digest(seeded_root) == before, "the data root changed"
    assert tree_digest(kolo.cwd) == cwd_before, "the working folder changed"


# ------------------------------------------------------------------------------------------------ data add leftovers


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_add_removes_the_temp_files_of_killed_adds_and_nothing_else(kolo, seeded_root: Path) -> None:
    """A `kolo data add` killed mid-copy leaves ``data/.tmp-PID-NAME``. The next add removes such leftovers whose
    writer is gone (and says so), adds its file, and touches nothing else."""
    data = seeded_root / "data"
    stale = data / f".tmp-{_dead_pid()}-chats.jsonl"
    stale.write_text(GOOD[: len(GOOD) // 2])  # half a copy
    (kolo.cwd / "new.jsonl").write_text(GOOD)
    before = tree_digest(seeded_root)
    r = kolo("data", "add", "new.jsonl", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not stale.exists(), "the leftover of a dead writer is still there"
    assert f"removed {stale.name}" in r.stderr
    after = tree_digest(seeded_root)
    want = {k: v for k, v in before.items() if k != f"data/{stale.name}"}
    want["data/new.jsonl"] = tree_digest(kolo.cwd)["new.jsonl"]
    assert after == want, "something else in the data root changed"


def test_add_keeps_the_temp_file_of_a_running_add(kolo, seeded_root: Path) -> None:
    """A temporary file whose writer is still alive is another `kolo data add` at work: never removed."""
    writer = subprocess.Popen(["sleep", "60"])
    try:
        live = seeded_root / "data" / f".tmp-{writer.pid}-other.jsonl"
        live.write_text(GOOD)
        (kolo.cwd / "new.jsonl").write_text(GOOD)
        r = kolo("data", "add", "new.jsonl", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert live.exists() and live.read_text() == GOOD, "a running writer's temporary file was removed"
    finally:
        writer.kill()
        writer.wait()


# ------------------------------------------------------------------------------------------------ data list


def test_list_names_links_out_of_the_root_and_survives_unreadable_entries(kolo, seeded_root: Path,
                                                                          tmp_path: Path) -> None:
    """Links that lead out of the data root are listed as such (their targets never read or listed); a broken
    link, a link loop, a FIFO, a name that is not UTF-8 and a name that looks like rich markup each get a row;
    nothing changes."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.jsonl").write_text(GOOD * 3)
    (outside / "dir" / "hidden-inside.jsonl").write_text(GOOD)
    data = seeded_root / "data"
    (data / "evil.jsonl").symlink_to(outside / "secret.jsonl")
    (data / "evildir").symlink_to(outside / "dir")
    (data / "inside.jsonl").symlink_to("good.jsonl")
    (data / "broken.jsonl").symlink_to("gone.jsonl")
    (data / "loop.jsonl").symlink_to("loop.jsonl")
    os.mkfifo(data / "pipe.jsonl")
    (data / "[bold]markup[i].jsonl").write_text(GOOD)
    with open(os.path.join(os.fsencode(data), b"bad\xff.jsonl"), "wb") as f:
        f.write(GOOD.encode())
    before, outside_before = tree_digest(seeded_root), tree_digest(outside)
    r = kolo("data", "list", timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out

    def row(name: str) -> str:
        found = [ln for ln in out.splitlines() if ln.lstrip().startswith(f"data/{name} ")]
        assert len(found) == 1, f"no single row for {name}:\n{out}"
        return found[0]

    assert re.search(r"\d KiB", row("good.jsonl"))
    assert re.search(r"link to .*outside.*, outside the data root: not used", row("evil.jsonl"))
    assert "KiB" not in row("evil.jsonl")  # the target was not statted as a usable file
    assert "outside the data root: not used" in row("evildir")
    assert "hidden-inside" not in out  # a link to a folder outside is never followed
    assert "link to data/good.jsonl" in row("inside.jsonl") and "KiB" in row("inside.jsonl")
    assert "not found" in row("broken.jsonl")
    assert "cannot read" in row("loop.jsonl")
    assert "not a regular file (a FIFO)" in row("pipe.jsonl")
    assert "KiB" in row("[bold]markup[i].jsonl")  # shown as named, not read as rich markup
    assert "KiB" in row("bad\\xff.jsonl")
    assert tree_digest(seeded_root) == before and tree_digest(outside) == outside_before


def test_list_refuses_a_data_folder_that_is_a_link_out_of_the_root(kolo, seeded_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.jsonl").write_text(GOOD)
    (seeded_root / "data" / "good.jsonl").unlink()
    (seeded_root / "data").rmdir()
    (seeded_root / "data").symlink_to(outside)
    before = tree_digest(seeded_root)
    r = kolo("data", "list", timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    assert "outside the data root" in out and "private.jsonl" not in out
    assert tree_digest(seeded_root) == before
