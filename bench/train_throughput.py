"""Benchmark 2: training throughput on CPU, kolo's trainer vs TRL's SFTTrainer, same model / data / step count.

    .venv/bin/python bench/train_throughput.py                  # 15 optimizer steps each, all four runs
    .venv/bin/python bench/train_throughput.py --steps 20 --only kolo,trl-defaults

Model: ``kolo_trainer.tiny.build(..., num_layers=4)`` (Llama, hidden 256, 4 layers, SentencePiece), built into a
temporary data root. Data: single-turn chats whose rendered length (chatml, the tiny model's own template) is spread
uniformly over 20..1000 tokens, generated with a fixed seed. kolo gets it as ``messages`` rows; TRL gets the same
conversations as conversational prompt/completion rows, so that TRL's default ``completion_only_loss`` trains the
same tokens kolo's assistant-only masking trains (the assistant reply and its end-of-turn token).

Runs, each in its own process (peak RSS from os.wait4 for that process alone):

* ``kolo``: ``python -m kolo_trainer train`` with its defaults; only ``--max-steps`` (the shared step count),
  ``--base-model``, ``--train-data`` and ``--output-dir`` are given.
* ``trl-defaults``: ``SFTTrainer`` + ``SFTConfig`` defaults (gradient checkpointing ON, bf16 ON, lr 2e-5, batch 8,
  pad to the longest row of a random batch, max_length 1024). Given: ``max_steps`` (shared), ``output_dir``, the
  same LoRA as kolo's default (peft ``LoraConfig(r=16, alpha=16, dropout=0, target_modules="all-linear")``;
  without it SFTTrainer would full-fine-tune, a different job), ``logging_steps=1`` (so the final-loss figure is
  averaged the same way for both), ``save_strategy="no"`` and ``report_to="none"`` (no checkpoint writes or trackers
  inside the timed loop; kolo saves none either at its default save_steps 500), and ``use_cpu=True``: the one
  change CPU forces (without it transformers refuses the default bf16=True: "Your setup doesn't support bf16/gpu.
  You need to assign use_cpu"). bf16 autocast and gradient checkpointing both *work* on CPU in torch 2.13 /
  transformers 5.17, so they stay on.
* ``trl-matched``: as trl-defaults, plus kolo's optimisation hyper-parameters (batch 2, lr 1e-4, warm-up 10, linear
  schedule, seed 1337). Same rows per step and learning rate as kolo, so its final loss is the one to compare.
* ``trl-cpu-tuned``: as trl-matched, plus gradient checkpointing OFF and bf16 OFF: what a user who knows CPUs would
  run. The gap between kolo and this row is what kolo's batching (length-grouped, pad-to-batch-max) buys by itself.

Figures: trained (non-padding) tokens per second = Trainer's ``num_input_tokens_seen`` (non_padding) / wall time of
the training loop (and per CPU-second of the loop, which a busy shared machine disturbs less); peak RSS of the whole process; final loss = mean of the last 10 logged step losses (each run
logs every step). Goal (issue 7): kolo >= 1.5x trl-defaults' tokens/s, peak RSS <= TRL's, final loss the same
within noise (judged against trl-matched).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import PY, REPO, clean_env, header, mib, run_measured

LORA = dict(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
#: kolo's TrainOptions defaults that decide *what* is optimised (for the trl-matched run)
KOLO_HPARAMS = dict(per_device_train_batch_size=2, learning_rate=1e-4, warmup_steps=10, lr_scheduler_type="linear",
                    seed=1337)
WORDS = ("the quick brown fox jumps over lazy dog hello world how are you today fine thank instruction input "
         "response system user assistant model numbers one two three data train answer question kolo tiny").split()


def build_model(root: Path) -> Path:
    from kolo_trainer import tiny

    return tiny.build(root / "models" / "bench-tiny", hidden_size=256, num_layers=4)


def generate_data(model_dir: Path, path: Path, rows: int, seed: int, lo: int = 20, hi: int = 1000) -> list[int]:
    """Rows whose full rendered chat has a token count drawn uniformly from [lo, hi] (hit within a few tokens by
    re-sizing the word counts against the real tokenizer). Returns the achieved lengths."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rng = random.Random(seed)

    def render(u: list[str], a: list[str]) -> int:
        msgs = [{"role": "user", "content": " ".join(u)}, {"role": "assistant", "content": " ".join(a)}]
        return len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])

    lengths = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            target = rng.randint(lo, hi)
            share = rng.uniform(0.2, 0.6)  # prompt share of the row
            pool = [rng.choice(WORDS) for _ in range(hi)]
            nu, na = max(1, int(target * share / 2)), max(1, int(target * (1 - share) / 2))
            for _ in range(8):
                n = render(pool[:nu], pool[nu:nu + na])
                if abs(n - target) <= 3:
                    break
                scale = target / n
                nu, na = max(1, int(nu * scale)), max(1, int(na * scale))
            n = render(pool[:nu], pool[nu:nu + na])
            lengths.append(n)
            f.write(json.dumps({"messages": [{"role": "user", "content": " ".join(pool[:nu])},
                                             {"role": "assistant", "content": " ".join(pool[nu:nu + na])}]}) + "\n")
    return lengths


