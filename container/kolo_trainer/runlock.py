"""One process at a time per run folder (train, export, delete): ``<run>/.lock`` holding ``{"pid", "host", "started"}``.

Used through :class:`kolo_trainer.runfolder.Run` (``run.lock()``, ``run.holder()``), on the host and in the
container alike. Two mechanisms, because each covers the other's blind spot:

* ``fcntl.flock`` on the lock file is the real mutual exclusion. The kernel drops it when the process dies
  (SIGKILL and OOM included), so a crashed run never blocks the next one, and two containers that share the data
  root through a bind mount still see each other's lock (same kernel, same inode).
* The JSON content names the holder for the error message, and is the fallback where flock is a no-op
  (some network file systems): a lock whose pid is alive on this host is respected, one whose pid is gone is stale
  and taken over. "Alive" means: in /proc, not a zombie, and with the start time recorded in the lock (a reused
  pid is not the holder).

The one liveness rule (:func:`live_holder`, also what :meth:`RunLock.acquire` applies): a lock is held when its
flock is taken, or when its content names a live process of this host, or a process of another host (a lock
written inside the kolo container, seen from the host, or the other way round: its pid cannot be checked from
here, so it is honoured; the refusal says how to remove it if that container is gone).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
from pathlib import Path

from .errors import OutputExistsError

LOCK_NAME = ".lock"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc, or None when there is no such process or no /proc.

    Why: ``os.kill(pid, 0)`` also succeeds for a zombie (a killed trainer whose parent died too and that nobody
    reaped) and for an unrelated process that reused the pid (a restarted container numbers its processes from 1
    again). Either would make a crashed run's lock look held forever."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _self_start() -> str | None:
    st = _proc_stat(os.getpid())
    return st[1] if st else None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """A live (not zombie) process with that pid on this host, and with that start time when one is given."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            return False
        return start is None or st[1] == str(start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_holder(path: str | os.PathLike) -> dict | None:
    """The lock file's content, or None when it is missing or unreadable (a torn write counts as stale)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_stale(holder: dict | None) -> bool:
    """A lock is stale when its process is gone. A lock from another host cannot be checked, so it is live."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return True
    if pid == os.getpid():
        # Our own pid: ours only if the start time matches too. A restarted container numbers its processes from 1
        # again, so a new trainer can get exactly the pid its crashed predecessor wrote into the lock.
        start = holder.get("start")
        return start is not None and str(start) != str(_self_start())
    return not pid_alive(pid, holder.get("start"))


def live_holder(run_dir: str | os.PathLike, foreign_is_live: bool = True) -> dict | None:
    """Who holds ``run_dir/.lock`` by the one rule above, or None when nobody does. Takes nothing.

    ``foreign_is_live=False`` is for a caller that is about to hand the work to the other host (the host CLI
    before `docker exec`): a lock of another host whose flock is free is then left for the trainer to judge
    there, where its pid can be checked (a container restarted after a crash keeps its hostname)."""
    import fcntl

    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return read_holder(path) or {"pid": "?", "host": "?"}
        raise
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    holder = read_holder(path)
    if holder and not foreign_is_live and holder.get("host") != socket.gethostname():
        return None
    return None if is_stale(holder) else holder


class RunLock:
    """Hold ``<run_dir>/.lock`` for the life of the process (or until :meth:`release`)."""

    def __init__(self, run_dir: str | os.PathLike, display_name: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.display_name = display_name or str(self.run_dir)
        self._fd: int | None = None

    def _refuse(self, holder: dict | None) -> OutputExistsError:
        who = ""
        if holder:
            who = f" (pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')})"
        return OutputExistsError(
            f"{self.display_name} is in use by another kolo process{who}",
            hint="wait for it to finish, or pick another --output-dir; if no run is active (e.g. it ran in another "
                 f"container that is gone), delete {self.path}",
        )

    def acquire(self) -> "RunLock":
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self._refuse(read_holder(self.path)) from None
                raise
            # The holder may have unlinked the file between our open and flock: then we locked a dead inode and
            # must retry on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = read_holder(self.path)
            if holder and not is_stale(holder) and int(holder.get("pid", -1)) != os.getpid():
                # flock granted but a live process claims the file: flock does not work on this file system.
                os.close(fd)
                raise self._refuse(holder)
            content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": _self_start(),
                                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
            os.ftruncate(fd, 0)
            os.pwrite(fd, (content + "\n").encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise self._refuse(read_holder(self.path))

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink before closing so nobody can lock the old inode after we let go (acquire re-checks the inode).
        try:
            holder = read_holder(self.path)
            if holder and int(holder.get("pid", -1)) == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, TypeError):
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
