"""The training-curves figure: loss and validation mAP per epoch, the first thing to look at after a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detops.atomic import atomic_path


def plot_training_curves(epochs: list[dict[str, Any]], target: Path) -> Path:
    """Write a two-panel PNG (train loss; val mAP and mAP@0.5) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    xs = [e["epoch"] for e in epochs]
    ax_loss.plot(xs, [e["train/loss"] for e in epochs], marker="o", label="train loss")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Training loss")
    for name, label in (("val/map", "val mAP@[.5:.95]"), ("val/map_50", "val mAP@0.5")):
        points = [(e["epoch"], e[name]) for e in epochs if name in e]
        if points:
            ax_map.plot(*zip(*points, strict=True), marker="o", label=label)
    ax_map.set(xlabel="epoch", ylabel="mAP", title="Validation mAP", ylim=(0, 1))
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
        ax.legend()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(target)
