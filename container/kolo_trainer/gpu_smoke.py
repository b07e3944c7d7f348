"""The GPU smoke check: does kolo's GPU path work on this machine, end to end, in about 10 minutes?

    bash scripts/gpu_smoke.sh                      # every step, PASS/FAIL/SKIP per step
    bash scripts/gpu_smoke.sh --only driver,torch_cuda,bnb_nf4
    bash scripts/gpu_smoke.sh --bench              # ... plus the GPU benchmark (bench/gpu_backends.py)
    bash scripts/gpu_smoke.sh --list

Runs the same way inside the kolo image (``docker exec kolo bash /opt/kolo/src/scripts/gpu_smoke.sh``) and in a
plain venv with the gpu, train and export extras. Nothing is downloaded: the models are random-init Llama and
Qwen 2 of a real shape (hidden 512) with kolo's tiny SentencePiece tokenizer, the data is kolo's bundled example.

Exit codes: 0 = no step failed (SKIPs allowed), 1 = at least one FAIL, 2 = no NVIDIA GPU here (one line) or bad
options. Each step is a function ``(Ctx) -> Result``; a step whose prerequisite did not PASS is SKIPped with the
reason. Training, export and anything that imports unsloth run as child processes: unsloth patches transformers
and peft on import, and a step must not change what the next one runs.

Module top is light (stdlib + kolo's light modules) so that ``--list``, option errors and the no-GPU answer are
instant and testable on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .train import backends

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
#: Steps' child processes get this long each; the whole check should stay under ~10 minutes on one GPU.
CHILD_TIMEOUT_S = int(os.environ.get("KOLO_SMOKE_TIMEOUT", "300"))
HIDDEN = 512  # >= 512 (a real shape for the kernels) and a multiple of 256 (real Q4_K_M k-quants)


@dataclass
class Result:
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class Step:
    name: str
    func: Callable[["Ctx"], Result]
    help: str
    needs: tuple[str, ...] = ()
    optional: bool = False  # only with --bench (or --only naming it)


@dataclass
class Ctx:
    workdir: Path
    repo: Path | None
    py: str = sys.executable
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.workdir / "data_root"


def _child(ctx: Ctx, argv: list[str], timeout: int = CHILD_TIMEOUT_S) -> tuple[int, str]:
    """Run a child process; (exit code, its stdout then stderr). A timeout is exit code 124."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ctx.workdir))
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout} s"
    return p.returncode, (p.stdout + "\n" + p.stderr).strip()


def _py(ctx: Ctx, code: str, timeout: int = CHILD_TIMEOUT_S) -> tuple[int, str]:
    return _child(ctx, [ctx.py, "-c", code], timeout)


