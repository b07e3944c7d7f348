"""`kolo serve` performance (issue 13), each figure next to its baseline, measured in one run on this machine.

1. upload: a 1 GiB file sent with curl (multipart) to POST /api/v1/datasets, next to curl PUTting the same bytes to a
   plain Python http.server handler that writes the body to a file (the simplest static-file receiver). Two kolo
   figures: the streaming alone (a `.bin` name, refused with 415 only after every byte reached the disk) and a
   valid 1 GiB JSONL including kolo's data check. Server RSS growth: VmHWM (peak, reset through clear_refs just
   before) minus VmRSS before. Goal: growth < 64 MiB, streaming >= 0.8x the baseline's speed.
2. status: 50 concurrent clients GET /jobs/{id}/status while a job trains on the tiny model (2000 requests);
   baseline: the same load on /health (no database). Goal: p99 <= 25 ms.
3. sse: 20 clients on /jobs/{id}/events while the job trains; latency = the client's receive time minus the
   mtime of the trainer's train_log.jsonl line for that step (written just before the trainer prints the event;
   kernel file times are coarse, a few ms, which can only make the figure larger). Goal: within 100 ms.

    .venv/bin/python bench/serve_perf.py                 # all three
    .venv/bin/python bench/serve_perf.py --only status --json
The load generator runs on the same 2 cores as the server and the trainer: its own time is in every latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
KOLO = str(Path(sys.executable).parent / "kolo")
GIB = 1 << 30
QA = [{"messages": [{"role": "user", "content": f"Question number {i}?"},
                    {"role": "assistant", "content": f"Answer number {i}."}]} for i in range(8)]
JOB = {"name": "bench", "training_type": "standard", "model_name": "models/tiny", "epochs": 5000,
       "batch_size": 4, "learning_rate": 0.002, "logging_steps": 1, "save_steps": 100000, "max_seq_length": 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A `kolo serve` on a fresh data root holding the tiny model."""

    def __init__(self, work: Path):
        self.root = work / "kolo_data"
        subprocess.run([sys.executable, "-m", "kolo_trainer", "make-tiny-model", "--data-root", str(self.root),
                        "--name", "tiny"], check=True, capture_output=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "serve.log", "w")
        self.proc = subprocess.Popen([KOLO, "--runtime", "local", "--data-root", str(self.root), "serve", "--port",
                                      str(self.port), "--max-upload", "4G"], stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(600):
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.key = (self.root / "server" / "api_key").read_text().strip()
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def start_job(self, work: Path) -> int:
        data = work / "qa.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in QA))
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=60) as h:
            ds = h.post("/api/v1/datasets", files={"file": ("qa.jsonl", data.read_bytes())})
            ds.raise_for_status()
            job = h.post("/api/v1/jobs/", json={**JOB, "dataset_id": ds.json()["id"]}).json()
            while (h.get(f"/api/v1/jobs/{job['id']}/status").json().get("step") or 0) < 2:
                time.sleep(0.2)
        return int(job["id"])

    def rss(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ------------------------------------------------------------------------------------------------- upload
def make_jsonl(path: Path, size: int) -> None:
    """Distinct valid rows (repeated rows would each be reported as a duplicate: a different benchmark)."""
    with open(path, "w", encoding="utf-8") as f:
        written, i = 0, 0
        while written < size:
            rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i + k}: what is it?"},
                                                    {"role": "assistant", "content": f"It is answer {i + k}."}]})
                           + "\n" for k in range(1000))
            f.write(rows)
            written += len(rows)
            i += 1000


def put_server(dest: Path) -> ThreadingHTTPServer:
    class Put(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_PUT(self) -> None:
            left = int(self.headers["Content-Length"])
            with open(dest, "wb") as f:
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    f.write(chunk)
                    left -= len(chunk)
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Put)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def curl(argv: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *argv], capture_output=True, text=True)
    return time.perf_counter() - t0, r.stdout


