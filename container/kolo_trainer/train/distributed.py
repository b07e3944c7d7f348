"""The trainer as one of several processes (``kolo train --nproc N`` / ``--nnodes M``, started by torchrun).

torchrun (``kolo_trainer.train.launch``) starts ``python -m kolo_trainer train ...`` once per process with
RANK/WORLD_SIZE/LOCAL_RANK set. Every process runs the same stages; what must happen once happens on global rank 0
only (the run lock, the fresh/resume decision, the manifest, train_log.jsonl, progress events, the saved model, the
plot, the sample), and the others learn the decision from it (:func:`broadcast`). transformers' Trainer does the
rest: DDP wrapping, a sharded sampler (accelerate gives each process every world-th batch) and checkpoints written
by rank 0 (plus each rank's own RNG state, ``rng_state_<rank>.pth``, which an exact resume needs).

A failure on any rank ends the run with that rank's message: the rank records it in torchrun's error file
(torch.distributed.elastic's ``@record`` writes the traceback; kolo adds its own message, hint, exit code and the
time, :func:`run_worker`), and the launcher reports the root one (``launch.root_failure``). Across nodes, the
first failing rank's record reaches the others through the rendezvous store (:func:`first_error`), so node 0's
launcher reports (and records in kolo.json) a failure on another node, not just its lost connection.

Heavy imports (torch) live inside the functions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import KoloError


class PeerFailed(KoloError):
    """This rank stopped because another one failed (e.g. rank 0's checks): a consequence, never the run's root
    error. Its record says so, it publishes nothing, and the launcher ranks it after every real error."""


#: Tests only: make this rank raise at the end of optimizer step KOLO_TEST_CRASH_STEP (default 1), to prove that a
#: failure on a rank other than 0 ends the run with that rank's message (tests/e2e/test_distributed.py).
CRASH_RANK_ENV = "KOLO_TEST_CRASH_RANK"
CRASH_STEP_ENV = "KOLO_TEST_CRASH_STEP"


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes the run folder and prints progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def current() -> Dist:
    """This process's place, from the variables torchrun sets (one process when they are absent)."""
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init(dist: Dist, device_kind: str) -> None:
    """Join the process group before anything is decided (the lock, resume), so rank 0 can hand out decisions.

    gloo on CPU, nccl on CUDA with one GPU per local rank. transformers/accelerate find the group already
    initialised and use it."""
    if not dist.active:
        return
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return
    if device_kind == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            from ..errors import OptionsError

            raise OptionsError([f"--nproc: local rank {dist.local_rank} has no GPU (this machine has "
                                f"{torch.cuda.device_count()}); use at most one process per GPU"])
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")


def broadcast(dist: Dist, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a small picklable object)."""
    if not dist.active:
        return value
    import torch.distributed as td

    box = [value if dist.main else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


def agreed_signal(dist: Dist, signum: int | None, device: Any) -> int | None:
    """The stop signal any rank received, on every rank: all ranks must stop at the same optimizer step, or the
    ones still training wait forever in the next gradient all-reduce (a Ctrl-C reaches the ranks at slightly
    different moments, and on several nodes perhaps only one of them)."""
    if not dist.active:
        return signum
    import torch
    import torch.distributed as td

    t = torch.tensor([int(signum or 0)], device=device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return int(t.item()) or None


def quiet_stdout(dist: Dist) -> None:
    """Ranks other than 0 print no progress events or logs (the host would show every step N times); their
    stderr stays, and their errors reach the launcher through the error file."""
    if dist.active and not dist.main:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115  (lives as long as the process)


def crash_hook(dist: Dist, step: int) -> None:
    """The test-only failure injection (see :data:`CRASH_RANK_ENV`)."""
    want = os.environ.get(CRASH_RANK_ENV)
    if want is not None and int(want) == dist.rank and step >= int(os.environ.get(CRASH_STEP_ENV, "1")):
        raise RuntimeError(f"injected test crash on rank {dist.rank} at step {step} ({CRASH_RANK_ENV})")


def run_worker(fn: Callable[[list[str]], int], argv: list[str], dist: Dist) -> int:
    """Run the trainer as one rank: an exception is recorded in torchrun's error file (traceback by ``@record``,
    kolo's message, hint and exit code next to it) and becomes this rank's exit code; the launcher prints it.
    A rank other than 0 does not return: see :func:`_exit_now`."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from ..cli import as_kolo_error

    quiet_stdout(dist)
    try:
        code = record(fn)(argv)
    except Exception as e:
        if os.environ.get("KOLO_DEBUG") == "1":
            raise
        err = as_kolo_error(e)
        mine = {"message": err.message, "hint": err.hint, "exit_code": err.exit_code, "rank": dist.rank,
                "time": time.time(), "consequence": isinstance(e, PeerFailed)}
        # A kolo error says what went wrong here; anything else may be how a peer's failure looked from here.
        _add_kolo_error(first_error(mine, adopt=isinstance(e, PeerFailed) or not isinstance(e, KoloError)))
        code = err.exit_code
    finally:
        _leave()
    if not dist.main:
        _exit_now(code)
    return code


#: Where the run's first error record goes, in the c10d store of torchrun's rendezvous (the TCPStore every rank of
#: every node reaches: it is how they found each other).
FIRST_ERROR_KEY = "kolo/first_error"


def first_error(mine: dict, adopt: bool) -> dict:
    """The record this rank puts in its error file: its own, published as the run's first error unless a rank
    published one before; or, when ``adopt`` and another rank was first, that rank's record.

    Why: with several nodes each launcher sees only its own ranks' error files, so when rank 1 on node 1 fails,
    node 0 learnt only that rank 0 lost its peer ("connection closed by peer"). The failing rank publishes before
    it leaves the group (its sockets close only after that), so a rank that fails because of it finds the record.
    Best-effort: any problem with the store (gone with its node) leaves this rank's own record."""
    try:
        import torch.distributed as td

        if not td.is_initialized():
            return mine
        from datetime import timedelta

        store = td.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=10))  # this rank is failing: never wait long for a dying store
        if mine.get("consequence"):  # publish nothing: read the root error its rank publishes as it unwinds
            store.wait([FIRST_ERROR_KEY], timedelta(seconds=5))
            first = json.loads(store.get(FIRST_ERROR_KEY))
        else:
            # compare_set sets the key only where it is absent and answers what the key holds: one atomic
            # "first one wins", with no clocks to compare across machines.
            first = json.loads(store.compare_set(FIRST_ERROR_KEY, "", json.dumps(mine)))
    except Exception:
        return mine
    if adopt and isinstance(first, dict) and first.get("rank") != mine["rank"]:
        return first
    return mine


