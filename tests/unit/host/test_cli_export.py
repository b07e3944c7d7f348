"""`kolo export` and `kolo chat` on the host: both built from their option model (ExportOptions, ChatOptions), argv
from the one builder, options and the run checked before any trainer process. Real `kolo` subprocesses; no model,
no daemon (dry runs and refusals never reach one)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kolo_trainer import spec
from kolo_trainer.options import ChatOptions


def _argv(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, r.stderr
    return shlex.split(r.stdout.strip())


def test_chat_flags_are_the_option_model(kolo):
    r = kolo("chat", "--help")
    assert r.returncode == 0
    for info in spec.describe(ChatOptions):
        assert info.flag in r.stdout, info.flag
    assert "OUTPUT_DIR" in r.stdout and "--dry-run" in r.stdout


def test_chat_dry_run_argv_is_glued_and_parses_back(kolo, data_root):
    r = kolo("--runtime", "local", "chat", "my run", "--prompt=--help", "--temperature", "0", "--quantization",
             "q8_0", "--max-tokens", "12", "--dry-run")
    argv = _argv(r)
    assert argv[1:4] == ["-m", "kolo_trainer", "chat"]
    assert argv[4:-2] == ["--output-dir=my run", "--quantization=Q8_0", "--prompt=--help", "--temperature=0.0",
                          "--max-tokens=12"]
    assert argv[-2:] == ["--data-root", str(data_root)]
    # What the trainer parses from it: the prompt is a prompt, never --help.
    root, rest = spec.pop_data_root(argv[4:])
    opts, _ = spec.parse_argv(ChatOptions, rest)
    assert (opts.prompt, opts.quantization, opts.temperature, opts.max_tokens) == ("--help", "Q8_0", 0.0, 12)
    assert root == str(data_root)


def test_chat_value_that_looks_like_an_option_stays_a_value(kolo):
    argv = _argv(kolo("chat", "r", "--prompt", "--max-tokens", "--dry-run"))
    assert "--prompt=--max-tokens" in argv and not any(a.startswith("--max-tokens") for a in argv)


def test_export_dry_run_through_docker_names_the_container_root(kolo):
    argv = _argv(kolo("export", "r", "--quantization", "q4_k_m", "--system=--help", "--no-verify", "--dry-run"))
    assert argv[:2] == ["docker", "exec"]
    i = argv.index("kolo_trainer")
    assert argv[i + 1:i + 2] == ["export"]
    assert {"--output-dir=r", "--quantization=Q4_K_M", "--system=--help", "--no-verify"} <= set(argv)
    assert argv[-2:] == ["--data-root", "/var/kolo_data"]


@pytest.mark.parametrize("verb", ["export", "chat"])
def test_every_option_problem_and_the_run_problem_at_once(kolo, verb):
    bad = ["--quantization", "Q9"] + (["--num-ctx", "1"] if verb == "export" else ["--max-tokens", "0"])
    r = kolo(verb, "ghost", *bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "3 problems with the options" in r.stderr
    assert "unknown quantization 'Q9'" in r.stderr and "no run 'ghost'" in r.stderr


@pytest.mark.parametrize("verb", ["export", "chat"])
def test_output_dir_and_the_argument_must_agree(kolo, verb):
    r = kolo(verb, "a", "--output-dir", "b", "--dry-run")
    assert r.returncode == 2 and "OUTPUT_DIR 'a' and --output-dir 'b' disagree" in r.stderr


def test_the_host_checks_the_run_before_any_trainer_process(kolo, data_root: Path):
    """An unfinished run is refused by the host (exit 5) without starting the trainer: a trainer that was never
    started cannot have written the lock, the manifest or a temporary file."""
    run = data_root / "outputs" / "half"
    run.mkdir()
    (run / "kolo.json").write_text(json.dumps({"status": "running"}))
    before = sorted(p.name for p in run.iterdir())
    r = kolo("export", "half", env={"KOLO_RUNTIME": "docker", "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert r.returncode == 5, r.stderr
    assert "cannot export outputs/half: its training did not finish (status: running)" in r.stderr
    assert "docker" not in r.stderr.lower()  # refused before the runtime was even looked at
    assert sorted(p.name for p in run.iterdir()) == before


def test_trainer_chat_parses_with_the_option_model(data_root: Path):
    """The trainer's chat verb has no parser of its own: an unknown flag is the option model's error (exit 2)."""
    r = subprocess.run([sys.executable, "-m", "kolo_trainer", "chat", "--output-dir=x", "--frobnicate",
                        "--data-root", str(data_root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--frobnicate" in r.stderr and "Traceback" not in r.stderr
