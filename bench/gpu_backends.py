"""Benchmark 3 (needs a CUDA GPU): kolo's unsloth backend vs its hf backend on a Llama-3.2-1B-shaped model.

    .venv/bin/python bench/gpu_backends.py                 # 30 optimizer steps per backend
    .venv/bin/python bench/gpu_backends.py --steps 50 --method qlora

The model is random-init (no download: this runs offline) with Llama-3.2-1B's shape: hidden 2048, 16 layers,
32 query / 8 key-value heads, MLP 8192, vocabulary 128256, tied embeddings, rope theta 500000. Its tokenizer is
kolo's tiny SentencePiece one (ids < 1000, all valid rows of the 128k embedding): the tokenizer decides which ids
go in, not how much compute a step costs, so step time and memory are those of the real 1B shape.

Each backend trains in its own process through kolo's real pipeline (``python -m kolo_trainer train --backend X``,
otherwise kolo's defaults: LoRA r16 on all linear layers, bf16 where supported, gradient checkpointing on CUDA
(unsloth's offloaded variant for unsloth), batch 2, max_seq_length 1024) on the same generated mixed-length data
(20..1000 tokens). Figures come from each run's kolo.json: step time = timings.train_s / global_step, peak GPU
memory = memory.peak_gpu_bytes_after (torch.cuda.max_memory_allocated). Goal (issue 7): unsloth >= 2x faster
per step and <= 0.6x the peak memory of hf.

Warm-up: the first steps pay one-off costs (unsloth's and torch's kernel compilation, CUDA/cuBLAS autotuning,
allocator growth) that would bias a short comparison against whichever backend compiles more. Each run logs every
step (--logging-steps 1); a step's time is its tokens / its tokens/s from the run's train_log.jsonl. The first
--warmup steps (default 5) are reported apart ("warm-up") and the compared step time is the mean of the others.

Runs wherever the GPU smoke check runs: in a venv with the gpu, train and export extras
(``.venv/bin/python bench/gpu_backends.py``), and inside the kolo image, which carries bench/
(``docker exec kolo python /opt/kolo/src/bench/gpu_backends.py``); ``scripts/gpu_smoke.sh --bench`` runs it too.

Without a CUDA GPU it says so and exits 2 (bench/RESULTS.md then records the row as "not measured (no GPU)").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _common import PY, REPO, clean_env, header, run_measured

LLAMA_32_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096, rope_theta=500000.0,
                   tie_word_embeddings=True, rms_norm_eps=1e-5)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def build_model(out: Path) -> Path:
    """Random-init Llama-3.2-1B shape + kolo's tiny tokenizer, saved in bf16 like the real checkpoint."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kolo_trainer import tiny

    tiny.build_tokenizer(out, template="llama-3")
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(**LLAMA_32_1B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    return out


def step_times(log_path: Path) -> list[float]:
    """Seconds per optimizer step, in order, from a run logged every step: Δtokens_seen / tokens_per_s."""
    times, seen = [], 0
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("loss") is None or not rec.get("tokens_per_s"):
            continue
        times.append((rec["tokens_seen"] - seen) / rec["tokens_per_s"])
        seen = rec["tokens_seen"]
    return times


def split_warmup(times: list[float], warmup: int) -> dict:
    """Warm-up steps apart from the steady ones; the steady mean is what the backends are compared on."""
    if len(times) <= warmup:
        raise ValueError(f"{len(times)} timed step(s) is not more than --warmup {warmup}: raise --steps")
    warm, steady = times[:warmup], times[warmup:]
    return {"warmup_steps": len(warm), "warmup_s": sum(warm), "steady_steps": len(steady),
            "step_s": sum(steady) / len(steady)}


def run_backend(root: Path, backend: str, steps: int, method: str, warmup: int) -> dict:
    out = f"gpu-{backend}"
    shutil.rmtree(root / "outputs" / out, ignore_errors=True)
    argv = [PY, "-m", "kolo_trainer", "train", "--data-root", str(root), "--base-model", "models/llama-1b-shape",
            "--train-data", "data/bench.jsonl", "--output-dir", out, "--max-steps", str(steps), "--backend", backend,
            "--method", method, "--logging-steps", "1"]
    m = run_measured(argv, env=clean_env(), cwd=str(REPO))
    if m.rc != 0:
        sys.exit(f"{backend} failed (rc {m.rc}):\n{(m.stdout + m.stderr)[-3000:]}")
    man = json.loads((root / "outputs" / out / "kolo.json").read_text())
    steps_done = man["train"]["global_step"]
    timed = split_warmup(step_times(root / "outputs" / out / "train_log.jsonl"), warmup)
    return {"backend": man["backend"], "steps": steps_done, "train_s": man["timings"]["train_s"],
            "step_s_incl_warmup": man["timings"]["train_s"] / steps_done, **timed,
            "peak_gpu_bytes": man["memory"]["peak_gpu_bytes_after"],
            "tokens_per_s": man["train"].get("tokens_per_s"), "device": man.get("device"),
            "precision": man.get("precision"), "wall_s": m.wall_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="first steps timed apart (compilation, autotuning)")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--method", default="lora", choices=["lora", "qlora", "full"])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not 0 <= a.warmup < a.steps:
        ap.error(f"--warmup {a.warmup} must be at least 0 and below --steps {a.steps}")
    print(header("benchmark 3: unsloth vs hf backend on a Llama-3.2-1B-shaped model (GPU)"), flush=True)
    if not cuda_available():
        print("not measured (no GPU): torch sees no CUDA device here")
        return 2
    import torch

    print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    from train_throughput import generate_data

    root = Path(tempfile.mkdtemp(prefix="kolo-bench-gpu-"))
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir()
    try:
        model = build_model(root / "models" / "llama-1b-shape")
        generate_data(model, root / "data" / "bench.jsonl", a.rows, seed=0)
        res = {b: run_backend(root, b, a.steps, a.method, a.warmup) for b in ("hf", "unsloth")}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    hf, un = res["hf"], res["unsloth"]
    if un["backend"] != "unsloth":
        sys.exit("the unsloth run did not use the unsloth backend")
    speed = hf["step_s"] / un["step_s"]
    mem = un["peak_gpu_bytes"] / hf["peak_gpu_bytes"]
    for b, r in res.items():
        print(f"  {b:<8} {r['step_s']:.3f} s/step over {r['steady_steps']} steps after warm-up "
              f"(warm-up: {r['warmup_steps']} steps, {r['warmup_s']:.1f} s; with it {r['step_s_incl_warmup']:.3f} "
              f"s/step)  peak GPU {r['peak_gpu_bytes'] / 2**30:.2f} GiB  ({r['tokens_per_s']} tok/s)")
    ok = speed >= 2.0 and mem <= 0.6
    print(f"unsloth vs hf (after warm-up): {speed:.2f}x faster per step, {mem:.2f}x the peak GPU memory; "
          f"goal >= 2x and <= 0.6x: "
          f"{'met' if ok else 'NOT met'}")
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
