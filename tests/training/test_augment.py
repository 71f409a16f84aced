"""The authors' LRW recipe on synthetic frames of known content: shift range, resize, erased area, flipped-clip TTA."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training import augment
from pipeline.training.augment import LRW_MEAN, LRW_STD
from pipeline.training.batches import AugmentedClips, Recipe, eval_inputs, make_recipe

ROI = 146  # LRW's 136 px box stored with a 5 px margin
RAMP = 200.0  # pixel value = (column + 1) / RAMP: a crop's first column tells where it was cut


def ramp_clips(n: int = 4, t: int = 6) -> np.ndarray:
    cols = (np.arange(ROI, dtype=np.float32) + 1) / RAMP
    return np.broadcast_to(cols, (n, t, ROI, ROI))[..., None].copy()


def test_recipe_sizes():
    assert make_recipe("lrw", ROI) == Recipe("lrw", 136, 112)
    assert make_recipe("crop", ROI) == Recipe("crop", 136, 136)
    assert make_recipe("crop", ROI, 112) == Recipe("crop", 112, 112)
    assert make_recipe("lrw", 96) == Recipe("lrw", 86, 86)  # a 96 px mouth ROI: the box, not enlarged
    with pytest.raises(ValueError):
        make_recipe("lrw", 8)
    with pytest.raises(ValueError):
        make_recipe("blur", ROI)


def test_eval_view_is_the_centred_box_resized_to_112():
    (out,) = eval_inputs([ramp_clips()], make_recipe("lrw", ROI))
    assert out.shape == (4, 6, 112, 112, 1)
    row = out[0, 0, 0, :, 0] * LRW_STD + LRW_MEAN
    # the box covers columns 5..140; the resized ramp keeps its ends (to within a pixel of the 136 -> 112 filter)
    assert row[0] * RAMP - 1 == pytest.approx(5.6, abs=0.7)
    assert row[-1] * RAMP - 1 == pytest.approx(139.4, abs=0.7)
    steps = np.diff(row) * RAMP  # input columns per output column: 136 / 112 on average (area filter)
    assert steps.mean() == pytest.approx(136 / 112, abs=0.01) and steps.min() > 1.0 and steps.max() < 1.5


def test_training_shift_stays_within_5_px_and_varies():
    clips = ramp_clips(n=8)
    recipe = make_recipe("lrw", ROI)
    (centred,) = eval_inputs([clips[:1]], recipe)
    v0 = centred[0, 0, 0, 0, 0] * LRW_STD + LRW_MEAN
    batches = AugmentedClips([clips], np.eye(8, dtype=np.float32), 8, recipe, seed=0)
    shifts = set()
    for _ in range(10):
        out = batches._clips(clips, np.zeros(8, bool)) * LRW_STD + LRW_MEAN
        for clip in out:
            first = clip[:, :, 0, 0]
            kept = first[np.abs(first - LRW_MEAN) > 1e-6]  # erased pixels read back as the mean
            values, counts = np.unique(np.round((kept - v0) * RAMP, 3), return_counts=True)  # a shift adds to the ramp
            shift = values[counts.argmax()]
            assert shift == pytest.approx(round(shift), abs=1e-2) and abs(shift) <= 5
            shifts.add(int(round(shift)))
    assert len(shifts) >= 6


def test_erasing_removes_a_56_px_patch_in_every_frame_and_3_whole_frames():
    rng = np.random.default_rng(0)
    for _ in range(30):
        clip = np.ones((29, 112, 112, 1), np.float32)
        augment.erase(clip, rng)
        whole = [t for t in range(29) if not clip[t].any()]
        assert len(whole) == 3 and whole == list(range(whole[0], whole[0] + 3))
        others = [t for t in range(29) if t not in whole]
        masks = clip[others, :, :, 0] == 0
        assert (masks == masks[0]).all()  # the same place in every frame
        rows, cols = np.flatnonzero(masks[0].any(1)), np.flatnonzero(masks[0].any(0))
        assert 46 <= len(rows) <= 56 and 46 <= len(cols) <= 56
        assert masks[0].sum() == len(rows) * len(cols)  # one rectangle


def test_tta_adds_logits():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    expected = augment.softmax(z1 + z2)
    assert np.allclose(augment.flipped_logit_sum(z1, z2, logits=True), expected, atol=1e-6)
    assert np.allclose(
        augment.flipped_logit_sum(augment.softmax(z1), augment.softmax(z2), logits=False), expected, atol=1e-6
    )
    summed = augment.softmax(z1) + augment.softmax(z2)  # the old sum of probabilities ranks differently somewhere
    assert not np.allclose(summed / summed.sum(1, keepdims=True), expected, atol=1e-3)
