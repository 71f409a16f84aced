"""Faults and bad inputs.

Killed workers and runs, a full disk, corrupted shards and manifests, hostile names and paths, wrong weights.

Every case ends by checking that no sample was lost; the last test prints the suite's tally and writes it as JSON.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import cli
from pipeline.execution.runner import RunError, ShardTask, run_stage, write_shard
from pipeline.manifest import Manifest, Sample, Source
from pipeline.storage.atomic import file_sha256
from pipeline.storage.readers import open_reader, read_samples
from pipeline.storage.shards import ShardError, ShardReader, ShardWriter, group_name

REPO = Path(__file__).resolve().parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- shared pieces ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tally() -> dict[str, Any]:
    """What the suite did to the pipeline, filled in by each case and reported by the last test."""
    return {
        "runs_killed": 0,
        "resumed": 0,
        "samples_lost": 0,
        "bad_inputs_tried": 0,
        "mismatched_outputs_reused": 0,
        "checkpoints_lost": 0,
        "history_rows_duplicated": 0,
        "tracebacks": 0,
        "tried": 0,
        "cases": [],
    }


@pytest.fixture(autouse=True)
def counted(request: pytest.FixtureRequest, tally: dict[str, Any]) -> None:
    """Every case of the suite counts as tried.

    It counts as OK when it reaches the end and names itself in ``cases``.
    """
    if request.node.name != "test_tally":
        tally["tried"] += 1


def frames_for(sample_id: str) -> np.ndarray:
    """Deterministic toy ROI frames for any id (unicode, slashes and dots included)."""
    seed = int(hashlib.sha1(sample_id.encode("utf-8")).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (4 + seed % 3, 16, 16, 3), dtype=np.uint8)


class ToyJob:
    """Writes toy ROI clips.

    On shard ``crash_shard`` the process dies mid-shard (``os._exit``) until ``marker`` exists.
    """

    def __init__(self, crash_shard: int | None = None, marker: str | None = None) -> None:
        self.crash_shard, self.marker = crash_shard, marker

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        def outcomes() -> Iterator[tuple[str, Any]]:
            for n, sample in enumerate(task.samples):
                if n == 1 and task.index == self.crash_shard and self.marker and not Path(self.marker).exists():
                    Path(self.marker).write_text(str(os.getpid()))
                    os._exit(3)  # killed with the first sample already in the temporary shard
                frames = frames_for(sample["id"])
                yield (
                    sample["id"],
                    {"arrays": {"v1": frames}, "attrs": {"label": sample["label"]}, "record": {"frames": len(frames)}},
                )

        return write_shard(task, "roi", {"stage": "toy"}, outcomes())


def toy_work(work: Path, n: int = 8, ids: list[str] | None = None) -> Manifest:
    """A run folder with a one-perspective toy manifest."""
    work.mkdir(parents=True)
    ids = ids or [f"s{i:02d}" for i in range(n)]
    samples = [
        Sample(id=i, sources={"v1": Source(f"v1/{k}.mp4")}, label="ab"[k % 2], split=("train", "val", "test")[k % 3])
        for k, i in enumerate(ids)
    ]
    manifest = Manifest("toy", str(work / "data"), ["v1"], samples, classes=["a", "b"])
    manifest.save(work / "manifest.jsonl")
    return manifest


def run_toy(work: Path, job: Any, stage: str = "toy", shard_size: int = 2, **kw: Any):
    """Run (or resume) ``job`` over the run folder's manifest as ``stage``."""
    manifest = Manifest.load(work / "manifest.jsonl")
    return run_stage(
        manifest,
        work / "manifest.jsonl",
        stage,
        list(manifest.samples),
        work / "out",
        "toy",
        job,
        shard_size=shard_size,
        **kw,
    )


def clean_run(tmp_path: Path, n: int = 8, shard_size: int = 2) -> dict[str, bytes]:
    """Shards of an uninterrupted in-process run, for comparison."""
    work = tmp_path / "clean"
    toy_work(work, n)
    run_toy(work, ToyJob(), shard_size=shard_size)
    return shard_bytes(work / "out")


