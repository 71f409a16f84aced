"""What a run's model is fed: its splits read into memory when they fit, else streamed from the shards.

``RunInputs`` indexes the splits a stage needs (no arrays read) and decides once between the two
modes, logging why. In memory, the stages read the splits as arrays (``experiment.load_inputs``);
streamed, ``RunInputs`` hands out ``ShardBatches`` sequences that read, pad and convert each batch on
the fly, shaped for the run's model, with the same transforms (the run's augmentation recipe for
training, the centred evaluation view for validation and test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest
from pipeline.models import registry
from pipeline.training.experiment import RunSpec
from pipeline.training.sequences import SequenceSet, frame_shapes, index_split

log = get_logger(__name__)

MODES = ("auto", "memory", "stream")
MEMORY_SHARE = 0.25  # auto mode reads splits into memory when their float32 arrays take at most this share of RAM


def memory_budget() -> int:
    """Bytes the auto mode lets in-memory arrays take: a quarter of physical memory."""
    return int(MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _gb(n: int) -> str:
    """A byte count for a log line (MB below a gigabyte)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def flip(x: list[np.ndarray]) -> list[np.ndarray]:
    """Every clip mirrored left to right (``[N, T, H, W, C]``, width is axis 3): test-time augmentation."""
    return [np.ascontiguousarray(v[:, :, :, ::-1]) for v in x]


class RunInputs:
    """The inputs of one run's splits (``splits``), in memory or streamed (``mode``: auto, memory, stream)."""

    def __init__(
        self,
        manifest: Manifest,
        spec: RunSpec,
        work: Path,
        splits: Sequence[str],
        mode: str = "auto",
        reason: str = "",
        *,
        audio: bool = True,
    ) -> None:
        """``audio``: read the frame-aligned audio when the run's model trains with it (scoring never needs it)."""
        if mode not in MODES:
            raise ConfigError(f"input mode must be one of {MODES}, got {mode!r}")
        self.spec, self.flatten, self.audio = spec, not spec.pixels, spec.audio and audio
        self.indexes = {
            split: index_split(manifest, spec.input_stage, split, spec.perspectives, work) for split in splits
        }
        self.shapes = frame_shapes(self.indexes[splits[0]], self.flatten, self.audio)
        self.mode = self._choose(mode, reason)

    def nbytes(self) -> int:
        """Float32 bytes the splits take as dense arrays (``timesteps`` frames each): what memory mode holds."""
        values = sum(int(np.prod(s)) for s in self.shapes[0]) + (int(np.prod(self.shapes[1])) if self.audio else 0)
        return 4 * self.spec.timesteps * values * sum(len(i) for i in self.indexes.values())

    def _choose(self, mode: str, reason: str) -> str:
        """The mode to use, with one log line saying which and why."""
        need, splits = self.nbytes(), "+".join(self.indexes)
        if mode == "auto":
            budget = memory_budget()
            mode = "memory" if need <= budget else "stream"
            why = f"{'within' if mode == 'memory' else 'over'} the in-memory budget of {_gb(budget)} (a quarter of RAM)"
        else:
            why = reason or f"--input {mode}"
        log.info(
            "%s: %s as float32 arrays, %s: %s",
            splits,
            _gb(need),
            why,
            "reading them into memory" if mode == "memory" else "streaming batches from the shards",
        )
        return mode

    def count(self, split: str) -> int:
        """Samples in ``split``."""
        return len(self.indexes[split])

    def labels(self, split: str) -> np.ndarray:
        """Class indices of ``split``'s samples, in their order."""
        return self.indexes[split].labels

    def speakers(self, split: str) -> list[str | None]:
        """Speakers of ``split``'s samples, in their order."""
        return self.indexes[split].speakers

    @property
    def recipe(self) -> Any:
        """The run's augmentation ``Recipe``, or None."""
        from pipeline.training.experiment import run_recipe

        return run_recipe(self.spec)

    def model_shapes(self) -> list[tuple[int, ...]]:
        """Per perspective, the input shape ``[T, ...]`` the model takes (the evaluation view of a recipe applied)."""
        recipe = self.recipe
        return [
            (self.spec.timesteps, recipe.size, recipe.size, s[-1]) if recipe else (self.spec.timesteps, *s)
            for s in self.shapes[0]
        ]

    @property
    def audio_shape(self) -> tuple[int, ...] | None:
        """``[T, ...]`` of the frame-aligned audio, when the run reads it."""
        return (self.spec.timesteps, *self.shapes[1]) if self.audio else None

    def _arrays(self, data: SequenceSet, fitting: bool, centred: bool) -> tuple[Any, Any]:
        """Inputs and one-hot targets of a batch.

        The inputs are a tuple, or what a two-network model's training network reads; ``centred`` applies the
        evaluation view (a run trained with ``--augment``).
        """
        from pipeline.training.batches import eval_inputs
        from pipeline.training.fit import one_hot

        y: Any = one_hot(data.labels, len(self.spec.classes))
        x: Any = list(data.inputs)
        plan = registry.get(self.spec.model).two_networks
        if fitting and plan:
            x, y = plan.arrange(x, data.audio, y)
        if centred and self.recipe:
            x = eval_inputs(x, self.recipe)
        return x, y

    def _batch(self, data: SequenceSet, fitting: bool, centred: bool) -> tuple[Any, Any]:
        """``_arrays`` with list inputs as a tuple (what tf.data wants from a batch sequence)."""
        x, y = self._arrays(data, fitting, centred)
        return (tuple(x) if isinstance(x, list) else x), y

    def _stream(self, split: str, batch_size: int, assemble: Any, shuffle: bool, seed: int = 0) -> Any:
        from pipeline.training.stream import ShardBatches

        return ShardBatches(
            self.indexes[split],
            self.spec.timesteps,
            batch_size,
            assemble,
            flatten=self.flatten,
            audio=self.audio,
            shuffle=shuffle,
            seed=seed,
            shapes=self.shapes,
        )

    def training(self, split: str, batch_size: int, seed: int) -> tuple[Any, None]:
        """``(batches, None)``: streamed training batches, augmented by the run's recipe when it has one."""
        from pipeline.training.batches import augment_batch

        recipe = self.recipe

        def assemble(data: SequenceSet, rng: np.random.Generator) -> tuple[Any, Any]:
            return (
                augment_batch(*self._arrays(data, fitting=True, centred=False), rng, recipe)
                if recipe
                else self._batch(data, fitting=True, centred=False)
            )

        return self._stream(split, batch_size, assemble, shuffle=True, seed=seed), None

    def validation(self, split: str, batch_size: int) -> tuple[Any, None]:
        """``(batches, None)``: streamed validation batches as the model sees them at test (the centred view)."""
        return self._stream(
            split, batch_size, lambda data, rng: self._batch(data, fitting=True, centred=True), shuffle=False
        ), None

    def predict(self, model: Any, split: str, batch_size: int = 128, mirrored: bool = False) -> np.ndarray:
        """Streamed class scores of ``split`` in index order (``mirrored``: of the horizontally flipped clips)."""

        def assemble(data: SequenceSet, rng: np.random.Generator) -> tuple[Any]:
            x, _ = self._arrays(data, fitting=False, centred=True)
            return (tuple(flip(x) if mirrored else x),)

        return model.predict(self._stream(split, batch_size, assemble, shuffle=False), verbose=0)


__all__ = ["MEMORY_SHARE", "MODES", "RunInputs", "flip", "memory_budget"]
