"""Temporal attention as the released MP-LSTM network computes it (``attention_3d_block``)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mpview")
class TemporalAttention(keras.layers.Layer):
    """Weights each timestep of ``[B, T, F]`` by a softmax over time, per feature; keeps the shape.

    As released (Permute, ``Dense(T, softmax)``, Permute, Multiply): for every feature f the scores over
    output steps s are ``sum_t x[t, f] W[t, s] + b[s]``, softmaxed over s, and ``y[s, f] = x[s, f] a[s, f]``.
    ``T`` must be static. With a mask, padded steps neither contribute to the scores nor receive weight,
    so they come out as zeros, and the mask stops here.
    """

    def __init__(
        self, kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """A ``[T, T]`` score kernel and a ``[T]`` bias."""
        steps = input_shape[1]
        if steps is None:
            raise ValueError("TemporalAttention needs a fixed number of timesteps (Input(shape=(T, F)))")
        self.kernel = self.add_weight(shape=(steps, steps), name="kernel", initializer=self.kernel_initializer)
        self.bias = self.add_weight(shape=(steps,), name="bias", initializer=self.bias_initializer)

    def attention(self, inputs: Any, mask: Any = None) -> Any:
        """The attention weights ``[B, T, F]``, summing to one over time (over unmasked steps); scored in float32."""
        x = ops.cast(inputs, "float32")
        if mask is not None:
            valid = ops.expand_dims(ops.cast(mask, "float32"), -1)
            x = x * valid
        scores = ops.einsum("btf,ts->bsf", x, ops.cast(self.kernel, "float32"))
        scores = scores + ops.cast(self.bias, "float32")[None, :, None]
        if mask is not None:
            scores = ops.where(valid > 0, scores, ops.full_like(scores, -1e9))
        return ops.cast(ops.softmax(scores, axis=1), inputs.dtype)

    def call(self, inputs: Any, mask: Any = None) -> Any:
        """``inputs * attention(inputs)``."""
        weights = self.attention(inputs, mask)
        return inputs * weights

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        """None: the mask is used up here (padded steps come out as zeros, ready for Flatten)."""
        return None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, serialised."""
        config = {
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
        return {**super().get_config(), **config}
