"""A torchvision-style ResNet-18 and its lip-reading video variant (the memory model's ``--front resnet18``).

ResNet-18 (He et al. 2016) as torchvision defines it: a 7x7/2 stem, 3x3/2 max pool, four stages of two basic
blocks (64, 128, 256, 512 channels, stride 2 from the second stage, 1x1 projection shortcuts), global average
pool; without the classifier that is 11,176,512 trainable parameters for 3-channel input. The video variant
(after Stafylakis and Tzimiropoulos 2017) replaces the 2D stem by a 3D one (64 filters of 5x7x7, stride 1x2x2,
then a 1x3x3/1x2x2 max pool) over the clip and runs the four stages per frame: [T, 512]. It is not Kim et al.'s
front (ReLU basic blocks and a global pool, where theirs is an IR-ResNet-18 with a flatten and a linear layer:
``pipeline.models.mvm.modules``); Keras ``same`` padding is used throughout.
"""

from __future__ import annotations

from typing import Sequence

import keras

STAGES = (64, 128, 256, 512)


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
    """Clip [T, H, W, C] -> 3D stem -> ResNet-18 stages per frame -> [T, 512]."""
    x = keras.layers.Conv3D(64, (5, 7, 7), strides=(1, 2, 2), padding="same", use_bias=False, name=f"{name}_stem3d")(
        video
    )
    x = keras.layers.PReLU(shared_axes=[1, 2, 3], name=f"{name}_stem_prelu")(_bn(x, f"{name}_stem_bn"))
    x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name=f"{name}_stem_pool")(x)
    stages = resnet18_stages(x.shape[2:], f"{name}_resnet18")
    return keras.layers.TimeDistributed(stages, name=f"{name}_per_frame")(x)
