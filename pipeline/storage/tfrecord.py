"""TFRecord shards: one ``tf.train.SequenceExample`` per sample, completed by a JSON sidecar.

A shard ``<prefix>-00003-of-00010.tfrecord`` is complete only when its sidecar ``<shard>.json``
exists and records the shard's size. The writer removes any older sidecar, renames the TFRecord into
place and writes the sidecar last, so a kill in between leaves a shard every reader refuses. The
sidecar holds what the HDF5 shards keep in their root attributes: kind, shard attributes and the
per-sample outcomes, plus each record's byte offset, so that one sample is read without scanning the
file (``read``; shards written before offsets were recorded are indexed by one scan on first use).
Records carry CRCs: truncation and bit flips surface as ``ShardError``.

Layout of one record. Context: ``id``, ``label``, ``label_index`` (int64, -1 when unlabelled),
``split``, ``speaker``, ``frames`` (longest perspective), ``attrs`` (all sample attributes as JSON)
and, per perspective ``p``, ``dim/p`` (values per frame), ``shape/p`` (frame shape) and ``dtype/p``.
Feature lists: one per perspective, each frame a float list of ``dim/p`` values. Extra arrays go in
the context as ``extra/<name>`` with ``shape/extra/<name>`` and ``dtype/extra/<name>``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.python.lib.io.tf_record import tf_record_random_reader  # CRC-checked reads at a byte offset

from pipeline.errors import DataError
from pipeline.storage.atomic import write_text_atomic
from pipeline.storage.shards import SHARD_FORMAT, SHARD_VERSION, BaseShardWriter, ShardError, ShardSample

SUFFIX = ".tfrecord"
CONTAINER = "tfrecord"
FRAMING = 16  # bytes around each TFRecord payload: length (8), its CRC (4), the payload's CRC (4)
EXACT_DTYPES = frozenset({"float16", "float32", "uint8", "int8", "uint16", "int16"})  # held exactly by float32


def sidecar_path(path: Path | str) -> Path:
    """The JSON sidecar that completes a TFRecord shard: ``<shard>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda v: v.item() if isinstance(v, np.generic) else v.tolist())


def _put_text(context: Any, key: str, text: str) -> None:
    context[key].bytes_list.value.append(text.encode("utf-8"))


def _put_ints(context: Any, key: str, values: Iterable[int]) -> None:
    context[key].int64_list.value.extend(int(v) for v in values)


