"""The data root of a remote engine: files in and out of its container through the Docker API.

On a remote engine the data root is a Docker volume on that machine (``docker_ctl.REMOTE_VOLUME``), out of this
machine's sight. Files cross with ``put_archive`` / ``get_archive`` (a tar stream over the engine's own
connection: an ssh:// engine needs no second channel), and every check that needs the files themselves runs IN the
container, through :data:`REMOTE_SCRIPT` and ``kolo_trainer.runfolder`` there: the same rules (no name that
leaves the data root, a run is a folder with kolo.json) on both sides of the wire.

Both directions are atomic: a file is written under ``.tmp-<pid>-NAME`` beside its final name, its size and
sha256 are checked against the source, and only then is it renamed. An interrupted transfer never leaves part of a
file under the final name, and a repeated one skips the files that already match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from kolo_trainer.errors import KoloError, NameError_, OutputExistsError

from .state import CONTAINER_DATA_ROOT

#: Bytes per read on both directions (the API streams; memory stays flat for a multi-GB GGUF).
CHUNK = 1 << 20
#: A ``.tmp-`` upload in the remote data root untouched this long is a leftover of a killed `kolo data add` (its
#: pid is this machine's, meaningless in the container, so age is the only sign).
STALE_UPLOAD_S = 3600

#: Runs in the container: ``python -c REMOTE_SCRIPT ROOT OP ARGS...``; prints one JSON object. A constant program
#: (argv only, no interpolation). Ops: ``stat REL...`` -> sizes + sha256 (and the trainer's uid/gid, for the tar
#: headers of an upload); ``commit TMP FINAL SHA`` -> rename when the hash matches; ``run NAME Q...`` -> the files
#: `kolo pull` brings back; ``tree NAME`` -> every file a copy of the run carries (a `kolo serve` job's run);
#: ``df`` -> free bytes under the data root.
REMOTE_SCRIPT = r"""
import json, os, sys, time
from kolo_trainer import manifest, runfolder
from kolo_trainer.errors import KoloError, NameError_
root = runfolder.DataRoot(sys.argv[1])
op, args = sys.argv[2], sys.argv[3:]

def info(rel, what):
    p = root.resolve(rel, what)
    if not os.path.lexists(p):
        return None
    if not os.path.isfile(p):
        return {"kind": runfolder.kind_of(p)}
    return {"kind": "file", "size": os.path.getsize(p), "sha256": manifest.sha256_file(p)}

def stat():
    return {"uid": os.getuid(), "gid": os.getgid(), "files": {rel: info(rel, "file") for rel in args}}

def commit():
    tmp, final, sha = root.resolve(args[0], "file"), root.resolve(args[1], "file"), args[2]
    got = manifest.sha256_file(tmp)
    if got != sha:
        os.unlink(tmp)
        raise KoloError("the upload of %s arrived damaged (sha256 %s, sent %s)" % (args[1], got, sha),
                        "run the same command again")
    os.replace(tmp, final)
    for p in final.parent.glob(manifest.TMP_PREFIX + "*"):
        if not p.is_dir() and time.time() - p.lstat().st_mtime > float(args[3]):
            p.unlink()
    return {"ok": True}

def run():
    from kolo_trainer.options import QUANTIZATIONS
    r = root.run(args[0], "RUN")
    r.require(finished=True, verb="pull")
    have = r.quantizations_on_disk()
    want = args[1:] or have
    if not have:
        raise NameError_("%s has no exported GGUF to pull" % r.label,
                         "export it on the engine: kolo export %s --quantization Q4_K_M" % args[0])
    missing = [q for q in want if q not in have]
    if missing:
        raise NameError_("%s has no %s GGUF (exported: %s)" % (r.label, ", ".join(missing), ", ".join(have)),
                         "pull one of those, or export it: kolo export %s --quantization %s" % (args[0], missing[0]))
    from kolo_trainer.export.modelfile import parse
    rels = []
    for q in sorted(want, key=QUANTIZATIONS.index):
        rels.append("gguf/%s-%s.gguf" % (args[0], q))
        mf = r.gguf_dir / ("Modelfile." + q)
        if mf.is_file():
            # an --adapter-only export's Modelfile names the LoRA GGUF beside it (ADAPTER ./RUN-lora-F16.gguf)
            for a in parse(mf.read_text(encoding="utf-8"), str(mf)).adapters:
                rel = "gguf/" + os.path.normpath(a)
                if rel not in rels and rel.count("/") == 1:
                    rels.append(rel)
            rels.append("gguf/Modelfile." + q)
    rels.append(manifest.MANIFEST)  # last: the folder becomes a run here only when everything else arrived
    return {"quantizations": want,
            "files": [[rel, info("outputs/%s/%s" % (args[0], rel), "file")] for rel in rels]}

