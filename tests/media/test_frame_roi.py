"""Whole-frame ROIs for clips that are already cropped: sizes, aspect, padding and exact per-frame matrices."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.media.roi import RoiConfig, crop_clip


def _clip(height: int, width: int, frames: int = 3, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(height * 1000 + width)
    shape = (frames, height, width) if gray else (frames, height, width, 3)
    return rng.integers(1, 255, shape, dtype=np.uint8)  # no black pixel: padding is recognisable


@pytest.mark.parametrize("height,width", [(40, 80), (80, 40), (29, 50), (96, 96), (300, 200)])
def test_pad_keeps_the_aspect_ratio_and_centres_the_frame(height: int, width: int) -> None:
    """The frame fills one side of the ROI, black borders split evenly on the other, and the matrix says where."""
    result = crop_clip(_clip(height, width), RoiConfig(roi="frame"))
    clip = result.clip
    assert clip.shape == (3, 96, 96, 3)
    rows = np.flatnonzero(clip[0].max(axis=(1, 2)) > 0)
    cols = np.flatnonzero(clip[0].max(axis=(0, 2)) > 0)
    scale = min(96 / height, 96 / width)
    assert len(rows) == round(height * scale) and len(cols) == round(width * scale)
    assert abs(rows[0] - (95 - rows[-1])) <= 1 and abs(cols[0] - (95 - cols[-1])) <= 1
    # the stored matrix maps the frame's corners onto the resized picture's corners and its centre onto the ROI's
    corners = np.array([[-0.5, -0.5, 1], [width - 0.5, height - 0.5, 1]]) @ result.crop_matrices[0].T
    assert np.allclose(corners, [[cols[0] - 0.5, rows[0] - 0.5], [cols[-1] + 0.5, rows[-1] + 0.5]], atol=1e-4)
    assert np.allclose(result.crop_centers(), [(width - 1) / 2, (height - 1) / 2], atol=1e-3)
    assert result.found.all() and not result.detected.any() and np.isnan(result.landmarks).all()


def test_stretch_fills_the_roi_and_gray_stays_gray() -> None:
    """``resize="stretch"`` leaves no border; gray input and ``grayscale`` give 2-D frames."""
    stretched = crop_clip(_clip(40, 80), RoiConfig(roi="frame", resize="stretch", size=(64, 64))).clip
    assert stretched.shape == (3, 64, 64, 3) and stretched.min() > 0
    gray = crop_clip(_clip(40, 80, gray=True), RoiConfig(roi="frame", size=(32, 48))).clip
    assert gray.shape == (3, 32, 48)
    made_gray = crop_clip(_clip(40, 80), RoiConfig(roi="frame", grayscale=True)).clip
    assert made_gray.shape == (3, 96, 96)


def test_same_size_is_the_frame_itself() -> None:
    """A clip already at the ROI size comes out unchanged."""
    frames = _clip(96, 96)
    assert np.array_equal(crop_clip(frames, RoiConfig(roi="frame")).clip, frames)


def test_perspective_sizes_and_bad_settings() -> None:
    """A size per perspective overrides ``size``; contradictory settings are refused with the reason."""
    config = RoiConfig(roi="frame", perspective_sizes=(("v1", 29, 50), ("v5", 44, 30)))
    assert config.for_perspective("v1").size == (29, 50) and config.for_perspective("v5").size == (44, 30)
    assert config.for_perspective("v3").size == (96, 96)
    with pytest.raises(ValueError, match="fixed box"):
        RoiConfig(roi="frame", fixed_box=(0, 0, 10, 10))
    with pytest.raises(ValueError, match="resize"):
        RoiConfig(roi="frame", resize="crop")
    with pytest.raises(ValueError, match="once"):
        RoiConfig(perspective_sizes=(("v1", 10, 10), ("v1", 12, 12)))
