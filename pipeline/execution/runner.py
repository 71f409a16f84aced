"""Resumable, parallel execution of per-shard work with per-sample outcomes.

A stage's samples are cut into fixed shards (the plan is saved beside the shards, so a re-run
cuts them the same way). Each shard is one task: a worker processes its samples, writes the shard
under a temporary name and renames it when complete. The parent records every finished shard's
per-sample outcomes in the manifest. A re-run skips shards already on disk (re-reading their
outcomes, so a manifest that lagged behind a kill is repaired) and redoes the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from pipeline.errors import MpviewError
from pipeline.execution.logs import get_logger, progress_disabled
from pipeline.manifest import DONE, FAILED, Manifest, Sample, replace_stage
from pipeline.storage.atomic import TMP_MARK, remove_stale_temps, write_text_atomic
from pipeline.storage.readers import open_reader, open_writer
from pipeline.storage.shards import ShardError, shard_name

log = get_logger(__name__)
DASK_STALL_TIMEOUT = 300.0  # seconds a Dask run waits with no worker before it gives up
DASK_POLL = 2.0  # seconds between checks of a Dask cluster's workers while shards run
MIN_SHARDS = 8  # a small run is cut into at least this many shards, so --jobs has work to share (the plan, and so
# the output bytes, depend on the samples only, never on the number of workers)
_sample_finished: Callable[[], None] | None = (
    None  # set while run_stage runs shards in this process: per-sample progress
)


class RunError(MpviewError, RuntimeError):
    """A stage cannot run as asked (bad plan, strict failure, ...); the message says why."""

    code = "run"


class SampleError(MpviewError):
    """A per-sample failure: recorded in the manifest with its ``code`` as the reason; the run goes on."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


class StrictFailure(RunError):
    """Raised under ``--strict`` at the first failed sample."""

    code = "strict-failure"


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: the samples of one shard and where the shard goes."""

    index: int
    path: str
    samples: tuple[dict[str, Any], ...]

    @property
    def ids(self) -> list[str]:
        return [s["id"] for s in self.samples]


@dataclass
class RunSummary:
    """What a stage run did: counts, failure reasons, time."""

    stage: str
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped_shards: int = 0
    written_shards: int = 0
    reasons: Counter = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped_shards": self.skipped_shards,
            "written_shards": self.written_shards,
            "failure_reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        """A human summary line plus up to ten failures with their reasons."""
        lines = [
            f"{self.stage}: {self.done} done, {self.failed} failed of {self.total} samples ({self.written_shards} "
            f"shards written, {self.skipped_shards} already complete) in {self.seconds:.1f}s"
        ]
        if self.reasons:
            lines.append("  failures by reason: " + ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common()))
        for failure in self.failures[:10]:
            lines.append(f"  - {failure['id']}: {failure['error']}")
        if len(self.failures) > 10:
            lines.append(f"  ... and {len(self.failures) - 10} more (see the manifest)")
        return "\n".join(lines)


def plan_shards(
    samples: list[Sample], out_dir: Path, prefix: str, shard_size: int, suffix: str = ".h5"
) -> list[ShardTask]:
    """Cut samples into shards of ``shard_size`` in manifest order; reuse the saved plan on a re-run."""
    if shard_size < 1:
        raise RunError(f"shard size must be >= 1, got {shard_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / "plan.json"
    ids = [s.id for s in samples]
    if plan_path.exists():
        try:
            plan = json.loads(plan_path.read_text())
            groups = [list(g) for g in plan["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(
                f"{plan_path}: unreadable shard plan ({exc}); delete the output folder to start over"
            ) from None
        if sorted(i for g in groups for i in g) != sorted(ids):
            raise RunError(
                f"{plan_path}: existing shards were planned for a different set of samples; use a new output folder "
                "or delete this one"
            )
    else:
        groups = [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]
        write_text_atomic(
            plan_path, json.dumps({"prefix": prefix, "shard_size": shard_size, "shards": groups}, indent=1)
        )
    by_id = {s.id: s for s in samples}
    total = len(groups)
    return [
        ShardTask(
            index, str(out_dir / shard_name(prefix, index, total, suffix)), tuple(by_id[i].to_dict() for i in group)
        )
        for index, group in enumerate(groups)
    ]


def write_shard(
    task: ShardTask,
    kind: str,
    attrs: dict[str, Any],
    results: Iterable[tuple[str, Any]],
    strict: bool = False,
    compression: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Write one shard from ``(sample_id, outcome)`` pairs and return per-sample records.

    An outcome is a ``SampleError`` (recorded as a failure) or a dict with ``arrays`` and optionally
    ``attrs``, ``extras`` and ``record`` (fields copied into the manifest's stage record).
    Under ``strict`` the first failure discards the shard and raises ``StrictFailure``. A write that
    fails (full disk, ...) discards the temporary file and raises ``RunError`` naming the shard. ``compression``:
    see ``open_writer``.
    """
    writer = _writing(task, open_writer, task.path, kind, attrs, compression)
    try:
        for sample_id, outcome in results:
            if isinstance(outcome, SampleError):
                if strict:
                    raise StrictFailure(f"sample {sample_id!r} failed ({outcome.code}): {outcome}")
                _writing(task, writer.add_failure, sample_id, str(outcome), {"reason": outcome.code})
            else:
                _writing(
                    task,
                    writer.add,
                    sample_id,
                    outcome["arrays"],
                    outcome.get("attrs"),
                    outcome.get("extras"),
                    outcome.get("record"),
                )
            if _sample_finished is not None:
                _sample_finished()
        _writing(task, writer.commit)
    except BaseException:
        writer.discard()
        raise
    return writer.records


