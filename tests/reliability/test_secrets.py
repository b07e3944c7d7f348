"""HF_TOKEN / WANDB_API_KEY reach the trainer's environment and nowhere else: not in any process's argv (what
`ps` and `docker inspect` show), not in kolo's output, not in any file of the run (manifest, logs, checkpoints).

Each test first proves the secret really is in the trainer's environment (/proc/PID/environ), so a scan that
finds nothing means "not leaked", not "never there".
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from train_helpers import setup_root, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAIN = ["train", "--base-model", "models/tiny", "--train-data", "data/qa.jsonl", "--batch-size", "2",
         "--max-steps", "12", "--save-steps", "4", "--logging-steps", "1"]


def secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {"HF_TOKEN": f"hf_kolotest{tag}", "WANDB_API_KEY": f"wandbkolotest{tag}"}


class ArgvWatch:
    """Samples every process's argv (/proc/*/cmdline, what `ps` shows) on a thread until stopped."""

    def __init__(self, needles: list[str]):
        self.needles = [n.encode() for n in needles]
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for d in Path("/proc").iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    argv = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in argv for n in self.needles):
                    self.hits.append(argv.replace(b"\0", b" ").decode(errors="replace")[:300])
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> "ArgvWatch":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def files_containing(folder: Path, needles: list[str]) -> list[str]:
    out = []
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            out += [f"{p.relative_to(folder)}: {n[:12]}..." for n in needles if n.encode() in data]
    return out


def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.fixture()
def root(data_root: Path, tiny_model: Path) -> Path:
    return setup_root(data_root, tiny_model)


def _train_and_watch(kolo, root: Path, run_name: str, env: dict[str, str], environ_reader) -> None:
    sec = secrets()
    needles = list(sec.values())
    run = root / "outputs" / run_name
    dry = kolo(*TRAIN, "--output-dir", run_name, "--dry-run", env={**env, **sec})
    assert dry.returncode == 0 and not any(n in dry.stdout + dry.stderr for n in needles)
    with ArgvWatch(needles) as watch:
        p = kolo.popen(*TRAIN, "--output-dir", run_name, env={**env, **sec})
        wait_for(lambda: (run / ".lock").exists() and (run / "kolo.json").exists(), 300, p, "training to start")
        pid = int(json.loads((run / ".lock").read_text())["pid"])
        environ = environ_reader(pid)
        out, err = p.communicate(timeout=600)
    assert p.returncode == 0, out[-2000:] + err[-2000:]
    # The secrets were really there for the trainer to use ...
    assert all(f"{k}={v}".encode() in environ for k, v in sec.items()), "the trainer did not receive the secrets"
    # ... and leaked nowhere.
    assert watch.samples > 3
    assert not watch.hits, f"a secret in a process's argv: {watch.hits[:3]}"
    assert not any(n in out + err for n in needles), "a secret in kolo's output"
    assert not files_containing(run, needles), files_containing(run, needles)
    assert (run / "kolo.json").exists() and (run / "train_log.jsonl").exists() and list(run.glob("checkpoints/*"))


def test_secrets_stay_out_of_argv_logs_and_manifest_local(kolo, root: Path) -> None:
    _train_and_watch(kolo, root, "secret-local", {"KOLO_RUNTIME": "local"}, environ_of)


@pytest.mark.docker
def test_secrets_stay_out_of_argv_inspect_logs_and_manifest_docker(kolo, running, root: Path) -> None:
    """Through `docker exec` into the test container: the docker CLI's argv (host `ps`), `docker inspect` of the
    container, and the in-container trainer's argv (the same kernel's /proc) must not hold the values."""
    name = running["KOLO_CONTAINER"]

    def in_container_environ(pid: int) -> bytes:
        # The lock holds the pid as the container sees it; read its environ from inside the container.
        r = subprocess.run(["docker", "exec", name, "cat", f"/proc/{pid}/environ"], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    _train_and_watch(kolo, root, "secret-docker", {}, in_container_environ)
    inspect = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0
    assert "hf_kolotest" not in inspect.stdout and "wandbkolotest" not in inspect.stdout
