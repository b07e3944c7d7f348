"""`kolo train --nproc/--nnodes`: the torchrun prefix of the one argv builder, parsed back by torchrun's own
parser; the option rules (refused before anything runs); and the Ctrl-C stop script signalling only the top
process of a run (torchrun passes the signal on; a second SIGINT would skip the ranks' checkpoint)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kolo_cli.transport import STOP_SCRIPT, launcher_argv, trainer_argv
from kolo_trainer.options import ExportOptions, TrainOptions


def test_one_process_has_no_prefix():
    assert launcher_argv(TrainOptions, {}) == [] and launcher_argv(TrainOptions, {"nproc": 1}) == []
    assert trainer_argv("train", TrainOptions, {"epochs": 2}, "/d")[:4] == ["python", "-m", "kolo_trainer", "train"]
    assert launcher_argv(ExportOptions, {"output_dir": "r"}) == []


def test_nproc_prefixes_torchrun_standalone():
    argv = trainer_argv("train", TrainOptions, {"nproc": 2, "epochs": 2}, "/d")
    assert argv[:10] == ["python", "-m", "kolo_trainer.train.launch", "--nproc-per-node=2", "--standalone",
                         "--local-addr=127.0.0.1", "-m", "--", "kolo_trainer", "train"]
    assert "--nproc=2" in argv and argv[-2:] == ["--data-root", "/d"]


def test_nnodes_uses_the_static_rendezvous_of_node_rank():
    argv = trainer_argv("train", TrainOptions, {"nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.5",
                                                "master_port": 29555}, "/d")
    assert argv[1:9] == ["-m", "kolo_trainer.train.launch", "--nproc-per-node=1", "--nnodes=2", "--node-rank=1",
                         "--master-addr=10.0.0.5", "--master-port=29555", "-m"]


def test_torchrun_parses_the_prefix_and_leaves_the_trainer_argv_alone():
    """The trainer's own --nproc=2 must not be taken for an abbreviation of torchrun's --nproc-per-node."""
    run = pytest.importorskip("torch.distributed.run")
    argv = trainer_argv("train", TrainOptions, {"nproc": 2, "output_dir": "x y"}, "/d")
    args = run.parse_args(argv[3:])
    assert args.nproc_per_node == "2" or args.nproc_per_node == 2
    assert args.standalone and args.module and args.training_script == "kolo_trainer"
    assert args.training_script_args == argv[argv.index("kolo_trainer") + 1:]


def test_dry_run_shows_the_launcher_inside_the_container(kolo):
    r = kolo("train", "--dry-run", "--nproc", "4")
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout.strip())
    i = argv.index("kolo")
    assert argv[i + 1:i + 5] == ["python", "-m", "kolo_trainer.train.launch", "--nproc-per-node=4"]
    assert argv[argv.index("kolo_trainer") + 1] == "train"


@pytest.mark.parametrize("flags, says", [
    (["--nproc", "2", "--backend", "unsloth"], "--backend unsloth trains on one GPU only"),
    (["--fsdp", "--nproc", "2"], "--fsdp shards a full fine-tune"),
    (["--fsdp", "--method", "full"], "--fsdp shards a full fine-tune"),
    (["--nnodes", "2", "--node-rank", "2"], "--node-rank 2: must be below --nnodes 2"),
    (["--nproc", "0"], "--nproc"),
])
def test_bad_distributed_options_are_refused_before_anything_runs(kolo, flags, says):
    r = kolo("train", "--dry-run", *flags)
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr


CHILD = r"""
import os, signal, subprocess, sys, time
out = sys.argv[1]
def h(s, f):
    with open(out + "." + str(os.getpid()), "a") as fh: fh.write("INT\n")
signal.signal(signal.SIGINT, h)
if sys.argv[2] == "parent":
    c = subprocess.Popen([sys.executable, "-c", sys.argv[3], out, "child", sys.argv[3]])
    open(out + ".child", "w").write(str(c.pid))
open(out + ".ready." + str(os.getpid()), "w").close()
deadline = time.time() + 20
while time.time() < deadline and not os.path.exists(out + "." + str(os.getpid())):
    time.sleep(0.05)
"""


def test_stop_script_signals_the_top_process_only(tmp_path: Path):
    marker = uuid.uuid4().hex[:12]
    out = str(tmp_path / "sig")
    env = dict(os.environ, KOLO_RUN_ID=marker)
    parent = subprocess.Popen([sys.executable, "-c", CHILD, out, "parent", CHILD], env=env)
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("sig.ready.*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int((tmp_path / "sig.child").read_text())
        stop = subprocess.run([sys.executable, "-c", STOP_SCRIPT, marker, "0.5"], capture_output=True, text=True,
                              timeout=60)
        assert stop.stdout.startswith("stopped 1 process(es)"), stop.stdout + stop.stderr
        assert (tmp_path / f"sig.{parent.pid}").read_text() == "INT\n"  # one SIGINT, to the parent
        assert not (tmp_path / f"sig.{child}").exists()  # the child got none from the script (SIGKILL at the end)
    finally:
        parent.kill()
        parent.wait()
