"""One writer per work folder: an advisory lock that a running stage holds, released by the kernel if it dies."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from pipeline.errors import MpviewError

LOCK_NAME = ".mpview.lock"


class WorkFolderBusy(MpviewError, RuntimeError):
    """Another live process is running a stage on this work folder."""

    code = "work-folder-busy"


def _holder(path: Path) -> str:
    """What the lock file says about its holder (pid and command), for the message."""
    try:
        return path.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


@contextlib.contextmanager
def work_lock(work: Path, what: str, way_out: str = "use another --work") -> Iterator[None]:
    """Hold ``work``'s lock while the block runs; raise ``WorkFolderBusy`` at once if a live process holds it.

    ``flock`` locks vanish with their process, so a lock left by a killed run is never in the way (the file may stay;
    its text is only informative). ``way_out`` ends the refusal: how to run beside the holder instead.
    """
    path = Path(work) / LOCK_NAME
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise WorkFolderBusy(f"{work} is in use by {_holder(path)}; wait for it to finish or {way_out}") from None
        os.ftruncate(handle, 0)
        os.write(handle, f"pid {os.getpid()} ({what})\n".encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, 0)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
