"""Face detection, landmarks and ROI cropping on real GRID clips; fixed-box mode, missing faces and contact sheets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.media.contact_sheet import write_contact_sheet
from pipeline.media.faces import (
    SHAPE_PREDICTOR_68,
    choose_face,
    detect_faces,
    detect_near,
    fit_every_frame,
    landmarks,
    model_path,
    track_face,
)
from pipeline.media.roi import (
    NoFaceError,
    RoiConfig,
    crop_clip,
    crop_clip_naive,
    crop_frames,
    crop_video,
    smooth_landmarks,
)
from pipeline.media.roi_check import crop_agreement, jitter
from pipeline.media.video import VideoError, read_frames, write_video


@pytest.fixture(scope="module")
def grid_frames(grid_dir: Path) -> dict[str, np.ndarray]:
    """All GRID sample clips decoded once."""
    return {path.name: read_frames(path) for path in sorted(grid_dir.glob("*.mpg"))}


@pytest.fixture(scope="module")
def mouth_results(grid_frames: dict[str, np.ndarray]) -> dict:
    """Tracked mouth ROIs of every GRID clip with the default configuration."""
    return {name: crop_clip(frames, RoiConfig(), source=name) for name, frames in grid_frames.items()}


def mouth_centre(points: np.ndarray) -> np.ndarray:
    """Centre of landmarks 48-67 per frame."""
    return points[:, 48:68].mean(axis=1)


def through(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map one point per frame ``[T, 2]`` through ``[T, 2, 3]`` affine matrices."""
    return np.einsum("tij,tj->ti", matrices[:, :, :2], points) + matrices[:, :, 2]


def test_model_files_found_without_import() -> None:
    assert model_path(SHAPE_PREDICTOR_68).stat().st_size > 50_000_000
    with pytest.raises(FileNotFoundError, match="no_such_model.dat"):
        model_path("no_such_model.dat")


def test_detection_downscaled_in_frame_coordinates(grid_clip: Path) -> None:
    frame = read_frames(grid_clip)[10]
    full = detect_faces(frame, scale=1.0)
    half = detect_faces(frame, scale=0.5)
    assert len(full) == 1 and len(half) == 1
    assert np.abs(full[0] - half[0]).max() < 0.15 * (full[0, 2] - full[0, 0])
    points = landmarks(frame, full[0])
    assert points.shape == (68, 2) and points.dtype == np.float32
    x0, y0, x1, y1 = full[0]
    assert x0 - 10 < mouth_centre(points[None])[0, 0] < x1 + 10 and (y0 + y1) / 2 < points[48:68, 1].mean() < y1 + 10


def test_choose_face_policies() -> None:
    boxes = np.array([[0, 0, 100, 100], [140, 110, 180, 150]], np.float32)
    assert choose_face(boxes, (256, 320), "largest")[2] == 100
    assert choose_face(boxes, (256, 320), "central")[0] == 140
    assert choose_face(np.zeros((0, 4), np.float32), (256, 320)) is None
    with pytest.raises(ValueError):
        choose_face(boxes, (256, 320), "loudest")


def test_face_found_in_every_frame(mouth_results: dict, grid_frames: dict) -> None:
    assert len(mouth_results) == 3
    for name, result in mouth_results.items():
        count = len(grid_frames[name])
        assert result.found.all(), name
        assert result.clip.shape == (count, 96, 96, 3) and result.clip.dtype == np.uint8
        assert 1 <= result.detected.sum() <= count // 10
        assert result.fitted.sum() < count / 2
        assert np.isfinite(result.det_boxes[result.detected]).all()
        assert np.isnan(result.det_boxes[~result.detected]).all()
        arrays = result.arrays()
        assert arrays["crop_matrices"].shape == (count, 2, 3) and arrays["landmarks"].shape == (count, 68, 2)


def test_mouth_centre_is_crop_centre(mouth_results: dict) -> None:
    for result in mouth_results.values():
        centre = np.array([47.5, 47.5])
        smoothed = through(result.crop_matrices, mouth_centre(result.landmarks))
        assert np.abs(smoothed - centre).max() < 0.01
        raw = through(result.crop_matrices, mouth_centre(result.raw_landmarks))
        assert np.linalg.norm(raw - centre, axis=1).max() < 3.0
        np.testing.assert_allclose(result.crop_centers(), mouth_centre(result.landmarks), atol=0.01)


def test_smoothing_reduces_jitter(grid_frames: dict, mouth_results: dict) -> None:
    for name, frames in grid_frames.items():
        smoothed = jitter(mouth_results[name].crop_centers())
        unsmoothed = jitter(crop_clip(frames, RoiConfig(smooth_window=0, landmark_every=1)).crop_centers())
        assert smoothed < 0.35 and smoothed < 0.6 * unsmoothed, (name, smoothed, unsmoothed)


