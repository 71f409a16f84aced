"""Composite LSTM autoencoder + future predictor (Srivastava, Mansimov, Salakhutdinov, ICML 2015) for pretraining.

One encoder reads the seen sequence; its final state (h, c) starts two decoders: one reconstructs the seen
sequence in reverse order, the other predicts the next ``future_steps`` frames. Each decoder step computes the LSTM
from the previous state (the first from the encoder's), then a linear readout of h (sigmoid for pixels).

How a decoder is conditioned (``DECODER_INPUTS``): ``None`` gets no input; ``"true"`` is fed the true previous
target frame, in training and inference; ``"teacher"`` the true previous frame in training and its own previous
output at inference; ``"free"`` its own previous output always. The first step sees no frame in every mode. The
authors' ``dec_conditional``/``future_conditional`` model (``conditional="teacher"``) is a ``"true"`` reconstruction
decoder (the seen frames exist at inference too) and a ``"teacher"`` predictor, as their ``lstm_combo.py`` runs it.

The peephole cell (:class:`PeepholeLSTMCell`) computes the authors' ``lstm.py`` step: gates in the order
i, f, g, o; the input and forget gates see the previous cell state, the output gate the new one.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import numpy as np
from keras import ops

from pipeline.models.mplstm.layers import MPLSTM
from pipeline.models.shared import CONDITIONINGS, HEADS, LSTM_INITS, PRETRAIN_LOSSES

ENCODER_NAME = "encoder"
RECONSTRUCTION = "reconstruction"
PREDICTION = "prediction"
FUTURE_INPUT = "future_frames"
DECODER_INPUTS = (None, "true", "teacher", "free")
INITS, LOSS_REDUCTIONS = LSTM_INITS, PRETRAIN_LOSSES
# the authors' uniform init half-widths (models/lstm_combo_1layer_mnist.pbtxt); every bias starts at zero
AUTHORS_SCALE = {"kernel": 0.01, "recurrent_kernel": 0.01, "peephole": 0.1, "readout_kernel": 0.01}

EncoderFactory = Callable[[list, int], tuple]


def _initializer(init: str, name: str, keras_default: str):
    """The initializer of weight ``name``: the authors' uniform one under ``init="authors"``, else Keras'."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "authors":
        scale = AUTHORS_SCALE[name]
        return keras.initializers.RandomUniform(-scale, scale)
    return keras_default


@keras.saving.register_keras_serializable(package="mpview")
class PeepholeLSTMCell(keras.layers.Layer):
    """LSTM cell with optional peepholes, as the authors' ``lstm.py`` computes it (``lstm_fprop``):

    ``i = s(W_i x + U_i h + p_i * c_prev + b_i)``, ``f = s(W_f x + U_f h + p_f * c_prev + b_f)``,
    ``g = tanh(W_g x + U_g h + b_g)``, ``c = f * c_prev + i * g``, ``o = s(W_o x + U_o h + p_o * c + b_o)``,
    ``h = o * tanh(c)``. ``has_input=False`` gives a cell without input weights (an unconditional decoder's).
    ``init="authors"``: uniform +-0.01 kernels, +-0.1 peepholes, zero biases; ``"keras"``: Glorot, orthogonal,
    zero peepholes, forget bias one.
    """

    def __init__(self, units: int, peepholes: bool = True, init: str = "authors", has_input: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.peepholes, self.init, self.has_input = units, peepholes, init, has_input
        _initializer(init, "kernel", "")  # checks the choice
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape: tuple) -> None:
        """Input kernel [d, 4u] (if it has an input), recurrent kernel [u, 4u], peepholes [3u], bias [4u]."""
        u = self.units
        if self.has_input:
            self.kernel = self.add_weight(
                shape=(int(input_shape[-1]), 4 * u),
                initializer=_initializer(self.init, "kernel", "glorot_uniform"),
                name="kernel",
            )
        self.recurrent_kernel = self.add_weight(
            shape=(u, 4 * u),
            initializer=_initializer(self.init, "recurrent_kernel", "orthogonal"),
            name="recurrent_kernel",
        )
        if self.peepholes:
            self.peephole = self.add_weight(
                shape=(3 * u,), initializer=_initializer(self.init, "peephole", "zeros"), name="peephole"
            )
        bias = np.zeros(4 * u, dtype="float32")
        if self.init == "keras":
            bias[u : 2 * u] = 1.0
        self.bias = self.add_weight(shape=(4 * u,), initializer=keras.initializers.Constant(bias), name="bias")

    def step(self, x, h, c) -> tuple:
        """One step from ``(h, c)``; ``x`` None adds no input (a decoder's first step, an unconditional decoder)."""
        z = ops.matmul(h, self.recurrent_kernel) + self.bias
        if x is not None:
            z = z + ops.matmul(x, self.kernel)
        i, f, g, o = ops.split(z, 4, axis=-1)
        if self.peepholes:
            p_i, p_f, p_o = ops.split(self.peephole, 3)
            i, f = i + c * p_i, f + c * p_f
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        if self.peepholes:
            o = o + c * p_o
        h = ops.sigmoid(o) * ops.tanh(c)
        return h, c

    def call(self, inputs, states, training=None):
        """The RNN cell interface: ``(h, [h, c])``."""
        h, c = self.step(inputs if self.has_input else None, *states)
        return h, [h, c]

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "units": self.units,
            "peepholes": self.peepholes,
            "init": self.init,
            "has_input": self.has_input,
        }


