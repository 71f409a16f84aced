"""Composite LSTM autoencoder + future predictor (Srivastava, Mansimov, Salakhutdinov, ICML 2015) for pretraining.

One encoder reads the seen sequence; its final state (h, c) starts two decoders: one reconstructs the seen
sequence in reverse order, the other predicts the next ``future_steps`` frames. A conditional decoder is fed
its own previous output (free running, in training and at test alike: no teacher forcing, so there is no
train/test mismatch); an unconditional one gets no input. The first step of a conditional decoder sees zeros.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import numpy as np
from keras import ops

from pipeline.models.mplstm.layers import MPLSTM

ENCODER_NAME = "encoder"
RECONSTRUCTION = "reconstruction"
PREDICTION = "prediction"

EncoderFactory = Callable[[list, int], tuple]


@keras.saving.register_keras_serializable(package="mpview")
class ReadoutLSTMCell(keras.layers.Layer):
    """LSTM cell emitting a dense readout of h; when conditional, the last readout is the next step's input."""

    def __init__(self, units: int, output_dim: int, conditional: bool, activation: str = "linear", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.output_dim = output_dim
        self.conditional = conditional
        self.activation = keras.activations.get(activation)
        self.state_size = [units, units, output_dim]
        self.output_size = output_dim

    def build(self, input_shape: tuple) -> None:
        """Create U [units, 4 units], bias (forget gate at one), readout, and W [output_dim, 4 units] if conditional."""
        if self.conditional:
            self.kernel = self.add_weight(
                shape=(self.output_dim, 4 * self.units), initializer="glorot_uniform", name="kernel"
            )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 4 * self.units), initializer="orthogonal", name="recurrent_kernel"
        )
        forget_one = np.zeros(4 * self.units, dtype="float32")
        forget_one[self.units : 2 * self.units] = 1.0
        self.bias = self.add_weight(
            shape=(4 * self.units,), initializer=keras.initializers.Constant(forget_one), name="bias"
        )
        self.readout_kernel = self.add_weight(
            shape=(self.units, self.output_dim), initializer="glorot_uniform", name="readout_kernel"
        )
        self.readout_bias = self.add_weight(shape=(self.output_dim,), initializer="zeros", name="readout_bias")

    def call(self, inputs, states, training=None):
        """One step; ``inputs`` only set the time axis and are ignored."""
        h, c, y = states
        z = ops.matmul(h, self.recurrent_kernel) + self.bias
        if self.conditional:
            z = z + ops.matmul(y, self.kernel)
        i, f, g, o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        y = self.activation(ops.matmul(h, self.readout_kernel) + self.readout_bias)
        return y, [h, c, y]

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "units": self.units,
            "output_dim": self.output_dim,
            "conditional": self.conditional,
            "activation": keras.activations.serialize(self.activation),
        }


@keras.saving.register_keras_serializable(package="mpview")
class StateDecoder(keras.layers.Layer):
    """Unrolls a :class:`ReadoutLSTMCell` for ``steps`` steps from an encoder state [h, c] -> [B, steps, output_dim]."""

    def __init__(
        self, units: int, output_dim: int, steps: int, conditional: bool, activation: str = "linear", **kwargs
    ):
        super().__init__(**kwargs)
        self.steps = steps
        self.cell = ReadoutLSTMCell(units, output_dim, conditional, activation, name="cell")
        self.rnn = keras.layers.RNN(self.cell, return_sequences=True, name="rnn")

    def build(self, input_shape: list) -> None:
        """Build the recurrent layer on a dummy one-feature sequence."""
        self.rnn.build((input_shape[0][0], self.steps, 1))

    def call(self, inputs: list):
        """Decode from ``inputs = [h, c]``; the first readout fed back is zero."""
        h, c = inputs
        batch = ops.shape(h)[0]
        clock = ops.zeros((batch, self.steps, 1), dtype=h.dtype)
        first = ops.zeros((batch, self.cell.output_dim), dtype=h.dtype)
        return self.rnn(clock, initial_state=[h, c, first])

    def compute_output_shape(self, input_shape: list) -> tuple:
        """[B, steps, output_dim]."""
        return (input_shape[0][0], self.steps, self.cell.output_dim)

    def get_config(self) -> dict:
        """Constructor arguments."""
        cell = self.cell
        return {
            **super().get_config(),
            "units": cell.units,
            "output_dim": cell.output_dim,
            "steps": self.steps,
            "conditional": cell.conditional,
            "activation": keras.activations.serialize(cell.activation),
        }


def lstm_encoder(views: list, units: int) -> tuple:
    """Plain LSTM encoder; several perspectives are concatenated per frame first (early fusion). Returns (h, c)."""
    x = views[0] if len(views) == 1 else keras.layers.Concatenate(name="early_fusion")(views)
    _, h, c = keras.layers.LSTM(units, return_state=True, name="encoder_lstm")(x)
    return h, c


