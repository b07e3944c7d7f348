"""What a finished job gives: its run as a streamed .tar.gz (or one file), and deploys to Ollama / LM Studio through
the CLI's own install functions (``kolo_cli.commands.ollama``: ``install_ollama`` and ``place_lmstudio``, the same
upload, Modelfile, smoke test and placement), which return their result.
"""

from __future__ import annotations

import io
import queue
import tarfile
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from . import db
from .app import ApiError
from .routes_jobs import json_body, load_job

router = APIRouter(tags=["artifacts"])

CHUNK = 1 << 20


def run_files(run_dir: Path) -> list[tuple[Path, str]]:
    """(path, name in the archive) of every file of the run a copy carries (``Run.portable_files``)."""
    from kolo_trainer.runfolder import DataRoot

    run = DataRoot(run_dir.parent.parent).run(run_dir.name)
    return [(run_dir / rel, f"{run_dir.name}/{rel}") for rel in run.portable_files()]


class _Pipe(io.RawIOBase):
    """A write-only file whose bytes go to a bounded queue: tarfile writes, the response reads (backpressure)."""

    def __init__(self, q: "queue.Queue[Optional[bytes]]", gone: threading.Event):
        self.q, self.gone = q, gone

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        while True:
            try:
                self.q.put(data, timeout=1.0)
                return len(data)
            except queue.Full:
                if self.gone.is_set():  # the client went away: end the writer thread instead of blocking forever
                    raise BrokenPipeError("download cancelled by the client") from None


def stream_tar(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    q: "queue.Queue[Optional[bytes]]" = queue.Queue(maxsize=16)
    gone = threading.Event()

    def produce() -> None:
        out = io.BufferedWriter(_Pipe(q, gone), CHUNK)
        try:
            with tarfile.open(fileobj=out, mode="w|gz") as tar:
                for path, arcname in files:
                    tar.add(path, arcname=arcname, recursive=False)
            out.flush()  # tarfile does not close a file it was given: the gzip trailer is still buffered
        except BrokenPipeError:
            return
        finally:
            if not gone.is_set():
                q.put(None)

    threading.Thread(target=produce, daemon=True).start()
    try:
        while (chunk := q.get()) is not None:
            yield chunk
    finally:
        gone.set()


def _run_dir(request: Request, job_id: int) -> tuple[Any, Path]:
    job = load_job(request, job_id)
    run_dir = request.app.state.cfg.data_root / "outputs" / job.output_dir
    if run_dir.is_symlink() or not ((run_dir / "kolo.json").is_file() or (run_dir / "rag").is_dir()):
        raise ApiError(409, f"job {job_id} ({job.status}) has no run folder yet; download it once it completed")
    return job, run_dir


@router.get("/jobs/{job_id}/download")
def download(job_id: int, request: Request, file: Optional[str] = None) -> Any:
    """The run as a streamed .tar.gz (model or adapter, tokenizer, GGUFs, Modelfiles, kolo.json, loss.png), or
    with ``?file=gguf/NAME`` that one file."""
    job, run_dir = _run_dir(request, job_id)
    files = run_files(run_dir)
    if file is not None:
        wanted = f"{run_dir.name}/{file}"
        match = [p for p, arc in files if arc == wanted]
        if not match:
            raise ApiError(404, f"job {job_id} has no file {file!r}; files: "
                                + ", ".join(arc.split("/", 1)[1] for _, arc in files[:30]))
        return FileResponse(match[0], filename=match[0].name)
    headers = {"Content-Disposition": f'attachment; filename="{run_dir.name}.tar.gz"'}
    return StreamingResponse(stream_tar(files), media_type="application/gzip", headers=headers)


# ------------------------------------------------------------------------------------------------- deploy
def _deploy_error(e: Any) -> ApiError:
    from ..ollama_client import OllamaUnreachable

    if isinstance(e, OllamaUnreachable):  # the CLI's hint names --ollama; the API's field is ollama_url
        return ApiError(502, f"{e.message}: start Ollama, or send its address as ollama_url")
    return ApiError(422, e.message + (f" ({e.hint})" if e.hint else ""))


def _completed(request: Request, job_id: int) -> Any:
    job = load_job(request, job_id)
    if job.status != db.COMPLETED:
        raise ApiError(409, f"job {job_id} is {job.status}; deploy a completed job")
    return job


@router.post("/jobs/{job_id}/deploy/ollama")
async def deploy_ollama(job_id: int, request: Request) -> dict[str, Any]:
    """``{name, quantization, ollama_url?}``: kolo's Ollama install (upload, create, smoke test)."""
    return await do_deploy_ollama(request, job_id, await json_body(request))


async def do_deploy_ollama(request: Request, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
    from kolo_trainer.errors import KoloError

    from ..commands.ollama import install_ollama

    job = await run_in_threadpool(_completed, request, job_id)
    name, quant, url = body.get("name"), body.get("quantization", "Q4_K_M"), body.get("ollama_url")
    if not isinstance(name, str) or not isinstance(quant, str) or not (url is None or isinstance(url, str)):
        raise ApiError(422, "give name (string), quantization (string) and optionally ollama_url (string)")
    try:
        done = await run_in_threadpool(install_ollama, name, job.output_dir, quant, url, 256,
                                       request.app.state.cfg.data_root)
    except KoloError as e:
        raise _deploy_error(e) from None
    return {"installed": done.name, "quantization": done.quantization, "reply": done.reply, "url": done.url,
            "log": "\n".join(done.log)}


@router.post("/jobs/{job_id}/deploy/lmstudio")
async def deploy_lmstudio(job_id: int, request: Request) -> dict[str, Any]:
    """``{quantization, models_dir?}``: kolo's LM Studio placement (hard link, else copy)."""
    return await do_deploy_lmstudio(request, job_id, await json_body(request))


async def do_deploy_lmstudio(request: Request, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
    from kolo_trainer.errors import KoloError

    from ..commands.ollama import place_lmstudio

    job = await run_in_threadpool(_completed, request, job_id)
    quant, models_dir = body.get("quantization", "Q4_K_M"), body.get("models_dir")
    if not isinstance(quant, str) or not (models_dir is None or isinstance(models_dir, str)):
        raise ApiError(422, "give quantization (string) and optionally models_dir (string)")
    try:
        done = await run_in_threadpool(place_lmstudio, job.output_dir, quant,
                                       Path(models_dir) if models_dir else None, "kolo",
                                       request.app.state.cfg.data_root)
    except KoloError as e:
        raise _deploy_error(e) from None
    return {"placed": str(done.path), "how": done.how, "quantization": done.quantization}
