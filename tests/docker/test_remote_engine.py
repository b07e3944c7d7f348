"""A remote GPU box, end to end: `kolo --docker-host URL up / data add / train / pull` against a second engine.

The GPU box is a second dockerd on its own unix socket (own --data-root, --exec-root and pidfile in a temporary
folder, no bridge, no iptables: started like the suite's own engine, stopped at the end of the session whatever
happens). Its data root is the Docker volume `kolo up` makes on a remote engine, which this machine's kolo never
reads as a folder: the dataset goes in through put_archive, the GGUFs come back through get_archive.

Stand-ins, said plainly: the base model is put into the engine's volume by this test through the Docker API (on a
real box it is downloaded there), and the ssh:// test has no sshd (none is cheap in CI): a stand-in `ssh` on PATH
takes the exact argv the Docker SDK and the docker CLI give the OpenSSH client and runs the same `docker system
dial-stdio` the real box would run, so every API call and `docker exec` really crosses that channel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KOLO = shutil.which("kolo", path=str(Path(sys.executable).parent)) or shutil.which("kolo")
EXAMPLE = REPO / "container" / "kolo_trainer" / "assets" / "example.jsonl"
RUN = "far run"  # a space: names stay inert data on both sides of the wire
PULLED = [f"gguf/{RUN}-F16.gguf", "gguf/Modelfile.F16", f"gguf/{RUN}-Q8_0.gguf", "gguf/Modelfile.Q8_0", "kolo.json"]


def _suite_conftest():
    """The Docker suite's conftest as a module (its ro_mounts(); `import conftest` would find tests/conftest.py)."""
    spec = importlib.util.spec_from_file_location("kolo_docker_suite_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _docker(url: str, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    return subprocess.run(["docker", "-H", url, *args], capture_output=True, env=env, timeout=120, **kw)


@pytest.fixture(scope="session")
def second_engine(docker_engine: str) -> str:
    """The stand-in GPU box: a second dockerd on its own socket; yields its URL and always stops it."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("a second dockerd needs root and dockerd (apt-get install docker.io)")
    base = Path(tempfile.mkdtemp(prefix="kolo-d2-", dir="/tmp"))  # short: a socket path must fit in 108 bytes
    url = f"unix://{base}/docker.sock"
    with open(base / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(["dockerd", "-H", url, "--data-root", str(base / "root"), "--exec-root",
                                 str(base / "exec"), "--pidfile", str(base / "dockerd.pid"), "--bridge=none",
                                 "--iptables=false", "--ip-masq=false"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _docker(url, "info").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the second dockerd did not come up: " + (base / "dockerd.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and its containerd, unmounts, exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


class Remote:
    """`kolo` aimed at the second engine the way a user does it: --docker-host URL --remote."""

    def __init__(self, url: str, env: dict[str, str]):
        self.url, self.env = url, env

    def __call__(self, *args: str, root: Path, engine: tuple[str, ...] | None = None, timeout: float = 300,
                 input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        e = {k: v for k, v in os.environ.items() if not k.startswith(("KOLO_", "DOCKER_HOST", "DOCKER_CONTEXT"))}
        e.update(self.env, KOLO_DATA=str(root), NO_COLOR="1", COLUMNS="250", TERM="dumb", **(env or {}))
        engine = ("--docker-host", self.url, "--remote") if engine is None else engine
        return subprocess.run([KOLO, *engine, *args], capture_output=True, text=True, env=e, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def read(self, path: str) -> bytes:
        """A file in the engine's data root, read in the container (nothing of it is on this machine)."""
        r = _docker(self.url, "exec", self.env["KOLO_CONTAINER"], "cat", f"/var/kolo_data/{path}")
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout


@pytest.fixture(scope="module")
def remote(second_engine: str, test_image: str, tiny_model: Path, tmp_path_factory) -> Remote:
    """One container on the second engine with a trained and exported run (F16 + Q8_0) in its volume."""
    pytest.importorskip("llama_cpp", reason="the export needs llama-cpp-python (bash scripts/install.sh)")
    import docker

    saved = subprocess.run(["docker", "save", test_image], capture_output=True, timeout=120, check=True).stdout
    assert _docker(second_engine, "load", input=saved).returncode == 0
    name = f"kolo-remote-{uuid.uuid4().hex[:8]}"
    kolo = Remote(second_engine, {"KOLO_CONTAINER": name, "KOLO_IMAGE": test_image, "KOLO_NETWORK": "none",
                                  "KOLO_MOUNTS_RO": ",".join(_suite_conftest().ro_mounts()), "KOLO_RUNTIME": "docker"})
    local = tmp_path_factory.mktemp("remote") / "kolo_data"  # this machine's data root: nothing is put here
    try:
        r = kolo("up", root=local)
        assert r.returncode == 0 and "Docker volume 'kolo_data'" in r.stdout, r.stdout + r.stderr
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(tiny_model, arcname="models/tiny")
        box = docker.DockerClient(base_url=second_engine).containers.get(name)
        assert box.put_archive("/var/kolo_data", buf.getvalue())
        r = kolo("data", "add", str(EXAMPLE), root=local)
        assert r.returncode == 0 and "added data/example.jsonl" in r.stdout, r.stdout + r.stderr
        r = kolo("train", "--base-model", "models/tiny", "--train-data", "data/example.jsonl", "--chat-template",
                 "chatml", "--method", "full", "--max-steps", "2", "--batch-size", "4", "--output-dir", RUN,
                 "--quantization", "Q8_0", root=local, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert not local.exists(), "the remote engine's data root leaked onto this machine"
        yield kolo
    finally:
        _docker(second_engine, "rm", "-f", name)
        _docker(second_engine, "volume", "rm", "kolo_data")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_data_root_lives_on_the_engine(remote: Remote) -> None:
    assert remote.read("data/example.jsonl") == EXAMPLE.read_bytes()
    manifest = json.loads(remote.read(f"outputs/{RUN}/kolo.json"))
    assert manifest["status"] == "finished" and manifest["export"]["status"] == "finished"
    assert set(manifest["export"]["quantizations"]) == {"F16", "Q8_0"}


def test_export_of_a_run_that_exists_only_on_the_box(remote: Remote, tmp_path: Path) -> None:
    """The host has no such run; the trainer on the box checks it (everything is up to date: nothing redone)."""
    local = tmp_path / "kolo_data"
    r = remote("export", RUN, "--quantization", "Q8_0", root=local, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "up to date" in r.stdout + r.stderr and not local.exists()
    r = remote("export", "no-such-run", root=local)
    assert r.returncode != 0 and "no-such-run" in r.stderr and not local.exists()


def test_pull_brings_the_run_back_byte_for_byte(remote: Remote, tmp_path: Path) -> None:
    root = tmp_path / "kolo_data"
    r = remote("pull", RUN, root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"outputs/{RUN}: 5 file(s) pulled" in r.stdout and "next: kolo ollama-install" in r.stderr
    run = root / "outputs" / RUN
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.name != ".lock") == \
        sorted(PULLED)
    for rel in PULLED:
        assert (run / rel).read_bytes() == remote.read(f"outputs/{RUN}/{rel}"), rel
    listed = json.loads(remote("list", "--json", root=root, engine=()).stdout)
    assert [(x["name"], x["status"], x["quantizations"]) for x in listed["runs"]] == [
        (RUN, "finished", ["F16", "Q8_0"])]
    # the pulled run is a run here: chat with its GGUF through its Modelfile, on this machine
    chat = remote("chat", RUN, "--quantization", "Q8_0", "--prompt", "Hi", "--max-tokens", "4", root=root, engine=(),
                  env={"KOLO_RUNTIME": "local"})
    assert chat.returncode == 0, chat.stdout[-2000:] + chat.stderr[-2000:]

    # again: nothing to fetch, nothing rewritten
    before = {rel: (run / rel).stat().st_mtime_ns for rel in PULLED}
    r = remote("pull", RUN, root=root)
    assert r.returncode == 0 and "0 file(s) pulled (0.0 KiB), 5 already here" in r.stdout, r.stdout + r.stderr
    assert before == {rel: (run / rel).stat().st_mtime_ns for rel in PULLED}

    # a local file that differs is never replaced silently
    modelfile = run / "gguf" / "Modelfile.Q8_0"
    modelfile.write_text(modelfile.read_text() + "PARAMETER temperature 0.1\n")
    mine = modelfile.read_bytes()
    r = remote("pull", RUN, "--quantization", "q8_0", root=root)
    assert r.returncode == 4 and f"outputs/{RUN}/gguf/Modelfile.Q8_0" in r.stderr and "--overwrite" in r.stderr
    assert modelfile.read_bytes() == mine
    r = remote("pull", RUN, "--quantization", "q8_0", "--overwrite", root=root)
    assert r.returncode == 0 and "1 file(s) pulled" in r.stdout, r.stdout + r.stderr
    assert modelfile.read_bytes() == remote.read(f"outputs/{RUN}/gguf/Modelfile.Q8_0")

    r = remote("pull", RUN, "--quantization", "Q4_K_M", root=root)
    assert r.returncode == 2 and "has no Q4_K_M GGUF (exported: F16, Q8_0)" in r.stderr, r.stderr


def test_an_interrupted_pull_resumes(remote: Remote, tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C half-way through the Q8_0 GGUF (the engine's real stream, stopped after half its bytes), then a
    second `kolo pull` in a new process finishes: finished files are kept, the cut one is fetched again whole, and
    the part file a killed pull would have left (planted here: a SIGKILL cannot be aimed at half a file) is
    removed."""
    import docker.models.containers

    from kolo_cli import cli, docker_ctl
    from kolo_cli.state import STATE

    real = docker.models.containers.Container.get_archive
    cut = {}

    def half_way(self, path, chunk_size=None, **kw):
        chunks, st = real(self, path, chunk_size=4096, **kw)
        if not path.endswith("-Q8_0.gguf"):
            return chunks, st

        def stopped():
            sent = 0
            for c in chunks:
                sent += len(c)
                if sent > st["size"] // 2:
                    cut["at"] = sent
                    raise KeyboardInterrupt
                yield c
        return stopped(), st

    monkeypatch.setattr(docker.models.containers.Container, "get_archive", half_way)
    for attr in ("data_root", "container", "runtime"):
        monkeypatch.setattr(STATE, attr, getattr(STATE, attr))
    monkeypatch.setattr(docker_ctl, "_chosen", {"via": None, "remote": None})
    monkeypatch.setenv("DOCKER_HOST", remote.url)
    root = tmp_path / "kolo_data"
    rc = cli.main(["--docker-host", remote.url, "--remote", "--runtime", "docker", "--data-root", str(root),
                   "--container", remote.env["KOLO_CONTAINER"], "pull", RUN])
    assert rc == 130 and cut["at"] > 0
    run = root / "outputs" / RUN
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and p.name != ".lock") == \
        sorted(PULLED[:2]), "only whole files under final names, no leftover part file"
    assert not (run / "kolo.json").exists()  # not a run here until everything arrived
    kept = {rel: (run / rel).stat().st_mtime_ns for rel in PULLED[:2]}

    # what a SIGKILLed pull leaves instead: its part file, named by a process that is gone
    gone = subprocess.Popen(["true"])
    gone.wait()
    part = run / "gguf" / f".tmp-{gone.pid}-{RUN}-Q8_0.gguf"
    part.write_bytes(remote.read(f"outputs/{RUN}/gguf/{RUN}-Q8_0.gguf")[:cut["at"]])

    monkeypatch.undo()
    r = remote("pull", RUN, root=root)
    assert r.returncode == 0 and "3 file(s) pulled" in r.stdout and "2 already here" in r.stdout, r.stdout + r.stderr
    assert kept == {rel: (run / rel).stat().st_mtime_ns for rel in PULLED[:2]}
    assert not part.exists() and not list(run.rglob(".tmp-*"))
    for rel in PULLED:
        assert _sha((run / rel).read_bytes()) == _sha(remote.read(f"outputs/{RUN}/{rel}")), rel


def test_doctor_checks_the_remote_engine(remote: Remote, tmp_path: Path) -> None:
    r = remote("doctor", "--no-gpu", root=tmp_path / "kolo_data")
    rows = r.stdout.splitlines()
    engine = [x for x in rows if f"remote engine {remote.url} (--docker-host)" in x]
    assert engine and "✓" in engine[0] and "round trip" in engine[0], r.stdout
    volume = [x for x in rows if "data root on the engine" in x]
    assert volume and "✓" in volume[0] and "volume 'kolo_data'" in volume[0] and "GiB free" in volume[0], r.stdout


def test_status_eval_and_option_checks_look_at_the_box(remote: Remote, tmp_path: Path) -> None:
    """The verbs that read the data root on a remote engine read the box's: status shows its volume and free space,
    eval measures the run there and reads back the eval.json written there, and a bad option is reported without
    the local data root's missing files (they are on the box)."""
    local = tmp_path / "kolo_data"
    r = remote("status", "--json", root=local)
    assert r.returncode == 0, r.stderr
    box = json.loads(r.stdout)["engine_data_root"]
    assert box["volume"] == "kolo_data" and box["free_bytes"] > 2**20, box
    r = remote("status", root=local)
    assert "volume 'kolo_data' on the engine (" in r.stdout and "`kolo pull` brings runs here" in r.stdout, r.stdout

    r = remote("eval", RUN, "--quantization", "Q8_0", "--json", root=local, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["run"] == RUN and set(report["models"]) >= {"Q8_0"}, list(report)
    assert json.loads(remote.read(f"outputs/{RUN}/eval.json"))["created"] == report["created"]
    assert not local.exists()

    r = remote("train", "--train-data", "data/example.jsonl", "--base-model", "models/tiny", "--epochs", "-1",
               "--output-dir", "never", root=local)
    assert r.returncode == 2 and "--epochs" in r.stderr, r.stderr
    assert "data/example.jsonl" not in r.stderr and "models/tiny" not in r.stderr, r.stderr  # both are on the box
    assert not local.exists()


def test_a_docker_context_reaches_the_same_engine(remote: Remote, tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {"DOCKER_CONFIG": str(config)}
    made = subprocess.run(["docker", "context", "create", "kolo-gpu-box", "--docker", f"host={remote.url}"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "kolo_data"
    r = remote("status", "--json", root=root, engine=("--context", "kolo-gpu-box", "--remote"), env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "running", r.stdout + r.stderr
    # `kolo shell` is the docker CLI (docker exec -i), which must follow the same context
    r = remote("shell", root=root, engine=("--context", "kolo-gpu-box", "--remote"), env=env,
               input="cat /var/kolo_data/data/example.jsonl\n")
    assert r.returncode == 0 and r.stdout.encode() == EXAMPLE.read_bytes(), r.stdout[-500:] + r.stderr


def test_the_ssh_form_through_the_ssh_program(remote: Remote, tmp_path: Path) -> None:
    """ssh://kolo@gpu-box:2222 needs no --remote (ssh is another machine). The stand-in `ssh` logs its argv and
    runs what sshd would run on the box: `docker system dial-stdio` against that box's engine."""
    log, bin_dir = tmp_path / "ssh.log", tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n'
                   f'exec env -u DOCKER_HOST -u DOCKER_CONTEXT docker -H "{remote.url}" system dial-stdio\n')
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    engine = ("--docker-host", "ssh://kolo@gpu-box:2222")
    root = tmp_path / "kolo_data"
    r = remote("status", "--json", root=root, engine=engine, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "running", r.stdout + r.stderr
    r = remote("shell", root=root, engine=engine, env=env, input="cat /var/kolo_data/data/example.jsonl\n")
    assert r.returncode == 0 and r.stdout.encode() == EXAMPLE.read_bytes(), r.stdout[-500:] + r.stderr
    r = remote("pull", RUN, "--quantization", "Q8_0", root=root, engine=engine, env=env)
    assert r.returncode == 0 and "3 file(s) pulled" in r.stdout, r.stdout + r.stderr
    gguf = root / "outputs" / RUN / "gguf" / f"{RUN}-Q8_0.gguf"
    assert gguf.read_bytes() == remote.read(f"outputs/{RUN}/gguf/{RUN}-Q8_0.gguf")
    calls = log.read_text().splitlines()
    assert calls and all("gpu-box docker system dial-stdio" in c and "-l kolo" in c and "-p 2222" in c
                         for c in calls), calls


def test_kolo_serve_dispatches_jobs_to_the_box_and_brings_the_runs_back(remote: Remote, make_kolo, tiny_model: Path,
                                                                        tmp_path: Path) -> None:
    """One Training Manager, two engines: its own (--runtime local here) and the box (--engine URL). A job for the
    box gets its dataset and base model sent into the box's volume, trains and exports there, and its run comes
    back here (no checkpoints), so the download and the job's own kolo.json work as for a run made here."""
    sys.path.insert(0, str(REPO / "tests" / "server"))
    from server_helpers import FAST, Server

    root = tmp_path / "kolo_data"
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(parents=True)
    shutil.copytree(tiny_model, root / "models" / "tiny2")  # a model the box does not have: it is sent
    runner = make_kolo(root, tmp_path)
    runner.env = {"KOLO_CONTAINER": remote.env["KOLO_CONTAINER"]}
    srv = Server(runner, root, ["--engine", remote.url]).start(timeout=120)
    try:
        assert f"engine {remote.url} (its own data root" in srv.output(), srv.output()
        c = srv.client()
        assert [(e["name"], e["own_data_root"], len(e["workers"])) for e in c.engines()] == [
            ("home", False, 1), (remote.url, True, 1)]
        ds = c.upload_dataset(EXAMPLE)
        common = {**FAST, "dataset_id": ds["id"], "model_name": "models/tiny2", "max_steps": 2,
                  "chat_template": "chatml"}
        box = c.create_job(name="on the box", engine=remote.url, quantization=["Q8_0"], **common)
        home = c.create_job(name="at home", engine="home", **common)
        ends = {j["id"]: c.wait(j["id"], timeout=900, poll_s=0.5) for j in (box, home)}
        for job_id, end in ends.items():
            assert end["status"] == "completed", (end, c.logs(job_id, tail=30))
        assert c.get_job(box["id"])["engine"] == remote.url and c.get_job(home["id"])["engine"] == "home"

        sent = [line for line in c.logs(box["id"]).splitlines() if line.startswith("sent to the engine: ")]
        assert sent and ds["path"] in sent[0] and "models/tiny2/config.json" in sent[0], sent
        assert remote.read(ds["path"]) == (root / ds["path"]).read_bytes()
        assert remote.read("models/tiny2/model.safetensors") == (root / "models/tiny2/model.safetensors").read_bytes()

        name = f"job-{box['id']}"
        run = root / "outputs" / name
        gguf = f"gguf/{name}-Q8_0.gguf"
        assert (run / gguf).read_bytes() == remote.read(f"outputs/{name}/{gguf}")
        assert json.loads((run / "kolo.json").read_text())["status"] == "finished"
        assert (run / "model" / "model.safetensors").is_file() and not (run / "checkpoints").exists()
        assert remote.read(f"outputs/{name}/checkpoints/checkpoint-2/trainer_state.json")  # they stay on the box
        got = c.download_model(box["id"], tmp_path / "q8.gguf", file=gguf)
        assert got.read_bytes() == (run / gguf).read_bytes()
        # the home job ran here, on this data root, and nothing of it went to the box
        assert (root / "outputs" / f"job-{home['id']}" / "kolo.json").is_file()
        gone = _docker(remote.url, "exec", remote.env["KOLO_CONTAINER"], "test", "-e",
                       f"/var/kolo_data/outputs/job-{home['id']}")
        assert gone.returncode == 1
    finally:
        srv.stop()