def _writing(task: ShardTask, action: Callable[..., Any], *args: Any) -> Any:
    """Call one shard-writing step, turning an OS error (disk full, quota, I/O) into a ``RunError`` naming the shard."""
    try:
        return action(*args)
    except OSError as exc:
        raise RunError(
            f"{task.path}: cannot write the shard ({exc}); completed shards are kept, fix the cause and re-run to "
            "resume"
        ) from None


def _reconcile(
    manifest: Manifest, stage: str, tasks: list[ShardTask], redo_failed: bool, root: Path
) -> list[ShardTask]:
    """Fill the manifest from shards already on disk; return the tasks still to run."""
    positions = _positions(manifest)
    todo = []
    for task in tasks:
        path = Path(task.path)
        if not path.exists():
            todo.append(task)
            continue
        try:
            with open_reader(path) as reader:
                records = reader.records()
        except ShardError as exc:
            aside = path.with_name(path.name + ".corrupt")
            path.replace(aside)
            log.warning("%s; moved aside to %s and redoing it", exc, aside.name)
            todo.append(task)
            continue
        if set(records) != set(task.ids) or (redo_failed and any(r["status"] == FAILED for r in records.values())):
            todo.append(task)
            continue
        _record(manifest, positions, stage, task, records, root)
    return todo


def _positions(manifest: Manifest) -> dict[str, int]:
    """Sample id -> its index in ``manifest.samples`` (built once per run, not once per shard)."""
    return {s.id: i for i, s in enumerate(manifest.samples)}


def _record(
    manifest: Manifest,
    positions: dict[str, int],
    stage: str,
    task: ShardTask,
    records: dict[str, dict[str, Any]],
    root: Path,
) -> None:
    """Store one shard's per-sample outcomes, with the shard's location, under ``stage`` in the manifest."""
    location = Path(task.path).relative_to(root).as_posix() if Path(task.path).is_relative_to(root) else task.path
    for sample_id, record in records.items():
        i = positions[sample_id]
        manifest.samples[i] = replace_stage(manifest.samples[i], stage, {**record, "shard": location})


def execute(
    tasks: list[ShardTask],
    job: Callable[[ShardTask], dict[str, dict[str, Any]]],
    jobs: int = 1,
    backend: str | None = None,
    stall_timeout: float = DASK_STALL_TIMEOUT,
) -> Iterator[tuple[ShardTask, dict[str, dict[str, Any]]]]:
    """Run ``job`` on every task (in-process, on joblib workers, or on a Dask cluster); yield as they finish.

    A worker process that dies (killed, out of memory) ends the run with a ``RunError``; shards already
    written are kept and a re-run resumes. On Dask, a shard the scheduler gives up on, a lost scheduler, or
    ``stall_timeout`` seconds without any worker end the run the same way.
    """
    if jobs == 1 and backend is None:
        for task in tasks:
            yield task, job(task)
        return
    if backend == "dask":
        yield from _execute_on_dask(tasks, job, stall_timeout)
        return
    from joblib import Parallel, delayed, parallel_config

    try:
        with parallel_config(backend=backend or "loky", n_jobs=jobs):
            runner = Parallel(return_as="generator_unordered")
            for task, records in runner(delayed(_run_one)(job, task) for task in tasks):
                yield task, records
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the local workers now, not after their current shard
        if backend is None:
            _kill_local_workers()
        raise
    except concurrent.futures.BrokenExecutor as exc:  # a local worker process died, rather than a job failing
        detail = " ".join(str(exc).split())  # loky's message spans several lines; keep the error on one
        raise RunError(
            f"a worker process died ({type(exc).__name__}: {detail}); completed shards are kept, re-run the same "
            "command to resume"
        ) from exc


