"""The keras-vggface 0.6 architectures (VGG16, ResNet50, SENet50) rebuilt in Keras 3, layer for layer.

Layer names match the released weight files, with ``/`` (forbidden in Keras 3) written as ``__``;
:func:`original_name` and :func:`keras_name` convert between the two. Layers that keras-vggface left
unnamed get Keras 2 style names (``activation_1``, ``add_1``, ...) numbered per model, so a model's
layer names do not depend on what else was built in the session.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import keras
import numpy as np
from keras import layers

from pipeline.backbones.preprocess import BGR_MEANS, INPUT_SIZE, MODES, LinearTaps, resize_plan, subtract_means

ARCHITECTURES = ("vgg16", "resnet50", "senet50")
CLASSES = {"vgg16": 2622, "resnet50": 8631, "senet50": 8631}
PREPROCESS_VERSION = {"vgg16": 1, "resnet50": 2, "senet50": 2}
SEP_ORIGINAL, SEP_KERAS = "/", "__"


def keras_name(original: str) -> str:
    """The Keras 3 layer name for a keras-vggface layer name (``conv1/7x7_s2`` -> ``conv1__7x7_s2``)."""
    return original.replace(SEP_ORIGINAL, SEP_KERAS)


def original_name(name: str) -> str:
    """The keras-vggface layer name for a Keras 3 layer name built here (inverse of :func:`keras_name`)."""
    return name.replace(SEP_KERAS, SEP_ORIGINAL)


def preprocess_input(images: np.ndarray, version: int) -> np.ndarray:
    """keras-vggface ``preprocess_input`` (channels last): RGB -> BGR, subtract the version's BGR means; float32."""
    if version not in BGR_MEANS:
        raise ValueError(f"preprocess version must be 1 (vgg16) or 2 (resnet50/senet50), got {version!r}")
    return subtract_means(images, f"v{version}")


def _linear_resize(frames, rows: LinearTaps, cols: LinearTaps):
    """``cv2.resize(..., INTER_LINEAR)`` of uint8 ``[N,H,W,C]`` frames in OpenCV's integer steps (int32 ``[N,S,S,C]``):
    a horizontal pass with 11-bit weights, then the vertical one as its SIMD code does it (``>> 4``, multiply-high
    by the 11-bit weight, add, round off two bits)."""
    ops = keras.ops
    x = ops.cast(frames, "int32")
    wx = [ops.convert_to_tensor(cols.weights[:, k].reshape(1, 1, -1, 1)) for k in (0, 1)]
    wide = ops.take(x, cols.first, axis=2) * wx[0] + ops.take(x, cols.second, axis=2) * wx[1]
    wy = [ops.convert_to_tensor(rows.weights[:, k].reshape(1, -1, 1, 1)) for k in (0, 1)]
    top = ops.floor_divide(ops.floor_divide(ops.take(wide, rows.first, axis=1), 16) * wy[0], 65536)
    bottom = ops.floor_divide(ops.floor_divide(ops.take(wide, rows.second, axis=1), 16) * wy[1], 65536)
    return ops.clip(ops.floor_divide(top + bottom + 2, 4), 0, 255)


