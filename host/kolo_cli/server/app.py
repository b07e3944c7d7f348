"""The FastAPI application of ``kolo serve``: configuration, the API key, error shapes, and the pieces wired together.

Every ``/api/v1`` route but ``/health`` needs ``Authorization: Bearer <key>``. The dashboard (``/``) uses the
same key, given once on its login page and kept in an HttpOnly, SameSite=Strict cookie, so another site can
neither read it nor make the browser send it. No CORS middleware: browsers keep other origins out.

Errors are JSON ``{"detail": "one line", "problems": ["...", ...]}``: the same messages the CLI prints.
"""

from __future__ import annotations

import hmac
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import db
from .events import Broker

#: Default upload limit (``kolo serve --max-upload``).
DEFAULT_MAX_UPLOAD = 2 << 30
COOKIE = "kolo_key"


@dataclass
class ServerConfig:
    data_root: Path
    runtime: str = "local"
    container: str = "kolo"
    workers: int = 1
    max_upload: int = DEFAULT_MAX_UPLOAD
    debug: bool = False
    gpus: Optional[list[Optional[str]]] = None  # worker i -> its CUDA_VISIBLE_DEVICES (worker.assign_gpus)
    jobs: bool = True  # False: no job worker (kolo chat --web; a kolo serve may own the jobs)
    slots: Optional[list[Any]] = None  # worker i -> its worker.Slot (engine + GPUs); None: ``gpus`` at home

    @property
    def server_dir(self) -> Path:
        return self.data_root / "server"

    @property
    def key_path(self) -> Path:
        return self.server_dir / "api_key"


class ApiError(HTTPException):
    """An error with every problem listed (the shape of every error this server returns)."""

    def __init__(self, status: int, detail: str, problems: list[str] | None = None, headers: Any = None):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.problems = problems or []


def read_key(cfg: ServerConfig) -> str | None:
    try:
        return cfg.key_path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def create_key(cfg: ServerConfig) -> str:
    """A new random key, written with mode 0600 (only this user can read it); never overwrites one."""
    import os

    cfg.server_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(cfg.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    return key


async def require_key(request: Request) -> None:
    """The API's guard: the Bearer key in the Authorization header (or the dashboard's cookie). Async: it does no
    I/O, and a sync dependency would cost every request a trip through the thread pool."""
    key = request.app.state.key
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(COOKIE)
    hint = {"WWW-Authenticate": "Bearer"}
    if not given:
        raise ApiError(401, "missing API key: send the header `Authorization: Bearer <key>` "
                            "(`kolo serve --show-key` prints the key)", headers=hint)
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "wrong API key (`kolo serve --show-key` prints the right one)", headers=hint)


def _error_body(detail: str, problems: list[str]) -> dict[str, Any]:
    return {"detail": detail, "problems": problems}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        problems = getattr(exc, "problems", [])
        return JSONResponse(_error_body(str(exc.detail), problems), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                    for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return JSONResponse(_error_body("the body is not valid JSON", problems), status_code=400)
        return JSONResponse(_error_body(f"{len(problems)} problem(s) with the request", problems), status_code=422)


def create_app(cfg: ServerConfig, key: str) -> FastAPI:
    """The app for the data root in ``cfg``; the worker threads start and stop with it (lifespan)."""
    from ..state import STATE
    from .worker import Worker

    STATE.data_root = cfg.data_root  # CLI checks the routes reuse (kolo rag build's) read the data root from STATE
    engine = db.open_db(cfg.server_dir / "kolo.db")
    broker = Broker()
    worker = Worker(engine, cfg.data_root, cfg.runtime, cfg.container, cfg.workers, broker.publish, cfg.debug,
                    gpus=cfg.gpus, slots=cfg.slots)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker.bind()
        if cfg.jobs:
            worker.start()
        try:
            yield
        finally:
            worker.shutdown()

    app = FastAPI(title="kolo Training Manager", version=_version(), lifespan=lifespan,
                  description="Upload datasets, fine-tune, watch, download and deploy models with kolo.")
    app.state.cfg, app.state.key, app.state.engine = cfg, key, engine
    app.state.broker, app.state.worker = broker, worker
    _install_error_handlers(app)

    @app.get("/api/v1/health", tags=["server"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": _version()}

    from . import routes_artifacts, routes_datasets, routes_jobs, routes_rag, web

    for module in (routes_datasets, routes_jobs, routes_artifacts, routes_rag):
        app.include_router(module.router, prefix="/api/v1", dependencies=[Depends(require_key)])
    web.mount(app)
    from . import routes_chat

    app.include_router(routes_chat.router)  # the chat page + its API (kolo chat --web serves this app)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kolo-cli")
    except PackageNotFoundError:
        return "unknown"