def _put_layout(context: Any, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    _put_ints(context, f"shape/{key}", shape)
    _put_text(context, f"dtype/{key}", dtype.name)


def _exact(array: Any, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.name not in EXACT_DTYPES:
        raise ValueError(
            f"{what}: dtype {array.dtype} is not stored exactly in a TFRecord (use one of {sorted(EXACT_DTYPES)})"
        )
    return array


class TFRecordShardWriter(BaseShardWriter):
    """Write samples into a temporary TFRecord; ``commit`` renames it and then writes its sidecar.

    Same interface as ``pipeline.storage.shards.ShardWriter``; as a context manager, leaving the block
    normally commits and an exception discards the file.
    """

    def __init__(
        self, path: Path | str, kind: str, attrs: Mapping[str, Any] | None = None, compression: str = "none"
    ) -> None:
        super().__init__(path, kind)
        if compression != "none":
            raise ValueError(f"{path}: TFRecord shards are written uncompressed, not {compression!r}")
        self.attrs = {**(attrs or {}), "compression": "none"}
        self._writer = tf.io.TFRecordWriter(str(self._tmp))
        self._dims: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self._end = 0

    def add(
        self,
        sample_id: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any] | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        """Store one sample as a SequenceExample: a feature list per perspective, attributes in the context."""
        self._claim(sample_id)
        attrs = dict(attrs or {})
        example = tf.train.SequenceExample()
        context = example.context.feature
        _put_text(context, "id", sample_id)
        _put_text(context, "attrs", _dumps(attrs))
        for key in ("label", "split", "speaker"):
            if attrs.get(key) is not None:
                _put_text(context, key, str(attrs[key]))
        _put_ints(context, "label_index", [-1 if attrs.get("label_index") is None else attrs["label_index"]])
        frames = 0
        for name, array in arrays.items():
            array = _exact(array, f"{self.path}: sample {sample_id!r} perspective {name!r}")
            if array.ndim < 1:
                raise DataError(f"{self.path}: sample {sample_id!r} perspective {name!r} is not a sequence of frames")
            rows = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
            dim = self._dims.setdefault(name, rows.shape[1])
            if rows.shape[1] != dim:
                raise DataError(
                    f"{self.path}: sample {sample_id!r} perspective {name!r} has {rows.shape[1]} values per frame, "
                    f"earlier samples {dim}"
                )
            feature_list = example.feature_lists.feature_list[name].feature
            for row in rows.astype(np.float32):
                feature_list.add().float_list.value[:] = row.tolist()
            _put_ints(context, f"dim/{name}", [dim])
            _put_layout(context, name, array.shape[1:], array.dtype)
            frames = max(frames, array.shape[0])
        _put_ints(context, "frames", [frames])
        for name, array in (extras or {}).items():
            array = _exact(array, f"{self.path}: sample {sample_id!r} extra {name!r}")
            context[f"extra/{name}"].float_list.value[:] = array.astype(np.float32).ravel().tolist()
            _put_layout(context, f"extra/{name}", array.shape, array.dtype)
        raw = example.SerializeToString()
        self._writer.write(raw)
        self._offsets[sample_id] = self._end
        self._end += len(raw) + FRAMING
        self._done(sample_id, record)

    def _close(self) -> None:
        self._writer.close()

    def _publish(self) -> None:
        """Drop any older sidecar, rename the TFRecord into place, then write the sidecar (completion marker)."""
        sidecar = sidecar_path(self.path)
        sidecar.unlink(missing_ok=True)
        os.replace(self._tmp, self.path)
        meta = {
            "format": SHARD_FORMAT,
            "version": SHARD_VERSION,
            "container": CONTAINER,
            "kind": self.kind,
            "attrs": self.attrs,
            "dims": self._dims,
            "records": self._records,
            "offsets": self._offsets,
            "bytes": self.path.stat().st_size,
        }
        write_text_atomic(sidecar, _dumps(meta))


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of a complete shard; ShardError when the shard is missing, unfinished or resized."""
    if not path.exists():
        raise ShardError(f"{path}: shard is missing")
    sidecar = sidecar_path(path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path}: shard was not completed (no sidecar {sidecar.name})") from None
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable sidecar {sidecar.name} ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT or meta.get("container") != CONTAINER:
        raise ShardError(f"{path}: {sidecar.name} is not an {SHARD_FORMAT} TFRecord sidecar")
    size = path.stat().st_size
    if size != meta.get("bytes"):
        raise ShardError(f"{path}: {size} bytes on disk but {meta.get('bytes')} when completed (truncated or replaced)")
    return meta


def tfrecord_shard_complete(path: Path | str) -> bool:
    """Whether ``path`` is a committed TFRecord shard (present, with a sidecar that matches its size)."""
    try:
        _read_sidecar(Path(path))
    except ShardError:
        return False
    return True


class TFRecordShardReader:
    """Read a committed TFRecord shard; opening checks the sidecar, size and kind. Safe to share between threads."""

    def __init__(self, path: Path | str, kind: str | None = None) -> None:
        self.path = Path(path)
        self._meta = _read_sidecar(self.path)
        if kind is not None and self._meta.get("kind") != kind:
            raise ShardError(f"{self.path}: shard holds {self._meta.get('kind')!r} data, expected {kind!r}")
        self._offsets: dict[str, int] | None = self._meta.get("offsets")
        self._random: Any = None
        self._lock = threading.Lock()

    @property
    def attrs(self) -> dict[str, Any]:
        """Shard attributes given to the writer."""
        return dict(self._meta["attrs"])

    @property
    def dims(self) -> dict[str, int]:
        """Values per frame of each perspective."""
        return dict(self._meta["dims"])

    def records(self) -> dict[str, dict[str, Any]]:
        """Per-sample outcomes the writing stage stored (``status``, ``error``, ...)."""
        return dict(self._meta["records"])

    def ids(self) -> list[str]:
        """Ids of the samples stored (failures excluded)."""
        return [i for i, r in self._meta["records"].items() if r["status"] == "done"]

    def _record_at(self, offset: int) -> tuple[bytes, int]:
        """The serialized record starting at byte ``offset`` and the offset after it (CRCs checked)."""
        with self._lock:
            if self._random is None:
                self._random = tf_record_random_reader(str(self.path))
            try:
                return self._random.read(offset)
            except tf.errors.DataLossError as exc:
                raise ShardError(f"{self.path}: corrupted TFRecord at byte {offset} ({exc.message})") from None
            except IndexError:
                raise ShardError(f"{self.path}: no record at byte {offset} (truncated)") from None

    def _index(self) -> dict[str, int]:
        """Sample id -> byte offset of its record: from the sidecar, or one scan for shards written without offsets."""
        if self._offsets is None:
            offsets, offset = {}, 0
            for _ in self._meta["records"]:
                raw, end = self._record_at(offset)
                offsets[_sample_id(_example(raw, self.path))] = offset
                offset = end
            self._offsets = offsets
        return self._offsets

    def read(self, sample_id: str, perspectives: Sequence[str] | None = None, extras: bool = False) -> ShardSample:
        """One sample, read at its byte offset (all perspectives, or those named; ``extras`` adds its extra arrays)."""
        offset = self._index().get(sample_id)
        if offset is None:
            raise ShardError(f"{self.path}: no sample {sample_id!r}")
        example = _example(self._record_at(offset)[0], self.path)
        found = _sample_id(example)
        if found != sample_id:
            raise ShardError(
                f"{self.path}: the record at byte {offset} holds {found!r}, its sidecar says {sample_id!r} (replaced "
                "or corrupted)"
            )
        return self._decode(example, sample_id, perspectives, extras)

    def read_many(
        self, ids: Sequence[str], perspectives: Sequence[str] | None = None, extras: bool = False
    ) -> Iterator[ShardSample]:
        """The samples ``ids`` in file order (one sequential pass over the shard)."""
        return self.samples(perspectives, ids, extras)

    def samples(
        self, perspectives: Sequence[str] | None = None, ids: Iterable[str] | None = None, extras: bool = True
    ) -> Iterator[ShardSample]:
        """Decode the samples in file order (all, or those in ``ids``), with all perspectives or those named."""
        wanted = None if ids is None else set(ids)
        try:
            for raw in tf.data.TFRecordDataset(str(self.path)).as_numpy_iterator():
                example = tf.train.SequenceExample.FromString(raw)
                sample_id = _sample_id(example)
                if wanted is None or sample_id in wanted:
                    yield self._decode(example, sample_id, perspectives, extras)
                    if wanted is not None:
                        wanted.discard(sample_id)
                        if not wanted:
                            return
        except tf.errors.DataLossError as exc:
            raise ShardError(f"{self.path}: corrupted TFRecord ({exc.message})") from None
        except (DecodeError, IndexError) as exc:
            raise ShardError(f"{self.path}: record is not a SequenceExample of this pipeline ({exc})") from None

    def _decode(
        self, example: tf.train.SequenceExample, sample_id: str, perspectives: Sequence[str] | None, extras: bool
    ) -> ShardSample:
        context = example.context.feature
        lists = example.feature_lists.feature_list
        names = sorted(lists) if perspectives is None else list(perspectives)
        absent = [p for p in names if p not in lists]
        if absent:
            raise ShardError(f"{self.path}: sample {sample_id!r} has no perspective(s) {absent}")
        arrays = {}
        for name in names:
            rows = np.asarray([f.float_list.value for f in lists[name].feature], np.float32)
            arrays[name] = _restore(rows, context, name, frames=True)
        extra = {
            key.removeprefix("extra/"): _restore(
                np.asarray(context[key].float_list.value, np.float32), context, key, frames=False
            )
            for key in sorted(context)
            if extras and key.startswith("extra/")
        }
        attrs = {"id": sample_id, **json.loads(context["attrs"].bytes_list.value[0])}
        return ShardSample(sample_id, arrays, attrs, extra)

    def __iter__(self) -> Iterator[ShardSample]:
        return self.samples()

    def verify(self) -> None:
        """Read every record so that CRCs are checked and every stored sample is present; raise ShardError."""
        found = [sample.id for sample in self.samples()]
        if sorted(found) != sorted(self.ids()):
            raise ShardError(f"{self.path}: holds samples {sorted(found)} but its sidecar lists {sorted(self.ids())}")

    def close(self) -> None:
        """Drop the random-access reader (reopened on the next ``read``)."""
        with self._lock:
            self._random = None

    def __enter__(self) -> "TFRecordShardReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _example(raw: bytes, path: Path) -> tf.train.SequenceExample:
    """Parse one record; ShardError when it is not a SequenceExample of this pipeline."""
    try:
        example = tf.train.SequenceExample.FromString(raw)
        _sample_id(example)
    except (DecodeError, IndexError) as exc:
        raise ShardError(f"{path}: record is not a SequenceExample of this pipeline ({exc})") from None
    return example


def _sample_id(example: tf.train.SequenceExample) -> str:
    """The sample id in a record's context (IndexError when it has none)."""
    return example.context.feature["id"].bytes_list.value[0].decode("utf-8")


def _restore(values: np.ndarray, context: Any, key: str, frames: bool) -> np.ndarray:
    """Reshape decoded float32 values to the stored shape (``[frames, *shape]`` for a perspective) and dtype."""
    shape = tuple(context[f"shape/{key}"].int64_list.value)
    dtype = np.dtype(context[f"dtype/{key}"].bytes_list.value[0].decode("ascii"))
    return values.reshape((-1, *shape) if frames else shape).astype(dtype)


def read_tfrecord_samples(path: Path | str, perspectives: Sequence[str] | None = None) -> Iterator[ShardSample]:
    """Samples of a committed TFRecord shard, decoded to numpy with their written shapes and dtypes."""
    return TFRecordShardReader(path).samples(perspectives)


def _shared_dims(paths: Sequence[str], perspectives: Sequence[str], verify: bool) -> dict[str, int]:
    """Values per frame of each perspective, the same in every shard; checks every shard is complete."""
    dims: dict[str, int] = {}
    for path in paths:
        reader = TFRecordShardReader(path)
        if verify:
            reader.verify()
        for name, dim in reader.dims.items():
            if dims.setdefault(name, dim) != dim:
                raise ShardError(f"{path}: perspective {name!r} has {dim} values per frame, other shards {dims[name]}")
    absent = [p for p in perspectives if p not in dims]
    if absent:
        raise ShardError(f"no sample in {len(paths)} shard(s) has perspective(s) {absent} (shards hold {sorted(dims)})")
    return dims


def _fit(frames: tf.Tensor, timesteps: int, dim: int) -> tf.Tensor:
    """First ``timesteps`` frames, zero-padded at the end to exactly ``timesteps``."""
    frames = frames[:timesteps]
    frames = tf.pad(frames, [[0, timesteps - tf.shape(frames)[0]], [0, 0]])
    return tf.ensure_shape(frames, [timesteps, dim])


def tfrecord_dataset(
    paths: Sequence[Path | str],
    perspectives: Sequence[str],
    timesteps: int,
    n_classes: int,
    *,
    split: str | None = None,
    batch_size: int | None = None,
    shuffle: int = 0,
    seed: int | None = None,
    verify: bool = False,
) -> tf.data.Dataset:
    """``((x_1, ..., x_k), one_hot)`` per labelled sample, each ``x_j`` float32 ``[timesteps, d_j]``.

    Sequences are truncated to their first ``timesteps`` frames or zero-padded at the end; samples
    of other splits (when ``split`` is given) or without a label index are left out. Every shard must
    be complete (sidecar present); ``verify`` also reads each shard once so that a damaged one is
    named before training instead of failing mid-epoch with a bare DataLossError.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no TFRecord shards given")
    dims = _shared_dims(paths, perspectives, verify)
    context_spec = {
        "label_index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "split": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    sequence_spec = {p: tf.io.FixedLenSequenceFeature([dims[p]], tf.float32) for p in perspectives}

    def parse(serialized: tf.Tensor) -> tuple[tuple[tf.Tensor, ...], tf.Tensor, tf.Tensor]:
        context, sequences = tf.io.parse_single_sequence_example(serialized, context_spec, sequence_spec)
        return (
            tuple(_fit(sequences[p], timesteps, dims[p]) for p in perspectives),
            context["label_index"],
            context["split"],
        )

    def keep(inputs: tuple[tf.Tensor, ...], index: tf.Tensor, sample_split: tf.Tensor) -> tf.Tensor:
        wanted = index >= 0
        return wanted if split is None else tf.logical_and(wanted, tf.equal(sample_split, split))

    def to_one_hot(
        inputs: tuple[tf.Tensor, ...], index: tf.Tensor, sample_split: tf.Tensor
    ) -> tuple[tuple[tf.Tensor, ...], tf.Tensor]:
        check = tf.debugging.assert_less(
            index, tf.constant(n_classes, tf.int64), message=f"label_index out of range for {n_classes} classes"
        )
        with tf.control_dependencies([check]):
            return inputs, tf.one_hot(index, n_classes, dtype=tf.float32)

    dataset = tf.data.TFRecordDataset(paths)
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE).filter(keep).map(to_one_hot)
    if batch_size:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


__all__ = [
    "SUFFIX",
    "TFRecordShardReader",
    "TFRecordShardWriter",
    "read_tfrecord_samples",
    "sidecar_path",
    "tfrecord_dataset",
    "tfrecord_shard_complete",
]
