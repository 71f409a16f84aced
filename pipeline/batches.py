"""Training batches of ROI pixel clips with the LRW recipe (Kim, Yeo, Ro 2022): shifted crop, flip, mixup.

Clips arrive as float ``[N, T, H, W, C]`` in [0, 1] (``prepare`` already cut the fixed box and
converted to grayscale when asked). Training crops ``crop`` x ``crop`` shifted by up to
``max_shift`` pixels, mirrors half the clips, normalises with the LRW mean and std, and mixes
samples and labels with Beta(alpha, alpha); evaluation takes the centred crop, normalised alike.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from pipeline.augment import LRW_MEAN, LRW_STD, MAX_SHIFT, MIXUP_ALPHA, centre_box, hflip, mixup, shift_crop


def is_clip(array: np.ndarray) -> bool:
    """Whether an input array holds pixel clips ``[N, T, H, W, C]``."""
    return array.ndim == 5


def eval_view(clips: np.ndarray, crop: int) -> np.ndarray:
    """The centred ``crop`` x ``crop`` of every clip, normalised: what the model sees at test."""
    top, left, height, width = centre_box(clips[0], crop)
    if top < 0 or left < 0:
        raise ValueError(f"--crop {crop} is larger than the ROI frames {clips.shape[2:4]}")
    return (clips[:, :, top : top + height, left : left + width] - LRW_MEAN) / LRW_STD


def eval_inputs(x: Any, crop: int) -> Any:
    """``eval_view`` applied to every clip array of a list or dict of model inputs."""
    if isinstance(x, dict):
        return {k: eval_view(v, crop) if is_clip(v) else v for k, v in x.items()}
    return [eval_view(v, crop) if is_clip(v) else v for v in x]


class AugmentedClips(keras.utils.PyDataset):
    """Shuffled, augmented mini-batches of ``(x, y)``; ``x``/``y`` are lists or dicts of aligned arrays."""

    def __init__(self, x: Any, y: Any, batch_size: int, crop: int, seed: int = 0, max_shift: int = MAX_SHIFT, alpha: float = MIXUP_ALPHA) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.crop = x, y, batch_size, crop
        self.max_shift, self.alpha = max_shift, alpha
        self.rng = np.random.default_rng(seed)
        self.n = len(next(iter(x.values())) if isinstance(x, dict) else x[0])
        self.order = self.rng.permutation(self.n)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(self.n)

    def _clips(self, clips: np.ndarray, flips: np.ndarray) -> np.ndarray:
        box = centre_box(clips[0], self.crop)
        out = np.stack([shift_crop(c, box, self.rng, self.max_shift) for c in clips])
        out[flips] = hflip(out[flips], batched=True)
        return (out - LRW_MEAN) / LRW_STD

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        flips = self.rng.random(len(rows)) < 0.5

        def pick(array: np.ndarray) -> np.ndarray:
            return self._clips(array[rows], flips) if is_clip(array) else array[rows]

        x = {k: pick(v) for k, v in self.x.items()} if isinstance(self.x, dict) else [pick(v) for v in self.x]
        y = {k: v[rows] for k, v in self.y.items()} if isinstance(self.y, dict) else self.y[rows]
        lam_rng = np.random.default_rng(self.rng.integers(1 << 32))
        partner_state = lam_rng.bit_generator.state
        mixed_x = _mix_all(x, partner_state, self.alpha)
        mixed_y = _mix_all(y, partner_state, self.alpha)
        return (tuple(mixed_x) if isinstance(mixed_x, list) else mixed_x), mixed_y  # tf.data wants tuples, not lists


def _mix_all(values: Any, state: dict, alpha: float) -> Any:
    """Mixup every array with the same partners and weights (a generator reset to ``state`` for each)."""
    def mix(array: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        return mixup(array, np.zeros((len(array), 1), np.float32), rng, alpha)[0]

    if isinstance(values, dict):
        return {k: mix(v) for k, v in values.items()}
    if isinstance(values, list):
        return [mix(v) for v in values]
    return mix(values)