def _add_kolo_error(rec: dict) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:  # not started by torchrun: say it here, once per rank
        print(f"error: rank {rec['rank']}: {rec['message']}", file=sys.stderr)
        return
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data["kolo"] = rec
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _leave() -> None:
    """Leave the group without waiting for anyone (no barrier: rank 0 still saves, plots and samples alone)."""
    try:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
    except Exception:  # leaving a broken group (a peer died) must not replace the real error
        pass


def _exit_now(code: int) -> None:
    """End a rank other than 0 once its part is done, skipping the interpreter's teardown.

    Why: destroy_process_group does not stop gloo's threads (seen here: gloo_tcp_loop and two pt_gloo_runloop
    still alive after it, after the Trainer and the DDP model are gone and after gc.collect()). A rank that goes
    straight from its last all-reduce into the interpreter's teardown races them: the gloo thread that drops the
    last reference to a finished all-reduce frees a Python object with it, so it takes the GIL, and a thread
    taking the GIL while Python finalises is ended by pthread_exit, which inside a C++ destructor is
    std::terminate ("terminate called without an active exception", SIGABRT, or a segfault; a core dump showed
    ProcessGroupGloo::runLoop > ~AsyncAllreduceWork > ~ThreadLocalState > decref > take_gil while the main thread
    was in Py_FinalizeEx; torch's own note in destroy_process_group). A crashed rank 1 made torchrun SIGTERM rank
    0 in the middle of its plot (CI, 1 suite run in 4). Such a rank has nothing left to do: rank 0 writes every
    file, reports to trackers and prints progress, and under FSDP this rank already took part in the save. So
    flush what it printed and end the process. Its sockets close with it, which rank 0 never waits on: it makes no
    collective call after training, and torchrun lets a rank exit 0 while the others keep running. Rank 0 itself
    exits normally (atexit handlers: trackers, logging) seconds after its last collective, past that window."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
