"""scripts/gpu_smoke.sh on a machine without a GPU: as far as it goes here.

* The real script: without an NVIDIA GPU one line and exit 2; --list; a bad step name is exit 2.
* The runner (step selection, prerequisites, a crashing step, the summary and its exit code) with small steps.
* The real steps that mean something on a CPU: ``driver`` and ``torch_cuda`` FAIL with their reason, ``models``
  builds the random-init Llama and Qwen 2, ``hf_lora`` trains through kolo for real, and ``hf_packing_isolation``
  measures packed-row isolation on the hf backend (its probe is device-agnostic).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kolo_trainer import gpu_smoke as gs
from kolo_trainer.train import backends

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gpu_smoke.sh"

no_gpu = pytest.mark.skipif(backends.nvidia_present(), reason="this machine has an NVIDIA GPU")


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@no_gpu
def test_script_without_a_gpu_says_so_in_one_line_and_exits_2():
    r = _script()
    assert r.returncode == 2, r.stderr
    assert len(r.stdout.splitlines()) == 1 and "no NVIDIA GPU" in r.stdout
    assert r.stderr == ""


def test_script_lists_the_steps():
    r = _script("--list")
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == [s.name for s in gs.STEPS]
    assert "(with --bench)" in r.stdout.splitlines()[-1]


def test_script_refuses_an_unknown_step():
    r = _script("--only", "driver,nope")
    assert r.returncode == 2 and "unknown step(s) nope; known: driver, torch_cuda" in r.stderr


def test_selection_keeps_the_order_and_leaves_the_benchmark_out_by_default():
    default = [s.name for s in gs.select([], [], bench=False)]
    assert "bench" not in default and default == [s.name for s in gs.STEPS if not s.optional]
    assert [s.name for s in gs.select([], [], bench=True)][-1] == "bench"
    assert [s.name for s in gs.select(["models", "driver"], [], False)] == ["driver", "models"]
    assert "pip_check" not in [s.name for s in gs.select([], ["pip_check"], False)]
    assert [s.name for s in gs.select(["bench"], [], False)] == ["bench"]  # --only names it: it runs


def _steps() -> list[gs.Step]:
    def boom(ctx):
        raise RuntimeError("kaput\nsecond line")

    return [
        gs.Step("a", lambda ctx: gs.Result(gs.PASS, "fine"), ""),
        gs.Step("b", lambda ctx: gs.Result(gs.FAIL, "broken"), ""),
        gs.Step("c", lambda ctx: gs.Result(gs.PASS, "ran"), "", needs=("a",)),
        gs.Step("d", lambda ctx: gs.Result(gs.PASS, "never"), "", needs=("a", "b")),
        gs.Step("e", boom, ""),
    ]


def test_runner_skips_after_a_failed_prerequisite_and_a_crash_is_a_fail(tmp_path):
    lines: list[str] = []
    ctx = gs.Ctx(workdir=tmp_path, repo=None)
    res = gs.run_steps(ctx, _steps(), out=lines.append)
    assert {k: r.status for k, r in res.items()} == {"a": "PASS", "b": "FAIL", "c": "PASS", "d": "SKIP", "e": "FAIL"}
    assert res["d"].reason == "needs b (FAIL)"
    assert res["e"].reason == "RuntimeError: kaput"
    assert [line.split()[:2] for line in lines] == [["PASS", "a"], ["FAIL", "b"], ["PASS", "c"], ["SKIP", "d"],
                                                     ["FAIL", "e"]]
    assert gs.summary(res) == ("gpu smoke: 2 passed, 2 failed, 1 skipped", 1)
    ok = gs.run_steps(gs.Ctx(workdir=tmp_path, repo=None), [_steps()[0], _steps()[2]], out=lines.append)
    assert gs.summary(ok) == ("gpu smoke: 2 passed, 0 failed, 0 skipped", 0)


def test_a_prerequisite_not_selected_is_assumed_in_place(tmp_path):
    res = gs.run_steps(gs.Ctx(workdir=tmp_path, repo=None), [_steps()[2]], out=lambda line: None)
    assert res["c"].status == gs.PASS


@no_gpu
def test_real_steps_on_this_cpu_machine(tmp_path):
    pytest.importorskip("transformers")
    ctx = gs.Ctx(workdir=tmp_path, repo=REPO)
    chosen = gs.select(["driver", "torch_cuda", "models", "hf_lora", "hf_packing_isolation"], [], False)
    lines: list[str] = []
    res = gs.run_steps(ctx, chosen, out=lines.append)
    assert res["driver"].status == gs.FAIL and "no NVIDIA driver" in res["driver"].reason
    assert res["torch_cuda"].status == gs.FAIL and "cannot use CUDA" in res["torch_cuda"].reason
    assert res["models"].status == gs.PASS, res["models"].reason
    for family in ("llama", "qwen2"):
        assert (ctx.root / "models" / f"smoke-{family}" / "config.json").exists()
    # torch_cuda FAILed, so the GPU training steps that need it are skipped with that reason
    assert res["hf_lora"].status == gs.SKIP and res["hf_lora"].reason == "needs torch_cuda (FAIL)"
    # run them without the CUDA prerequisite: the real training and the isolation measurement, on the CPU
    ctx.results = {"models": res["models"]}
    res = gs.run_steps(ctx, gs.select(["hf_lora", "hf_packing_isolation"], [], False), out=lines.append)
    assert res["hf_lora"].status == gs.PASS, res["hf_lora"].reason
    assert "10 steps, loss" in res["hf_lora"].reason and "device cpu" in res["hf_lora"].reason
    assert res["hf_packing_isolation"].status == gs.PASS, res["hf_packing_isolation"].reason


def test_train_then_export_runs_kolos_own_pipeline_on_this_machine(tmp_path):
    """The train_quantization step's body, with the hf backend (the unsloth one needs a GPU): kolo's host pipeline
    decides the steps (training, then export in its own process), both run for real, a Q4_K_M GGUF results."""
    pytest.importorskip("kolo_cli")
    pytest.importorskip("llama_cpp")
    ctx = gs.Ctx(workdir=tmp_path, repo=REPO)
    assert gs.step_models(ctx).status == gs.PASS
    res = gs.train_then_export(ctx, "smoke-hf-quant", "hf")
    assert res.status == gs.PASS, res.reason
    assert res.reason == "train, then export in its own process: " + next(
        (ctx.root / "outputs" / "smoke-hf-quant" / "gguf").glob("*Q4_K_M.gguf")).name
    # the CPU build of llama.cpp here offloads nothing: the offload step must say FAIL, not PASS
    off = gs.step_gguf_offload(ctx)
    assert (off.status, off.reason) == (gs.FAIL, "llama.cpp did not report offloading layers to the GPU")