def tree():
    r = root.run(args[0], "RUN")
    files = r.portable_files() if r.is_run() else []
    rels = [f for f in files if f != manifest.MANIFEST] + [f for f in files if f == manifest.MANIFEST]
    return {"files": [[rel, info("outputs/%s/%s" % (args[0], rel), "file")] for rel in rels]}

def df():
    import shutil
    return {"free": shutil.disk_usage(root.path).free, "writable": os.access(root.path, os.W_OK)}

try:
    print(json.dumps({"stat": stat, "commit": commit, "run": run, "tree": tree, "df": df}[op]()))
except KoloError as e:
    print(json.dumps({"error": e.message, "hint": e.hint, "exit_code": e.exit_code}))
"""


def _script(container: Any, op: str, *args: str) -> dict[str, Any]:
    """Run one :data:`REMOTE_SCRIPT` op in the container; its KoloError comes back as one, with its exit code."""
    from .docker_ctl import exec_capture
    from .errors import DockerError

    code, out = exec_capture(container, ["python", "-c", REMOTE_SCRIPT, CONTAINER_DATA_ROOT, op, *args])
    last = out.strip().splitlines()[-1] if out.strip() else ""
    try:
        res = json.loads(last)
    except ValueError:
        res = None
    if code != 0 or not isinstance(res, dict):
        raise DockerError(f"the data-root check in container {container.name!r} failed (exit {code}): "
                          f"{last[-300:] or 'no output'}", "check that the container runs the kolo image "
                          "(`kolo status`); `kolo --debug ...` shows more")
    if "error" in res:
        err = KoloError(res["error"], res.get("hint"))
        err.exit_code = int(res.get("exit_code") or 1)
        raise err
    return res


def stat(container: Any, rels: list[str]) -> dict[str, Any]:
    """``{"uid", "gid", "files": {rel: None | {"kind", "size", "sha256"}}}`` for paths under the remote data root."""
    return _script(container, "stat", *rels)


def df(container: Any) -> dict[str, Any]:
    """``{"free": bytes, "writable": bool}`` of the data root in the container."""
    return _script(container, "df")


def run_files(container: Any, run: str, quantizations: list[str]) -> list[tuple[str, int, str]]:
    """(path in the run, size, sha256) of what `kolo pull` brings back: GGUFs and Modelfiles, kolo.json last."""
    return _listed(_script(container, "run", run, *quantizations))


def whole_run_files(container: Any, run: str) -> list[tuple[str, int, str]]:
    """The same for every file a copy of the run carries (``Run.portable_files``: no checkpoints), kolo.json last;
    empty when the engine has no such run."""
    return _listed(_script(container, "tree", run))


def _listed(res: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(rel, int(i["size"]), str(i["sha256"])) for rel, i in res["files"] if i and i.get("kind") == "file"]


# ---------------------------------------------------------------------------------------------- upload


def upload(container: Any, src: Path, rel: str, force: bool) -> bool:
    """Copy ``src`` to ``rel`` under the remote data root, atomically; False when an identical file is there."""
    from . import docker_ctl

    size, sha = src.stat().st_size, _sha256(src)
    folder, name = os.path.split(rel)
    tmp_rel = f"{folder}/.tmp-{os.getpid()}-{name}"
    parts = folder.split("/")
    ancestors = ["/".join(parts[:i + 1]) for i in range(len(parts))]  # data, data/sub, ...: made as the trainer's
    st = stat(container, [*ancestors, rel, tmp_rel])
    there = st["files"][rel]
    if there is not None:
        if there.get("sha256") == sha:
            print(f"{rel} is already in the engine's data root (identical); nothing to do")
            return False
        if there.get("kind") != "file":
            raise OutputExistsError(f"{rel} is {there.get('kind')} in the engine's data root",
                                    "choose another name with --as NAME")
        if not force:
            raise OutputExistsError(f"{rel} already exists in the engine's data root",
                                    "pass --force to replace it, or --as NAME to add it under another name")
    for a in ancestors:
        if st["files"][a] not in (None, {"kind": "a folder"}):
            raise OutputExistsError(f"{a} is {st['files'][a].get('kind')} in the engine's data root, not a "
                                    "folder", "remove it in `kolo shell`")
    dirs = [a for a in ancestors if st["files"][a] is None]
    body = _tar_stream(src, tmp_rel, size, dirs, int(st["uid"]), int(st["gid"]))
    with docker_ctl.translated():
        ok = container.put_archive(CONTAINER_DATA_ROOT, body)
    if not ok:
        raise KoloError(f"the engine refused the upload of {rel}", "check `kolo doctor`")
    _script(container, "commit", tmp_rel, rel, sha, str(STALE_UPLOAD_S))
    return True


def push(container: Any, root: Any, rels: list[str]) -> list[str]:
    """Make the files and folders ``rels`` of the local data root (a ``runfolder.DataRoot``) present, identical,
    in the engine's: what is missing there is uploaded (``upload``), what is identical is left, and a file that
    differs is refused, never replaced (the engine's data root may hold a user's own work under that name).
    Returns the paths uploaded. Used by `kolo serve` to send a job's dataset and local base model."""
    local: dict[str, Path] = {}
    for rel in rels:
        path = root.resolve(rel, "file")
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.is_symlink() and not p.name.startswith((".tmp-", ".kolo-tmp")):
                    local[f"{rel}/{p.relative_to(path).as_posix()}"] = p
        elif path.is_file():
            local[rel] = path
    there = stat(container, list(local))["files"] if local else {}
    differ = [rel for rel, p in local.items() if there[rel] is not None and
              (there[rel].get("kind") != "file" or there[rel].get("sha256") != _sha256(p))]
    if differ:
        raise OutputExistsError(f"{len(differ)} file(s) in the engine's data root differ from this server's: "
                                + ", ".join(differ[:5]), "remove or rename them on the engine (`kolo --docker-host "
                                "URL shell`), or give this data a name of its own here")
    sent = [rel for rel, p in local.items() if there[rel] is None]
    for rel in sent:
        upload(container, local[rel], rel, force=False)
    return sent


