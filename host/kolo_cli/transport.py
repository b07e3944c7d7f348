"""One trainer argv, two ways to run it: in the kolo container (``docker exec``) or as a local subprocess.

:func:`trainer_argv` is the only place the trainer command line is built (from ``spec.to_argv``); the transports
only decide *where* it runs and which data root the trainer sees. Everything is an argv list: a name with a quote,
a space or a ``;`` is one inert argument, never shell code.

Both transports stream stdout/stderr live, hand ``@@kolo`` progress lines to the renderer, and return the
trainer's exit code (which becomes kolo's). Ctrl-C stops the trainer itself, not just the client:

* ``docker exec`` does not forward signals, and killing the client leaves the process running in the container,
  holding the GPU. So every exec carries a unique ``KOLO_RUN_ID`` in its environment; on Ctrl-C a second exec
  (:data:`STOP_SCRIPT`) finds the processes with that marker in ``/proc/*/environ`` (the trainer and its
  children), sends SIGINT, waits a grace period for the trainer to save and exit, then SIGKILLs what is left.
* The child is started in its own session, so a terminal Ctrl-C reaches kolo only and the trainer gets exactly
  one SIGINT, from us (two would interrupt its clean shutdown).
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from kolo_trainer.progress import parse_line

from kolo_trainer.errors import KoloError

from .errors import ContainerGone, DockerCliMissing, Interrupted, TrainerDied
from .state import CONTAINER_DATA_ROOT

#: Environment passed by NAME into the container (``docker exec -e NAME``): the docker client copies the value
#: from its own environment, so secrets never appear in any argv (``ps``, ``docker inspect``, --dry-run).
PASSTHROUGH_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                   "TRANSFORMERS_OFFLINE", "KOLO_DEBUG", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY",
                   "WANDB_BASE_URL")

#: Seconds the trainer gets after SIGINT to finish its checkpoint / manifest before SIGKILL.
DEFAULT_GRACE_S = 30.0

#: Runs inside the container on Ctrl-C: argv = [marker, grace seconds]. A constant program (no interpolation).
STOP_SCRIPT = r"""
import os, signal, sys, time
marker = ("KOLO_RUN_ID=" + sys.argv[1]).encode() + b"\0"
grace = float(sys.argv[2])
me = os.getpid()
def marked():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read()
            with open("/proc/%s/stat" % d, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and (env.startswith(marker) or b"\0" + marker in env):
            out[int(d)] = int(fields[1])
    return out
found = marked()
pids = [p for p, parent in found.items() if parent not in found]
for p in pids:  # the top ones only: torchrun passes SIGINT on to its ranks; a second one would skip their checkpoint
    try: os.kill(p, signal.SIGINT)
    except OSError: pass
deadline = time.time() + grace
while marked() and time.time() < deadline:
    time.sleep(0.1)
left = list(marked())
for p in left:
    try: os.kill(p, signal.SIGKILL)
    except OSError: pass
print("stopped %d process(es)%s" % (len(pids), ", %d killed after %gs" % (len(left), grace) if left else ""))
"""


def trainer_argv(verb: str, model: type | None, explicit: dict[str, Any], data_root: str | os.PathLike,
                 extra: Sequence[str] = ()) -> list[str]:
    """``python -m kolo_trainer VERB [options] [extra] --data-root ROOT``; options from ``spec.to_argv``.

    ``explicit`` holds only the options that were given (config + flags), so an explicit 0 or False survives and
    every default stays the trainer's. ``argv[0]`` is ``python``; a transport swaps in the interpreter it uses.
    """
    launcher = launcher_argv(model, explicit)
    argv = ["python", *launcher, *([] if launcher else ["-m"]), "kolo_trainer", verb]
    if model is not None:
        from kolo_trainer.spec import to_argv

        argv += to_argv(model, explicit)
    argv += list(extra)
    argv += ["--data-root", str(data_root)]
    return argv


def launcher_argv(model: type | None, explicit: dict[str, Any]) -> list[str]:
    """The torchrun part of a multi-process run (``--nproc``/``--nnodes`` above 1), else nothing.

    kolo_trainer.train.launch is torchrun itself (torch.distributed.run's own parser and launcher) plus kolo's
    error mapping, so the workers are ``python -m kolo_trainer train ...`` exactly as for one process, in the same
    container. One node: a standalone rendezvous on a free local port. Several: the static rendezvous on
    --master-addr/--master-port, where --node-rank decides which machine holds rank 0 (the one that writes the
    run folder); c10d's dynamic rendezvous would hand rank 0 to whichever node it sorts first.
    """
    fields = getattr(model, "model_fields", {})
    if "nproc" not in fields:
        return []
    value = {k: explicit.get(k, fields[k].get_default()) for k in ("nproc", "nnodes", "node_rank", "master_addr",
                                                                    "master_port")}
    if int(value["nproc"]) * int(value["nnodes"]) <= 1:
        return []
    argv = ["-m", "kolo_trainer.train.launch", f"--nproc-per-node={int(value['nproc'])}"]
    if int(value["nnodes"]) == 1:
        # --local-addr: the ranks meet on 127.0.0.1, not on this machine's host name, which a container need not
        # be able to resolve (seen: a container with --network none hung in the rendezvous).
        argv += ["--standalone", "--local-addr=127.0.0.1"]
    else:
        argv += [f"--nnodes={int(value['nnodes'])}", f"--node-rank={int(value['node_rank'])}",
                 f"--master-addr={value['master_addr']}", f"--master-port={int(value['master_port'])}"]
    # "-m --": torchrun's parser stops there, so the trainer's own flags (--nproc=2 ...) are never taken for
    # (abbreviations of) torchrun's; the worker command stays `python -m kolo_trainer VERB ...`.
    return argv + ["-m", "--"]


class Transport:
    """Where the trainer runs. Subclasses define :attr:`data_root`, :meth:`command` and :meth:`stop`."""

    name = "?"
    data_root: str
    #: Settings for the trainer's environment (not secrets: docker exec gets them with their value), e.g. the
    #: CUDA_VISIBLE_DEVICES that pins a `kolo serve` worker to its GPU. Replaced, never mutated in place.
    env: dict[str, str] = {}

    def command(self, argv: list[str], interactive: bool = False) -> list[str]:
        raise NotImplementedError

    def preflight(self) -> None:
        """Fail early with a one-line message when the runtime is not usable."""

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def stop(self, proc: subprocess.Popen, grace_s: float) -> str:
        raise NotImplementedError

    def dry_run_line(self, argv: list[str]) -> str:
        return shlex.join(self.command(argv))

    # ------------------------------------------------------------------ running

    def run(self, argv: list[str], renderer: Any = None, interactive: bool = False,
            grace_s: float | None = None) -> int:
        """Run ``argv`` (from :func:`trainer_argv`) and return its exit code; Ctrl-C stops it and raises
        :class:`Interrupted`. ``interactive`` passes the terminal straight through (for chat)."""
        self.preflight()
        if grace_s is None:
            grace_s = float(os.environ.get("KOLO_STOP_GRACE_S", DEFAULT_GRACE_S))
        cmd = self.command(argv, interactive=interactive)
        kwargs = self.popen_kwargs()
        if interactive:
            # Same session as kolo: `docker exec -it` needs the terminal (raw mode passes ^C to the container).
            proc = subprocess.Popen(cmd, **kwargs)
            return self._wait(proc, None, grace_s)
        if os.name == "posix":
            kwargs["start_new_session"] = True
        die_with_kolo = _die_with_parent_fn()
        if die_with_kolo is not None:
            kwargs["preexec_fn"] = die_with_kolo
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                **kwargs)
        rc = self._wait(proc, renderer, grace_s)
        self.explain_exit(rc)
        return rc

    def explain_exit(self, rc: int) -> None:
        """Raise a one-line error when the trainer did not end on its own (killed by a signal), so the user
        learns what happened and how to continue instead of seeing the output just stop."""
        if rc < 0:
            raise _killed(-rc, "")


    def _wait(self, proc: subprocess.Popen, renderer: Any, grace_s: float) -> int:
        lines: queue.Queue = queue.Queue()
        readers = []
        if renderer is not None and proc.stdout is not None:
            for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
                t = threading.Thread(target=_pump, args=(stream, name, lines), daemon=True)
                t.start()
                readers.append(t)
        readers_open = [len(readers)]
        old_term = _sigterm_as_interrupt()
        try:
            try:
                _drain(proc, readers, lines, renderer, readers_open=readers_open)
            except KeyboardInterrupt:
                if renderer is not None:
                    renderer.log("interrupted: stopping the trainer ...", "stderr")
                else:
                    print("\ninterrupted: stopping the trainer ...", file=sys.stderr)
                try:
                    msg = self.stop(proc, grace_s)
                    _drain(proc, readers, lines, renderer, grace_s + 15, readers_open)
                except KeyboardInterrupt:  # a second Ctrl-C: no more patience
                    msg = self.stop(proc, 0)
                    _drain(proc, readers, lines, renderer, 15, readers_open)
                raise Interrupted(f"interrupted: {msg} (exit code {proc.returncode})",
                                  "run the same command again to continue; training resumes from its last "
                                  "checkpoint with --resume")
        finally:
            _restore_sigterm(old_term)
            if proc.poll() is None:  # never leave a client process behind us
                proc.kill()
                proc.wait()
            if renderer is not None:
                renderer.close()
        return proc.returncode


def _killed(signum: int, where: str) -> KoloError:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    why = " (out of memory? check `dmesg` / Docker's memory limit)" if signum == signal.SIGKILL else ""
    return TrainerDied(f"the trainer was killed by {name}{where}{why}",
                       "run the same command with --resume to continue from the last checkpoint",
                       128 + signum)



def _die_with_parent_fn() -> Any:
    """A preexec_fn that makes the child get SIGTERM when kolo dies, however it dies (Linux only, else None).

    Why: the child runs in a session of its own (so a terminal's Ctrl-C reaches kolo, which stops it in order),
    which also means nothing stops it when kolo itself is SIGKILLed or loses its terminal: an orphaned trainer
    would hold the run lock and the GPU. SIGTERM, not SIGKILL: the trainer answers it with a checkpoint and a clean
    stop, so `--resume` continues."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    PR_SET_PDEATHSIG = 1

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # kolo died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec

def _pump(stream: Any, name: str, lines: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put((name, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
    finally:
        lines.put((name, None))


def _drain(proc: subprocess.Popen, readers: list, lines: queue.Queue, renderer: Any,
           timeout: float | None = None, readers_open: list[int] | None = None) -> None:
    """Render lines as they come until the process exits and both pipes are closed.

    ``readers_open`` is a one-element counter of pipes not yet closed, shared between calls (after Ctrl-C the
    remaining output is drained by a second call)."""
    readers_open = readers_open if readers_open is not None else [len(readers)]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is not None and time.monotonic() > deadline:
            return
        if not readers:
            try:
                proc.wait(timeout=0.2)
                return
            except subprocess.TimeoutExpired:
                continue
        try:
            name, line = lines.get(timeout=0.2)
        except queue.Empty:
            if readers_open[0] == 0 and proc.poll() is not None:
                return
            continue
        if line is None:
            readers_open[0] -= 1
            if readers_open[0] == 0:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
                return
            continue
        ev = parse_line(line) if name == "stdout" else None
        if ev is not None:
            renderer.event(ev)
        else:
            renderer.log(line, name)


def _sigterm_as_interrupt() -> Any:
    """Treat SIGTERM (``timeout``, ``kill``) like Ctrl-C so the in-container trainer is stopped too."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(old: Any) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


class LocalTransport(Transport):
    """The trainer as a subprocess of this Python (the CPU demo, tests). The data root is the host folder."""

    name = "local"

    def __init__(self, data_root: str | os.PathLike, debug: bool = False):
        self.data_root = str(Path(data_root).resolve())
        self.debug = debug

    def command(self, argv: list[str], interactive: bool = False) -> list[str]:
        return [sys.executable] + argv[1:]

    def popen_kwargs(self) -> dict[str, Any]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        if self.debug:
            env["KOLO_DEBUG"] = "1"
        return {"env": env}

    def stop(self, proc: subprocess.Popen, grace_s: float) -> str:
        if proc.poll() is not None:
            return "the trainer had already exited"
        if grace_s > 0:
            proc.send_signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
                return "stopped the trainer process"
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait()
        return f"killed the trainer process after {grace_s:g}s"


class DockerTransport(Transport):
    """``docker exec`` into the kolo container through the docker CLI (it streams and handles TTYs; the SDK's
    exec API would need our own demultiplexing). The data root is the container's mount point."""

    name = "docker"

    def __init__(self, container: str, host_data_root: str | os.PathLike | None = None, debug: bool = False,
                 run_id: str | None = None, engine: Any = None):
        self.container = container
        #: docker_ctl.Endpoint of the engine to run on; None: the process's engine (--docker-host, DOCKER_HOST...).
        #: `kolo serve --engine` gives each worker its own, so one server drives several engines at once.
        self.engine = engine
        self.host_data_root = None if host_data_root is None else str(Path(host_data_root).resolve())
        self.data_root = CONTAINER_DATA_ROOT
        self.debug = debug
        self.run_id = run_id or uuid.uuid4().hex[:12]

    def _docker(self) -> str:
        exe = shutil.which("docker")
        if exe is None:
            raise DockerCliMissing()
        return exe

    def command(self, argv: list[str], interactive: bool = False) -> list[str]:
        cmd = ["docker", "exec"]
        if interactive:
            cmd.append("-it" if sys.stdin.isatty() and sys.stdout.isatty() else "-i")
        cmd += ["-e", "PYTHONUNBUFFERED=1", "-e", f"KOLO_RUN_ID={self.run_id}"]
        if self.debug:
            cmd += ["-e", "KOLO_DEBUG=1"]
        for name in PASSTHROUGH_ENV:
            if name in os.environ and not (name == "KOLO_DEBUG" and self.debug):
                cmd += ["-e", name]  # by name only: the value never enters argv
        for name, value in self.env.items():
            cmd += ["-e", f"{name}={value}"]
        return cmd + [self.container] + argv

    def preflight(self) -> None:
        self._docker()
        from . import docker_ctl

        container = self.container_obj()
        if self.host_data_root is not None:
            docker_ctl.check_data_root(container, self.host_data_root)

    def _client(self, timeout: int = 30) -> Any:
        from . import docker_ctl

        return docker_ctl.client(timeout=timeout, engine=self.engine)

    def container_obj(self) -> Any:
        """The running container (docker-py), on this transport's engine."""
        from . import docker_ctl

        return docker_ctl.require_running(self.container, self._client())

    def _cli_env(self) -> dict[str, str] | None:
        return None if self.engine is None else self.engine.cli_env()

    def popen_kwargs(self) -> dict[str, Any]:
        env = self._cli_env()
        return {"executable": self._docker(), **({} if env is None else {"env": env})}

    def explain_exit(self, rc: int) -> None:
        # docker exec reports a process killed by a signal as 128 + signal. 137 (SIGKILL) and 143 (SIGTERM) are
        # also what a `docker stop` of the whole container looks like, so ask the engine which one it was.
        if rc not in (137, 143):
            return
        from . import docker_ctl

        state = None
        try:
            cl = self._client(timeout=10)
            # `docker exec` can return a moment before the engine marks a stopping container as exited.
            for _ in range(6):
                c = docker_ctl.find(cl, self.container)
                state = "was removed" if c is None else (None if c.status == "running" else f"stopped ({c.status})")
                if state is not None:
                    break
                time.sleep(0.5)
        except KoloError:
            state = None  # the engine itself is unreachable: the exit code is all we know
        if state is not None:
            raise ContainerGone(self.container, state)
        if rc == 137:
            raise _killed(9, f" inside container {self.container!r}")
        # 143 with the container running: the trainer handled SIGTERM itself and already said so.

    def stop(self, proc: subprocess.Popen, grace_s: float) -> str:
        stop = [self._docker(), "exec", self.container, "python", "-c", STOP_SCRIPT, self.run_id, str(grace_s)]
        try:
            done = subprocess.run(stop, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=grace_s + 30, env=self._cli_env())
            detail = (done.stdout.strip() or done.stderr.strip() or f"exit {done.returncode}").splitlines()[-1]
        except subprocess.TimeoutExpired:
            detail = "the stop command timed out"
        return f"{detail} inside container {self.container!r}"


def make_transport(runtime: str, container: str, data_root: str | os.PathLike | None, debug: bool = False,
                   env: dict[str, str] | None = None, engine: Any = None, run_id: str | None = None) -> Transport:
    """``data_root``: the host folder the container mounts (checked before each run); None for an engine whose
    data root is out of this machine's sight. ``engine``, ``run_id``: see :class:`DockerTransport` (a known
    run_id lets a later process stop what this one started, e.g. `kolo serve` after a crash)."""
    transport: Transport = LocalTransport(data_root, debug=debug) if runtime == "local" else \
        DockerTransport(container, host_data_root=data_root, debug=debug, engine=engine, run_id=run_id)
    transport.env = dict(env or {})
    return transport
