"""Next-token statistics on the same positions for a reference model and a candidate (numpy only).

A position ``t`` is an assistant token (label != -100, t >= 1); the logits at ``t - 1`` predict it. Per model:
the summed negative log-likelihood of the true tokens (loss = mean, perplexity = exp(loss)); against the reference:
KL(reference || candidate) of the full next-token distributions, and whether both put the same token first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IGNORE = -100


def positions(labels: list[int]) -> list[int]:
    """Indices of the trained (assistant) tokens that have a preceding position to predict them from."""
    return [t for t in range(1, len(labels)) if labels[t] != IGNORE]


def log_softmax(rows: np.ndarray) -> np.ndarray:
    x = rows.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class Tally:
    """Running sums over positions (add one conversation at a time)."""

    nll: float = 0.0
    kl: float = 0.0
    agree: int = 0
    n: int = 0

    def add(self, ref_rows: np.ndarray, rows: np.ndarray, targets: list[int]) -> None:
        """``ref_rows`` / ``rows``: logits (positions x vocab) of the reference and this model at the positions that
        predict ``targets``. A vocabulary of another size is compared on the shared ids (a padded embedding)."""
        v = min(ref_rows.shape[-1], rows.shape[-1])
        ref, cand = log_softmax(ref_rows[:, :v]), log_softmax(rows[:, :v])
        idx = np.arange(len(targets))
        self.nll += float(-cand[idx, np.asarray(targets)].sum())
        self.kl += float((np.exp(ref) * (ref - cand)).sum())
        self.agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        self.n += len(targets)

    def result(self) -> dict:
        if not self.n:
            return {"positions": 0}
        loss = self.nll / self.n
        # Significant digits, not decimals: an F16 GGUF's KL is ~1e-9, and it must not print as 0.
        return {"positions": self.n, "loss": _sig(loss), "perplexity": _sig(math.exp(min(loss, 700.0))),
                "kl": _sig(max(self.kl / self.n, 0.0)), "top1": round(self.agree / self.n, 6)}


def _sig(v: float) -> float:
    return float(f"{v:.8g}")


def recommend(results: dict[str, dict], sizes: dict[str, int], max_kl: float, min_top1: float) -> dict:
    """The smallest GGUF (by file size) whose KL and top-1 agreement are within the budget, and the reason."""
    budget = {"max_kl": max_kl, "min_top1": min_top1}
    ok = [q for q, r in results.items() if q in sizes and r.get("positions")
          and r["kl"] <= max_kl and r["top1"] >= min_top1]
    if not ok:
        return {"quantization": None, "budget": budget,
                "reason": f"no GGUF stays within KL <= {max_kl} and top-1 >= {min_top1}"}
    best = min(ok, key=lambda q: sizes[q])
    r = results[best]
    return {"quantization": best, "budget": budget, "bytes": sizes[best],
            "reason": f"smallest GGUF with KL {r['kl']:.4g} <= {max_kl} and top-1 {r['top1']:.3f} >= {min_top1}"}