def test_tracked_crops_match_per_frame_detection(grid_frames: dict, mouth_results: dict) -> None:
    name = "lbax4n.mpg"
    naive = crop_clip_naive(grid_frames[name], RoiConfig())
    assert naive.detected.all() and naive.fitted.all()
    offset = np.linalg.norm(mouth_results[name].crop_centers() - naive.crop_centers(), axis=1)
    assert offset.max() <= 2.5 and offset.mean() <= 1.0


def zoomed(frames: np.ndarray, factor: float) -> np.ndarray:
    """Frames resized by ``factor`` (to even sizes): a smaller or larger face than GRID's."""
    size = (int(frames.shape[2] * factor) // 2 * 2, int(frames.shape[1] * factor) // 2 * 2)
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])


def test_crops_agree_with_full_resolution_detection(grid_frames: dict) -> None:
    # Every GRID clip, and each shrunk to 80% (a face of ~100 px: at the default half-size detection it falls below
    # dlib's 80 px window, whose box then puts the fitted mouth far too low unless the box is refined at full size).
    for name, frames in grid_frames.items():
        for factor in (1.0, 0.8):
            clip = frames if factor == 1.0 else zoomed(frames, factor)
            naive = crop_clip_naive(clip, RoiConfig())
            check = crop_agreement(crop_clip(clip, RoiConfig()), naive)
            offsets, roi = (
                check["offsets"],
                check["roi_offsets"],
            )  # frame pixels, and ROI pixels (times the crop's zoom)
            assert offsets.mean() <= 1.0 and offsets.max() <= 2.5, (name, factor, offsets.mean(), offsets.max())
            assert roi.mean() <= 1.0 and roi.max() <= 3.0, (name, factor, roi.mean(), roi.max())
            zoom = np.sqrt(np.abs(np.linalg.det(naive.crop_matrices[:, :, :2])))
            np.testing.assert_allclose(roi, offsets * zoom, rtol=1e-5)
            assert check["scale_error"] <= 0.02 and check["rotation_error_deg"] <= 1.0, (name, factor, check)
            assert check["jitter_px"] <= check["reference_jitter_px"], (name, factor, check)


def test_refined_box_fits_like_the_full_resolution_box(grid_frames: dict) -> None:
    coarse_error, refined_error = [], []
    for frame in zoomed(grid_frames["lbax4n.mpg"][[10, 40, 70]], 0.8):
        full, half = detect_faces(frame, scale=1.0)[0], detect_faces(frame, scale=0.5)[0]
        assert half[2] - half[0] > 1.1 * (full[2] - full[0])  # the face is below the detector's window at half size
        mouth = landmarks(frame, full)[48:68].mean(axis=0)
        coarse_error.append(np.linalg.norm(landmarks(frame, half)[48:68].mean(axis=0) - mouth))
        refined_error.append(np.linalg.norm(landmarks(frame, detect_near(frame, half))[48:68].mean(axis=0) - mouth))
    assert max(coarse_error) > 5.0 and max(refined_error) < 1.0, (coarse_error, refined_error)


def test_flow_follows_the_mouth_between_fits(grid_frames: dict) -> None:
    frames = grid_frames["pwij3p.mpg"]
    track = track_face(frames, landmark_every=12)
    reference = fit_every_frame(frames)
    assert track.fitted.sum() <= 10 and track.found.all()
    between = ~track.fitted
    offset = np.linalg.norm(mouth_centre(track.landmarks) - mouth_centre(reference.landmarks), axis=1)[between]
    assert offset.max() < 3.0 and offset.mean() < 1.2


def test_redetects_when_the_face_jumps(grid_frames: dict) -> None:
    frames = grid_frames["pwij3p.mpg"].copy()
    frames[40:] = np.roll(frames[40:], -70, axis=2)
    result = crop_clip(frames, RoiConfig(landmark_every=4))
    assert result.detected[40:45].any()
    naive = crop_clip_naive(frames[48:], RoiConfig())
    offset = np.linalg.norm(result.crop_centers()[48:] - naive.crop_centers(), axis=1)
    assert offset.max() < 3.0


def test_missing_frames_are_reported_and_filled(grid_frames: dict) -> None:
    frames = grid_frames["sbwe5n.mpg"].copy()
    frames[:8] = 0
    result = crop_clip(frames, RoiConfig())
    assert not result.found[:8].any() and result.found[8:].all()
    assert result.missing_fraction == pytest.approx(8 / 75)
    assert np.isfinite(result.landmarks).all() and np.isfinite(result.crop_matrices).all()
    with pytest.raises(NoFaceError) as excinfo:
        crop_clip(frames, RoiConfig(max_missing_fraction=0.05), source="sbwe5n")
    assert excinfo.value.fraction > 0.05 and "sbwe5n" in str(excinfo.value)


