"""The Kolo-named shims in scripts/: each bash shim, run for real with bash, gives the same kolo argv as the
direct kolo call. PowerShell cannot run here, so the .ps1 twins are checked statically: they are one-line forwards
to the same `kolo compat` mapping the bash shims use (kolo_cli/kolo_compat.py), which is what these tests run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kolo_cli import kolo_compat

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "scripts"
SHIMS = ["build_image", "create_and_run_container", "run_container", "copy_training_data", "train_model_unsloth",
         "install_model", "uninstall_model", "list_models", "delete_model", "connect"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _kolo_bin() -> str:
    """The console script of the environment running the tests (as a user would call it)."""
    exe = shutil.which("kolo", path=str(Path(sys.executable).parent)) or shutil.which("kolo")
    assert exe, "the kolo console script is not installed"
    return exe


def _env(root: Path, **extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KOLO", "OLLAMA"))}
    e.update(KOLO=_kolo_bin(), KOLO_DATA=str(root), NO_COLOR="1", COLUMNS="250", TERM="dumb")
    e.update(extra)
    return e


def shim(root: Path, name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / f"{name}.sh"), *args], env=_env(root, **env), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def direct(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_kolo_bin(), *args], env=_env(root), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def argv_of(root: Path, name: str, *args: str) -> list[str]:
    r = shim(root, name, *args, KOLO_COMPAT_DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _norm(text: str) -> str:
    return re.sub(r"KOLO_RUN_ID=\S+", "KOLO_RUN_ID=X", text)  # a fresh id per exec, by design


# ------------------------------------------------------------------------------------------- the files
@pytest.mark.parametrize("name", SHIMS)
def test_shims_are_thin_array_forwards(name):
    sh = (SCRIPTS / f"{name}.sh").read_text()
    code = [x for x in sh.splitlines() if x.strip() and not x.startswith("#")]
    assert code == [f'exec "${{KOLO:-kolo}}" compat {name} "$@"'], code
    assert os.access(SCRIPTS / f"{name}.sh", os.X_OK)
    ps = (SCRIPTS / f"{name}.ps1").read_text()
    code = [x for x in ps.splitlines() if x.strip() and not x.startswith("#")]
    assert code == [f"& kolo compat {name} @args", "exit $LASTEXITCODE"], code
    assert name in kolo_compat.scripts()


# ------------------------------------------------------------------------------------ train, for real
TRAIN_KOLO = ["-Epochs", "3", "-LearningRate", "1e-4", "-TrainData", "data/chats.jsonl", "-BaseModel", "models/tiny",
              "-ChatTemplate", "chatml", "-LoraRank", "8", "-LoraAlpha", "16", "-LoraDropout", "0",
              "-MaxSeqLength", "512", "-WarmupSteps", "0", "-SaveSteps", "10", "-SaveTotalLimit", "2", "-Seed", "0",
              "-SchedulerType", "cosine", "-BatchSize", "1", "-OutputDir", "it's a; test", "-Quantization", "Q4_K_M",
              "-WeightDecay", "0", "-UseCheckpoint"]
TRAIN_FLAGS = ["--epochs", "3", "--learning-rate", "1e-4", "--train-data", "data/chats.jsonl", "--base-model",
               "models/tiny", "--chat-template", "chatml", "--lora-rank", "8", "--lora-alpha", "16", "--lora-dropout",
               "0", "--max-seq-length", "512", "--warmup-steps", "0", "--save-steps", "10", "--save-total-limit", "2",
               "--seed", "0", "--scheduler-type", "cosine", "--batch-size", "1", "--output-dir", "it's a; test",
               "--quantization", "Q4_K_M", "--weight-decay", "0", "--resume"]
# Kolo's own bash flags (getopts e:l:t:b:c:r:a:d:m:w:s:i:S:T:B:o:q:W:u)
TRAIN_LETTERS = ["-e", "3", "-l", "1e-4", "-t", "data/chats.jsonl", "-b", "models/tiny", "-c", "chatml", "-r", "8",
                 "-a", "16", "-d", "0", "-m", "512", "-w", "0", "-s", "10", "-i", "2", "-S", "0", "-T", "cosine",
                 "-B", "1", "-o", "it's a; test", "-q", "Q4_K_M", "-W", "0", "-u"]


def test_train_shim_maps_every_kolo_parameter(data_root):
    assert argv_of(data_root, "train_model_unsloth", *TRAIN_KOLO) == ["train", *TRAIN_FLAGS]
    assert argv_of(data_root, "train_model_unsloth", *TRAIN_LETTERS) == ["train", *TRAIN_FLAGS]


@pytest.mark.parametrize("style", ["kolo", "letters"])
def test_train_shim_dry_run_equals_direct_call(data_root, style):
    args = TRAIN_KOLO if style == "kolo" else TRAIN_LETTERS
    via_shim = shim(data_root, "train_model_unsloth", *args, "--", "--dry-run")
    via_kolo = direct(data_root, "train", *TRAIN_FLAGS, "--dry-run")
    assert via_kolo.returncode == 0, via_kolo.stderr
    assert via_shim.returncode == 0, via_shim.stderr
    assert _norm(via_shim.stdout) == _norm(via_kolo.stdout)
    line = via_kolo.stdout
    for zero in ("--weight-decay=0", "--warmup-steps=0", "--seed=0", "--lora-dropout=0"):
        assert re.search(re.escape(zero) + r"(\.0)?( |$)", line), zero  # an explicit 0 survives
    assert "'--output-dir=it'\"'\"'s a; test'" in line  # one argument, quoted, never split or executed
    # the shim says what it runs, so Kolo users learn the verbs
    assert "kolo train --epochs 3" in via_shim.stderr


def test_powershell_style_colon_and_switch_values(data_root):
    assert argv_of(data_root, "train_model_unsloth", "-Epochs:3", "-weightdecay", "0", "-UseCheckpoint:$false",
                   "-Packing:$true") == ["train", "--epochs", "3", "--weight-decay", "0", "--no-resume", "--packing"]
    assert argv_of(data_root, "train_model_unsloth", "-Epochs:", "4") == ["train", "--epochs", "4"]
    # PowerShell consumes `--` itself, so the .ps1 route to a dry run is -DryRun
    assert argv_of(data_root, "train_model_unsloth", "-Epochs", "0", "-DryRun", "-Config", "c.yaml") == \
        ["train", "--epochs", "0", "--dry-run", "--config", "c.yaml"]


def test_unknown_parameter_is_one_clear_error(data_root):
    r = shim(data_root, "train_model_unsloth", "-Epochs", "3", "-Bogus", "1")
    assert r.returncode == 2
    assert "unknown parameter '-Bogus' for train_model_unsloth" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1
    r = shim(data_root, "train_model_unsloth", "-Epochs")
    assert r.returncode == 2 and "-Epochs needs a value" in r.stderr


# ------------------------------------------------------------------------------------------ the others
@pytest.mark.parametrize("name,args,expected", [
    ("build_image", [], ["build"]),
    ("create_and_run_container", ["--gpus", "all"], ["up", "--gpus", "all"]),
    ("run_container", [], ["start"]),
    ("connect", [], ["shell"]),
    ("list_models", ["--json"], ["list", "--json"]),
    ("copy_training_data", ["-f", "my chats.jsonl", "-d", "chats.jsonl"], ["data", "add", "my chats.jsonl", "--as",
                                                                            "chats.jsonl"]),
    ("copy_training_data", ["-LocalFile", "x.jsonl"], ["data", "add", "x.jsonl"]),
    ("install_model", ["God", "--tool", "unsloth", "--output-dir", "GodOutput", "--quantization", "Q4_K_M"],
     ["ollama-install", "God", "--output-dir", "GodOutput", "--quantization", "Q4_K_M"]),
    ("install_model", ["-ModelName", "God", "-Tool", "unsloth", "-OutputDir", "GodOutput", "-Quantization", "Q8_0"],
     ["ollama-install", "God", "--output-dir", "GodOutput", "--quantization", "Q8_0"]),
    ("uninstall_model", ["God"], ["ollama-uninstall", "God"]),
    ("uninstall_model", ["-ModelName", "God; rm -rf /"], ["ollama-uninstall", "God; rm -rf /"]),
    ("delete_model", ["GodOutput", "unsloth"], ["delete", "GodOutput"]),
    ("delete_model", ["-OutputDir", "GodOutput", "-Tool", "unsloth", "-Yes"], ["delete", "GodOutput", "--yes"]),
])
def test_shim_argv(data_root, name, args, expected):
    assert argv_of(data_root, name, *args) == expected


def test_list_shim_equals_direct_call(data_root):
    (data_root / "outputs" / "run-a" / "gguf").mkdir(parents=True)
    (data_root / "outputs" / "run-a" / "gguf" / "run-a-Q4_K_M.gguf").write_bytes(b"GGUF")
    down = ["--json", "--ollama", "http://127.0.0.1:9"]  # nothing listens on the discard port
    a, b = shim(data_root, "list_models", *down), direct(data_root, "list", *down)
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout and json.loads(a.stdout)["runs"][0]["quantizations"] == ["Q4_K_M"]


def test_delete_shim_deletes_like_the_direct_call(data_root):
    for run in ("r1", "r2"):
        (data_root / "outputs" / run).mkdir()
        (data_root / "outputs" / run / "kolo.json").write_text('{"status": "finished"}')
    a = shim(data_root, "delete_model", "r1", "unsloth", "--", "--yes")
    b = direct(data_root, "delete", "r2", "--yes")
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert not (data_root / "outputs" / "r1").exists() and not (data_root / "outputs" / "r2").exists()
    assert a.stdout.replace("r1", "r2") == b.stdout
    assert "note: the Tool argument is ignored" in a.stderr


def test_install_shim_error_equals_direct_call(data_root):
    a = shim(data_root, "install_model", "God", "-OutputDir", "nope", "-Quantization", "Q4_K_M")
    b = direct(data_root, "ollama-install", "God", "--output-dir", "nope", "--quantization", "Q4_K_M")
    assert a.returncode == b.returncode == 2  # a run name that names no run is a bad name
    assert a.stderr.splitlines()[-2:] == b.stderr.splitlines()[-2:]
    assert "no run 'nope'" in b.stderr
