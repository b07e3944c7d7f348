"""The job runner: queued jobs run one at a time per worker thread, through the CLI's own pipeline and transports.

A job runs exactly the trainer argv of ``kolo train`` (:func:`kolo_cli.pipeline.train_steps`) or of ``kolo
export``, through :func:`kolo_cli.transport.make_transport` -- the same code, the same Ctrl-C path. Only the
renderer differs: :class:`JobRenderer` records events and log lines for the job instead of printing them.

Honest states: ``completed`` only when every step exited 0 AND the run's kolo.json says the work finished;
``cancelled`` only when a user asked; ``interrupted`` when the server went away while the trainer ran (found at
the next start, see :meth:`Worker.recover`). No timer ever decides a state.

Each worker thread has a :class:`Slot`: the Docker engine it runs on and its share of that engine's GPUs. The
server's own engine is ``home``; `kolo serve --engine URL` adds the workers of another (a GPU box over ssh://).
A job records the engine that ran it, and its resume and export go back there (the checkpoints are there). An
engine whose data root is not this one (``Slot.remote``) gets the job's dataset and local base model pushed into its
data root first (``remote_data.push``: atomic, checked, never replacing a different file), and the run, without
its checkpoints, is brought back here when the trainer ends (``remote_data.bring``), so downloads, deploys, chat
and eval work on it as on a run made here.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from sqlmodel import Session, select

from . import db
from .db import Job

#: Seconds the trainer gets to checkpoint after a cancel before it is killed (Transport.stop's grace).
CANCEL_GRACE_S = 30.0
#: The name of the server's own engine (--runtime / --docker-host); only it builds RAG indexes.
HOME = "home"


@dataclass(frozen=True)
class Slot:
    """Where one worker thread runs its jobs."""

    engine: str = HOME  # the engine's name: jobs record it (Job.engine)
    gpu: Optional[str] = None  # this worker's CUDA_VISIBLE_DEVICES (assign_gpus); None: unpinned
    endpoint: Any = None  # docker_ctl.Endpoint of an --engine; None: the server's own engine
    remote: bool = False  # its data root is not this one: inputs are pushed there, the run brought back


class JobRenderer:
    """A transport renderer (``event`` / ``log`` / ``close``) that records into the job instead of a terminal."""

    def __init__(self, worker: "Worker", job_id: int, exporting: bool):
        self.worker, self.job_id, self.exporting = worker, job_id, exporting
        self.log_file = open(worker.log_path(job_id), "a", encoding="utf-8")
        self.errors: collections.deque[str] = collections.deque(maxlen=8)

    def event(self, ev: dict[str, Any]) -> None:
        kind = str(ev.get("event", "event"))
        fields: dict[str, Any] = {}
        if kind == "progress" and ev.get("stage") == "train" and not self.exporting:
            fields = {"step": ev.get("step"), "total_steps": ev.get("total"), "eta_s": ev.get("eta_s")}
            for key in ("loss", "eval_loss"):
                if ev.get(key) is not None:
                    fields[key] = ev.get(key)
        elif kind == "stage" and ev.get("stage") == "export":
            fields = {"status": db.EXPORTING}
        if fields:
            db.update_job(self.worker.engine, self.job_id, **fields)
        db.add_event(self.worker.engine, self.job_id, kind, ev)
        self.worker.publish(self.job_id)

    def log(self, line: str, stream: str) -> None:
        self.log_file.write(line + "\n")
        self.log_file.flush()
        if stream == "stderr" and line.strip():
            self.errors.append(line.strip())

    def close(self) -> None:
        self.log_file.flush()


class Worker:
    """``workers`` threads; each takes the oldest queued job, runs it to the end, then the next."""

    def __init__(self, engine: Any, data_root: Path, runtime: str, container: str, workers: int = 1,
                 publish: Callable[[int], None] = lambda job_id: None, debug: bool = False,
                 gpus: Optional[list[Optional[str]]] = None, slots: Optional[list[Slot]] = None):
        self.engine, self.data_root, self.runtime, self.container = engine, data_root, runtime, container
        self.publish, self.debug = publish, debug
        if slots is None:  # the server's own engine only, worker i on GPU share i (assign_gpus)
            slots = [Slot(HOME, g) for g in (gpus if gpus is not None else [None] * workers)]
        self.slots = list(slots)
        self.workers = len(self.slots)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.claim_lock = threading.Lock()
        self.running: dict[int, Any] = {}  # job id -> its transport (holds the live process)
        self.threads: list[threading.Thread] = []
        self.logs = data_root / "server" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def log_path(self, job_id: int) -> Path:
        return self.logs / f"job-{job_id}.log"

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.recover()
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, args=(i,), name=f"kolo-worker-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def recover(self) -> None:
        """Jobs that were running when the server last stopped become ``interrupted``. A local trainer died with
        the server (the kernel's parent-death signal); one started by ``docker exec`` did not (the engine keeps an
        exec'd process when its client dies), so it is stopped first as a cancel stops it (SIGINT: it saves a
        checkpoint), found by the job's own run id. In the background: a server with many such jobs starts at once."""
        with Session(self.engine) as s:
            stale = [(int(j.id), j.engine) for j in s.exec(select(Job).where(Job.status.in_((db.RUNNING,
                                                                                           db.EXPORTING))))]
        for job_id, engine in stale:
            slot = next((i for i, sl in enumerate(self.slots) if sl.engine == (engine or HOME)), None)
            if slot is None or (self.slots[slot].endpoint is None and self.runtime == "local"):
                self._interrupted(job_id)
            else:
                threading.Thread(target=self._stop_orphan, args=(job_id, slot), daemon=True).start()

    def _stop_orphan(self, job_id: int, index: int) -> None:
        from kolo_trainer.errors import KoloError

        transport = self.transport(index, job_id)
        try:
            said = transport.stop(None, CANCEL_GRACE_S)
        except KoloError as e:
            said = e.message
        self._note(job_id, f"kolo serve started again: {said}")
        job = db.get_job(self.engine, job_id)
        if self.slots[index].remote:
            self._bring_back(job, transport, None)
        self._interrupted(job_id)

    def _interrupted(self, job_id: int) -> None:
        self.finish(job_id, db.INTERRUPTED, error="the server stopped while this job ran; resume it to continue "
                                                   "from its last checkpoint")

    def shutdown(self) -> None:
        """Stop the running trainers (each saves a checkpoint) and mark their jobs ``interrupted``."""
        self.stopping.set()
        self.wake.set()
        for job_id in list(self.running):
            self._stop_process(job_id)
        for t in self.threads:
            t.join(timeout=CANCEL_GRACE_S + 20)

    # ----------------------------------------------------------------------------------------- the loop
    def _loop(self, index: int = 0) -> None:
        while not self.stopping.is_set():
            job_id = self._claim(index)
            if job_id is None:
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            try:
                self._run(job_id, index)
            except Exception as e:  # a bug must fail the job, never kill the worker thread
                self.finish(job_id, db.FAILED, error=f"internal error: {type(e).__name__}: {e}")

    def engines(self) -> list[str]:
        return list(dict.fromkeys(slot.engine for slot in self.slots))

    def _claim(self, index: int = 0) -> Optional[int]:
        """The oldest queued job this worker's engine may run: one not tied to another engine (a job's resume and
        export go where its run is), and no RAG build away from home (its documents are here)."""
        slot = self.slots[index]
        query = select(Job).where(Job.status == db.QUEUED, Job.engine.is_(None) | (Job.engine == slot.engine))
        if slot.engine != HOME:
            query = query.where(Job.task != "rag")
        with self.claim_lock, Session(self.engine) as s:
            job = s.exec(query.order_by(Job.id)).first()
            if job is None:
                return None
            job.engine = slot.engine
            job.status = db.EXPORTING if job.task == "export" else db.RUNNING
            job.started, job.finished, job.error, job.exit_code = db.now(), None, None, None
            s.add(job)
            s.commit()
            job_id, status = int(job.id), job.status
        db.add_event(self.engine, job_id, "status", {"status": status})
        self.publish(job_id)
        return job_id

    def transport(self, index: int, job_id: Optional[int] = None) -> Any:
        """The transport worker ``index`` runs job ``job_id`` through: on its engine, pinned to its GPUs, if any,
        with a run id of the job's own (:meth:`run_id`)."""
        from ..transport import make_transport

        slot = self.slots[index]
        env = {} if slot.gpu is None else {"CUDA_VISIBLE_DEVICES": slot.gpu}
        run_id = None if job_id is None else self.run_id(job_id)
        if slot.endpoint is None:
            t = make_transport(self.runtime, self.container, self.data_root, debug=self.debug, env=env, run_id=run_id)
        else:
            t = make_transport("docker", self.container, None if slot.remote else self.data_root, debug=self.debug,
                               env=env, engine=slot.endpoint, run_id=run_id)
        return _recording(t)

    def run_id(self, job_id: int) -> str:
        """The KOLO_RUN_ID of job ``job_id``'s trainer in a container: the same after a restart (so the new server
        can stop an orphan), different for another data root's server sharing the container."""
        import hashlib

        return f"serve-{hashlib.sha256(str(self.data_root.resolve()).encode()).hexdigest()[:10]}-job-{job_id}"

    def _run(self, job_id: int, index: int = 0) -> None:
        from kolo_trainer.errors import KoloError

        from ..pipeline import train_steps
        from ..transport import trainer_argv

        job = db.get_job(self.engine, job_id)
        slot, transport = self.slots[index], self.transport(index, job_id)
        self._note(job_id, f"kolo serve worker {index}: engine {slot.engine}" + "".join(
            f" {k}={v}" for k, v in transport.env.items()))
        self.running[job_id] = transport
        rc, error = 1, None
        renderer = None
        try:
            if job.task == "rag":
                from kolo_trainer.rag.options import RagBuildOptions

                steps = [trainer_argv("rag-build", RagBuildOptions, json.loads(job.options), transport.data_root)]
            elif job.task == "export":
                from kolo_trainer.options import ExportOptions

                quants = json.loads(job.export_quantizations)
                steps = [trainer_argv("export", ExportOptions, {"output_dir": job.output_dir, "quantization": quants},
                                      transport.data_root)]
            else:
                steps = self._train_steps(job, transport, train_steps)
            if slot.remote and job.task == "train":
                self._send_inputs(job, transport)
            for i, argv in enumerate(steps):
                if db.get_job(self.engine, job_id).cancel_requested:
                    break
                exporting = job.task == "export" or i > 0
                if exporting:
                    db.update_job(self.engine, job_id, status=db.EXPORTING)
                renderer = JobRenderer(self, job_id, exporting)
                rc = transport.run(argv, renderer)
                if rc != 0 or db.get_job(self.engine, job_id).cancel_requested:
                    break
        except KoloError as e:
            error, rc = e.message + (f" ({e.hint})" if e.hint else ""), e.exit_code
        finally:
            self.running.pop(job_id, None)
        if slot.remote:
            error = self._bring_back(job, transport, error)
        self._conclude(job_id, rc, error, renderer)

    def _note(self, job_id: int, line: str) -> None:
        with open(self.log_path(job_id), "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def _send_inputs(self, job: Job, transport: Any) -> None:
        """The job's dataset (and eval file, and base model when it is a folder here) into the engine's data root."""
        from kolo_trainer import preflight
        from kolo_trainer.runfolder import DataRoot

        from .. import remote_data

        opts, root = json.loads(job.options), DataRoot(self.data_root)
        rels = [opts[k] for k in ("train_data", "eval_data") if opts.get(k)]
        base = opts.get("base_model")
        if base and preflight.is_local_model(root, base):
            rels.append(base.strip())
        sent = remote_data.push(transport.container_obj(), root, rels)
        self._note(job.id, "sent to the engine: " + (", ".join(sent) or "nothing (all there already)"))

    def _bring_back(self, job: Job, transport: Any, error: Optional[str]) -> Optional[str]:
        """The run (without checkpoints) from the engine into this data root, whatever the trainer's ending, so the
        job's state is read from its own kolo.json. A failure to bring it fails the job (the first error stays)."""
        from kolo_trainer.errors import KoloError
        from kolo_trainer.runfolder import DataRoot

        from .. import remote_data

        try:
            container = transport.container_obj()
            files = remote_data.whole_run_files(container, job.output_dir)
            run = DataRoot(self.data_root).run(job.output_dir)
            got, here = remote_data.bring(container, run, files, overwrite=True)
        except KoloError as e:
            return error or f"could not bring the run back from the engine: {e.message}"
        self._note(job.id, f"brought back from the engine: {len(got)} file(s) "
                           f"({sum(size for _, size, _ in got) / 2**20:.1f} MiB), {len(here)} already here")
        return error

    def _train_steps(self, job: Job, transport: Any, train_steps: Any) -> list[list[str]]:
        from kolo_trainer import spec
        from kolo_trainer.options import TrainOptions

        opts, explicit = spec.merge(TrainOptions, {}, json.loads(job.options))
        return train_steps(opts, explicit, transport.data_root)

    def _conclude(self, job_id: int, rc: int, error: Optional[str], renderer: Optional[JobRenderer]) -> None:
        job = db.get_job(self.engine, job_id)
        if job.cancel_requested:
            self.finish(job_id, db.CANCELLED, exit_code=rc, error="cancelled by request")
            return
        if self.stopping.is_set() and rc != 0:
            self.finish(job_id, db.INTERRUPTED, exit_code=rc, error="the server stopped while this job ran; "
                                                                    "resume it to continue")
            return
        if error is None and rc != 0:
            tail = list(renderer.errors) if renderer is not None else []
            error = (tail[-1] if tail else f"the trainer exited with code {rc}")
        if error is None:
            error = self._manifest_problem(job)
        self.finish(job_id, db.COMPLETED if error is None else db.FAILED, exit_code=rc, error=error)

    def _manifest_problem(self, job: Job) -> Optional[str]:
        """None when the run's kolo.json says the work is done; else why the job cannot count as completed."""
        from kolo_trainer.errors import KoloError
        from kolo_trainer.runfolder import DataRoot

        try:
            run = DataRoot(self.data_root).run(job.output_dir)
            if job.task == "rag":  # an index has no kolo.json: its folder, written whole and renamed, is the proof
                from kolo_trainer.rag import store

                store.require(run)
                return None
            data = run.manifest()
        except KoloError as e:
            return e.message
        if data.get("status") != "finished":
            return f"the trainer exited 0 but kolo.json says status {data.get('status')!r}"
        wanted = json.loads(job.export_quantizations) if job.task == "export" else \
            json.loads(job.options).get("quantization") or []
        if wanted and (data.get("export") or {}).get("status") != "finished":
            return f"the export exited 0 but kolo.json says export status {(data.get('export') or {}).get('status')!r}"
        return None

    def finish(self, job_id: int, status: str, **fields: Any) -> None:
        db.update_job(self.engine, job_id, status=status, finished=db.now(), **fields)
        job = db.get_job(self.engine, job_id)
        db.add_event(self.engine, job_id, "status", {"status": status, "error": job.error,
                                                     "exit_code": job.exit_code})
        self.publish(job_id)

    # ----------------------------------------------------------------------------------------- cancel
    def cancel(self, job_id: int) -> None:
        """Ask the trainer to stop (SIGINT, inside the container too); the job's thread concludes it."""
        threading.Thread(target=self._stop_process, args=(job_id,), daemon=True).start()

    def _stop_process(self, job_id: int) -> None:
        transport = self.running.get(job_id)
        proc = getattr(transport, "proc", None)
        if transport is not None and proc is not None:
            transport.stop(proc, CANCEL_GRACE_S)


def _recording(transport: Any) -> Any:
    """The same transport, remembering the process it starts, so that a cancel can hand it to ``stop`` -- the very
    code Ctrl-C runs (SIGINT to the trainer, or the stop script inside the container)."""

    class Recording(type(transport)):  # type: ignore[misc, valid-type]
        proc = None

        def _wait(self, proc: Any, renderer: Any, grace_s: float) -> int:
            self.proc = proc
            return super()._wait(proc, renderer, grace_s)

    transport.__class__ = Recording
    return transport


# ------------------------------------------------------------------------------------------------- GPUs
def gpu_ids(nvidia_smi_list: str) -> list[str]:
    """The GPU indices in ``nvidia-smi -L`` output (``GPU 0: NVIDIA ... (UUID: ...)``), in order."""
    import re

    return re.findall(r"(?m)(?:^|; )GPU (\d+):", nvidia_smi_list)


def detect_gpus(runtime: str, container: str, found: Any = None) -> tuple[list[str], str]:
    """(the GPUs jobs can use, where that came from), asked where the jobs run: the kolo container's
    ``nvidia-smi -L`` (``docker_ctl.gpu_visible``, what `kolo doctor` shows; ``found``: that container, already
    looked up on its engine) or this machine's. A local CUDA_VISIBLE_DEVICES the server was started with is the
    user's choice of GPUs and is kept."""
    import os
    import shutil
    import subprocess

    if runtime != "local":
        from kolo_trainer.errors import KoloError

        from .. import docker_ctl

        try:
            c = found or docker_ctl.find(docker_ctl.client(timeout=10), container)
        except KoloError as e:
            return [], e.message
        if c is None:
            return [], f"container {container!r} does not exist"
        visible, detail = docker_ctl.gpu_visible(c)
        return (gpu_ids(detail) if visible else []), f"nvidia-smi -L in container {container!r}: {detail}"
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is not None:
        ids = [g.strip() for g in chosen.split(",") if g.strip()]
        return ([] if ids[:1] == ["-1"] else ids), f"CUDA_VISIBLE_DEVICES={chosen!r}"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], "no nvidia-smi on this machine"
    try:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return [], f"nvidia-smi -L: {e}"
    return (gpu_ids(r.stdout) if r.returncode == 0 else []), "nvidia-smi -L"


def assign_gpus(gpus: list[str], workers: int) -> list[Optional[str]]:
    """Each worker's CUDA_VISIBLE_DEVICES: the GPUs split into ``workers`` disjoint, contiguous shares (one each
    when there are as many workers as GPUs; all of them for a single worker, so a multi-process job (--nproc)
    still sees every GPU). No GPU: every worker runs unpinned (CPU). One job per GPU share at a time."""
    from kolo_trainer.errors import OptionsError

    if not gpus:
        return [None] * workers
    if workers > len(gpus):
        raise OptionsError([f"--workers {workers}: only {len(gpus)} GPU(s) ({', '.join(gpus)}); each worker gets "
                            "a GPU of its own"],
                           hint=f"pass --workers {len(gpus)}, name more with --gpus, or --gpus none to share them "
                                "unpinned")
    size, extra = divmod(len(gpus), workers)
    shares, at = [], 0
    for i in range(workers):  # the first `extra` workers get one GPU more (as numpy.array_split does)
        n = size + (i < extra)
        shares.append(",".join(gpus[at:at + n]))
        at += n
    return shares
