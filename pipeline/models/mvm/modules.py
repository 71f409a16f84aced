"""Kim, Yeo and Ro's modules in Keras, layer for layer: the IR-ResNet-18 visual front, audio front, MS-TCN block.

Each function or block builds the layers of one of the authors' PyTorch modules (``visual_front.py``,
``resnet.py``, ``audio_front.py``, ``temporal_classifier.py`` in ms-dot-k/Multi-head-Visual-Audio-Memory) on
channels-last tensors, with PyTorch's semantics where Keras' defaults differ:

- padding: PyTorch pads symmetrically; Keras ``same`` puts the odd pixel of a stride-2 convolution or pool on the
  right. Every strided convolution is an explicit ``ZeroPadding`` + ``valid`` convolution, the max pool an explicit
  ``-inf`` padding (:class:`MaxPoolPadding`) + ``valid`` pool; stride-1 3x3 convolutions use ``same`` (symmetric);
- the MS-TCN's convolutions pad (k - 1) * dilation on both sides, batch-normalise the padded sequence, then crop
  half of it from each end (the authors' symmetric ``Chomp1d``), so training-mode statistics include the edges;
- flatten order: PyTorch flattens [C, H, W] (visual) and [C, F] (audio); the features are permuted first, so a
  PyTorch ``Linear`` weight maps onto the Keras ``Dense`` kernel by a plain transpose;
- batch norm: momentum 0.9 (PyTorch's 0.1) and epsilon 1e-5; layer norm epsilon 1e-5; PReLU one slope per channel,
  initialised to 0.25; PyTorch's default initialisation (uniform, bound 1 / sqrt(fan_in), bias alike) except where
  the authors set Xavier-uniform (the ResNet's convolutions and its output ``Linear``, bias 0).

Layer names are the authors' ``state_dict`` module paths with ``.`` replaced by ``_`` behind the checkpoint group's
prefix: ``resnet.layer1.0.res_layer.1`` of ``v_front_state_dict`` is ``v_front_resnet_layer1_0_res_layer_1``,
``frontend.3`` of ``a_front_state_dict`` is ``a_front_frontend_3``, ``tcn.mb_ms_tcn.layer1.cbcr0_0.conv`` of
``tcn_state_dict`` is ``tcn_tcn_mb_ms_tcn_layer1_cbcr0_0_conv``. Layers without parameters that exist only here
(paddings, permutes, crops) carry the name of the layer they serve plus a suffix (``_pad``, ``_chw``, ...). Weights
map as: ``Conv3d`` [o, i, t, h, w] -> [t, h, w, i, o]; ``Conv2d`` [o, i, h, w] -> [h, w, i, o] (per-frame ones are
``TimeDistributed``, whose weights are the inner convolution's); ``Conv1d`` [o, i, k] -> [k, i, o]; ``Linear``
[o, i] -> [i, o]; batch norm weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance
(``num_batches_tracked`` has no counterpart); PReLU [c] -> alpha [1, ..., c]; layer norm weight, bias -> gamma, beta.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

KERNELS = (3, 5, 7)
DILATIONS = (1, 2, 4, 8)  # one per block (``MSTCN_BLOCKS`` of the package)
BRANCH = 256  # channels per MS-TCN branch: 3 x 256 = 768 wide
STAGES = (64, 128, 256, 512)
BN = {"momentum": 0.9, "epsilon": 1e-5}
LN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="mpview")
class MaxPoolPadding(keras.layers.Layer):
    """Pad the spatial axes of [B, T, H, W, C] with -inf on both sides: PyTorch's implicit max-pool padding."""

    def __init__(self, padding: Sequence[int] = (1, 1), **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(int(p) for p in padding)

    def call(self, x):
        """x padded by ``padding`` (H, W) before and after."""
        (ph, pw) = self.padding
        return ops.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw), (0, 0)], constant_values=float("-inf"))

    def compute_output_shape(self, shape: tuple) -> tuple:
        """H and W grown by twice their padding."""
        grow = [None if d is None else d + 2 * p for d, p in zip(shape[2:4], self.padding)]
        return (shape[0], shape[1], *grow, shape[4])

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "padding": self.padding}


def torch_dense(units: int, fan_in: int, name: str) -> keras.layers.Dense:
    """A ``Dense`` initialised as PyTorch's ``Linear``: kernel and bias uniform in +-1 / sqrt(fan_in)."""
    return keras.layers.Dense(units, name=name, **_init(False, fan_in))


def _init(xavier: bool, fan_in: int) -> dict:
    """Kernel and bias initialisers: Xavier-uniform with zero bias, or PyTorch's default for a given fan-in."""
    if xavier:
        return {"kernel_initializer": "glorot_uniform", "bias_initializer": "zeros"}
    bound = 1.0 / math.sqrt(fan_in)
    return {
        "kernel_initializer": keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        "bias_initializer": keras.initializers.RandomUniform(-bound, bound),
    }


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """Batch norm over the last (channel) axis with PyTorch's momentum and epsilon."""
    return keras.layers.BatchNormalization(name=name, **BN)


