"""The kolo container's lifecycle through the Docker SDK (docker-py).

The SDK is imported inside :func:`client`, never at module import, so `kolo --help` does not pay for it.
Every engine failure is translated into a :mod:`kolo_cli.errors` class with a hint naming the fix; callers never
see a requests/urllib3 traceback. Containers are found by EXACT name (the engine's name filter is a regex that
also matches substrings: ``kolo`` would match ``kolo_old``).

Which engine: ``kolo --docker-host URL`` / ``--context NAME`` (:func:`select_engine`) become DOCKER_HOST /
DOCKER_CONTEXT in kolo's own environment, so the SDK here and every docker CLI / compose process kolo starts
(``docker exec``, ``build``, ``shell``) talk to the same engine by the docker CLI's own rules. An engine on another
machine (:func:`is_remote`) keeps the data root in a Docker volume there; ``kolo_cli.remote_data`` moves files
in and out of it through the API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kolo_trainer.errors import NameError_, OptionsError

from .errors import ContainerMissing, ContainerStopped, DataRootMismatch, DockerError, DockerUnavailable, ImageMissing
from .state import CONTAINER_DATA_ROOT

#: Label on containers made by `kolo up`: the host data root they mount (status and checks read it back).
LABEL_DATA_ROOT = "org.kolo.data-root"
LABEL_MANAGED = "org.kolo.managed"
#: Named volume for the Hugging Face cache (compose project "kolo" + volume "hf_cache").
HF_CACHE_VOLUME = "kolo_hf_cache"
#: Named volume holding the data root on a remote engine (`docker volume create` on that box can place it on a
#: disk of your choice before `kolo up`).
REMOTE_VOLUME = "kolo_data"
#: Engine URL schemes kolo knows; of them, these reach another machine, whose files kolo cannot see.
ENGINE_SCHEMES = ("unix", "npipe", "ssh", "tcp", "http", "https")
REMOTE_SCHEMES = ("ssh", "tcp", "http", "https")


# ---------------------------------------------------------------------------------------------- which engine


@dataclass(frozen=True)
class Endpoint:
    url: str | None  # None: the docker default (this machine's socket)
    tls: Any = None
    via: str = "default"  # how it was chosen, for messages: --docker-host, DOCKER_HOST, context 'x', default
    context: str | None = None  # the docker context it came from (the docker CLI then gets DOCKER_CONTEXT)

    def cli_env(self) -> dict[str, str]:
        """The environment a docker CLI process needs to talk to this engine (and no other): DOCKER_HOST, or
        DOCKER_CONTEXT for a context (which may carry TLS files the URL alone does not)."""
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
        if self.context:
            env["DOCKER_CONTEXT"] = self.context
        elif self.url:
            env["DOCKER_HOST"] = self.url
        return env


_chosen = {"via": None, "remote": None}


def select_engine(docker_host: str | None = None, context: str | None = None, remote: bool | None = None) -> None:
    """Make the root options THE engine: they go into this process's environment (DOCKER_HOST, or DOCKER_CONTEXT
    with DOCKER_HOST removed, since the docker CLI lets DOCKER_HOST win), which the SDK here and every docker CLI
    and compose process kolo starts read the same way."""
    if docker_host is not None and context is not None:
        raise OptionsError(["--docker-host and --context each name an engine; give one"])
    if docker_host is not None:
        check_url(docker_host)
        os.environ["DOCKER_HOST"] = docker_host
        os.environ.pop("DOCKER_CONTEXT", None)
        _chosen["via"] = "--docker-host"
    elif context is not None:
        if not context.strip():
            raise OptionsError(["--context is empty"], hint="name a context from `docker context ls`")
        os.environ.pop("DOCKER_HOST", None)
        os.environ["DOCKER_CONTEXT"] = context
        _chosen["via"] = f"--context {context}"
    if remote is not None:
        _chosen["remote"] = remote


def check_url(url: str, flag: str = "--docker-host") -> None:
    """Refuse what is not a Docker engine URL (before anything connects)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ENGINE_SCHEMES or not url.split("://", 1)[1].strip("/"):
        raise OptionsError([f"{flag} {url!r} is not a Docker engine URL"],
                           hint="e.g. ssh://user@gpu-box, unix:///var/run/docker.sock or tcp://gpu-box:2376")


