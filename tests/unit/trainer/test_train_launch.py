"""kolo_trainer.train.launch: which rank's failure ends a multi-process run, and how it is reported. The failures
are torchrun's ProcessFailure records built from real error files (the e2e suite crashes a real rank:
tests/e2e/test_distributed.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed.elastic")
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure  # noqa: E402

from kolo_trainer.train import launch  # noqa: E402


def _failure(tmp: Path, rank: int, exitcode: int, kolo: dict | None) -> ProcessFailure:
    path = tmp / f"error-{rank}.json"
    if kolo is not None:
        path.write_text(json.dumps({"message": {"message": "RuntimeError: x", "extraInfo": {
            "py_callstack": "Traceback ...", "timestamp": "1"}}, "kolo": kolo}))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(path))


def test_earliest_recorded_error_wins_over_later_ones_and_deaths(tmp_path, capsys):
    failures = {
        0: _failure(tmp_path, 0, 1, {"message": "internal error: connection closed by peer", "hint": None,
                                     "exit_code": 1, "rank": 0, "time": 200.5}),
        1: _failure(tmp_path, 1, 3, {"message": "data/x.jsonl:4: no assistant turn", "hint": "fix the row",
                                     "exit_code": 3, "rank": 1, "time": 200.1}),
        2: _failure(tmp_path, 2, -signal.SIGTERM, None),
    }
    assert launch.report(failures, []) == 3
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: rank 1: data/x.jsonl:4: no assistant turn", "hint: fix the row"]


def test_a_rank_killed_by_a_signal_is_named_with_the_signal(tmp_path, capsys):
    assert launch.report({1: _failure(tmp_path, 1, -signal.SIGKILL, None)}, []) == 128 + signal.SIGKILL
    err = capsys.readouterr().err
    assert err.startswith("error: rank 1: was killed by SIGKILL (out of memory?") and "--resume" in err
