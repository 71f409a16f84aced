"""Multi-Perspective LSTM (Sepas-Moghaddam et al., CVPR 2021): cell, layer and their shared base.

A perspective-sequence layer takes m inputs ``[B, T, d_j]`` (a list, or one tensor of
``sum(d_j)`` features split in order). It projects every perspective for all timesteps
before the recurrence (one matmul per perspective over the whole batch of sequences), so the
recurrent step only adds the recurrent term, once, and applies the gates. ``MVLSTM``
(mvlstm.py) reuses the same base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from pipeline.models.networks import Layout

RNN_ARGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask")
LAYER_ARGS = ("name", "dtype", "trainable", "autocast", "activity_regularizer")
GATES = 4  # i, f, c (g), o: Keras gate order


@keras.saving.register_keras_serializable(package="mpview")
def keras2_hard_sigmoid(x: Any) -> Any:
    """Keras 2 hard sigmoid, clip(0.2 x + 0.5, 0, 1), as the released MP-LSTM used (Keras 3's has slope 1/6)."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def get_activation(identifier: Any) -> Any:
    """A Keras activation, or one registered under this package (``"mpview>keras2_hard_sigmoid"``)."""
    if isinstance(identifier, str):
        registered = keras.saving.get_registered_object(identifier)
        if registered is not None:
            return registered
    return keras.activations.get(identifier)


def is_shape_list(shape: Any) -> bool:
    """Whether ``shape`` is a list of shapes (one per perspective) rather than one shape."""
    return isinstance(shape, (list, tuple)) and bool(shape) and isinstance(shape[0], (list, tuple))


def first_shape(shape: Any) -> Any:
    """The first perspective's shape from a list of shapes, or the shape itself."""
    return tuple(shape[0]) if is_shape_list(shape) else shape


def resolve_input_dims(input_shape: Any, perspectives: int, input_dims: Sequence[int] | None) -> tuple[int, ...]:
    """Per-perspective feature sizes from a list of shapes, or from one shape split by ``input_dims`` or evenly."""
    if is_shape_list(input_shape):
        dims = tuple(int(shape[-1]) for shape in input_shape)
        if len(dims) != perspectives or (input_dims is not None and tuple(input_dims) != dims):
            raise ValueError(f"got inputs of sizes {dims} for perspectives={perspectives}, input_dims={input_dims}")
        return dims
    total = int(input_shape[-1])
    if input_dims is None:
        if total % perspectives:
            raise ValueError(f"{total} features do not split evenly into {perspectives} perspectives; pass input_dims")
        return (total // perspectives,) * perspectives
    if len(input_dims) != perspectives or sum(input_dims) != total:
        raise ValueError(f"input_dims={tuple(input_dims)} do not split {total} features into {perspectives} parts")
    return tuple(int(d) for d in input_dims)


def merge_masks(mask: Any) -> Any:
    """One [B, T] mask from a mask or a list of per-perspective masks (a frame counts when every perspective has it)."""
    if not isinstance(mask, (list, tuple)):
        return mask
    present = [m for m in mask if m is not None]
    if not present:
        return None
    merged = present[0]
    for other in present[1:]:
        merged = ops.logical_and(merged, other)
    return merged


class PerspectiveCell(keras.layers.Layer):
    """Shared weights and input handling of the multi-perspective cells: per-perspective input kernels and biases.

    Perspective j's input kernel is ``kernels[j]`` ``[d_j, width]``, the biases are one ``bias [m * width]``;
    ``width`` is the size of one perspective's projection (four gate blocks). Subclasses define ``width``,
    the recurrent kernel's shape and the step (``call``). Weights are ordered kernels, recurrent kernel, bias,
    so with one perspective they are ``keras.layers.LSTM``'s.
    """

    def __init__(
        self,
        units: int,
        perspectives: int = 1,
        input_dims: Sequence[int] | None = None,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        unit_forget_bias: bool = True,
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if units <= 0 or perspectives < 1:
            raise ValueError(f"need units > 0 and perspectives >= 1, got units={units}, perspectives={perspectives}")
        self.units = int(units)
        self.perspectives = int(perspectives)
        self.input_dims = None if input_dims is None else tuple(int(d) for d in input_dims)
        self.activation = get_activation(activation)
        self.recurrent_activation = get_activation(recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.unit_forget_bias = unit_forget_bias
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = [self.units, self.units]
        self.output_size = self.units
        self.recurrent_mask = None
        self.loop_kernel = None

    @property
    def width(self) -> int:
        """Size of one perspective's input projection (four gate blocks)."""
        raise NotImplementedError

    @property
    def recurrent_shape(self) -> tuple[int, int]:
        """Shape of the recurrent kernel."""
        raise NotImplementedError

    def build(self, input_shape: Any) -> None:
        """Create the weights for the per-perspective sizes found in ``input_shape`` (list of shapes or one shape)."""
        self.input_dims = resolve_input_dims(input_shape, self.perspectives, self.input_dims)
        self.kernels = [
            self.add_weight(
                shape=(dim, self.width),
                name=f"kernel_{j}",
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            for j, dim in enumerate(self.input_dims)
        ]
        self.recurrent_kernel = self.add_weight(
            shape=self.recurrent_shape,
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.perspectives * self.width,),
                name="bias",
                initializer=self._bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def _bias_initializer(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        """The bias initializer per gate block, with the forget blocks set to one under ``unit_forget_bias``."""
        block = self.width // GATES
        blocks = []
        for _ in range(self.perspectives):
            for gate in range(GATES):
                forget = self.unit_forget_bias and gate == 1
                init = keras.initializers.get("ones") if forget else self.bias_initializer
                blocks.append(init((block,), dtype=dtype))
        return ops.concatenate(blocks, axis=0)

    def project(self, inputs: Any, training: bool = False) -> Any:
        """Input dropout, then every perspective's ``s_j W^j + b^j`` for all timesteps at once: ``[..., m * width]``."""
        # One matmul per perspective: a batched einsum is no faster, and TensorFlow's gradient of
        # "...md,mdk->...mk" materialises the kernel gradient for every timestep.
        if isinstance(inputs, (list, tuple)):
            parts = list(inputs)
        else:
            bounds = [sum(self.input_dims[:j]) for j in range(self.perspectives + 1)]
            parts = [inputs[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        if training and 0.0 < self.dropout < 1.0:
            parts = [self.input_dropout(part) for part in parts]
        z = ops.concatenate([ops.matmul(part, kernel) for part, kernel in zip(parts, self.kernels)], axis=-1)
        return z + self.bias if self.use_bias else z

    def input_dropout(self, x: Any) -> Any:
        """Dropout with one mask per sample and feature, shared by all timesteps."""
        shape = ops.shape(x)
        noise_shape = (shape[0],) + (1,) * (len(x.shape) - 2) + (shape[-1],)
        return keras.random.dropout(x, self.dropout, noise_shape=noise_shape, seed=self.seed_generator)

    def step_kernel(self) -> Any:
        """The recurrent kernel as the steps use it; computed once per sequence, before the loop."""
        return self.recurrent_kernel

    def start_sequence(self, batch_size: Any, training: bool = False) -> None:
        """Prepare the loop: the step kernel, and the recurrent dropout mask all steps share (training only)."""
        self.recurrent_mask = None
        if training and 0.0 < self.recurrent_dropout < 1.0:
            ones = ops.ones((batch_size, self.units), dtype=self.compute_dtype)
            self.recurrent_mask = keras.random.dropout(ones, self.recurrent_dropout, seed=self.seed_generator)
        self.loop_kernel = self.step_kernel()

    def end_sequence(self) -> None:
        """Drop what ``start_sequence`` prepared."""
        self.recurrent_mask = None
        self.loop_kernel = None

    def recurrent_term(self, h_tm1: Any) -> Any:
        """``h_{t-1}`` (with recurrent dropout in training) times the step kernel; needs ``start_sequence``."""
        h = h_tm1 if self.recurrent_mask is None else h_tm1 * self.recurrent_mask
        return ops.matmul(h, self.loop_kernel)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, serialised."""
        config = {
            "units": self.units,
            "perspectives": self.perspectives,
            "input_dims": None if self.input_dims is None else list(self.input_dims),
            "activation": keras.activations.serialize(self.activation),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(self.recurrent_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="mpview")
class MPLSTMCell(PerspectiveCell):
    """One MP-LSTM step: per-perspective gates on one shared state, chained through the memory.

    For perspectives j = 1..m with projected inputs ``x_j = s_j W^j + b^j`` and ``r = U h_{t-1}``
    (computed once per step)::

        i_j, f_j, g_j, o_j = sig(x_j,i + r_i), sig(x_j,f + r_f), tanh(x_j,c + r_c), sig(x_j,o + r_o)
        c^(0) = c_{t-1};  c^(j) = f_j * c^(j-1) + i_j * g_j;  c_t = c^(m)
        h_t = sum_j o_j * tanh(c_t)

    With m = 1 this is ``keras.layers.LSTMCell`` with the same weights. ``released=True`` reproduces the
    authors' released code: ``U_f`` stands in for ``U_c`` in g_j (``U_c`` is kept, unused) and the
    recurrent activation defaults to the Keras 2 hard sigmoid. The step's input is the projection made
    by ``project``; use the cell through ``MPLSTM``.
    """

    def __init__(
        self, units: int, perspectives: int = 1, released: bool = False, recurrent_activation: Any = None, **kwargs: Any
    ) -> None:
        if recurrent_activation is None:
            recurrent_activation = keras2_hard_sigmoid if released else "sigmoid"
        super().__init__(units, perspectives, recurrent_activation=recurrent_activation, **kwargs)
        self.released = bool(released)

    @property
    def width(self) -> int:
        """Four gate blocks of ``units`` per perspective."""
        return GATES * self.units

    @property
    def recurrent_shape(self) -> tuple[int, int]:
        """One recurrent kernel U shared by all perspectives."""
        return (self.units, GATES * self.units)

    def step_kernel(self) -> Any:
        """U, or with ``released`` the released code's [U_i, U_f, U_f, U_o]."""
        if not self.released:
            return self.recurrent_kernel
        u = self.units
        kernel = self.recurrent_kernel
        return ops.concatenate([kernel[:, : 2 * u], kernel[:, u : 2 * u], kernel[:, 3 * u :]], axis=-1)

    def call(self, inputs: Any, states: Sequence[Any]) -> tuple[Any, list[Any]]:
        """One step from the projected inputs ``[B, m * 4u]`` and the state (h, c)."""
        h_tm1, c = states
        z = ops.reshape(inputs, (-1, self.perspectives, self.width)) + ops.expand_dims(self.recurrent_term(h_tm1), 1)
        z_i, z_f, z_c, z_o = ops.split(z, GATES, axis=-1)
        forget = ops.unstack(self.recurrent_activation(z_f), axis=1)
        update = ops.unstack(self.recurrent_activation(z_i) * self.activation(z_c), axis=1)
        for f, ig in zip(forget, update):
            c = f * c + ig
        h = ops.sum(self.recurrent_activation(z_o), axis=1) * self.activation(c)
        return h, [h, c]

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, serialised."""
        return {**super().get_config(), "released": self.released}


class PerspectiveRNN(keras.layers.RNN):
    """Runs a ``PerspectiveCell`` over m perspective sequences: project once, then recur.

    Call with a list of m tensors ``[B, T, d_j]`` or one tensor ``[B, T, sum d_j]``. Masks (one, or one per
    perspective) leave the state unchanged on padded frames; ``go_backwards`` makes it usable in
    ``keras.layers.Bidirectional``. Constructor keywords not for the RNN or the layer go to the cell.
    """

    cell_class: type[PerspectiveCell]

    def __init__(self, units: int, perspectives: int = 1, **kwargs: Any) -> None:
        rnn_kwargs = {key: kwargs.pop(key) for key in RNN_ARGS + LAYER_ARGS if key in kwargs}
        cell = self.cell_class(
            units,
            perspectives,
            dtype=rnn_kwargs.get("dtype"),
            trainable=rnn_kwargs.get("trainable", True),
            name="cell",
            **kwargs,
        )
        super().__init__(cell, **rnn_kwargs)

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        """Build the cell from the perspective shapes, then the RNN (stateful variables)."""
        if not self.cell.built:
            self.cell.build(sequences_shape)
        super().build(first_shape(sequences_shape))

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        """As ``keras.layers.RNN``, from the first perspective's shape."""
        return super().compute_output_shape(first_shape(sequences_shape))

    def compute_mask(self, inputs: Any, mask: Any) -> Any:
        """As ``keras.layers.RNN``, with per-perspective masks merged."""
        return super().compute_mask(inputs, merge_masks(mask))

    def call(self, sequences: Any, initial_state: Any = None, mask: Any = None, training: bool = False) -> Any:
        """Project all perspectives for all timesteps, then run the recurrence over the projections."""
        projected = self.cell.project(sequences, training=training)
        self.cell.start_sequence(ops.shape(projected)[0], training=training)
        try:
            return super().call(projected, initial_state=initial_state, mask=merge_masks(mask), training=training)
        finally:
            self.cell.end_sequence()

    def get_config(self) -> dict[str, Any]:
        """RNN options and the cell's arguments, flat (like ``keras.layers.LSTM``)."""
        config = super().get_config()
        del config["cell"]
        cell_config = {k: v for k, v in self.cell.get_config().items() if k not in ("name", "trainable", "dtype")}
        return {**config, **cell_config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PerspectiveRNN:
        """Rebuild from ``get_config``."""
        return cls(**config)


@keras.saving.register_keras_serializable(package="mpview")
class MPLSTM(PerspectiveRNN):
    """Multi-Perspective LSTM layer: ``MPLSTM(units, perspectives, released=False, dropout=..., return_sequences=...)``.

    The input projections of all perspectives and timesteps are computed before the loop (one matmul
    per perspective) and ``U h_{t-1}`` once per step, so a training step costs about what a
    ``keras.layers.LSTM`` of the same width and total input size costs (bench/train.py).
    """

    cell_class = MPLSTMCell


def mplstm_layout(
    dims: list[int], units: int, dropout: float, recurrent_dropout: float, *, released: bool = False
) -> Layout:
    """The released network: Bidirectional MP-LSTM over all perspectives."""

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

    return Layout("mplstm", recurrent, (("mplstm", tuple(range(len(dims)))),))