def _capped_jobs(jobs: int, tasks: int, backend: str | None) -> int:
    """Local workers: no more than there are shards to run or CPUs to run them (a note says when that lowers --jobs)."""
    if backend is not None or jobs <= 1:
        return jobs
    capped = max(1, min(jobs, tasks, os.cpu_count() or 1))
    if capped < jobs:  # more workers than this machine has CPUs is a warning: the user asked for what cannot be
        note = log.warning if jobs > (os.cpu_count() or 1) else log.info
        note("--jobs %d lowered to %d (%d shard(s) to run, %d CPU(s))", jobs, capped, tasks, os.cpu_count() or 1)
    return capped


def _kill_local_workers() -> None:
    """Terminate joblib's reusable loky workers (they would otherwise finish, and publish, the shard they hold)."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True, kill_workers=True)


def _execute_on_dask(
    tasks: list[ShardTask], job: Callable[[ShardTask], dict[str, dict[str, Any]]], stall_timeout: float
) -> Iterator[tuple[ShardTask, dict[str, dict[str, Any]]]]:
    """Submit every shard to the current Dask client and yield results as they come; never wait forever."""
    from distributed import get_client, wait
    from distributed.scheduler import KilledWorker

    client = get_client()
    futures = {
        client.submit(_run_one, job, task, pure=False, key=f"shard-{task.index:05d}-{uuid.uuid4().hex[:8]}"): task
        for task in tasks
    }
    remaining, idle_since = set(futures), None
    try:
        while remaining:
            try:
                done, remaining = wait(remaining, timeout=DASK_POLL, return_when="FIRST_COMPLETED")
            except TimeoutError:
                idle_since = _check_workers(client, idle_since, stall_timeout)
                continue
            idle_since = None
            for future in done:
                if future.status == "error" and isinstance(future.exception(), KilledWorker):
                    raise RunError(
                        f"{futures[future].path}: the Dask scheduler gave up on this shard after it "
                        f"killed {_allowed_failures()} workers; completed shards are kept, fix the cause "
                        f"(memory?) and re-run the same command to resume"
                    )
                if future.status == "cancelled":
                    raise RunError(
                        f"{futures[future].path}: the Dask cluster dropped this shard (scheduler restarted?); "
                        "completed shards are kept, re-run the same command to resume"
                    )
                yield future.result()
    except (OSError, asyncio.CancelledError, concurrent.futures.CancelledError) as exc:  # the scheduler went away
        raise _lost_scheduler(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    finally:
        with contextlib.suppress(Exception):
            client.cancel(list(remaining))


def _lost_scheduler(reason: str) -> RunError:
    """The one line for a scheduler that died or became unreachable mid-run."""
    return RunError(
        f"lost the Dask scheduler ({' '.join(reason.split())}); completed shards are kept, re-run the same "
        "command to resume"
    )


def _check_workers(client: Any, idle_since: float | None, stall_timeout: float) -> float | None:
    """Track how long the cluster has had no worker; past ``stall_timeout`` seconds that ends the run."""
    if client.status != "running":  # the scheduler is gone: its last word on workers is stale
        raise _lost_scheduler(f"the client is {client.status}")
    if client.scheduler_info().get("workers"):
        return None
    now = time.monotonic()
    if idle_since is None:
        log.warning("the Dask cluster has no workers; waiting up to %.0f s for one", stall_timeout)
        return now
    if now - idle_since > stall_timeout:
        raise RunError(
            f"no Dask worker for {stall_timeout:.0f} s, so no progress; start workers (dask worker ADDRESS) "
            "and re-run the same command to resume"
        )
    return idle_since


def _allowed_failures() -> int:
    """How many worker deaths the Dask scheduler allows one task before giving up on it."""
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures", 3))


def _run_one(
    job: Callable[[ShardTask], dict[str, dict[str, Any]]], task: ShardTask
) -> tuple[ShardTask, dict[str, dict[str, Any]]]:
    return task, job(task)


def run_stage(
    manifest: Manifest,
    manifest_path: Path,
    stage: str,
    samples: list[Sample],
    out_dir: Path,
    prefix: str,
    job: Callable[[ShardTask], dict[str, dict[str, Any]]],
    *,
    shard_size: int = 32,
    jobs: int = 1,
    backend: str | None = None,
    redo_failed: bool = False,
    config: dict[str, Any] | None = None,
    save_every: float = 2.0,
    suffix: str = ".h5",
    stall_timeout: float = DASK_STALL_TIMEOUT,
) -> RunSummary:
    """Plan, resume and run a stage over ``samples``, keeping the manifest current; return the summary."""
    started = time.time()
    work_root = manifest_path.parent.resolve()
    out_dir = out_dir.resolve()
    removed = remove_stale_temps(out_dir) + _remove_manifest_temps(manifest_path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)
    tasks = plan_shards(samples, out_dir, prefix, shard_size, suffix)
    todo = _reconcile(manifest, stage, tasks, redo_failed, work_root)
    summary = RunSummary(stage, total=len(samples), skipped_shards=len(tasks) - len(todo))
    if summary.skipped_shards:
        log.info("%d of %d shards already complete; resuming", summary.skipped_shards, len(tasks))
    clock = time.monotonic()
    run_record = len(manifest.runs)  # recorded before any shard is written, so even a killed run's settings are known
    manifest.add_run(stage, config or {}, {"stage": stage, "status": "running"}, started, None)
    _save(manifest, manifest_path)
    last_save = time.monotonic()
    interval = max(save_every, 20 * (last_save - clock))  # saving a large manifest stays under ~5% of the run
    positions = _positions(manifest)
    # a bar written to a file or a pipe repeats its last state on close, beside the summary line: only on a terminal
    bar = tqdm(
        total=sum(len(t.samples) for t in todo),
        desc=stage,
        unit="sample",
        disable=progress_disabled() or not sys.stderr.isatty(),
    )
    shown = [0]  # samples of the running shard already counted by the per-sample hook (in-process runs)

    def count_sample() -> None:
        bar.update(1)
        shown[0] += 1

    global _sample_finished
    if jobs == 1 and backend is None:
        _sample_finished = count_sample
    failing = True
    try:
        for task, records in execute(todo, job, _capped_jobs(jobs, len(todo), backend), backend, stall_timeout):
            _record(manifest, positions, stage, task, records, work_root)
            summary.written_shards += 1
            bar.update(len(task.samples) - shown[0])
            shown[0] = 0
            if time.monotonic() - last_save > interval:
                _save(manifest, manifest_path)
                last_save = time.monotonic()
        # every task has finished: temporary files still here belong to attempts that died and were retried
        remove_stale_temps(out_dir)
        failing = False
    finally:
        _sample_finished = None
        if failing:  # interrupted or failed: the workers are stopped, so their half-written shards are nobody's
            remove_stale_temps(out_dir)
        bar.close()
        _count(manifest, stage, samples, summary)
        summary.seconds = time.time() - started
        manifest.runs[run_record].update(summary=summary.to_dict(), finished=time.time())
        _save(manifest, manifest_path, failing)
    return summary


def auto_shard_size(count: int, largest: int) -> int:
    """Samples per shard when none is asked for: ``largest``, or fewer so that a small run still makes MIN_SHARDS."""
    fitted = max(1, min(largest, -(-count // MIN_SHARDS)))
    if fitted < largest:
        log.debug(
            "%d samples: shards of %d samples (not %d), so that parallel workers share them", count, fitted, largest
        )
    return fitted


def _remove_manifest_temps(manifest_path: Path) -> int:
    """Delete temporary copies of the manifest left by a run killed while saving it; return how many."""
    stale = [p for p in manifest_path.parent.glob(f".{manifest_path.name}{TMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _save(manifest: Manifest, path: Path, failing: bool = False) -> None:
    """Save the manifest.

    An OS error (full disk) becomes a ``RunError``, or only a log line when the run is already failing.
    """
    try:
        manifest.save(path)
    except OSError as exc:
        message = (
            f"{path}: cannot save the manifest ({exc}); the previous version is kept and the next run recovers "
            "finished shards from disk"
        )
        if failing:  # let the error that stopped the run be the one reported
            log.error("%s", message)
            return
        raise RunError(message) from None


def _count(manifest: Manifest, stage: str, samples: list[Sample], summary: RunSummary) -> None:
    wanted = {s.id for s in samples}
    for sample in manifest.samples:
        if sample.id not in wanted:
            continue
        status = sample.status(stage)
        if status == DONE:
            summary.done += 1
        elif status == FAILED:
            summary.failed += 1
            record = sample.stages[stage]
            summary.reasons[record.get("reason", "error")] += 1
            summary.failures.append({"id": sample.id, "error": record.get("error", "")})
