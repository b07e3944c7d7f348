"""`kolo train`: flags from the spec, YAML merging, validation before any runtime, --dry-run argv. Real
subprocesses of the installed `kolo` command; no daemon needed (validation and dry runs never touch Docker)."""

from __future__ import annotations

import os
import re
import shlex
import sys

import pytest


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_issue_dry_run_line(kolo):
    r = kolo("train", "--dry-run", "--epochs", "3", "--lora-rank", "16", "--weight-decay", "0",
             "--output-dir", "it's a test")
    assert r.returncode == 0, r.stderr
    lines = _lines(r.stdout)
    assert len(lines) == 1  # one shell-quoted line
    argv = shlex.split(lines[0])
    assert argv[:2] == ["docker", "exec"] and "kolo" in argv
    i = argv.index("kolo")
    assert argv[i + 1:i + 5] == ["python", "-m", "kolo_trainer", "train"]
    assert "--weight-decay=0.0" in argv  # an explicit 0 survives
    assert "--output-dir=it's a test" in argv  # one argument
    assert "--epochs=3" in argv and "--lora-rank=16" in argv
    assert argv[-2:] == ["--data-root", "/var/kolo_data"]
    assert "warning:" in r.stderr and "data/data.jsonl" in r.stderr  # dry run: says what is still missing


def test_dry_run_local_runtime_uses_this_python_and_host_root(kolo, data_root):
    (data_root / "data" / "data.jsonl").write_text("{}\n")
    r = kolo("--runtime", "local", "train", "--dry-run", "--resume", "--no-packing")
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout.strip())
    assert os.path.realpath(argv[0]) == os.path.realpath(sys.executable)
    assert argv[1:4] == ["-m", "kolo_trainer", "train"]
    assert "--resume" in argv and "--no-packing" in argv
    assert argv[-2:] == ["--data-root", str(data_root)]
    assert r.stderr == ""


def test_container_option_and_env(kolo):
    r = kolo("--container", "other", "train", "--dry-run")
    assert shlex.split(r.stdout)[shlex.split(r.stdout).index("other") + 1] == "python"
    r = kolo("train", "--dry-run", env={"KOLO_CONTAINER": "envname"})
    assert "envname" in shlex.split(r.stdout)


def test_repeatable_quantization_passes_through(kolo):
    r = kolo("train", "--dry-run", "--quantization", "q4_k_m", "--quantization", "Q8_0")
    train, export = (shlex.split(line) for line in r.stdout.splitlines())
    for argv in (train, export):  # recorded by training, done by its own export process after it
        assert [a.split("=", 1)[1] for a in argv if a.startswith("--quantization=")] == ["Q4_K_M", "Q8_0"]
    assert train[train.index("kolo_trainer") + 1] == "train"
    assert export[export.index("kolo_trainer") + 1:export.index("kolo_trainer") + 3] == ["export", "--output-dir=model"]


def test_config_file_and_flags(kolo, tmp_path, data_root):
    (data_root / "data" / "chats.jsonl").write_text("{}\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train_data: data/chats.jsonl\nepochs: 7\nweight-decay: 0.5\n")
    r = kolo("train", "--config", str(cfg), "--weight-decay", "0", "--dry-run")
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout)
    assert "--epochs=7" in argv
    assert "--weight-decay=0.0" in argv  # the flag wins over the file
    assert "--train-data=data/chats.jsonl" in argv


def test_all_problems_at_once_one_message(kolo, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochs: 2\nfoo: 1\n")
    r = kolo("train", "--config", str(cfg), "--lora-rank", "0", "--learning-rate", "-1", "--scheduler-type", "x",
             "--quantization", "Q9", "--train-data", "data/nope.jsonl", "--base-model", "models/missing",
             "--output-dir", "../escape")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    err = r.stderr
    assert err.startswith("error: 8 problems with the options:")
    for needle in ("unknown key 'foo'", "--lora-rank", "--learning-rate", "--scheduler-type", "Q9",
                   "data/nope.jsonl not found", "models/missing not found", "'..'"):
        assert needle in err, needle
    assert "hint:" in err


def test_missing_data_file_is_an_error_without_dry_run(kolo):
    r = kolo("--runtime", "local", "train", "--epochs", "1")
    assert r.returncode == 2
    assert "--train-data: data/data.jsonl not found under the data root" in r.stderr
    assert "kolo data add" in r.stderr


def test_local_base_model_must_exist(kolo, data_root):
    (data_root / "data" / "data.jsonl").write_text("{}\n")
    r = kolo("--runtime", "local", "train", "--dry-run", "--base-model", "models/tiny")
    assert r.returncode == 0 and "models/tiny not found" in r.stderr
    (data_root / "models" / "tiny").mkdir()
    r = kolo("--runtime", "local", "train", "--dry-run", "--base-model", "models/tiny")
    assert r.returncode == 0 and "models/tiny has no config.json" in r.stderr
    (data_root / "models" / "tiny" / "config.json").write_text("{}")
    r = kolo("--runtime", "local", "train", "--dry-run", "--base-model", "models/tiny")
    assert r.returncode == 0 and r.stderr == ""
    r = kolo("train", "--dry-run", "--base-model", "org/some-hub-model")  # a hub id is not a path
    assert r.returncode == 0 and "some-hub-model" in r.stdout and "not found" not in r.stderr


@pytest.mark.parametrize("args, needle", [
    (["--runtime", "podman", "status"], "--runtime must be docker or local"),
    (["train", "--no-such-flag"], "No such option"),
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
])
def test_bad_usage_is_one_clear_line(kolo, args, needle):
    r = kolo(*args)
    assert r.returncode != 0
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_help_lists_verbs_and_examples(kolo):
    r = kolo("--help")
    assert r.returncode == 0
    for verb in ("build", "up", "start", "stop", "down", "status", "doctor", "shell", "logs", "train", "data"):
        assert re.search(rf"^  {verb} +\S", r.stdout, re.M), verb  # a row of a commands section
    assert "Container:" in r.stdout and "Training:" in r.stdout
    r = kolo()  # no verb: the help, on stderr, and a usage exit code
    assert r.returncode == 2 and "Usage: kolo" in r.stderr and "Traceback" not in r.stderr
    r = kolo("train", "--help")
    assert r.returncode == 0
    assert "Example:" in r.stdout and "--weight-decay" in r.stdout and "--no-resume" in r.stdout