@keras.saving.register_keras_serializable(package="mpview")
class StateDecoder(keras.layers.Layer):
    """A decoder LSTM unrolled ``steps`` steps from an encoder state: ``[h, c]`` (or ``[h, c, frames]``) ->
    ``[B, steps, output_dim]``, a readout of h per step.

    ``frames`` ``[B, steps, output_dim]`` are the true targets in decoding order, needed by the ``"true"`` and
    ``"teacher"`` modes (see the module docstring): step ``t > 0`` is fed ``frames[:, t - 1]``. ``peepholes`` /
    ``init`` pick a :class:`PeepholeLSTMCell`; ``peepholes=False, init="keras"`` is the plain Keras-initialised LSTM.
    """

    def __init__(
        self,
        units: int,
        output_dim: int,
        steps: int,
        conditioning: str | None = None,
        activation: str = "linear",
        peepholes: bool = False,
        init: str = "keras",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if conditioning not in DECODER_INPUTS:
            raise ValueError(f"decoder conditioning must be one of {DECODER_INPUTS}, got {conditioning!r}")
        self.steps, self.output_dim, self.conditioning = steps, output_dim, conditioning
        self.activation = keras.activations.get(activation)
        self.cell = PeepholeLSTMCell(units, peepholes, init, has_input=conditioning is not None, name="cell")
        self.readout = keras.layers.Dense(
            output_dim, kernel_initializer=_initializer(init, "readout_kernel", "glorot_uniform"), name="readout"
        )

    @property
    def needs_frames(self) -> bool:
        """Whether the true target frames are an input (the ``"true"`` and ``"teacher"`` modes)."""
        return self.conditioning in ("true", "teacher")

    def build(self, input_shape: list) -> None:
        """Build the cell on frames of ``output_dim`` and the readout on h."""
        self.cell.build((None, self.output_dim))
        self.readout.build((None, self.cell.units))

    def call(self, inputs: list, training=None):
        """Decode; true frames feed the cell in ``"true"`` mode, and in ``"teacher"`` mode while training."""
        h, c = inputs[0], inputs[1]
        frames = inputs[2] if len(inputs) > 2 else None
        true = self.conditioning == "true" or (self.conditioning == "teacher" and bool(training))
        outputs = []
        for t in range(self.steps):
            x = None
            if t and self.conditioning is not None:
                x = frames[:, t - 1] if true else outputs[-1]
            h, c = self.cell.step(x, h, c)
            outputs.append(self.activation(self.readout(h)))
        return ops.stack(outputs, axis=1)

    def compute_output_shape(self, input_shape: list) -> tuple:
        """[B, steps, output_dim]."""
        return (input_shape[0][0], self.steps, self.output_dim)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "units": self.cell.units,
            "output_dim": self.output_dim,
            "steps": self.steps,
            "conditioning": self.conditioning,
            "activation": keras.activations.serialize(self.activation),
            "peepholes": self.cell.peepholes,
            "init": self.cell.init,
        }