def bench_upload(srv: Served, work: Path, size: int) -> dict:
    src = work / "big.jsonl"
    make_jsonl(src, size)
    size = src.stat().st_size
    os.sync()
    base = put_server(work / "baseline.out")
    t_base, code_base = curl(["-T", str(src), f"http://127.0.0.1:{base.server_address[1]}/big.jsonl"])
    base.shutdown()
    (work / "baseline.out").unlink()
    out = {"bytes": size, "baseline_s": round(t_base, 2), "baseline_status": code_base}
    auth = ["-H", f"Authorization: Bearer {srv.key}"]
    for label, name in (("stream", "big.bin"), ("with_check", "big.jsonl")):
        before = srv.rss("VmRSS")
        Path(f"/proc/{srv.proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        t, code = curl([*auth, "-F", f"file=@{src};filename={name}", srv.url + "/api/v1/datasets"])
        out[label] = {"seconds": round(t, 2), "status": code, "rss_growth_mib": round(
            (srv.rss("VmHWM") - before) / (1 << 20), 1), "speed_vs_baseline": round(t_base / t, 2)}
    src.unlink()
    return out


# ------------------------------------------------------------------------------------------------- status
async def hammer(url: str, headers: dict, clients: int, each: int, period_s: float = 0.0) -> list[float]:
    """``clients`` concurrent clients, ``each`` requests apiece: back to back (period 0: saturation, latency is
    mostly queueing) or one every ``period_s`` (a dashboard or script polling), starts spread over one period."""
    lat: list[float] = []
    async with httpx.AsyncClient(headers=headers, timeout=30,
                                 limits=httpx.Limits(max_connections=clients)) as c:
        async def one(i: int) -> None:
            await asyncio.sleep(period_s * i / clients)
            for _ in range(each):
                t0 = time.perf_counter()
                r = await c.get(url)
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                await asyncio.sleep(max(0.0, period_s - (time.perf_counter() - t0)))
        await asyncio.gather(*(one(i) for i in range(clients)))
    return lat


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def summary_ms(lat: list[float]) -> dict:
    return {"n": len(lat), "p50_ms": round(pct(lat, 50) * 1000, 1), "p99_ms": round(pct(lat, 99) * 1000, 1),
            "max_ms": round(max(lat) * 1000, 1)}


def bench_status(srv: Served, job: int) -> dict:
    status_url, health_url = f"{srv.url}/api/v1/jobs/{job}/status", srv.url + "/api/v1/health"
    out = {}
    for label, period in (("polling_1s", 1.0), ("saturated", 0.0)):
        t0 = time.perf_counter()
        status = asyncio.run(hammer(status_url, srv.headers, 50, 20, period))
        wall = time.perf_counter() - t0
        health = asyncio.run(hammer(health_url, srv.headers, 50, 20, period))
        out[label] = {"status": {**summary_ms(status), "req_per_s": round(len(status) / wall, 1)},
                      "baseline_health": summary_ms(health)}
    out["job_status_after"] = httpx.get(status_url, headers=srv.headers).json()["status"]
    return out


# ------------------------------------------------------------------------------------------------- sse
def watch_log(path: Path, stamps: dict, stop: threading.Event) -> None:
    """step -> mtime (ns) of the train_log.jsonl line for it, read as soon as the line appears."""
    seen = 0
    while not stop.is_set():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            time.sleep(0.002)
            continue
        if st.st_size > seen:
            with open(path, "rb") as f:
                f.seek(seen)
                chunk = f.read()
            for line in chunk.splitlines():
                try:
                    stamps.setdefault(json.loads(line)["step"], st.st_mtime_ns)
                except (ValueError, KeyError):
                    pass
            seen += len(chunk)
        time.sleep(0.002)


async def listen(url: str, headers: dict, got: list, until: float) -> None:
    async with httpx.AsyncClient(headers=headers, timeout=None) as c:
        async with c.stream("GET", url) as r:
            event = None
            async for line in r.aiter_lines():
                now = time.time_ns()
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "progress":
                    got.append((json.loads(line[6:]).get("step"), now))
                if time.monotonic() > until:
                    return


def bench_sse(srv: Served, job: int, seconds: float) -> dict:
    log = srv.root / "outputs" / f"job-{job}" / "train_log.jsonl"
    stamps: dict = {}
    stop = threading.Event()
    threading.Thread(target=watch_log, args=(log, stamps, stop), daemon=True).start()
    got: list[list] = [[] for _ in range(20)]

    async def all_clients() -> None:
        until = time.monotonic() + seconds
        # a client connecting late replays history; only events created after all are connected count
        await asyncio.gather(*(listen(f"{srv.url}/api/v1/jobs/{job}/events", srv.headers, g, until) for g in got))

    start = time.time_ns() + 2_000_000_000
    asyncio.run(all_clients())
    stop.set()
    lat = [(t - stamps[s]) / 1e9 for g in got for s, t in g if s in stamps and stamps[s] > start]
    return {"clients": 20, "events_per_client": len(lat) // 20 if lat else 0, **summary_ms(lat),
            "within_100ms": round(sum(x <= 0.1 for x in lat) / len(lat), 3) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["upload", "status", "sse"], action="append")
    ap.add_argument("--upload-gib", type=float, default=1.0)
    ap.add_argument("--sse-seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if shutil.which("curl") is None:
        return print("curl is needed (apt-get install curl)", file=sys.stderr) or 1
    which = a.only or ["upload", "status", "sse"]
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="kolo-serve-bench-") as tmp:
        work = Path(tmp)
        srv = Served(work)
        try:
            if "upload" in which:
                results["upload"] = bench_upload(srv, work, int(a.upload_gib * GIB))
            if "status" in which or "sse" in which:
                job = srv.start_job(work)
                if "status" in which:
                    results["status"] = bench_status(srv, job)
                if "sse" in which:
                    results["sse"] = bench_sse(srv, job, a.sse_seconds)
        finally:
            srv.stop()
    results["machine"]["load_1m_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
