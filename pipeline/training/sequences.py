"""Training arrays from a stage's shards, whatever their format (HDF5 ``.h5`` or TFRecord ``.tfrecord``).

``index_split`` finds one split's usable samples and where each is stored (reading no arrays);
``read_rows`` turns any rows of that index into fixed-length float32 arrays: each sequence is
truncated to its first ``timesteps`` frames or zero-padded at the end, with a mask marking the real
frames. ``load_split`` reads a whole split that way, each shard opened once; ``pipeline.training.stream``
reads a batch at a time. Readers come from ``pipeline.storage.readers``, so TensorFlow is imported only
when a TFRecord shard is involved.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from pipeline.errors import DataError
from pipeline.execution.logs import get_logger
from pipeline.manifest import DONE, FAILED, Manifest, Sample
from pipeline.storage.readers import ShardReading, open_reader, read_samples
from pipeline.storage.shards import ShardError, ShardSample
from pipeline.workspace import shard_path

log = get_logger(__name__)

AUDIO_KEY = "audio/mel"


@dataclass
class SequenceSet:
    """One split as fixed-length arrays: ``inputs[j]`` is ``[N, T, ...]`` float32 for ``perspectives[j]``."""

    perspectives: list[str]
    inputs: list[np.ndarray]
    mask: np.ndarray  # [N, T] bool, False on padding
    lengths: np.ndarray  # [N] frames kept (the longest perspective, after truncation)
    labels: np.ndarray  # [N] int64 index into manifest.classes
    ids: list[str]
    speakers: list[str | None]
    audio: np.ndarray | None = None  # [N, T, k, n_mels] log-mel aligned to the frames, when asked for

    def __len__(self) -> int:
        return len(self.ids)


def _usable(samples: list[Sample], stage: str, classes: Mapping[str, int]) -> tuple[list[Sample], Counter]:
    """Samples whose stage record is done with a shard and whose label is a known class; counts of the rest."""
    chosen, skipped = [], Counter()
    for sample in samples:
        record = sample.stages.get(stage, {})
        if record.get("status") == FAILED:
            skipped["failed"] += 1
        elif record.get("status") != DONE or not record.get("shard"):
            skipped["not processed"] += 1
        elif sample.label not in classes:
            skipped["without a known label"] += 1
        else:
            chosen.append(sample)
    return chosen, skipped


def _frames(array: np.ndarray, flatten: bool, what: str) -> np.ndarray:
    """``[frames, ...]`` as float32 (uint8 pixels scaled to [0, 1]): one vector per frame, or ``[h, w, C]`` images."""
    values = array.astype(np.float32)
    if array.dtype == np.uint8:
        values /= 255.0
    if flatten:
        return values.reshape(values.shape[0], -1)
    if values.ndim == 3:
        return values[..., None]
    if values.ndim == 4:
        return values
    raise ShardError(f"{what}: frames of shape {array.shape[1:]} are not images ([h, w] or [h, w, C])")


@dataclass
class SplitIndex:
    """One split's usable samples in a stage, and the shard holding each; no arrays are read."""

    stage: str
    split: str
    perspectives: list[str]
    ids: list[str]
    shards: list[Path]  # per sample, the shard file (absolute)
    labels: np.ndarray  # [N] int64 index into manifest.classes
    speakers: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)

    def by_shard(self, rows: Iterable[int]) -> dict[Path, list[int]]:
        """The rows grouped by shard, shards in first-seen order."""
        groups: dict[Path, list[int]] = defaultdict(list)
        for row in rows:
            groups[self.shards[row]].append(int(row))
        return groups


def index_split(
    manifest: Manifest, stage: str, split: str, perspectives: Sequence[str], work_dir: Path | str, check: bool = True
) -> SplitIndex:
    """The usable samples of ``split`` in ``stage``'s shards (paths in the stage records, relative to ``work_dir``).

    Failed, unprocessed and unlabelled samples are skipped with one warning. ``check`` opens every
    shard once to make sure it holds the samples the manifest says it does (a missing or
    inconsistent shard is named before any training starts).
    """
    classes = manifest.class_index()
    chosen, skipped = _usable(manifest.split(split), stage, classes)
    if skipped:
        log.warning(
            "%s, split %s: skipping %s", stage, split, ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        )
    if not chosen:
        raise DataError(f"no usable samples in split {split!r} for stage {stage!r}")
    index = SplitIndex(
        stage=stage,
        split=split,
        perspectives=list(perspectives),
        ids=[s.id for s in chosen],
        shards=[shard_path(work_dir, s.stages[stage]) for s in chosen],
        labels=np.array([classes[s.label] for s in chosen], np.int64),
        speakers=[s.speaker for s in chosen],
    )
    if check:
        for path, rows in index.by_shard(range(len(index))).items():
            with open_reader(path) as reader:
                stored = set(reader.ids())
            _check_present(path, stage, [index.ids[r] for r in rows], stored)
    return index


def _check_present(path: Path, stage: str, wanted: Iterable[str], found: set[str]) -> None:
    """ShardError naming the samples the manifest places in ``path`` that it lacks."""
    missing = sorted(set(wanted) - found)
    if missing:
        raise ShardError(
            f"{path}: lacks sample(s) {missing[:5]} that the manifest records as {stage} done; re-run {stage} to "
            "reconcile"
        )


