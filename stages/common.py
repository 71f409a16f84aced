"""Command-line options shared by the stages, and the exit status of a per-sample run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.execution.runner import RunSummary
from pipeline.verbs.common import ExecutionConfig

log = get_logger(__name__)


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


def field_type(config: type, name: str):
    """An argparse type for field ``name`` of a config dataclass: the text as the field's type, then the very checks
    the config runs when built (``pipeline.execution.settings.option``), refused at parse time with their message."""
    from pipeline.execution.settings import field_types

    return value_type(name, field_types(config)[name], config.__dataclass_fields__[name].metadata)


def value_type(name: str, kind: type, meta: Any):
    """An argparse type: the text as ``kind``, then the checks ``meta`` holds (see ``field_type``)."""
    from pipeline.execution.settings import check_value

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        try:
            return check_value(name, kind, value, meta)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = kind.__name__
    return parse


def add_work_argument(parser: argparse.ArgumentParser) -> None:
    """``--work``: the run folder holding the manifest and every stage's outputs."""
    parser.add_argument(
        "--work", type=Path, default=Path("work"), help="run folder: manifest.jsonl and all outputs (default: ./work)"
    )


def add_execution_arguments(parser: argparse.ArgumentParser, shard_size: int) -> None:
    """Parallelism, sharding and failure-policy options."""
    group = parser.add_argument_group("execution")
    group.add_argument("--jobs", type=positive_int, default=1, help="local worker processes (default 1: in-process)")
    group.add_argument(
        "--scheduler", metavar="ADDRESS", help="run shards on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786"
    )
    group.add_argument(
        "--dask-local",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="start a local Dask cluster of N workers for this run",
    )
    group.add_argument(
        "--dask-stall-timeout",
        type=positive_int,
        default=300,
        metavar="SECONDS",
        help="on Dask: end the run when the cluster has had no worker for this long",
    )
    group.add_argument(
        "--shard-size",
        type=positive_int,
        help=f"samples per shard (default {shard_size}, fewer when the run has under "
        f"{8 * shard_size} samples, so that --jobs workers share them); fixed by the first run",
    )
    policy = group.add_mutually_exclusive_group()
    policy.add_argument("--strict", action="store_true", help="stop at the first failed sample")
    policy.add_argument("--allow-failures", action="store_true", help="exit 0 even when some samples failed")
    group.add_argument("--retry-failed", action="store_true", help="redo shards holding failed samples")
    group.add_argument(
        "--force",
        action="store_true",
        help="when the options differ from those the existing outputs "
        "were made with: delete those outputs and redo every sample (refused while later stages' outputs exist)",
    )


def execution_from(args: argparse.Namespace) -> ExecutionConfig:
    """The execution options as the verbs' config."""
    return ExecutionConfig(
        jobs=args.jobs,
        scheduler=args.scheduler,
        dask_local=args.dask_local,
        dask_stall_timeout=args.dask_stall_timeout,
        shard_size=args.shard_size,
        strict=args.strict,
        retry_failed=args.retry_failed,
        force=args.force,
    )


def finish(summary: RunSummary, allow_failures: bool) -> int:
    """Log the run summary; exit status 1 when samples failed unless failures are allowed."""
    text = summary.describe()
    (log.warning if summary.failed else log.info)("%s", text)
    if summary.failed and not allow_failures:
        log.error("%d sample(s) failed; pass --allow-failures to accept that (exit 0)", summary.failed)
        return 1
    return 0
