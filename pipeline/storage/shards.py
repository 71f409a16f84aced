"""HDF5 shards: one group per sample, one dataset per perspective, written atomically.

The same layout holds uint8 ROI clips (``prepare``) and float embeddings (``extract``). Each shard
also records, in its root attributes, the per-sample outcome of the stage that wrote it, so a
shard on disk is the source of truth and a manifest can always be reconciled from it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import quote

import h5py
import numpy as np

from pipeline.errors import MpviewError
from pipeline.storage.atomic import temp_path_for

SHARD_FORMAT = "mpview-shard"
SHARD_VERSION = 1
# Shards use the HDF5 1.10 format, whose structures carry metadata checksums, and keep text attributes inside
# those structures: a flipped bit in a shard's metadata raises instead of being misread (or sending the library
# into an endless loop, as a damaged variable-length-string heap can).
DAMAGE = (OSError, KeyError, RuntimeError, ValueError, TypeError)  # what h5py raises on damaged structures
# How a shard's datasets are compressed; every one keeps its fletcher32 checksum. The default was chosen by
# measurement (bench/stream.py, see the benchmarks doc): uncompressed shards read 5.3x (ROI crops) and 2.2x (features)
# faster per CPU-second than gzip, for 1.3x and 1.6x the bytes; reading, not disk space, is what starves the device.
COMPRESSIONS = {"gzip": {"compression": "gzip", "compression_opts": 1}, "lzf": {"compression": "lzf"}, "none": {}}
DEFAULT_COMPRESSION = "none"


class ShardError(MpviewError, RuntimeError):
    """A shard that is missing, truncated, corrupted or of the wrong kind; the message names the file."""

    code = "shard"


@dataclass
class ShardSample:
    """One sample read back from a shard: per-perspective arrays, attributes and extra arrays."""

    id: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def group_name(sample_id: str) -> str:
    """HDF5-safe group name for a sample id (``/`` and other specials percent-encoded)."""
    return quote(sample_id, safe=" ").replace(".", "%2E")


def _attr_value(value: Any) -> Any:
    """An attribute as stored: text (JSON for containers) as fixed-length UTF-8, kept inside the checksummed header."""
    if value is None:
        value = ""
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str):  # h5py would store str as variable-length, in a global heap that has no checksum
        encoded = value.encode("utf-8")
        return np.array(encoded, dtype=h5py.string_dtype("utf-8", max(1, len(encoded))))
    return value


class BaseShardWriter:
    """What every shard writer shares: a temporary file, per-sample outcomes, commit-or-discard.

    Subclasses open ``self._tmp`` in ``__init__``, store samples in ``add``, and implement
    ``_close`` (flush and close the temporary file) and ``_publish`` (make it final).
    """

    def __init__(self, path: Path | str, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self._tmp = temp_path_for(self.path)
        self._records: dict[str, dict[str, Any]] = {}

    def _claim(self, sample_id: str) -> None:
        if sample_id in self._records:
            raise ValueError(f"{self.path}: sample {sample_id!r} written twice")

    def _done(self, sample_id: str, record: Mapping[str, Any] | None) -> None:
        self._records[sample_id] = {"status": "done", **(record or {})}

    def add_failure(self, sample_id: str, error: str, record: Mapping[str, Any] | None = None) -> None:
        """Record that a sample of this shard failed, with the reason."""
        self._records[sample_id] = {"status": "failed", "error": error, **(record or {})}

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        return dict(self._records)

    def _close(self) -> None:
        raise NotImplementedError

    def _publish(self) -> None:
        raise NotImplementedError

    def commit(self) -> Path:
        """Close, fsync and move the shard into place under its final name."""
        self._close()
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        self._publish()
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary file (nothing appears under the final name); never raises.

        Called while another error is on its way: the file is emptied first, so that closing it needs next to no
        space on a full disk, and a close that still fails is dropped so the first error is what the caller sees.
        """
        try:
            self._empty()
            with contextlib.suppress(Exception):
                self._close()
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)

    def _empty(self) -> None:
        """Give back the temporary file's space (its content is lost: the writer can only be discarded now)."""
        with contextlib.suppress(OSError):
            os.truncate(self._tmp, 0)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise


def _create_file(path: Path) -> h5py.File:
    """A new HDF5 file in the checksummed 1.10 format that stores no timestamps (same content, same bytes)."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    return h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def _group(parent: h5py.Group, name: str) -> h5py.Group:
    """A new sub-group without timestamps (the 1.10 format would otherwise store its creation time)."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
    lcpl.set_char_encoding(h5py.h5t.CSET_UTF8)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode("utf-8"), lcpl=lcpl, gcpl=gcpl))