def mplstm_encoder(views: list, units: int) -> tuple:
    """Multi-Perspective LSTM encoder over the perspectives (one shared state). Returns (h, c)."""
    _, h, c = MPLSTM(units, perspectives=len(views), return_state=True, name="encoder_mplstm")(
        views if len(views) > 1 else views[0]
    )
    return h, c


def build_composite(
    timesteps: int,
    future_steps: int,
    units: int = 256,
    feature_dims: int | Sequence[int] | None = None,
    frame_shape: Sequence[int] | None = None,
    conditional: bool = False,
    encoder: EncoderFactory = lstm_encoder,
    optimizer: str | keras.optimizers.Optimizer = "rmsprop",
    bernoulli: bool = False,
    name: str = "composite",
) -> keras.Model:
    """Compiled composite model with outputs ``{"reconstruction": reversed input, "prediction": future}``.

    Give ``feature_dims`` (one int per perspective, embeddings [T, d_j], MSE, linear output; with ``bernoulli``
    flattened pixel intensities in [0, 1], sigmoid output and cross-entropy as Srivastava et al.) or ``frame_shape``
    ((H, W) or (H, W, C) pixels in [0, 1], flattened for the encoder, sigmoid output, binary cross-entropy).
    Several perspectives are reconstructed / predicted as their per-frame concatenation. ``encoder(views, units)``
    maps the list of [B, T, d_j] tensors to the final (h, c); it is wrapped in the sub-model named
    ``"encoder"`` that :func:`classifier_from_encoder` copies. ``future_steps=0`` gives the autoencoder alone.
    """
    if (feature_dims is None) == (frame_shape is None):
        raise ValueError("give exactly one of feature_dims (embeddings) and frame_shape (pixels)")
    pixels = frame_shape is not None
    if pixels:
        frame_shape = tuple(frame_shape)
        dims = [math.prod(frame_shape)]
        inputs = [keras.Input(shape=(timesteps, *frame_shape), name="frames")]
        views = [keras.layers.Reshape((timesteps, dims[0]), name="flatten_frames")(inputs[0])]
    else:
        dims = [int(feature_dims)] if isinstance(feature_dims, int) else [int(d) for d in feature_dims]
        inputs = [keras.Input(shape=(timesteps, d), name=f"perspective_{j}") for j, d in enumerate(dims)]
        views = list(inputs)
    h, c = encoder(views, units)
    encoder_model = keras.Model(inputs if len(inputs) > 1 else inputs[0], [h, c], name=ENCODER_NAME)
    state = encoder_model(inputs if len(inputs) > 1 else inputs[0])
    activation = "sigmoid" if pixels or bernoulli else "linear"
    steps = {RECONSTRUCTION: timesteps, PREDICTION: future_steps} if future_steps else {RECONSTRUCTION: timesteps}
    outputs = {}
    for key, n in steps.items():
        y = StateDecoder(units, sum(dims), n, conditional, activation, name=f"{key}_decoder")(state)
        outputs[key] = keras.layers.Reshape((n, *frame_shape), name=key)(y) if pixels else y
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=name)
    loss = "binary_crossentropy" if pixels or bernoulli else "mse"
    model.compile(optimizer=optimizer, loss={key: loss for key in outputs})
    return model


def composite_targets(
    seen: np.ndarray | Sequence[np.ndarray], future: np.ndarray | Sequence[np.ndarray] | None = None
) -> dict:
    """Training targets: the seen batch reversed in time, and the future batch (perspectives concatenated)."""

    def joined(x):
        """One array: perspectives concatenated on the feature axis."""
        return np.concatenate(list(x), axis=-1) if isinstance(x, (list, tuple)) else np.asarray(x)

    targets = {RECONSTRUCTION: joined(seen)[:, ::-1]}
    if future is not None:
        targets[PREDICTION] = joined(future)
    return targets


def classifier_from_encoder(
    pretrained: keras.Model,
    n_classes: int,
    dropout: float = 0.2,
    trainable_encoder: bool = True,
    optimizer: str | keras.optimizers.Optimizer = "rmsprop",
    name: str = "pretrained_classifier",
) -> keras.Model:
    """Compiled softmax classifier on the final h of a copy of a pretrained encoder (weights copied, not shared).

    ``pretrained`` is a composite model from :func:`build_composite` or its ``"encoder"`` sub-model.
    """
    source = pretrained if pretrained.name == ENCODER_NAME else pretrained.get_layer(ENCODER_NAME)
    encoder = keras.models.clone_model(source)
    encoder.set_weights(source.get_weights())
    encoder.trainable = trainable_encoder
    inputs = [keras.Input(shape=t.shape[1:], name=f"perspective_{j}") for j, t in enumerate(source.inputs)]
    h, _ = encoder(inputs if len(inputs) > 1 else inputs[0])
    x = keras.layers.Dropout(dropout, name="dropout")(h)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name=name)  # a list, like every network the trainer feeds
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model
