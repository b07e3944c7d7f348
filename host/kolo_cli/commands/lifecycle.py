"""Container lifecycle verbs: build up start stop down status doctor shell logs.

The verbs are thin: the engine work lives in ``docker_ctl`` (SDK) and, where a terminal or a build log has to be
streamed, in the docker CLI run as an argv list.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import DockerCliMissing, DockerError
from ..state import CONTAINER_DATA_ROOT, STATE

#: Host ports the compose services publish (Ollama, the web UI, the Training Manager). Doctor checks they are free
#: or ours (published by a container, or a `kolo serve` of yours answering on the port).
COMPOSE_PORTS = {11434: "Ollama", 8080: "Open WebUI", 8000: "Training Manager"}
#: Below this much free space under the data root, doctor fails (a 8B model + GGUFs needs tens of GB).
MIN_FREE_GIB = float(os.environ.get("KOLO_MIN_FREE_GIB", "20"))


def _echo(msg: str) -> None:
    print(msg, flush=True)


def _docker_cli() -> str:
    exe = shutil.which("docker")
    if exe is None:
        raise DockerCliMissing()
    return exe


def repo_root() -> Path | None:
    """The source checkout holding the Dockerfile (host/kolo_cli/commands -> repo root), if this is one."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "Dockerfile").exists() else None


# ---------------------------------------------------------------------------------------------- build


def build(
    image: Optional[str] = typer.Option(None, "--image", help="Image tag to build (default KOLO_IMAGE or kolo:latest)."),
    context: Optional[Path] = typer.Option(None, "--context", help="Build context holding the Dockerfile "
                                           "(default: this kolo checkout)."),
    compose: bool = typer.Option(True, "--compose/--no-compose", help="Use `docker compose build` when "
                                 "available and no --image is given."),
) -> None:
    """Build the kolo image, streaming the build output.

    Example: kolo build   |   kolo build --image kolo:dev --no-compose
    """
    docker = _docker_cli()
    ctx = context or repo_root()
    if ctx is None or not (ctx / "Dockerfile").exists():
        raise DockerError(f"no Dockerfile in {ctx or 'this installation'}", "pass --context DIR (a kolo checkout)")
    compose_file = ctx / "docker-compose.yml"
    use_compose = compose and image is None and compose_file.exists() and compose_v2(docker)[0]
    if use_compose:
        cmd = [docker, "compose", "-f", str(compose_file), "build"]
    else:
        cmd = [docker, "build", "-t", image or STATE.image, "-f", str(ctx / "Dockerfile"), str(ctx)]
    _echo("$ " + " ".join(cmd))
    rc = subprocess.call(cmd)  # inherits the terminal: build output streams as docker writes it
    if rc != 0:
        raise typer.Exit(rc)


# ---------------------------------------------------------------------------------------------- up / start / stop


def up(
    image: Optional[str] = typer.Option(None, "--image", help="Image to run (default KOLO_IMAGE or kolo:latest)."),
    gpus: str = typer.Option("auto", "--gpus", envvar="KOLO_GPUS", metavar="auto|all|none",
                             help="Request all GPUs: auto = when the engine has an NVIDIA runtime."),
    network: Optional[str] = typer.Option(None, "--network", envvar="KOLO_NETWORK",
                                          help="Docker network mode (e.g. host, none; default: the engine's)."),
    mount_ro: Optional[List[str]] = typer.Option(None, "--mount-ro", metavar="HOST[:CONTAINER]",
                                                 help="Extra read-only bind mount (repeatable; env KOLO_MOUNTS_RO, "
                                                 "comma-separated)."),
) -> None:
    """Create and start the kolo container, mounting the data root at /var/kolo_data.

    Example: kolo up   |   kolo --data-root ~/kolo_data up --gpus all
    """
    from .. import docker_ctl

    if gpus not in ("auto", "all", "none"):
        raise DockerError(f"--gpus must be auto, all or none, not {gpus!r}")
    specs = list(mount_ro or [])
    specs += [s for s in os.environ.get("KOLO_MOUNTS_RO", "").split(",") if s.strip()]
    cfg = docker_ctl.UpConfig(name=STATE.container, image=image or STATE.image, data_root=STATE.root(),
                              gpus=gpus, network=network, ro_mounts=[docker_ctl.parse_mount(s) for s in specs])
    _, msg = docker_ctl.up(cfg)
    _echo(msg)
    _echo(f"data root: {docker_ctl.data_root_label(cfg)} -> {CONTAINER_DATA_ROOT}")