class ShardWriter(BaseShardWriter):
    """Write samples into a temporary HDF5 file; ``commit`` renames it to its final name.

    Used as a context manager: leaving the block normally commits, an exception discards the file.
    """

    def __init__(
        self,
        path: Path | str,
        kind: str,
        attrs: Mapping[str, Any] | None = None,
        compression: str = DEFAULT_COMPRESSION,
    ) -> None:
        super().__init__(path, kind)
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        self.compression = compression
        self._failed = False
        self._file = _create_file(self._tmp)
        self._file.attrs["format"] = _attr_value(SHARD_FORMAT)
        self._file.attrs["version"] = SHARD_VERSION
        self._file.attrs["kind"] = _attr_value(kind)
        self._file.attrs["compression"] = _attr_value(compression)
        for key, value in (attrs or {}).items():
            self._file.attrs[key] = _attr_value(value)

    def add(
        self,
        sample_id: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any] | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        """Store one sample: a dataset per perspective, its attributes, extra arrays (e.g. ``audit/v1/landmarks``).

        A write the library cannot finish (a full disk) empties the temporary file at once, before HDF5 retries it on
        close (a retry that can crash the library), and raises ``OSError`` with the system's reason.
        """
        self._claim(sample_id)
        if self._failed:
            raise OSError(errno.EIO, "an earlier write to this shard failed")
        try:
            self._store(sample_id, arrays, attrs, extras)
        except (OSError, RuntimeError) as exc:
            self._failed = True
            self._empty()
            raise _write_error(exc) from None
        self._done(sample_id, record)

    def _store(
        self,
        sample_id: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any] | None,
        extras: Mapping[str, np.ndarray] | None,
    ) -> None:
        group = _group(self._file, group_name(sample_id))
        group.attrs["id"] = _attr_value(sample_id)
        for key, value in (attrs or {}).items():
            group.attrs[key] = _attr_value(value)
        for name, array in arrays.items():
            self._dataset(group, name, np.asarray(array))
        for name, array in (extras or {}).items():
            self._dataset(group, name, np.asarray(array))

    def _dataset(self, group: h5py.Group, name: str, array: np.ndarray) -> None:
        kwargs: dict[str, Any] = {"track_times": False}
        if array.ndim >= 1 and array.size > 0:
            chunk_rows = max(1, min(array.shape[0], (1 << 18) // max(1, array[0].nbytes)))
            kwargs.update(chunks=(chunk_rows, *array.shape[1:]), fletcher32=True, **COMPRESSIONS[self.compression])
        *parents, leaf = name.split("/")
        for part in parents:
            group = group[part] if part in group else _group(group, part)
        # write the chunks now: left to the dataset's close, their place in the file would depend on when Python frees
        # the object (later when e.g. a sampling profiler, as Dask workers run, holds the creating frame), and the same
        # content would give different bytes
        group.create_dataset(leaf, data=array, **kwargs).flush()

    def _close(self) -> None:
        if not self._file.id.valid:
            return
        try:
            if self._failed:
                raise OSError(errno.EIO, "an earlier write to this shard failed")
            self._file.attrs["records"] = _attr_value(self._records)
            self._file.attrs["complete"] = True
            self._file.close()
        except (OSError, RuntimeError) as exc:
            self._failed = True
            self._empty()
            with contextlib.suppress(Exception):
                self._file.close()  # the emptied file needs next to no space: this close releases the library's handles
            raise _write_error(exc) from None

    def _publish(self) -> None:
        os.replace(self._tmp, self.path)

    def _empty(self) -> None:
        """Point the library's file descriptor at an anonymous in-memory file, then empty the temporary file.

        Whatever HDF5 still writes while closing (it retries what failed) then lands in memory: on a disk that is
        full for other reasons too, closing succeeds and no half-closed object is left to crash the library later.
        """
        with contextlib.suppress(Exception):
            if self._file.id.valid and hasattr(os, "memfd_create"):
                spare = os.memfd_create("discarded-shard")
                os.dup2(spare, self._file.id.get_vfd_handle())
                os.close(spare)
        super()._empty()


def _write_error(exc: BaseException) -> OSError:
    """An HDF5 write failure as a one-line ``OSError`` carrying the system's errno (HDF5 spreads it over lines)."""
    found = re.search(r"errno = (\d+)", str(exc))
    if found:
        return OSError(int(found.group(1)), os.strerror(int(found.group(1))))
    if isinstance(exc, OSError) and exc.errno:
        return OSError(exc.errno, exc.strerror)
    return OSError(errno.EIO, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


class ShardReader:
    """Read a committed shard; opening checks the format, kind and completeness."""

    def __init__(self, path: Path | str, kind: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ShardError(f"{self.path}: shard is missing")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise ShardError(f"{self.path}: not a readable HDF5 shard (truncated or corrupted): {exc}") from None
        try:
            found = {key: _decode_attr(self._file.attrs.get(key)) for key in ("format", "complete", "kind")}
        except DAMAGE as exc:
            self.close()
            raise ShardError(f"{self.path}: damaged shard header (corrupted): {exc}") from None
        if found["format"] != SHARD_FORMAT:
            self.close()
            raise ShardError(f"{self.path}: not an {SHARD_FORMAT} file")
        if not found["complete"]:
            self.close()
            raise ShardError(f"{self.path}: shard was not completed")
        if kind is not None and found["kind"] != kind:
            self.close()
            raise ShardError(f"{self.path}: shard holds {found['kind']!r} data, expected {kind!r}")

    def _damaged(self, what: str, exc: BaseException) -> ShardError:
        return ShardError(f"{self.path}: {what} (corrupted): {exc}")

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes, JSON-valued ones decoded."""
        try:
            return {k: _decode_attr(v) for k, v in self._file.attrs.items()}
        except DAMAGE as exc:
            raise self._damaged("unreadable attributes", exc) from None

    def records(self) -> dict[str, dict[str, Any]]:
        """Per-sample outcomes the writing stage stored (``status``, ``error``, ...)."""
        try:
            return json.loads(self._file.attrs["records"])
        except DAMAGE as exc:
            raise self._damaged("unreadable per-sample records", exc) from None

    def ids(self) -> list[str]:
        """Ids of the samples stored (failures excluded)."""
        try:
            return [_decode_attr(self._file[name].attrs["id"]) for name in self._file.keys()]
        except DAMAGE as exc:
            raise self._damaged("unreadable sample index", exc) from None

    def __contains__(self, sample_id: str) -> bool:
        try:
            return group_name(sample_id) in self._file
        except DAMAGE as exc:
            raise self._damaged("unreadable sample index", exc) from None

    def read(self, sample_id: str, perspectives: Sequence[str] | None = None, extras: bool = False) -> ShardSample:
        """Read one sample's arrays (all perspectives, or those named); ``extras`` adds nested arrays."""
        if sample_id not in self:
            raise ShardError(f"{self.path}: no sample {sample_id!r}")
        try:
            group = self._file[group_name(sample_id)]
            arrays = {}
            extra = {}
            for key, item in group.items():
                if item is None:  # h5py's answer for a link whose object cannot be opened
                    raise KeyError(f"unreadable object {key!r}")
                if isinstance(item, h5py.Dataset):
                    if perspectives is None or key in perspectives:
                        arrays[key] = item[()]
                elif extras:
                    item.visititems(
                        lambda sub, obj, base=key: (
                            extra.__setitem__(f"{base}/{sub}", obj[()]) if isinstance(obj, h5py.Dataset) else None
                        )
                    )
            attrs = {k: _decode_attr(v) for k, v in group.attrs.items()}
        except DAMAGE as exc:
            raise ShardError(f"{self.path}: sample {sample_id!r} is corrupted ({exc})") from None
        if perspectives is not None:
            absent = [p for p in perspectives if p not in arrays]
            if absent:
                raise ShardError(f"{self.path}: sample {sample_id!r} has no perspective(s) {absent}")
        return ShardSample(sample_id, arrays, attrs, extra)

    def read_many(
        self, ids: Sequence[str], perspectives: Sequence[str] | None = None, extras: bool = False
    ) -> Iterator[ShardSample]:
        """The samples ``ids``, in that order (random access is cheap in HDF5)."""
        for sample_id in ids:
            yield self.read(sample_id, perspectives, extras)

    def __iter__(self) -> Iterator[ShardSample]:
        return self.read_many(self.ids())

    def verify(self) -> None:
        """Read every dataset so that checksums (fletcher32) are checked; raise ShardError on damage."""
        for sample_id in self.ids():
            self.read(sample_id, extras=True)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def shard_name(prefix: str, index: int, total: int, suffix: str = ".h5") -> str:
    """Shard file name in the ``<prefix>-00003-of-00010<suffix>`` convention."""
    return f"{prefix}-{index:05d}-of-{total:05d}{suffix}"


__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "ShardError",
    "ShardReader",
    "ShardSample",
    "ShardWriter",
    "group_name",
    "shard_name",
]
