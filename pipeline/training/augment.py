"""The LRW training recipe of Kim, Yeo and Ro (AAAI 2022) as pure numpy functions on uint8 clips [T, H, W(, C)]."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.backbones.pixels import resize as resize_frames

LRW_MEAN = 0.4136
LRW_STD = 0.1700
LRW_SIZE = 112
MAX_SHIFT = 5
MIXUP_ALPHA = 0.4
POLICIES = ("lrw", "crop")  # Kim et al.'s policy; the earlier shifted crop without resizing or erasing
ERASE_FRAMES = 3  # consecutive frames erased per training clip
ERASE_OVERHANG = 10 / LRW_SIZE  # the patch may start this share of the side outside the frame (10 px of 112)
RGB_TO_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Box = tuple[int, int, int, int]


def centre_box(clip: np.ndarray, size: int) -> Box:
    """The ``size`` x ``size`` box (top, left, height, width) in the middle of the clip's frames."""
    height, width = clip.shape[1:3]
    return (height - size) // 2, (width - size) // 2, size, size


def shift_crop(clip: np.ndarray, box: Box, rng: np.random.Generator | None, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Crop the fixed ``box`` moved by one uniform integer shift in [-max_shift, max_shift] per axis for the whole clip.

    ``rng=None`` crops the box unshifted (evaluation); the shifted box is kept inside the frame.
    """
    top, left, height, width = box
    if rng is not None:
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        top = int(np.clip(top + dy, 0, clip.shape[1] - height))
        left = int(np.clip(left + dx, 0, clip.shape[2] - width))
    if top < 0 or left < 0 or top + height > clip.shape[1] or left + width > clip.shape[2]:
        raise ValueError(f"box {box} does not fit frames of shape {clip.shape[1:3]}")
    return clip[:, top : top + height, left : left + width]


def resize(clip: np.ndarray, size: int = LRW_SIZE) -> np.ndarray:
    """Resize every frame to ``size`` x ``size`` (bilinear, area when shrinking), keeping dtype and channels."""
    return resize_frames(clip, size)


def grayscale(clip: np.ndarray) -> np.ndarray:
    """RGB clip [T, H, W, 3] to luma [T, H, W] (ITU-R BT.601 weights); a [T, H, W] clip is returned unchanged."""
    if clip.ndim == 3:
        return clip
    gray = np.tensordot(clip.astype(np.float32), RGB_TO_GRAY, axes=([-1], [0]))
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def normalise(clip: np.ndarray, mean: float = LRW_MEAN, std: float = LRW_STD) -> np.ndarray:
    """uint8 pixels to float32 ``(x / 255 - mean) / std``."""
    return ((clip.astype(np.float32) / 255.0) - mean) / std


def hflip(clip: np.ndarray, batched: bool = False) -> np.ndarray:
    """Mirror left-right: the width axis is 2 of a clip [T, H, W(, C)], 3 of a batch [B, T, H, W(, C)]."""
    return np.flip(clip, axis=3 if batched else 2)


def mixup(
    clips: np.ndarray, onehot: np.ndarray, rng: np.random.Generator, alpha: float = MIXUP_ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """Mix each sample with a random partner, weight lambda ~ Beta(alpha, alpha) per sample; labels mix alike."""
    clips = np.asarray(clips, dtype=np.float32)
    onehot = np.asarray(onehot, dtype=np.float32)
    lam = rng.beta(alpha, alpha, size=len(clips)).astype(np.float32)
    partner = rng.permutation(len(clips))
    lam_x = lam.reshape((-1,) + (1,) * (clips.ndim - 1))
    lam_y = lam.reshape((-1,) + (1,) * (onehot.ndim - 1))
    return lam_x * clips + (1 - lam_x) * clips[partner], lam_y * onehot + (1 - lam_y) * onehot[partner]


def train_clip(clip: np.ndarray, box: Box, rng: np.random.Generator, size: int = LRW_SIZE) -> np.ndarray:
    """The training transform: shifted crop, resize, grayscale, random horizontal flip, normalise -> [T, size, size]."""
    out = grayscale(resize(shift_crop(clip, box, rng), size))
    if rng.random() < 0.5:
        out = hflip(out)
    return normalise(out)


def eval_clip(clip: np.ndarray, box: Box, size: int = LRW_SIZE) -> np.ndarray:
    """The evaluation transform: fixed crop, resize, grayscale, normalise -> [T, size, size]."""
    return normalise(grayscale(resize(shift_crop(clip, box, None), size)))


def erase(clip: np.ndarray, rng: np.random.Generator, frames: int = ERASE_FRAMES) -> np.ndarray:
    """Random erasing as Kim et al. do it, in place on a normalised clip [T, H, W(, C)]: one patch of half the side
    (56x56 of 112) at the same place in every frame, its corner drawn from [-10, 66] px (scaled to the side), and
    ``frames`` consecutive frames set to zero."""
    side = clip.shape[1]
    patch, over = side // 2, int(round(ERASE_OVERHANG * side))
    y, x = rng.integers(-over, side - patch + over + 1, size=2)
    clip[:, max(0, y) : max(0, y + patch), max(0, x) : max(0, x + patch)] = 0.0
    if len(clip) > frames:
        start = int(rng.integers(0, len(clip) - frames + 1))
        clip[start : start + frames] = 0.0
    return clip


def mask_axis(spec: np.ndarray, axis: int, most: int, rng: np.random.Generator) -> np.ndarray:
    """torchaudio's ``mask_along_axis`` on one spectrogram, in place: width ``value`` ~ U[0, most), start ``m`` ~
    U[0, size - value); the entries from int(m) to int(m) + int(value) (exclusive, truncated as ``.long()`` does)
    along ``axis`` set to zero."""
    value = rng.random() * most
    start = rng.random() * (spec.shape[axis] - value)
    first = int(start)
    index = np.arange(spec.shape[axis])
    hit = (index >= first) & (index < first + int(value))
    spec[(slice(None),) * axis + (hit,)] = 0.0
    return spec


def mask_audio(audio: np.ndarray, rng: np.random.Generator, freq: int, time: int) -> np.ndarray:
    """Kim et al.'s audio masking of a batch of frame-aligned mel clips ``[N, T, k, n_mels]`` (normalised): per clip
    one band of up to ``freq`` mel bins and one run of up to ``time`` audio frames (the T x k sub-frames) zeroed,
    as torchaudio's ``FrequencyMasking(freq)`` then ``TimeMasking(time)``."""
    out = np.array(audio, dtype=np.float32)
    for clip in out:
        frames = clip.reshape(-1, clip.shape[-1])  # a view: [T * k, n_mels]
        if freq:
            mask_axis(frames, 1, freq, rng)
        if time:
            mask_axis(frames, 0, time, rng)
    return out


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``[N, C]``."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def flipped_logit_sum(scores: np.ndarray, flipped: np.ndarray, logits: bool) -> np.ndarray:
    """Test-time augmentation on logits: softmax(z + z_flipped) from two logit or softmax outputs ``[N, C]``.

    Softmax outputs are turned back into logits by their log (a logit up to a per-row constant, which a softmax
    ignores), so a softmax model and a logit model combine alike.
    """
    if not logits:
        scores, flipped = (np.log(np.maximum(np.asarray(s, np.float64), 1e-30)) for s in (scores, flipped))
    return softmax(np.asarray(scores, np.float64) + np.asarray(flipped, np.float64)).astype(np.float32)


def tta_logits(model_fn: Callable[[np.ndarray], np.ndarray], clips: np.ndarray) -> np.ndarray:
    """Test-time augmentation: logits of the batch plus logits of its mirror image (a sum, not a mean)."""
    return np.asarray(model_fn(clips)) + np.asarray(model_fn(np.ascontiguousarray(hflip(clips, batched=True))))
