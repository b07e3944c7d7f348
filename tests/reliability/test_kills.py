"""Kills and concurrency through the real `kolo` command (local runtime): SIGKILL to the whole process group (kolo
*and* the trainer or converter it started, as when a terminal or machine dies), then the next command must end in
a finished, verified result; and nothing may ever sit under a final name half-written.

The trainer's own tests (tests/e2e/test_train.py) SIGKILL the trainer process directly; these go through `kolo`,
kill the process group, and check what a user would find and do next.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from train_helpers import setup_root, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOCAL = {"KOLO_RUNTIME": "local"}
TRAIN = ["train", "--base-model", "models/tiny", "--train-data", "data/qa.jsonl", "--batch-size", "2",
         "--logging-steps", "1", "--seed", "3"]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL kolo and everything it started (it runs in its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def check_adapter(run: Path) -> None:
    """The saved LoRA adapter is complete: its config parses and its tensors load."""
    from safetensors import safe_open

    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] > 0
    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert keys and all(f.get_tensor(k).numel() > 0 for k in keys[:4])


@pytest.fixture()
def root(seeded_root: Path, tiny_model: Path) -> Path:
    return setup_root(seeded_root, tiny_model)


def pid_gone(pid: int) -> bool:
    """Exited (a zombie waiting for a parent that is gone counts: it runs no code and holds no flock)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def test_trainer_sigkilled_mid_training_then_resume_finishes(kolo, root: Path) -> None:
    """The trainer process is SIGKILLed (as the OOM killer does) while `kolo train` waits on it: kolo says so
    in one line and exits non-zero; `kolo train --resume` then finishes the planned steps."""
    run = root / "outputs" / "killed"
    args = [*TRAIN, "--output-dir", "killed", "--max-steps", "30", "--save-steps", "5"]
    p = kolo.popen(*args, env=LOCAL, start_new_session=True)
    try:
        wait_for(lambda: (run / "checkpoints" / "checkpoint-5" / "trainer_state.json").exists(), 240, p,
                 "the first checkpoint")
        trainer_pid = int(json.loads((run / ".lock").read_text())["pid"])
        assert trainer_pid != p.pid
        os.kill(trainer_pid, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    assert p.returncode not in (0, None)
    assert "Traceback" not in out + err
    killed_rc = p.returncode
    # kolo's convention is one `error:` line, then an optional `hint:` line naming the fix.
    last = [ln for ln in err.splitlines() if ln.startswith("error:")][-1:]
    # What a crash leaves: no adapter under its final name, a manifest that is valid JSON and not "finished".
    assert not (run / "adapter").exists(), "a final adapter after a kill at step ~5 of 30"
    man = json.loads((run / "kolo.json").read_text())
    assert man["status"] == "running"
    # Without --resume kolo refuses to start over on top of the checkpoints, and says what to do.
    r = kolo(*args, env=LOCAL, timeout=240)
    assert r.returncode != 0 and "--resume" in r.stderr and "Traceback" not in r.stderr + r.stdout
    r = kolo(*args, "--resume", env=LOCAL, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    man = json.loads((run / "kolo.json").read_text())
    assert man["status"] == "finished" and man["train"]["global_step"] == 30
    assert man["resumed_from"].startswith("checkpoints/checkpoint-")
    check_adapter(run)
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30, "the log repeats or misses steps after the resume"
    assert not list(run.rglob(".tmp-*")), "temporary files left behind"
    assert not (run / ".lock").exists()
    # Checked last so that the resume above is exercised even while this fails.
    assert "--resume" in err, "the message after a kill does not say how to continue"
    assert last and re.search(r"(?i)kill|signal", last[0]), \
        f"kolo's last line does not say the trainer was killed (exit code {killed_rc}):\n{err[-1500:]}"


def test_sigkill_mid_export_then_rerun_finishes_verified(kolo, root: Path) -> None:
    pytest.importorskip("llama_cpp", reason="export needs llama-cpp-python (pip install -e 'container[export]')")
    run = root / "outputs" / "exp"
    r = kolo(*TRAIN, "--output-dir", "exp", "--max-steps", "2", env=LOCAL, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    gguf = run / "gguf"
    p = kolo.popen("export", "exp", "--quantization", "Q4_K_M", env=LOCAL, start_new_session=True)
    in_flight: list[str] = []

    def writing() -> bool:
        in_flight[:] = [x.name for x in gguf.iterdir() if x.name.startswith(".tmp-")] if gguf.is_dir() else []
        return bool(in_flight)

    try:
        wait_for(writing, 300, p, "the converter to start writing a GGUF")  # kill while a GGUF is being written
    finally:
        kill_group(p)
    assert p.returncode == -signal.SIGKILL
    wait_for(lambda: group_gone(p.pid), 30, None, "the converter to die with its group")
    # The file that was being written (".tmp-<pid>-convert-F16.gguf" -> "exp-F16.gguf") is not under its final name.
    for tmp in in_flight:
        label = tmp.split("-", 2)[2]  # convert-F16.gguf / quantize-Q4_K_M.gguf / Modelfile.F16
        quant = label.split("-", 1)[1] if label.endswith(".gguf") else None
        if quant is not None:
            assert not (gguf / f"exp-{quant}").exists(), f"exp-{quant} is under its final name after a kill"
    man = json.loads((run / "kolo.json").read_text())  # still valid JSON
    assert man["export"]["status"] != "finished"
    r = kolo("export", "exp", "--quantization", "Q4_K_M", env=LOCAL, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    man = json.loads((run / "kolo.json").read_text())
    ex = man["export"]
    assert ex["status"] == "finished"
    assert ex["verification"]["status"] in ("passed", "passed with warnings"), ex["verification"]
    assert set(ex["quantizations"]) >= {"F16", "Q4_K_M"}
    for info in ex["quantizations"].values():
        assert (run / info["file"]).stat().st_size == info["bytes"]
    assert not [x for x in gguf.iterdir() if x.name.startswith(".tmp-")], "the re-run left temporary files"


def test_second_train_refused_while_first_runs_allowed_after_its_crash(kolo, root: Path) -> None:
    run = root / "outputs" / "shared"
    first = kolo.popen(*TRAIN, "--output-dir", "shared", "--max-steps", "100000", "--save-steps", "100000",
                       env=LOCAL, start_new_session=True)
    try:
        wait_for(lambda: (run / "train_log.jsonl").exists(), 240, first, "the first run to be training")
        t = time.monotonic()
        second = kolo(*TRAIN, "--output-dir", "shared", "--max-steps", "3", env=LOCAL, timeout=240)
        out = second.stdout + second.stderr
        assert second.returncode == 4, out[-2000:]
        assert "in use by another kolo process" in out and "Traceback" not in out
        assert time.monotonic() - t < 120, "the refusal came only after slow work"
        assert first.poll() is None, "the refused second run stopped the first"
        holder = json.loads((run / ".lock").read_text())
    finally:
        # A crash of everything at once (power loss, OOM of the whole session): kolo, and the trainer, which kolo
        # runs in a session of its own (so killing kolo's group alone would leave it to die of a closed pipe).
        kill_group(first)
        if "holder" in locals():
            os.kill(int(holder["pid"]), signal.SIGKILL)
    wait_for(lambda: group_gone(first.pid) and pid_gone(int(holder["pid"])), 30, None,
             "the first run's processes to be gone")
    # The crashed run's lock file is still there, naming a process that no longer exists ...
    assert json.loads((run / ".lock").read_text())["pid"] == holder["pid"]
    # ... and it does not block the next run.
    r = kolo(*TRAIN, "--output-dir", "shared", "--max-steps", "3", env=LOCAL, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    man = json.loads((run / "kolo.json").read_text())
    assert man["status"] == "finished" and man["train"]["global_step"] == 3
    check_adapter(run)
