"""kolo_trainer.data.rowstats: length statistics, streamed or from kept rows, the same numbers."""

from __future__ import annotations

from array import array

from data_helpers import conv, jsonl
from kolo_trainer import data
from kolo_trainer.data.rowstats import summary


def test_stats(tmp_path):
    rows = [{"messages": conv(("one two", "three four five"), system="Be brief.")},
            {"messages": conv(("a", "b"), ("c", "d e"), system="Be brief.")}]
    res = data.load(jsonl(tmp_path, rows))
    st = data.stats(res.rows)
    assert st["rows"] == 2 and st["turns"] == 6
    assert st["roles"] == {"assistant": 3, "system": 2, "user": 3}
    assert st["shared_system_prompt"] == "Be brief." and st["rows_with_system"] == 2
    assert st["words"] == {"min": 7, "mean": 7.0, "max": 7, "p50": 7, "p95": 7}  # 2+2+3 and 2+1+1+1+2
    assert (st["chars"]["min"], st["chars"]["max"]) == (len("Be brief.abcd e"), len("Be brief.one twothree four five"))
    assert st["turns_per_row"] == {"min": 2, "mean": 3.0, "max": 4, "p50": 2, "p95": 4}
    # The streaming path computes the same numbers.
    assert data.load(jsonl(tmp_path, rows), keep_rows=False).stats == st
    rows[1]["messages"][0]["content"] = "Other."
    assert data.stats(data.load(jsonl(tmp_path, rows)).rows)["shared_system_prompt"] is None


def test_percentiles_are_nearest_rank():
    s = summary(array("q", range(1, 101)))
    assert (s["p50"], s["p95"], s["min"], s["max"], s["mean"]) == (50, 95, 1, 100, 50.5)


def test_accumulator_state_survives_merging():
    """What the parallel check relies on: two accumulators merged give the figures of one over all rows."""
    rows = [(("system", "user", "assistant"), ["S", "q one", "a"]), (("user", "assistant"), ["q", "a b c"]),
            (("system", "user", "assistant"), ["S", "x", "y"])]
    whole, a, b = data.StatsAccumulator(), data.StatsAccumulator(), data.StatsAccumulator()
    for i, (roles, contents) in enumerate(rows):
        whole.add(roles, contents)
        (a if i < 1 else b).add(roles, contents)
    a.merge(b.state())
    assert a.result() == whole.result() and whole.result()["shared_system_prompt"] is None