def test_face_lost_mid_clip_is_found_again(grid_frames: dict) -> None:
    frames = grid_frames["lbax4n.mpg"].copy()
    frames[33:43] = 0
    track = track_face(frames)
    np.testing.assert_array_equal(np.flatnonzero(~track.found), np.arange(33, 43))
    assert track.detected[43] and np.isfinite(track.landmarks).all()


def test_no_face_raises(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (20, 120, 160, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError) as excinfo:
        crop_clip(noise, RoiConfig(), source="noise.mp4")
    assert isinstance(excinfo.value, VideoError) and "noise.mp4" in str(excinfo.value)
    assert "no face" in str(excinfo.value) and excinfo.value.fraction > 0.2
    # no face anywhere: searched to the end, so the message can say so
    assert "no face found in 20 of 20 frames (100%); at most 20% allowed" in str(excinfo.value)
    assert excinfo.value.fraction == 1.0
    with pytest.raises(NoFaceError, match=r"in 20 of 20 frames \(100%\)"):
        crop_clip(noise, RoiConfig(max_missing_fraction=1.0))


def test_face_leaving_the_frame_reports_the_true_share(grid_frames: dict, tmp_path: Path) -> None:
    frames = grid_frames["sbwe5n.mpg"].copy()
    frames[35:] = 0  # 40 of 75 frames without a face
    with pytest.raises(NoFaceError) as excinfo:  # the clip's length unknown in advance: counted to the end
        crop_frames(lambda: iter(frames), RoiConfig())
    assert "no face found in 40 of 75 frames (53%)" in str(excinfo.value)
    path = write_video(tmp_path / "leaves.mp4", frames, 25)
    with pytest.raises(NoFaceError, match=r"leaves.mp4: no face found in at least 16 of 75 frames \(stopped after 51"):
        crop_video(path)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_short_clips_work_with_default_smoothing(grid_frames: dict, count: int) -> None:
    frames = grid_frames["lbax4n.mpg"][20 : 20 + count]
    result = crop_clip(frames, RoiConfig())
    assert result.clip.shape == (count, 96, 96, 3) and result.found.all() and result.fitted[[0, -1]].all()
    assert np.isfinite(result.landmarks).all() and np.isfinite(result.crop_matrices).all()
    one = smooth_landmarks(result.raw_landmarks[:1], 12)
    np.testing.assert_allclose(one, result.raw_landmarks[:1], atol=1e-4)
    assert crop_clip(frames, RoiConfig(roi="face")).clip.shape == (count, 112, 112, 3)


def alive_frames(frames: np.ndarray, alive: list[int]):
    """Yield fresh copies of ``frames`` as a decoder would, recording how many are still referenced at each step."""
    import weakref

    refs: list[weakref.ref] = []

    def generate():
        for frame in frames:
            copy = frame.copy()
            refs.append(weakref.ref(copy))
            alive.append(sum(ref() is not None for ref in refs))
            yield copy
            del copy

    return generate


def test_streaming_holds_a_bounded_window_of_frames(grid_frames: dict) -> None:
    from pipeline.media.roi import _TrackedCrop

    frames = grid_frames["pwij3p.mpg"]
    config = RoiConfig()
    held = config.landmark_every + config.smooth_window // 2 + 2  # frames held at most, the one arriving included
    # three clips of 225 frames: the face throughout, gone for 40 frames mid-clip, and absent for the first 30 (whose
    # first frames are decoded again once the face is found)
    plain = np.concatenate([frames, frames[::-1], frames])
    gap, late = plain.copy(), plain.copy()
    gap[100:140] = 0
    late[:30] = 0
    for clip in (plain, gap, late):
        alive: list[int] = []
        opened = alive_frames(clip, alive)
        crop = _TrackedCrop(opened, config, "clip", lambda clip=clip: len(clip))
        result = crop.run(opened())
        assert len(result.clip) == len(clip) and np.isfinite(result.landmarks).all()
        assert crop.peak_held <= held and len(crop.free) + len(crop.held) <= held  # frame copies ever made
        assert max(alive) <= 3, max(alive)  # the decoder's own arrays are let go at once (replays: one more)
        # every crop is its frame warped by its stored matrix: the audit data is exact, replayed frames included
        for index in range(0, len(clip), 7):
            expected = cv2.warpAffine(clip[index], result.crop_matrices[index], (96, 96), flags=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(result.clip[index], expected)
        np.testing.assert_array_equal(result.clip, crop_clip(clip, config).clip)
    # a long gap holds the last landmarks, then moves linearly to where the face comes back
    result = crop_frames(lambda: iter(gap), config)
    assert not result.found[100:140].any() and result.found[:100].all() and result.found[140:].all()
    np.testing.assert_array_equal(
        result.raw_landmarks[100 : 140 - config.landmark_every],
        result.raw_landmarks[[99] * (40 - config.landmark_every)],
    )
    steps = np.diff(result.raw_landmarks[139 - config.landmark_every : 141, 48:68].mean(axis=1), axis=0)
    np.testing.assert_allclose(steps, steps[:1].repeat(len(steps), axis=0), atol=1e-3)


def test_decoding_ahead_gives_the_same_crops(grid_frames: dict) -> None:
    frames = grid_frames["sbwe5n.mpg"]
    ahead, inline = (crop_frames(lambda: iter(frames), RoiConfig(), decode_ahead=depth) for depth in (4, 0))
    for name, value in ahead.arrays().items():
        np.testing.assert_array_equal(value, getattr(inline, name), err_msg=name)
    np.testing.assert_array_equal(ahead.clip, inline.clip)


def test_fixed_box_streams(grid_frames: dict) -> None:
    alive: list[int] = []
    frames = grid_frames["lbax4n.mpg"]
    result = crop_frames(alive_frames(frames, alive), RoiConfig(fixed_box=(100, 100, 200, 200)))
    assert max(alive) <= 3 and result.clip.shape == (75, 100, 100, 3)
    np.testing.assert_array_equal(result.clip, frames[:, 100:200, 100:200])


def test_crop_video_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoError, match="broken.mp4"):
        crop_video(path)


def test_face_roi_and_grayscale(grid_frames: dict) -> None:
    frames = grid_frames["lbax4n.mpg"]
    face = crop_clip(frames, RoiConfig(roi="face", align=False))
    assert face.clip.shape == (75, 112, 112, 3)
    inside = np.einsum("tij,tnj->tni", face.crop_matrices[:, :, :2], face.landmarks) + face.crop_matrices[:, None, :, 2]
    assert inside.min() >= 0 and inside.max() <= 111
    aligned = crop_clip(frames, RoiConfig(roi="face", size=(128, 128), grayscale=True))
    assert aligned.clip.shape == (75, 128, 128)
    eyes = np.einsum("tij,tnj->tni", aligned.crop_matrices[:, :, :2], aligned.landmarks[:, [36, 45]])
    eyes += aligned.crop_matrices[:, None, :, 2]
    assert np.abs(eyes[:, 0, 1] - eyes[:, 1, 1]).max() < 1.0
    gray_input = crop_clip(np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]))
    assert gray_input.clip.shape == (75, 96, 96) and gray_input.found.all()


