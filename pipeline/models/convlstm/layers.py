"""Deep convolutional LSTM lip reader on ROI pixels (Courtney and Sreenivas, ACPR 2019), one stack per perspective."""

from __future__ import annotations

import math
from typing import Sequence

import keras

from pipeline.models.convlstm import DEFAULT_LAYERS

LAYER_KINDS = ("conv", "convlstm", "pool")
DEFAULT_FILTERS = (32, 48, 64)

Shape = tuple[int | None, int, int, int]


@keras.saving.register_keras_serializable(package="mpview")
class FoldedTimeDistributed(keras.layers.TimeDistributed):
    """``TimeDistributed`` that folds time into the batch: one call on ``[B*T, ...]`` instead of one per frame.

    Keras's own layer slices, stacks and transposes the frames, keeping several copies of a clip-sized tensor for
    the backward pass; folding keeps one. Same weights, same per-frame results.
    """

    def call(self, inputs, training=None, mask=None):
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        if mask is not None and self.layer._call_has_mask_arg:
            kwargs["mask"] = keras.ops.reshape(mask, (-1, *mask.shape[2:]))
        shape = keras.ops.shape(inputs)
        outputs = self.layer.call(keras.ops.reshape(inputs, (-1, *inputs.shape[2:])), **kwargs)
        return keras.ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))

    def kept_elements(self) -> int:
        """Elements per sample this layer keeps for the backward pass: its output (``pipeline.training.memory``)."""
        return sum(math.prod(d or 1 for d in node.outputs[0].shape[1:]) for node in self._inbound_nodes)


@keras.saving.register_keras_serializable(package="mpview")
class RecomputedConvLSTM2D(keras.layers.ConvLSTM2D):
    """``ConvLSTM2D`` whose steps are recomputed in the backward pass (``keras.remat``), where Keras offers it.

    The forward pass keeps only each step's input and states; the gates, activations and cell products of a step
    (most of what a plain ConvLSTM2D keeps) are computed again when its gradient is needed. Same weights and
    outputs as ``ConvLSTM2D``; each training step costs about one more forward pass of the layer.
    """

    def kept_elements(self) -> int | None:
        """Elements per sample kept for the backward pass: each step's input, h and c, and the output sequence.

        None without ``keras.remat`` (Keras before 3.8): then it is a plain ConvLSTM2D, counted as one.
        """
        if not hasattr(keras, "remat"):
            return None
        return sum(
            math.prod(d or 1 for d in node.arguments.keras_tensors[0].shape[1:])
            + 3 * math.prod(d or 1 for d in node.outputs[0].shape[1:])
            for node in self._inbound_nodes
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not hasattr(keras, "remat"):  # Keras before 3.8: a plain ConvLSTM2D
            return super().inner_loop(sequences, initial_state, mask, training)
        from keras.src.backend import rnn  # the loop RNN.inner_loop runs; Keras exports no public name for it

        # the cell's weights enter the recomputed step as arguments (a step reading variables itself cannot be
        # differentiated inside TensorFlow's while loop), mapped back onto the variables by a StatelessScope
        variables = list(self.cell.trainable_variables)
        values = [keras.ops.convert_to_tensor(v) for v in variables]

        def cell_step(inputs, h, c, *weights):
            with keras.StatelessScope(state_mapping=list(zip(variables, weights))):
                _, (h, c) = self.cell(inputs, [h, c], training=training)
            return h, c

        recomputed = keras.remat(cell_step)

        def step(inputs, states):
            h, c = recomputed(inputs, *states, *values)
            return h, [h, c]

        return rnn(
            step,
            sequences,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=self.zero_output_for_mask,
            return_all_outputs=self.return_sequences,
        )


def parse_layers(spec: str | Sequence[str]) -> list[str]:
    """Split a layer spec such as ``"conv,pool,convlstm"`` into checked tokens."""
    tokens = [t.strip().lower() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    unknown = sorted(set(tokens) - set(LAYER_KINDS))
    if unknown or not any(t in ("conv", "convlstm") for t in tokens):
        raise ValueError(f"layer spec {spec!r}: tokens must be among {LAYER_KINDS} with at least one conv/convlstm")
    return tokens


def build_view_stack(
    shape: Shape, layers: Sequence[str], filters: Sequence[int], kernel_size: int = 3, name: str = "view"
) -> keras.Model:
    """One perspective's stack: clip [T, H, W, C] -> per-frame features [T, F] (spatial global average).

    ``conv`` is a per-frame 2D convolution + batch norm + ReLU, ``convlstm`` a ConvLSTM2D (return sequences)
    + batch norm, ``pool`` a per-frame 2x2 max pool; ``filters`` gives one width per conv/convlstm token.
    """
    widths = iter(filters)
    clip = keras.Input(shape=shape, name=f"{name}_clip")
    x = clip
    for i, kind in enumerate(layers):
        tag = f"{name}_{i}_{kind}"
        if kind == "pool":
            x = FoldedTimeDistributed(keras.layers.MaxPooling2D(2, padding="same"), name=tag)(x)
            continue
        width = next(widths)
        if kind == "conv":
            x = FoldedTimeDistributed(keras.layers.Conv2D(width, kernel_size, padding="same"), name=tag)(x)
            x = keras.layers.BatchNormalization(name=f"{tag}_bn")(x)
            x = keras.layers.Activation("relu", name=f"{tag}_relu")(x)
        else:
            x = RecomputedConvLSTM2D(width, kernel_size, padding="same", return_sequences=True, name=tag)(x)
            x = keras.layers.BatchNormalization(name=f"{tag}_bn")(x)
    features = FoldedTimeDistributed(keras.layers.GlobalAveragePooling2D(), name=f"{name}_spatial_pool")(x)
    return keras.Model(clip, features, name=name)


def build_convlstm(
    input_shapes: Sequence[Shape],
    n_classes: int,
    layers: str | Sequence[str] = DEFAULT_LAYERS,
    filters: Sequence[int] = DEFAULT_FILTERS,
    kernel_size: int = 3,
    dropout: float = 0.3,
    shared: bool = False,
    name: str = "convlstm",
) -> keras.Model:
    """Multi-perspective ConvLSTM classifier: per-view stack -> mean over time -> concatenate views -> softmax.

    ``input_shapes`` holds one (T, H, W, C) per perspective (T may be None); ``shared=True`` applies one stack,
    hence one set of weights, to every view (all shapes must then be equal). Inputs are normalised pixels.
    """
    tokens = parse_layers(layers)
    n_conv = sum(t != "pool" for t in tokens)
    if len(filters) != n_conv:
        raise ValueError(f"{n_conv} conv/convlstm layers in {tokens} but {len(filters)} filter widths")
    shapes = [tuple(s) for s in input_shapes]
    if any(len(s) != 4 for s in shapes):
        raise ValueError(f"each input shape must be (T, H, W, C), got {shapes}")
    if shared and len(set(shapes)) > 1:
        raise ValueError(f"shared weights need equal view shapes, got {shapes}")
    inputs = [keras.Input(shape=s, name=f"perspective_{j}") for j, s in enumerate(shapes)]
    shared_stack = build_view_stack(shapes[0], tokens, filters, kernel_size, "stack") if shared else None
    pooled = []
    for j, (clip, shape) in enumerate(zip(inputs, shapes)):
        stack = shared_stack or build_view_stack(shape, tokens, filters, kernel_size, f"stack{j}")
        pooled.append(keras.layers.GlobalAveragePooling1D(name=f"time_pool{j}")(stack(clip)))
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="fusion")(pooled)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)  # a list, like every network the trainer feeds