def _last(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


# ------------------------------------------------------------------------------------------------- the steps
def step_driver(ctx: Ctx) -> Result:
    version = backends.nvidia_driver_version()
    if version is None:
        return Result(FAIL, "no NVIDIA driver version found (/proc/driver/nvidia/version, nvidia-smi)")
    problem = backends.driver_problem(version)
    return Result(FAIL, problem) if problem else Result(PASS, f"driver {version}")


def step_torch_cuda(ctx: Ctx) -> Result:
    probe = backends.probe_cuda()
    if not probe.available:
        return Result(FAIL, f"torch {probe.torch_cuda or '(CPU build)'} cannot use CUDA: "
                            f"{probe.init_error or 'torch.cuda.is_available() is False'}")
    import torch

    return Result(PASS, f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")


def step_pip_check(ctx: Ctx) -> Result:
    code, out = _child(ctx, [ctx.py, "-m", "pip", "check"], timeout=120)
    return Result(PASS, _last(out)) if code == 0 else Result(FAIL, out.replace("\n", "; "))


BNB_CODE = """
import torch, bitsandbytes as bnb
torch.manual_seed(0)
dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
q = bnb.nn.Linear4bit(512, 512, bias=False, compute_dtype=dt, quant_type="nf4").cuda()
head = torch.nn.Linear(512, 512).cuda()
opt = bnb.optim.PagedAdamW8bit(head.parameters(), lr=1e-3)
x = torch.randn(4, 512, device="cuda", dtype=dt)
before = head.weight.detach().clone()
loss = head(q(x).float()).pow(2).mean()
loss.backward(); opt.step()
assert torch.isfinite(loss), loss
assert q.weight.quant_state is not None and q.weight.dtype == torch.uint8, "not 4-bit"
assert not torch.equal(before, head.weight), "the paged AdamW step changed nothing"
print(f"NF4 forward + paged AdamW 8-bit step ok (bitsandbytes {bnb.__version__}, loss {loss.item():.4f})")
"""


def step_bnb_nf4(ctx: Ctx) -> Result:
    code, out = _py(ctx, BNB_CODE, timeout=180)
    return Result(PASS, _last(out)) if code == 0 else Result(FAIL, _last(out))


def step_unsloth_import(ctx: Ctx) -> Result:
    code, out = _py(ctx, "from kolo_trainer.train import backends; backends.unsloth_environment(); import unsloth; "
                         "print('unsloth', unsloth.__version__, '| xformers:', backends.xformers_status())")
    return Result(PASS, _last(out)) if code == 0 else Result(FAIL, _last(out))


def step_llama_offload(ctx: Ctx) -> Result:
    code, out = _py(ctx, "import llama_cpp; print(llama_cpp.__version__, llama_cpp.llama_supports_gpu_offload())")
    if code != 0:
        return Result(FAIL, _last(out))
    ok = _last(out).endswith("True")
    return Result(PASS if ok else FAIL, f"llama-cpp-python {_last(out).split()[0]}: GPU offload "
                                        f"{'supported' if ok else 'NOT supported (built without CUDA)'}")


def step_models(ctx: Ctx) -> Result:
    from . import tiny

    (ctx.root / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny.example_dataset_path(), ctx.root / "data" / "smoke.jsonl")
    for family in ("llama", "qwen2"):
        code, out = _child(ctx, [ctx.py, "-m", "kolo_trainer", "make-tiny-model", "--data-root", str(ctx.root),
                                 "--name", f"smoke-{family}", "--family", family, "--hidden-size", str(HIDDEN),
                                 "--layers", "2"])
        if code != 0:
            return Result(FAIL, f"{family}: {_last(out)}")
    return Result(PASS, f"random-init Llama and Qwen 2, hidden {HIDDEN}, under {ctx.root / 'models'}")


def _train(ctx: Ctx, run: str, backend: str, method: str, family: str = "llama", extra: tuple[str, ...] = ()
           ) -> Result:
    """A real ``kolo_trainer train`` (10 steps); PASS when it finished with the backend/method asked for."""
    argv = [ctx.py, "-m", "kolo_trainer", "train", "--data-root", str(ctx.root), "--base-model",
            f"models/smoke-{family}", "--train-data", "data/smoke.jsonl", "--output-dir", run, "--backend", backend,
            "--method", method, "--max-steps", "10", "--save-steps", "10", "--overwrite", *extra]
    code, out = _child(ctx, argv)
    if code != 0:
        return Result(FAIL, f"exit {code}: {_last(out)}")
    man = json.loads((ctx.root / "outputs" / run / "kolo.json").read_text())
    if (man.get("backend"), man.get("method")) != (backend, method):
        return Result(FAIL, f"trained with {man.get('backend')}/{man.get('method')}, not {backend}/{method}")
    train = man.get("train") or {}
    loss = train.get("final_loss")
    if loss is None or loss != loss:
        return Result(FAIL, f"no finite final loss ({loss})")
    peak = (man.get("memory") or {}).get("peak_gpu_bytes_after") or 0
    return Result(PASS, f"{train.get('global_step')} steps, loss {loss:.3f}, peak GPU {peak / 2**30:.2f} GiB, "
                        f"device {man.get('device')}")


def _trainer(run: str, backend: str, method: str, family: str = "llama", extra: tuple[str, ...] = ()):
    return lambda ctx: _train(ctx, run, backend, method, family, extra)


def _packing(ctx: Ctx, backend: str) -> Result:
    code, out = _child(ctx, [ctx.py, "-m", "kolo_trainer.gpu_smoke", "--packing-probe", backend,
                             str(ctx.root / "models" / "smoke-llama")])
    found = [x for x in out.splitlines() if x.startswith(PROBE_MARK)]
    if code != 0 or not found:
        return Result(FAIL, _last(out))
    m = json.loads(found[-1][len(PROBE_MARK):])
    # packed = the packed batch vs each row alone (must agree up to bf16 rounding and kernel choice: varlen vs
    # dense); leaky = the same rows concatenated without the packing metadata (must differ by far more, else the
    # measurement could not see a leak at all).
    ok = m["packed"] < 0.1 and m["leaky"] > 10 * max(m["packed"], 1e-4)
    return Result(PASS if ok else FAIL, f"max |logit diff| packed vs separate {m['packed']:.2e}; "
                                        f"without isolation {m['leaky']:.2e}")


PROBE_MARK = "packing-probe: "


def packing_probe(backend: str, model_dir: str) -> dict:
    """Child-process side of the packing steps: load like kolo train does, then compare logits."""
    import torch

    from .options import TrainOptions
    from .train.collate import FlattenCollator

    device = backends.detect_device()
    opts = TrainOptions(base_model=model_dir, backend=backend, method="lora", max_seq_length=256, packing=True)
    load = backends.load_unsloth if backend == "unsloth" else backends.load_hf
    model = load(model_dir, opts, device, True).model
    model.train()  # the packed code paths are the training ones; dropout is 0 (kolo's default)
    rows = [[1] + list(range(10, 10 + n)) for n in (37, 11, 60)]
    dev = next(model.parameters()).device
    batch = {k: v.to(dev) for k, v in FlattenCollator()([{"input_ids": r, "labels": r} for r in rows]).items()
             if k != "labels"}
    with torch.no_grad():
        packed = model(**batch).logits[0].float()
        leaky = model(input_ids=batch["input_ids"]).logits[0].float()
        single = torch.cat([model(input_ids=torch.tensor([r], device=dev)).logits[0].float() for r in rows])
    return {"packed": float((packed - single).abs().max()), "leaky": float((leaky - single).abs().max())}


def step_export_unsloth(ctx: Ctx) -> Result:
    code, out = _child(ctx, [ctx.py, "-m", "kolo_trainer", "export", "--data-root", str(ctx.root), "--output-dir",
                             "smoke-unsloth-lora", "--quantization", "Q4_K_M", "--verify"])
    return Result(PASS, _last(out)) if code == 0 else Result(FAIL, f"exit {code}: {_last(out)}")


def train_then_export(ctx: Ctx, run: str, backend: str) -> Result:
    """``kolo train --quantization Q4_K_M`` as kolo runs it: the host pipeline's steps (training, then export with
    verification in its own process), each run here as a child process. Needs kolo's host package (a venv install);
    the image has only the trainer, and there ``export_unsloth`` covers the same export."""
    try:
        from kolo_cli.pipeline import train_steps
    except ImportError:
        return Result(SKIP, "kolo's host CLI (kolo_cli) is not installed here; export_unsloth covers the export")
    from .options import TrainOptions

    explicit = {"base_model": "models/smoke-llama", "train_data": "data/smoke.jsonl", "output_dir": run,
                "backend": backend, "method": "lora", "max_steps": 10, "save_steps": 10, "overwrite": True,
                "quantization": ["Q4_K_M"]}
    steps = train_steps(TrainOptions(**explicit), explicit, ctx.root)
    for argv in steps:
        code, out = _child(ctx, [ctx.py, *argv[1:]])
        if code != 0:
            return Result(FAIL, f"{argv[3]}: exit {code}: {_last(out)}")
    made = sorted((ctx.root / "outputs" / run / "gguf").glob("*Q4_K_M.gguf"))
    if len(steps) != 2 or not made:
        return Result(FAIL, f"{len(steps)} step(s) ran and no Q4_K_M GGUF was written")
    return Result(PASS, f"train, then export in its own process: {made[0].name}")


def _q4(ctx: Ctx) -> Path | None:
    found = sorted((ctx.root / "outputs").glob("smoke-*/gguf/*Q4_K_M.gguf"))
    return found[0] if found else None


GGUF_CODE = """
import sys, llama_cpp
m = llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=-1, n_ctx=256, verbose=True)
m.create_completion("Hi", max_tokens=4)
"""


def step_gguf_offload(ctx: Ctx) -> Result:
    gguf = _q4(ctx)
    if gguf is None:
        made = [n for n in ("export_unsloth", "train_quantization") if ctx.results.get(n, Result(SKIP)).status == PASS]
        return Result(FAIL if made else SKIP, "no Q4_K_M GGUF under outputs/smoke-*/gguf"
                      + ("" if made else " (no export step passed)"))
    code, out = _child(ctx, [ctx.py, "-c", GGUF_CODE, str(gguf)])
    offload = [x for x in out.splitlines() if "offloaded" in x and "layers to GPU" in x]
    if code != 0 or not offload:
        return Result(FAIL, _last(out) if code else "llama.cpp did not report offloading layers to the GPU")
    done, _, total = offload[-1].split("offloaded", 1)[1].split("layers")[0].strip().partition("/")
    ok = done.strip() == total.strip()
    return Result(PASS if ok else FAIL, f"{gguf.name}: {offload[-1].strip()}")


def step_bench(ctx: Ctx) -> Result:
    script = ctx.repo / "bench" / "gpu_backends.py" if ctx.repo else None
    if script is None or not script.exists():
        return Result(SKIP, "bench/gpu_backends.py not found (pass --repo)")
    code, out = _child(ctx, [ctx.py, str(script), "--steps", "30"], timeout=600)
    return Result(PASS, out.replace("\n", " | ")[-600:]) if code == 0 else Result(FAIL, f"exit {code}: "
                                                                                      f"{_last(out)}")


STEPS: list[Step] = [
    Step("driver", step_driver, f"NVIDIA driver >= {backends.MIN_NVIDIA_DRIVER}"),
    Step("torch_cuda", step_torch_cuda, "torch initialises CUDA"),
    Step("pip_check", step_pip_check, "pip check: every installed package has its requirements"),
    Step("bnb_nf4", step_bnb_nf4, "bitsandbytes NF4 forward + paged AdamW 8-bit step", ("torch_cuda",)),
    Step("unsloth_import", step_unsloth_import, "unsloth imports (and whether xformers loads)", ("torch_cuda",)),
    Step("llama_offload", step_llama_offload, "llama-cpp-python was built with GPU offload"),
    Step("models", step_models, f"random-init Llama + Qwen 2 (hidden {HIDDEN}), no download"),
    Step("hf_lora", _trainer("smoke-hf-lora", "hf", "lora"), "train: hf backend, LoRA", ("torch_cuda", "models")),
    Step("hf_qlora", _trainer("smoke-hf-qlora", "hf", "qlora"), "train: hf backend, QLoRA",
         ("bnb_nf4", "models")),
    Step("unsloth_lora", _trainer("smoke-unsloth-lora", "unsloth", "lora"), "train: unsloth, LoRA",
         ("unsloth_import", "models")),
    Step("unsloth_lora_qwen2", _trainer("smoke-unsloth-qwen2", "unsloth", "lora", "qwen2"),
         "train: unsloth, LoRA, Qwen 2", ("unsloth_import", "models")),
    Step("unsloth_qlora", _trainer("smoke-unsloth-qlora", "unsloth", "qlora"), "train: unsloth, QLoRA",
         ("unsloth_import", "bnb_nf4", "models")),
    Step("unsloth_full", _trainer("smoke-unsloth-full", "unsloth", "full"), "train: unsloth, full fine-tune",
         ("unsloth_import", "models")),
    Step("hf_packing", _trainer("smoke-hf-packing", "hf", "lora", extra=("--packing",)),
         "train: hf, --packing", ("torch_cuda", "models")),
    Step("unsloth_packing", _trainer("smoke-unsloth-packing", "unsloth", "lora", extra=("--packing",)),
         "train: unsloth, --packing", ("unsloth_import", "models")),
    Step("hf_packing_isolation", lambda ctx: _packing(ctx, "hf"), "packed rows do not see each other (hf)",
         ("torch_cuda", "models")),
    Step("unsloth_packing_isolation", lambda ctx: _packing(ctx, "unsloth"),
         "packed rows do not see each other (unsloth)", ("unsloth_import", "models")),
    Step("export_unsloth", step_export_unsloth, "kolo export with verification of the unsloth LoRA run",
         ("unsloth_lora", "llama_offload")),
    Step("train_quantization", lambda ctx: train_then_export(ctx, "smoke-train-quant", "unsloth"),
         "kolo train --quantization Q4_K_M: unsloth training, then export + verification", ("unsloth_import",
                                                                                             "models")),
    Step("gguf_offload", step_gguf_offload, "the Q4_K_M GGUF loads fully offloaded to the GPU",
         ("llama_offload",)),
    Step("bench", step_bench, "GPU benchmark: unsloth vs hf (bench/gpu_backends.py)", ("torch_cuda",),
         optional=True),
]


# ------------------------------------------------------------------------------------------------- the runner
def select(only: list[str], skip: list[str], bench: bool, steps: list[Step] = STEPS) -> list[Step]:
    """The steps to run, in their fixed order; unknown names are a ValueError naming the known ones."""
    known = {s.name for s in steps}
    unknown = [n for n in only + skip if n not in known]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(s.name for s in steps)}")
    return [s for s in steps if (s.name in only if only else (bench or not s.optional)) and s.name not in skip]


def run_steps(ctx: Ctx, chosen: list[Step], out=print) -> dict[str, Result]:
    """Run ``chosen`` in order and print one line per step. A step whose prerequisite ran and did not PASS is
    SKIPped; a prerequisite that was not selected is assumed to be in place (``--only`` a single step)."""
    for step in chosen:
        blocked = [n for n in step.needs if n in ctx.results and ctx.results[n].status != PASS]
        t = time.perf_counter()
        if blocked:
            res = Result(SKIP, "needs " + ", ".join(f"{n} ({ctx.results[n].status})" for n in blocked))
        else:
            try:
                res = step.func(ctx)
            except Exception as e:  # a step's own crash is that step's FAIL, not the end of the check
                res = Result(FAIL, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        res.seconds = time.perf_counter() - t
        ctx.results[step.name] = res
        out(f"{res.status}  {step.name:<26} {res.seconds:6.1f}s  {res.reason}")
    return ctx.results


def summary(results: dict[str, Result]) -> tuple[str, int]:
    """(last line, exit code): 1 when any step failed, else 0."""
    count = {k: sum(1 for r in results.values() if r.status == k) for k in (PASS, FAIL, SKIP)}
    line = f"gpu smoke: {count[PASS]} passed, {count[FAIL]} failed, {count[SKIP]} skipped"
    return line, 1 if count[FAIL] else 0


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_smoke.sh", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated steps to run (see --list)")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out")
    p.add_argument("--bench", action="store_true", help="also run the GPU benchmark (a few more minutes)")
    p.add_argument("--list", action="store_true", help="list the steps and exit")
    p.add_argument("--workdir", help="where the models and runs go (default: a temporary folder, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--repo", help="the kolo checkout (for bench/); the wrapper script passes it")
    p.add_argument("--packing-probe", nargs=2, metavar=("BACKEND", "MODEL_DIR"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        a = _args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return int(e.code or 0)
    if a.packing_probe:
        print(PROBE_MARK + json.dumps(packing_probe(*a.packing_probe)), flush=True)
        return 0
    split = [[n for n in v.split(",") if n] for v in (a.only, a.skip)]
    try:
        chosen = select(split[0], split[1], a.bench)
    except ValueError as e:
        print(f"gpu_smoke: {e}", file=sys.stderr)
        return 2
    if a.list:
        for s in STEPS:
            print(f"{s.name:<26} {s.help}" + (" (with --bench)" if s.optional else ""))
        return 0
    if not backends.nvidia_present():
        print("gpu_smoke: no NVIDIA GPU on this machine (no driver in /proc/driver/nvidia, no /dev/nvidia*): "
              "nothing to check")
        return 2
    return _run(a, chosen)


def _run(a: argparse.Namespace, chosen: list[Step]) -> int:
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="kolo-gpu-smoke-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(workdir=workdir.resolve(), repo=Path(a.repo).resolve() if a.repo else None)
    print(f"gpu smoke: {len(chosen)} step(s), working in {ctx.workdir}", flush=True)
    try:
        results = run_steps(ctx, chosen, out=lambda line: print(line, flush=True))
    finally:
        if not a.workdir and not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    line, code = summary(results)
    print(line)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
