"""The lip-reading front- and back-ends of the papers: a ResNet-18 visual front-end and the multi-scale TCN back-end.

ResNet-18 (He et al. 2016) as torchvision defines it: a 7x7/2 stem, 3x3/2 max pool, four stages of two basic
blocks (64, 128, 256, 512 channels, stride 2 from the second stage, 1x1 projection shortcuts), global average
pool; without the classifier that is 11,176,512 trainable parameters for 3-channel input. The lip-reading
variant (Stafylakis and Tzimiropoulos 2017, used by Kim et al.) replaces the 2D stem by a 3D one (64 filters of
5x7x7, stride 1x2x2, then a 1x3x3/1x2x2 max pool) over the clip and runs the four stages per frame: [T, 512].
The MS-TCN (Ma et al. 2021) is four multi-branch temporal blocks (kernels 3, 5, 7; dilations 1, 2, 4, 8), each
two sets of per-branch convolution + batch norm + PReLU with dropout, plus a residual connection.
"""

from __future__ import annotations

from typing import Sequence

import keras

STAGES = (64, 128, 256, 512)
TCN_KERNELS = (3, 5, 7)
TCN_DILATIONS = (1, 2, 4, 8)


def _bn(x, name: str):
    return keras.layers.BatchNormalization(epsilon=1e-5, name=name)(x)


def basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 convolutions with batch norm, a shortcut (1x1 projection when the shape changes), ReLU."""
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.Activation("relu", name=f"{name}_relu1")(_bn(y, f"{name}_bn1"))
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = _bn(y, f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_down")(x)
        shortcut = _bn(shortcut, f"{name}_down_bn")
    return keras.layers.Activation("relu", name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet18_stages(shape: Sequence[int], name: str = "resnet18_stages") -> keras.Model:
    """The four stages and the global pool of ResNet-18 on one frame's stem features [h, w, c] -> [512]."""
    image = keras.Input(shape=tuple(shape), name=f"{name}_in")
    x = image
    for s, filters in enumerate(STAGES):
        for b in range(2):
            x = basic_block(x, filters, 2 if (s and not b) else 1, f"{name}_l{s + 1}b{b}")
    return keras.Model(image, keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x), name=name)


def resnet18(shape: Sequence[int] = (224, 224, 3), name: str = "resnet18") -> keras.Model:
    """The 2D ResNet-18 trunk without classifier: image [h, w, c] -> [512] (11,176,512 parameters for c = 3)."""
    image = keras.Input(shape=tuple(shape), name=f"{name}_image")
    x = keras.layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name=f"{name}_stem")(image)
    x = keras.layers.Activation("relu", name=f"{name}_stem_relu")(_bn(x, f"{name}_stem_bn"))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_stem_pool")(x)
    return keras.Model(image, resnet18_stages(x.shape[1:], f"{name}_stages")(x), name=name)


def resnet18_video_front(video, name: str = "visual_front"):
    """Clip [T, H, W, C] -> 3D stem -> ResNet-18 stages per frame -> [T, 512] (Kim et al.'s visual front-end)."""
    x = keras.layers.Conv3D(64, (5, 7, 7), strides=(1, 2, 2), padding="same", use_bias=False, name=f"{name}_stem3d")(
        video
    )
    x = keras.layers.PReLU(shared_axes=[1, 2, 3], name=f"{name}_stem_prelu")(_bn(x, f"{name}_stem_bn"))
    x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name=f"{name}_stem_pool")(x)
    stages = resnet18_stages(x.shape[2:], f"{name}_resnet18")
    return keras.layers.TimeDistributed(stages, name=f"{name}_per_frame")(x)


def tcn_block(x, width: int, dilation: int, dropout: float, name: str, kernels: Sequence[int] = TCN_KERNELS):
    """One multi-branch temporal block: [T, c] -> [T, width] (``width`` split evenly over the kernels)."""
    if width % len(kernels):
        raise ValueError(f"MS-TCN width {width} must divide by the {len(kernels)} kernels {tuple(kernels)}")
    branch = width // len(kernels)
    y = x
    for part in range(2):
        outs = []
        for k in kernels:
            tag = f"{name}_s{part}_k{k}"
            z = keras.layers.Conv1D(branch, k, dilation_rate=dilation, padding="same", name=tag)(y)
            outs.append(keras.layers.PReLU(shared_axes=[1], name=f"{tag}_prelu")(_bn(z, f"{tag}_bn")))
        y = keras.layers.Dropout(dropout, name=f"{name}_s{part}_drop")(
            keras.layers.Concatenate(name=f"{name}_s{part}_cat")(outs)
        )
    shortcut = x if x.shape[-1] == width else keras.layers.Conv1D(width, 1, name=f"{name}_down")(x)
    return keras.layers.PReLU(shared_axes=[1], name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def tcn_block_parameters(c_in: int, width: int, kernels: Sequence[int] = TCN_KERNELS) -> int:
    """Trainable parameters of :func:`tcn_block`: per branch b = width / len(kernels) and set, conv c*b*k + b, batch
    norm 2b, PReLU b; a 1x1 shortcut c_in*width + width when c_in != width; the final PReLU width."""
    branch = width // len(kernels)
    sets = sum(c_in * branch * k + 4 * branch for k in kernels) + sum(width * branch * k + 4 * branch for k in kernels)
    return sets + (c_in * width + width if c_in != width else 0) + width
