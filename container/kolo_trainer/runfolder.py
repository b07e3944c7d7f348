"""The one owner of kolo's place on disk: the data root and the run folders in it.

Light (stdlib only): the host CLI and the trainer both use it, so a rule holds on both sides of ``docker exec``.

* **Paths are resolved once**, under the data root. A symbolic link that leads out of the data root is refused
  wherever it sits (``outputs/`` itself, a run folder, a data file); one that stays inside is followed for reading.
  A run folder is never a link: kolo writes and deletes inside it, and must not do that somewhere else.
* **A run is a folder with a ``kolo.json``.** A folder without one holds the user's files, not a run: kolo never
  trains into it (unless it is empty or holds only kolo's own leftovers), never deletes it. ``--overwrite`` and
  ``kolo delete`` remove only the entries of :data:`RUN_ENTRIES` (what kolo writes); anything else stays, named.
* **The manifest** (``kolo.json``) is read through :meth:`Run.manifest`: a damaged file is one clear
  :class:`DamagedManifest` error naming the file, never a JSON traceback.
* **The lock** is :mod:`kolo_trainer.runlock` (one liveness rule, used by train, export and delete).
* **Atomic writes** are :mod:`kolo_trainer.manifest`'s (``atomic_path``, ``write_json_atomic``); leftovers of a
  killed writer are removed by :func:`kolo_trainer.manifest.clean_stale_tmp` once their process is gone.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator

from . import manifest, names
from .errors import KoloError, NameError_, OutputExistsError

#: The folders of a data root (docs/design.md).
SUBDIRS = ("data", "models", "outputs")

#: Everything kolo writes inside a run folder (docs/design.md). ``--overwrite`` and ``kolo delete`` remove these and
#: nothing else; a name starting with ``.tmp-`` is a leftover of an atomic write and counts too.
RUN_ENTRIES = frozenset({
    manifest.MANIFEST, ".lock", "adapter", "model", "checkpoints", "train_log.jsonl", "loss.png", "merged", "gguf",
    "rag", "eval.json", "eval.png", "chats", "runs", "wandb",  # runs/, wandb/: --report-to tensorboard / wandb
})

#: Outputs of a training run that an export derives from; a new training invalidates them.
EXPORT_ENTRIES = ("merged", "gguf")

#: Run entries that stay where the run was made: resumable training state and export intermediates, not the model.
#: Left out of the server's download archive and of the copy a remote engine's run sends back (``portable_files``).
STAY_ENTRIES = frozenset({"checkpoints", "merged", ".lock"})


class DamagedManifest(KoloError):
    """kolo.json exists but cannot be read as a manifest (truncated by a full disk, edited by hand...)."""

    exit_code = 1


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return word
    return "not a regular file"


def kind_of(path: Path) -> str | None:
    """'a folder', 'a file', 'a symbolic link', 'a FIFO', ... or None when nothing is there (links not followed)."""
    try:
        return _kind(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


class DataRoot:
    """The data root, resolved once. ``display`` is how messages name it (the path the user gave)."""

    def __init__(self, path: str | os.PathLike, display: str | None = None):
        text = os.fspath(path)
        if not str(text).strip():
            raise NameError_("the data root is an empty path",
                             hint="pass --data-root DIR (or set KOLO_DATA) to a folder; '' is not the current folder")
        self.path = Path(os.path.realpath(os.path.expanduser(text)))
        self.display = display or str(self.path)

    def __repr__(self) -> str:
        return f"DataRoot({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------- checks
    def check(self, writable: bool = False) -> "DataRoot":
        """The root exists, is a folder, and (``writable``) kolo can create files in it. Cheap; run it first."""
        what = kind_of(self.path)
        if what is None:
            raise KoloError(f"data root {self.display} does not exist",
                            hint="create it (`kolo data add FILE` does), or pass --data-root / set KOLO_DATA")
        if what != "a folder":
            raise KoloError(f"data root {self.display} is {what}, not a folder", hint="pass --data-root DIR")
        if writable:
            self.check_writable(self.path)
        return self

    def check_writable(self, folder: Path) -> None:
        """Create and remove a probe file in ``folder`` (``os.access`` lies for root and for read-only mounts)."""
        probe = folder / f"{manifest.TMP_PREFIX}{os.getpid()}-probe"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise KoloError(f"cannot write in {self._shown(folder)}: {e.strerror or e}",
                            hint=_os_hint(e.errno)) from None

    def require_free(self, need_bytes: int, what: str) -> None:
        """Refuse early when the file system of the data root has less than ``need_bytes`` free."""
        free = shutil.disk_usage(self.path).free
        if free < need_bytes:
            raise KoloError(f"not enough free disk for {what}: {_gib(free)} free on the disk of {self.display}, "
                            f"about {_gib(need_bytes)} needed",
                            hint="free some space (e.g. `kolo delete` an old run), or move the data root")

    # ------------------------------------------------------------------------------------------- paths
    def _shown(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.path)) or "."
        except ValueError:
            return str(p)

    def resolve(self, rel: str, what: str = "name") -> Path:
        """``root/rel`` with every link followed, refusing a name or a link that leads out of the data root."""
        try:
            names.check_relative(rel)
        except ValueError as e:
            raise NameError_(f"{what} {rel!r}: {e}") from None
        p = self.path / rel
        real = Path(os.path.realpath(p))
        if real != self.path and self.path not in real.parents:
            link = self._first_link(rel)
            via = f" through the symbolic link {link} -> {os.readlink(self.path / link)}" if link else ""
            raise NameError_(f"{what} {rel!r} leads outside the data root {self.display}{via}",
                             hint="kolo reads and writes only inside the data root; copy the file in "
                                  "(`kolo data add FILE`) or replace the link with a folder")
        return real

    def _first_link(self, rel: str) -> str | None:
        cur = self.path
        for part in Path(rel).parts:
            cur = cur / part
            if cur.is_symlink():
                return str(cur.relative_to(self.path))
        return None

    def file(self, rel: str, what: str) -> Path:
        """An existing regular file under the root (a FIFO, device or folder is refused before anything opens it)."""
        p = self.resolve(rel, what)
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:
            raise KoloError(f"{what}: {rel} not found under the data root {self.display}",
                            hint="copy it in with `kolo data add FILE`") from None
        if not stat.S_ISREG(mode):  # the same words as `kolo data check` uses for such a file
            raise KoloError(f"{what}: {rel}: not a regular file ({_kind(mode)}); give a JSONL, JSON or CSV file")
        return p

    @property
    def outputs(self) -> Path:
        return self.resolve("outputs", "the outputs folder")

    def run(self, name: str, what: str = "run") -> "Run":
        return Run(self, name, what)

    def runs(self) -> Iterator["Run"]:
        """Every folder under outputs/ (runs and other folders alike; :meth:`Run.is_run` tells them apart)."""
        out = self.outputs
        if not out.is_dir():
            return
        for p in sorted(out.iterdir()):
            if p.name.startswith(".") or not p.is_dir() or p.is_symlink():
                continue
            try:
                yield Run(self, p.name)
            except NameError_:
                continue  # a folder the user named in a way kolo would refuse: not one of kolo's runs


class Run:
    """``<root>/outputs/<name>``: checked on construction (a plain run name, no link, inside the data root)."""

    def __init__(self, root: DataRoot, name: str, what: str = "run"):
        try:
            names.check_run_name(name)
        except ValueError as e:
            raise NameError_(f"{what} name {name!r}: {e}") from None
        self.root, self.name = root, name
        self.label = f"outputs/{name}"
        outputs = root.outputs
        self.path = outputs / name
        if self.path.is_symlink():
            raise NameError_(f"{self.label} is a symbolic link (-> {os.readlink(self.path)}), not a run folder",
                             hint="kolo never writes or deletes through a link; remove the link, or choose "
                                  "another --output-dir")

    def __repr__(self) -> str:
        return f"Run({self.label!r})"

    # ------------------------------------------------------------------------------------------- what is there
    @property
    def manifest_path(self) -> Path:
        return self.path / manifest.MANIFEST

    @property
    def gguf_dir(self) -> Path:
        return self.path / "gguf"

    def exists(self) -> bool:
        return self.path.is_dir()

    def is_run(self) -> bool:
        return self.manifest_path.is_file()

    def check_kind(self) -> None:
        """Nothing, or a folder, is at the run's path (a file there is refused with a message, not a traceback)."""
        what = kind_of(self.path)
        if what not in (None, "a folder"):
            raise OutputExistsError(f"{self.label} is {what}, not a run folder",
                                    hint="choose another --output-dir, or move that file away")

    def foreign_entries(self) -> list[str]:
        """Entries kolo did not write (sorted); empty when the folder does not exist."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.name not in RUN_ENTRIES and not p.name.startswith(manifest.TMP_PREFIX))

    def require(self, finished: bool = False, verb: str = "use", error: type[KoloError] = KoloError) -> dict:
        """The manifest of an existing run (and, with ``finished``, one whose training finished). A missing run or
        a folder that is not a run is a bad name (exit 2); an unfinished one raises ``error``."""
        self.check_kind()
        if not self.exists():
            raise NameError_(f"no run {self.name!r} under {self.root.display}/outputs",
                             hint="see the runs with `kolo list`, or train one with `kolo train --output-dir NAME`")
        if not self.is_run():
            raise NameError_(f"{self.label} is not a kolo run (it has no {manifest.MANIFEST})",
                             hint="kolo only works on folders it made; see the runs with `kolo list`")
        data = self.manifest()
        if finished and data.get("status") != "finished":
            raise error(f"cannot {verb} {self.label}: its training did not finish "
                        f"(status: {data.get('status') or 'unknown'})",
                        hint="continue it with `kolo train --resume --output-dir ...`, or train again")
        return data

    # ------------------------------------------------------------------------------------------- manifest
    def manifest(self) -> dict[str, Any]:
        """The manifest ({} when there is none); :class:`DamagedManifest` when it cannot be read."""
        try:
            data = manifest.load(self.path)
        except (ValueError, UnicodeDecodeError) as e:
            raise DamagedManifest(f"{self.label}/{manifest.MANIFEST} is damaged ({_short(e)})",
                                  hint=f"restore it from a backup, or remove the run with `kolo delete {self.name}` "
                                       "and train again") from None
        except OSError as e:
            raise KoloError(f"cannot read {self.label}/{manifest.MANIFEST}: {e.strerror or e}") from None
        if not isinstance(data, dict):
            raise DamagedManifest(f"{self.label}/{manifest.MANIFEST} is damaged (not a JSON object)",
                                  hint=f"remove the run with `kolo delete {self.name}` and train again")
        return data

    def status(self, data: dict | None = None) -> str:
        """The run's status as kolo.json says, except that a run "running" with nobody holding its lock is
        "interrupted" (its process died without a word: SIGKILL, a power cut, a full disk)."""
        data = self.manifest() if data is None else data
        status = str(data.get("status") or "unknown")
        return "interrupted" if status == "running" and self.holder() is None else status

    def update(self, **sections: Any) -> dict[str, Any]:
        self.manifest()  # a damaged manifest is reported, never silently replaced
        return manifest.update(self.path, **sections)

    # ------------------------------------------------------------------------------------------- lock
    def lock(self) -> Any:
        """The run's lock (``with run.lock(): ...``); refuses with a message when a live process holds it."""
        from .runlock import RunLock

        return RunLock(self.path, self.label)

    def holder(self, foreign_is_live: bool = True) -> dict | None:
        """Who holds the run's lock (by the one liveness rule of :mod:`runlock`), or None."""
        from .runlock import live_holder

        return live_holder(self.path, foreign_is_live)

    # ------------------------------------------------------------------------------------------- writing
    def refuse_foreign(self) -> None:
        """Refuse to train into a folder that holds the user's files (one without kolo.json that is not empty
        apart from kolo's own leftovers). ``--overwrite`` does not change this: it replaces a *run*."""
        self.check_kind()
        foreign = self.foreign_entries()
        if foreign and not self.is_run():
            raise OutputExistsError(
                f"{self.label} exists and is not a kolo run (no {manifest.MANIFEST}); it holds "
                f"{_list(foreign)}, which kolo did not write",
                hint="choose another --output-dir; kolo never trains into (or deletes) a folder of your own files")

    def remove_entries(self, entries: Any = RUN_ENTRIES, keep: tuple[str, ...] = (".lock",)) -> list[str]:
        """Remove kolo's ``entries`` (and ``.tmp-`` leftovers) from the run folder; returns what was removed.

        Each entry is renamed to a temporary name first, so a crash part-way never leaves half of it under its
        real name."""
        removed = []
        if not self.path.is_dir():
            return removed
        for p in sorted(self.path.iterdir()):
            if p.name in keep or not (p.name in entries or p.name.startswith(manifest.TMP_PREFIX)):
                continue
            doomed = p if p.name.startswith(manifest.TMP_PREFIX) else \
                self.path / f"{manifest.TMP_PREFIX}{os.getpid()}-rm-{p.name}"
            if doomed != p:
                os.replace(p, doomed)
            _remove(doomed)
            removed.append(p.name)
        return removed

    def delete(self) -> list[str]:
        """Delete the run: kolo's entries, then the folder itself if nothing else is left. Returns the entries
        kolo kept because it did not write them (the folder then stays)."""
        self.require()
        with self.lock():
            self.remove_entries(keep=(".lock",))
        kept = self.foreign_entries()
        if not kept:
            try:
                self.path.rmdir()
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
        return kept

    def portable_files(self) -> list[str]:
        """Every regular file of the run (paths relative to it, sorted) but :data:`STAY_ENTRIES` and leftovers of
        atomic writes: what a copy of the run carries. Links are never followed or listed."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=False):
            rel = os.path.relpath(dirpath, self.path)
            top = rel == "."
            dirnames[:] = sorted(d for d in dirnames if not (top and d in STAY_ENTRIES)
                                 and not d.startswith(manifest.TMP_PREFIX)
                                 and not os.path.islink(os.path.join(dirpath, d)))
            for name in sorted(filenames):
                if (top and name in STAY_ENTRIES) or name.startswith((manifest.TMP_PREFIX, ".kolo-tmp")):
                    continue
                if stat.S_ISREG(os.lstat(os.path.join(dirpath, name)).st_mode):
                    out.append(name if top else f"{rel}/{name}")
        return out

    def quantizations_on_disk(self) -> list[str]:
        """Quantisations with a finished ``<run>-<Q>.gguf`` in gguf/ (partial ``.tmp-`` files do not count)."""
        from .options import QUANTIZATIONS

        found = []
        if self.gguf_dir.is_dir():
            for p in self.gguf_dir.glob("*.gguf"):
                q = p.stem.rsplit("-", 1)[-1].upper()
                if not p.name.startswith(".") and q in QUANTIZATIONS and q not in found:
                    found.append(q)
        return sorted(found, key=QUANTIZATIONS.index)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def _list(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
    return f"{len(items)} entr{'y' if len(items) == 1 else 'ies'} ({shown})"


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _os_hint(err: int | None) -> str:
    return {
        errno.EROFS: "the data root is on a read-only file system; pass --data-root to a writable folder",
        errno.EACCES: "you lack write permission there; fix the owner (files written in the container belong to "
                      "KOLO_UID) or pass --data-root to a folder you own",
        errno.EPERM: "you lack write permission there; pass --data-root to a folder you own",
        errno.ENOSPC: "the disk is full; free some space (e.g. `kolo delete` an old run) and run the command again",
        errno.EDQUOT: "your disk quota is used up; free some space and run the command again",
    }.get(err or 0, "check the folder's permissions and free space")


def os_error(e: OSError, doing: str) -> KoloError:
    """An OSError (disk full, read-only, permission) as one KoloError naming what kolo was doing and the fix."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return KoloError(f"{doing}: {e.strerror or e}{where}", hint=_os_hint(e.errno))
