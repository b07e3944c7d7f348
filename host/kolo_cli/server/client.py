"""A small Python client for the Training Manager's REST API (httpx only; no server packages needed).

    from kolo_cli.server.client import TrainerClient
    c = TrainerClient("http://127.0.0.1:8000", api_key)
    ds = c.upload_dataset("chats.jsonl")
    job = c.create_job(name="first", training_type="lora", model_name="unsloth/Llama-3.2-1B-Instruct",
                       dataset_id=ds["id"], epochs=3, quantization=["Q4_K_M"])
    print(c.wait(job["id"]))            # the final status: completed, failed, cancelled or interrupted
    c.download_model(job["id"], "my-model.tar.gz")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx

FINAL = ("completed", "failed", "cancelled", "interrupted")


class TrainerError(Exception):
    """The server refused a request: ``status`` (HTTP), ``detail`` (one line), ``problems`` (every one)."""

    def __init__(self, status: int, detail: str, problems: list[str]):
        super().__init__(f"HTTP {status}: {detail}" + "".join(f"\n  {p}" for p in problems))
        self.status, self.detail, self.problems = status, detail, problems


class TrainerClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: Optional[str] = None,
                 timeout: float = 120.0):
        key = api_key or os.environ.get("KOLO_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "TrainerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, "/api/v1" + path, **kw)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text[:300]}
            raise TrainerError(r.status_code, str(body.get("detail")), list(body.get("problems") or []))
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

    # ------------------------------------------------------------------------------------------- datasets
    def upload_dataset(self, path: str | os.PathLike, name: Optional[str] = None) -> dict[str, Any]:
        p = Path(path)
        with open(p, "rb") as f:
            return self._call("POST", "/datasets", files={"file": (p.name, f)},
                              data={"name": name} if name else None)

    def datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/datasets")

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        return self._call("GET", f"/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/datasets/{dataset_id}")

    # ------------------------------------------------------------------------------------------- jobs
    def create_job(self, **fields: Any) -> dict[str, Any]:
        return self._call("POST", "/jobs/", json=fields)

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/jobs/")

    def engines(self) -> list[dict[str, Any]]:
        """The Docker engines the server runs jobs on (``kolo serve --engine``), with their workers' GPUs."""
        return self._call("GET", "/engines")

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def get_status(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/status")

    def logs(self, job_id: int, tail: Optional[int] = None) -> str:
        return self._call("GET", f"/jobs/{job_id}/logs", params={"tail": tail} if tail is not None else None)

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def resume(self, job_id: int) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/resume")

    def export(self, job_id: int, quantizations: list[str]) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/export", json={"quantizations": quantizations})

    def deploy_ollama(self, job_id: int, name: str, quantization: str = "Q4_K_M",
                      ollama_url: Optional[str] = None) -> dict[str, Any]:
        body = {"name": name, "quantization": quantization, **({"ollama_url": ollama_url} if ollama_url else {})}
        return self._call("POST", f"/jobs/{job_id}/deploy/ollama", json=body)

    def deploy_lmstudio(self, job_id: int, quantization: str = "Q4_K_M",
                        models_dir: Optional[str] = None) -> dict[str, Any]:
        body = {"quantization": quantization, **({"models_dir": models_dir} if models_dir else {})}
        return self._call("POST", f"/jobs/{job_id}/deploy/lmstudio", json=body)

    def wait(self, job_id: int, timeout: float = 3600.0, poll_s: float = 1.0) -> dict[str, Any]:
        """Poll the status until the job is in a final state; returns that status (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_status(job_id)
            if status["status"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout:g}s")
            time.sleep(poll_s)

    def events(self, job_id: int, last_event_id: Optional[int] = None) -> Iterator[dict[str, Any]]:
        """The job's Server-Sent Events as dicts ``{id, event, data}``; ends after the final status."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        with self.http.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, timeout=None) as r:
            if r.status_code >= 400:
                r.read()
                raise TrainerError(r.status_code, r.text[:300], [])
            msg: dict[str, Any] = {}
            for line in r.iter_lines():
                if not line:
                    if "data" in msg:
                        msg["data"] = json.loads(msg["data"])
                        yield msg
                    msg = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "data":  # several data lines join with newlines (the SSE rule)
                        msg["data"] = msg["data"] + "\n" + value if "data" in msg else value
                    else:
                        msg[field] = int(value) if field == "id" else value

    def download_model(self, job_id: int, dest: str | os.PathLike, file: Optional[str] = None) -> Path:
        """Stream the run's .tar.gz (or one ``file`` such as ``gguf/NAME``) to ``dest``; returns ``dest``."""
        dest = Path(dest)
        params = {"file": file} if file else None
        with self.http.stream("GET", f"/api/v1/jobs/{job_id}/download", params=params, timeout=None) as r:
            if r.status_code >= 400:
                body = json.loads(r.read() or b"{}")
                raise TrainerError(r.status_code, str(body.get("detail")), list(body.get("problems") or []))
            tmp = dest.with_name(dest.name + ".part")
            with open(tmp, "wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
            os.replace(tmp, dest)
        return dest