def shard_bytes(folder: Path) -> dict[str, bytes]:
    """File name -> bytes of every HDF5 shard in ``folder``."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.h5"))}


def temps(folder: Path) -> list[Path]:
    """Temporary files (``.name.tmp-*``) anywhere under ``folder``."""
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def lost(work: Path, stage: str, ids: list[str], allowed_failures: dict[str, str] | None = None) -> int:
    """Samples not recorded as done (or failed for an expected reason).

    Also those recorded done but unreadable from their shard.
    """
    manifest = Manifest.load(work / "manifest.jsonl")
    by_id = manifest.by_id()
    missing = 0
    for sample_id in ids:
        record = by_id[sample_id].stages.get(stage, {})
        if record.get("status") == "failed" and (allowed_failures or {}).get(sample_id) == record.get("reason"):
            continue
        if record.get("status") != "done":
            missing += 1
            continue
        try:
            with ShardReader(work / record["shard"]) as reader:
                reader.read(sample_id)
        except ShardError:
            missing += 1
    return missing


def assert_consistent(work: Path, stage: str) -> None:
    """After a failed run: the manifest loads and every final shard is complete.

    Every 'done' sample is in its shard.
    """
    manifest = Manifest.load(work / "manifest.jsonl")
    for path in (work / "out").glob("*.h5"):
        with open_reader(path) as reader:
            assert set(reader.records()) <= set(manifest.by_id())
    for sample in manifest:
        if sample.status(stage) == "done":
            with ShardReader(work / sample.stages[stage]["shard"]) as reader:
                assert sample.id in reader


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged at ERROR level (what the CLI prints for a failed command)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- killed workers and runs -----------------------------------------------------------------


def test_loky_worker_killed_mid_task_fails_cleanly_and_resumes(tmp_path: Path, tally: dict[str, Any]) -> None:
    clean = clean_run(tmp_path)
    work = tmp_path / "killed"
    toy_work(work)
    job = ToyJob(crash_shard=1, marker=str(tmp_path / "crashed"))
    with pytest.raises(RunError, match="worker process died") as failure:
        run_toy(work, job, jobs=2)
    tally["runs_killed"] += 1
    assert "\n" not in str(failure.value) and "re-run" in str(failure.value)
    assert (tmp_path / "crashed").exists()
    assert not (work / "out" / "toy-00001-of-00004.h5").exists()
    assert_consistent(work, "toy")
    summary = run_toy(work, job, jobs=2)
    tally["resumed"] += 1
    assert (summary.done, summary.failed) == (8, 0)
    assert shard_bytes(work / "out") == clean and not temps(work / "out")
    tally["samples_lost"] += lost(work, "toy", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append("loky-worker-killed")


@pytest.mark.slow
def test_dask_worker_killed_mid_task_loses_nothing(tmp_path: Path, tally: dict[str, Any]) -> None:
    pytest.importorskip("distributed")
    from pipeline.execution.cluster import backend_for

    clean = clean_run(tmp_path)
    work = tmp_path / "killed"
    toy_work(work)
    job = ToyJob(crash_shard=1, marker=str(tmp_path / "crashed"))
    with backend_for(dask_local=2) as backend:
        try:
            summary = run_toy(work, job, backend=backend)  # the scheduler normally retries the task elsewhere
        except RunError as exc:  # or gives up on it (KilledWorker): then a re-run resumes
            assert "worker process died" in str(exc)
            summary = run_toy(work, job)
            tally["resumed"] += 1
    tally["runs_killed"] += 1
    assert (tmp_path / "crashed").exists()
    assert (summary.done, summary.failed) == (8, 0)
    assert shard_bytes(work / "out") == clean and not temps(work / "out")
    tally["samples_lost"] += lost(work, "toy", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append("dask-worker-killed")


RUN_SCRIPT = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import numpy as np
from pipeline.manifest import Manifest, Sample, Source
from pipeline.execution.runner import run_stage, write_shard

work, delay, beat = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
path = work / "manifest.jsonl"
if path.exists():
    manifest = Manifest.load(path)
else:
    work.mkdir(parents=True, exist_ok=True)
    samples = [Sample(id=f"s{{i:02d}}", sources={{"v1": Source(f"{{i}}.mp4")}}, label="ab"[i % 2]) for i in range({n})]
    manifest = Manifest("toy", str(work), ["v1"], samples)
    manifest.save(path)

def job(task):
    with open(beat, "a") as fh:
        fh.write(f"{{task.index}}\\n")
    def outcomes():
        for sample in task.samples:
            time.sleep(delay)
            i = int(sample["id"][1:])
            yield sample["id"], {{"arrays": {{"v1": np.full((3, 8, 8), i, np.uint8)}}, "record": {{"i": i}}}}
    return write_shard(task, "roi", {{"stage": "toy"}}, outcomes())

summary = run_stage(
    manifest, path, "toy", list(manifest.samples), work / "out", "toy", job, shard_size=3, save_every=0.0
)
print(json.dumps(summary.to_dict()))
"""


