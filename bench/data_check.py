"""Benchmark 5: `kolo data check` on a generated ~200 MB JSONL vs a plain `json.loads` loop over the same file.

    .venv/bin/python bench/data_check.py                 # 200 MB in /tmp, 3 runs each, medians
    .venv/bin/python bench/data_check.py --mb 50 --runs 5

Both sides are a fresh process (`kolo data check FILE` through the real console script, so CLI start-up is
included; the baseline is `python -c "for line in open(f): json.loads(line)"`), run alternately so that a load
spike hits both. Ratio = baseline seconds / kolo seconds: >= 1 means kolo is not slower while it also validates
roles, turn order, empty turns, duplicates and collects length statistics. Goal (issue 7): >= 1x.
The file is generated into /tmp (never the repo) and deleted afterwards unless --keep.
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

from _common import PY, clean_env, header, kolo_exe, mib, run_measured

BASELINE = ("import json, sys\n"
            "n = 0\n"
            "with open(sys.argv[1], encoding='utf-8') as f:\n"
            "    for line in f:\n"
            "        json.loads(line)\n"
            "        n += 1\n"
            "print(n)\n")

WORDS = ("the a model data train token loss answer question kolo python llama gguf export ollama quick brown fox "
         "jumps over lazy dog café naïve 東京 emoji 🙂 \"quoted\" back\\slash tab\t newline\n").split(" ")


def generate(path: str, target_bytes: int, seed: int = 0) -> int:
    """Messages-format rows of mixed size (1-3 exchanges, some with a system prompt, unicode, escapes). Every row
    is unique (it carries its index), so the duplicate check has real work and reports nothing."""
    rng = random.Random(seed)
    n = 0
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target_bytes:
            msgs = []
            if rng.random() < 0.3:
                msgs.append({"role": "system", "content": "You are a helpful assistant."})
            for turn in range(rng.randint(1, 3)):
                user = f"#{n}.{turn} " + " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))
                msgs.append({"role": "user", "content": user})
                msgs.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(10, 250)))})
            line = json.dumps({"messages": msgs}, ensure_ascii=rng.random() < 0.5) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
            n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    kolo = kolo_exe()
    print(header("benchmark 5: kolo data check vs a json.loads loop"), flush=True)
    tmp = tempfile.mkdtemp(prefix="kolo-bench-data-", dir="/tmp")
    path = os.path.join(tmp, "bench.jsonl")
    rows = generate(path, int(a.mb * 1e6))
    size = os.path.getsize(path)
    print(f"file: {path}, {size / 1e6:.0f} MB, {rows} rows", flush=True)
    env = clean_env(KOLO_DATA=os.path.join(tmp, "kolo_data"))
    ours, base = [], []
    try:
        for i in range(a.runs):
            b = run_measured([PY, "-c", BASELINE, path], env=env)
            if b.rc != 0 or int(b.stdout.strip()) != rows:
                sys.exit(f"baseline failed: rc {b.rc}: {b.stderr[-500:]}")
            k = run_measured([kolo, "data", "check", path], env=env)
            if k.rc != 0:
                sys.exit(f"kolo data check failed (rc {k.rc}): {(k.stdout + k.stderr)[-1000:]}")
            if f"{rows} row(s)" not in k.stdout:
                sys.exit(f"kolo data check did not report {rows} rows: {k.stdout[:500]}")
            base.append(b)
            ours.append(k)
            print(f"  run {i + 1}: json.loads loop {b.wall_s:.2f}s ({mib(b.peak_rss_bytes)}), "
                  f"kolo data check {k.wall_s:.2f}s ({mib(k.peak_rss_bytes)})", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    k_s = statistics.median(m.wall_s for m in ours)
    b_s = statistics.median(m.wall_s for m in base)
    ratio = b_s / k_s
    res = {"file_mb": round(size / 1e6, 1), "rows": rows, "runs": a.runs,
           "kolo_s": round(k_s, 3), "baseline_s": round(b_s, 3), "speed_ratio": round(ratio, 3),
           "kolo_mb_per_s": round(size / 1e6 / k_s, 1), "baseline_mb_per_s": round(size / 1e6 / b_s, 1),
           "kolo_peak_rss": max(m.peak_rss_bytes for m in ours),
           "baseline_peak_rss": max(m.peak_rss_bytes for m in base), "goal_met": ratio >= 1.0}
    print(f"kolo data check: {k_s:.2f} s ({res['kolo_mb_per_s']} MB/s, peak RSS {mib(res['kolo_peak_rss'])})")
    print(f"json.loads loop: {b_s:.2f} s ({res['baseline_mb_per_s']} MB/s, peak RSS {mib(res['baseline_peak_rss'])})")
    print(f"ratio (baseline time / kolo time): {ratio:.2f}x; goal >= 1x: {'met' if res['goal_met'] else 'NOT met'}")
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