def test_fixed_box_is_exact() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    result = crop_clip(frames, RoiConfig(fixed_box=(59, 95, 195, 231)))
    np.testing.assert_array_equal(result.clip, frames[:, 95:231, 59:195])
    np.testing.assert_allclose(through(result.crop_matrices, np.tile([[59.0, 95.0]], (5, 1))), 0.0, atol=1e-4)
    assert result.found.all() and not result.detected.any()
    small = crop_clip(frames, RoiConfig(fixed_box=(59, 95, 195, 231), size=(88, 88), grayscale=True))
    assert small.clip.shape == (5, 88, 88)
    with pytest.raises(VideoError, match="does not fit"):
        crop_clip(frames[:, :200], RoiConfig(fixed_box=(59, 95, 195, 231)))


def test_config_validation() -> None:
    assert RoiConfig().size == (96, 96) and RoiConfig(roi="face").size == (112, 112)
    assert RoiConfig(fixed_box=(0, 0, 40, 30)).size == (30, 40)
    for bad in ({"roi": "ear"}, {"face_policy": "oldest"}, {"fixed_box": (10, 10, 5, 20)}, {"detect_scale": 0.0}):
        with pytest.raises(ValueError):
            RoiConfig(**bad)


def test_contact_sheet(tmp_path: Path, mouth_results: dict) -> None:
    clips = [(name, result.clip) for name, result in mouth_results.items()]
    clips.append(("gray", mouth_results["lbax4n.mpg"].clip[:3, ..., 0]))
    path = write_contact_sheet(tmp_path / "sheet.png", clips, frames_per_clip=6)
    image = cv2.imread(str(path))
    assert image.shape[0] == 4 * (20 + 96 + 4) and image.shape[1] == 6 * 96 + 5 * 4
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]
    with pytest.raises(ValueError):
        write_contact_sheet(tmp_path / "empty.png", [])