@pytest.mark.slow
def test_run_killed_at_random_points_resumes_to_identical_shards(tmp_path: Path, tally: dict[str, Any]) -> None:
    n, delay = 15, 0.08
    script = tmp_path / "toy_run.py"
    script.write_text(RUN_SCRIPT.format(repo=str(REPO), n=n))

    def command(work: Path, beat: Path) -> list[str]:
        return [sys.executable, str(script), str(work), str(delay), str(beat)]

    subprocess.run(command(tmp_path / "clean", tmp_path / "clean.beat"), check=True, capture_output=True)
    work, beat = tmp_path / "killed", tmp_path / "killed.beat"
    rng = random.Random(20240607)
    kills = 0
    for _ in range(6):
        beats_before = beat.read_text().count("\n") if beat.exists() else 0
        proc = subprocess.Popen(command(work, beat), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (
            proc.poll() is None
            and time.monotonic() < deadline
            and (not beat.exists() or beat.read_text().count("\n") == beats_before)
        ):
            time.sleep(0.01)  # wait until this attempt is working on its first shard
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            break  # finished before the kill landed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if (work / "manifest.jsonl").exists():
            assert_consistent(work, "toy")  # loadable and truthful after every kill
    final = subprocess.run(command(work, beat), check=True, capture_output=True, text=True)
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    tally["runs_killed"] += kills
    tally["resumed"] += kills
    assert kills >= 2, "the kills should land mid-run"
    assert summary["done"] == n and summary["failed"] == 0
    assert shard_bytes(work / "out") == shard_bytes(tmp_path / "clean" / "out")
    assert (work / "out" / "plan.json").read_text() == (tmp_path / "clean" / "out" / "plan.json").read_text()
    assert not temps(work) and [s.status("toy") for s in Manifest.load(work / "manifest.jsonl")] == ["done"] * n
    tally["samples_lost"] += lost(work, "toy", [f"s{i:02d}" for i in range(n)])
    tally["cases"].append("random-kills")


# -- full disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["add", "close", "everywhere"])
def test_full_disk_fails_cleanly_and_resumes(
    tmp_path: Path, tally: dict[str, Any], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    clean = clean_run(tmp_path, shard_size=3)
    work = tmp_path / "full"
    toy_work(work)
    state = {"full": False}
    original_add, original_close, original_fsync = ShardWriter.add, ShardWriter._close, os.fsync

    def add(self: ShardWriter, *args: Any, **kwargs: Any) -> None:
        if where != "close" and self.path.name.startswith("toy-00001") and self.records:
            state["full"] = True  # the second sample of the second shard hits the full disk
            raise ENOSPC
        original_add(self, *args, **kwargs)

    def close(self: ShardWriter) -> None:
        original_close(self)
        if self.path.name.startswith("toy-00001"):
            raise ENOSPC  # the final flush of the second shard fails

    def fsync(fd: int) -> None:
        if state["full"]:
            raise ENOSPC
        original_fsync(fd)

    monkeypatch.setattr(ShardWriter, "add", add)
    if where == "close":
        monkeypatch.setattr(ShardWriter, "_close", close)
    if where == "everywhere":
        monkeypatch.setattr(os, "fsync", fsync)  # from then on the manifest cannot be saved either
    with pytest.raises(RunError, match="No space left on device") as failure:
        run_toy(work, ToyJob(), shard_size=3)
    monkeypatch.undo()
    tally["bad_inputs_tried"] += 1
    message = str(failure.value)
    assert "toy-00001-of-00003.h5" in message and "\n" not in message
    assert (work / "out" / "toy-00000-of-00003.h5").exists()
    assert not (work / "out" / "toy-00001-of-00003.h5").exists() and not temps(work / "out")
    assert_consistent(work, "toy")
    statuses = [s.status("toy") for s in Manifest.load(work / "manifest.jsonl")]
    if where == "everywhere":
        assert "done" not in statuses[3:]  # the manifest kept its last good version; the shard on disk is the truth
    else:
        assert statuses[:3] == ["done"] * 3 and set(statuses[3:]) == {None}
    summary = run_toy(work, ToyJob(), shard_size=3)
    tally["resumed"] += 1
    assert (summary.done, summary.skipped_shards) == (8, 1)
    assert shard_bytes(work / "out") == clean
    tally["samples_lost"] += lost(work, "toy", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append(f"full-disk-{where}")


@contextlib.contextmanager
def small_disk(folder: Path, size: int) -> Iterator[Callable[[int], None]]:
    """A tmpfs of ``size`` bytes mounted on ``folder``, yielding a function that resizes it; skips where mounting is
    not allowed (the byte-count writers above cover the full disk there)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(folder)], check=True, capture_output=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def cli_run(*args: str) -> subprocess.CompletedProcess:
    """``mpview ARGS`` in a child process (a crash of the HDF5 library would take pytest down with it)."""
    return subprocess.run([sys.executable, str(Path(cli.__file__)), *args], capture_output=True, text=True, timeout=600)


def assert_one_line_failure(result: subprocess.CompletedProcess, tally: dict[str, Any], *names: str) -> str:
    """A failed command printed one error line, no traceback, no "bug", exited 2; returns that line."""
    tally["tracebacks"] += result.stderr.count("Traceback")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "bug" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert all(name in line for name in names), line
    return line


@pytest.mark.slow
def test_full_disk_at_any_point_of_prepare_is_one_line_and_resumes(tmp_path: Path, tally: dict[str, Any]) -> None:
    """A tmpfs too small for the synthetic data, the manifest, the shards or the contact sheet: one line naming the
    file and the cause each time (never a crash of HDF5), and the same command with space finishes byte-identical."""
    options = [
        "--dataset",
        "synthetic",
        "--option",
        "n_per_class=3",
        "--option",
        "n_classes=2",
        "--option",
        "frames=20",
    ]
    assert cli_run("prepare", "-q", "--work", str(tmp_path / "clean"), *options).returncode == 0
    clean = shard_bytes(tmp_path / "clean" / "roi")
    total = sum(p.stat().st_size for p in (tmp_path / "clean").rglob("*") if p.is_file())
    for fraction in (0.01, 0.08, 0.3, 0.6, 0.97):
        disk = tmp_path / f"disk-{fraction}"
        with small_disk(disk, int(total * fraction) // 4096 * 4096) as resize:
            work = disk / "work"
            command = ["prepare", "-q", "--work", str(work), *options]
            line = assert_one_line_failure(cli_run(*command), tally, "No space left on device", str(work))
            assert ".tmp-" not in line and not temps(work), line  # the file named is the one the user knows
            tally["bad_inputs_tried"] += 1
            resize(64 << 20)
            assert cli_run(*command).returncode == 0
            tally["resumed"] += 1
            assert shard_bytes(work / "roi") == clean
            tally["samples_lost"] += lost(work, "prepare", [s.id for s in Manifest.load(work / "manifest.jsonl")])
    tally["cases"].append("full-disk-tmpfs-prepare")


@pytest.mark.slow
def test_full_disk_during_train_names_the_file_and_resume_logs_each_epoch_once(
    tmp_path: Path, tally: dict[str, Any]
) -> None:
    """Training on a disk that fills up after a few epochs: one line naming the file; with room again, the same
    command resumes and history.csv holds each epoch once, as history.json does."""
    work = tmp_path / "roomy"
    assert cli_run("prepare", "-q", "--work", str(work), *SYNTHETIC).returncode == 0
    assert cli_run("extract", "-q", "--work", str(work), "--backbone", "pixels", "--pixel-size", "8").returncode == 0
    for shard in (work / "roi").glob("*.h5"):
        shard.unlink()  # training reads the features only: the small disk holds them and what train writes
    with small_disk(tmp_path / "disk", 64 << 20) as resize:
        small = tmp_path / "disk" / "work"
        shutil.copytree(work, small)
        resize(shutil.disk_usage(small).used + (1400 << 10))  # room for about three epochs' checkpoints and backups
        command = ["train", "-q", "--work", str(small), "--units", "4", "--epochs", "4"]
        line = assert_one_line_failure(cli_run(*command), tally, "No space left on device", str(small / "models"))
        tally["bad_inputs_tried"] += 1
        resize(64 << 20)
        assert cli_run(*command).returncode == 0, line
        tally["resumed"] += 1
        [run] = (small / "models").iterdir()
        epochs = [row.split(",")[0] for row in (run / "history.csv").read_text().splitlines()[1:]]
        assert epochs == ["0", "1", "2", "3"] and len(json.loads((run / "history.json").read_text())["loss"]) == 4
        tally["history_rows_duplicated"] += len(epochs) - len(set(epochs))
    tally["cases"].append("full-disk-tmpfs-train")


def prepared_work(tmp_path: Path, n: int = 8, ids: list[str] | None = None) -> Path:
    """A run folder whose samples finished a toy ``prepare`` (ROI shards of 2 samples), ready for ``extract``."""
    work = tmp_path / "work"
    toy_work(work, n, ids)
    manifest = Manifest.load(work / "manifest.jsonl")
    run_stage(
        manifest,
        work / "manifest.jsonl",
        "prepare",
        list(manifest.samples),
        work / "roi",
        "roi",
        ToyJob(),
        shard_size=2,
    )
    return work


def extract(work: Path, *extra: str) -> int:
    return cli.main(["extract", "--quiet", "--work", str(work), "--backbone", "pixels", "--pixel-size", "8", *extra])


def test_full_disk_during_extract_is_a_one_line_cli_error(
    tmp_path: Path, tally: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    work = prepared_work(tmp_path)
    original_add = ShardWriter.add

    def add(self: ShardWriter, *args: Any, **kwargs: Any) -> None:
        if self.kind == "embedding" and "emb-00001" in self.path.name:
            raise ENOSPC
        original_add(self, *args, **kwargs)

    monkeypatch.setattr(ShardWriter, "add", add)
    assert extract(work, "--shard-size", "4") == 2
    monkeypatch.undo()
    tally["bad_inputs_tried"] += 1
    [message] = error_lines(caplog)
    assert "No space left on device" in message and "emb-00001-of-00002.h5" in message and "\n" not in message
    features = work / "features" / "pixels"
    assert [p.name for p in features.glob("*.h5")] == ["emb-00000-of-00002.h5"] and not temps(features)
    assert extract(work, "--shard-size", "4") == 0
    tally["resumed"] += 1
    tally["samples_lost"] += lost(work, "extract:pixels", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append("full-disk-cli")


def test_impossible_extract_options_are_refused_before_any_folder(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    """`--pca` beyond the pixels per frame or the training frames is one line naming the option, leaving no empty
    features folder; `--pca 0` is refused by the parser; `--jobs` beyond the CPUs is lowered with a warning."""
    work = prepared_work(tmp_path)
    for pca, reason in (("100000", "at most that many components"), ("50", "prepared frames to fit it on")):
        caplog.clear()
        assert extract(work, "--pca", pca) == 2
        [message] = error_lines(caplog)
        assert f"--pca {pca}" in message and reason in message and "\n" not in message
        assert not (work / "features").exists()
    with pytest.raises(SystemExit):
        extract(work, "--pca", "0")
    assert "--pca" in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert extract(work, "--jobs", "1000") == 0
    assert any("--jobs 1000 lowered" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    tally["bad_inputs_tried"] += 4
    tally["samples_lost"] += lost(work, "extract:pixels", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append("impossible-extract-options")


# -- corrupted shards and manifests ----------------------------------------------------------


def test_corrupted_roi_shards_fail_per_sample_naming_the_shard(tmp_path: Path, tally: dict[str, Any]) -> None:
    work = prepared_work(tmp_path)
    roi = work / "roi"
    truncated, flipped = roi / "roi-00001-of-00004.h5", roi / "roi-00002-of-00004.h5"
    truncated.write_bytes(truncated.read_bytes()[:1500])
    raw = bytearray(flipped.read_bytes())
    with ShardReader(flipped) as reader:
        offset = reader._file[group_name("s05")]["v1"].id.get_chunk_info(0).byte_offset
    raw[offset + 10] ^= 0x5A  # a bit flip inside s05's stored frames: fletcher32 catches it
    flipped.write_bytes(bytes(raw))
    tally["bad_inputs_tried"] += 2
    assert extract(work, "--shard-size", "4") == 1  # failures are recorded, the run goes on
    records = {s.id: s.stages["extract:pixels"] for s in Manifest.load(work / "manifest.jsonl")}
    for sample_id in ("s02", "s03"):
        assert records[sample_id]["status"] == "failed" and records[sample_id]["reason"] == "bad-roi-shard"
        assert truncated.name in records[sample_id]["error"]
    assert (
        records["s05"]["reason"] == "bad-roi-shard"
        and flipped.name in records["s05"]["error"]
        and "corrupted" in records["s05"]["error"]
    )
    assert [i for i, r in records.items() if r["status"] == "done"] == ["s00", "s01", "s04", "s06", "s07"]
    # recovery: prepare again (the truncated shard is moved aside and redone; the damaged one is deleted first), retry
    flipped.unlink()
    manifest = Manifest.load(work / "manifest.jsonl")
    again = run_stage(
        manifest, work / "manifest.jsonl", "prepare", list(manifest.samples), roi, "roi", ToyJob(), shard_size=2
    )
    assert again.written_shards == 2 and (roi / (truncated.name + ".corrupt")).exists()
    assert extract(work, "--shard-size", "4", "--retry-failed") == 0
    tally["resumed"] += 1
    tally["samples_lost"] += lost(work, "extract:pixels", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append("corrupted-shards")


def test_metadata_bit_flips_never_hang_and_always_name_the_shard(tmp_path: Path, tally: dict[str, Any]) -> None:
    path = tmp_path / "shard.h5"
    with ShardWriter(path, "roi", {"stage": "prepare", "roi": {"size": [16, 16]}}) as writer:
        for sample_id in ("a", "b/ü .."):
            writer.add(
                sample_id,
                {"v1": frames_for(sample_id)},
                {"label": "a", "sha256": {"v1": "0" * 64}},
                {"audit/v1/landmarks": np.zeros((4, 68, 2), np.float32)},
            )
    raw = path.read_bytes()
    outcomes = {"read": 0, "error": 0}
    for offset in range(0, min(len(raw), 6000), 11):  # the header, attributes, group and chunk indexes
        damaged = bytearray(raw)
        damaged[offset] ^= 0xFF
        bad = tmp_path / "flipped.h5"
        bad.write_bytes(bytes(damaged))
        try:
            for sample in read_samples(bad, ["a", "b/ü .."], ["v1"], extras=True):
                assert sample.arrays["v1"].shape[1:] == (16, 16, 3)
            outcomes["read"] += 1
        except ShardError as exc:
            assert "flipped.h5" in str(exc)
            outcomes["error"] += 1
    tally["bad_inputs_tried"] += sum(outcomes.values())
    assert outcomes["error"] > outcomes["read"]
    tally["cases"].append("metadata-bit-flips")


def test_half_written_manifest_is_a_one_line_error(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    work = prepared_work(tmp_path, n=4)
    path = work / "manifest.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last record cut mid-line, as a non-atomic writer would leave it
    assert extract(work) == 2
    assert cli.main(["prepare", "--quiet", "--work", str(work)]) == 2
    path.write_bytes(b"\xff\xfe garbage")
    assert extract(work) == 2
    tally["bad_inputs_tried"] += 3
    messages = error_lines(caplog)
    assert len(messages) == 3 and all("\n" not in m and str(path) in m for m in messages)
    assert messages[0].startswith(f"{path}:5: invalid JSON") and messages[1] == messages[0]
    assert not (work / "features" / "pixels").exists() or not list((work / "features" / "pixels").glob("*.h5"))
    tally["cases"].append("corrupted-manifest")


# -- hostile names and paths -----------------------------------------------------------------

ODD_IDS = ["spk 1/utt..1", "ü/視頻", "../../etc/x", "a%2Eb", ".", "..", "100%"]


def test_odd_ids_round_trip_through_both_stages(tmp_path: Path, tally: dict[str, Any]) -> None:
    work = prepared_work(tmp_path, ids=ODD_IDS)
    assert extract(work, "--shard-size", "3") == 0
    manifest = Manifest.load(work / "manifest.jsonl")
    assert [s.id for s in manifest] == ODD_IDS
    for sample in manifest:
        roi = next(read_samples(work / sample.stages["prepare"]["shard"], [sample.id], ["v1"]))
        assert roi.attrs["id"] == sample.id and np.array_equal(roi.arrays["v1"], frames_for(sample.id))
        assert (
            next(read_samples(work / sample.stages["extract:pixels"]["shard"], [sample.id], ["v1"]))
            .arrays["v1"]
            .shape[1]
            == 64
        )
    # a manifest that never heard of the shards is rebuilt from them, ids intact
    fresh = toy_work(tmp_path / "fresh", ids=ODD_IDS)
    summary = run_stage(
        fresh,
        tmp_path / "fresh" / "manifest.jsonl",
        "prepare",
        list(fresh.samples),
        work / "roi",
        "roi",
        ToyJob(),
        shard_size=2,
    )
    assert summary.written_shards == 0 and summary.done == len(ODD_IDS)
    tally["bad_inputs_tried"] += len(ODD_IDS)
    tally["samples_lost"] += lost(work, "extract:pixels", ODD_IDS)
    tally["cases"].append("odd-ids")


def test_odd_file_names_on_real_video(tmp_path: Path, tally: dict[str, Any], grid_clip: Path) -> None:
    from pipeline.media.video import read_frames, write_video

    root = tmp_path / "data set"
    folder = root / "cam ü"
    folder.mkdir(parents=True)
    frames = read_frames(grid_clip)[:16]
    names = {"spk 1/utt..1": "my clip (1).mp4", "ü/視頻": "ünïcødé 視頻.mp4", "a..b": "a..b.mp4"}
    rows = []
    for k, (sample_id, name) in enumerate(names.items()):
        write_video(folder / name, frames if k != 1 else frames[:, :, ::-1], 25)
        rows.append(
            {"id": sample_id, "label": "ab"[k % 2], "split": ("train", "val", "test")[k], "path:v1": f"cam ü/{name}"}
        )
    with open(root / "list ü.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["id", "label", "split", "path:v1"])
        writer.writeheader()
        writer.writerows(rows)
    work = tmp_path / "work ü"
    args = [
        "prepare",
        "--quiet",
        "--work",
        str(work),
        "--dataset",
        "generic",
        "--root",
        str(root),
        "--option",
        f"listing={root / 'list ü.csv'}",
        "--shard-size",
        "2",
        "--contact-sheet",
        "0",
    ]
    assert cli.main(args) == 0
    assert extract(work) == 0
    manifest = Manifest.load(work / "manifest.jsonl")
    assert sorted(s.id for s in manifest) == sorted(names)
    for sample in manifest:
        record = sample.stages["prepare"]
        assert record["media"]["v1"]["sha256"] == file_sha256(folder / names[sample.id])
        with ShardReader(work / record["shard"]) as reader:
            assert sample.id in reader.ids() and reader.read(sample.id).arrays["v1"].shape == (16, 96, 96, 3)
    tally["bad_inputs_tried"] += len(names)
    tally["samples_lost"] += lost(work, "extract:pixels", list(names))
    tally["cases"].append("odd-file-names")


def test_sources_outside_the_root_fail_and_are_never_read(
    tmp_path: Path, tally: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.execution.prepare_job as prepare_job

    root, secret = tmp_path / "data", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    (secret / "clip.mp4").write_bytes(b"not for you")
    (root / "f0.png").write_bytes(b"inside")
    (root / "link.mp4").symlink_to("/etc/passwd")
    (root / "outside").symlink_to(secret, target_is_directory=True)
    hostile = {
        "dotdot": Source("../../etc/passwd"),
        "absolute": Source("/etc/passwd"),
        "file-link": Source("link.mp4"),
        "folder-link": Source("outside/clip.mp4"),
        "sneaky-dotdot": Source("v1/../../secret/clip.mp4"),
        "image-frame": Source("frames", kind="images", frames=["f0.png", "../secret/clip.mp4"]),
    }
    samples = [Sample(id=i, sources={"v1": s}, label="a", split="train") for i, s in hostile.items()]
    samples.append(Sample(id="control", sources={"v1": Source("missing.mp4")}, label="a", split="train"))
    work = tmp_path / "work"
    work.mkdir()
    Manifest("hostile", str(root), ["v1"], samples).save(work / "manifest.jsonl")
    opened: list[str] = []
    for name in ("iter_frames", "probe", "frame_rate", "file_sha256", "read_image_sequence", "_hash_many"):
        monkeypatch.setattr(
            prepare_job,
            name,
            lambda *args, _name=name, **kw: opened.append(f"{_name}{args}") or pytest.fail(f"read {args}"),
        )
    assert cli.main(["prepare", "--quiet", "--work", str(work), "--allow-failures", "--contact-sheet", "0"]) == 0
    assert opened == []
    records = {s.id: s.stages["prepare"] for s in Manifest.load(work / "manifest.jsonl")}
    for sample_id in hostile:
        assert records[sample_id]["status"] == "failed" and records[sample_id]["reason"] == "outside-root", sample_id
        assert "outside the dataset root" in records[sample_id]["error"]
    assert records["control"]["reason"] == "missing-file"
    tally["bad_inputs_tried"] += len(hostile)
    tally["samples_lost"] += lost(
        work, "prepare", list(records), {**{i: "outside-root" for i in hostile}, "control": "missing-file"}
    )
    tally["cases"].append("outside-root")


# -- wrong weights ---------------------------------------------------------------------------


@pytest.mark.slow
def test_weights_of_another_architecture_are_refused(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.backbones import vggface
    from pipeline.backbones.weights import write_keras2_weight_file

    weights = tmp_path / "vgg16 weights.h5"
    write_keras2_weight_file(vggface.build("vgg16", include_top=False, pooling="avg"), weights)
    work = prepared_work(tmp_path, n=2)
    before = (work / "manifest.jsonl").read_text()
    code = cli.main(["extract", "--quiet", "--work", str(work), "--backbone", "resnet50", "--weights", str(weights)])
    tally["bad_inputs_tried"] += 1
    assert code == 2
    [message] = error_lines(caplog)
    assert str(weights) in message and "conv1_1" in message and "\n" not in message
    assert not list((work / "features").rglob("*.h5")) and not temps(work / "features")
    assert all(s.status("extract:resnet50") is None for s in Manifest.load(work / "manifest.jsonl"))
    assert (work / "manifest.jsonl").read_text().splitlines()[1:] == before.splitlines()[1:]  # samples untouched
    tally["cases"].append("wrong-weights")


# -- signals, a second process, environmental errors, unusable checkpoints -----------------------

SYNTHETIC = ["--dataset", "synthetic", "--option", "n_per_class=6", "--option", "n_classes=3", "--option", "frames=20"]


def test_sigterm_stops_workers_and_leaves_no_temporary_files(tmp_path: Path, tally: dict[str, Any]) -> None:
    """SIGTERM (a scheduler, `timeout`) unwinds like Ctrl-C: exit 143 with one line, workers gone, temps removed;
    a re-run completes the output."""
    work = tmp_path / "work"
    command = [sys.executable, str(Path(cli.__file__)), "prepare", "-q", "--work", str(work), *SYNTHETIC, "--jobs", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any((work / "roi").glob(".roi-*")):  # a worker is writing a shard
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    tally["runs_killed"] += 1
    tally["tracebacks"] += stderr.count("Traceback")
    assert process.returncode == 143, stderr
    assert "terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    time.sleep(1)
    listed = subprocess.run(["pgrep", "-a", "-s", str(process.pid)], capture_output=True, text=True).stdout.splitlines()
    leftover = [line for line in listed if "<defunct>" not in line]  # exited, waiting only to be reaped
    assert not leftover, f"workers still alive after SIGTERM: {leftover}"
    assert not temps(work / "roi")
    assert cli.main(["prepare", "-q", "--work", str(work)]) == 0
    tally["resumed"] += 1
    tally["samples_lost"] += lost(work, "prepare", [s.id for s in Manifest.load(work / "manifest.jsonl")])
    tally["cases"].append("sigterm")


def test_second_process_on_a_work_folder_is_refused(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """While one process holds the work folder, another stops at once naming its pid and deletes nothing of it;
    a lock left by a killed process is no obstacle."""

    work = prepared_work(tmp_path)
    stray = work / "features" / "pixels" / ".emb-00000-of-00004.h5.tmp-live"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"in progress")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from pipeline.execution.worklock import work_lock\n"
                f"with work_lock(Path({str(work)!r}), 'extract'):\n    print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(cli.__file__).parent,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        caplog.clear()
        assert extract(work) == 2
        message = error_lines(caplog)[-1]
        assert f"pid {holder.pid}" in message and "in use" in message
        assert stray.exists()  # the live run's temporary file is untouched
    finally:
        holder.kill()
        holder.wait()
    tally["bad_inputs_tried"] += 1
    stray.unlink()
    assert extract(work) == 0  # the dead holder's lock file is no obstacle
    tally["samples_lost"] += lost(work, "extract:pixels", [f"s{i:02d}" for i in range(8)])
    tally["cases"].append("second-process")


def test_two_concurrent_prepares_end_with_one_complete_output(tmp_path: Path, tally: dict[str, Any]) -> None:
    """Two `prepare` processes started together on one folder: one does the work, the other stops with a message
    naming the first; neither dies of a missing file, and the output is complete."""
    work = tmp_path / "work"
    command = [sys.executable, str(Path(cli.__file__)), "prepare", "-q", "--work", str(work), *SYNTHETIC]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (work / "roi").exists():  # the first holds the folder
        time.sleep(0.05)
    second = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=300)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr and "No such file" not in second.stderr
    manifest = Manifest.load(work / "manifest.jsonl")
    assert all(s.status("prepare") == "done" for s in manifest.samples)
    tally["bad_inputs_tried"] += 1
    tally["samples_lost"] += lost(work, "prepare", [s.id for s in manifest.samples])
    tally["cases"].append("concurrent-prepare")


def test_work_folder_that_is_a_file_or_read_only_is_one_line(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """`--work` naming a file, or a folder the user cannot write, ends in one line naming the path."""

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    caplog.clear()
    assert cli.main(["prepare", "-q", "--work", str(a_file), *SYNTHETIC]) == 2
    assert str(a_file) in error_lines(caplog)[-1] and "is a file" in error_lines(caplog)[-1]
    if os.geteuid() != 0:  # root writes anywhere, so a read-only folder cannot be simulated
        work = prepared_work(tmp_path / "ro")
        work.chmod(0o555)
        try:
            caplog.clear()
            assert extract(work) == 2 and "\n" not in error_lines(caplog)[-1]
        finally:
            work.chmod(0o755)
    tally["bad_inputs_tried"] += 1
    tally["cases"].append("work-not-a-folder")


def test_changed_roi_options_are_refused_never_mixed(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A re-run of prepare (finished or killed half way) with other ROI options stops naming each option, old and
    new; --force redoes every sample, and is refused while features made from the old clips exist."""

    work = tmp_path / "work"
    command = [sys.executable, str(Path(cli.__file__)), "prepare", "-q", "--work", str(work), *SYNTHETIC]
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list((work / "roi").glob("roi-*.h5"))) < 2:
        time.sleep(0.05)
    process.kill()  # SIGKILL after two shards: no summary is written, the settings must be known all the same
    process.wait()
    tally["runs_killed"] += 1
    before = shard_bytes(work / "roi")
    caplog.clear()
    assert cli.main(["prepare", "-q", "--work", str(work), "--size", "64", "64", "--gray"]) == 2
    message = error_lines(caplog)[-1]
    assert (
        "roi.size: [96, 96] -> [64, 64]" in message
        and "roi.grayscale: False -> True" in message
        and "--force" in message
    )
    assert "use another --work" in message  # prepare's outputs are the work folder's: another folder is the way out
    assert shard_bytes(work / "roi") == before
    tally["mismatched_outputs_reused"] += 0 if shard_bytes(work / "roi") == before else 1
    assert cli.main(["prepare", "-q", "--work", str(work)]) == 0  # the same options resume
    tally["resumed"] += 1
    assert cli.main(["prepare", "-q", "--work", str(work), "--size", "64", "64", "--force"]) == 0
    manifest = Manifest.load(work / "manifest.jsonl")
    with open_reader(work / manifest.samples[0].stages["prepare"]["shard"]) as reader:
        assert reader.read(manifest.samples[0].id).arrays["v1"].shape[1:3] == (64, 64)
    assert manifest.runs[-1]["config"]["roi"]["size"] == [64, 64]
    assert cli.main(["extract", "-q", "--work", str(work), "--backbone", "pixels", "--pixel-size", "8"]) == 0
    caplog.clear()
    assert cli.main(["prepare", "-q", "--work", str(work), "--force"]) == 2  # 96x96 again: features would be stale
    assert "features" in error_lines(caplog)[-1]
    caplog.clear()
    assert cli.main(["extract", "-q", "--work", str(work), "--backbone", "pixels", "--pixel-size", "16"]) == 2
    message = error_lines(caplog)[-1]
    assert (
        "pixel_size: 8 -> 16" in message
        and "--force" in message
        and "with --name" in message
        and "--work" not in message
    )
    caplog.clear()
    assert cli.main(["prepare", "-q", "--work", str(work), "--option", "n_per_class=7"]) == 2
    assert "--option" in error_lines(caplog)[-1]
    tally["bad_inputs_tried"] += 4
    tally["samples_lost"] += lost(work, "prepare", [s.id for s in manifest.samples])
    tally["cases"].append("changed-options")


def test_evaluate_scores_every_checkpoint_it_can(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated checkpoint and a run without one are named with the reason; the other run is still scored."""
    work = tmp_path / "work"
    assert cli.main(["prepare", "-q", "--work", str(work), *SYNTHETIC]) == 0
    assert cli.main(["extract", "-q", "--work", str(work), "--backbone", "pixels", "--pixel-size", "8"]) == 0
    for model in ("mplstm", "early_fusion"):
        assert cli.main(["train", "-q", "--work", str(work), "--model", model, "--units", "4", "--epochs", "1"]) == 0
    broken = next((work / "models").glob("early_fusion-*")) / "best.keras"
    broken.write_bytes(broken.read_bytes()[:100])
    caplog.clear()
    assert (
        cli.main(
            [
                "evaluate",
                "-q",
                "--work",
                str(work),
                "--models",
                "mplstm-v1+v2+v3-pixels",
                broken.parent.name,
                "nothing-here",
            ]
        )
        == 1
    )
    errors = "\n".join(error_lines(caplog))
    assert f"{broken}: unreadable checkpoint (100 bytes, a truncated or damaged Keras archive)" in errors
    assert "nothing-here" in errors and "2 of 3 run(s)" in errors and "File not found" not in errors
    assert (work / "reports" / "mplstm-v1+v2+v3-pixels.json").exists()
    assert not (work / "reports" / f"{broken.parent.name}.json").exists()
    tally["bad_inputs_tried"] += 2
    tally["checkpoints_lost"] += 0 if (work / "models" / "mplstm-v1+v2+v3-pixels" / "best.keras").stat().st_size else 1
    tally["cases"].append("evaluate-bad-checkpoint")


@pytest.mark.slow
def test_more_epochs_on_a_finished_run_train_on_as_a_resume_would(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """`train --epochs 3` on a run that finished 2 continues at epoch 2 and records it; its history equals a run
    trained 3 epochs at once; fewer epochs, or more with another change, are still refused."""
    work = tmp_path / "work"
    assert cli.main(["prepare", "-q", "--work", str(work), *SYNTHETIC]) == 0
    assert cli.main(["extract", "-q", "--work", str(work), "--backbone", "pixels", "--pixel-size", "8"]) == 0
    train = ["train", "-q", "--work", str(work), "--units", "4", "--no-tensorboard"]
    assert cli.main([*train, "--epochs", "2"]) == 0
    [run] = (work / "models").iterdir()
    assert cli.main([*train, "--epochs", "3"]) == 0
    spec = json.loads((run / "spec.json").read_text())
    assert spec["options"]["epochs"] == 3 and spec["options"]["extended"] == [{"from_epochs": 2, "to_epochs": 3}]
    assert cli.main([*train, "--epochs", "3", "--name", "straight"]) == 0
    rows = [(work / "models" / name / "history.csv").read_text() for name in (run.name, "straight")]
    assert rows[0] == rows[1] and rows[0].count("\n") == 4  # a header and epochs 0, 1, 2, each once
    assert cli.main([*train, "--epochs", "3"]) == 0  # finished again: nothing changes, the record stays
    assert json.loads((run / "spec.json").read_text()) == spec
    for changed in (["--epochs", "2"], ["--epochs", "4", "--dropout", "0.5"]):
        caplog.clear()
        assert cli.main([*train, *changed]) == 2
        assert "made with other settings" in error_lines(caplog)[-1] and "--force" in error_lines(caplog)[-1]
    tally["bad_inputs_tried"] += 2
    tally["cases"].append("more-epochs")


def test_checkpoint_problems_in_our_own_words(tmp_path: Path, tally: dict[str, Any]) -> None:
    """Random bytes, a cut archive, a zip of something else and a missing file each get a reason of ours."""
    import zipfile

    from pipeline.training.fit import checkpoint_problem

    (tmp_path / "random.keras").write_bytes(np.random.default_rng(0).bytes(4000))
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "x" * 3000)
    (tmp_path / "cut.keras").write_bytes((tmp_path / "other.keras").read_bytes()[:-30])
    (tmp_path / "random.h5").write_bytes(b"garbage")
    assert checkpoint_problem(tmp_path / "random.keras") == "4000 bytes, not a Keras archive (a .keras file is a zip)"
    assert "truncated or damaged" in checkpoint_problem(tmp_path / "cut.keras")
    assert "not a Keras archive" in checkpoint_problem(tmp_path / "other.keras")
    assert checkpoint_problem(tmp_path / "random.h5") == "7 bytes, not an HDF5 file"
    assert checkpoint_problem(tmp_path / "absent.keras") == "no such file"
    tally["bad_inputs_tried"] += 5
    tally["cases"].append("checkpoint-problems")


def test_changed_training_options_never_overwrite_a_run(
    tmp_path: Path, tally: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Re-running a trained run with other options stops naming them; spec.json and the checkpoint stay as trained;
    --force trains anew; a second process on the same run folder is refused."""
    from pipeline.execution.worklock import work_lock

    work = tmp_path / "work"
    assert cli.main(["prepare", "-q", "--work", str(work), *SYNTHETIC]) == 0
    assert cli.main(["extract", "-q", "--work", str(work), "--backbone", "pixels", "--pixel-size", "8"]) == 0
    train = ["train", "-q", "--work", str(work), "--units", "4", "--epochs", "1"]
    assert cli.main(train) == 0
    run = next((work / "models").iterdir())
    spec, checkpoint = (run / "spec.json").read_text(), (run / "best.keras").read_bytes()
    caplog.clear()
    assert cli.main([*train[:-2], "--epochs", "2", "--dropout", "0.5", "--released", "--name", run.name]) == 2
    message = error_lines(caplog)[-1]
    assert "options.dropout: 0.2 -> 0.5" in message and "options.epochs: 1 -> 2" in message and "--force" in message
    assert (
        f"{run} holds a run made with other settings" in message
        and "with --name" in message
        and "--work" not in message
    )
    assert (run / "spec.json").read_text() == spec and (run / "best.keras").read_bytes() == checkpoint
    tally["mismatched_outputs_reused"] += 0 if (run / "spec.json").read_text() == spec else 1
    caplog.clear()
    assert cli.main([train[0], *train[2:]]) == 0  # the same options (not quiet): already finished, nothing changes
    assert any("already finished" in r.getMessage() and "--force" in r.getMessage() for r in caplog.records)
    assert (run / "spec.json").read_text() == spec
    with work_lock(run, "train"):
        caplog.clear()
        assert cli.main(train) == 2 and "in use" in error_lines(caplog)[-1] and "--name" in error_lines(caplog)[-1]
    assert cli.main([*train, "--dropout", "0.5", "--force"]) == 0
    assert json.loads((run / "spec.json").read_text())["options"]["dropout"] == 0.5
    tally["bad_inputs_tried"] += 3
    tally["cases"].append("changed-training-options")


def test_prepare_output_to_a_pipe_says_the_summary_once(tmp_path: Path, tally: dict[str, Any]) -> None:
    """Logged to a file or a pipe, prepare prints its summary line once and no progress-bar residue."""
    result = cli_run(
        "prepare",
        "--work",
        str(tmp_path / "work"),
        "--dataset",
        "synthetic",
        "--option",
        "n_per_class=2",
        "--option",
        "n_classes=2",
        "--option",
        "frames=10",
        "--contact-sheet",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("prepare: 4 done, 0 failed of 4 samples") == 1 and "100%|" not in result.stderr
    tally["cases"].append("summary-once")


@pytest.mark.parametrize(
    "command, kept",
    [
        ("train", "finished epochs are kept"),
        ("prepare", "finished shards are kept"),
        ("evaluate", "terminated (SIGTERM); re-run"),
    ],
)
def test_sigterm_message_says_what_each_stage_keeps(
    command: str,
    kept: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tally: dict[str, Any],
) -> None:
    import importlib

    from stages import cli as stage_cli

    def terminated(args: Any) -> int:
        raise stage_cli.Terminated()

    monkeypatch.setattr(importlib.import_module(f"stages.{command}"), "run", terminated)
    assert stage_cli.main([command, "-q", "--work", "w"]) == stage_cli.TERMINATED
    [message] = error_lines(caplog)
    assert kept in message and (command == "prepare" or "shards" not in message)
    tally["cases"].append(f"sigterm-message-{command}")


# -- the tally -------------------------------------------------------------------------------


def test_tally(tally: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path_factory.mktemp("tally") / "fault_tally.json"
    path.write_text(json.dumps(tally, indent=1))
    with capsys.disabled():
        print(f"\nfault tally ({path}): {json.dumps({k: v for k, v in tally.items() if k != 'cases'})}")
        print(
            f"fault suite: {tally['tried']} cases tried, {len(tally['cases'])} OK, {tally['samples_lost']} samples "
            "lost, "
            f"{tally['mismatched_outputs_reused']} mixed outputs, {tally['history_rows_duplicated']} duplicated "
            "history rows, "
            f"{tally['tracebacks']} tracebacks"
        )
    assert tally["samples_lost"] == 0 and tally["mismatched_outputs_reused"] == 0 and tally["checkpoints_lost"] == 0
    assert tally["tracebacks"] == 0 and tally["history_rows_duplicated"] == 0
    assert json.loads(path.read_text()) == tally
    if "random-kills" in tally["cases"]:
        assert tally["runs_killed"] >= 3 and tally["resumed"] >= 3
    if len(tally["cases"]) >= 10:
        assert tally["bad_inputs_tried"] >= 20