class Preprocess(layers.Layer):
    """uint8 ``[N,H,W,1|3]`` frames -> float32 ``[N,224,224,3]`` backbone input, in the graph.

    See ``pipeline.backbones.preprocess``.
    """

    def __init__(self, mode: str, size: int = INPUT_SIZE, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown preprocessing {mode!r}; choose one of {', '.join(MODES)}")
        self.mode, self.size = mode, size
        self._plan: tuple[str, tuple] | None = None

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        height, width, channels = input_shape[1:]
        if height is None or width is None or channels not in (1, 3):
            raise ValueError(f"Preprocess needs a fixed frame shape [H, W, 1|3], got {tuple(input_shape[1:])}")
        if MODES[self.mode].cpu_area_resize and (height, width) != (self.size, self.size):
            raise ValueError(f"mode {self.mode!r} takes frames already resized to {self.size} (OpenCV, on the CPU)")
        self._plan = resize_plan(height, width, self.size)

    def call(self, frames):
        ops = keras.ops
        mode = MODES[self.mode]
        if self._plan is None:
            x = ops.cast(frames, "float32")
        elif self._plan[0] == "linear":
            x = ops.cast(_linear_resize(frames, *self._plan[1]), "float32")
        else:
            rows, cols = (ops.convert_to_tensor(m) for m in self._plan[1])
            x = ops.einsum("oh,nhwc->nowc", rows, ops.cast(frames, "float32"))
            x = ops.floor(ops.einsum("pw,nowc->nopc", cols, x) + 0.5)  # OpenCV rounds its area means to uint8
        if x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if mode.flip:
            x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(np.asarray(mode.means, np.float32))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode, "size": self.size}


def with_preprocessing(model: keras.Model, mode: str, frame_shape: tuple[int, int, int]) -> keras.Model:
    """``model`` behind a :class:`Preprocess` layer.

    It takes uint8 frames of ``frame_shape`` (H, W, C) as they are stored.
    """
    inputs = keras.Input(frame_shape, dtype="uint8", name="frames")
    return keras.Model(
        inputs,
        model(Preprocess(mode, int(model.inputs[0].shape[1]), name="preprocess")(inputs)),
        name=f"{model.name}_from_uint8",
    )


class _Namer:
    """Keras 2 style automatic names (``activation_1``, ``activation_2``, ...) counted per model."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def __call__(self, prefix: str) -> str:
        self._counts[prefix] += 1
        return f"{prefix}_{self._counts[prefix]}"


def _check_pooling(pooling: str | None) -> None:
    """Reject a pooling mode keras-vggface does not know."""
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")


def _head(x: keras.KerasTensor, include_top: bool, pooling: str | None, auto: _Namer) -> keras.KerasTensor:
    """Global pooling for the no-top variants, as keras-vggface applies it."""
    if include_top or pooling is None:
        return x
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=auto("global_average_pooling2d"))(x)
    return layers.GlobalMaxPooling2D(name=auto("global_max_pooling2d"))(x)


def vgg16(include_top: bool = True, pooling: str | None = None, classes: int = CLASSES["vgg16"]) -> keras.Model:
    """VGGFace (VGG16, 2622 identities): conv1_1..conv5_3, pool1..pool5, then fc6, fc7, fc8 when ``include_top``."""
    _check_pooling(pooling)
    auto = _Namer()
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name=auto("input"))
    x = inputs
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"conv{block}_{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for fc, units in (("fc6", 4096), ("fc7", 4096)):
            x = layers.Dense(units, name=fc)(x)
            x = layers.Activation("relu", name=keras_name(f"{fc}/relu"))(x)
        x = layers.Dense(classes, name="fc8")(x)
        x = layers.Activation("softmax", name=keras_name("fc8/softmax"))(x)
    return keras.Model(inputs, _head(x, include_top, pooling, auto), name="vggface_vgg16")


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, name: str, eps: float, strides: int = 1, padding: str = "valid"
) -> keras.KerasTensor:
    """Bias-free convolution followed by its batch normalisation ``<name>/bn``."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=keras_name(name))(x)
    return layers.BatchNormalization(axis=-1, epsilon=eps, name=keras_name(f"{name}/bn"))(x)