def endpoint() -> Endpoint:
    """The engine kolo talks to, by the docker CLI's precedence: DOCKER_HOST, then DOCKER_CONTEXT, then the
    current context (`docker context use`), then this machine's socket."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        from docker.utils import kwargs_from_env

        with translated():
            tls = kwargs_from_env().get("tls")
        return Endpoint(host, tls, _chosen["via"] or "DOCKER_HOST")
    from docker.context.config import get_current_context_name

    name = os.environ.get("DOCKER_CONTEXT") or get_current_context_name()
    if name == "default":
        return Endpoint(None, None, "default")
    return _context_endpoint(name, _chosen["via"] or f"context {name!r}")


def endpoint_for(spec: str) -> Endpoint:
    """An engine named by an engine URL (as --docker-host takes) or a docker context name, without making it the
    process's engine: `kolo serve --engine` talks to several at once."""
    if "://" in spec:
        check_url(spec, "--engine")
        return Endpoint(spec, None, f"--engine {spec}")
    if not spec.strip():
        raise OptionsError(["--engine is empty"], hint="give an engine URL (ssh://user@gpu-box) or a context name")
    return _context_endpoint(spec, f"--engine {spec}")


def _context_endpoint(name: str, via: str) -> Endpoint:
    from docker.context import ContextAPI

    with translated():
        ctx = ContextAPI.get_context(name)
    if ctx is None:
        host = _context_host_from_cli(name)
        if host:
            return Endpoint(host, None, via, context=name)
        raise NameError_(f"docker context {name!r} does not exist",
                         hint="see `docker context ls`; create one with `docker context create NAME --docker "
                              "host=ssh://user@gpu-box`")
    return Endpoint(ctx.Host, ctx.TLSConfig, via, context=name)


def _context_host_from_cli(name: str) -> str | None:
    """A context's engine URL from `docker context inspect`. Why: without a config.json the SDK looks for contexts
    under the current folder instead of ~/.docker (DOCKER_CONFIG), and misses those the CLI made. (A TLS context
    found this way gets no client certificate; give it a config.json, which `docker context use` writes.)"""
    import json
    import subprocess

    exe = shutil.which("docker")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "context", "inspect", name], capture_output=True, text=True, timeout=30)
        return str(json.loads(r.stdout)[0]["Endpoints"]["docker"]["Host"]) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, LookupError, TypeError):
        return None


def is_remote() -> bool:
    """Whether the engine's files are out of kolo's sight, so the data root lives in a volume there.

    ``--remote`` / ``--no-remote`` (KOLO_REMOTE) decide when given. Otherwise the URL does: ssh/tcp/http(s) reach
    another machine; a unix socket or named pipe is this machine's engine (a rootless or Desktop daemon shares the
    host's folders). A second local daemon that must not share them (the tests' stand-in for a GPU box) says
    ``--remote``."""
    if _chosen["remote"] is not None:
        return bool(_chosen["remote"])
    url = endpoint().url
    return url is not None and url.split("://", 1)[0] in REMOTE_SCHEMES


def _ssh_kwargs(url: str | None) -> dict[str, Any]:
    """ssh:// goes through the OpenSSH client (``use_ssh_client``), not paramiko's own SSH: the docker CLI that
    runs ``docker exec`` for kolo does the same, so both honour ~/.ssh/config, the agent and known_hosts alike.
    (docker-py still imports paramiko for any ssh:// URL, hence kolo-cli's ``ssh`` extra.)"""
    if not (url or "").startswith("ssh://"):
        return {}
    if shutil.which("ssh") is None:
        raise DockerUnavailable("ssh:// engines need the OpenSSH client (`ssh`), which is not on PATH; install "
                                "openssh-client, or reach the engine through a tcp:// context with TLS")
    import importlib.util

    if importlib.util.find_spec("paramiko") is None:
        raise DockerUnavailable("ssh:// engines need paramiko, which the Docker SDK imports for them; "
                                "pip install 'kolo-cli[ssh]' (scripts/install.sh does)")
    return {"use_ssh_client": True}


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


def client(timeout: int = 30, engine: Endpoint | None = None) -> Any:
    """A connected ``docker.DockerClient`` for ``engine`` (default: :func:`endpoint`); :class:`DockerUnavailable`
    if none answers."""
    import docker

    ep = engine or endpoint()
    kwargs: dict[str, Any] = {"base_url": ep.url, **_ssh_kwargs(ep.url)}
    if ep.tls:
        kwargs["tls"] = ep.tls
    with translated():
        c = docker.DockerClient(timeout=timeout, **kwargs)
        c.ping()
    return c


def round_trip_ms(cl: Any, n: int = 5) -> float:
    """The median time of ``n`` pings (an ssh engine adds its link's latency to every API call and exec)."""
    times = []
    with translated():
        for _ in range(n):
            t0 = time.perf_counter()
            cl.ping()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


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


def _data_root_mount(container: Any) -> dict:
    for m in container.attrs.get("Mounts") or []:
        if m.get("Destination") == CONTAINER_DATA_ROOT:
            return m
    return {}


def mounted_data_root(container: Any) -> str | None:
    """The host folder mounted at /var/kolo_data in ``container``."""
    return _data_root_mount(container).get("Source")


