"""Bad input through the real `kolo` console script: each case must exit non-zero, say what is wrong in a short
message (a line matching the case's pattern, no traceback, at most one ``error:`` line), and change nothing in
the data root (every file hashed before and after; a file created by a failed command counts as a change).

Training cases run with ``KOLO_RUNTIME=local``: the host validates, then runs the real trainer, which checks the
data and the output folder before it loads any model (``models/fake`` is a folder with only a config.json, so a
case that got as far as loading it would fail for the wrong reason and its pattern would not match).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest

from rel_helpers import tree_digest

LOCAL = {"KOLO_RUNTIME": "local"}


def _write(rel: str, content: bytes | str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def _yaml(text: str) -> Callable[[Path], None]:
    return _write("../cwd/config.yaml", text)  # the runner's cwd is data_root/../cwd


def _big_line(root: Path) -> None:
    # One 50 MB JSON line (a valid JSON string, far over the per-row limit) between two good rows.
    p = root / "data" / "big.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    with open(p, "w") as f:
        f.write(good + "\n")
        f.write('{"messages": [{"role": "user", "content": "' + "x" * (50 * 1024 * 1024) + '"}]}\n')
        f.write(good + "\n")


MSG = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
WRONG_ROLE = '{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
BINARY = bytes(range(256)) * 64
TRAIN_NO_DATA = ["train", "--base-model", "models/fake"]
#: the valid dataset, so that each case's own mistake is the only problem reported
TRAIN = [*TRAIN_NO_DATA, "--train-data", "data/good.jsonl"]

#: (id, argv, setup, env, pattern one output line must match)
CASES: list[tuple[str, list[str], Callable[[Path], None] | None, dict, str]] = [
    # --- kolo data check / add
    ("check-malformed-jsonl", ["data", "check", "data/bad.jsonl"], _write("data/bad.jsonl", MSG + "{oops\n"), {},
     r"bad\.jsonl:2: invalid JSON"),
    ("check-wrong-role", ["data", "check", "data/role.jsonl"], _write("data/role.jsonl", WRONG_ROLE), {},
     r"role\.jsonl:1: .*role.*wizard"),
    ("check-empty-file", ["data", "check", "data/empty.jsonl"], _write("data/empty.jsonl", ""), {},
     r"empty\.jsonl.*(empty|no rows)"),
    ("check-binary-file", ["data", "check", "data/blob.jsonl"], _write("data/blob.jsonl", BINARY), {},
     r"blob\.jsonl:1?:? .*(UTF-8|binary|invalid)"),
    ("check-50mb-line", ["data", "check", "data/big.jsonl"], _big_line, {}, r"big\.jsonl:2: .*(long|limit|MiB)"),
    ("check-missing-file", ["data", "check", "data/nope.jsonl"], None, {}, r"nope\.jsonl.*not found"),
    ("check-a-folder", ["data", "check", "data"], None, {}, r"data.*(folder|directory|not a file)"),
    ("add-malformed", ["data", "add", "../cwd/in.jsonl"], _write("../cwd/in.jsonl", "{oops\n"), {},
     r"in\.jsonl:1: invalid JSON"),
    ("add-as-dotdot", ["data", "add", "../kolo_data/data/good.jsonl", "--as", "../x.jsonl"], None, {}, r"\.\."),
    ("add-as-absolute", ["data", "add", "../kolo_data/data/good.jsonl", "--as", "/tmp/x.jsonl"], None, {},
     r"(absolute|single folder name|without '/')"),
    ("add-as-newline", ["data", "add", "../kolo_data/data/good.jsonl", "--as", "a\nb.jsonl"], None, {},
     r"control character"),
    ("add-existing-name", ["data", "add", "../cwd/other.jsonl", "--as", "good.jsonl"],
     _write("../cwd/other.jsonl", MSG), {}, r"good\.jsonl already exists"),
    ("add-missing-file", ["data", "add", "../cwd/absent.jsonl"], None, {}, r"absent\.jsonl.*not found"),
    # --- kolo train: options, checked on the host before anything runs
    ("train-missing-data", [*TRAIN_NO_DATA, "--train-data", "data/nope.jsonl"], None, LOCAL,
     r"nope\.jsonl not found"),
    ("train-base-model-missing", ["train", "--train-data", "data/good.jsonl", "--base-model", "models/nothere"],
     None, LOCAL, r"--base-model: models/nothere not found"),
    ("train-bad-yaml", [*TRAIN, "--config", "config.yaml"], _yaml("epochs: [1, 2\nlora_rank: 8\n"), LOCAL,
     r"config\.yaml.*(YAML|yaml|parse)"),
    ("train-yaml-not-mapping", [*TRAIN, "--config", "config.yaml"], _yaml("- 1\n- 2\n"), LOCAL,
     r"config\.yaml.*(mapping|dict|key)"),
    ("train-unknown-config-key", [*TRAIN, "--config", "config.yaml"], _yaml("epochs: 2\nlearning_rat: 0.1\n"),
     LOCAL, r"learning_rat"),
    ("train-missing-config", [*TRAIN, "--config", "absent.yaml"], None, LOCAL, r"absent\.yaml"),
    ("train-yaml-negative", [*TRAIN, "--config", "config.yaml"], _yaml("epochs: -1\n"), LOCAL, r"epochs"),
    ("train-lora-rank-zero", [*TRAIN, "--lora-rank", "0"], None, LOCAL, r"lora.rank"),
    ("train-negative-lr", [*TRAIN, "--learning-rate", "-0.001"], None, LOCAL, r"learning.rate"),
    ("train-nan-lr", [*TRAIN, "--learning-rate", "nan"], None, LOCAL, r"learning.rate"),
    ("train-nan-weight-decay", [*TRAIN, "--weight-decay", "NaN"], None, LOCAL, r"weight.decay"),
    ("train-zero-epochs", [*TRAIN, "--epochs", "0"], None, LOCAL, r"epochs"),
    ("train-negative-batch", [*TRAIN, "--batch-size", "-2"], None, LOCAL, r"batch.size"),
    ("train-tiny-seq-len", [*TRAIN, "--max-seq-length", "5"], None, LOCAL, r"max.seq.length"),
    ("train-dropout-over-1", [*TRAIN, "--lora-dropout", "1.5"], None, LOCAL, r"lora.dropout"),
    ("train-unknown-scheduler", [*TRAIN, "--scheduler-type", "zigzag"], None, LOCAL, r"scheduler.type"),
    ("train-unknown-quant", [*TRAIN, "--quantization", "Q9_X"], None, LOCAL, r"Q9_X"),
    ("train-output-dotdot", [*TRAIN, "--output-dir", "../x"], None, LOCAL, r"output.dir.*\.\."),
    ("train-output-absolute", [*TRAIN, "--output-dir", "/tmp/kolo-abs"], None, LOCAL,
     r"output.dir.*(absolute|relative)"),
    ("train-output-newline", [*TRAIN, "--output-dir", "run\nx"], None, LOCAL, r"output.dir.*control character"),
    ("train-data-dotdot", [*TRAIN_NO_DATA, "--train-data", "../outside.jsonl"], None, LOCAL, r"train.data.*\.\."),
    # A name full of shell syntax is inert data: the only complaint is that no such file exists, and the
    # `touch` inside it never runs (the digest would show the file).
    ("train-data-shell-syntax", [*TRAIN_NO_DATA, "--train-data", "data/x\"; touch pwned; '.jsonl"], None, LOCAL,
     r"not found"),
    ("train-runtime-bogus", ["--runtime", "vm", "train"], None, {}, r"--runtime must be docker or local"),
    # --- kolo train: checked by the real trainer (local runtime) before any model is loaded
    ("train-malformed-jsonl", [*TRAIN_NO_DATA, "--train-data", "data/bad.jsonl"],
     _write("data/bad.jsonl", MSG + "{oops\n"), LOCAL, r"bad\.jsonl:2: invalid JSON"),
    ("train-wrong-role", [*TRAIN_NO_DATA, "--train-data", "data/role.jsonl"], _write("data/role.jsonl", WRONG_ROLE),
     LOCAL, r"role\.jsonl:1: .*wizard"),
    ("train-empty-file", [*TRAIN_NO_DATA, "--train-data", "data/empty.jsonl"], _write("data/empty.jsonl", ""), LOCAL,
     r"empty\.jsonl.*(empty|no rows)"),
    ("train-binary-file", [*TRAIN_NO_DATA, "--train-data", "data/blob.jsonl"], _write("data/blob.jsonl", BINARY), LOCAL,
     r"blob\.jsonl.*(UTF-8|binary|invalid)"),
    ("train-into-finished-run", [*TRAIN, "--output-dir", "done"], None, LOCAL,
     r"outputs/done already holds a finished run"),
    ("train-into-unfinished-dir-with-overwrite-and-resume",
     [*TRAIN, "--output-dir", "half", "--resume", "--overwrite"], None, LOCAL, r"--resume and --overwrite"),
    # --- export / management verbs
    ("export-unknown-quant", ["export", "done", "--quantization", "Q9_X"], None, LOCAL, r"Q9_X"),
    ("export-dotdot", ["export", "../x"], None, LOCAL, r"\.\."),
    ("export-missing-run", ["export", "ghost"], None, LOCAL, r"ghost"),
    ("delete-dotdot", ["delete", "../data", "--yes"], None, {}, r"\.\."),
    ("lmstudio-missing-run", ["lmstudio-install", "ghost", "--quantization", "Q4_K_M"], None, {}, r"ghost"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly_and_changes_nothing(case, kolo, seeded_root: Path) -> None:
    _, argv, setup, env, pattern = case
    if setup is not None:
        setup(seeded_root)
    cwd_before = tree_digest(kolo.cwd)
    before = tree_digest(seeded_root)
    r = kolo(*argv, env=env, timeout=180)
    out = r.stdout + r.stderr
    shown = out[-3000:]
    assert r.returncode != 0, f"exit 0 for bad input:\n{shown}"
    assert "Traceback" not in out, f"a traceback instead of a message:\n{shown}"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    matching = [ln for ln in lines if re.search(pattern, ln)]
    assert matching, f"no line matches {pattern!r}:\n{shown}"
    assert all(len(ln) <= 400 for ln in matching), "the line naming the problem is not short"
    assert sum(ln.lstrip().lower().startswith("error:") for ln in lines) <= 1, f"several error lines:\n{shown}"
    assert len(lines) <= 15, f"{len(lines)} lines of output for one problem:\n{shown}"
    assert tree_digest(seeded_root) == before, "the data root changed"
    assert tree_digest(kolo.cwd) == cwd_before, "the working folder changed"
    assert not list(Path("/").glob("pwned")) and not (seeded_root.parent / "pwned").exists()


def test_case_count() -> None:
    """Issue 7 asks for at least 30 bad-input cases."""
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