def start() -> None:
    """Start the stopped kolo container.

    Example: kolo start
    """
    from .. import docker_ctl

    _echo(docker_ctl.start(STATE.container))


def stop() -> None:
    """Stop the kolo container (it keeps its state; `kolo start` resumes it).

    Example: kolo stop
    """
    from .. import docker_ctl

    _echo(docker_ctl.stop(STATE.container))


def down() -> None:
    """Stop and remove the kolo container. The data root (datasets, models, runs) is never touched.

    Example: kolo down
    """
    from .. import docker_ctl

    _echo(docker_ctl.down(STATE.container))


# ---------------------------------------------------------------------------------------------- status


def _dir_usage(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def collect_status() -> dict[str, Any]:
    from .. import docker_ctl

    root = STATE.root()
    info: dict[str, Any] = {"container": STATE.container, "runtime": STATE.runtime, "data_root": str(root),
                            "daemon": False, "exists": False, "state": None, "image": None, "gpu": None,
                            "gpu_detail": None, "mounted_data_root": None}
    if root.exists():
        info["data_root_bytes"] = _dir_usage(root)
        info["data_root_free_bytes"] = shutil.disk_usage(root).free
    else:
        info["data_root_bytes"] = None
        info["data_root_free_bytes"] = None
    try:
        cl = docker_ctl.client(timeout=10)
        info["daemon"] = True
        c = docker_ctl.find(cl, STATE.container)
    except DockerError as e:
        info["error"] = e.message
        return info
    if c is not None:
        info.update(exists=True, state=c.status, mounted_data_root=docker_ctl.mounted_data_root(c),
                    image=(c.attrs.get("Config") or {}).get("Image"))
        visible, detail = docker_ctl.gpu_visible(c)
        info.update(gpu=visible, gpu_detail=detail)
        if STATE.runtime == "docker" and docker_ctl.is_remote():
            info["engine_data_root"] = _engine_data_root(c)
    return info


def _engine_data_root(c: Any) -> dict[str, Any]:
    """A remote engine's data root (the trainer's files are there, not in this machine's folder): its volume and
    free space, asked in the container."""
    from kolo_trainer.errors import KoloError

    from .. import docker_ctl, remote_data

    out: dict[str, Any] = {"volume": docker_ctl.data_root_volume(c), "free_bytes": None}
    if c.status == "running":
        try:
            out["free_bytes"] = int(remote_data.df(c)["free"])
        except KoloError as e:
            out["error"] = e.message
    return out


def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Container state, image, GPU visibility and data-root usage.

    Example: kolo status   |   kolo status --json
    """
    info = collect_status()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    daemon = "reachable" if info["daemon"] else f"[red]unreachable[/] ({info.get('error', '')})"
    t.add_row("docker", daemon)
    if info["daemon"]:
        state = info["state"] if info["exists"] else "[red]missing[/] (run `kolo up`)"
        if info["exists"] and info["state"] != "running":
            state = f"[yellow]{info['state']}[/] (run `kolo start`)"
        t.add_row("container", f"{info['container']}: {state}")
        if info["exists"]:
            t.add_row("image", str(info["image"]))
            gpu = {True: "[green]visible[/]", False: "[yellow]not visible[/]", None: "unknown"}[info["gpu"]]
            t.add_row("gpu", gpu + (f" ({info['gpu_detail']})" if info["gpu_detail"] else ""))
            t.add_row("mounted", f"{info['mounted_data_root']} -> {CONTAINER_DATA_ROOT}")
    t.add_row("runtime", info["runtime"])
    usage = "does not exist yet" if info["data_root_bytes"] is None else (
        f"{_gib(info['data_root_bytes'])} used, {_gib(info['data_root_free_bytes'])} free")
    box = info.get("engine_data_root")
    if box is not None:
        free = "free space unknown (container not running)" if box["free_bytes"] is None else \
            f"{_gib(box['free_bytes'])} free"
        t.add_row("data root", f"volume {box['volume']!r} on the engine ({free}); training and export use it")
        t.add_row("local copies", f"{info['data_root']} ({usage}; `kolo pull` brings runs here)")
    else:
        t.add_row("data root", f"{info['data_root']} ({usage})")
    Console(highlight=False).print(t)


# ---------------------------------------------------------------------------------------------- doctor


def _port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _kolo_serve_answers(port: int) -> bool:
    """A `kolo serve` answers its health route on this loopback port (the user's own Training Manager)."""
    import httpx

    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=3)
        return r.status_code == 200 and r.json().get("status") == "ok" and "version" in r.json()
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def compose_v2(docker: str | None = None) -> tuple[bool, str]:
    """(Docker Compose v2 is installed, what `docker compose version` said). docker-compose.yml needs v2: the old
    Python `docker-compose` (v1) rejects it."""
    docker = docker or shutil.which("docker")
    if docker is None:
        return False, "docker CLI not found"
    try:
        r = subprocess.run([docker, "compose", "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    version = r.stdout.strip().lstrip("v")
    if r.returncode != 0 or not version[:1].isdigit():
        return False, "`docker compose` is not installed"
    return int(version.split(".")[0]) >= 2, f"Docker Compose {version}"


def _gpu_rows(cl: Any, container: Any) -> list[tuple[str, bool | None, str, str]]:
    from kolo_trainer.train.backends import MIN_NVIDIA_DRIVER, driver_problem

    from .. import docker_ctl

    rows: list[tuple[str, bool | None, str, str]] = []
    if cl is not None:
        ok = docker_ctl.has_nvidia_runtime(cl)
        rows.append(("NVIDIA container runtime", ok, "" if ok else "no 'nvidia' runtime in `docker info`",
                     "" if ok else "install the NVIDIA Container Toolkit and restart Docker "
                     "(or run `kolo doctor --no-gpu` for CPU-only use)"))
    else:
        rows.append(("NVIDIA container runtime", None, "needs the daemon", ""))
    if container is None:
        rows.append(("GPU visible inside the container", None, "needs a running container", ""))
        rows.append((f"NVIDIA driver >= {MIN_NVIDIA_DRIVER}", None, "needs a running container", ""))
        return rows
    visible, detail = docker_ctl.gpu_visible(container)
    rows.append(("GPU visible inside the container", bool(visible), detail or "",
                 "" if visible else "`kolo down && kolo up --gpus all` after installing the NVIDIA "
                 "Container Toolkit"))
    driver = docker_ctl.driver_version(container) if visible else None
    if driver is None:
        rows.append((f"NVIDIA driver >= {MIN_NVIDIA_DRIVER}", None, "needs a visible GPU", ""))
    else:
        problem = driver_problem(driver)
        rows.append((f"NVIDIA driver >= {MIN_NVIDIA_DRIVER}", problem is None, problem or f"driver {driver}",
                     f"update the host's NVIDIA driver to {MIN_NVIDIA_DRIVER} or newer (torch and llama.cpp in "
                     "the image are CUDA 13 builds)" if problem else ""))
    return rows


def run_checks(gpu: bool = True) -> list[tuple[str, bool | None, str, str]]:
    """(check, ok, detail, fix) rows; ok None = not applicable (skipped because an earlier check failed)."""
    from .. import docker_ctl

    rows: list[tuple[str, bool | None, str, str]] = []
    cl = container = None
    try:
        cl = docker_ctl.client(timeout=10)
        rows.append(("Docker daemon reachable", True, "", ""))
    except DockerError as e:
        rows.append(("Docker daemon reachable", False, e.message, "start Docker Desktop / dockerd (`docker info`)"))
    if cl is not None:
        container = docker_ctl.find(cl, STATE.container)
        if container is None:
            rows.append((f"container {STATE.container!r} exists and runs", False, "missing", "kolo up"))
        elif container.status != "running":
            rows.append((f"container {STATE.container!r} exists and runs", False, container.status, "kolo start"))
            container = None
        else:
            rows.append((f"container {STATE.container!r} exists and runs", True, container.status, ""))
    if docker_ctl.is_remote():
        from ..remote_data import doctor_rows

        rows += doctor_rows(cl, container, MIN_FREE_GIB)
    ok, detail = compose_v2()
    rows.append(("Docker Compose v2 (`docker compose`)", ok, detail,
                 "" if ok else "install the Compose v2 plugin (docker-compose-plugin, or Docker Desktop); the old "
                 "`docker-compose` v1 cannot read docker-compose.yml"))
    if gpu:
        rows += _gpu_rows(cl, container)
    root = STATE.root()
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    ok = free >= MIN_FREE_GIB * 2**30
    rows.append((f"free disk under {root}", ok, _gib(free),
                 "" if ok else f"free at least {MIN_FREE_GIB:g} GiB or pass --data-root on a larger disk"))
    return rows + _port_rows(cl)


def _port_rows(cl: Any) -> list[tuple[str, bool | None, str, str]]:
    """Each compose port: free, or already ours (a container publishes it, or a `kolo serve` of yours answers)."""
    from .. import docker_ctl

    rows: list[tuple[str, bool | None, str, str]] = []
    for port, what in COMPOSE_PORTS.items():
        free_port = _port_free(port)
        ours = False
        if not free_port and cl is not None:
            try:
                with docker_ctl.translated():
                    for c in cl.containers.list():
                        for bindings in (c.ports or {}).values():
                            ours |= any(str(b.get("HostPort")) == str(port) for b in bindings or [])
            except DockerError:
                pass
        serve = not free_port and not ours and _kolo_serve_answers(port)
        ok = free_port or ours or serve
        detail = "free" if free_port else ("published by a container" if ours else
                                           "kolo serve answers" if serve else "in use by another program")
        rows.append((f"host port {port} ({what})", ok, detail,
                     "" if ok else f"stop the program listening on {port} (e.g. a local `ollama serve`)"))
    return rows


def doctor(gpu: bool = typer.Option(True, "--gpu/--no-gpu", help="Include the NVIDIA checks (--no-gpu for "
                                    "CPU-only use).")) -> None:
    """Check everything kolo needs; each ✗ names the exact fix. Exits non-zero when a check fails.

    Example: kolo doctor   |   kolo doctor --no-gpu
    """
    from rich.console import Console
    from rich.table import Table

    rows = run_checks(gpu=gpu)
    t = Table(title="kolo doctor", show_lines=False)
    t.add_column("")
    t.add_column("check")
    t.add_column("detail")
    t.add_column("fix")
    for name, ok, detail, fix in rows:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]–[/]"}[ok]
        t.add_row(mark, name, detail, fix)
    Console(highlight=False).print(t)
    failed = [r for r in rows if r[1] is False]
    if failed:
        print(f"{len(failed)} check(s) failed", file=sys.stderr)
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- shell / logs


def shell() -> None:
    """Open an interactive shell in the container (bash, else sh). There is no SSH server anywhere.

    Example: kolo shell
    """
    from .. import docker_ctl

    docker = _docker_cli()
    c = docker_ctl.require_running(STATE.container)
    code, _ = docker_ctl.exec_capture(c, ["bash", "--version"])
    sh = "bash" if code == 0 else "sh"
    flags = "-it" if sys.stdin.isatty() else "-i"
    rc = subprocess.call([docker, "exec", flags, "-w", CONTAINER_DATA_ROOT, STATE.container, sh])
    if rc != 0:
        raise typer.Exit(rc)


def logs(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new output."),
    tail: int = typer.Option(200, "--tail", help="Lines from the end to show."),
) -> None:
    """Show the container's output.

    Example: kolo logs --tail 50   |   kolo logs -f
    """
    from .. import docker_ctl

    c = docker_ctl.require(STATE.container)
    with docker_ctl.translated():
        if follow:
            try:
                for chunk in c.logs(stream=True, follow=True, tail=tail):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                pass
        else:
            sys.stdout.buffer.write(c.logs(tail=tail))
            sys.stdout.flush()


def register(app: typer.Typer) -> None:
    panel = "Container"
    for fn in (build, up, start, stop, down, status, doctor, shell, logs):
        app.command(fn.__name__, rich_help_panel=panel)(fn)
