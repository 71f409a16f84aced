"""Training arrays from a stage's shards, whatever their format (HDF5 ``.h5`` or TFRecord ``.tfrecord``).

``load_split`` gathers one split's samples into fixed-length arrays: each sequence is truncated to
its first ``timesteps`` frames or zero-padded at the end, with a mask marking the real frames. Each
shard is opened once. TensorFlow is imported only when a TFRecord shard is involved.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from pipeline.logs import get_logger
from pipeline.manifest import DONE, FAILED, Manifest, Sample
from pipeline.shards import ShardError, ShardReader, ShardSample, ShardWriter

if TYPE_CHECKING:
    from pipeline.tfrecord import TFRecordShardReader, TFRecordShardWriter

log = get_logger(__name__)

FORMAT_SUFFIX = {"hdf5": ".h5", "tfrecord": ".tfrecord"}


def shard_format(path: Path | str) -> str:
    """``"hdf5"`` or ``"tfrecord"``, from the shard's file suffix."""
    suffix = Path(path).suffix
    for fmt, known in FORMAT_SUFFIX.items():
        if suffix == known:
            return fmt
    raise ShardError(f"{path}: not a shard file name (expected a suffix among {sorted(FORMAT_SUFFIX.values())})")


def shard_writer(path: Path | str, kind: str, attrs: Mapping[str, Any] | None = None) -> ShardWriter | TFRecordShardWriter:
    """A shard writer for the format ``path``'s suffix names."""
    if shard_format(path) == "hdf5":
        return ShardWriter(path, kind, attrs)
    from pipeline.tfrecord import TFRecordShardWriter

    return TFRecordShardWriter(path, kind, attrs)


def open_shard(path: Path | str, kind: str | None = None) -> ShardReader | TFRecordShardReader:
    """A reader for a committed shard of either format (``records()``, ``ids()``, ``attrs``, iteration)."""
    if shard_format(path) == "hdf5":
        return ShardReader(path, kind)
    from pipeline.tfrecord import TFRecordShardReader

    return TFRecordShardReader(path, kind)


def read_shard_samples(path: Path | str, ids: Sequence[str], perspectives: Sequence[str], extras: bool = False) -> Iterator[ShardSample]:
    """The samples ``ids`` of one shard with the perspectives named, opening the shard once (any order)."""
    reader = open_shard(path)
    if isinstance(reader, ShardReader):
        with reader:
            for sample_id in ids:
                yield reader.read(sample_id, list(perspectives), extras=extras)
    else:
        yield from reader.samples(perspectives, ids)


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
    """Read ``split``'s samples from ``stage``'s shards (paths in the stage records, relative to ``work_dir``).

    Failed, unprocessed and unlabelled samples are skipped with one warning. ``flatten`` gives
    ``[N, T, d]`` per perspective; ``flatten=False`` keeps image frames as ``[N, T, h, w, C]``.
    ``audio`` also reads the frame-aligned log-mel stored by ``prepare --audio``.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    perspectives = list(perspectives)
    classes = manifest.class_index()
    chosen, skipped = _usable(manifest.split(split), stage, classes)
    if skipped:
        log.warning("%s, split %s: skipping %s", stage, split, ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
    if not chosen:
        raise ValueError(f"no usable samples in split {split!r} for stage {stage!r}")
    row = {sample.id: i for i, sample in enumerate(chosen)}
    by_shard: dict[str, list[str]] = defaultdict(list)
    for sample in chosen:
        by_shard[sample.stages[stage]["shard"]].append(sample.id)
    inputs: list[np.ndarray | None] = [None] * len(perspectives)
    lengths = np.zeros(len(chosen), np.int64)
    mels: np.ndarray | None = None
    for location, ids in by_shard.items():
        path = Path(work_dir) / location
        found = set()
        for sample in read_shard_samples(path, ids, perspectives, extras=audio):
            i = row[sample.id]
            found.add(sample.id)
            if audio:
                if AUDIO_KEY not in sample.extras:
                    raise ShardError(f"{path}: sample {sample.id!r} has no audio; run `prepare --audio` in a new --work folder")
                mel = sample.extras[AUDIO_KEY][:timesteps]
                if mels is None:
                    mels = np.zeros((len(chosen), timesteps, *mel.shape[1:]), np.float32)
                mels[i, : len(mel)] = mel
            for j, name in enumerate(perspectives):
                frames = _frames(sample.arrays[name], flatten, f"{path}: sample {sample.id!r} perspective {name!r}")
                if inputs[j] is None:
                    inputs[j] = np.zeros((len(chosen), timesteps, *frames.shape[1:]), np.float32)
                elif inputs[j].shape[2:] != frames.shape[1:]:
                    raise ShardError(f"{path}: sample {sample.id!r} perspective {name!r} has frames of shape {frames.shape[1:]}, earlier samples {inputs[j].shape[2:]}")
                kept = min(frames.shape[0], timesteps)
                inputs[j][i, :kept] = frames[:kept]
                lengths[i] = max(lengths[i], kept)
        missing = sorted(set(ids) - found)
        if missing:
            raise ShardError(f"{path}: lacks sample(s) {missing[:5]} that the manifest records as {stage} done; re-run {stage} to reconcile")
    return SequenceSet(
        perspectives=perspectives,
        inputs=inputs,
        mask=np.arange(timesteps)[None, :] < lengths[:, None],
        lengths=lengths,
        labels=np.array([classes[s.label] for s in chosen], np.int64),
        ids=[s.id for s in chosen],
        speakers=[s.speaker for s in chosen],
        audio=mels,
    )


__all__ = ["FORMAT_SUFFIX", "SequenceSet", "load_split", "open_shard", "read_shard_samples", "shard_format", "shard_writer"]
