"""Composite unsupervised pretraining (Srivastava et al., 2015) of a run's sequence encoder.

The encoder reads the first ``timesteps`` frames; its final state starts a decoder that
reconstructs them in reverse and a predictor of the next ``future`` frames. The classifier that
follows starts from a copy of the pretrained encoder's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.training import FitConfig, fit


def pretrain_composite(seen: list[np.ndarray], future: list[np.ndarray], units: int, multi_view_encoder: bool, conditional: bool, out_dir: Path, config: FitConfig, run_info: dict[str, Any]):
    """Fit a composite model on unlabelled ``seen``/``future`` frames; return it (its ``encoder`` is what transfers)."""
    from pipeline.models.composite import build_composite, composite_targets, lstm_encoder, mplstm_encoder

    timesteps, steps = seen[0].shape[1], future[0].shape[1]
    model = build_composite(
        timesteps, steps, units, feature_dims=[x.shape[-1] for x in seen], conditional=conditional,
        encoder=mplstm_encoder if multi_view_encoder and len(seen) > 1 else lstm_encoder,
    )
    x = seen if len(seen) > 1 else seen[0]
    fit(model, (x, composite_targets(seen, future if steps else None)), None, out_dir, config, run_info)
    return model


def pretrained_classifier(composite, n_classes: int, dropout: float, learning_rate: float):
    """A classifier on a weight copy of the composite's encoder, compiled like the other runs."""
    import keras

    from pipeline.models.composite import classifier_from_encoder

    return classifier_from_encoder(composite, n_classes, dropout=dropout, optimizer=keras.optimizers.RMSprop(learning_rate))


def square_frames(x: np.ndarray) -> np.ndarray | None:
    """``[N, T, d]`` flattened square images back to ``[N, T, s, s]``, or None when ``d`` is not a square."""
    side = int(round(np.sqrt(x.shape[-1])))
    return x.reshape(*x.shape[:2], side, side) if side * side == x.shape[-1] else None
