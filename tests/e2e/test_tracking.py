"""Tracking that works, for real on the tiny model: `--report-to tensorboard` event files and an offline wandb run
hold the losses kolo logged (read back with TensorBoard's EventAccumulator and wandb's own protobuf records), and
early stopping keeps the BEST checkpoint by eval loss: the saved model (what export merges) is the best one, not
the last. Two short trainings per module (6 optimizer steps each), shared by the tests.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
import train_helpers as th  # noqa: E402

pytestmark = pytest.mark.e2e

#: Full fine-tune at a learning rate that overfits the 8 training rows within a few steps: the eval loss on the
#: two held-out rows is lowest at the first evaluation and rises after it (seeded: the same on every run), so
#: patience 2 stops at step 6 with the best checkpoint at step 2.
ARGS = ["--train-data", "data/qa.jsonl", "--eval-data", "data/qa_eval.jsonl", "--base-model", "models/tiny",
        "--method", "full", "--epochs", "30", "--batch-size", "4", "--learning-rate", "0.005",
        "--scheduler-type", "constant", "--warmup-steps", "0", "--logging-steps", "1", "--eval-steps", "2",
        "--early-stopping-patience", "2", "--seed", "7"]
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    return th.new_root(tmp_path_factory.mktemp("track"), tiny_model)


@pytest.fixture(scope="module")
def kolo_m(root: Path, tmp_path_factory: pytest.TempPathFactory, make_kolo) -> KoloRunner:
    return make_kolo(root, tmp_path_factory.mktemp("cwd"))


def _train(kolo_m: KoloRunner, root: Path, out: str, tracker: str) -> Path:
    t = time.monotonic()
    r = kolo_m("--runtime", "local", "train", *ARGS, "--output-dir", out, "--report-to", tracker, env=OFFLINE,
               timeout=600)
    print(f"{out}: {time.monotonic() - t:.1f}s")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return root / "outputs" / out


@pytest.fixture(scope="module")
def tb_run(kolo_m: KoloRunner, root: Path) -> Path:
    return _train(kolo_m, root, "tb", "tensorboard")


@pytest.fixture(scope="module")
def wandb_run(kolo_m: KoloRunner, root: Path) -> Path:
    return _train(kolo_m, root, "wb", "wandb")


def _log(run: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
            if key in r}


def _close(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want) and want, (got, want)
    for step, value in want.items():
        assert abs(got[step] - value) <= 1e-5 * abs(value), (step, got[step], value)  # float32 in the event file


def test_tensorboard_event_files_hold_the_logged_losses(tb_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list((tb_run / "runs").rglob("events.out.tfevents.*"))
    assert files, sorted(p.name for p in tb_run.iterdir())
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    _close({e.step: e.value for e in acc.Scalars("train/loss")}, _log(tb_run, "loss"))
    _close({e.step: e.value for e in acc.Scalars("eval/loss")}, _log(tb_run, "eval_loss"))


def _wandb_records(path: Path):
    """The protobuf records of a .wandb file. wandb 0.31 reads these in its Go core only (the Python reader is
    gone), so the container format is read here: a 7-byte header, then LevelDB-log blocks of 32 KiB whose records
    have a 7-byte header (crc32c, little-endian length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    data, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", data[:8]
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk
        elif kind == 0 and length == 0:
            pos += left - 7  # zero padding up to the block end


def test_offline_wandb_run_holds_the_logged_losses(wandb_run: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    runs = list((wandb_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((wandb_run / "wandb").iterdir())
    train, evals = {}, {}
    for raw in _wandb_records(runs[0]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") != "history":
            continue
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
        step = items.get("train/global_step")
        if "train/loss" in items:
            train[int(step)] = items["train/loss"]
        if "eval/loss" in items:
            evals[int(step)] = items["eval/loss"]
    _close(train, _log(wandb_run, "loss"))
    _close(evals, _log(wandb_run, "eval_loss"))
    m = json.loads((wandb_run / "kolo.json").read_text())
    assert m["options"]["report_to"] == "wandb" and "WANDB" not in json.dumps(m["options"])


def test_early_stopping_keeps_the_best_checkpoint_not_the_last(tb_run: Path) -> None:
    from safetensors.torch import load_file

    evals = _log(tb_run, "eval_loss")
    best_step = min(evals, key=evals.get)
    m = json.loads((tb_run / "kolo.json").read_text())["train"]
    assert m["stopped_early"] and m["global_step"] > best_step, (m, evals)  # the best is not the last
    assert m["best_checkpoint"] == f"checkpoints/checkpoint-{best_step}"
    assert m["best_eval_loss"] == pytest.approx(evals[best_step])
    saved = load_file(str(tb_run / "model" / "model.safetensors"))
    best = load_file(str(tb_run / m["best_checkpoint"] / "model.safetensors"))
    last = load_file(str(tb_run / "checkpoints" / f"checkpoint-{m['global_step']}" / "model.safetensors"))
    assert saved.keys() == best.keys()
    assert all((saved[k] == best[k]).all() for k in best)  # model/ (what export merges) is the best checkpoint
    assert any(not (saved[k] == last[k]).all() for k in last)


def test_wandb_key_only_from_the_environment(kolo_m: KoloRunner) -> None:
    online = kolo_m("--runtime", "local", "train", *ARGS, "--output-dir", "nokey", "--report-to", "wandb",
                    env={"WANDB_API_KEY": "", "WANDB_MODE": ""}, timeout=300)
    assert online.returncode == 2, online.stdout[-2000:] + online.stderr[-2000:]
    assert "no WANDB_API_KEY in the environment" in online.stderr and "WANDB_MODE=offline" in online.stderr
    assert "[model] start" not in online.stdout  # refused before the model loads
    flag = kolo_m("--runtime", "local", "train", "--report-to", "wandb", "--wandb-api-key", "sekrit", timeout=120)
    assert flag.returncode == 2 and "sekrit" not in flag.stdout, flag.stderr


def test_delete_removes_the_tracker_folders(kolo_m: KoloRunner, root: Path, tb_run: Path, wandb_run: Path) -> None:
    """runs/ and wandb/ are kolo's (runfolder.RUN_ENTRIES): `kolo delete` takes them, links inside wandb/ too."""
    for run in (tb_run, wandb_run):
        assert (run / ("runs" if run == tb_run else "wandb")).is_dir()
        r = kolo_m("delete", run.name, "--yes", timeout=120)
        assert r.returncode == 0, r.stderr
        assert not run.exists(), sorted(p.name for p in run.iterdir())
