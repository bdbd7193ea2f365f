"""Atomic writers for plot data (CSV, the format DVC plots read) and images (PNG drawn with Agg).

Figures are built on matplotlib's object API with an explicit Agg canvas, never pyplot: no global backend
switch, no figure registry to leak memory in a long-running Prefect worker.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_csv(target: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with atomic_path(target) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return Path(target)


def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, target: Path) -> Path:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return Path(target)


def message_figure(text: str, target: Path) -> Path:
    """A small PNG that says why there is nothing to plot, so the declared output always exists."""
    fig = new_figure(6, 2)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return save_png(fig, target)
