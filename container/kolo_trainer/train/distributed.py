"""The trainer as one of several processes (``kolo train --nproc N`` / ``--nnodes M``, started by torchrun).

torchrun (``kolo_trainer.train.launch``) starts ``python -m kolo_trainer train ...`` once per process with
RANK/WORLD_SIZE/LOCAL_RANK set. Every process runs the same stages; what must happen once happens on global rank 0
only (the run lock, the fresh/resume decision, the manifest, train_log.jsonl, progress events, the saved model, the
plot, the sample), and the others learn the decision from it (:func:`broadcast`). transformers' Trainer does the
rest: DDP wrapping, a sharded sampler (accelerate gives each process every world-th batch) and checkpoints written
by rank 0 (plus each rank's own RNG state, ``rng_state_<rank>.pth``, which an exact resume needs).

A failure on any rank ends the run with that rank's message: the rank records it in torchrun's error file
(torch.distributed.elastic's ``@record`` writes the traceback; kolo adds its own message, hint, exit code and the
time, :func:`run_worker`), and the launcher reports the earliest one (``launch.root_failure``).

Heavy imports (torch) live inside the functions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

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
    kolo's message, hint and exit code next to it) and becomes this rank's exit code; the launcher prints it."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from ..cli import as_kolo_error

    quiet_stdout(dist)
    try:
        return record(fn)(argv)
    except Exception as e:
        if os.environ.get("KOLO_DEBUG") == "1":
            raise
        err = as_kolo_error(e)
        _add_kolo_error(err, dist)
        return err.exit_code
    finally:
        _leave()


def _add_kolo_error(err: Any, dist: Dist) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:  # not started by torchrun: say it here, once per rank
        print(f"error: rank {dist.rank}: {err.message}", file=sys.stderr)
        return
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data["kolo"] = {"message": err.message, "hint": err.hint, "exit_code": err.exit_code, "rank": dist.rank,
                    "time": time.time()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _leave() -> None:
    try:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
    except Exception:  # leaving a broken group (a peer died) must not replace the real error
        pass