def decoder_inputs(conditional: str | bool | None) -> tuple[str | None, str | None]:
    """The (reconstruction, prediction) decoder modes of a composite's ``conditional`` choice.

    ``"teacher"`` is the authors' (true seen frames for the reconstruction, teacher-forced predictor), ``"free"``
    both fed their own outputs (a run recorded with ``conditional: true`` meant that), ``None``/False unconditional.
    """
    if conditional is True:
        conditional = "free"
    if not conditional:
        return None, None
    if conditional not in CONDITIONINGS:
        raise ValueError(f"conditional must be one of {CONDITIONINGS} or None, got {conditional!r}")
    return ("true", "teacher") if conditional == "teacher" else ("free", "free")


@keras.saving.register_keras_serializable(package="mpview")
class TimeReversed(keras.layers.Layer):
    """``[B, T, ...]`` -> the same, time reversed (the reconstruction's order)."""

    def call(self, x):
        """Flip the time axis."""
        return ops.flip(x, axis=1)


def lstm_encoder(views: list, units: int) -> tuple:
    """Plain Keras LSTM encoder; several perspectives are concatenated per frame first (early fusion).

    Returns (h sequence, final h, final c)."""
    x = views[0] if len(views) == 1 else keras.layers.Concatenate(name="early_fusion")(views)
    return tuple(keras.layers.LSTM(units, return_sequences=True, return_state=True, name="encoder_lstm")(x))


def peephole_encoder(views: list, units: int, peepholes: bool = True, init: str = "authors") -> tuple:
    """:class:`PeepholeLSTMCell` encoder (the authors' with the defaults); perspectives concatenated per frame.

    Returns (h sequence, final h, final c)."""
    x = views[0] if len(views) == 1 else keras.layers.Concatenate(name="early_fusion")(views)
    cell = PeepholeLSTMCell(units, peepholes, init, name="cell")
    return tuple(keras.layers.RNN(cell, return_sequences=True, return_state=True, name="encoder_lstm")(x))


def mplstm_encoder(views: list, units: int) -> tuple:
    """Multi-Perspective LSTM encoder over the perspectives (one shared state). Returns (h sequence, h, c)."""
    return tuple(
        MPLSTM(units, perspectives=len(views), return_sequences=True, return_state=True, name="encoder_mplstm")(
            views if len(views) > 1 else views[0]
        )
    )


@keras.saving.register_keras_serializable(package="mpview")
class FrameLoss(keras.losses.Loss):
    """Per clip, the Bernoulli cross-entropy (``bernoulli``) or half squared error summed over frames and values,
    then summed over the batch (``reduction="sum"``, the authors' ``GetLoss``) or averaged."""

    def __init__(self, bernoulli: bool = True, reduction: str = "sum", name: str = "frame_loss", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.bernoulli = bernoulli

    def call(self, y_true, y_pred):
        """[B] summed losses."""
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.bernoulli:
            p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
            per_value = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        else:
            per_value = 0.5 * ops.square(y_pred - y_true)
        return ops.sum(ops.reshape(per_value, (ops.shape(per_value)[0], -1)), axis=-1)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "bernoulli": self.bernoulli}


