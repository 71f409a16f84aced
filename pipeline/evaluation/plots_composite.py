"""PNG grid of a composite model's reconstruction and future prediction against the true frames (Agg, no pyplot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.storage.atomic import atomic_path


def _frames(x: np.ndarray) -> np.ndarray:
    """[T, H, W] or [T, H, W, 1] frames as [T, H, W] floats."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"expected frames [T, H, W(, 1)], got shape {x.shape}")
    return x


def plot_composite_predictions(
    truth_seen: np.ndarray,
    truth_future: np.ndarray,
    reconstruction: np.ndarray,
    prediction: np.ndarray,
    path: Path | str,
) -> Path:
    """Rows: seen frames, their reconstruction, future frames, the prediction; written to ``path`` atomically.

    ``reconstruction`` is taken as the model emits it, last frame first, and is drawn re-reversed so that each
    column shows one instant; the future rows start in the first column.
    """
    rows = [
        ("input", _frames(truth_seen)),
        ("reconstruction", _frames(reconstruction)[::-1]),
        ("future", _frames(truth_future)),
        ("prediction", _frames(prediction)),
    ]
    columns = max(len(frames) for _, frames in rows)
    low = min(float(frames.min()) for _, frames in rows)
    high = max(float(frames.max()) for _, frames in rows)
    fig = Figure(figsize=(1.1 * columns + 1.2, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (label, frames) in enumerate(rows):
        for t in range(columns):
            ax = axes[r, t]
            ax.set_xticks([])
            ax.set_yticks([])
            if t < len(frames):
                ax.imshow(frames[t], cmap="gray", vmin=low, vmax=high)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