def _se(x: keras.KerasTensor, stage: int, block: int, auto: _Namer, compress: int = 16) -> keras.KerasTensor:
    """Squeeze-and-excitation: global pool, 1x1 down (relu), 1x1 up (sigmoid), rescale channels."""
    channels = int(x.shape[-1])
    se = layers.GlobalAveragePooling2D(name=auto("global_average_pooling2d"))(x)
    se = layers.Reshape((1, 1, channels), name=auto("reshape"))(se)
    se = layers.Conv2D(channels // compress, 1, name=f"conv{stage}_{block}_1x1_down")(se)
    se = layers.Activation("relu", name=auto("activation"))(se)
    se = layers.Conv2D(channels, 1, name=f"conv{stage}_{block}_1x1_up")(se)
    se = layers.Activation("sigmoid", name=auto("activation"))(se)
    return layers.Multiply(name=auto("multiply"))([x, se])


def _bottleneck(
    x: keras.KerasTensor,
    filters: tuple[int, int, int],
    stage: int,
    block: int,
    auto: _Namer,
    eps: float,
    se: bool,
    strides: int | None,
) -> keras.KerasTensor:
    """A ResNet bottleneck; ``strides`` set means a projection (conv) block, None an identity block."""
    f1, f2, f3 = filters
    base = f"conv{stage}_{block}"
    y = _conv_bn(x, f1, 1, f"{base}_1x1_reduce", eps, strides=strides or 1)
    y = layers.Activation("relu", name=auto("activation"))(y)
    y = _conv_bn(y, f2, 3, f"{base}_3x3", eps, padding="same")
    y = layers.Activation("relu", name=auto("activation"))(y)
    y = _conv_bn(y, f3, 1, f"{base}_1x1_increase", eps)
    if se:
        y = _se(y, stage, block, auto)
    shortcut = x if strides is None else _conv_bn(x, f3, 1, f"{base}_1x1_proj", eps, strides=strides)
    y = layers.Add(name=auto("add"))([y, shortcut])
    return layers.Activation("relu", name=auto("activation"))(y)


RESNET_STAGES = (
    (2, (64, 64, 256), 3, 1),
    (3, (128, 128, 512), 4, 2),
    (4, (256, 256, 1024), 6, 2),
    (5, (512, 512, 2048), 3, 2),
)


def _resnet(name: str, se: bool, eps: float, include_top: bool, pooling: str | None, classes: int) -> keras.Model:
    """The VGGFace2 ResNet50 trunk shared by ``resnet50`` and ``senet50`` (the latter adds SE blocks)."""
    _check_pooling(pooling)
    auto = _Namer()
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name=auto("input"))
    x = _conv_bn(inputs, 64, 7, "conv1/7x7_s2", eps, strides=2, padding="same")
    x = layers.Activation("relu", name=auto("activation"))(x)
    x = layers.MaxPooling2D(3, strides=2, name=auto("max_pooling2d"))(x)
    for stage, filters, blocks, stride in RESNET_STAGES:
        for block in range(1, blocks + 1):
            x = _bottleneck(x, filters, stage, block, auto, eps, se, stride if block == 1 else None)
    x = layers.AveragePooling2D(7, name="avg_pool")(x)
    if include_top:
        x = layers.Flatten(name=auto("flatten"))(x)
        x = layers.Dense(classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, _head(x, include_top, pooling, auto), name=name)


def resnet50(include_top: bool = True, pooling: str | None = None, classes: int = CLASSES["resnet50"]) -> keras.Model:
    """VGGFace2 ResNet50 (8631 identities); ``avg_pool`` is the 2048-d embedding."""
    return _resnet("vggface_resnet50", False, 1e-3, include_top, pooling, classes)


def senet50(include_top: bool = True, pooling: str | None = None, classes: int = CLASSES["senet50"]) -> keras.Model:
    """VGGFace2 SE-ResNet50 (8631 identities, batch-norm epsilon 1e-4); ``avg_pool`` is the 2048-d embedding."""
    return _resnet("vggface_senet50", True, 1e-4, include_top, pooling, classes)


BUILDERS: dict[str, Callable[..., keras.Model]] = {"vgg16": vgg16, "resnet50": resnet50, "senet50": senet50}


def build(arch: str, include_top: bool = True, pooling: str | None = None) -> keras.Model:
    """Build one of :data:`ARCHITECTURES` with random weights."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown VGGFace architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return BUILDERS[arch](include_top=include_top, pooling=pooling)