def data_root_volume(container: Any) -> str | None:
    """The volume holding the container's data root when it is one (a container made for a remote engine)."""
    m = _data_root_mount(container)
    return m.get("Name") if m.get("Type") == "volume" else None


def check_data_root(container: Any, host_root: str | os.PathLike) -> None:
    """Refuse to run when the container mounts a different folder than the host-side checks looked at.

    With a remote engine there is nothing here to compare: its data root is wherever its container has it. A
    container whose data root is a volume, used as if it were local, is refused: the host checks would look at
    the wrong files."""
    if is_remote():
        return
    volume = data_root_volume(container)
    if volume is not None:
        raise DockerError(f"container {container.name!r} keeps its data root in the Docker volume {volume!r}, not "
                          f"in {Path(host_root).resolve()}",
                          "pass --remote (or KOLO_REMOTE=1) to use it as a remote engine's data root, or "
                          "`kolo down && kolo up` to mount this folder")
    mounted = mounted_data_root(container)
    wanted = str(Path(host_root).resolve())
    if mounted is not None and os.path.realpath(mounted) != os.path.realpath(wanted):
        raise DataRootMismatch(container.name, mounted, wanted)


def shares_data_root(container: Any, host_root: str | os.PathLike, engine: Endpoint) -> bool:
    """Whether ``container`` (on ``engine``) mounts this machine's ``host_root`` as its data root. An engine on
    another machine never does: a folder of the same name there is another folder."""
    if engine.url is not None and engine.url.split("://", 1)[0] in REMOTE_SCHEMES:
        return False
    mounted = mounted_data_root(container)
    return data_root_volume(container) is None and mounted is not None and \
        os.path.realpath(mounted) == os.path.realpath(host_root)


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
    if not os.path.exists(host) and not is_remote():  # a remote engine's paths are on its own machine
        raise DockerError(f"read-only mount {spec!r}: {host} does not exist")
    return host, target


def up(cfg: UpConfig, cl: Any = None) -> tuple[Any, str]:
    """Create (if needed) and start the container. Returns (container, what happened)."""
    import docker.types

    cl = cl or client()
    existing = find(cl, cfg.name)
    if existing is not None:
        return _start_existing(existing, cfg)

    with translated():
        try:
            image = cl.images.get(cfg.image)
        except docker.errors.ImageNotFound:
            raise ImageMissing(cfg.image) from None
    image_env = dict(e.split("=", 1) for e in ((image.attrs.get("Config") or {}).get("Env") or []) if "=" in e)

    remote = is_remote()
    root = cfg.data_root.resolve()
    volumes = _data_root_volumes(root, remote)
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
        labels={LABEL_MANAGED: "1", LABEL_DATA_ROOT: f"volume:{REMOTE_VOLUME}" if remote else str(root)},
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
    if remote:
        code, out = exec_capture(c, ["python", "-c", MAKE_SUBDIRS, CONTAINER_DATA_ROOT])
        if code != 0:
            raise DockerError(f"cannot create the data root's folders in {cfg.name!r}: {out.strip()[-300:]}")
    return c, f"created and started container {cfg.name!r} ({cfg.image}, GPUs: {'all' if want_gpu else 'none'})"


def _start_existing(existing: Any, cfg: UpConfig) -> tuple[Any, str]:
    mounted = mounted_data_root(existing)
    note = ""
    if data_root_volume(existing) is None and not is_remote() and mounted and \
            os.path.realpath(mounted) != os.path.realpath(cfg.data_root):
        note = f" (it mounts {mounted}; `kolo down && kolo up` to mount {cfg.data_root})"
    if existing.status == "running":
        return existing, f"container {cfg.name!r} is already running{note}"
    with translated():
        existing.start()
        existing.reload()
    return existing, f"started existing container {cfg.name!r}{note}"


def _data_root_volumes(root: Path, remote: bool) -> dict[str, dict[str, str]]:
    """The data root's mount: this machine's folder, or, for a remote engine (whose daemon cannot see this
    machine's folders), the volume there."""
    if remote:
        return {REMOTE_VOLUME: {"bind": CONTAINER_DATA_ROOT, "mode": "rw"}}
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {str(root): {"bind": CONTAINER_DATA_ROOT, "mode": "rw"}}


#: Run in a new remote container (argv: the data root): its folders, owned by the trainer's user.
MAKE_SUBDIRS = "import os, sys\nfor d in ('data', 'models', 'outputs'):\n    os.makedirs(os.path.join(sys.argv[1], d), " \
               "exist_ok=True)\n"


def data_root_label(cfg: UpConfig) -> str:
    """Where the container's data root lives, in words (for `kolo up`)."""
    return f"Docker volume {REMOTE_VOLUME!r} on the engine" if is_remote() else str(cfg.data_root)


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
