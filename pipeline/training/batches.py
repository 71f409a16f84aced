"""Training batches of ROI pixel clips with the LRW recipe of Kim, Yeo and Ro (AAAI 2022), and the matching eval view.

Clips arrive as float ``[N, T, H, W, C]`` in [0, 1] (``prepare`` cut the fixed box, for LRW with a 5 px margin
around the 136 px mouth box, and converted to grayscale when asked). Recipe ``lrw``, the authors': the box (the
ROI side minus the margins, 136 for LRW) shifted by one uniform integer offset in [-5, 5] per axis for the whole
clip, resized to ``size`` (112), mirrored for half the clips, normalised with mean 0.4136 and std 0.1700, a
56x56 patch and 3 consecutive frames erased, then mixup with Beta(0.4, 0.4) on clips, audio and labels alike.
Recipe ``crop``, the earlier variant: a ``size`` crop shifted by up to 5 px, without resizing or erasing.
Evaluation sees the centred box, resized and normalised the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from pipeline.errors import ConfigError
from pipeline.training.augment import (
    LRW_MEAN,
    LRW_SIZE,
    LRW_STD,
    MAX_SHIFT,
    MIXUP_ALPHA,
    POLICIES,
    centre_box,
    erase,
    hflip,
    mask_audio,
    mixup,
    resize,
    shift_crop,
)

AUDIO = "audio"  # the input key of the frame-aligned audio (the memory model's training network)


@dataclass(frozen=True)
class Recipe:
    """Which augmentation, the side of the box cut from the stored ROI, the side the model sees."""

    name: str
    box: int
    size: int
    freq_mask: int = 0  # the training audio's frequency mask (mel bins), 0: none
    time_mask: int = 0  # the training audio's time mask (audio frames), 0: none

    @property
    def erasing(self) -> bool:
        """Whether training erases a patch and frames (the authors' recipe)."""
        return self.name == "lrw"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the audio masks only when set, so a run without them records what it did before."""
        return {key: value for key, value in asdict(self).items() if value or key not in ("freq_mask", "time_mask")}


def make_recipe(
    name: str, roi_side: int, size: int | None = None, max_shift: int = MAX_SHIFT, audio_masks: tuple[int, int] = (0, 0)
) -> Recipe:
    """The recipe ``name`` for stored ROI frames of side ``roi_side``; ``size`` is ``--crop`` (None: its default);
    ``audio_masks`` are the training audio's frequency and time masks (``--freq-mask``, ``--time-mask``)."""
    if name not in POLICIES:
        raise ConfigError(f"unknown augmentation policy {name!r}; choose from {POLICIES}")
    box = roi_side - 2 * max_shift
    if name == "lrw":
        side = size or min(LRW_SIZE, box)
    else:
        side = size or box
        box = side
    if box < 1 or box > roi_side or side < 1:
        raise ConfigError(
            f"--augment {name} --crop {size}: the ROI frames are {roi_side} px, too small for a {box} px box shifted "
            f"by +-{max_shift}"
        )
    return Recipe(name, box, side, *audio_masks)


def is_clip(array: np.ndarray) -> bool:
    """Whether an input array holds pixel clips ``[N, T, H, W, C]``."""
    return array.ndim == 5


def _resized(clips: np.ndarray, size: int) -> np.ndarray:
    """Every frame of ``[N, T, h, w, C]`` resized to ``size`` x ``size``."""
    if clips.shape[2:4] == (size, size):
        return clips
    n, t = clips.shape[:2]
    return resize(clips.reshape(n * t, *clips.shape[2:]), size).reshape(n, t, size, size, clips.shape[-1])


def eval_view(clips: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The centred box of every clip, resized and normalised: what the model sees at test."""
    top, left, height, width = centre_box(clips[0], recipe.box)
    if top < 0 or left < 0:
        raise ConfigError(f"--crop {recipe.box} is larger than the ROI frames {clips.shape[2:4]}")
    return (_resized(clips[:, :, top : top + height, left : left + width], recipe.size) - LRW_MEAN) / LRW_STD


def eval_inputs(x: Any, crop: Recipe | int) -> Any:
    """``eval_view`` applied to every clip array of a list or dict of model inputs (an int: a plain ``crop`` recipe)."""
    recipe = Recipe("crop", crop, crop) if isinstance(crop, int) else crop
    if isinstance(x, dict):
        return {k: eval_view(v, recipe) if is_clip(v) else v for k, v in x.items()}
    return [eval_view(v, recipe) if is_clip(v) else v for v in x]


def _map(values: Any, fn: Any) -> Any:
    """``fn`` applied to every array of a dict, list or tuple of arrays, or to one array."""
    if isinstance(values, dict):
        return {k: fn(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [fn(v) for v in values]
    return fn(values)


def augment_clips(
    clips: np.ndarray, flips: np.ndarray, rng: np.random.Generator, recipe: Recipe, max_shift: int = MAX_SHIFT
) -> np.ndarray:
    """Clips ``[N, T, H, W, C]``: the recipe's box shifted per clip, resized, ``flips`` mirrored, normalised.

    Erased for ``lrw``.
    """
    box = centre_box(clips[0], recipe.box)
    out = _resized(np.stack([shift_crop(c, box, rng, max_shift) for c in clips]), recipe.size)
    out[flips] = hflip(out[flips], batched=True)
    out = (out - LRW_MEAN) / LRW_STD
    if recipe.erasing:
        for clip in out:
            erase(clip, rng)
    return out


def augment_batch(
    x: Any, y: Any, rng: np.random.Generator, recipe: Recipe, max_shift: int = MAX_SHIFT, alpha: float = MIXUP_ALPHA
) -> tuple[Any, Any]:
    """The recipe on one batch: every clip array's box shifted, resized, half the clips mirrored, normalised (and
    erased, recipe ``lrw``), then every input and label array mixed with the same partners and weights."""
    n = len(next(iter(x.values())) if isinstance(x, dict) else x[0])
    flips = rng.random(n) < 0.5
    x = _map(x, lambda array: augment_clips(array, flips, rng, recipe, max_shift) if is_clip(array) else array)
    if isinstance(x, dict) and AUDIO in x and (recipe.freq_mask or recipe.time_mask):
        x[AUDIO] = mask_audio(x[AUDIO], rng, recipe.freq_mask, recipe.time_mask)
    partner_state = np.random.default_rng(rng.integers(1 << 32)).bit_generator.state
    mixed_x = _mix_all(x, partner_state, alpha)
    return (tuple(mixed_x) if isinstance(mixed_x, list) else mixed_x), _mix_all(
        y, partner_state, alpha
    )  # tf.data wants tuples, not lists


class EpochBatches(keras.utils.PyDataset):
    """Mini-batches over ``n`` samples in a fresh seeded order each epoch.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``: its rows and the generator handed to
    ``batch`` (augmentation draws) come from them, so batches are the same whichever thread builds
    them and a resumed run (``fit`` tells the epoch through ``EpochSync``) sees the same batches as an
    uninterrupted one. ``workers`` > 1 builds batches in that many background threads, at most
    ``prefetch`` batches ahead.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, workers: int = 1, prefetch: int = 10
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=prefetch)
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch = 0
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order and draws the next batches follow."""
        self.epoch = epoch

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def order(self) -> np.ndarray:
        """This epoch's sample order: a permutation seeded by (seed, epoch), or the stored order without ``shuffle``."""
        cached = self._order
        if cached is None or cached[0] != self.epoch:
            rows = (
                np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
                if self.shuffle
                else np.arange(self.n)
            )
            cached = self._order = (self.epoch, rows)
        return cached[1]

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        rows = self.order()[index * self.batch_size : (index + 1) * self.batch_size]
        return self.batch(rows, np.random.default_rng([self.seed, self.epoch, index]))

    def batch(self, rows: np.ndarray, rng: np.random.Generator) -> Any:
        """The batch of samples ``rows``; ``rng`` for any random draws."""
        raise NotImplementedError


