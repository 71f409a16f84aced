"""The resumable runner: interrupted runs resume to identical shards, failures are recorded, not lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.execution.runner import RunError, SampleError, ShardTask, StrictFailure, run_stage, write_shard
from pipeline.manifest import Manifest, Sample, Source
from pipeline.storage.shards import ShardReader


class ToyJob:
    """Writes one array per sample; fails sample ids in ``bad``; crashes on shard ``crash_at``."""

    def __init__(self, bad=(), crash_at=None, strict=False, calls=None):
        self.bad, self.crash_at, self.strict, self.calls = set(bad), crash_at, strict, calls

    def __call__(self, task: ShardTask):
        if self.calls is not None:
            self.calls.append(task.index)
        if task.index == self.crash_at:
            raise KeyboardInterrupt("killed")

        def outcomes():
            for sample in task.samples:
                if sample["id"] in self.bad:
                    yield sample["id"], SampleError(f"{sample['id']}.mp4: truncated video", "truncated")
                else:
                    value = int(sample["id"][1:])
                    yield sample["id"], {"arrays": {"v1": np.full((3, 4), value, np.uint8)}, "record": {"frames": 3}}

        return write_shard(task, "roi", {"stage": "toy"}, outcomes(), self.strict)


def _setup(tmp_path: Path, n=10):
    work = tmp_path / "work"
    work.mkdir(parents=True)
    samples = [Sample(id=f"s{i:02d}", sources={"v1": Source(f"{i}.mp4")}, label="a", split="train") for i in range(n)]
    manifest = Manifest("toy", str(tmp_path), ["v1"], samples)
    manifest.save(work / "manifest.jsonl")
    return work, manifest


def _run(work, manifest, job, **kw):
    return run_stage(
        manifest, work / "manifest.jsonl", "toy", list(manifest.samples), work / "out", "toy", job, shard_size=3, **kw
    )


def test_failures_are_recorded_and_summarised(tmp_path):
    work, manifest = _setup(tmp_path)
    summary = _run(work, manifest, ToyJob(bad={"s04"}))
    assert (summary.done, summary.failed, summary.written_shards) == (9, 1, 4)
    assert summary.reasons == {"truncated": 1}
    assert "s04: s04.mp4: truncated video" in summary.describe()
    loaded = Manifest.load(work / "manifest.jsonl")
    record = loaded.by_id()["s04"].stages["toy"]
    assert record["status"] == "failed" and record["reason"] == "truncated"
    assert loaded.by_id()["s05"].stages["toy"] == {"status": "done", "frames": 3, "shard": "out/toy-00001-of-00004.h5"}
    assert loaded.runs[-1]["summary"]["failed"] == 1


def test_interrupted_run_resumes_to_identical_output(tmp_path):
    clean_work, clean = _setup(tmp_path / "clean")
    _run(clean_work, clean, ToyJob())
    work, manifest = _setup(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        _run(work, manifest, ToyJob(crash_at=2))
    half = Manifest.load(work / "manifest.jsonl")
    assert sum(s.status("toy") == "done" for s in half) == 6
    calls: list[int] = []
    summary = _run(work, half, ToyJob(calls=calls))
    assert calls == [2, 3] and summary.skipped_shards == 2 and summary.done == 10
    for a, b in zip(sorted((clean_work / "out").glob("*.h5")), sorted((work / "out").glob("*.h5"))):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    # a second re-run does nothing and changes no shard
    calls.clear()
    again = _run(work, Manifest.load(work / "manifest.jsonl"), ToyJob(calls=calls))
    assert calls == [] and again.done == 10


def test_manifest_lagging_behind_shards_is_repaired(tmp_path):
    work, manifest = _setup(tmp_path)
    _run(work, manifest, ToyJob())
    _, stale = _setup(tmp_path / "fresh")  # a manifest that never heard of the shards
    stale.root = manifest.root
    calls: list[int] = []
    summary = _run(work, stale, ToyJob(calls=calls))
    assert calls == [] and summary.done == 10


def test_stale_temp_and_corrupt_shard_are_redone(tmp_path):
    work, manifest = _setup(tmp_path)
    _run(work, manifest, ToyJob())
    out = work / "out"
    (out / ".toy-00000-of-00004.h5.tmp-abc").write_bytes(b"half")
    shard = out / "toy-00001-of-00004.h5"
    shard.write_bytes(shard.read_bytes()[:100])
    calls: list[int] = []
    _run(work, Manifest.load(work / "manifest.jsonl"), ToyJob(calls=calls))
    assert calls == [1]
    assert not list(out.glob(".*tmp*")) and (out / "toy-00001-of-00004.h5.corrupt").exists()
    with ShardReader(shard) as reader:
        assert reader.read("s04").arrays["v1"][0, 0] == 4


def test_strict_stops_at_first_failure_without_writing_its_shard(tmp_path):
    work, manifest = _setup(tmp_path)
    with pytest.raises(StrictFailure, match="s04"):
        _run(work, manifest, ToyJob(bad={"s04"}, strict=True))
    assert not (work / "out" / "toy-00001-of-00004.h5").exists()
    assert Manifest.load(work / "manifest.jsonl").by_id()["s00"].status("toy") == "done"


def test_retry_failed_and_plan_mismatch(tmp_path):
    work, manifest = _setup(tmp_path)
    _run(work, manifest, ToyJob(bad={"s04"}))
    calls: list[int] = []
    summary = _run(work, Manifest.load(work / "manifest.jsonl"), ToyJob(calls=calls), redo_failed=True)
    assert calls == [1] and summary.failed == 0
    plan = json.loads((work / "out" / "plan.json").read_text())
    assert plan["shards"][0] == ["s00", "s01", "s02"]
    other = Manifest.load(work / "manifest.jsonl")
    with pytest.raises(RunError, match="different set of samples"):
        run_stage(other, work / "manifest.jsonl", "toy", other.samples[:5], work / "out", "toy", ToyJob(), shard_size=3)


def test_parallel_workers_match_in_process(tmp_path):
    work1, m1 = _setup(tmp_path / "a")
    _run(work1, m1, ToyJob())
    work2, m2 = _setup(tmp_path / "b")
    _run(work2, m2, ToyJob(), jobs=2)
    for a, b in zip(sorted((work1 / "out").glob("*.h5")), sorted((work2 / "out").glob("*.h5"))):
        assert a.read_bytes() == b.read_bytes()
