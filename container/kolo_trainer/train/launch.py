"""``python -m kolo_trainer.train.launch [torchrun options] -m kolo_trainer train ...``: torchrun with kolo's errors.

Why torchrun and not ``accelerate launch``: transformers' Trainer reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK and
does DDP (and FSDP from TrainingArguments) through accelerate by itself, so no accelerate config file is needed,
and torchrun ships with torch (nothing more in the image). This module is torchrun itself (torch.distributed.run's
own parser and ``run``); what it adds is the ending:

* a failed rank: torchrun would print a page of "ChildFailedError" with tracebacks and exit 1; kolo prints the
  earliest failure's ``error:`` / ``hint:`` lines (its rank named) and exits with that rank's exit code, the
  documented one (3 for bad data, ...). When that rank was not rank 0, kolo.json's ``error`` names it too.
* Ctrl-C / SIGTERM: torchrun forwards the signal to every rank (each saves a checkpoint at the same step, see
  ``distributed.agreed_signal``), waits for them, and kolo exits 128 + the signal (130 for Ctrl-C).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # torchrun's own log lines (OMP_NUM_THREADS, "shutting down workers", its failure page) would repeat, less
    # clearly, what kolo prints below. Its loggers take their level from LOGLEVEL when its modules are imported.
    os.environ.setdefault("LOGLEVEL", "CRITICAL")
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    _quiet_torchrun()
    args = parse_args(argv)
    try:
        run(args)
    except ChildFailedError as e:
        return report(e.failures, list(args.training_script_args) if args.node_rank == 0 else [])
    except SignalException as e:
        return 128 + int(e.sigval)
    except KeyboardInterrupt:  # before the workers started (rendezvous)
        return 128 + signal.SIGINT
    return 0


def _quiet_torchrun() -> None:
    """Some of torchrun's modules take a plain logging.getLogger (LOGLEVEL does not reach them)."""
    import logging

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)


def _kolo_data(failure: Any) -> dict | None:
    try:
        with open(failure.error_file, encoding="utf-8") as f:
            data = json.load(f).get("kolo")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return data if isinstance(data, dict) else None


#: The signal torchrun's agent sends to the ranks still running once one has failed (PContext.close's default on
#: POSIX). A rank that died of it is a consequence of another failure, never the root.
STOP_SIGNAL = signal.SIGTERM


def root_failure(failures: dict[int, Any]) -> tuple[int, Any, dict | None]:
    """(rank, failure, kolo's record) of the failure that caused the others.

    In order: a rank that recorded a kolo error (the earliest record: a peer that then lost its connection records
    later), a rank that recorded only that another failed (``distributed.PeerFailed``), a non-zero exit without a
    record, a death by a signal other than torchrun's stop signal (a crash, the OOM killer's SIGKILL), and last
    the ranks torchrun stopped itself (a SIGTERMed rank 0 used to win the tie with
    the rank 1 that had crashed). Within a class, the time torchrun saw the failure, then the lower rank."""
    def key(item: tuple[int, Any]) -> tuple[int, float, int]:
        rank, f = item
        data = _kolo_data(f)
        if data is not None:  # a rank that stopped because another failed (PeerFailed) comes after real errors
            return (1 if data.get("consequence") else 0), float(data.get("time", math.inf)), rank
        klass = 2 if f.exitcode > 0 else 4 if f.exitcode == -STOP_SIGNAL else 3
        return klass, float(getattr(f, "timestamp", math.inf)), rank

    rank, failure = min(failures.items(), key=key)
    return rank, failure, _kolo_data(failure)


def report(failures: dict[int, Any], trainer_args: list[str]) -> int:
    """Print the root failure the kolo way and return its exit code."""
    rank, failure, data = root_failure(failures)
    if data is not None:
        message, hint, code = data.get("message") or "failed", data.get("hint"), int(data.get("exit_code") or 1)
        rank = int(data.get("rank", rank))  # another node's rank, when this one took its record from the store
    elif failure.exitcode < 0:
        name = failure.signal_name()
        message = f"was killed by {name}" + (" (out of memory? check `dmesg`)" if name == "SIGKILL" else "")
        hint, code = "run the same command with --resume to continue from the last checkpoint", 128 - failure.exitcode
    else:
        message, hint, code = f"exited with code {failure.exitcode} without an error message", None, failure.exitcode
    message = f"rank {rank}: {message}"
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    if rank != 0:
        _record_in_manifest(trainer_args, message)
    return code


def _record_in_manifest(trainer_args: list[str], message: str) -> None:
    """Rank 0 recorded its own view (often "connection closed by peer"); the run's error is the root one. Only on
    the node of rank 0 (``trainer_args`` is empty elsewhere), once kolo.json exists; a problem here never hides
    the report."""
    if not trainer_args or trainer_args[0] != "train":
        return
    try:
        from .. import manifest, spec
        from ..options import TrainOptions
        from ..runfolder import DataRoot

        root, rest = spec.pop_data_root(trainer_args[1:])
        opts, _ = spec.parse_argv(TrainOptions, rest)
        run_dir = DataRoot(root).run(opts.output_dir, "--output-dir").path
        if (run_dir / manifest.MANIFEST).is_file() and manifest.load(run_dir).get("status") in ("running", "failed"):
            manifest.update(run_dir, status="failed", error=message[:2000])
    except Exception as e:  # the report above is what matters
        print(f"warning: could not record the failure in kolo.json ({type(e).__name__}: {e})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