def last_mean(losses: list[float], k: int = 10) -> float | None:
    return round(statistics.fmean(losses[-k:]), 4) if losses else None


# ------------------------------------------------------------------------------------------------ kolo


def kolo_child(argv: list[str], out_json: str) -> None:
    """Runs inside its own process: kolo's real pipeline (``kolo_trainer.train.main.run``, i.e. exactly what
    ``python -m kolo_trainer train`` runs), with ``stage_train`` wrapped only to read the training loop's CPU time
    (wall time is in the manifest). The CPU-time figure is less disturbed by other work on a shared machine."""
    from kolo_trainer.train import main as M

    orig = M.stage_train
    rec: dict = {}

    def timed(ctx):
        t, c = time.perf_counter(), time.process_time()
        try:
            return orig(ctx)
        finally:
            rec.update(loop_wall_s=time.perf_counter() - t, loop_cpu_s=time.process_time() - c)

    M.stage_train = timed
    rc = M.run(argv)
    Path(out_json).write_text(json.dumps({"rc": rc, **rec}))
    raise SystemExit(rc)


def run_kolo(root: Path, steps: int) -> dict:
    out = "bench-kolo"
    shutil.rmtree(root / "outputs" / out, ignore_errors=True)
    args = ["--data-root", str(root), "--base-model", "models/bench-tiny", "--train-data", "data/bench.jsonl",
            "--output-dir", out, "--max-steps", str(steps)]
    out_json = root / "kolo-child.json"
    m = run_measured([PY, __file__, "_kolo", str(out_json), *args], env=clean_env(), cwd=str(REPO))
    if m.rc != 0:
        sys.exit(f"kolo train failed (rc {m.rc}):\n{(m.stdout + m.stderr)[-3000:]}")
    child = json.loads(out_json.read_text())
    man = json.loads((root / "outputs" / out / "kolo.json").read_text())
    log = [json.loads(x) for x in (root / "outputs" / out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["loss"] for r in log if r.get("loss") is not None and r.get("step", 0) > 0]
    tokens = man["train"]["tokens_seen"]
    train_s = man["timings"]["train_s"]
    return {"run": "kolo", "steps": man["train"]["global_step"], "tokens": tokens, "train_s": train_s,
            "tokens_per_s": tokens / train_s, "tokens_per_cpu_s": tokens / child["loop_cpu_s"],
            "peak_rss": m.peak_rss_bytes, "final_loss": last_mean(losses),
            "wall_s": m.wall_s, "batch_size": man["options"]["batch_size"],
            "precision": man.get("precision"), "token_stats": man["data"].get("tokens")}


# ------------------------------------------------------------------------------------------------ TRL (child)


def trl_child(model_dir: str, data: str, steps: int, variant: str, out_json: str) -> None:
    """Runs inside its own process: one SFTTrainer run, figures written to ``out_json``."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    rows = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            m = json.loads(line)["messages"]
            rows.append({"prompt": [m[0]], "completion": [m[1]]})
    ds = Dataset.from_list(rows)
    tmp = tempfile.mkdtemp(prefix="kolo-bench-trl-")
    # use_cpu=True is the one change CPU forces: transformers refuses SFTConfig's default bf16=True without a GPU
    # ("Your setup doesn't support bf16/gpu. You need to assign use_cpu") unless told to train on the CPU; with it
    # bf16 autocast runs on the CPU. kolo's trainer sets the same flag on CPU.
    kw: dict = dict(use_cpu=True, output_dir=tmp, max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
                    include_num_input_tokens_seen="non_padding")
    if variant in ("trl-matched", "trl-cpu-tuned"):
        kw.update(KOLO_HPARAMS)
    if variant == "trl-cpu-tuned":
        kw.update(gradient_checkpointing=False, bf16=False)
    cfg = SFTConfig(**kw)
    trainer = SFTTrainer(model=model_dir, args=cfg, train_dataset=ds, peft_config=LoraConfig(**LORA))
    t, c = time.perf_counter(), time.process_time()
    trainer.train()
    train_s, cpu_s = time.perf_counter() - t, time.process_time() - c
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    tokens = int(trainer.state.num_input_tokens_seen)
    Path(out_json).write_text(json.dumps({
        "steps": trainer.state.global_step, "tokens": tokens, "train_s": train_s, "cpu_s": cpu_s, "losses": losses,
        "batch_size": cfg.per_device_train_batch_size, "bf16": cfg.bf16,
        "gradient_checkpointing": cfg.gradient_checkpointing, "learning_rate": cfg.learning_rate,
        "completion_only_loss": cfg.completion_only_loss}))
    shutil.rmtree(tmp, ignore_errors=True)


def run_trl(root: Path, steps: int, variant: str) -> dict:
    out_json = root / f"{variant}.json"
    argv = [PY, __file__, "_trl", str(root / "models" / "bench-tiny"), str(root / "data" / "bench.jsonl"),
            str(steps), variant, str(out_json)]
    m = run_measured(argv, env=clean_env(), cwd=str(REPO))
    if m.rc != 0:
        sys.exit(f"{variant} failed (rc {m.rc}):\n{(m.stdout + m.stderr)[-3000:]}")
    r = json.loads(out_json.read_text())
    return {"run": variant, "steps": r["steps"], "tokens": r["tokens"], "train_s": r["train_s"],
            "tokens_per_s": r["tokens"] / r["train_s"], "tokens_per_cpu_s": r["tokens"] / r["cpu_s"],
            "peak_rss": m.peak_rss_bytes,
            "final_loss": last_mean(r["losses"]), "wall_s": m.wall_s, "batch_size": r["batch_size"],
            "precision": {"bf16": r["bf16"], "gradient_checkpointing": r["gradient_checkpointing"],
                          "learning_rate": r["learning_rate"], "completion_only_loss": r["completion_only_loss"]}}


# ------------------------------------------------------------------------------------------------ driver


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_kolo":
        kolo_child(sys.argv[3:], sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "_trl":
        _, _, model_dir, data, steps, variant, out_json = sys.argv
        trl_child(model_dir, data, int(steps), variant, out_json)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="kolo,trl-defaults,trl-matched,trl-cpu-tuned")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (interleaved: every variant once per round); "
                    "the figures are medians over rounds")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/MKL threads for every run (default: torch's own choice). On a machine shared with other "
                         "busy processes, 1 avoids OpenMP oversubscription, which otherwise swamps the comparison.")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        # Inherited by every child through clean_env(): both sides get the same thread count.
        os.environ.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    print(header("benchmark 2: CPU training throughput, kolo vs TRL SFTTrainer"), flush=True)
    root = Path(tempfile.mkdtemp(prefix="kolo-bench-train-"))
    for sub in ("data", "models", "outputs"):
        (root / sub).mkdir()
    try:
        model = build_model(root)
        lengths = generate_data(model, root / "data" / "bench.jsonl", a.rows, a.seed)
        print(f"threads: {a.threads or 'torch default'}", flush=True)
        print(f"data: {a.rows} rows, rendered tokens min {min(lengths)} / mean {statistics.fmean(lengths):.0f} / "
              f"max {max(lengths)}; {a.steps} optimizer steps per run", flush=True)
        runs: dict[str, list[dict]] = {}
        for rnd in range(a.repeat):
            for variant in a.only.split(","):
                t = time.perf_counter()
                r = run_kolo(root, a.steps) if variant == "kolo" else run_trl(root, a.steps, variant)
                runs.setdefault(variant, []).append(r)
                print(f"  [{rnd + 1}] {variant:<14} {r['tokens_per_s']:>6.0f} tok/s ({r['tokens_per_cpu_s']:.0f} per "
                      f"CPU-s)  {r['tokens']:>6} tokens in {r['train_s']:.1f}s  peak RSS {mib(r['peak_rss'])}  final "
                      f"loss {r['final_loss']}  (batch {r['batch_size']}, process {time.perf_counter() - t:.0f}s, "
                      f"load {os.getloadavg()[0]:.2f})", flush=True)
        results = []
        for variant, rs in runs.items():
            med = dict(rs[0])  # steps/tokens are the same every round (fixed seeds, same data)
            for key in ("tokens_per_s", "tokens_per_cpu_s", "train_s", "peak_rss", "final_loss"):
                med[key] = statistics.median(r[key] for r in rs)
            # A fixed seed should give the same loss every round; a spread here is run-to-run nondeterminism.
            med["final_loss_range"] = [min(r["final_loss"] for r in rs), max(r["final_loss"] for r in rs)]
            med["rounds"] = len(rs)
            results.append(med)
            if len(rs) > 1:
                print(f"  median {variant:<14} {med['tokens_per_s']:>6.0f} tok/s ({med['tokens_per_cpu_s']:.0f} per "
                      f"CPU-s)  peak RSS {mib(med['peak_rss'])}  final loss {med['final_loss']} "
                      f"(rounds {med['final_loss_range'][0]}..{med['final_loss_range'][1]})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by = {r["run"]: r for r in results}
    if "kolo" in by:
        k = by["kolo"]
        for name, r in by.items():
            if name == "kolo":
                continue
            print(f"kolo vs {name}: tokens/s {k['tokens_per_s'] / r['tokens_per_s']:.2f}x (per CPU-s "
                  f"{k['tokens_per_cpu_s'] / r['tokens_per_cpu_s']:.2f}x), peak RSS "
                  f"{k['peak_rss'] / r['peak_rss']:.2f}x, final loss {k['final_loss']} vs {r['final_loss']}")
        if "trl-defaults" in by:
            d = by["trl-defaults"]
            speed = k["tokens_per_s"] / d["tokens_per_s"]
            print(f"goal >= 1.5x trl-defaults tokens/s with <= its peak RSS: "
                  f"{'met' if speed >= 1.5 and k['peak_rss'] <= d['peak_rss'] else 'NOT met'} "
                  f"({speed:.2f}x, RSS {k['peak_rss'] / d['peak_rss']:.2f}x)")
    if a.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
