"""`kolo serve`: the Training Manager (REST API, job worker, dashboard) for the data root.

FastAPI, uvicorn and SQLModel are imported inside the verb only: `kolo --help` stays fast and light
(tests/unit/host/test_light.py), and the host works without the ``server`` extra until `kolo serve` runs.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, List, Optional

import typer

from kolo_trainer.errors import KoloError, OptionsError

from ..state import STATE

if TYPE_CHECKING:
    from kolo_trainer.runfolder import DataRoot

    from ..server.app import ServerConfig

HELP = (
    "Run the Training Manager: a REST API (OpenAPI at /docs), a job worker and a web dashboard for this data "
    "root.\n\nBound to 127.0.0.1 unless --host says otherwise; every API call needs the key printed at first start "
    "(`kolo serve --show-key` prints it again). Jobs run the same trainer as `kolo train`, with --runtime docker "
    "(in the kolo container) or --runtime local.\n\n"
    "Example: kolo serve --port 8000"
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _size(text: str) -> int:
    """``2G``, ``512M``, ``1000000`` -> bytes (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise OptionsError([f"--max-upload {text!r}: give a size such as 2G, 512M or a number of bytes"]) from None


def _gpu_list(text: str) -> list[str] | None:
    """``--gpus``: auto -> None (detect), none -> [] (unpinned), ``0,1`` -> ["0", "1"]."""
    import re

    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "auto" else []
    ids = [g.strip() for g in text.split(",")]
    bad = [g for g in ids if not re.fullmatch(r"\d+|(GPU|MIG)-[A-Za-z0-9-]+", g)]
    if bad or len(set(ids)) != len(ids):
        raise OptionsError([f"--gpus {text!r}: give auto, none, or distinct GPU indices such as 0,1 "
                            "(as `nvidia-smi -L` numbers them, or their GPU-/MIG- UUIDs)"])
    return ids


def _pin(cfg: "ServerConfig", gpus: str, engines: list[str]) -> None:
    """The workers: --workers on the server's own engine and on each --engine, each worker with GPUs of its own
    (CUDA_VISIBLE_DEVICES), detected where its jobs run unless --gpus names them."""
    from ..server.worker import HOME, Slot, assign_gpus, detect_gpus

    _distinct(engines)
    ids, source = _gpu_list(gpus), "--gpus"
    if ids is None:
        ids, source = detect_gpus(STATE.runtime, STATE.container)
    cfg.gpus = assign_gpus(ids, cfg.workers)
    _say_gpus(HOME, cfg.gpus, ids, source)
    cfg.slots = [Slot(HOME, g) for g in cfg.gpus] + [slot for spec in engines
                                                     for slot in _engine_slots(cfg, spec, gpus)]


def _distinct(engines: list[str]) -> list[str]:
    from ..server.worker import HOME

    problems = [f"--engine {e!r}: given twice" for e in sorted({e for e in engines if engines.count(e) > 1})]
    problems += [f"--engine {HOME!r}: that is the name of the server's own engine"] if HOME in engines else []
    if problems:
        raise OptionsError(problems)
    return engines


def _engine_slots(cfg: "ServerConfig", spec: str, gpus: str) -> list:
    """--workers workers on the engine ``spec`` (URL or context), whose kolo container must be running there."""
    from .. import docker_ctl
    from ..server.worker import Slot, assign_gpus, detect_gpus

    from ..errors import ContainerMissing, ContainerStopped, DockerUnavailable

    try:
        ep = docker_ctl.endpoint_for(spec)
        container = docker_ctl.require_running(STATE.container, docker_ctl.client(timeout=30, engine=ep))
    except KoloError as e:
        e.message = f"--engine {spec}: {e.message}"  # the same error (class, exit code), saying which engine
        if isinstance(e, DockerUnavailable):
            e.hint = (f"check that `docker --host {spec} info` answers from here (ssh://: key-based ssh, and your "
                      "user may use Docker there)" if "://" in spec else f"check `docker --context {spec} info`")
        elif isinstance(e, (ContainerMissing, ContainerStopped)):
            e.hint = f"start it there: kolo --{'docker-host' if '://' in spec else 'context'} {spec} up"
        raise
    remote = not docker_ctl.shares_data_root(container, cfg.data_root, ep)
    ids, source = _gpu_list(gpus), "--gpus"
    if ids is None:
        ids, source = detect_gpus("docker", STATE.container, container)
    shares = assign_gpus(ids, cfg.workers)
    _say_gpus(spec + (" (its own data root: datasets go there, runs come back)" if remote else ""), shares, ids,
              source)
    return [Slot(spec, g, ep, remote) for g in shares]


def _say_gpus(engine: str, shares: list, ids: list, source: str) -> None:
    if ids:
        print(f"engine {engine}: " + ", ".join(f"worker {i} -> CUDA_VISIBLE_DEVICES={g}" for i, g in
                                               enumerate(shares)) + f" ({source})", flush=True)
    else:
        print(f"engine {engine}: {len(shares)} worker(s), no GPU ({source}); jobs run unpinned", flush=True)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (another than loopback needs the key "
                                                          "to exist: start once on 127.0.0.1 first, or --init-key)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Jobs that run at the same time, each on GPUs "
                                                                    "of its own (see --gpus)."),
    gpus: str = typer.Option("auto", "--gpus", metavar="auto|none|0,1,...",
                             help="GPUs the workers split between them: each runs its jobs with "
                                  "CUDA_VISIBLE_DEVICES set to its own share (one GPU each when --workers equals their "
                                  "number). auto: the GPUs `nvidia-smi -L` lists where jobs run (the kolo container, "
                                  "or here with --runtime local, where a set CUDA_VISIBLE_DEVICES is kept); none: "
                                  "unpinned."),
    engine: Optional[List[str]] = typer.Option(
        None, "--engine", metavar="URL|CONTEXT",
        help="Another Docker engine that runs jobs, with --workers workers of its own (repeatable): an engine URL as "
             "--docker-host takes (ssh://user@gpu-box) or a docker context name. Its kolo container must be up "
             "(`kolo --docker-host URL up`). A job may name it (\"engine\"); resume and export go back to the engine "
             "that trained. An engine with a data root of its own gets each job's dataset and local base model sent "
             "there, and the run (without checkpoints) brought back here when it ends."),
    max_upload: str = typer.Option("2G", "--max-upload", help="Largest dataset upload (e.g. 2G, 500M)."),
    show_key: bool = typer.Option(False, "--show-key", help="Print the API key and exit."),
    init_key: bool = typer.Option(False, "--init-key", help="Create the API key if there is none (printed once), "
                                                            "then exit: the first-start step of the compose service."),
) -> None:
    """Run the Training Manager (API + worker + dashboard). Example: kolo serve --port 8000"""
    from ..server.app import ServerConfig, read_key

    root = STATE.data()
    cfg = ServerConfig(data_root=root.path, runtime=STATE.runtime, container=STATE.container, workers=workers,
                       max_upload=_size(max_upload), debug=STATE.debug)
    key = read_key(cfg)
    if show_key:
        if key is None:
            raise KoloError(f"no API key yet under {root.display}", hint="start `kolo serve` once; it creates one")
        print(key)
        return
    if init_key:
        if key is None:
            _new_key(cfg, root)
        else:
            print(f"API key: exists ({cfg.key_path}); `kolo serve --show-key` prints it", flush=True)
        return
    _pin(cfg, gpus, engine or [])  # bad --gpus / --workers / --engine is refused before anything is written
    if key is None:
        if not _loopback(host):
            raise OptionsError([f"--host {host}: refusing to listen beyond this machine before an API key exists"],
                               hint="start `kolo serve` once on 127.0.0.1, or run `kolo serve --init-key` (each "
                                    "creates and prints the key), then bind to other addresses")
        key = _new_key(cfg, root)
    _run(cfg, key, host, port)


def _new_key(cfg: "ServerConfig", root: "DataRoot") -> str:
    """Create the key (mode 0600 in the data root) and print it: the one time it is shown unasked."""
    from ..server.app import create_key

    root.path.mkdir(parents=True, exist_ok=True)  # a new user's first command may be this one
    root.check(writable=True)
    key = create_key(cfg)
    print(f"API key (shown once; `kolo serve --show-key` prints it again; stored in {cfg.key_path}):\n{key}",
          flush=True)
    return key


def _run(cfg: "ServerConfig", key: str, host: str, port: int) -> None:
    import uvicorn

    from ..server.app import create_app

    app = create_app(cfg, key)
    print(f"kolo serve: http://{host}:{port}/ (API docs at /docs, runtime {STATE.runtime}, data root "
          f"{STATE.data().display})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP, rich_help_panel="Training Manager")(serve)
