"""One interface over the shard formats: readers and writers chosen by the file's suffix through a registry.

Every reader (``pipeline.storage.shards.ShardReader`` for HDF5 ``.h5``,
``pipeline.storage.tfrecord.TFRecordShardReader`` for ``.tfrecord``) offers the same methods: ``attrs``,
``records()``, ``ids()``, ``read(id, perspectives, extras)`` for one sample, ``read_many(ids, perspectives, extras)``
for several (in the order cheapest for the format), iteration, ``verify()`` and use as a context manager. A format's
module is imported only when a shard of that format is opened, so the HDF5 path never imports TensorFlow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from pipeline.errors import ConfigError
from pipeline.storage.shards import COMPRESSIONS, DEFAULT_COMPRESSION, ShardError, ShardSample


class ShardReading(Protocol):
    """What every shard reader offers, whatever its format."""

    path: Path

    @property
    def attrs(self) -> dict[str, Any]: ...

    def records(self) -> dict[str, dict[str, Any]]: ...

    def ids(self) -> list[str]: ...

    def read(self, sample_id: str, perspectives: Sequence[str] | None = None, extras: bool = False) -> ShardSample: ...

    def read_many(
        self, ids: Sequence[str], perspectives: Sequence[str] | None = None, extras: bool = False
    ) -> Iterator[ShardSample]: ...

    def verify(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "ShardReading": ...

    def __exit__(self, *exc: Any) -> None: ...


@dataclass(frozen=True)
class ShardFormat:
    """A registered shard format: its name, file suffix, the module holding its reader and writer classes."""

    name: str
    suffix: str
    module: str
    reader: str
    writer: str
    requires: str | None = None  # a package the format needs beyond the base install


FORMATS = {
    ".h5": ShardFormat("hdf5", ".h5", "pipeline.storage.shards", "ShardReader", "ShardWriter"),
    ".tfrecord": ShardFormat(
        "tfrecord",
        ".tfrecord",
        "pipeline.storage.tfrecord",
        "TFRecordShardReader",
        "TFRecordShardWriter",
        requires="tensorflow",
    ),
}
FORMAT_SUFFIX = {fmt.name: suffix for suffix, fmt in FORMATS.items()}


def format_of(path: Path | str) -> ShardFormat:
    """The registered format whose suffix ``path`` ends with; ShardError otherwise."""
    fmt = FORMATS.get(Path(path).suffix)
    if fmt is None:
        raise ShardError(f"{path}: not a shard file name (expected a suffix among {sorted(FORMATS)})")
    return fmt


def shard_format(path: Path | str) -> str:
    """``"hdf5"`` or ``"tfrecord"``, from the shard's file suffix."""
    return format_of(path).name


def _class(fmt: ShardFormat, attribute: str, what: Path | str) -> Any:
    """The reader or writer class of a format, importing its module.

    A one-line error names ``what`` when a requirement is absent.
    """
    try:
        module = importlib.import_module(fmt.module)
    except ModuleNotFoundError as exc:
        if fmt.requires and (exc.name or "").split(".")[0] == fmt.requires:
            raise ShardError(
                f"{what}: {fmt.name} shards need {fmt.requires}, which is not installed (pip install "
                f"{fmt.requires}); HDF5 shards (.h5, the default) do not"
            ) from None
        raise
    return getattr(module, getattr(fmt, attribute))


def require_format(name: str) -> None:
    """Raise ShardError now, before any work, when the format ``name`` needs a package that is not installed."""
    _class(FORMATS[FORMAT_SUFFIX[name]], "writer", f"--format {name}")


def compression_for(fmt: str, compression: str | None) -> str:
    """The compression shards of format ``fmt`` get.

    HDF5: gzip, lzf or none (None: the default); TFRecords: none only.
    """
    if fmt != "hdf5":
        if compression not in (None, "none"):
            raise ConfigError(f"--compression {compression}: {fmt} shards are written uncompressed; use --format hdf5")
        return "none"
    if compression is None:
        return DEFAULT_COMPRESSION
    if compression not in COMPRESSIONS:
        raise ConfigError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    return compression


def open_reader(path: Path | str, kind: str | None = None) -> ShardReading:
    """A reader for a committed shard of any registered format; ``kind`` checks what it holds."""
    return _class(format_of(path), "reader", path)(path, kind)


def open_writer(
    path: Path | str, kind: str, attrs: Mapping[str, Any] | None = None, compression: str | None = None
) -> Any:
    """A shard writer (``add``, ``add_failure``, ``commit``, ``discard``, context manager) for ``path``'s format.

    ``compression`` (HDF5 shards: gzip, lzf or none) None means the format's default.
    """
    writer = _class(format_of(path), "writer", path)
    return writer(path, kind, attrs) if compression is None else writer(path, kind, attrs, compression=compression)


def read_sample(path: Path | str, sample_id: str, perspectives: Sequence[str], extras: bool = False) -> ShardSample:
    """One sample of one shard with the perspectives named (the shard is opened and closed)."""
    with open_reader(path) as reader:
        return reader.read(sample_id, perspectives, extras)


def read_samples(
    path: Path | str, ids: Sequence[str], perspectives: Sequence[str], extras: bool = False
) -> Iterator[ShardSample]:
    """The samples ``ids`` of one shard with the perspectives named, opening the shard once (any order)."""
    with open_reader(path) as reader:
        yield from reader.read_many(ids, perspectives, extras)


__all__ = [
    "FORMATS",
    "FORMAT_SUFFIX",
    "ShardFormat",
    "ShardReading",
    "compression_for",
    "format_of",
    "open_reader",
    "open_writer",
    "read_sample",
    "read_samples",
    "require_format",
    "shard_format",
]
