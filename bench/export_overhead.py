"""Benchmark 4: `kolo export` (convert + quantise Q4_K_M) vs llama.cpp's converter + quantize called directly on
the same model, and vs `cp` of the same number of bytes (the disk floor).

    .venv/bin/python bench/export_overhead.py              # ~100M-parameter model, 3 rounds, medians
    .venv/bin/python bench/export_overhead.py --rounds 5 --layers 8

Model: kolo's tiny Llama family scaled to ~100M parameters (hidden 768 -- a multiple of 256, so Q4_K_M is real --
12 heads, MLP 1536, 16 layers, kolo's SentencePiece tokenizer). It is made a finished kolo run by a 1-step full
fine-tune (``--method full``), so ``<run>/model`` *is* the merged model and export has nothing to merge: both sides
start from the same HF folder.

* kolo: ``kolo --runtime local export RUN --quantization Q4_K_M --no-verify --force`` (the real console script;
  --force redoes every stage each round; --no-verify because verification is extra work the baseline does not do --
  its cost is measured once on its own at the end).
* direct: ``python convert_hf_to_gguf.py MODEL --outfile F16.gguf --outtype f16`` (the same converter kolo ships,
  from llama-cpp-python's sdist, with its own gguf-py) then ``llama_cpp.llama_model_quantize(F16, Q4_K_M)`` with
  the same thread count, each a fresh process, as a user would run them.
* cp: ``cp`` of the two GGUFs kolo wrote (the same bytes the export writes), new files each round.

Rounds alternate the three so that a load spike hits all. Ratio = kolo / direct (goal <= 1.15x).

Verification (issue 12): one more export with verification; its verify stage's seconds against the convert +
quantise stages' seconds of that same export, both from kolo.json (goal <= 0.5x), and -- because verification's HF
reference runs in the background during conversion -- the wall time that export gains over the median of the
no-verify exports against the same convert + quantise seconds, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import PY, REPO, clean_env, header, kolo_exe, mib, run_measured

QUANT_SNIPPET = ("import os, sys, llama_cpp\n"
                 "p = llama_cpp.llama_model_quantize_default_params()\n"
                 "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M\n"
                 "p.nthread = os.cpu_count() or 1\n"
                 "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))\n")


def build_model(root: Path, layers: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kolo_trainer import tiny

    out = root / "models" / "export-100m"
    tiny.build_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=1536, num_hidden_layers=layers,
                      num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    return out


class Bench:
    """One benchmark run: a finished ~100M-parameter run in a temporary data root, exported by both sides."""

    def __init__(self, root: Path, kolo: str, conv: Path):
        self.root, self.kolo, self.conv = root, kolo, conv
        self.env = clean_env(KOLO_DATA=str(root), KOLO_RUNTIME="local")
        self.conv_env = dict(self.env, PYTHONPATH=str(conv / "gguf-py"), HF_HUB_OFFLINE="1")
        self.run = root / "outputs" / "exp"
        self.merged = self.run / "model"
        self.f16, self.q4 = self.run / "gguf" / "exp-F16.gguf", self.run / "gguf" / "exp-Q4_K_M.gguf"

    def prepare(self, layers: int) -> float:
        """Build the model and make it a finished run (a 1-step full fine-tune); returns its parameters (M)."""
        from safetensors import safe_open

        for sub in ("data", "models", "outputs", "direct", "cp"):
            (self.root / sub).mkdir()
        build_model(self.root, layers)
        shutil.copy(REPO / "container" / "kolo_trainer" / "assets" / "example.jsonl", self.root / "data" / "ex.jsonl")
        r = run_measured([self.kolo, "train", "--base-model", "models/export-100m", "--train-data", "data/ex.jsonl",
                          "--method", "full", "--max-steps", "1", "--batch-size", "1", "--output-dir", "exp"],
                         env=self.env, cwd=str(self.root))
        if r.rc != 0:
            sys.exit(f"training the run to export failed:\n{(r.stdout + r.stderr)[-3000:]}")
        n_params = 0
        for shard in self.merged.glob("*.safetensors"):
            with safe_open(str(shard), "pt") as f:
                n_params += sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
        print(f"model: {n_params / 1e6:.1f}M parameters ({layers} layers, hidden 768), "
              f"{sum(p.stat().st_size for p in self.merged.glob('*.safetensors')) / 1e6:.0f} MB safetensors (fp32)",
              flush=True)
        return n_params / 1e6

    def round(self, i: int) -> tuple[float, float, float]:
        """kolo export, the direct converter + quantize, and cp, one after the other: (kolo s, direct s, cp s)."""
        direct, cp_dir = self.root / "direct", self.root / "cp"
        k = run_measured([self.kolo, "export", "exp", "--quantization", "Q4_K_M", "--no-verify", "--force"],
                         env=self.env, cwd=str(self.root))
        if k.rc != 0:
            sys.exit(f"kolo export failed:\n{(k.stdout + k.stderr)[-3000:]}")
        for p in [*direct.iterdir(), *cp_dir.iterdir()]:
            p.unlink()
        c = run_measured([PY, str(self.conv / "convert_hf_to_gguf.py"), str(self.merged), "--outfile",
                          str(direct / "F16.gguf"), "--outtype", "f16"], env=self.conv_env)
        q = run_measured([PY, "-c", QUANT_SNIPPET, str(direct / "F16.gguf"), str(direct / "Q4_K_M.gguf")],
                         env=self.env)
        if c.rc != 0 or q.rc != 0:
            sys.exit(f"direct convert/quantize failed:\n{(c.stdout + c.stderr + q.stderr)[-3000:]}")
        cp = run_measured(["cp", str(self.f16), str(self.q4), str(cp_dir)])
        ours = self.f16.stat().st_size + self.q4.stat().st_size
        theirs = (direct / "F16.gguf").stat().st_size + (direct / "Q4_K_M.gguf").stat().st_size
        print(f"  round {i + 1}: kolo export {k.wall_s:.2f}s (peak RSS {mib(k.peak_rss_bytes)}), direct "
              f"{c.wall_s:.2f}+{q.wall_s:.2f}s, cp {cp.wall_s:.2f}s; bytes kolo {ours:,} / direct {theirs:,}; load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        return k.wall_s, c.wall_s + q.wall_s, cp.wall_s

    def with_verification(self, no_verify_median: float) -> tuple[float | None, dict]:
        """One export with verification: its wall time and its stage times from kolo.json."""
        v = run_measured([self.kolo, "export", "exp", "--quantization", "Q4_K_M", "--force"], env=self.env,
                         cwd=str(self.root))
        verify_s = v.wall_s if v.rc == 0 else None
        exp = json.loads((self.run / "kolo.json").read_text()).get("export", {})
        status = exp.get("verification", {})
        stage_times = _stage_times(exp.get("stages") or {})
        if stage_times and verify_s:
            # The verify stage's own seconds do not show what its reference (computed in the background during
            # conversion) cost the export; the wall time it adds over the no-verify exports does.
            added = verify_s - no_verify_median
            stage_times.update(verify_added_s=round(added, 2),
                               verify_added_ratio=round(added / stage_times["convert_quantize_s"], 2),
                               timings=status.get("timings"))
        print(f"  with verification: {v.wall_s:.2f}s (rc {v.rc}, verification {status.get('status')}); stages: "
              f"convert+quantize {stage_times.get('convert_quantize_s')}s, verify {stage_times.get('verify_s')}s "
              f"(ratio {stage_times.get('verify_ratio')}, goal <= 0.5); wall time added over the no-verify "
              f"median {stage_times.get('verify_added_s')}s (ratio {stage_times.get('verify_added_ratio')}); "
              f"verify's split {stage_times.get('timings')}; load {_loadavg()}", flush=True)
        return verify_s, stage_times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--no-verify-run", action="store_true", help="skip the one extra export with verification")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    print(header("benchmark 4: kolo export vs llama.cpp converter + quantize, and cp"), flush=True)
    from kolo_trainer.export import converter

    bench = Bench(Path(tempfile.mkdtemp(prefix="kolo-bench-export-")), kolo_exe(), converter.ensure())
    try:
        params_m = bench.prepare(a.layers)
        ks, ds, cs = zip(*(bench.round(i) for i in range(a.rounds)))
        verify_s, stage_times = (None, {}) if a.no_verify_run else bench.with_verification(statistics.median(ks))
        written = bench.f16.stat().st_size + bench.q4.stat().st_size
    finally:
        shutil.rmtree(bench.root, ignore_errors=True)
    k_s, d_s, c_s = statistics.median(ks), statistics.median(ds), statistics.median(cs)
    ratio = k_s / d_s
    res = {"params_m": round(params_m, 1), "bytes_written": written, "rounds": a.rounds,
           "kolo_s": round(k_s, 2), "direct_s": round(d_s, 2), "cp_s": round(c_s, 3), "overhead_ratio": round(ratio, 3),
           "kolo_over_cp": round(k_s / c_s, 1), "kolo_with_verify_s": round(verify_s, 2) if verify_s else None,
           "goal_met": ratio <= 1.15, **stage_times, "loadavg_end": _loadavg()}
    print(f"kolo export (no verify): {k_s:.2f} s   direct converter+quantize: {d_s:.2f} s   cp of {written / 1e6:.0f} "
          f"MB: {c_s:.2f} s")
    print(f"overhead ratio kolo/direct: {ratio:.2f}x (goal <= 1.15x: {'met' if ratio <= 1.15 else 'NOT met'}); "
          f"kolo/cp: {k_s / c_s:.1f}x")
    if a.json:
        print(json.dumps(res))
    return 0


def _stage_times(stages: dict) -> dict:
    """Verification's own seconds vs convert + quantise in the same export (kolo.json export.stages), goal <= 0.5."""
    cq = sum(float(v.get("seconds") or 0) for k, v in stages.items() if k.split(":")[0] in ("convert", "quantize"))
    ver = float((stages.get("verify") or {}).get("seconds") or 0)
    if not cq or not ver:
        return {}
    return {"convert_quantize_s": round(cq, 2), "verify_s": round(ver, 2), "verify_ratio": round(ver / cq, 2),
            "verify_goal_met": ver / cq <= 0.5}


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").is_file() else "?"


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


if __name__ == "__main__":
    raise SystemExit(main())
