"""eval.png: per model, the next-token KL divergence and top-1 agreement against the HF model (with the budget
drawn in) and the perplexity on the assistant tokens (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import atomic_path


def plot(report: dict, out: Path) -> bool:
    """Write the plot atomically; False when there is nothing to plot."""
    res = {m: r for m, r in (report.get("models") or {}).items() if r.get("positions")}
    ggufs = [m for m in res if m != "HF"]
    if not ggufs:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display in a container; must precede pyplot
    import matplotlib.pyplot as plt

    budget = report.get("budget") or {}
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(11, 3.6), dpi=100)
    a.bar(ggufs, [res[m]["kl"] for m in ggufs], color="tab:red")
    a.axhline(budget.get("max_kl", 0), color="k", linestyle="--", linewidth=1, label="budget")
    a.set_title("KL divergence from HF (nats)")
    b.bar(ggufs, [res[m]["top1"] for m in ggufs], color="tab:blue")
    b.axhline(budget.get("min_top1", 0), color="k", linestyle="--", linewidth=1, label="budget")
    b.set_ylim(0, 1.05)
    b.set_title("top-1 agreement with HF")
    c.bar(list(res), [res[m]["perplexity"] for m in res], color="tab:gray")
    c.set_title("perplexity (assistant tokens)")
    for ax in (a, b, c):
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3, axis="y")
    a.legend()
    fig.suptitle(f"kolo eval {report.get('run', '')}: {report.get('data', {}).get('source', '')}"[:120], fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")  # the temporary name keeps ".png" at its end
    plt.close(fig)
    return True
