"""The skeleton the embedding networks share: the released MP-LSTM network's head, each network a ``Layout``.

``build_model(layout_factory, input_dims, n_classes, *, timesteps, units, dropout, recurrent_dropout,
bidirectional, attention, **own)`` returns an uncompiled ``keras.Model`` whose inputs are the m
perspectives ``[B, timesteps, d_j]`` (zero-padded frames are masked), in order, named
``perspective_<j>``; every model takes all m inputs, even those it ignores, so one data feed trains
any of them. They share the released head: a recurrent encoder (bidirectional, returning sequences)
-> temporal attention -> flatten -> softmax; each network's :class:`Layout` says only what differs,
its recurrent core and which perspectives each branch reads (late fusion: one branch per perspective).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras

from pipeline.models.attention import TemporalAttention

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


@dataclass(frozen=True)
class Layout:
    """What one network adds to the shared skeleton: its recurrent core and which perspectives each branch reads.

    ``branches`` are (layer-name prefix, perspective indices); each is masked, encoded and attended on its own.
    Several branches are joined under ``joint`` by ``combine``: "features" concatenates their representations
    under one classifier, "scores" averages each branch's own softmax scores.
    """

    name: str
    recurrent: LayerFactory
    branches: tuple[tuple[str, tuple[int, ...]], ...]
    combine: str = "features"
    joint: str = ""


def build_model(
    layout_factory: Callable[..., Layout],
    input_dims: Sequence[int],
    n_classes: int,
    *,
    timesteps: int = 20,
    units: int = 256,
    dropout: float = 0.2,
    recurrent_dropout: float = 0.0,
    bidirectional: bool = True,
    attention: bool = True,
    **own: Any,
) -> keras.Model:
    """The uncompiled network ``layout_factory(dims, units, dropout, recurrent_dropout, **own)`` lays out (each
    embedding model's package has one), on the shared skeleton and head."""
    dims = [int(d) for d in input_dims]
    layout = layout_factory(dims, units, dropout, recurrent_dropout, **own)
    inputs = perspective_inputs(dims, timesteps)
    features = [
        encode(layout.recurrent, masked([inputs[j] for j in members], prefix), bidirectional, attention, prefix)
        for prefix, members in layout.branches
    ]
    if layout.combine == "scores":
        scores = [
            classifier(f, n_classes, name=f"{prefix}_classifier") for f, (prefix, _) in zip(features, layout.branches)
        ]
        outputs = scores[0] if len(scores) == 1 else keras.layers.Average(name=f"{layout.joint}_average")(scores)
    else:
        joined = (
            features[0] if len(features) == 1 else keras.layers.Concatenate(name=f"{layout.joint}_concat")(features)
        )
        outputs = classifier(joined, n_classes)
    return keras.Model(inputs, outputs, name=layout.name)


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-3,
    jit_compile: bool | str = "auto",
    optimizer: keras.optimizers.Optimizer | None = None,
) -> keras.Model:
    """Compile as released: ``optimizer`` (default RMSprop at ``learning_rate``), categorical cross-entropy,
    accuracy. Returns the model."""
    model.compile(
        optimizer=optimizer or keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model
