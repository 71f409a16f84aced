"""PNG plots for evaluation reports: training curves, confusion matrix, checkpoint comparison (Agg, no pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import atomic_path

log = get_logger(__name__)

MAX_TICK_LABELS = 40
MAX_ANNOTATED_CLASSES = 15
RANDOM_WEIGHTS_TAG = "random weights"


def _new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg canvas, independent of pyplot's global state."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.debug("wrote %s", path)
    return path


def loss_terms(history: Mapping[str, Sequence[float]]) -> dict[str, dict[str, list[float]]]:
    """Loss curves grouped per term, each with its validation twin: ``{"visual_loss": {"visual_loss": [...], ...}}``.

    With several output losses (the memory model's visual and audio streams), the total ``loss`` minus their sum is
    shown as its own term, ``other_loss`` (losses added by layers: the memory's reconstruction and decorrelation).
    """
    series = {key: list(values) for key, values in history.items() if len(values)}
    names = [k for k in series if k.endswith("loss") and not k.startswith("val_")]
    terms = {name: {k: series[k] for k in (name, f"val_{name}") if k in series} for name in names}
    parts = [n for n in names if n != "loss"]
    if "loss" in series and len(parts) > 1:
        n = min(len(series["loss"]), *(len(series[p]) for p in parts))
        terms["other_loss"] = {"other_loss": [series["loss"][i] - sum(series[p][i] for p in parts) for i in range(n)]}
    return terms


def plot_training_curves(history: Mapping[str, Sequence[float]], path: Path | str) -> Path:
    """Per-epoch curves: one panel per loss term (training and validation), then every other metric in one panel."""
    series = {key: list(values) for key, values in history.items() if len(values)}
    if not series:
        raise ValueError("history holds no values to plot")
    terms = loss_terms(series)
    metrics = {k: v for k, v in series.items() if not k.endswith("loss")}
    panels = [(name, curves) for name, curves in terms.items()] + (
        [("metrics", metrics)] if metrics or not terms else []
    )
    fig = _new_figure(max(10, 3.6 * len(panels)), 4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, curves) in zip(axes, panels):
        for key, values in curves.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if curves:
            ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path | str, normalise: bool = True
) -> Path:
    """Confusion matrix heat map (rows = true class); ``normalise`` divides each row by its support."""
    counts = np.asarray(cm, dtype=np.float64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {n} classes")
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    side = min(4 + 0.35 * n, 16)
    fig = _new_figure(side + 1.5, side)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else None, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalise else "samples")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalise else ""))
    if n <= MAX_TICK_LABELS:
        ax.set_xticks(np.arange(n), [str(c) for c in classes], rotation=90)
        ax.set_yticks(np.arange(n), [str(c) for c in classes])
    if n <= MAX_ANNOTATED_CLASSES:
        threshold = values.max() / 2 if values.size else 0
        for (row, col), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalise else f"{int(value)}"
            ax.text(
                col, row, text, ha="center", va="center", fontsize=8, color="white" if value > threshold else "black"
            )
    return _save(fig, path)


def plot_comparison(reports: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """Grouped horizontal bars of test accuracy and top-k per report, in the order given; random-weight runs hatched."""
    if not reports:
        raise ValueError("no reports to compare")
    ks = sorted({key for r in reports for key in r["metrics"]["top_k"] if key != "top1"}, key=lambda key: int(key[3:]))
    columns = ["accuracy", *ks]
    labels = [r["name"] + (f" ({RANDOM_WEIGHTS_TAG})" if r.get("random_weights") else "") for r in reports]
    fig = _new_figure(9, 1.5 + 0.5 * len(reports) * len(columns))
    ax = fig.subplots()
    height = 0.8 / len(columns)
    rows = np.arange(len(reports))
    for i, column in enumerate(columns):
        values = [
            r["metrics"]["accuracy"] if column == "accuracy" else r["metrics"]["top_k"].get(column, np.nan)
            for r in reports
        ]
        bars = ax.barh(rows + i * height, values, height=height, label=column.replace("top", "top-"))
        for bar, report in zip(bars, reports):
            if report.get("random_weights"):
                bar.set_hatch("//")
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    ax.set_yticks(rows + height * (len(columns) - 1) / 2, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("test accuracy")
    if any(r.get("random_weights") for r in reports):
        ax.set_title(f"hatched: {RANDOM_WEIGHTS_TAG}, smoke test only")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
