"""Jobs end to end through a real `kolo serve`: real uvicorn on 127.0.0.1, a real SQLite file, real trainer
processes on the tiny model (local runtime), driven with the shipped Python client.

Ollama cannot run here (no binary in any reachable registry): the deploy test installs into the stand-in Ollama
HTTP server of tests/unit/host/test_ollama_client.py, and also points at a port where nothing listens (the real
failure a user meets).
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest
from server_helpers import FAST

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "host"))
from test_ollama_client import StandInOllama  # noqa: E402  (the one stand-in Ollama of the test suite)

from kolo_cli.server.client import TrainerError
from kolo_cli.server.routes_jobs import STATUS_FIELDS

pytestmark = [pytest.mark.server, pytest.mark.e2e, pytest.mark.slow]


def upload(client, root: Path) -> int:
    return client.upload_dataset(root / "data" / "qa.jsonl", name="qa")["id"]


def trainer_pids(root: Path) -> list[int]:
    """Live processes whose command line names this data root (a trainer of this test's server)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and b"kolo_trainer" in cmd and str(root).encode() in b" ".join(cmd):
            out.append(int(d))
    return out


def wait_step(client, job_id: int, step: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.get_status(job_id)
        if st["status"] in ("completed", "failed", "cancelled", "interrupted"):
            raise AssertionError(f"job ended before step {step}: {st}")
        if (st["step"] or 0) >= step:
            return st
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach step {step} in {timeout}s")


def test_upload_train_export_download_deploy(serve, root: Path, tmp_path: Path) -> None:
    srv = serve()
    c = srv.client()
    ds = upload(c, root)
    job = c.create_job(name="first", dataset_id=ds, epochs=2, quantization=["Q8_0"], **FAST)
    assert job["status"] == "queued" and job["output_dir"] == f"job-{job['id']}"
    final = c.wait(job["id"], timeout=600, poll_s=0.5)
    assert final["status"] == "completed", (final, c.logs(job["id"], tail=40))
    assert final["step"] == final["total_steps"] == 4 and final["loss"] is not None
    whole = c.get_job(job["id"])  # the polled status route (its own query) says what the job row says
    assert c.get_status(job["id"]) == {k: whole[k] for k in STATUS_FIELDS} == {k: final[k] for k in STATUS_FIELDS}

    events = list(c.events(job["id"]))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and events[-1]["data"]["status"] == "completed"
    assert "progress" in kinds and {"stage"} <= set(kinds)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    middle = events[len(events) // 2]["id"]
    assert list(c.events(job["id"], last_event_id=middle)) == [e for e in events if e["id"] > middle]

    archive = c.download_model(job["id"], tmp_path / "model.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    run = f"job-{job['id']}"
    assert f"{run}/kolo.json" in names and f"{run}/model/config.json" in names
    assert f"{run}/gguf/{run}-Q8_0.gguf" in names and f"{run}/gguf/Modelfile.Q8_0" in names
    assert not [n for n in names if "/checkpoints/" in n or n.endswith(".lock")]
    one = c.download_model(job["id"], tmp_path / "Modelfile", file="gguf/Modelfile.Q8_0")
    assert one.read_bytes() == (root / "outputs" / run / "gguf" / "Modelfile.Q8_0").read_bytes()

    placed = c.deploy_lmstudio(job["id"], quantization="q8_0", models_dir=str(tmp_path / "lms"))
    assert Path(placed["placed"]).is_file() and placed["how"] in ("linked", "copied")
    with pytest.raises(TrainerError) as e:
        c.deploy_ollama(job["id"], name="first", quantization="Q8_0", ollama_url="http://127.0.0.1:9")
    assert e.value.status == 502 and "no Ollama server answers" in e.value.detail
    ollama = StandInOllama()
    ollama.thread.start()
    try:
        done = c.deploy_ollama(job["id"], name="first", quantization="Q8_0", ollama_url=ollama.url)
    finally:
        ollama.server.shutdown()
    assert done["reply"] == ollama.reply and "first:latest" in ollama.models
    assert done["url"] == ollama.url and "creating 'first'" in done["log"]  # install_ollama's result, not stdout
    gguf = (root / "outputs" / run / "gguf" / f"{run}-Q8_0.gguf").read_bytes()
    assert list(ollama.blobs.values()) == [gguf]


def test_cancel_mid_run_stops_the_trainer(serve, root: Path) -> None:
    srv = serve("--gpus", "0")  # worker 0 pinned to "GPU 0": no GPU here, so the trainer still runs on the CPU
    c = srv.client()
    job = c.create_job(name="long", dataset_id=upload(c, root), epochs=1000, **FAST)
    wait_step(c, job["id"], 3)
    pids = trainer_pids(root)
    assert pids, "no trainer process found while the job runs"
    # the pin reached the real trainer process (its environment, as the kernel holds it)
    assert all(b"CUDA_VISIBLE_DEVICES=0" in Path(f"/proc/{p}/environ").read_bytes().split(b"\0") for p in pids)
    assert "kolo serve worker 0: engine home CUDA_VISIBLE_DEVICES=0" in c.logs(job["id"])
    with pytest.raises(TrainerError) as e:
        c.delete_dataset(job["dataset_id"])
    assert e.value.status == 409 and f"used by job(s) {job['id']}" in e.value.detail
    done = c.cancel(job["id"])
    assert done["status"] == "cancelled"
    assert trainer_pids(root) == []
    stored = root / c.dataset(job["dataset_id"])["path"]
    assert stored.is_file() and c.delete_dataset(job["dataset_id"]) == {"deleted": job["dataset_id"]}
    assert not stored.exists() and c.datasets() == []
    assert c.get_status(job["id"])["status"] == "cancelled"
    with pytest.raises(TrainerError) as e:
        c.cancel(job["id"])
    assert e.value.status == 409


def test_server_sigkilled_mid_job_then_interrupted_then_resumed(serve, root: Path) -> None:
    srv = serve()
    c = srv.client()
    job = c.create_job(name="crash", dataset_id=upload(c, root), epochs=1000, max_steps=40, save_steps=5, **FAST)
    wait_step(c, job["id"], 6)
    srv.kill()
    deadline = time.monotonic() + 60
    while trainer_pids(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert trainer_pids(root) == [], "the trainer outlived its server"
    again = serve(root=root)
    c = again.client()
    assert c.get_status(job["id"])["status"] == "interrupted"
    c.resume(job["id"])
    final = c.wait(job["id"], timeout=600, poll_s=0.5)
    assert final["status"] == "completed", (final, c.logs(job["id"], tail=40))
    assert final["step"] == 40
    manifest = json.loads((root / "outputs" / f"job-{job['id']}" / "kolo.json").read_text())
    assert (manifest.get("resumed_from") or "").startswith("checkpoints/checkpoint-"), manifest.get("resumed_from")


def test_two_jobs_on_one_worker_run_one_after_the_other(serve, root: Path) -> None:
    srv = serve()
    c = srv.client()
    ds = upload(c, root)
    a = c.create_job(name="a", dataset_id=ds, epochs=2, **FAST)
    b = c.create_job(name="b", dataset_id=ds, epochs=2, **FAST)
    seen = set()
    while True:
        sa, sb = c.get_status(a["id"])["status"], c.get_status(b["id"])["status"]
        seen.add((sa, sb))
        assert not (sa == "running" and sb == "running")
        if sa in ("completed", "failed") and sb in ("completed", "failed"):
            break
        time.sleep(0.1)
    ja, jb = c.get_job(a["id"]), c.get_job(b["id"])
    assert ja["status"] == jb["status"] == "completed", (ja, jb)
    assert ("running", "queued") in seen
    assert jb["started"] >= ja["finished"]


def test_rag_job_builds_an_index_of_the_dataset(serve, root: Path, tmp_path: Path) -> None:
    """training_type rag runs `kolo rag build job-<id> --source <the dataset>` (shipped MiniLM, FAISS, offline)."""
    pytest.importorskip("faiss", reason="the rag extra (scripts/install.sh installs it)")
    srv = serve()
    c = srv.client()
    job = c.create_job(name="index", training_type="rag", dataset_id=upload(c, root), chunk_tokens=64, overlap=8)
    final = c.wait(job["id"], timeout=600, poll_s=0.5)
    assert final["status"] == "completed", (final, c.logs(job["id"], tail=40))
    with tarfile.open(c.download_model(job["id"], tmp_path / "index.tar.gz")) as tar:
        names = tar.getnames()
    run = f"job-{job['id']}"
    assert f"{run}/rag/vector_index.faiss" in names and f"{run}/rag/documents.json" in names
    docs = json.loads((root / "outputs" / run / "rag" / "documents.json").read_text())
    assert any("The sky is blue." in d for d in docs)