def prelu(shared_axes: Sequence[int], name: str) -> keras.layers.PReLU:
    """PReLU with one slope per channel, initialised to 0.25 as PyTorch's."""
    return keras.layers.PReLU(keras.initializers.Constant(0.25), shared_axes=list(shared_axes), name=name)


def layer_norm(name: str) -> keras.layers.LayerNormalization:
    """Layer norm over the last axis with PyTorch's epsilon."""
    return keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=name)


def _conv2d(x, filters: int, kernel: int, stride: int, name: str, xavier: bool, bias: bool = False):
    """A k x k convolution padded as PyTorch's (k // 2 each side) on [B, T, H, W, C] per frame, or on [B, H, W, C]."""
    per_frame = len(x.shape) == 5
    pad = kernel // 2
    if stride > 1 and pad:
        if per_frame:
            x = keras.layers.ZeroPadding3D((0, pad, pad), name=f"{name}_pad")(x)
        else:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    padding = "same" if stride == 1 else "valid"
    conv = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=bias,
        name=f"{name}_2d" if per_frame else name,
        **_init(xavier, int(x.shape[-1]) * kernel * kernel),
    )
    return keras.layers.TimeDistributed(conv, name=name)(x) if per_frame else conv(x)


def bottleneck_ir(x, filters: int, stride: int, dim_match: bool, name: str, xavier: bool):
    """``BottleNeck_IR``: BN, 3x3 conv, BN, PReLU, 3x3 conv (``stride``), BN, plus the identity or a 1x1 conv + BN."""
    axes = list(range(1, len(x.shape) - 1))
    y = batch_norm(f"{name}_res_layer_0")(x)
    y = _conv2d(y, filters, 3, 1, f"{name}_res_layer_1", xavier)
    y = batch_norm(f"{name}_res_layer_2")(y)
    y = prelu(axes, f"{name}_res_layer_3")(y)
    y = _conv2d(y, filters, 3, stride, f"{name}_res_layer_4", xavier)
    y = batch_norm(f"{name}_res_layer_5")(y)
    shortcut = x
    if not dim_match:
        shortcut = _conv2d(x, filters, 1, stride, f"{name}_shortcut_layer_0", xavier)
        shortcut = batch_norm(f"{name}_shortcut_layer_1")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def visual_front(video, units: int = 512, prefix: str = "v_front"):
    """``Visual_front``: clip [B, T, H, W, C] -> [B, T, units] (3D stem, IR-ResNet-18 per frame, BN, dropout 0.4,
    flatten C x H x W, Linear, LayerNorm); 15,388,800 parameters for gray 112 px input and ``units`` 512."""
    stem = f"{prefix}_frontend"
    x = keras.layers.ZeroPadding3D((2, 3, 3), name=f"{stem}_0_pad")(video)
    channels = int(video.shape[-1])
    x = keras.layers.Conv3D(
        64, (5, 7, 7), strides=(1, 2, 2), use_bias=False, name=f"{stem}_0", **_init(False, channels * 5 * 7 * 7)
    )(x)
    x = batch_norm(f"{stem}_1")(x)
    x = prelu((1, 2, 3), f"{stem}_2")(x)
    x = MaxPoolPadding((1, 1), name=f"{stem}_3_pad")(x)
    # MaxPool3d (1, 3, 3) / (1, 2, 2) is a per-frame 2D pool (TensorFlow's CPU MaxPool3D lacks float16)
    x = keras.layers.TimeDistributed(keras.layers.MaxPooling2D(3, strides=2), name=f"{stem}_3")(x)
    resnet = f"{prefix}_resnet"
    for stage, filters in enumerate(STAGES):
        for block in range(2):
            stride = 2 if stage and not block else 1
            x = bottleneck_ir(x, filters, stride, block > 0, f"{resnet}_layer{stage + 1}_{block}", xavier=True)
    out = f"{resnet}_out_layer"
    x = batch_norm(f"{out}_0")(x)
    x = keras.layers.Dropout(0.4, name=f"{out}_1")(x)
    x = keras.layers.Permute((1, 4, 2, 3), name=f"{out}_2_chw")(x)
    x = keras.layers.TimeDistributed(keras.layers.Flatten(), name=f"{out}_2")(x)
    x = keras.layers.Dense(units, name=f"{out}_3", **_init(True, int(x.shape[-1])))(x)
    return layer_norm(f"{out}_4")(x)


