"""Options and run handling shared by the per-sample stages (prepare, extract)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from pipeline.logs import get_logger
from pipeline.manifest import Manifest, without_stage
from pipeline.settings import SettingsChanged, differences, recorded_settings
from pipeline.runner import RunSummary

log = get_logger(__name__)
MANIFEST_NAME = "manifest.jsonl"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, refused at parse time with the value in the message."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def add_work_argument(parser: argparse.ArgumentParser) -> None:
    """``--work``: the run folder holding the manifest and every stage's outputs."""
    parser.add_argument("--work", type=Path, default=Path("work"), help="run folder: manifest.jsonl and all outputs (default: ./work)")


def add_execution_arguments(parser: argparse.ArgumentParser, shard_size: int) -> None:
    """Parallelism, sharding and failure-policy options."""
    group = parser.add_argument_group("execution")
    group.add_argument("--jobs", type=positive_int, default=1, help="local worker processes (default 1: in-process)")
    group.add_argument("--scheduler", metavar="ADDRESS", help="run shards on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    group.add_argument("--dask-local", type=non_negative_int, default=0, metavar="N", help="start a local Dask cluster of N workers for this run")
    group.add_argument("--dask-stall-timeout", type=positive_int, default=300, metavar="SECONDS",
                       help="on Dask: end the run when the cluster has had no worker for this long")
    group.add_argument("--shard-size", type=positive_int, help=f"samples per shard (default {shard_size}, fewer when the run has under "
                       f"{8 * shard_size} samples, so that --jobs workers share them); fixed by the first run")
    policy = group.add_mutually_exclusive_group()
    policy.add_argument("--strict", action="store_true", help="stop at the first failed sample")
    policy.add_argument("--allow-failures", action="store_true", help="exit 0 even when some samples failed")
    group.add_argument("--retry-failed", action="store_true", help="redo shards holding failed samples")
    group.add_argument("--force", action="store_true", help="when the options differ from those the existing outputs "
                       "were made with: delete those outputs and redo every sample (refused while later stages' outputs exist)")


def shard_size(args: argparse.Namespace, count: int, default: int) -> int:
    """``--shard-size``, or the automatic size for ``count`` samples (at most ``default``)."""
    from pipeline.runner import auto_shard_size

    return args.shard_size or auto_shard_size(count, default)


def guard_outputs(manifest: Manifest, manifest_file: Path, stage: str, asked: dict[str, Any], out_dir: Path, force: bool,
                  later: list[Path]) -> None:
    """Stop when ``stage``'s outputs on disk were made with other settings than ``asked``; with ``force`` delete them.

    ``later`` are the folders of outputs made from these (features, models): ``--force`` is refused while they hold
    anything, so nothing downstream silently mixes old and new inputs.
    """
    recorded = recorded_settings(manifest, stage)
    if recorded is None or not out_dir.exists() or not any(out_dir.iterdir()):
        return
    changed = differences(recorded, asked)
    if not changed:
        return
    where = f"{out_dir} holds {stage} outputs made with other settings ({'; '.join(changed)})"
    if not force:
        raise SettingsChanged(f"{where}: re-run with the same options, pass --force to redo them all with the new ones, "
                              f"or use another --work")
    busy = [str(p) for p in later if p.exists() and any(p.iterdir())]
    if busy:
        raise SettingsChanged(f"{where}; --force would leave {', '.join(busy)} made from the old ones: delete "
                              f"{' and '.join(busy)} first, or use another --work")
    log.warning("%s: deleting them to redo every sample (--force)", where)
    shutil.rmtree(out_dir)
    manifest.samples = [without_stage(s, stage) for s in manifest.samples]
    manifest.save(manifest_file)


def finish(summary: RunSummary, allow_failures: bool) -> int:
    """Log the run summary; exit status 1 when samples failed unless failures are allowed."""
    text = summary.describe()
    (log.warning if summary.failed else log.info)("%s", text)
    if summary.failed and not allow_failures:
        log.error("%d sample(s) failed; pass --allow-failures to accept that (exit 0)", summary.failed)
        return 1
    return 0


def manifest_path(work: Path) -> Path:
    """Where a run folder keeps its manifest."""
    return work / MANIFEST_NAME
