"""The production-accuracy chart: each registered version's mAP on each labelled batch's share (with its 90 %
interval), over batches in the order they were scored, and the version's own test mAP as a line; the run page shows
it (`detops.reporting.production`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detops.atomic import atomic_path


def plot_production(reports: list[dict[str, Any]], target: Path) -> Path:
    """Write the PNG atomically from the batches' reports (`detops.monitoring.production`), oldest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [r["batch"] for r in reports]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(batches) + 3), 4), constrained_layout=True)
    versions: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for x, report in enumerate(reports):
        for model in report["models"]:
            versions.setdefault(str(model["version"]), []).append((x, model))
    for offset, (version, points) in enumerate(sorted(versions.items(), key=lambda kv: int(kv[0]))):
        shown = [(x + 0.08 * offset, m) for x, m in points if m["map"] is not None]
        if not shown:
            continue
        xs = [x for x, _ in shown]
        ys = [m["map"] for _, m in shown]
        low = [m["map"] - m["interval"][0] if m["interval"] else 0 for _, m in shown]
        high = [m["interval"][1] - m["map"] if m["interval"] else 0 for _, m in shown]
        line = ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=f"version {version} mAP")
        colour = line.lines[0].get_color()
        small = [(x, m["map"]) for x, m in shown if m["too_small"]]
        if small:
            ax.scatter([x for x, _ in small], [y for _, y in small], facecolors="white", edgecolors=colour,
                       zorder=3, s=40)
        test = next((m["test_map"] for _, m in points if m.get("test_map") is not None), None)
        if test is not None:
            ax.axhline(test, color=colour, linestyle="--", label=f"version {version} test mAP")
    ax.set_xticks(range(len(batches)), batches, rotation=30, ha="right")
    ax.set(ylabel="mAP@[.5:.95]", title="Accuracy on labelled production batches (90 % interval; hollow: too few "
                                        "images)", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(target)
