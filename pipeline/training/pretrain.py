"""Composite unsupervised pretraining (Srivastava et al., 2015) of a run's sequence encoder.

The encoder reads the first ``timesteps`` frames; its final state starts a decoder that
reconstructs them in reverse and a predictor of the next ``future`` frames. The classifier that
follows starts from a copy of the pretrained encoder's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.execution.logs import get_logger
from pipeline.training.fit import FitConfig, fit

log = get_logger(__name__)


def composite_model(
    timesteps: int,
    future: int,
    dims: list[int],
    units: int,
    multi_view_encoder: bool,
    conditional: bool,
    bernoulli: bool,
    optimizer: Any = "rmsprop",
):
    """The compiled composite model for perspectives of widths ``dims``.

    ``bernoulli``: [0, 1] pixels, cross-entropy; ``optimizer``: a Keras optimizer or its name.
    """
    from pipeline.models.composite import build_composite, lstm_encoder, mplstm_encoder

    return build_composite(
        timesteps,
        future,
        units,
        feature_dims=dims,
        conditional=conditional,
        bernoulli=bernoulli,
        encoder=mplstm_encoder if multi_view_encoder and len(dims) > 1 else lstm_encoder,
        optimizer=optimizer,
    )


def is_intensity(arrays: list[np.ndarray]) -> bool:
    """Whether every value lies in [0, 1] (flattened pixel intensities), the case for a cross-entropy reconstruction."""
    return all(float(x.min()) >= 0.0 and float(x.max()) <= 1.0 for x in arrays)


def pretrain_composite(
    seen: list[np.ndarray],
    future: list[np.ndarray],
    units: int,
    multi_view_encoder: bool,
    conditional: bool,
    out_dir: Path,
    config: FitConfig,
    run_info: dict[str, Any],
    optimizer: Any = "rmsprop",
):
    """Fit a composite model on unlabelled ``seen``/``future`` frames with ``optimizer``; return it (its ``encoder``
    is what transfers).

    Features in [0, 1] (the pixels backbone without PCA) are reconstructed with a sigmoid and cross-entropy as in
    Srivastava et al.; any other features with a linear output and squared error.
    """
    from pipeline.models.composite import composite_targets

    bernoulli = is_intensity(seen + future)
    log.info(
        "composite pretraining: %s reconstruction",
        "cross-entropy ([0, 1] intensities)" if bernoulli else "squared-error",
    )
    steps = future[0].shape[1]
    model = composite_model(
        seen[0].shape[1],
        steps,
        [x.shape[-1] for x in seen],
        units,
        multi_view_encoder,
        conditional,
        bernoulli,
        optimizer,
    )
    x = seen if len(seen) > 1 else seen[0]
    fit(model, (x, composite_targets(seen, future if steps else None)), None, out_dir, config, run_info)
    return model


def pretrained_classifier(composite, n_classes: int, dropout: float, optimizer):
    """A classifier on a weight copy of the composite's encoder, compiled with ``optimizer`` like the other runs."""
    from pipeline.models.composite import classifier_from_encoder

    return classifier_from_encoder(composite, n_classes, dropout=dropout, optimizer=optimizer)


def square_frames(x: np.ndarray) -> np.ndarray | None:
    """``[N, T, d]`` flattened square images back to ``[N, T, s, s]``, or None when ``d`` is not a square."""
    side = int(round(np.sqrt(x.shape[-1])))
    return x.reshape(*x.shape[:2], side, side) if side * side == x.shape[-1] else None