class ArrayBatches(EpochBatches):
    """In-memory ``(x, y)`` (arrays, or lists or dicts of aligned arrays) in a fresh seeded order each epoch.

    Keras's own shuffle of arrays repeats one order every epoch once TensorFlow's seed is set (``fit`` sets it once;
    ``EpochSeed`` says why not every epoch).
    """

    def __init__(self, x: Any, y: Any, batch_size: int, seed: int = 0) -> None:
        first = next(iter(y.values())) if isinstance(y, dict) else y
        super().__init__(len(first), batch_size, seed)
        self.x, self.y = x, y

    def batch(self, rows: np.ndarray, rng: np.random.Generator) -> Any:
        x, y = (_map(values, lambda array: array[rows]) for values in (self.x, self.y))
        return tuple(v if not isinstance(v, list) else tuple(v) for v in (x, y))  # tf.data wants tuples, not lists


class EpochSync(keras.callbacks.Callback):
    """Tells a batch sequence which epoch begins, so that a resumed fit follows the same orders and draws."""

    def __init__(self, batches: EpochBatches | AugmentedClips | FreshMovingDigits) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.set_epoch(epoch)


class AugmentedClips(keras.utils.PyDataset):
    """Shuffled, augmented mini-batches of in-memory ``(x, y)``; ``x``/``y`` are lists or dicts of aligned arrays.

    One generator per epoch, drawn in sequence within it (orders, crops, flips, erasing, mixup): batches are built
    by one worker in order. Epoch 0 draws from ``seed``, epoch ``e`` from ``(seed, e)``, so a resumed fit told its
    epoch (``set_epoch``, through ``EpochSync``) draws what the uninterrupted one drew; streamed training
    (``pipeline.training.stream``) draws per batch instead.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int,
        crop: Recipe | int,
        seed: int = 0,
        max_shift: int = MAX_SHIFT,
        alpha: float = MIXUP_ALPHA,
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.recipe = Recipe("crop", crop, crop) if isinstance(crop, int) else crop
        self.max_shift, self.alpha, self.seed = max_shift, alpha, seed
        self.n = len(next(iter(x.values())) if isinstance(x, dict) else x[0])
        self.set_epoch(0)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``'s draws: a fresh generator from the seed and the epoch, and that epoch's order."""
        self.epoch = epoch
        self.rng = np.random.default_rng(self.seed if epoch == 0 else [self.seed, epoch])
        self.order = self.rng.permutation(self.n)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def _clips(self, clips: np.ndarray, flips: np.ndarray) -> np.ndarray:
        return augment_clips(clips, flips, self.rng, self.recipe, self.max_shift)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return augment_batch(
            _map(self.x, lambda v: v[rows]),
            _map(self.y, lambda v: v[rows]),
            self.rng,
            self.recipe,
            self.max_shift,
            self.alpha,
        )


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


