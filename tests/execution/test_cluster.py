"""The Dask path on a loopback cluster: the same shards and manifest records as an in-process run.

Models are loaded once per worker.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("distributed")

import cli  # noqa: E402
from pipeline.execution.cluster import backend_for  # noqa: E402
from pipeline.execution.runner import ShardTask, run_stage, write_shard  # noqa: E402
from pipeline.manifest import Manifest, Sample, Source  # noqa: E402
from pipeline.storage.shards import ShardReader  # noqa: E402

WORKERS = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A two-worker, single-threaded, process-based Dask cluster on 127.0.0.1 (no dashboard) and a client to it."""
    import logging

    from distributed import Client, LocalCluster

    dask_logger = logging.getLogger("distributed")
    level = dask_logger.level
    dask_logger.setLevel(logging.WARNING)  # keep the scheduler's INFO chatter out of failure reports
    try:
        with (
            LocalCluster(
                n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as local,
            Client(local) as client,
        ):
            client.wait_for_workers(WORKERS, timeout=120)
            yield local, client
    finally:
        dask_logger.setLevel(level)


class PidJob:
    """Toy shard job: one small array per sample; notes which process ran each shard in ``pid_dir``."""

    def __init__(self, pid_dir: str, kind: str = "roi") -> None:
        self.pid_dir, self.kind = pid_dir, kind

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        Path(self.pid_dir, f"{task.index}.pid").write_text(str(os.getpid()))

        def outcomes() -> Iterator[tuple[str, Any]]:
            for sample in task.samples:
                index = int(sample["id"][1:])
                frames = np.random.default_rng(index).integers(0, 256, (5 + index % 3, 24, 24, 3), dtype=np.uint8)
                yield (
                    sample["id"],
                    {
                        "arrays": {"v1": frames, "v2": frames[:, ::-1]},
                        "attrs": {"label": sample["label"]},
                        "record": {"frames": len(frames)},
                    },
                )

        return write_shard(task, self.kind, {"stage": "toy"}, outcomes(), False)


def toy_work(work: Path, n: int = 8) -> Manifest:
    """A run folder with a toy two-perspective manifest (no media needed)."""
    work.mkdir(parents=True)
    samples = [
        Sample(
            id=f"s{i:02d}",
            sources={"v1": Source(f"v1/{i}.mp4"), "v2": Source(f"v2/{i}.mp4")},
            label="ab"[i % 2],
            split=("train", "val", "test")[i % 3],
            speaker=f"p{i % 3}",
        )
        for i in range(n)
    ]
    manifest = Manifest("toy", str(work / "data"), ["v1", "v2"], samples, classes=["a", "b"])
    manifest.save(work / "manifest.jsonl")
    return manifest


def run_toy(work: Path, stage: str, shard_size: int, backend: str | None) -> Path:
    """Run ``PidJob`` as ``stage`` over a fresh toy run folder; return the folder of process-id notes."""
    manifest = toy_work(work)
    pids = work / "pids"
    pids.mkdir()
    run_stage(
        manifest,
        work / "manifest.jsonl",
        stage,
        list(manifest.samples),
        work / "roi",
        "roi",
        PidJob(str(pids)),
        shard_size=shard_size,
        backend=backend,
    )
    return pids


def shard_bytes(folder: Path, pattern: str = "*.h5") -> dict[str, bytes]:
    """File name -> bytes of every shard in ``folder``."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern))}


def stage_records(work: Path, stage: str) -> dict[str, Any]:
    """Sample id -> the stage's record in the run folder's manifest."""
    return {s.id: s.stages.get(stage) for s in Manifest.load(work / "manifest.jsonl")}


def cache_counts(client: Any, dotted: str) -> dict[str, tuple[int, int]]:
    """Worker address -> (hits, misses) of the ``functools.lru_cache`` function ``dotted`` in that worker process."""

    def probe(dotted: str = dotted) -> tuple[int, int]:
        import importlib

        module, name = dotted.rsplit(".", 1)
        info = getattr(importlib.import_module(module), name).cache_info()
        return info.hits, info.misses

    return client.run(probe)


def assert_loaded_once_per_worker(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], calls: int
) -> None:
    """Each worker that made calls built the cached model exactly once in its life, however many ``calls`` were made."""
    assert set(before) == set(after)
    made = {w: sum(after[w]) - sum(before[w]) for w in after}
    assert sum(made.values()) >= calls, (before, after)
    assert all(after[w][1] == 1 for w in after if made[w]), after


def test_toy_runner_on_the_cluster_equals_in_process(tmp_path: Path, cluster: Any) -> None:
    local, client = cluster
    run_toy(tmp_path / "local", "toy", 2, None)
    with backend_for(scheduler=local.scheduler_address) as backend:
        assert backend == "dask"
        pids = run_toy(tmp_path / "dask", "toy", 2, backend)
    assert shard_bytes(tmp_path / "dask" / "roi") == shard_bytes(tmp_path / "local" / "roi")
    assert len(shard_bytes(tmp_path / "dask" / "roi")) == 4
    assert stage_records(tmp_path / "dask", "toy") == stage_records(tmp_path / "local", "toy")
    ran_on = {int(p.read_text()) for p in pids.glob("*.pid")}
    workers = set(client.run(os.getpid).values())
    assert len(list(pids.glob("*.pid"))) == 4 and ran_on <= workers and os.getpid() not in ran_on
    assert not list((tmp_path / "dask" / "roi").glob(".*tmp*"))
    assert Manifest.load(tmp_path / "dask" / "manifest.jsonl").runs[-1]["summary"]["done"] == 8


def test_extract_backbone_loads_once_per_worker_and_matches_local(tmp_path: Path, cluster: Any) -> None:
    local, client = cluster
    work = tmp_path / "work"
    run_toy(work, "prepare", 2, None)  # toy ROI clips recorded as the prepare stage
    shutil.copytree(work, tmp_path / "local")
    assert (
        cli.main(["extract", "--quiet", "--work", str(tmp_path / "local"), "--backbone", "pixels", "--shard-size", "1"])
        == 0
    )
    before = cache_counts(client, "pipeline.execution.extract_job.load_backbone")
    assert (
        cli.main(
            [
                "extract",
                "--quiet",
                "--work",
                str(work),
                "--backbone",
                "pixels",
                "--shard-size",
                "1",
                "--scheduler",
                local.scheduler_address,
            ]
        )
        == 0
    )
    after = cache_counts(client, "pipeline.execution.extract_job.load_backbone")
    assert_loaded_once_per_worker(
        before, after, calls=8
    )  # 8 shards of one sample, 2 perspectives each: 2 builds at most
    features = "features/pixels"
    assert shard_bytes(work / features) == shard_bytes(tmp_path / "local" / features)
    assert len(shard_bytes(work / features)) == 8
    assert stage_records(work, "extract:pixels") == stage_records(tmp_path / "local", "extract:pixels")
    assert Manifest.load(work / "manifest.jsonl").runs[-1]["config"]["backend"] == "dask"


def _prepare_both(tmp_path: Path, client: Any, address: str, args: list[str], clips: int) -> None:
    """``prepare`` in-process and through the scheduler; equal shards and records.

    dlib's predictor is loaded once per worker.
    """
    local, remote = tmp_path / "local", tmp_path / "dask"
    args = [*args, "--allow-failures"]  # a synthetic clip may lose its face; failures must match too
    assert cli.main(["prepare", "--quiet", "--work", str(local), *args]) == 0
    before = cache_counts(client, "pipeline.media.faces.shape_predictor")
    assert cli.main(["prepare", "--quiet", "--work", str(remote), *args, "--scheduler", address]) == 0
    after = cache_counts(client, "pipeline.media.faces.shape_predictor")
    assert_loaded_once_per_worker(before, after, calls=clips)  # one call per frame fitted, one load per process
    assert shard_bytes(remote / "roi") == shard_bytes(local / "roi") and shard_bytes(local / "roi")
    records = stage_records(remote, "prepare")
    assert records == stage_records(local, "prepare")
    assert sum(r["status"] == "done" for r in records.values()) >= 2
    with ShardReader(next((remote / "roi").glob("roi-*.h5"))) as reader:
        assert reader.attrs["stage"] == "prepare"


def test_synthetic_prepare_on_the_cluster_equals_in_process(tmp_path: Path, cluster: Any) -> None:
    local, client = cluster
    options = {"n_per_class": 2, "n_classes": 2, "n_speakers": 2, "perspectives": 2, "frames": 12, "size": 96}
    args = [
        "--dataset",
        "synthetic",
        "--root",
        str(tmp_path / "data"),
        "--shard-size",
        "2",
        "--max-missing",
        "1",
        "--contact-sheet",
        "0",
    ]
    args += [a for key, value in options.items() for a in ("--option", f"{key}={value}")]
    _prepare_both(tmp_path, client, local.scheduler_address, args, clips=4)


def test_grid_prepare_on_the_cluster_equals_in_process(tmp_path: Path, cluster: Any, grid_dir: Path) -> None:
    local, client = cluster
    root = tmp_path / "data"
    (root / "v1").mkdir(parents=True)
    rows = []
    for i, clip in enumerate(sorted(grid_dir.glob("*.mpg"))):
        shutil.copy(clip, root / "v1" / clip.name)
        rows.append(
            {
                "id": clip.stem,
                "label": "ab"[i % 2],
                "speaker": "s1",
                "split": ("train", "val", "test")[i],
                "path:v1": f"v1/{clip.name}",
            }
        )
    with open(root / "listing.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "label", "speaker", "split", "path:v1"])
        writer.writeheader()
        writer.writerows(rows)
    args = [
        "--dataset",
        "generic",
        "--root",
        str(root),
        "--option",
        f"listing={root / 'listing.csv'}",
        "--shard-size",
        "1",
        "--contact-sheet",
        "0",
    ]
    _prepare_both(tmp_path, client, local.scheduler_address, args, clips=3)
    assert [r["status"] for r in stage_records(tmp_path / "dask", "prepare").values()] == ["done"] * 3


class KillingJob(PidJob):
    """``PidJob`` whose shard 1 kills the worker process running it, until ``cure`` exists (a crash-looping shard)."""

    def __init__(self, pid_dir: str, cure: str) -> None:
        super().__init__(pid_dir)
        self.cure = cure

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        if task.index == 1 and not Path(self.cure).exists():
            os._exit(1)
        return super().__call__(task)


def _dask_command(*args: str) -> list[str]:
    import sys

    return [str(Path(sys.executable).parent / "dask"), *args]


def _dask_env() -> dict[str, str]:
    """The environment of the scheduler and workers: the test's jobs must unpickle there too."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), str(Path(__file__).parent)])}


@pytest.fixture
def scheduler_address(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` process on loopback, started as a user would; yields its address."""
    import json
    import subprocess
    import time

    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        _dask_command(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)
        ),
        env=_dask_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield json.loads(info.read_text())["address"]
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=60)


@pytest.fixture
def real_cluster(scheduler_address: str) -> Iterator[str]:
    """The scheduler plus a `dask worker` command running two worker processes under a nanny."""
    import subprocess

    from distributed import Client

    workers = subprocess.Popen(
        _dask_command(
            "worker", scheduler_address, "--nthreads", "1", "--nworkers", "2", "--no-dashboard", "--host", "127.0.0.1"
        ),
        env=_dask_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Client(scheduler_address, timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
        yield scheduler_address
    finally:
        workers.terminate()
        workers.wait(timeout=60)


@pytest.mark.timeout(300)
def test_a_cluster_without_workers_ends_the_run_after_the_stall_timeout(tmp_path: Path, scheduler_address: str) -> None:
    """No worker, no progress: the run ends with a message after --dask-stall-timeout instead of waiting forever."""
    from pipeline.execution.runner import RunError

    manifest = toy_work(tmp_path / "work")
    (tmp_path / "pids").mkdir()
    with backend_for(scheduler=scheduler_address) as backend:
        with pytest.raises(RunError, match="no Dask worker for 3 s"):
            run_stage(
                manifest,
                tmp_path / "work" / "manifest.jsonl",
                "toy",
                list(manifest.samples),
                tmp_path / "work" / "roi",
                "roi",
                PidJob(str(tmp_path / "pids")),
                shard_size=2,
                backend=backend,
                stall_timeout=3,
            )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_shard_the_scheduler_gives_up_on_ends_the_run_and_a_rerun_completes(tmp_path: Path, real_cluster: str) -> None:
    """A shard that kills every worker it lands on ends the command with a one-line error instead of hanging; once
    the cause is gone a re-run completes it, and the output equals a local run's byte for byte."""
    from pipeline.execution.runner import RunError

    run_toy(tmp_path / "local", "toy", 2, None)
    work = tmp_path / "dask"
    manifest = toy_work(work)
    pids = work / "pids"
    pids.mkdir()
    cure = tmp_path / "cured"
    job = KillingJob(str(pids), str(cure))
    with backend_for(scheduler=real_cluster) as backend:
        with pytest.raises(RunError, match="gave up on this shard"):
            run_stage(
                manifest,
                work / "manifest.jsonl",
                "toy",
                list(manifest.samples),
                work / "roi",
                "roi",
                job,
                shard_size=2,
                backend=backend,
            )
    assert "roi-00001-of-00004.h5" not in shard_bytes(work / "roi")
    cure.write_text("ok")
    manifest = Manifest.load(work / "manifest.jsonl")
    with backend_for(scheduler=real_cluster) as backend:
        run_stage(
            manifest,
            work / "manifest.jsonl",
            "toy",
            list(manifest.samples),
            work / "roi",
            "roi",
            job,
            shard_size=2,
            backend=backend,
        )
    assert shard_bytes(work / "roi") == shard_bytes(tmp_path / "local" / "roi")
    assert stage_records(work, "toy") == stage_records(tmp_path / "local", "toy")


def test_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    """A scheduler address nobody answers on, or whose host does not resolve, gives one line naming it and why, at
    once rather than after the client's 20 s timeout."""
    import socket

    from pipeline.execution.cluster import ClusterError

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address, reason in (
        (f"tcp://127.0.0.1:{port}", f"nothing listens on port {port} of 127.0.0.1"),
        (f"127.0.0.1:{port}", f"nothing listens on port {port} of 127.0.0.1 (connection refused)"),
        ("tcp://no-such-host.invalid:8786", "host 'no-such-host.invalid' does not resolve"),
    ):
        with pytest.raises(ClusterError, match=re.escape(f"cannot reach the Dask scheduler at {address}: {reason}")):
            with backend_for(scheduler=address):
                pass


def test_a_worker_with_other_weights_refuses_the_shard(tmp_path: Path) -> None:
    """The weights a worker loads must be the ones the command checked (same SHA-256), or the shard is refused."""
    from pipeline.execution.extract_job import BackboneSpec, ExtractJob
    from pipeline.execution.runner import RunError

    job = ExtractJob(
        str(tmp_path), BackboneSpec("pixels", pixel_size=8), ("v1",), ("a",), weights_label="sha256:not-these"
    )
    task = ShardTask(0, str(tmp_path / "emb-00000-of-00001.h5"), ())
    with pytest.raises(RunError, match="not the sha256:not-these the command checked"):
        job(task)
    assert not (tmp_path / "emb-00000-of-00001.h5").exists()


class SlowJob(PidJob):
    """``PidJob`` that takes ``delay`` seconds per shard, so that a scheduler killed mid-run finds shards running."""

    def __init__(self, pid_dir: str, delay: float) -> None:
        super().__init__(pid_dir)
        self.delay = delay

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        import time

        time.sleep(self.delay)
        return super().__call__(task)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_scheduler_killed_mid_run_is_one_line_and_a_rerun_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL of the scheduler while shards run: one line saying so (no traceback logged), nothing lost; a re-run
    completes every shard byte-identical to a local run."""
    import json
    import signal
    import subprocess
    import threading
    import time

    from pipeline.execution.runner import RunError

    run_toy(tmp_path / "local", "toy", 1, None)
    info = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        _dask_command(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)
        ),
        env=_dask_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        workers = subprocess.Popen(
            _dask_command(
                "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"
            ),
            env=_dask_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        work = tmp_path / "dask"
        manifest = toy_work(work)
        (work / "pids").mkdir()
        job = SlowJob(str(work / "pids"), 1.5)

        def kill_after_first_shard() -> None:
            while not list((work / "roi").glob("roi-*.h5")) and scheduler.poll() is None:
                time.sleep(0.05)
            scheduler.send_signal(signal.SIGKILL)

        threading.Thread(target=kill_after_first_shard, daemon=True).start()
        caplog.clear()
        with pytest.raises(RunError, match="lost the Dask scheduler") as failure:
            with backend_for(scheduler=address) as backend:
                run_stage(
                    manifest,
                    work / "manifest.jsonl",
                    "toy",
                    list(manifest.samples),
                    work / "roi",
                    "roi",
                    job,
                    shard_size=1,
                    backend=backend,
                    stall_timeout=30,
                )
        assert "\n" not in str(failure.value) and "re-run" in str(failure.value)
        assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    finally:
        for process in (workers, scheduler):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=60)
    manifest = Manifest.load(work / "manifest.jsonl")
    run_stage(manifest, work / "manifest.jsonl", "toy", list(manifest.samples), work / "roi", "roi", job, shard_size=1)
    assert shard_bytes(work / "roi") == shard_bytes(tmp_path / "local" / "roi")
    assert stage_records(work, "toy") == stage_records(tmp_path / "local", "toy")
