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


def _died(tmp: Path, rank: int, signum: int, seen_at: int) -> ProcessFailure:
    f = _failure(tmp, rank, -signum, None)
    f.timestamp = seen_at  # when torchrun saw it (it stops the others after the first failure it sees)
    return f


def test_a_crashed_rank_is_blamed_not_the_rank_torchrun_then_stopped(tmp_path, capsys):
    """The CI flake: rank 1 crashed (SIGSEGV) while rank 0 was still plotting; torchrun SIGTERMed rank 0, both
    within the same second and without a kolo record. The crash is the root; rank 0's SIGTERM is its consequence."""
    failures = {0: _died(tmp_path, 0, signal.SIGTERM, 100), 1: _died(tmp_path, 1, signal.SIGSEGV, 100)}
    assert launch.report(failures, []) == 128 + signal.SIGSEGV
    assert capsys.readouterr().err.startswith("error: rank 1: was killed by SIGSEGV\n")


@pytest.mark.parametrize(("failures", "root"), [
    # a non-zero exit (no record) beats a crash that torchrun saw earlier
    ({0: (-signal.SIGSEGV, 99), 1: (2, 100), 2: (-signal.SIGTERM, 98)}, 1),
    # the OOM killer's SIGKILL is not torchrun's stop signal: it is the root, seen at the same time or not
    ({0: (-signal.SIGTERM, 100), 1: (-signal.SIGKILL, 100)}, 1),
    # among crashes, the first one torchrun saw; among equals, the lower rank
    ({0: (-signal.SIGABRT, 101), 1: (-signal.SIGSEGV, 100), 2: (-signal.SIGSEGV, 100)}, 1),
    # torchrun SIGKILLs a rank that ignored its SIGTERM for 30 s: the crash that started it all came first
    ({0: (-signal.SIGKILL, 131), 1: (-signal.SIGSEGV, 100)}, 1),
])
def test_root_failure_order_without_kolo_records(tmp_path, failures, root):
    made = {}
    for rank, (code, seen_at) in failures.items():
        made[rank] = _failure(tmp_path, rank, code, None)
        made[rank].timestamp = seen_at
    assert launch.root_failure(made)[0] == root


def test_a_kolo_record_beats_any_death(tmp_path):
    failures = {0: _died(tmp_path, 0, signal.SIGSEGV, 90),
                1: _failure(tmp_path, 1, 1, {"message": "m", "hint": None, "exit_code": 1, "rank": 1, "time": 101.0})}
    assert launch.root_failure(failures)[0] == 1


@pytest.fixture()
def one_rank_group():
    """A real one-rank gloo group on a real TCPStore (the kind torchrun's rendezvous gives every rank)."""
    from datetime import timedelta

    import torch.distributed as td

    store = td.TCPStore("127.0.0.1", 0, 1, True, timedelta(seconds=30))
    td.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield store
    td.destroy_process_group()


def test_the_first_published_error_reaches_a_rank_that_lost_its_peer(one_rank_group):
    """The store is the cross-node channel: rank 1 (another node) publishes first; rank 0, failing with an
    unexpected error (how a lost peer looks), records rank 1's; a rank with a kolo error of its own keeps it."""
    from kolo_trainer.train import distributed

    peer = {"message": "data/x.jsonl:4: no assistant turn", "hint": None, "exit_code": 3, "rank": 1, "time": 9.0}
    mine = {"message": "internal error: RuntimeError: Connection closed by peer", "hint": None, "exit_code": 1,
            "rank": 0, "time": 1.0}  # an earlier clock on another machine changes nothing: the store's order counts
    assert distributed.first_error(peer, adopt=True) == peer  # the first to publish keeps its own
    assert distributed.first_error(mine, adopt=True) == peer
    assert distributed.first_error(mine, adopt=False) == mine


def test_a_rank_stopped_by_rank_0s_failure_is_never_the_root(tmp_path, one_rank_group):
    """Rank 0's checks fail (bad data, exit 3); rank 1 learns it from the broadcast and raises PeerFailed, often
    before rank 0 has unwound. Rank 1 publishes nothing (rank 0's record is the run's first error) and the
    launcher ranks its record after rank 0's, whatever the times."""
    from kolo_trainer.train import distributed

    root = {"message": "data/x.jsonl:4: no assistant turn", "hint": None, "exit_code": 3, "rank": 0, "time": 9.0}
    after = {"message": "rank 0 could not start the run (its own error says why)", "hint": None, "exit_code": 1,
             "rank": 1, "time": 1.0, "consequence": True}
    assert distributed.first_error(after, adopt=True) == after  # nothing published yet: waits 5 s, keeps its own
    assert distributed.first_error(root, adopt=False) == root  # rank 0 publishes
    assert distributed.first_error(after, adopt=True) == root  # and a consequence reads it
    failures = {0: _failure(tmp_path, 0, 3, root), 1: _failure(tmp_path, 1, 1, after)}
    assert launch.root_failure(failures)[0] == 0