def build_composite(
    timesteps: int,
    future_steps: int,
    units: int = 256,
    feature_dims: int | Sequence[int] | None = None,
    frame_shape: Sequence[int] | None = None,
    conditional: str | bool | None | tuple = None,
    encoder: EncoderFactory = lstm_encoder,
    optimizer: str | keras.optimizers.Optimizer = "rmsprop",
    bernoulli: bool = False,
    peepholes: bool = False,
    init: str = "keras",
    loss_reduction: str = "mean",
    compile: bool = True,
    name: str = "composite",
) -> keras.Model:
    """Composite model with outputs ``{"reconstruction": reversed input, "prediction": future}``, compiled unless
    ``compile`` is False.

    Give ``feature_dims`` (one int per perspective, embeddings [T, d_j], MSE, linear output; with ``bernoulli``
    flattened pixel intensities in [0, 1], sigmoid output and cross-entropy as Srivastava et al.) or ``frame_shape``
    ((H, W) or (H, W, C) pixels in [0, 1], flattened for the encoder, sigmoid output, binary cross-entropy).
    Several perspectives are reconstructed / predicted as their per-frame concatenation. ``encoder(views, units)``
    maps the list of [B, T, d_j] tensors to (h sequence, final h, final c), the outputs of the sub-model named
    ``"encoder"`` that :func:`classifier_from_encoder` copies. ``future_steps=0`` gives the autoencoder alone.

    ``conditional``: a :data:`CONDITIONINGS` choice or None (see :func:`decoder_inputs`), or a (reconstruction,
    prediction) pair of :data:`DECODER_INPUTS`. A teacher-forced predictor takes the true future frames as one more
    input, ``"future_frames"`` ([B, F, ...] like the targets; read in training only, any values at inference: see
    :func:`composite_inputs`). ``peepholes``/``init`` choose the decoders' cells (the encoder is ``encoder``'s).
    ``loss_reduction="sum"``: :class:`FrameLoss` summed over frames, values and batch, as the authors'; ``"mean"``:
    Keras' per-value mean losses.
    """
    if (feature_dims is None) == (frame_shape is None):
        raise ValueError("give exactly one of feature_dims (embeddings) and frame_shape (pixels)")
    if loss_reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {loss_reduction!r}")
    modes = conditional if isinstance(conditional, tuple) else decoder_inputs(conditional)
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
    encoder_model = keras.Model(
        inputs if len(inputs) > 1 else inputs[0], list(encoder(views, units)), name=ENCODER_NAME
    )
    state = encoder_model(inputs if len(inputs) > 1 else inputs[0])[1:]
    width = sum(dims)
    seen = views[0] if len(views) == 1 else keras.layers.Concatenate(name="seen_frames")(views)
    truth = {RECONSTRUCTION: TimeReversed(name="reversed_seen")(seen)}
    model_inputs = list(inputs)
    if future_steps and modes[1] in ("true", "teacher"):
        future = keras.Input(shape=(future_steps, *(frame_shape if pixels else (width,))), name=FUTURE_INPUT)
        model_inputs.append(future)
        truth[PREDICTION] = keras.layers.Reshape((future_steps, width), name="flatten_future")(future)
    activation = "sigmoid" if pixels or bernoulli else "linear"
    steps = {RECONSTRUCTION: timesteps, PREDICTION: future_steps} if future_steps else {RECONSTRUCTION: timesteps}
    outputs = {}
    for (key, n), mode in zip(steps.items(), modes):
        decoder = StateDecoder(units, width, n, mode, activation, peepholes, init, name=f"{key}_decoder")
        y = decoder([*state, truth[key]] if decoder.needs_frames else state)
        outputs[key] = keras.layers.Reshape((n, *frame_shape), name=key)(y) if pixels else y
    model = keras.Model(model_inputs if len(model_inputs) > 1 else model_inputs[0], outputs, name=name)
    if compile:
        cross_entropy = pixels or bernoulli
        if loss_reduction == "sum":
            loss = FrameLoss(bernoulli=cross_entropy, reduction="sum")
        else:
            loss = "binary_crossentropy" if cross_entropy else "mse"
        model.compile(optimizer=optimizer, loss={key: loss for key in outputs})
    return model


def _joined(x) -> np.ndarray:
    """One array: perspectives concatenated on the feature axis."""
    return np.concatenate(list(x), axis=-1) if isinstance(x, (list, tuple)) else np.asarray(x)