def _tar_stream(src: Path, arcname: str, size: int, dirs: list[str], uid: int, gid: int) -> Iterator[bytes]:
    """A tar of ``dirs`` and ``src`` (as ``arcname``), generated as it is sent: a large dataset is never held in
    memory or copied to a second file. The entries belong to the trainer's user, who must write next to them."""
    for d in dirs:
        ti = tarfile.TarInfo(d)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, 0o755, uid, gid, int(time.time())
        yield ti.tobuf(format=tarfile.PAX_FORMAT)
    ti = tarfile.TarInfo(arcname)
    ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = size, 0o644, uid, gid, int(src.stat().st_mtime)
    yield ti.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    with open(src, "rb") as f:
        while sent < size and (block := f.read(min(CHUNK, size - sent))):
            sent += len(block)
            yield block
    if sent != size:  # the file shrank since its hash was taken: the commit's hash check would refuse it anyway
        raise KoloError(f"{src} changed while it was being uploaded", "run the same command again")
    yield b"\0" * (-size % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def _sha256(path: Path) -> str:
    from kolo_trainer.manifest import sha256_file

    return sha256_file(path)


# ---------------------------------------------------------------------------------------------- download


class _ChunkReader(io.RawIOBase):
    """The API's chunk iterator as a file, for ``tarfile``'s streaming mode (never the whole archive in memory)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            self._buf = next(self._chunks, b"")
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def fetch(container: Any, rel: str, dest: Path, size: int, sha256: str, chunk: int = CHUNK) -> None:
    """Write the remote ``rel`` (under the data root) to ``dest`` and check it is the file that was listed."""
    from . import docker_ctl

    with docker_ctl.translated():
        chunks, _ = container.get_archive(f"{CONTAINER_DATA_ROOT}/{rel}", chunk_size=chunk)
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(iter(chunks)), CHUNK), mode="r|") as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise NameError_(f"{rel} on the engine is not a regular file")
            src = tar.extractfile(member)
            h, got = hashlib.sha256(), 0
            with open(dest, "wb") as out:
                while block := src.read(chunk):
                    h.update(block)
                    got += len(block)
                    out.write(block)
    if got != size or h.hexdigest() != sha256:
        raise KoloError(f"{rel} changed on the engine while it was pulled ({got} bytes, sha256 {h.hexdigest()[:12]}"
                        f"…, listed {size} bytes, {sha256[:12]}…)", "run the same command again once it is done")


def read_bytes(container: Any, rel: str) -> bytes:
    """A (small) file of the remote data root, checked against the engine's sha256 like every fetch."""
    import tempfile

    there = stat(container, [rel])["files"][rel]
    if there is None or there.get("kind") != "file":
        raise NameError_(f"{rel} is not a file in the engine's data root")
    with tempfile.TemporaryDirectory(prefix="kolo-read-") as d:
        dest = Path(d) / "file"
        fetch(container, rel, dest, int(there["size"]), str(there["sha256"]))
        return dest.read_bytes()


def write_bytes(container: Any, rel: str, data: bytes) -> None:
    """Replace the remote ``rel`` with ``data`` (kolo's own file, e.g. eval.json with judge scores), atomically."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kolo-write-") as d:
        src = Path(d) / os.path.basename(rel)
        src.write_bytes(data)
        upload(container, src, rel, force=True)


def bring(container: Any, run: Any, files: list[tuple[str, int, str]], overwrite: bool,
          on_file: Callable[[str, int], None] = lambda rel, size: None) -> tuple[list, list[str]]:
    """Fetch ``files`` (``run_files`` / ``whole_run_files``) into the local ``run`` (a ``runfolder.Run``), under its
    lock: atomic per file (kolo.json listed last, so the folder becomes a run here only when complete), resumable
    (what already matches is skipped). Returns (fetched, already here)."""
    from kolo_trainer import manifest

    run.refuse_foreign()
    todo, here = _plan(run, files, overwrite)
    if not todo:  # nothing to fetch (or no such run on the engine): no folder, no lock made here
        return todo, here
    run.root.require_free(sum(size for _, size, _ in todo) + 2**20, f"bringing {run.label} here")
    with run.lock():
        for folder in {(run.path / rel).parent for rel, _, _ in todo}:
            manifest.clean_stale_tmp(folder)
        for rel, size, sha in todo:
            with manifest.atomic_path(run.path / rel) as tmp:
                fetch(container, f"outputs/{run.name}/{rel}", tmp, size, sha)
            on_file(rel, size)
    return todo, here


def _plan(run: Any, files: list[tuple[str, int, str]], overwrite: bool) -> tuple[list, list[str]]:
    """(files to fetch, files already here). A different local file is refused (all named) unless ``overwrite``."""
    from kolo_trainer import manifest

    todo, here, differ = [], [], []
    for rel, size, sha in files:
        dest = run.path / rel
        if dest.is_symlink() or (dest.exists() and not dest.is_file()):
            differ.append(f"{run.label}/{rel} (not a regular file)")
        elif not dest.exists():
            todo.append((rel, size, sha))
        elif dest.stat().st_size == size and manifest.sha256_file(dest) == sha:
            here.append(rel)
        else:
            differ.append(f"{run.label}/{rel}")
            todo.append((rel, size, sha))
    bad = [d for d in differ if d.endswith("(not a regular file)")]
    if bad or (differ and not overwrite):
        raise OutputExistsError(f"{len(differ)} file(s) here differ from the engine's: " + ", ".join(differ),
                                None if bad else "pass --overwrite to replace them with the engine's")
    return todo, here


# ---------------------------------------------------------------------------------------------- doctor


def doctor_rows(cl: Any, container: Any, min_free_gib: float) -> list[tuple[str, bool | None, str, str]]:
    """`kolo doctor`'s rows for a remote engine: which one, its round trip, its data root's free space. (The GPU
    checks already run against it: every client kolo makes talks to the selected engine.)"""
    from . import docker_ctl
    from .errors import DockerError

    ep = docker_ctl.endpoint()
    name = f"remote engine {ep.url or 'default'} ({ep.via})"
    if cl is None:
        return [(name, False, "unreachable", "check that `docker info` answers for it (for ssh://: `ssh HOST docker "
                 "info` works without a password prompt, and the user may use Docker there)")]
    ms = docker_ctl.round_trip_ms(cl)
    rows: list[tuple[str, bool | None, str, str]] = [
        (name, True, f"round trip {ms:.1f} ms (median of 5 pings; every exec and transfer pays it)", "")]
    what = "data root on the engine"
    if container is None:
        return rows + [(what, None, "needs a running container", "")]
    volume = docker_ctl.data_root_volume(container)
    where = f"volume {volume!r}" if volume else f"folder {docker_ctl.mounted_data_root(container)}"
    try:
        res = df(container)
    except (DockerError, KoloError) as e:
        return rows + [(what, False, e.message, "recreate the container: `kolo down && kolo up`")]
    free = int(res["free"])
    ok = bool(res["writable"]) and free >= min_free_gib * 2**30
    detail = f"{where}, {free / 2**30:.1f} GiB free" + ("" if res["writable"] else ", not writable")
    return rows + [(what, ok, detail, "" if ok else f"free at least {min_free_gib:g} GiB on the engine's disk "
                    f"(`docker system df`), and let the container's user write to {where}")]
