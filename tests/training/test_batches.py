"""LRW-recipe training batches: shifted crops, flips, one mixup for inputs and labels, centred eval crops."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.augment import LRW_MEAN, LRW_STD
from pipeline.training.batches import AugmentedClips, eval_inputs


def _clips(n=6, t=3, side=20):
    # each pixel encodes its own column, so a crop's first column tells where it was cut
    cols = np.broadcast_to(np.arange(side, dtype=np.float32), (n, t, side, side))
    return (cols / side)[..., None].copy()


def test_eval_view_is_the_centred_normalised_crop():
    x = _clips()
    (out,) = eval_inputs([x], crop=10)
    assert out.shape == (6, 3, 10, 10, 1)
    np.testing.assert_allclose(out[0, 0, 0, :, 0], (np.arange(5, 15) / 20 - LRW_MEAN) / LRW_STD, rtol=1e-6)
    with pytest.raises(ValueError, match="larger than the ROI"):
        eval_inputs([x], crop=30)


def test_training_batches_shift_flip_and_mix_consistently():
    x = _clips(n=8)
    labels = np.eye(2, dtype=np.float32)[[0, 1] * 4]
    batches = AugmentedClips(
        {"video": x, "audio": np.arange(8, dtype=np.float32)[:, None]},
        {"visual": labels, "audio": labels},
        batch_size=8,
        crop=10,
        seed=1,
        alpha=1e-3,
    )
    assert len(batches) == 1
    seen_left, steps = set(), set()
    for _ in range(20):
        batches.on_epoch_end()
        xb, yb = batches[0]
        assert xb["video"].shape == (8, 3, 10, 10, 1)
        first = xb["video"][:, 0, 0, :, 0] * LRW_STD + LRW_MEAN  # un-normalise: column / 20
        for row in first:
            cols = np.rint(row * 20)
            step = cols[1] - cols[0]
            assert abs(step) == 1  # a contiguous crop, forwards or mirrored
            steps.add(int(step))
            seen_left.add(int(min(cols[0], cols[-1])))
        np.testing.assert_allclose(yb["visual"].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(yb["visual"], yb["audio"])  # the same partners and weights for both
    assert seen_left <= set(range(0, 11)) and len(seen_left) > 3  # shifts of up to +-5 around left=5
    assert steps == {-1, 1}  # some clips mirrored, some not


def test_augmented_clips_resumed_at_an_epoch_draw_what_the_uninterrupted_run_drew():
    """An augmenting sequence told to start at epoch 2 gives exactly the batches epoch 2 gave after epochs 0 and 1."""
    from pipeline.training.batches import AugmentedClips

    rng = np.random.default_rng(0)
    x = [rng.random((10, 3, 20, 20, 1), dtype=np.float32)]
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 10)]
    whole = AugmentedClips(x, y, 4, 16, seed=3)
    for _ in range(2):
        for index in range(len(whole)):
            whole[index]
        whole.on_epoch_end()
    resumed = AugmentedClips(x, y, 4, 16, seed=3)
    resumed.set_epoch(2)
    for index in range(len(whole)):
        (a, ya), (b, yb) = whole[index], resumed[index]
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(ya, yb)
    first = AugmentedClips(x, y, 4, 16, seed=3)
    assert not np.array_equal(first[0][0][0], whole[0][0][0])  # epochs draw differently