def composite_targets(
    seen: np.ndarray | Sequence[np.ndarray], future: np.ndarray | Sequence[np.ndarray] | None = None
) -> dict:
    """Training targets: the seen batch reversed in time, and the future batch (perspectives concatenated)."""
    targets = {RECONSTRUCTION: _joined(seen)[:, ::-1]}
    if future is not None:
        targets[PREDICTION] = _joined(future)
    return targets


def composite_inputs(model: keras.Model, seen, future=None):
    """What ``model`` takes: the seen perspectives, plus the future frames when its predictor is teacher-forced
    (zeros when ``future`` is None: only inference reads nothing from them)."""
    views = list(seen) if isinstance(seen, (list, tuple)) else [seen]
    if FUTURE_INPUT not in [t.name for t in model.inputs]:
        return views if len(views) > 1 else views[0]
    shape = model.inputs[-1].shape[1:]
    frames = _joined(future).reshape(len(views[0]), *shape) if future is not None else None
    return [*views, frames if frames is not None else np.zeros((len(views[0]), *shape), np.float32)]


@keras.saving.register_keras_serializable(package="mpview")
class TimeAveragedSoftmax(keras.layers.Layer):
    """Per-timestep logits ``[B, T, C]`` -> class probabilities ``[B, C]``, the authors' ``lstm_classifier.py``:
    at inference the mean over time of the per-step softmaxes (their ``GetPrediction``); while training
    ``exp(mean_t log softmax_t)``, whose :func:`log_likelihood_loss` is the mean of the per-step cross-entropies
    (their ``ComputeDeriv`` trains each step's softmax on the clip's label)."""

    def call(self, logits, training=None):
        """Time-averaged probabilities (inference) or the geometric mean the training loss needs."""
        if training:
            return ops.exp(ops.mean(ops.log_softmax(logits, axis=-1), axis=1))
        return ops.mean(ops.softmax(logits, axis=-1), axis=1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """[B, C]."""
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="mpview")
def log_likelihood_loss(y_true, y_pred):
    """``-sum(y log p)`` per sample, without renormalising ``p`` (categorical cross-entropy divides by its sum)."""
    return -ops.sum(ops.cast(y_true, y_pred.dtype) * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1)


def classifier_from_encoder(
    pretrained: keras.Model,
    n_classes: int,
    dropout: float = 0.2,
    trainable_encoder: bool = True,
    optimizer: str | keras.optimizers.Optimizer = "rmsprop",
    head: str = "final",
    name: str = "pretrained_classifier",
) -> keras.Model:
    """Compiled softmax classifier on a copy of a pretrained encoder (weights copied, not shared).

    ``pretrained`` is a composite model from :func:`build_composite` or its ``"encoder"`` sub-model. ``head``:
    ``"final"``, one softmax on the final h; ``"time-average"``, a softmax on h at every timestep averaged over time
    (:class:`TimeAveragedSoftmax`, the authors' classifier).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    source = pretrained if pretrained.name == ENCODER_NAME else pretrained.get_layer(ENCODER_NAME)
    inputs = [keras.Input(shape=t.shape[1:], name=f"perspective_{j}") for j, t in enumerate(source.inputs)]
    encoder = keras.models.clone_model(source)
    encoder.set_weights(source.get_weights())
    encoder.trainable = trainable_encoder
    h_seq, h, _ = encoder(inputs if len(inputs) > 1 else inputs[0])
    if head == "final":
        x = keras.layers.Dropout(dropout, name="dropout")(h)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="classifier")(x)
        loss = "categorical_crossentropy"
    else:
        x = keras.layers.Dropout(dropout, name="dropout")(h_seq)
        logits = keras.layers.Dense(n_classes, name="classifier")(x)
        outputs = TimeAveragedSoftmax(name="time_average")(logits)
        loss = log_likelihood_loss
    model = keras.Model(inputs, outputs, name=name)  # a list, like every network the trainer feeds
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model
