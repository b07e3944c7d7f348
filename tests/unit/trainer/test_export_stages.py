"""The export's stage runner (kolo_trainer.export.stages.run) on real files in tmp_path, no model.

Each test builds stages whose write functions are plain file writes and checks what the runner does with them:
skip, redo, record, atomic outputs, events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from kolo_trainer import manifest, progress
from kolo_trainer.export import stages


def _ctx(run_dir: Path, force: bool = False) -> stages.Context:
    """A Context as the export builds it: the manifest read at the start, its export.stages."""
    data = manifest.load(run_dir)
    return stages.Context(root=run_dir.parent, run_dir=run_dir, name=run_dir.name,
                          opts=SimpleNamespace(force=force), data=data,
                          stages=dict((data.get("export") or {}).get("stages") or {}))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "outputs" / "r"
    d.mkdir(parents=True)
    (d / "input.txt").write_text("v1")
    manifest.update(d, status="finished")
    return d


class Writer:
    """A stage function that copies input.txt (upper-cased) to its output, counting its calls."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.calls = run_dir, 0

    def __call__(self, tmp: Path) -> dict:
        self.calls += 1
        tmp.write_text((self.run_dir / "input.txt").read_text().upper())
        return {"chars": len(tmp.read_text())}


def _stage(run_dir: Path, write, key: str = "copy") -> stages.Stage:
    fp = {"input": stages.file_sig(run_dir / "input.txt")}
    return stages.Stage("copy", key, fp, [run_dir / "gguf" / f"{key}.txt"], write)


def _events(capsys) -> list[tuple[str, str]]:
    out = capsys.readouterr().out
    return [(e["stage"], e["status"]) for e in map(progress.parse_line, out.splitlines())
            if e and e["event"] == "stage"]


def test_runs_records_and_skips_when_up_to_date(run_dir, capsys):
    w = Writer(run_dir)
    rec = stages.run(_ctx(run_dir), _stage(run_dir, w))
    assert w.calls == 1 and (run_dir / "gguf" / "copy.txt").read_text() == "V1"
    assert rec["chars"] == 2 and rec["seconds"] >= 0
    on_disk = manifest.load(run_dir)["export"]["stages"]["copy"]
    assert on_disk["outputs"] == {"gguf/copy.txt": stages.file_sig(run_dir / "gguf" / "copy.txt")}
    assert _events(capsys) == [("copy", "start"), ("copy", "done")]
    # A new export reads the manifest afresh: same input, same output -> skipped, the record is returned.
    rec2 = stages.run(_ctx(run_dir), _stage(run_dir, w))
    assert w.calls == 1 and rec2["chars"] == 2
    assert _events(capsys) == [("copy", "start"), ("copy", "skip")]


def test_a_changed_input_redoes_the_stage(run_dir):
    w = Writer(run_dir)
    stages.run(_ctx(run_dir), _stage(run_dir, w))
    (run_dir / "input.txt").write_text("v22")
    stages.run(_ctx(run_dir), _stage(run_dir, w))
    assert w.calls == 2 and (run_dir / "gguf" / "copy.txt").read_text() == "V22"


@pytest.mark.parametrize("change", ["edit", "touch", "delete"])
def test_a_changed_or_missing_output_redoes_the_stage(run_dir, change):
    w = Writer(run_dir)
    stages.run(_ctx(run_dir), _stage(run_dir, w))
    out = run_dir / "gguf" / "copy.txt"
    if change == "edit":
        out.write_text("tampered!")
    elif change == "touch":
        st = out.stat()
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    else:
        out.unlink()
    stages.run(_ctx(run_dir), _stage(run_dir, w))
    assert w.calls == 2 and out.read_text() == "V1"


def test_force_redoes_an_up_to_date_stage(run_dir):
    w = Writer(run_dir)
    stages.run(_ctx(run_dir), _stage(run_dir, w))
    stages.run(_ctx(run_dir, force=True), _stage(run_dir, w))
    assert w.calls == 2


def test_keep_can_refuse_a_record(run_dir):
    w = Writer(run_dir)
    stages.run(_ctx(run_dir), _stage(run_dir, w))
    st = _stage(run_dir, w)
    st.keep = lambda rec: rec.get("chars") == 99
    stages.run(_ctx(run_dir), st)
    assert w.calls == 2


def test_a_failing_stage_leaves_no_output_and_records_nothing(run_dir):
    w = Writer(run_dir)
    stages.run(_ctx(run_dir), _stage(run_dir, w))  # an earlier, good result of the same stage
    before = (run_dir / "gguf" / "copy.txt").read_text(), manifest.load(run_dir)["export"]["stages"]["copy"]
    (run_dir / "input.txt").write_text("v2")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("HALF")
        raise RuntimeError("converter died")

    ctx = _ctx(run_dir)
    with pytest.raises(RuntimeError, match="converter died"):
        stages.run(ctx, _stage(run_dir, half_then_fail))
    assert (run_dir / "gguf" / "copy.txt").read_text() == before[0]  # the old file, never the half one
    assert [p.name for p in (run_dir / "gguf").iterdir()] == ["copy.txt"]  # no .tmp- leftover
    assert manifest.load(run_dir)["export"]["stages"]["copy"] == before[1] == ctx.stages["copy"]