class ReaderPool:
    """Open shard readers kept for reuse, at most ``size`` (the least recently used is closed first); thread-safe."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._open: OrderedDict[Path, ShardReading] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: Path, sample_id: str, perspectives: Sequence[str], extras: bool = False) -> ShardSample:
        """One sample of one shard, opening the shard when it is not open yet."""
        with self._lock:  # h5py serialises its calls anyway; holding the lock keeps a reader from closing mid-read
            reader = self._open.pop(path, None) or open_reader(path)
            self._open[path] = reader
            while len(self._open) > self.size:
                self._open.popitem(last=False)[1].close()
            return reader.read(sample_id, perspectives, extras)


def frame_shapes(index: SplitIndex, flatten: bool, audio: bool) -> tuple[list[tuple[int, ...]], tuple[int, ...] | None]:
    """Per perspective, the frame shape a sample gives after ``_frames``, from the first sample.

    Also the audio's per-frame shape.
    """
    with open_reader(index.shards[0]) as reader:
        sample = reader.read(index.ids[0], index.perspectives, extras=audio)
    shapes = [
        _frames(sample.arrays[p], flatten, f"{index.shards[0]}: sample {sample.id!r} perspective {p!r}").shape[1:]
        for p in index.perspectives
    ]
    return shapes, (_mel(sample, index.shards[0]).shape[1:] if audio else None)


def _mel(sample: ShardSample, path: Path) -> np.ndarray:
    if AUDIO_KEY not in sample.extras:
        raise ShardError(f"{path}: sample {sample.id!r} has no audio; run `prepare --audio` in a new --work folder")
    return sample.extras[AUDIO_KEY]


def read_rows(
    index: SplitIndex,
    rows: Sequence[int],
    timesteps: int,
    flatten: bool = True,
    audio: bool = False,
    pool: ReaderPool | None = None,
    shapes: tuple[list[tuple[int, ...]], tuple[int, ...] | None] | None = None,
) -> SequenceSet:
    """The samples at ``rows`` of ``index`` (in that order) as padded float32 arrays.

    Without ``pool`` each shard is opened once and its samples read in the order cheapest for the
    format (a whole split); with it, samples are read one by one through the pool's open readers (a
    batch). ``shapes`` (from ``frame_shapes``) fixes the frame shapes every sample must have.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    rows = [int(r) for r in rows]
    position = {row: i for i, row in enumerate(rows)}
    n = len(rows)
    inputs: list[np.ndarray | None] = [None] * len(index.perspectives)
    mels: np.ndarray | None = None
    if shapes is not None:
        inputs = [np.zeros((n, timesteps, *shape), np.float32) for shape in shapes[0]]
        mels = np.zeros((n, timesteps, *shapes[1]), np.float32) if audio else None
    lengths = np.zeros(n, np.int64)
    for row, path, sample in _samples(index, rows, audio, pool):
        i = position[row]
        if audio:
            mel = _mel(sample, path)[:timesteps]
            if mels is None:
                mels = np.zeros((n, timesteps, *mel.shape[1:]), np.float32)
            mels[i, : len(mel)] = mel
        for j, name in enumerate(index.perspectives):
            frames = _frames(sample.arrays[name], flatten, f"{path}: sample {sample.id!r} perspective {name!r}")
            if inputs[j] is None:
                inputs[j] = np.zeros((n, timesteps, *frames.shape[1:]), np.float32)
            elif inputs[j].shape[2:] != frames.shape[1:]:
                raise ShardError(
                    f"{path}: sample {sample.id!r} perspective {name!r} has frames of shape {frames.shape[1:]}, "
                    f"earlier samples {inputs[j].shape[2:]}"
                )
            kept = min(frames.shape[0], timesteps)
            inputs[j][i, :kept] = frames[:kept]
            lengths[i] = max(lengths[i], kept)
    return SequenceSet(
        perspectives=list(index.perspectives),
        inputs=inputs,
        mask=np.arange(timesteps)[None, :] < lengths[:, None],
        lengths=lengths,
        labels=index.labels[rows],
        ids=[index.ids[r] for r in rows],
        speakers=[index.speakers[r] for r in rows],
        audio=mels,
    )


def _samples(
    index: SplitIndex, rows: list[int], extras: bool, pool: ReaderPool | None
) -> Iterator[tuple[int, Path, ShardSample]]:
    """``(row, shard, sample)`` for every row: through ``pool`` one by one, or one pass per shard."""
    if pool is not None:
        for row in rows:
            yield row, index.shards[row], pool.read(index.shards[row], index.ids[row], index.perspectives, extras)
        return
    for path, shard_rows in index.by_shard(rows).items():
        row_of = {index.ids[r]: r for r in shard_rows}
        found = set()
        for sample in read_samples(path, list(row_of), index.perspectives, extras=extras):
            found.add(sample.id)
            yield row_of[sample.id], path, sample
        _check_present(path, index.stage, row_of, found)


def load_split(
    manifest: Manifest,
    stage: str,
    split: str,
    perspectives: Sequence[str],
    timesteps: int,
    work_dir: Path | str,
    flatten: bool = True,
    audio: bool = False,
) -> SequenceSet:
    """Read all of ``split``'s usable samples from ``stage``'s shards into memory (see ``index_split``, ``read_rows``).

    ``flatten`` gives ``[N, T, d]`` per perspective; ``flatten=False`` keeps image frames as
    ``[N, T, h, w, C]``. ``audio`` also reads the frame-aligned log-mel stored by ``prepare --audio``.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    index = index_split(manifest, stage, split, perspectives, work_dir, check=False)
    return read_rows(index, range(len(index)), timesteps, flatten, audio)


__all__ = [
    "AUDIO_KEY",
    "ReaderPool",
    "SequenceSet",
    "SplitIndex",
    "frame_shapes",
    "index_split",
    "load_split",
    "read_rows",
]
