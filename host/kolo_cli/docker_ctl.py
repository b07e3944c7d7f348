"""The kolo container's lifecycle through the Docker SDK (docker-py).

The SDK is imported inside :func:`client`, never at module import, so `kolo --help` does not pay for it.
Every engine failure is translated into a :mod:`kolo_cli.errors` class with a hint naming the fix; callers never
see a requests/urllib3 traceback. Containers are found by EXACT name (the engine's name filter is a regex that
also matches substrings: ``kolo`` would match ``kolo_old``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import ContainerMissing, ContainerStopped, DataRootMismatch, DockerError, DockerUnavailable, ImageMissing
from .state import CONTAINER_DATA_ROOT

#: Label on containers made by `kolo up`: the host data root they mount (status and checks read it back).
LABEL_DATA_ROOT = "org.kolo.data-root"
LABEL_MANAGED = "org.kolo.managed"
#: Named volume for the Hugging Face cache (compose project "kolo" + volume "hf_cache").
HF_CACHE_VOLUME = "kolo_hf_cache"


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn docker-py / requests exceptions into kolo errors with a hint."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except DockerError:
        raise
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError) as e:
        raise DockerUnavailable(_short(e)) from None
    except docker.errors.NotFound as e:
        raise DockerError(f"not found: {_explanation(e)}") from None
    except docker.errors.APIError as e:
        raise DockerError(f"the Docker engine refused: {_explanation(e)}") from None
    except docker.errors.DockerException as e:
        raise DockerUnavailable(_short(e)) from None


def _explanation(e: Any) -> str:
    return str(getattr(e, "explanation", None) or e).strip().splitlines()[0]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def client(timeout: int = 30) -> Any:
    """A connected ``docker.DockerClient`` (honours DOCKER_HOST etc.); :class:`DockerUnavailable` if none."""
    import docker

    with translated():
        c = docker.from_env(timeout=timeout)
        c.ping()
    return c


def find(cl: Any, name: str) -> Any | None:
    """The container named exactly ``name`` (running or not), or None."""
    with translated():
        # The engine's filter is a regex substring match on "/name": filter loosely, then compare exactly.
        for c in cl.containers.list(all=True, filters={"name": name}):
            if c.name == name:
                return c
    return None


def require(name: str, cl: Any = None) -> Any:
    cl = cl or client()
    c = find(cl, name)
    if c is None:
        raise ContainerMissing(name)
    return c


def require_running(name: str, cl: Any = None) -> Any:
    c = require(name, cl)
    if c.status != "running":
        raise ContainerStopped(name, c.status)
    return c


def mounted_data_root(container: Any) -> str | None:
    """The host folder mounted at /var/kolo_data in ``container``."""
    for m in container.attrs.get("Mounts") or []:
        if m.get("Destination") == CONTAINER_DATA_ROOT:
            return m.get("Source")
    return None


def check_data_root(container: Any, host_root: str | os.PathLike) -> None:
    """Refuse to run when the container mounts a different folder than the host-side checks looked at."""
    mounted = mounted_data_root(container)
    wanted = str(Path(host_root).resolve())
    if mounted is not None and os.path.realpath(mounted) != os.path.realpath(wanted):
        raise DataRootMismatch(container.name, mounted, wanted)


def has_nvidia_runtime(cl: Any) -> bool:
    with translated():
        info = cl.info()
    return "nvidia" in (info.get("Runtimes") or {})


def exec_capture(container: Any, argv: list[str], timeout_note: str = "") -> tuple[int, str]:
    """Run ``argv`` in ``container`` and return (exit code, combined output). For short checks only."""
    with translated():
        res = container.exec_run(argv, stdout=True, stderr=True, demux=False)
    out = res.output.decode("utf-8", errors="replace") if isinstance(res.output, bytes) else str(res.output or "")
    return int(res.exit_code if res.exit_code is not None else 1), out


def gpu_visible(container: Any) -> tuple[bool | None, str]:
    """(visible, detail) from ``nvidia-smi -L`` inside the container; None when it cannot be asked."""
    if container.status != "running":
        return None, "container not running"
    try:
        code, out = exec_capture(container, ["nvidia-smi", "-L"])
    except DockerError as e:
        return False, e.message
    gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
    if code == 0 and gpus:
        return True, "; ".join(gpus)
    if "executable file not found" in out or "not found" in out.lower() and code in (126, 127):
        return False, "nvidia-smi not found in the container (no GPU passed through)"
    first = out.strip().splitlines()[0] if out.strip() else f"exit {code}"
    return False, first[:160]


def driver_version(container: Any) -> str | None:
    """The host's NVIDIA driver version as the container sees it (``nvidia-smi``); None when it cannot be asked."""
    if container.status != "running":
        return None
    try:
        code, out = exec_capture(container, ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    except DockerError:
        return None
    first = out.strip().splitlines()[0].strip() if out.strip() else ""
    return first if code == 0 and first[:1].isdigit() else None


@dataclass
class UpConfig:
    name: str
    image: str
    data_root: Path
    gpus: str = "auto"  # auto | all | none
    network: str | None = None  # None = the engine's default
    ro_mounts: list[tuple[str, str]] = field(default_factory=list)  # (host, container)
    shm_size: str = "2g"  # PyTorch data loaders share tensors through /dev/shm; Docker's 64 MB is too small


def parse_mount(spec: str) -> tuple[str, str]:
    """``HOST`` or ``HOST:CONTAINER`` -> (absolute host path, container path). Split at the last ':' followed by
    '/', so Windows drive letters (``C:\\x:/y``) survive."""
    idx = spec.rfind(":/")
    host, target = (spec[:idx], spec[idx + 1:]) if idx > 0 else (spec, "")
    host = os.path.abspath(os.path.expanduser(host))
    if not target:
        target = host if host.startswith("/") else "/mnt/" + Path(host).name
    if not os.path.exists(host):
        raise DockerError(f"read-only mount {spec!r}: {host} does not exist")
    return host, target


def up(cfg: UpConfig, cl: Any = None) -> tuple[Any, str]:
    """Create (if needed) and start the container. Returns (container, what happened)."""
    import docker.types

    cl = cl or client()
    existing = find(cl, cfg.name)
    if existing is not None:
        mounted = mounted_data_root(existing)
        note = ""
        if mounted and os.path.realpath(mounted) != os.path.realpath(cfg.data_root):
            note = f" (it mounts {mounted}; `kolo down && kolo up` to mount {cfg.data_root})"
        if existing.status == "running":
            return existing, f"container {cfg.name!r} is already running{note}"
        with translated():
            existing.start()
            existing.reload()
        return existing, f"started existing container {cfg.name!r}{note}"

    with translated():
        try:
            image = cl.images.get(cfg.image)
        except docker.errors.ImageNotFound:
            raise ImageMissing(cfg.image) from None
    image_env = dict(e.split("=", 1) for e in ((image.attrs.get("Config") or {}).get("Env") or []) if "=" in e)

    root = cfg.data_root.resolve()
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    volumes = {str(root): {"bind": CONTAINER_DATA_ROOT, "mode": "rw"}}
    for host, target in cfg.ro_mounts:
        volumes[host] = {"bind": target, "mode": "ro"}
    if image_env.get("HF_HOME"):
        # Downloaded base models survive `kolo down`; the same named volume docker-compose.yml uses (kolo_hf_cache).
        volumes[HF_CACHE_VOLUME] = {"bind": image_env["HF_HOME"], "mode": "rw"}

    want_gpu = cfg.gpus == "all" or (cfg.gpus == "auto" and has_nvidia_runtime(cl))
    kwargs: dict[str, Any] = dict(
        image=cfg.image,
        name=cfg.name,
        detach=True,
        init=True,  # reaps the trainer's children and forwards signals; a killed run leaves no zombies
        volumes=volumes,
        working_dir=CONTAINER_DATA_ROOT,
        environment={"KOLO_DATA": CONTAINER_DATA_ROOT},
        labels={LABEL_MANAGED: "1", LABEL_DATA_ROOT: str(root)},
        restart_policy={"Name": "unless-stopped"},
        shm_size=cfg.shm_size,
    )
    if cfg.network:
        kwargs["network_mode"] = cfg.network
    if want_gpu:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    with translated():
        c = cl.containers.run(**kwargs)
        c.reload()
    if c.status != "running":
        with translated():
            logs = c.logs(tail=5).decode("utf-8", errors="replace").strip()
        raise DockerError(f"container {cfg.name!r} exited right after starting ({c.status})"
                          + (f": {logs.splitlines()[-1]}" if logs else ""),
                          "check `kolo logs`; the image's command must keep running")
    return c, f"created and started container {cfg.name!r} ({cfg.image}, GPUs: {'all' if want_gpu else 'none'})"


def start(name: str) -> str:
    c = require(name)
    if c.status == "running":
        return f"container {name!r} is already running"
    with translated():
        c.start()
    return f"started container {name!r}"


def stop(name: str, timeout: int = 10) -> str:
    c = require(name)
    if c.status != "running":
        return f"container {name!r} is not running ({c.status})"
    with translated():
        c.stop(timeout=timeout)
    return f"stopped container {name!r}"


def down(name: str, timeout: int = 10) -> str:
    """Stop and remove the container. The data root is a bind mount: it is never touched."""
    cl = client()
    c = find(cl, name)
    if c is None:
        return f"container {name!r} does not exist (nothing to remove)"
    with translated():
        if c.status == "running":
            c.stop(timeout=timeout)
        c.remove(v=False)
    return f"removed container {name!r} (the data root was not touched)"
