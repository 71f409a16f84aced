"""The offline datasets: the synthetic multi-view talking face and Srivastava-style moving digits."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.manifest import Manifest
from pipeline.media import render_face as rf
from pipeline.media.faces import detect_faces
from pipeline.media.video import read_frames
from pipeline.recipes.moving_digits import (
    bouncing_trajectories,
    compose_max,
    generate,
    moving_digits,
    prepare_moving_digits,
)
from pipeline.recipes.synthetic import prepare_synthetic, still_face

SMALL = {"n_per_class": 2, "n_classes": 4, "n_speakers": 3, "perspectives": 3, "frames": 16}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Manifest:
    """A small synthetic dataset (8 clips x 3 views), generated once for the module."""
    return prepare_synthetic(tmp_path_factory.mktemp("synthetic"), **SMALL)


def _hashes(manifest: Manifest) -> dict[tuple[str, str], str]:
    return {(s.id, v): m["sha256"] for s in manifest for v, m in s.media.items()}


def test_synthetic_layout_and_labels(synthetic):
    assert synthetic.dataset == "synthetic"
    assert synthetic.perspectives == ["v1", "v2", "v3"]
    assert synthetic.classes == rf.class_patterns(4)
    assert len(synthetic) == 4 * 2
    for sample in synthetic:
        assert sample.label == sample.meta["pattern"] in synthetic.classes
        for view in synthetic.perspectives:
            path = synthetic.source_path(sample, view)
            assert path.is_file() and path.relative_to(synthetic.root).as_posix() == f"videos/{view}/{sample.id}.mp4"
    frames = read_frames(synthetic.source_path(synthetic.samples[0], "v2"))
    assert frames.shape == (16, 160, 160, 3)


def test_synthetic_splits_are_speaker_disjoint(synthetic):
    split_of: dict[str, set[str]] = {}
    for sample in synthetic:
        split_of.setdefault(sample.speaker, set()).add(sample.split)
    assert all(len(splits) == 1 for splits in split_of.values())
    assert {s.split for s in synthetic} == {"train", "val", "test"}


def test_synthetic_is_deterministic_and_idempotent(synthetic, tmp_path):
    again = prepare_synthetic(tmp_path / "again", **SMALL)
    assert _hashes(again) == _hashes(synthetic)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in synthetic]
    first = synthetic.source_path(synthetic.samples[0], "v1")
    stamp = first.stat().st_mtime_ns
    rerun = prepare_synthetic(synthetic.root, **SMALL)
    assert first.stat().st_mtime_ns == stamp  # kept, not rewritten
    assert _hashes(rerun) == _hashes(synthetic)
    other = prepare_synthetic(tmp_path / "again", **{**SMALL, "seed": 1})
    assert set(_hashes(other).values()).isdisjoint(_hashes(synthetic).values())


def test_synthetic_manifest_round_trip(synthetic, tmp_path):
    path = tmp_path / "manifest.jsonl"
    synthetic.save(path)
    loaded = Manifest.load(path)
    assert loaded.dumps() == synthetic.dumps()
    assert loaded.info["yaw_degrees"] == {"v1": -30.0, "v2": 0.0, "v3": 30.0}


def test_dlib_finds_the_face_in_every_view(synthetic):
    for sample in synthetic.samples[::2]:
        for view in synthetic.perspectives:
            frames = read_frames(synthetic.source_path(sample, view))
            missed = [t for t in range(len(frames)) if len(detect_faces(frames[t])) == 0]
            assert not missed, f"{sample.id} {view}: no face in frames {missed}"


def test_every_frame_has_a_clean_view_and_no_view_is_always_clean():
    rng = np.random.default_rng(0)
    plans = np.stack([rf.corruption_plan(30, 3, rng) for _ in range(200)])
    assert (plans == rf.CLEAN).any(axis=1).all()
    corrupted = (plans != rf.CLEAN).mean(axis=(0, 2))
    assert np.all((corrupted > 0.3) & (corrupted < 0.7))


@pytest.mark.parametrize("kind", sorted(rf.CORRUPTIONS))
def test_a_corrupted_mouth_does_not_show_its_opening(kind):
    face = still_face()
    view = rf.ViewSetup(0.0, 160 / 150, 1.0, 0.0, 0.0)
    centre = rf.apply_point(rf.yaw_homography(face.centre, 0.0, 160 / 150, (80, 80), 500.0), face.mouth_centre)
    x, y = (int(c) for c in centre)

    def mouth_box(opening: float, plan: int) -> np.ndarray:
        clip = rf.render_clip(
            face,
            np.array([opening]),
            np.ones(1),
            [view],
            np.full((1, 1), plan),
            np.zeros((1, 2)),
            160,
            np.random.default_rng(0),
        )
        return clip[0, 0, y - 4 : y + 12, x - 12 : x + 12].astype(float)

    wide = 0.35 * face.mouth_width
    assert np.abs(mouth_box(wide, rf.CLEAN) - mouth_box(0.0, rf.CLEAN)).mean() > 30
    assert abs(mouth_box(wide, kind).mean() - mouth_box(0.0, kind).mean()) < 3


def test_viseme_tracks_follow_the_class_pattern():
    rng = np.random.default_rng(0)
    for pattern in ("a", "ao", "eoa"):
        opening, width = rf.viseme_track(pattern, 30, rng)
        peaks = np.flatnonzero((opening[1:-1] > opening[:-2]) & (opening[1:-1] >= opening[2:]) & (opening[1:-1] > 0.05))
        assert len(peaks) == len(pattern)
        for peak, viseme in zip(peaks, pattern):
            assert np.sign(width[peak + 1] - 1) == np.sign(rf.VISEMES[viseme][1] - 1)


def _mouth_darkness(face: rf.Face, pattern: str, seed: int) -> np.ndarray:
    """Mean darkness of the mouth box over a clean frontal clip of ``pattern``."""
    opening, width = rf.viseme_track(pattern, 30, np.random.default_rng(seed))
    view = rf.ViewSetup(0.0, 160 / 150, 1.0, 0.0, 0.0)
    clip = rf.render_clip(
        face,
        opening * face.mouth_width,
        width,
        [view],
        np.zeros((1, 30), int),
        np.zeros((30, 2)),
        160,
        np.random.default_rng(0),
    )
    centre = rf.apply_point(rf.yaw_homography(face.centre, 0.0, 160 / 150, (80, 80), 500.0), face.mouth_centre)
    x, y = (int(c) for c in centre)
    return 255 - clip[0, :, y - 8 : y + 16, x - 20 : x + 20].mean(axis=(1, 2, 3))


def test_class_patterns_differ_in_mouth_intensity_over_time():
    face = still_face()
    courses = {p: _mouth_darkness(face, p, seed=3) for p in ("a", "aa", "e")}
    for pattern, course in courses.items():
        rise = course - course[0]
        assert rise.max() > 5 if "a" in pattern else rise.max() > 1
    bumps = {p: int(np.sum(np.diff((c - c[0] > 0.5 * (c.max() - c[0])).astype(int)) == 1)) for p, c in courses.items()}
    assert bumps["a"] == 1 and bumps["aa"] == 2
    assert courses["a"].max() - courses["a"][0] > 2 * (courses["e"].max() - courses["e"][0])


def test_rendered_videos_carry_the_opening_on_clean_frames(synthetic):
    face = still_face()
    checked = 0
    for sample in synthetic:
        frames = read_frames(synthetic.source_path(sample, "v2")).astype(np.float32)
        clean = np.array([c == "0" for c in sample.meta["corrupted"]["v2"]])
        opening = np.array(sample.meta["opening"])
        zoom = sample.meta["views"]["v2"]["zoom"]
        offset = np.array(synthetic.info["speakers"][sample.speaker]["offset"])
        x, y = (
            int(c)
            for c in rf.apply_point(
                rf.yaw_homography(face.centre - offset, 0.0, zoom, (80, 80), 500.0), face.mouth_centre
            )
        )
        darkness = 255 - frames[:, y - 6 : y + 14, x - 15 : x + 15].mean(axis=(1, 2, 3))
        if clean.sum() >= 4 and np.ptp(opening[clean]) > 0.05:
            assert np.corrcoef(darkness[clean], opening[clean])[0, 1] > 0.8, sample.id
            checked += 1
    assert checked >= 2


def test_moving_digits_shape_and_determinism():
    videos, labels = moving_digits(5, seed=3)
    assert videos.shape == (5, 20, 64, 64) and videos.dtype == np.uint8
    assert labels.shape == (5, 2) and set(labels.ravel()) <= set(range(10))
    again, _ = moving_digits(5, seed=3)
    assert np.array_equal(videos, again)
    assert not np.array_equal(videos, moving_digits(5, seed=4)[0])


def test_moving_digits_stay_inside_and_bounce():
    canvas = 64 - 28
    corners = bouncing_trajectories(200, 20, canvas, 2, np.random.default_rng(0))
    assert corners.min() >= 0 and corners.max() <= canvas
    steps = np.diff(corners, axis=2)
    assert np.linalg.norm(steps, axis=-1).max() <= 0.1 * canvas + 1e-9
    flips = np.sign(steps[..., 1:, :]) != np.sign(steps[..., :-1, :])
    assert flips.any()
    at_flip = corners[..., 1:-1, :][flips]
    assert np.all((at_flip <= 0.1 * canvas) | (at_flip >= canvas - 0.1 * canvas))  # only next to an edge


def test_moving_digits_overlap_by_pixelwise_max():
    batch = generate(6, seed=1)
    layers = [compose_max(batch.glyphs[:, k : k + 1], batch.corners[:, k : k + 1], 64) for k in range(2)]
    assert np.array_equal(batch.videos, np.maximum(*layers))
    assert all(layer.reshape(6, 20, -1).max(-1).min() > 0 for layer in layers)  # each digit is visible in every frame


def test_prepare_moving_digits_writes_readable_clips(tmp_path):
    manifest = prepare_moving_digits(tmp_path, n=10, seed=2)
    path = tmp_path / "manifest.jsonl"
    manifest.save(path)
    loaded = Manifest.load(path)
    assert loaded.dumps() == manifest.dumps() and loaded.perspectives == ["v1"]
    videos, labels = moving_digits(10, seed=2)
    for i, sample in enumerate(loaded):
        assert sample.label == str(labels[i, 0]) and sample.meta["digits"] == labels[i].tolist()
    frames = read_frames(loaded.source_path(loaded.samples[0], "v1"))
    assert frames.shape == (20, 64, 64, 3)
    assert np.abs(frames.mean(-1) - videos[0]).mean() < 6
    assert {s.split for s in loaded} <= {"train", "val", "test"}
