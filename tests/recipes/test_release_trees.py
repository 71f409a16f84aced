"""The CLI with its default options on trees laid out like the real releases (built from the real GRID clips)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import cli
from pipeline.manifest import DONE, Manifest, Sample
from pipeline.storage.readers import open_reader
from pipeline.storage.shards import ShardSample
from trees import OULU_SPEAKERS, OULU_UTTERANCES, OULU_VIEW_SIZES, ouluvs2_cropped_tree


def _main(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def _read(work: Path, sample: Sample) -> ShardSample:
    """A sample's ROI clips and audit arrays as prepare stored them."""
    with open_reader(work / sample.stages["prepare"]["shard"]) as reader:
        return reader.read(sample.id, extras=True)


@pytest.fixture(scope="module")
def oulu_root(tmp_path_factory: pytest.TempPathFactory, grid_dir: Path) -> Path:
    """OuluVS2's cropped-mouth release: seven speakers, three phrases, five views of five different sizes."""
    return ouluvs2_cropped_tree(tmp_path_factory.mktemp("OuluVS2"), grid_dir)


def test_cropped_mouth_release_is_prepared_whole_frame_by_default(tmp_path: Path, oulu_root: Path, caplog) -> None:
    """No face detection on mouth-only clips: every sample is done, each view resized with its aspect kept."""
    work = tmp_path / "oulu"
    with caplog.at_level(logging.INFO):
        assert _main("prepare", "--work", work, "--dataset", "ouluvs2", "--root", oulu_root, "--views", "1,3,5") == 0
    assert "cropped-mouth release" in caplog.text
    manifest = Manifest.load(work / "manifest.jsonl")
    assert len(manifest) == len(OULU_SPEAKERS) * len(OULU_UTTERANCES)
    assert all(s.status("prepare") == DONE for s in manifest.samples)
    stored = _read(work, manifest.samples[0])
    for view in (1, 3, 5):
        clip = stored.arrays[f"v{view}"]
        assert clip.shape[1:] == (96, 96, 3)
        height, width = OULU_VIEW_SIZES[view]
        rows = np.flatnonzero(clip.max(axis=(0, 2, 3)) > 0)  # the padding is black, the mouth is not
        cols = np.flatnonzero(clip.max(axis=(0, 1, 3)) > 0)
        scale = min(96 / height, 96 / width)
        assert abs(len(rows) - round(height * scale)) <= 1 and abs(len(cols) - round(width * scale)) <= 1
        times = stored.extras[f"audit/v{view}/timestamps"]
        assert np.allclose(np.diff(times), 1 / 30, atol=1e-3)
    assert json.loads(json.dumps(manifest.runs[-1]["config"]))["roi"]["roi"] == "frame"


def test_per_perspective_sizes(tmp_path: Path, oulu_root: Path) -> None:
    """Petridis et al.'s baseline resizes each view to its own size: --perspective-size does that."""
    work = tmp_path / "sized"
    assert (
        _main(
            "prepare",
            "--work",
            work,
            "--dataset",
            "ouluvs2",
            "--root",
            oulu_root,
            "--views",
            "1,5",
            "--perspective-size",
            "v1=29x50",
            "--perspective-size",
            "v5=44x30",
            "--resize",
            "stretch",
        )
        == 0
    )
    manifest = Manifest.load(work / "manifest.jsonl")
    stored = _read(work, manifest.samples[0])
    assert stored.arrays["v1"].shape[1:3] == (29, 50) and stored.arrays["v5"].shape[1:3] == (44, 30)


def test_face_detection_on_mouth_clips_fails_with_a_hint(tmp_path: Path, oulu_root: Path, caplog) -> None:
    """Asking for mouth detection on mouth-only clips fails per sample, and the message names --roi frame."""
    work = tmp_path / "forced"
    assert (
        _main(
            "prepare",
            "--work",
            work,
            "--dataset",
            "ouluvs2",
            "--root",
            oulu_root,
            "--views",
            "1",
            "--roi",
            "mouth",
            "--allow-failures",
        )
        == 0
    )
    manifest = Manifest.load(work / "manifest.jsonl")
    errors = [s.stages["prepare"].get("error", "") for s in manifest.samples]
    assert all(s.status("prepare") == "failed" for s in manifest.samples)
    assert all("--roi frame" in e and "no frame shows a face" in e for e in errors), errors[:2]
    assert "need --roi frame" in caplog.text


@pytest.mark.slow
def test_readme_oulu_commands_run_with_defaults(tmp_path: Path, oulu_root: Path, caplog) -> None:
    """prepare -> extract -> train -> evaluate on the cropped release, options as the README gives them.

    The speaker-independent split has no validation speakers, so train carves them from the training speakers.
    """
    work = tmp_path / "runs" / "oulu"
    assert (
        _main("prepare", "--work", work, "--dataset", "ouluvs2", "--root", oulu_root, "--views", "1,3,5", "--jobs", "2")
        == 0
    )
    assert _main("extract", "--work", work, "--backbone", "pixels", "--pca", "100") == 0
    with caplog.at_level(logging.INFO):
        assert _main("train", "--work", work) == 0
    assert "has no validation set" in caplog.text
    model_dir = next((work / "models").iterdir())
    spec = json.loads((model_dir / "spec.json").read_text())
    carved = spec["options"]["validation"]
    assert carved["carved_from"] == "train" and carved["speakers"]
    assert set(carved["speakers"]) <= {"s1", "s2", "s3", "s4", "s5"}
    assert (model_dir / "tensorboard").is_dir()  # the default run writes TensorBoard logs
    assert _main("evaluate", "--work", work) == 0
    report = json.loads(next((work / "reports").glob("*.json")).read_text())
    assert report["metrics"]["n_samples"] == 2 * len(OULU_UTTERANCES)  # test speakers 6 and 8
