"""Model builders: the released MP-LSTM network and the baselines it is compared with, behind one signature.

Every builder takes ``(input_dims, n_classes, *, timesteps, units, dropout, recurrent_dropout,
bidirectional, attention, ...)`` and returns an uncompiled ``keras.Model`` whose inputs are the m
perspectives ``[B, timesteps, d_j]`` (zero-padded frames are masked), in order, named
``perspective_<j>``; every model takes all m inputs, even those it ignores, so one data feed trains
any of them. They share the released head: a recurrent encoder (bidirectional, returning sequences)
-> temporal attention -> flatten -> softmax; only the recurrent core and the fusion differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from pipeline.models.attention import TemporalAttention
from pipeline.models.mplstm import MPLSTM
from pipeline.models.mvlstm import TOPOLOGIES, MVLSTM

LayerFactory = Callable[[bool], keras.layers.Layer]


def perspective_inputs(input_dims: Sequence[int], timesteps: int) -> list[Any]:
    """One ``keras.Input`` ``[timesteps, d_j]`` per perspective."""
    return [keras.Input(shape=(timesteps, int(d)), name=f"perspective_{j}") for j, d in enumerate(input_dims)]


def masked(tensors: Sequence[Any], name: str) -> Any:
    """The perspectives concatenated per frame, with all-zero (padded) frames masked."""
    x = tensors[0] if len(tensors) == 1 else keras.layers.Concatenate(axis=-1, name=f"{name}_concat")(list(tensors))
    return keras.layers.Masking(mask_value=0.0, name=f"{name}_mask")(x)


def encode(recurrent: LayerFactory, x: Any, bidirectional: bool, attention: bool, name: str) -> Any:
    """Recurrent encoder, then (with ``attention``) temporal attention and flatten: a ``[B, features]`` vector."""
    layer = recurrent(attention)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer, name=f"{name}_encoder")
    y = layer(x)
    if attention:
        y = TemporalAttention(name=f"{name}_attention")(y)
        y = keras.layers.Flatten(name=f"{name}_flatten")(y)
    return y


def classifier(features: Any, n_classes: int, name: str = "classifier") -> Any:
    """Softmax scores over the classes (float32 even under mixed precision)."""
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name=name)(features)


def lstm_factory(units: int, dropout: float, recurrent_dropout: float) -> LayerFactory:
    """A ``keras.layers.LSTM`` maker (argument: return sequences)."""
    return lambda sequences: keras.layers.LSTM(
        units, dropout=dropout, recurrent_dropout=recurrent_dropout, return_sequences=sequences
    )


def build_mplstm(
    input_dims: Sequence[int],
    n_classes: int,
    *,
    timesteps: int = 20,
    units: int = 256,
    dropout: float = 0.2,
    recurrent_dropout: float = 0.0,
    bidirectional: bool = True,
    attention: bool = True,
    released: bool = False,
) -> keras.Model:
    """The released network: Bidirectional MP-LSTM -> temporal attention -> flatten -> softmax."""
    inputs = perspective_inputs(input_dims, timesteps)
    dims = [int(d) for d in input_dims]

    def recurrent(sequences: bool) -> MPLSTM:
        return MPLSTM(
            units,
            len(dims),
            input_dims=dims,
            released=released,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            return_sequences=sequences,
        )

    features = encode(recurrent, masked(inputs, "mplstm"), bidirectional, attention, "mplstm")
    return keras.Model(inputs, classifier(features, n_classes), name="mplstm")


def build_single(
    input_dims: Sequence[int],
    n_classes: int,
    *,
    timesteps: int = 20,
    units: int = 256,
    dropout: float = 0.2,
    recurrent_dropout: float = 0.0,
    bidirectional: bool = True,
    attention: bool = True,
    perspective: int = 0,
) -> keras.Model:
    """Single-perspective baseline: an LSTM network on perspective ``perspective`` only (the others are ignored)."""
    inputs = perspective_inputs(input_dims, timesteps)
    name = f"single_{perspective}"
    x = masked([inputs[perspective]], name)
    features = encode(lstm_factory(units, dropout, recurrent_dropout), x, bidirectional, attention, name)
    return keras.Model(inputs, classifier(features, n_classes), name=name)


def build_early_fusion(
    input_dims: Sequence[int],
    n_classes: int,
    *,
    timesteps: int = 20,
    units: int = 256,
    dropout: float = 0.2,
    recurrent_dropout: float = 0.0,
    bidirectional: bool = True,
    attention: bool = True,
) -> keras.Model:
    """Early fusion: perspectives concatenated per frame -> one LSTM network."""
    inputs = perspective_inputs(input_dims, timesteps)
    x = masked(inputs, "early")
    features = encode(lstm_factory(units, dropout, recurrent_dropout), x, bidirectional, attention, "early")
    return keras.Model(inputs, classifier(features, n_classes), name="early_fusion")


def build_late_fusion(
    input_dims: Sequence[int],
    n_classes: int,
    *,
    timesteps: int = 20,
    units: int = 256,
    dropout: float = 0.2,
    recurrent_dropout: float = 0.0,
    bidirectional: bool = True,
    attention: bool = True,
    combine: str = "scores",
) -> keras.Model:
    """Late fusion: one LSTM network per perspective; ``combine="scores"`` averages their softmax scores,
    ``"features"`` concatenates their representations under one classifier."""
    if combine not in ("scores", "features"):
        raise ValueError(f"combine must be 'scores' or 'features', got {combine!r}")
    inputs = perspective_inputs(input_dims, timesteps)
    lstm = lstm_factory(units, dropout, recurrent_dropout)
    features = [
        encode(lstm, masked([x], f"late_{j}"), bidirectional, attention, f"late_{j}") for j, x in enumerate(inputs)
    ]
    if combine == "scores":
        scores = [classifier(f, n_classes, name=f"late_{j}_classifier") for j, f in enumerate(features)]
        outputs = scores[0] if len(scores) == 1 else keras.layers.Average(name="late_average")(scores)
    else:
        joined = features[0] if len(features) == 1 else keras.layers.Concatenate(name="late_concat")(features)
        outputs = classifier(joined, n_classes)
    return keras.Model(inputs, outputs, name=f"late_fusion_{combine}")


def build_mvlstm(
    input_dims: Sequence[int],
    n_classes: int,
    *,
    timesteps: int = 20,
    units: int = 256,
    dropout: float = 0.2,
    recurrent_dropout: float = 0.0,
    bidirectional: bool = True,
    attention: bool = True,
    topology: str = "hybrid",
    alpha: float | None = None,
    beta: float | None = None,
    output_activation: Any = None,
) -> keras.Model:
    """MV-LSTM baseline in the same network; ``units`` is rounded down to a multiple of the number of views.

    ``topology`` picks (alpha, beta) from ``TOPOLOGIES``; explicit ``alpha`` / ``beta`` override it.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; choose from {sorted(TOPOLOGIES)}")
    inputs = perspective_inputs(input_dims, timesteps)
    dims = [int(d) for d in input_dims]
    preset_alpha, preset_beta = TOPOLOGIES[topology]
    views = len(dims)
    per_view = units // views
    if per_view < 1:
        raise ValueError(f"units={units} is fewer than one per view ({views} views)")

    def recurrent(sequences: bool) -> MVLSTM:
        return MVLSTM(
            per_view * views,
            views,
            input_dims=dims,
            alpha=preset_alpha if alpha is None else alpha,
            beta=preset_beta if beta is None else beta,
            output_activation=output_activation,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            return_sequences=sequences,
        )

    features = encode(recurrent, masked(inputs, "mvlstm"), bidirectional, attention, "mvlstm")
    return keras.Model(inputs, classifier(features, n_classes), name="mvlstm")


MODELS: dict[str, Callable[..., keras.Model]] = {
    "mplstm": build_mplstm,
    "single": build_single,
    "early_fusion": build_early_fusion,
    "late_fusion": build_late_fusion,
    "mvlstm": build_mvlstm,
}


def build_model(name: str, input_dims: Sequence[int], n_classes: int, **options: Any) -> keras.Model:
    """``MODELS[name](input_dims, n_classes, **options)``, naming the choices when ``name`` is unknown."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](input_dims, n_classes, **options)


def compile_model(model: keras.Model, learning_rate: float = 1e-3, jit_compile: bool | str = "auto") -> keras.Model:
    """Compile as released: RMSprop, categorical cross-entropy, accuracy. Returns the model."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model
