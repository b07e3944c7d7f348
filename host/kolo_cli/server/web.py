"""The dashboard at ``/``: server-rendered Jinja2 pages over the same functions as the API; htmx only adds the live
parts (the jobs table refreshing, the job page following its Server-Sent Events). Every page works without
JavaScript: forms post, pages render the current state from the database, a reload shows the same progress.

The browser proves the API key once (login page); it is kept in an HttpOnly, SameSite=Strict cookie, which the
API's guard also accepts (so the dashboard's SSE stream and download link need nothing else).
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, select

from . import db
from .app import COOKIE, ApiError

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
#: Job form fields that are not TrainOptions (or are decided by the server).
HIDDEN = {"train_data", "output_dir", "resume", "overwrite", "base_model"}


class LoginRequired(Exception):
    pass


def _authed(request: Request) -> None:
    given = request.cookies.get(COOKIE) or ""
    if not hmac.compare_digest(given.encode(), request.app.state.key.encode()):
        raise LoginRequired()


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status)


# ------------------------------------------------------------------------------------------------- login
def _next(value: Any) -> str:
    """Where to go after logging in: a path of this server only (never another site: ``//host`` is refused)."""
    v = str(value or "")
    return v if v.startswith("/") and not v.startswith("//") and "\\" not in v else "/jobs"


@router.get("/login")
def login_form(request: Request, next: str = "/jobs") -> HTMLResponse:
    return page(request, "login.html", error=None, next=_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    key = str(form.get("key") or "").strip()
    if not hmac.compare_digest(key.encode(), request.app.state.key.encode()):
        return page(request, "login.html", 401, error="wrong key (`kolo serve --show-key` prints it)",
                    next=_next(form.get("next")))
    resp = RedirectResponse(_next(form.get("next")), status_code=303)
    resp.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/")
    return resp


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/jobs", status_code=303)


# ------------------------------------------------------------------------------------------------- datasets
def _datasets(engine: Any) -> list[Any]:
    with Session(engine) as s:
        return list(s.exec(select(db.Dataset).order_by(db.Dataset.id)))


@router.get("/datasets")
def datasets_page(request: Request) -> HTMLResponse:
    _authed(request)
    return page(request, "datasets.html", datasets=_datasets(request.app.state.engine), result=None, error=None)


@router.post("/datasets")
async def datasets_upload(request: Request) -> HTMLResponse:
    from .routes_datasets import upload_dataset

    _authed(request)
    result, error, status = None, None, 201
    try:
        result = await upload_dataset(request)
    except ApiError as e:
        error, status = {"detail": e.detail, "problems": e.problems}, e.status_code
    return page(request, "datasets.html", status, datasets=_datasets(request.app.state.engine), result=result,
                error=error)


@router.get("/datasets/{dataset_id}")
def dataset_page(dataset_id: int, request: Request) -> HTMLResponse:
    from .routes_datasets import dataset_dict, get_dataset

    _authed(request)
    d = dataset_dict(get_dataset(request.app.state.engine, dataset_id), full=True)
    return page(request, "dataset.html", d=d)


# ------------------------------------------------------------------------------------------------- jobs
def option_fields() -> list[tuple[str, list[Any]]]:
    """The create form's option inputs, grouped, generated from the option definitions (spec.describe)."""
    from kolo_trainer import spec
    from kolo_trainer.options import TrainOptions

    groups: dict[str, list[Any]] = {}
    for info in spec.describe(TrainOptions):
        if info.name not in HIDDEN:
            groups.setdefault(info.group, []).append(info)
    return list(groups.items())


def form_to_body(form: Any) -> dict[str, Any]:
    """Only the filled-in fields, typed as their option says (an unparsable value goes through as text, so the
    option check reports it with the others)."""
    from kolo_trainer import spec
    from kolo_trainer.options import TrainOptions

    body: dict[str, Any] = {}
    for key in ("name", "description", "training_type", "model_name", "engine"):
        if str(form.get(key) or "").strip():
            body[key] = str(form.get(key)).strip()
    raw_id = str(form.get("dataset_id") or "")
    body["dataset_id"] = int(raw_id) if raw_id.isdigit() else None
    for info in spec.describe(TrainOptions):
        value = str(form.get(info.name) or "").strip()
        if info.name in HIDDEN or not value:
            continue
        body[info.name] = _typed(info.kind, value)
    return body


def _typed(kind: str, value: str) -> Any:
    try:
        if kind == "bool":
            return {"true": True, "false": False}.get(value, value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        return value
    if kind == "list":
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _jobs(engine: Any) -> list[Any]:
    with Session(engine) as s:
        return list(s.exec(select(db.Job).order_by(db.Job.id.desc())))


@router.get("/jobs")
def jobs_page(request: Request) -> HTMLResponse:
    _authed(request)
    engine = request.app.state.engine
    return page(request, "jobs.html", jobs=_jobs(engine), datasets=_datasets(engine), groups=option_fields(),
                values={}, error=None, engines=request.app.state.worker.engines())


@router.get("/ui/jobs/table")
def jobs_table(request: Request) -> HTMLResponse:
    _authed(request)
    return page(request, "jobs_table.html", jobs=_jobs(request.app.state.engine))


@router.post("/jobs")
async def jobs_create(request: Request) -> Response:
    from .routes_jobs import create

    _authed(request)
    form = await request.form()
    engine = request.app.state.engine
    try:
        job = await run_in_threadpool(create, engine, request.app.state.cfg.data_root, form_to_body(form),
                                      request.app.state.worker.engines())
    except ApiError as e:
        return page(request, "jobs.html", e.status_code, jobs=_jobs(engine), datasets=_datasets(engine),
                    groups=option_fields(), values=dict(form), error={"detail": e.detail, "problems": e.problems},
                    engines=request.app.state.worker.engines())
    request.app.state.worker.wake.set()
    return RedirectResponse(f"/jobs/{job['id']}", status_code=303)


def loss_chart(engine: Any, job_id: int, width: int = 600, height: int = 180) -> Optional[dict[str, Any]]:
    """An SVG polyline of the training loss from the job's progress events (None before the first loss)."""
    losses = []
    for ev in db.events_after(engine, job_id, 0, limit=100_000):
        if ev.kind == "progress":
            data = json.loads(ev.data)
            if data.get("stage") == "train" and data.get("loss") is not None and data.get("step") is not None:
                losses.append((float(data["step"]), float(data["loss"])))
    if not losses:
        return None
    x0, x1 = min(s for s, _ in losses), max(s for s, _ in losses)
    y0, y1 = min(v for _, v in losses), max(v for _, v in losses)
    sx = (width - 20) / ((x1 - x0) or 1)
    sy = (height - 20) / ((y1 - y0) or 1)
    points = " ".join(f"{10 + (s - x0) * sx:.1f},{height - 10 - (v - y0) * sy:.1f}" for s, v in losses)
    return {"points": points, "width": width, "height": height, "first": losses[0][1], "last": losses[-1][1],
            "n": len(losses)}


def _job_context(request: Request, job_id: int) -> dict[str, Any]:
    from .routes_jobs import job_dict, load_job

    engine = request.app.state.engine
    job = job_dict(load_job(request, job_id))
    path = request.app.state.worker.log_path(job_id)
    log = path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:] if path.is_file() else []
    return {"job": job, "chart": loss_chart(engine, job_id), "log": "\n".join(log), "final": db.FINAL}


@router.get("/jobs/{job_id}")
def job_page(job_id: int, request: Request, message: Optional[str] = None) -> HTMLResponse:
    _authed(request)
    return page(request, "job.html", **_job_context(request, job_id), message=message, error=None)


@router.get("/ui/jobs/{job_id}/live")
def job_live(job_id: int, request: Request) -> HTMLResponse:
    _authed(request)
    return page(request, "job_live.html", **_job_context(request, job_id))


@router.post("/jobs/{job_id}/{action}")
async def job_action(job_id: int, action: str, request: Request) -> Response:
    """The job page's buttons: cancel, resume, export, deploy-ollama, deploy-lmstudio."""
    from . import routes_artifacts as art
    from . import routes_jobs as rj

    _authed(request)
    form = {k: str(v).strip() for k, v in (await request.form()).items() if str(v).strip()}
    quants = form.get("quantizations", "").replace(",", " ").split()
    actions = {
        "cancel": lambda: rj.cancel_job(job_id, request),
        "resume": lambda: rj.resume_job(job_id, request),
        "export": lambda: rj.do_export(request, job_id, {"quantizations": quants}),
        "deploy-ollama": lambda: art.do_deploy_ollama(request, job_id, form),
        "deploy-lmstudio": lambda: art.do_deploy_lmstudio(request, job_id, form),
    }
    if action not in actions:
        raise ApiError(404, f"no action {action!r}")
    try:
        result = await actions[action]()
    except ApiError as e:
        ctx = _job_context(request, job_id)
        return page(request, "job.html", e.status_code, **ctx, message=None,
                    error={"detail": e.detail, "problems": e.problems})
    done = {"deploy-ollama": lambda r: f"installed in Ollama; smoke reply: {r.get('reply')}",
            "deploy-lmstudio": lambda r: f"{r.get('how')}: {r.get('placed')}"}.get(action, lambda r: f"{action}: ok")
    ctx = _job_context(request, job_id)
    return page(request, "job.html", **ctx, message=done(result), error=None)


def mount(app: Any) -> None:
    """Add the dashboard (pages, fragments, vendored static files) to ``app``."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        from urllib.parse import quote

        path = request.url.path  # back to the page asked for after logging in (the job list is the default)
        return RedirectResponse("/login" if path in ("/", "/jobs") else "/login?next=" + quote(path, safe="/"),
                                status_code=303)
