"""ConvLSTM lip reader: layer specs, per-view or shared stacks, and a loss that falls on tiny clips."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.models.convlstm import build_convlstm, parse_layers

SHAPE = (4, 12, 12, 1)


def blob_clips(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright 3x3 blob in the top half of every frame; class 1: in the bottom half (plus noise)."""
    labels = rng.integers(0, 2, n)
    clips = rng.normal(0.0, 0.1, size=(n,) + SHAPE).astype(np.float32)
    for i, label in enumerate(labels):
        for t in range(SHAPE[0]):
            y = rng.integers(0, 3) + (7 if label else 1)
            x = rng.integers(1, 8)
            clips[i, t, y : y + 3, x : x + 3, 0] += 1.0
    return clips, np.eye(2, dtype=np.float32)[labels]


def test_layer_spec_is_checked():
    assert parse_layers("conv, pool,convlstm") == ["conv", "pool", "convlstm"]
    with pytest.raises(ValueError):
        parse_layers("conv,lstm")
    with pytest.raises(ValueError):
        parse_layers("pool")
    with pytest.raises(ValueError):
        build_convlstm([SHAPE], 2, layers="conv,convlstm", filters=(4,))
    with pytest.raises(ValueError):
        build_convlstm([SHAPE, (4, 8, 8, 1)], 2, layers="convlstm", filters=(4,), shared=True)


def test_multi_view_shapes_and_shared_weights():
    separate = build_convlstm([SHAPE, SHAPE], 3, layers="conv,pool,convlstm", filters=(4, 6))
    shared = build_convlstm([SHAPE, SHAPE], 3, layers="conv,pool,convlstm", filters=(4, 6), shared=True)
    clips = [np.zeros((2,) + SHAPE, np.float32), np.ones((2,) + SHAPE, np.float32)]
    for model in (separate, shared):
        probs = keras.ops.convert_to_numpy(model(clips, training=False))
        assert probs.shape == (2, 3)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    head = 2 * 6 * 3 + 3
    stack = separate.get_layer("stack0").count_params()
    assert separate.count_params() == 2 * stack + head
    assert shared.count_params() == stack + head
    kinds = {type(layer).__name__ for layer in separate.get_layer("stack0").layers}
    assert {"ConvLSTM2D", "TimeDistributed"} <= kinds


def test_loss_falls_on_tiny_clips():
    keras.utils.set_random_seed(0)
    clips, labels = blob_clips(48, np.random.default_rng(0))
    model = build_convlstm([SHAPE], 2, layers="conv,pool,convlstm", filters=(6, 8), dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    history = model.fit(clips, labels, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]
