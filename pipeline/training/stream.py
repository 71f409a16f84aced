"""Streaming input: mini-batches read from a split's shards on the fly, for training, validation and prediction.

A batch is read sample by sample through a pool of open readers (any registered shard format),
padded and converted to float32 for that batch only, then shaped for the model by a function the
caller gives (list or dict inputs, labels, augmentation). Batches are built in background threads,
a bounded number ahead, so memory is bounded by batch size x prefetch depth, not by the split.
Order and random draws follow ``EpochBatches``: batch ``i`` of epoch ``e`` depends only on
``(seed, e, i)``, so a resumed run sees the batches of an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pipeline.training.batches import EpochBatches
from pipeline.training.sequences import ReaderPool, SequenceSet, SplitIndex, frame_shapes, read_rows

PREFETCH = 4  # batches built ahead of the one training consumes
WORKERS = 2  # threads building them

Assemble = Callable[[SequenceSet, np.random.Generator], Any]


class ShardBatches(EpochBatches):
    """Batches of ``index``'s samples read from their shards, each turned into model inputs by ``assemble``."""

    def __init__(
        self,
        index: SplitIndex,
        timesteps: int,
        batch_size: int,
        assemble: Assemble,
        *,
        flatten: bool = True,
        audio: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        workers: int = WORKERS,
        prefetch: int = PREFETCH,
        shapes: tuple[list[tuple[int, ...]], tuple[int, ...] | None] | None = None,
    ) -> None:
        super().__init__(len(index), batch_size, seed, shuffle, workers, prefetch)
        self.index, self.timesteps, self.assemble = index, timesteps, assemble
        self.flatten, self.audio = flatten, audio
        self.shapes = shapes or frame_shapes(index, flatten, audio)
        self.pool = ReaderPool()

    def batch(self, rows: np.ndarray, rng: np.random.Generator) -> Any:
        return self.assemble(
            read_rows(self.index, rows, self.timesteps, self.flatten, self.audio, self.pool, self.shapes), rng
        )


__all__ = ["PREFETCH", "WORKERS", "ShardBatches"]
