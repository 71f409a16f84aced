"""How uint8 ROI frames become a VGGFace backbone's input, inside the batched graph: resize, channel order, means.

Modes:

* ``v1`` / ``v2``: keras-vggface ``utils.preprocess_input`` versions 1 (VGG16) and 2 (ResNet50, SENet50): RGB ->
  BGR, minus the version's BGR means. The resize to 224 is OpenCV's, chosen as
  :func:`pipeline.backbones.pixels.resize` chooses it. Enlarging (the stored 96 and 112 pixel crops):
  INTER_LINEAR, computed in the graph in OpenCV's own integer arithmetic (11-bit weights, its shifts and
  rounding), so the frames equal ``cv2.resize``'s bit for bit. Shrinking on both sides: INTER_AREA, as two
  float32 weight matrices and rounding to whole values; exact for whole-number factors, otherwise a value
  that falls on a tie (x.5) may round the other way (1 grey level in about 2% of pixels for 256 -> 224).
* ``released``: what the released MP-LSTM code (arsm/MPLSTM, ``Library/CNNfeature_extractor.py``) does to
  each frame OpenCV decodes (BGR): ``cv2.resize(..., (224, 224), interpolation=cv2.INTER_AREA)``, then
  ``keras.applications.vgg16.preprocess_input`` (an RGB -> BGR flip, minus the ImageNet "caffe" means in
  B, G, R order). Applied to BGR frames, that flip turns them back to RGB, so the network sees R, G, B minus
  103.939, 116.779, 123.68. The resize runs on the CPU with OpenCV itself, so inputs equal the released
  code's bit for bit; the cast and means run in the graph.

``auto`` picks the architecture's own keras-vggface version.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.errors import ConfigError

AUTO = "auto"
INPUT_SIZE = 224
# keras-vggface utils.preprocess_input: channel means subtracted after the RGB -> BGR flip, in B, G, R order.
BGR_MEANS = {1: (93.5940, 104.7624, 129.1863), 2: (91.4953, 103.8827, 131.0912)}
IMAGENET_CAFFE_MEANS = (103.939, 116.779, 123.68)  # keras.applications "caffe" mode, B, G, R


@dataclass(frozen=True)
class Mode:
    """One preprocessing: flip RGB -> BGR or not, the means subtracted after it, and where the resize runs."""

    flip: bool
    means: tuple[float, float, float]
    cpu_area_resize: bool  # True: OpenCV INTER_AREA on the CPU (bit-exact with code that did so); False: in the graph


MODES = {
    "v1": Mode(True, BGR_MEANS[1], False),
    "v2": Mode(True, BGR_MEANS[2], False),
    "released": Mode(False, IMAGENET_CAFFE_MEANS, True),
}
ARCH_MODE = {"vgg16": "v1", "resnet50": "v2", "senet50": "v2"}


def resolve_mode(mode: str | None, arch: str) -> str:
    """The concrete mode for ``mode`` ('auto' or None: the architecture's keras-vggface version)."""
    if mode in (None, AUTO):
        return ARCH_MODE[arch]
    if mode not in MODES:
        raise ConfigError(f"unknown preprocessing {mode!r}; choose one of {AUTO}, {', '.join(MODES)}")
    return mode


def area_matrix(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` float32 weights of OpenCV's INTER_AREA when shrinking.

    Each output averages the inputs it covers.
    """
    scale = src / dst
    weights = np.zeros((dst, src), np.float64)
    for out in range(dst):
        lo, hi = out * scale, min(src, (out + 1) * scale)
        for pixel in range(int(np.floor(lo)), int(np.ceil(hi))):
            weights[out, pixel] = (min(hi, pixel + 1) - max(lo, pixel)) / scale
    return weights.astype(np.float32)


@dataclass(frozen=True)
class LinearTaps:
    """OpenCV's INTER_LINEAR along one axis, as its uint8 code computes it: two source indices per output and
    their weights in 11-bit fixed point (``saturate_cast<short>(w * 2048)``)."""

    first: np.ndarray  # int32 [dst]
    second: np.ndarray  # int32 [dst]
    weights: np.ndarray  # int32 [dst, 2]


def linear_taps(src: int, dst: int, clamp: bool) -> LinearTaps:
    """The taps of one axis; ``clamp`` as OpenCV does across a row (weight 0 beyond an edge), not down a column
    (where it keeps the fraction and repeats the edge row)."""
    scale = 1.0 / (dst / src)
    first, second = np.zeros(dst, np.int32), np.zeros(dst, np.int32)
    weights = np.zeros((dst, 2), np.int32)
    for out in range(dst):
        position = np.float32((out + 0.5) * scale - 0.5)
        left = int(np.floor(position))
        frac = np.float32(position - np.float32(left))
        if clamp and left < 0:
            left, frac = 0, np.float32(0)
        if clamp and left >= src - 1:
            left, frac = src - 1, np.float32(0)
        weights[out] = np.rint(np.float32(np.float32(1) - frac) * 2048), np.rint(frac * np.float32(2048))
        first[out], second[out] = min(max(left, 0), src - 1), min(max(left + 1, 0), src - 1)
    return LinearTaps(first, second, weights)


def resize_plan(height: int, width: int, size: int = INPUT_SIZE) -> tuple[str, tuple] | None:
    """How the graph resizes ``height`` x ``width`` frames to ``size``: None, ``("area", (rows, cols))`` float
    matrices, or ``("linear", (row_taps, col_taps))``; the kernel is chosen as
    :func:`pipeline.backbones.pixels.resize` chooses it (area when both sides shrink, bilinear otherwise)."""
    if (height, width) == (size, size):
        return None
    if min(height, width) > size:
        return "area", (area_matrix(height, size), area_matrix(width, size))
    return "linear", (linear_taps(height, size, clamp=False), linear_taps(width, size, clamp=True))


def area_resize(frames: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """``[N,H,W,C]`` uint8 frames resized with ``cv2.INTER_AREA`` to ``size`` x ``size``.

    Frame by frame, as released.
    """
    if frames.shape[1:3] == (size, size):
        return frames
    out = np.empty((len(frames), size, size) + frames.shape[3:], np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=cv2.INTER_AREA).reshape(
            out.shape[1:]
        )
    return out


def cpu_inputs(frames: np.ndarray, mode: str, size: int = INPUT_SIZE) -> np.ndarray:
    """The same preprocessing in NumPy/OpenCV, frame by frame on the CPU.

    This is the reference the graph is checked against.
    """
    from pipeline.backbones.pixels import as_rgb, resize

    rgb = as_rgb(frames)
    resized = area_resize(rgb, size) if MODES[mode].cpu_area_resize else resize(rgb, size)
    return subtract_means(resized, mode)


def subtract_means(frames: np.ndarray, mode: str) -> np.ndarray:
    """Resized RGB frames as float32, flipped to BGR if the mode does, minus the mode's means."""
    out = np.asarray(frames, dtype=np.float32)
    if MODES[mode].flip:
        out = out[..., ::-1]
    return out - np.asarray(MODES[mode].means, np.float32)
