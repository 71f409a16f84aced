"""Composite unsupervised pretraining (Srivastava et al., 2015) of a run's sequence encoder.

The encoder reads the first ``timesteps`` frames; its final state starts a decoder that
reconstructs them in reverse and a predictor of the next ``future`` frames. The classifier that
follows starts from a copy of the pretrained encoder's weights. Pretraining reads the run's training
clips, or an endless stream of fresh moving-digit clips (``pipeline.training.batches.FreshMovingDigits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.training.fit import FitConfig, fit

log = get_logger(__name__)


@dataclass(frozen=True)
class CompositeSettings:
    """The composite network a run's options describe (see ``RecurrentOptions``)."""

    units: int
    multi_view_encoder: bool = False  # an MP-LSTM encoder over several perspectives
    conditional: str | None = None  # None, "teacher" (the authors') or "free"
    peepholes: bool = False
    lstm_init: str = "keras"
    classifier_head: str = "final"
    pretrain_loss: str = "mean"

    @classmethod
    def of(cls, options: dict[str, Any], multi_view_encoder: bool) -> "CompositeSettings":
        """From a run's recorded options (a run recorded before these options existed gets today's defaults)."""
        picked = {
            k: options.get(k) for k in ("conditional", "peepholes", "lstm_init", "classifier_head", "pretrain_loss")
        }
        picked = {k: v for k, v in picked.items() if v is not None and v is not False}
        return cls(options["units"], multi_view_encoder, **picked)


def composite_model(
    timesteps: int, future: int, dims: list[int], settings: CompositeSettings, bernoulli: bool, optimizer=None
):
    """The compiled composite model for perspectives of widths ``dims``.

    ``bernoulli``: [0, 1] pixels, cross-entropy. ``optimizer``: a Keras optimizer (default RMSprop at 1e-3).
    """
    import functools

    from pipeline.models.composite import build_composite, lstm_encoder, mplstm_encoder, peephole_encoder

    s = settings
    if s.multi_view_encoder and len(dims) > 1:
        encoder = mplstm_encoder
    elif s.peepholes or s.lstm_init != "keras":
        encoder = functools.partial(peephole_encoder, peepholes=s.peepholes, init=s.lstm_init)
    else:
        encoder = lstm_encoder
    return build_composite(
        timesteps,
        future,
        s.units,
        feature_dims=dims,
        conditional=s.conditional,
        bernoulli=bernoulli,
        encoder=encoder,
        peepholes=s.peepholes,
        init=s.lstm_init,
        loss_reduction=s.pretrain_loss,
        optimizer=optimizer or "rmsprop",
    )


def is_intensity(arrays: list[np.ndarray]) -> bool:
    """Whether every value lies in [0, 1] (flattened pixel intensities), the case for a cross-entropy reconstruction."""
    return all(float(x.min()) >= 0.0 and float(x.max()) <= 1.0 for x in arrays)


def pretrain_composite(
    seen: list[np.ndarray],
    future: list[np.ndarray],
    settings: CompositeSettings,
    out_dir: Path,
    config: FitConfig,
    run_info: dict[str, Any],
    optimizer=None,
    stream=None,
):
    """Fit a composite model on unlabelled ``seen``/``future`` frames, or on ``stream``'s fresh clips (a
    ``FreshMovingDigits``; ``seen``/``future`` then only give the shapes); return it (its ``encoder`` transfers).

    Features in [0, 1] (the pixels backbone without PCA) are reconstructed with a sigmoid and cross-entropy as in
    Srivastava et al.; any other features with a linear output and squared error.
    """
    from pipeline.models.composite import FUTURE_INPUT, composite_inputs, composite_targets

    bernoulli = stream is not None or is_intensity(seen + future)
    log.info(
        "composite pretraining: %s reconstruction%s",
        "cross-entropy ([0, 1] intensities)" if bernoulli else "squared-error",
        f", {stream.describe()}" if stream is not None else "",
    )
    steps = future[0].shape[1]
    model = composite_model(seen[0].shape[1], steps, [x.shape[-1] for x in seen], settings, bernoulli, optimizer)
    if stream is not None:
        stream.teacher = FUTURE_INPUT in [t.name for t in model.inputs]
        train = (stream, None)
    else:
        train = (composite_inputs(model, seen, future), composite_targets(seen, future if steps else None))
    fit(model, train, None, out_dir, config, run_info)
    return model


def pretrained_classifier(
    composite, n_classes: int, dropout: float, learning_rate: float, head: str = "final", optimizer=None
):
    """A classifier on a weight copy of the composite's encoder, compiled like the other runs (RMSprop at
    ``learning_rate`` unless an ``optimizer`` is given)."""
    import keras

    from pipeline.models.composite import classifier_from_encoder

    return classifier_from_encoder(
        composite, n_classes, dropout=dropout, head=head, optimizer=optimizer or keras.optimizers.RMSprop(learning_rate)
    )


def square_frames(x: np.ndarray) -> np.ndarray | None:
    """``[N, T, d]`` flattened square images back to ``[N, T, s, s]``, or None when ``d`` is not a square."""
    side = int(round(np.sqrt(x.shape[-1])))
    return x.reshape(*x.shape[:2], side, side) if side * side == x.shape[-1] else None


def stream_side(seen: list[np.ndarray], future: list[np.ndarray]) -> int:
    """The frame side fresh moving-digit clips must have to stand for the run's clips; refuses other features."""
    if len(seen) != 1:
        raise ConfigError("--pretrain-data moving-digits makes one perspective's clips; the run reads several")
    side = int(round(np.sqrt(seen[0].shape[-1])))
    if side * side != seen[0].shape[-1] or not is_intensity(seen + future):
        raise ConfigError(
            f"--pretrain-data moving-digits needs square [0, 1] pixel features (the pixels backbone without PCA); "
            f"this run's are {seen[0].shape[-1]} wide"
        )
    return side
