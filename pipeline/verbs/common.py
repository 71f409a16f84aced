"""What the per-sample verbs (prepare, extract) share: how shards run, and the guard against mixing settings."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.execution.logs import get_logger
from pipeline.execution.settings import SettingsChanged, check_options, differences, option, recorded_settings
from pipeline.manifest import Manifest, without_stage

log = get_logger(__name__)


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how a stage's shards run, and what a run does with failures and changed settings."""

    jobs: int = option(1, "local worker processes (1: in-process)", least=1)
    scheduler: str | None = None  # address of an existing Dask scheduler
    dask_local: int = option(0, "start a local Dask cluster of this many workers", least=0)
    dask_stall_timeout: int = option(300, "seconds a Dask run waits with no worker before it gives up", least=1)
    shard_size: int | None = option(
        None, "samples per shard (None: sized from the run, at most the stage's default)", least=1
    )
    strict: bool = False  # stop at the first failed sample
    retry_failed: bool = False  # redo shards holding failed samples
    force: bool = False  # outputs made with other settings: delete and redo them (refused while later outputs exist)

    def __post_init__(self) -> None:
        """Check every field's type and range."""
        check_options(self)

    def shard_size_for(self, count: int, largest: int) -> int:
        """The shard size asked for, or the automatic size for ``count`` samples (at most ``largest``)."""
        from pipeline.execution.runner import auto_shard_size

        return self.shard_size or auto_shard_size(count, largest)


def refuse_or_clear(
    where: str, changed: list[str], force: bool, keep_hint: str, clear: Callable[[], None], busy: list[Path] = ()
) -> None:
    """Stop when outputs on disk were made with other settings (``changed``); with ``force``, ``clear`` them.

    ``busy`` are folders of outputs made from these: ``force`` is refused while they hold anything, so nothing
    downstream silently mixes old and new inputs.
    """
    if not changed:
        return
    where = f"{where} made with other settings ({'; '.join(changed)})"
    if not force:
        raise SettingsChanged(f"{where}: re-run with the same options, pass --force to redo them, or {keep_hint}")
    held = [str(p) for p in busy if p.exists() and any(p.iterdir())]
    if held:
        raise SettingsChanged(
            f"{where}; --force would leave {', '.join(held)} made from the old ones: delete "
            f"{' and '.join(held)} first, or {keep_hint}"
        )
    log.warning("%s: deleting them to redo them (--force)", where)
    clear()


def guard_outputs(
    manifest: Manifest,
    manifest_file: Path,
    stage: str,
    asked: dict[str, Any],
    out_dir: Path,
    force: bool,
    later: list[Path],
    keep_hint: str = "use another --work",
) -> None:
    """Stop when ``stage``'s outputs on disk were made with other settings than ``asked``; with ``force`` delete them.

    ``keep_hint`` is the way to keep them and have the new ones too (another --work, or for features another --name).
    """
    recorded = recorded_settings(manifest, stage)
    if recorded is None or not out_dir.exists() or not any(out_dir.iterdir()):
        return

    def clear() -> None:
        shutil.rmtree(out_dir)
        manifest.samples = [without_stage(s, stage) for s in manifest.samples]
        manifest.save(manifest_file)

    refuse_or_clear(f"{out_dir} holds {stage} outputs", differences(recorded, asked), force, keep_hint, clear, later)
