"""`prepare` end to end on real GRID clips: crops, bad inputs recorded per sample, kill and resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cli
from pipeline.manifest import Manifest
from pipeline.media.video import read_frames, write_video
from pipeline.storage.shards import ShardReader

REPO = Path(__file__).resolve().parents[1]


def _listing(root: Path, rows: list[dict]) -> Path:
    path = root / "listing.csv"
    views = sorted({k for r in rows for k in r if k.startswith("path:")})
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "label", "speaker", "split", *views])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def grid_root(tmp_path, grid_dir):
    """A dataset root with the three GRID clips, each seen as two 'perspectives' (v2 mirrored)."""
    root = tmp_path / "data"
    (root / "v1").mkdir(parents=True)
    (root / "v2").mkdir()
    rows = []
    for i, clip in enumerate(sorted(grid_dir.glob("*.mpg"))):
        shutil.copy(clip, root / "v1" / clip.name)
        frames = read_frames(clip)[:40]
        write_video(root / "v2" / f"{clip.stem}.mp4", frames[:, :, ::-1], 25)
        rows.append(
            {
                "id": clip.stem,
                "label": "ab"[i % 2],
                "speaker": "s1",
                "split": ["train", "val", "test"][i],
                "path:v1": f"v1/{clip.name}",
                "path:v2": f"v2/{clip.stem}.mp4",
            }
        )
    return root, rows


def _prepare(work: Path, root: Path, *extra: str) -> int:
    return cli.main(
        [
            "prepare",
            "--quiet",
            "--work",
            str(work),
            "--dataset",
            "generic",
            "--root",
            str(root),
            "--option",
            f"listing={root / 'listing.csv'}",
            *extra,
        ]
    )


def test_grid_prepare_writes_audited_crops(tmp_path, grid_root):
    root, rows = grid_root
    _listing(root, rows)
    work = tmp_path / "work"
    assert _prepare(work, root, "--shard-size", "2") == 0
    manifest = Manifest.load(work / "manifest.jsonl")
    assert [s.status("prepare") for s in manifest] == ["done"] * 3
    record = manifest.by_id()["lbax4n"].stages["prepare"]
    assert record["media"]["v1"]["frames"] == 75 and record["media"]["v2"]["frames"] == 40
    assert record["media"]["v1"]["found_fraction"] == 1.0
    with ShardReader(work / record["shard"]) as reader:
        sample = reader.read("lbax4n", extras=True)
    assert sample.arrays["v1"].shape == (75, 96, 96, 3) and sample.arrays["v1"].dtype == np.uint8
    assert sample.extras["audit/v1/landmarks"].shape == (75, 68, 2)
    assert sample.extras["audit/v1/crop_matrices"].shape == (75, 2, 3)
    assert sample.attrs["sha256"]["v1"] == manifest.by_id()["lbax4n"].stages["prepare"]["media"]["v1"]["sha256"]
    assert (work / "roi" / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert manifest.runs[-1]["stage"] == "prepare" and manifest.runs[-1]["config"]["roi"]["size"] == [96, 96]


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path, grid_root, caplog):
    root, rows = grid_root
    frames = read_frames(root / "v1" / "lbax4n.mpg")
    (root / "v1" / "empty.mp4").write_bytes(b"")
    (root / "v1" / "text.mp4").write_text("this is not a video\n")
    write_video(root / "v1" / "whole.mp4", frames, 25)
    data = (root / "v1" / "whole.mp4").read_bytes()
    (root / "v1" / "cut.mp4").write_bytes(data[: len(data) // 2])
    noise = np.random.default_rng(0).integers(0, 255, (20, 120, 160, 3), dtype=np.uint8)
    write_video(root / "v1" / "noface.mp4", noise, 25)
    bad = {"empty": "empty file", "text": "not a readable video", "cut": "truncated", "noface": "no face found"}
    for name in bad:
        rows.append(
            {
                "id": name,
                "label": "a",
                "speaker": "s2",
                "split": "train",
                "path:v1": f"v1/{name}.mp4",
                "path:v2": "v2/lbax4n.mp4",
            }
        )
    rows.append(
        {
            "id": "halfmissing",
            "label": "a",
            "speaker": "s2",
            "split": "train",
            "path:v1": "v1/lbax4n.mpg",
            "path:v2": "",
        }
    )
    _listing(root, rows)
    work = tmp_path / "work"
    assert _prepare(work, root, "--shard-size", "3") == 1  # failures -> non-zero exit
    manifest = Manifest.load(work / "manifest.jsonl")
    assert any(p["id"].startswith("halfmissing") for p in manifest.problems)
    for name, reason in bad.items():
        record = manifest.by_id()[name].stages["prepare"]
        assert record["status"] == "failed"
        assert reason in record["error"] and f"{name}.mp4" in record["error"]
    assert [manifest.by_id()[r["id"]].status("prepare") for r in rows[:3]] == ["done"] * 3
    assert manifest.runs[-1]["summary"]["failed"] == 4
    # re-running with --allow-failures redoes nothing and exits 0
    before = {p.name: p.read_bytes() for p in (work / "roi").glob("*.h5")}
    assert _prepare(work, root, "--allow-failures") == 0
    assert {p.name: p.read_bytes() for p in (work / "roi").glob("*.h5")} == before


def test_strict_stops_at_first_failure(tmp_path, grid_root):
    root, rows = grid_root
    (root / "v1" / "empty.mp4").write_bytes(b"")
    rows.insert(
        0,
        {
            "id": "aaa-empty",
            "label": "a",
            "speaker": "s2",
            "split": "train",
            "path:v1": "v1/empty.mp4",
            "path:v2": "v2/lbax4n.mp4",
        },
    )
    _listing(root, rows)
    work = tmp_path / "work"
    assert _prepare(work, root, "--strict", "--shard-size", "1") == 2
    manifest = Manifest.load(work / "manifest.jsonl")
    assert all(s.status("prepare") is None for s in manifest)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_output(tmp_path, grid_root):
    root, rows = grid_root
    _listing(root, rows)
    clean = tmp_path / "clean"
    assert _prepare(clean, root, "--shard-size", "1") == 0
    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        str(REPO / "cli.py"),
        "prepare",
        "--quiet",
        "--work",
        str(killed),
        "--dataset",
        "generic",
        "--root",
        str(root),
        "--option",
        f"listing={root / 'listing.csv'}",
        "--shard-size",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "roi").glob("roi-00000-*.h5")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (killed / "roi").glob("roi-*.h5"))
    assert 1 <= len(done_before) < 3, "the kill should land mid-run"
    subprocess.run(cmd, cwd=REPO, check=True)
    clean_shards = sorted((clean / "roi").glob("roi-*.h5"))
    resumed = sorted((killed / "roi").glob("roi-*.h5"))
    assert [p.name for p in clean_shards] == [p.name for p in resumed]
    for a, b in zip(clean_shards, resumed):
        assert a.read_bytes() == b.read_bytes()
    assert not list((killed / "roi").glob(".*tmp*"))
    statuses = [s.status("prepare") for s in Manifest.load(killed / "manifest.jsonl")]
    assert statuses == ["done"] * 3
    assert json.loads((killed / "roi" / "plan.json").read_text()) == json.loads(
        (clean / "roi" / "plan.json").read_text()
    )


def test_an_unexpected_error_fails_only_its_sample(tmp_path, grid_root, monkeypatch):
    import pipeline.execution.prepare_job as prepare_job

    root, rows = grid_root
    _listing(root, rows)
    real = prepare_job.crop_frames

    def crop_frames(open_frames, config, source, frame_count=None, decode_ahead=4):
        if source.endswith("pwij3p.mpg"):
            raise ValueError("operands could not be broadcast together")
        return real(open_frames, config, source, frame_count, decode_ahead)

    monkeypatch.setattr(prepare_job, "crop_frames", crop_frames)
    work = tmp_path / "work"
    assert _prepare(work, root, "--shard-size", "3") == 1
    manifest = Manifest.load(work / "manifest.jsonl").by_id()
    record = manifest["pwij3p"].stages["prepare"]
    assert record["status"] == "failed" and record["reason"] == "internal-error"
    assert "pwij3p.mpg" in record["error"] and "ValueError: operands could not be broadcast" in record["error"]
    assert manifest["lbax4n"].status("prepare") == "done" and manifest["sbwe5n"].status("prepare") == "done"
    assert _prepare(tmp_path / "strict", root, "--strict") == 2


def test_five_view_light_field_grids_prepare_with_defaults(tmp_path, grid_clip):
    """5x5 sub-aperture grids give 5-frame sequences, shorter than the smoothing window: every sample is cropped."""
    import cv2

    frames = read_frames(grid_clip)
    root = tmp_path / "lf"
    for k, capture in enumerate(["Train/01/cap1", "Validation/01/cap2", "Test/01/cap3"]):
        folder = root / capture
        folder.mkdir(parents=True)
        for r in range(5):
            for c in range(5):
                cv2.imwrite(
                    str(folder / f"r{r:02d}_c{c:02d}.png"), cv2.cvtColor(frames[10 * k + r * 5 + c], cv2.COLOR_RGB2BGR)
                )
    work = tmp_path / "work"
    assert (
        cli.main(
            [
                "prepare",
                "--quiet",
                "--work",
                str(work),
                "--dataset",
                "lightfield-grid",
                "--root",
                str(root),
                "--contact-sheet",
                "0",
            ]
        )
        == 0
    )
    manifest = Manifest.load(work / "manifest.jsonl")
    assert len(manifest.samples) == 3 and all(s.status("prepare") == "done" for s in manifest.samples)
    record = manifest.samples[0].stages["prepare"]
    with ShardReader(work / record["shard"]) as reader:
        sample = reader.read(manifest.samples[0].id)
    assert sample.arrays["hor"].shape == (5, 96, 96, 3) and sample.arrays["ver"].shape == (5, 96, 96, 3)


def test_decode_ahead_for_decodes_inline_once_workers_fill_the_cpus(monkeypatch):
    from pipeline.execution.prepare_job import DECODE_AHEAD, decode_ahead_for

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert [decode_ahead_for(jobs) for jobs in (1, 3, 4, 8)] == [DECODE_AHEAD, DECODE_AHEAD, 0, 0]
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: assume one CPU, so one worker already fills it
    assert decode_ahead_for(1) == 0


def test_prepare_job_crops_the_same_with_and_without_the_decode_thread(grid_clip):
    from pipeline.execution.prepare_job import PrepareJob
    from pipeline.manifest import Sample
    from pipeline.media.roi import RoiConfig

    sample = Sample.from_dict({"id": grid_clip.stem, "sources": {"v1": grid_clip.name}})
    threaded, inline = (
        PrepareJob(str(grid_clip.parent), ("v1",), RoiConfig(), decode_ahead=depth).process(sample) for depth in (4, 0)
    )
    assert np.array_equal(threaded["arrays"]["v1"], inline["arrays"]["v1"]) and threaded["arrays"]["v1"].shape[0] == 75
    assert threaded["extras"].keys() == inline["extras"].keys()
    for key, value in threaded["extras"].items():
        np.testing.assert_array_equal(value, inline["extras"][key], err_msg=key)  # NaN where nothing was detected