def audio_front(audio, units: int = 512, prefix: str = "a_front"):
    """``Audio_front``: aligned mel [B, T, 4, F] -> [B, T, units]: the authors' [1, F, 4T] spectrogram through two
    strided 3x3 convs, an IR block, BN, dropout 0.4, flatten C x F/4, Linear, LayerNorm (4,102,528 parameters for
    80 mel bins and ``units`` 512)."""
    steps, k, mels = audio.shape[1], audio.shape[2], audio.shape[3]
    if k != 4:
        raise ValueError(f"the authors' audio front takes 4 mel frames per video frame (10 ms hop at 25 fps), got {k}")
    x = keras.layers.Reshape((-1 if steps is None else steps * k, mels), name=f"{prefix}_input_time")(audio)
    x = keras.layers.Permute((2, 1), name=f"{prefix}_input_freq_time")(x)
    x = keras.layers.Reshape((mels, -1 if steps is None else steps * k, 1), name=f"{prefix}_input")(x)
    stem = f"{prefix}_frontend"
    for i, filters in enumerate((128, 256)):
        x = _conv2d(x, filters, 3, 2, f"{stem}_{3 * i}", xavier=False, bias=True)
        x = batch_norm(f"{stem}_{3 * i + 1}")(x)
        x = prelu((1, 2), f"{stem}_{3 * i + 2}")(x)
    block = f"{prefix}_Res_block"
    x = bottleneck_ir(x, 256, 1, True, f"{block}_0", xavier=False)
    x = batch_norm(f"{block}_1")(x)
    x = keras.layers.Dropout(0.4, name=f"{block}_2")(x)
    x = keras.layers.Permute((2, 3, 1), name=f"{block}_2_tcf")(x)  # [B, F', T, C] -> [B, T, C, F']
    x = keras.layers.Reshape((-1 if steps is None else steps, x.shape[2] * x.shape[3]), name=f"{block}_2_flat")(x)
    x = torch_dense(units, int(x.shape[-1]), f"{prefix}_Linear_0")(x)
    return layer_norm(f"{prefix}_Linear_1")(x)


class TemporalBlock:
    """``MultibranchTemporalBlock`` (PReLU, no depthwise split) as layers built once and callable on several paths.

    Two sets of one branch per kernel (conv with bias, batch norm, symmetric chomp, PReLU) with dropout after each
    concatenated set, the 1x1 ``downsample`` conv whenever c_in // len(kernels) != width, and a final PReLU.
    """

    def __init__(
        self,
        c_in: int,
        width: int,
        dilation: int,
        name: str,
        dropout: float = 0.2,
        kernels: Sequence[int] = KERNELS,
    ):
        if width % len(kernels):
            raise ValueError(f"MS-TCN width {width} must divide by the {len(kernels)} kernels {tuple(kernels)}")
        self.sets = []
        branch = width // len(kernels)
        for part, inputs in enumerate((c_in, width)):
            branches = []
            for i, k in enumerate(kernels):
                tag = f"{name}_cbcr{part}_{i}"
                pad = (k - 1) * dilation
                conv = keras.layers.Conv1D(
                    branch, k, dilation_rate=dilation, name=f"{tag}_conv", **_init(False, inputs * k)
                )
                branches.append(
                    (
                        keras.layers.ZeroPadding1D(pad, name=f"{tag}_conv_pad"),
                        conv,
                        batch_norm(f"{tag}_batchnorm"),
                        keras.layers.Cropping1D(pad // 2, name=f"{tag}_chomp"),
                        prelu((1,), f"{tag}_non_lin"),
                    )
                )
            concat = keras.layers.Concatenate(name=f"{name}_cat{part}")
            self.sets.append((branches, concat, keras.layers.Dropout(dropout, name=f"{name}_dropout{part}")))
        self.downsample = None
        if c_in // len(kernels) != width:
            self.downsample = keras.layers.Conv1D(width, 1, name=f"{name}_downsample", **_init(False, c_in))
        self.add = keras.layers.Add(name=f"{name}_add")
        self.relu_final = prelu((1,), f"{name}_relu_final")

    def __call__(self, x):
        """[B, T, c_in] -> [B, T, width]."""
        y = x
        for branches, concat, dropout in self.sets:
            outputs = []
            for layers in branches:
                z = y
                for layer in layers:
                    z = layer(z)
                outputs.append(z)
            y = dropout(concat(outputs))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu_final(self.add([y, shortcut]))


def mstcn_blocks(c_in: int, prefix: str = "tcn_tcn_mb_ms_tcn", dropout: float = 0.2) -> list[TemporalBlock]:
    """The four blocks of ``MultibranchTemporalConvNet`` (768 wide, dilations 1, 2, 4, 8), named ``layer1..4``."""
    width = BRANCH * len(KERNELS)
    return [
        TemporalBlock(c_in if i == 0 else width, width, d, f"{prefix}_layer{i + 1}", dropout)
        for i, d in enumerate(DILATIONS)
    ]
