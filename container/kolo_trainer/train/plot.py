"""loss.png: train and eval loss curves from train_log.jsonl (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import atomic_path


def plot_loss(records: list[dict], out: Path, title: str = "") -> bool:
    """Write the plot atomically; False when there is nothing to plot."""
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    if not train and not evals:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display in a container; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), label="eval loss", marker="o", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        # savefig picks the format from the suffix; the temporary name keeps ".png" at its end
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True
