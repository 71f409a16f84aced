"""Atomic file writes and content hashing: a file is either complete under its final name or absent."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


def temp_path_for(final: Path, keep_suffix: bool = False) -> Path:
    """A unique temporary name in the same directory as ``final`` (same filesystem, so rename is atomic).

    ``keep_suffix`` ends it with ``final``'s suffixes too, for writers that choose the format by them (Keras).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) if keep_suffix else ""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}{TMP_MARK}", suffix=suffix, dir=final.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return Path(name)


def _read_umask() -> int:
    """The process umask, read once at import (reading it means briefly setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(final: Path | str, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync and rename it to ``final``, on error delete it.

    An OS error that names no file, or the temporary one (a full disk), is raised naming ``final`` instead.
    """
    final = Path(final)
    try:
        tmp = temp_path_for(final, keep_suffix)
    except OSError as exc:
        raise _naming(exc, final) from None
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _naming(exc, final) from None
        raise


def _naming(exc: OSError, final: Path) -> OSError:
    """``exc`` as the same kind of OS error about ``final`` (the name the user knows) when it names no file or the
    temporary one; an error about another path (a parent folder) or without an errno is kept as it is."""
    named = exc.filename is not None and TMP_MARK not in os.path.basename(os.fsdecode(exc.filename))
    if named or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), str(final))


def write_bytes_atomic(final: Path | str, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    write_bytes_atomic(final, text.encode("utf-8"))


def remove_stale_temps(directory: Path | str) -> int:
    """Delete temporary files left by an interrupted run in ``directory`` (recursively); return how many."""
    directory = Path(directory)
    if not directory.exists():
        return 0
    count = 0
    for path in directory.rglob(f"*{TMP_MARK}*"):
        if path.is_file() and path.name.startswith("."):
            path.unlink()
            count += 1
    return count


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
