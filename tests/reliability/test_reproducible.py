"""The same `kolo train` twice (same data, options and --seed) must give the same adapter: a user re-running a
run to check it, or resuming on another machine, relies on --seed meaning what it says. Found by the CPU
throughput benchmark (bench/RESULTS.md §2), where kolo's final loss differed between identical rounds while TRL's
did not: the LoRA weights were drawn before the trainer seeded the RNG (fixed in 6fff70e; this keeps it fixed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import setup_root

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_same_seed_same_adapter(kolo, data_root: Path, tiny_model: Path) -> None:
    from safetensors.torch import load_file

    setup_root(data_root, tiny_model)
    args = ["train", "--base-model", "models/tiny", "--train-data", "data/qa.jsonl", "--max-steps", "2",
            "--seed", "11"]
    for name in ("a", "b"):
        r = kolo(*args, "--output-dir", name, env={"KOLO_RUNTIME": "local"}, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    a = load_file(str(data_root / "outputs" / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(data_root / "outputs" / "b" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    differ = sorted(k for k in a if not bool((a[k] == b[k]).all()))
    assert not differ, f"{len(differ)} of {len(a)} adapter tensors differ between two identical runs, e.g. {differ[0]}"