def test_a_stage_that_writes_nothing_fails(run_dir):
    ctx = _ctx(run_dir)
    with pytest.raises(FileNotFoundError, match="was not written"):
        stages.run(ctx, _stage(run_dir, lambda tmp: None))
    assert "copy" not in ctx.stages and not (run_dir / "gguf" / "copy.txt").exists()


def test_an_exception_in_stage_two_keeps_stage_one(run_dir):
    ctx = _ctx(run_dir)
    stages.run(ctx, _stage(run_dir, Writer(run_dir), key="one"))
    with pytest.raises(ValueError):
        stages.run(ctx, _stage(run_dir, lambda tmp: (_ for _ in ()).throw(ValueError("no")), key="two"))
    recorded = manifest.load(run_dir)["export"]["stages"]
    assert set(recorded) == {"one"}
    w = Writer(run_dir)
    stages.run(_ctx(run_dir), _stage(run_dir, w, key="one"))
    assert w.calls == 0  # the next export skips it


CRASH = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    from kolo_trainer import manifest
    from kolo_trainer.export import stages

    run_dir = Path(sys.argv[1])
    ctx = stages.Context(root=run_dir.parent, run_dir=run_dir, name="r", opts=SimpleNamespace(force=False),
                         data={}, stages={})
    def fp(): return {"input": stages.file_sig(run_dir / "input.txt")}
    def one(tmp): tmp.write_text("one")
    def two(tmp): tmp.write_text("two")
    def three(tmp):
        tmp.write_text("partial")
        os.kill(os.getpid(), signal.SIGKILL)  # a crash mid-write: no exception handler runs
    for key, fn in (("one", one), ("two", two), ("three", three)):
        stages.run(ctx, stages.Stage(key, key, fp(), [run_dir / "gguf" / (key + ".txt")], fn))
""")


def test_a_crash_after_stage_two_keeps_the_finished_stages(run_dir):
    r = subprocess.run([sys.executable, "-c", CRASH, str(run_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    recorded = manifest.load(run_dir)["export"]["stages"]
    assert set(recorded) == {"one", "two"}
    gguf = run_dir / "gguf"
    assert {p.name for p in gguf.iterdir() if not p.name.startswith(".tmp-")} == {"one.txt", "two.txt"}
    leftovers = [p.name for p in gguf.glob(".tmp-*")]
    assert len(leftovers) == 1 and leftovers[0].endswith("-three.txt")  # partial, never under its final name
    # The next export cleans the leftover (export/main does, under the lock) and redoes only stage three.
    assert manifest.clean_stale_tmp(gguf)
    calls = []
    ctx = _ctx(run_dir)
    for key in ("one", "two", "three"):
        stages.run(ctx, stages.Stage(key, key, {"input": stages.file_sig(run_dir / "input.txt")},
                                     [gguf / f"{key}.txt"], lambda tmp, k=key: (calls.append(k), tmp.write_text(k))))
    assert calls == ["three"] and (gguf / "three.txt").read_text() == "three"


def test_a_folder_output_is_replaced_whole_and_recorded_file_by_file(run_dir):
    out = run_dir / "merged"

    def write(version: str):
        def fn(tmp: Path) -> None:
            tmp.mkdir()
            (tmp / "config.json").write_text(json.dumps({"v": version}))
            (tmp / f"weights-{version}.bin").write_bytes(b"x" * 10)
        return fn

    ctx = _ctx(run_dir)
    stages.run(ctx, stages.Stage("merge", "merge", {"v": 1}, [out], write("a")))
    assert set(ctx.stages["merge"]["outputs"]) == {"merged/config.json", "merged/weights-a.bin"}
    stages.run(ctx, stages.Stage("merge", "merge", {"v": 2}, [out], write("b")))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights-b.bin"]  # nothing of version a
    assert not list(run_dir.glob(".tmp-*"))
    (out / "weights-b.bin").unlink()  # a file of the folder gone: the stage is not up to date any more
    assert not _ctx(run_dir).up_to_date("merge", {"v": 2})


def test_several_outputs_are_all_renamed_or_none(run_dir):
    outs = [run_dir / "gguf" / "a.txt", run_dir / "gguf" / "b.txt"]

    def only_first(ta: Path, tb: Path) -> None:
        ta.write_text("a")

    with pytest.raises(FileNotFoundError):
        stages.run(_ctx(run_dir), stages.Stage("x", "x", {}, outs, only_first))
    assert not (run_dir / "gguf" / "a.txt").exists() and not list((run_dir / "gguf").iterdir())
    stages.run(_ctx(run_dir), stages.Stage("x", "x", {}, outs, lambda ta, tb: (ta.write_text("a"),
                                                                                 tb.write_text("b"))))
    assert [p.read_text() for p in outs] == ["a", "b"]


def test_temporary_names_never_contain_the_run_name(tmp_path):
    """The llama.cpp converter formats its --outfile with str.format: a run named with braces must not reach it."""
    run_dir = tmp_path / "outputs" / "my{run}"
    run_dir.mkdir(parents=True)
    seen = []
    ctx = _ctx(run_dir)
    stages.run(ctx, stages.Stage("convert", "convert:F16", {}, [run_dir / "gguf" / "my{run}-F16.gguf"],
                                 lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"GGUF"))))
    assert seen and "{" not in seen[0] and seen[0].endswith("convert-F16.gguf")