class FreshMovingDigits(keras.utils.PyDataset):
    """Endless pretraining batches: ``steps`` batches an epoch, each of ``batch_size`` new two-digit clips
    (``pipeline.recipes.moving_digits.fresh_clips``, the authors' motion model), flattened to ``side * side``.

    Batch ``i`` of epoch ``e`` is drawn from ``(seed, e, i)``, so a resumed fit (told its epoch by ``set_epoch``)
    sees what an uninterrupted one saw. ``teacher``: the model also takes the true future frames as an input.
    """

    def __init__(
        self, batch_size: int, steps: int, timesteps: int, future: int, side: int, seed: int = 0, digits: int = 2
    ) -> None:
        super().__init__()
        self.batch_size, self.steps, self.timesteps, self.future = batch_size, steps, timesteps, future
        self.side, self.seed, self.digits, self.epoch, self.teacher = side, seed, digits, 0, False

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose draws the next batches follow."""
        self.epoch = epoch

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"fresh {self.digits}-digit {self.side}x{self.side} clips, {self.batch_size} a batch, "
            f"{self.steps} batches an epoch"
        )

    def __getitem__(self, index: int):
        """``(inputs, targets)`` of batch ``index``."""
        from pipeline.models.composite import composite_targets
        from pipeline.recipes.moving_digits import fresh_clips

        rng = np.random.default_rng((self.seed, self.epoch, index))
        frames = self.timesteps + self.future
        clips = fresh_clips(self.batch_size, frames, self.side, self.digits, rng)
        clips = clips.reshape(self.batch_size, frames, self.side * self.side)
        seen, future = clips[:, : self.timesteps], clips[:, self.timesteps :]
        x = (seen, future) if self.teacher else seen
        return x, composite_targets(seen, future if self.future else None)
