"""ConvLSTM lip reader: layer specs, per-view or shared stacks, a loss that falls on tiny clips, and the lean layers
(time folded into the batch, recomputed ConvLSTM steps) against Keras's own: same outputs, same training, what the
memory estimate counts for them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.models.convlstm import build_convlstm, parse_layers
from pipeline.models.convlstm.layers import FoldedTimeDistributed, RecomputedConvLSTM2D
from pipeline.training.memory import CALIBRATION, LEAN_CALIBRATION, calibration, counted_elements, estimate_bytes

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
    kinds = {type(layer) for layer in separate.get_layer("stack0").layers}
    assert {RecomputedConvLSTM2D, FoldedTimeDistributed} <= kinds  # the lean layers, not Keras's own
    assert keras.layers.TimeDistributed not in kinds and keras.layers.ConvLSTM2D not in kinds


def test_loss_falls_on_tiny_clips():
    keras.utils.set_random_seed(0)
    clips, labels = blob_clips(48, np.random.default_rng(0))
    model = build_convlstm([SHAPE], 2, layers="conv,pool,convlstm", filters=(6, 8), dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    history = model.fit(clips, labels, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]


def keras_twin(lean: keras.Model) -> keras.Model:
    """``lean``'s stack rebuilt from Keras's own TimeDistributed and ConvLSTM2D, with its weights."""
    clip = keras.Input(SHAPE)
    x = clip
    for layer in lean.layers[1:]:
        config = layer.get_config()
        if isinstance(layer, FoldedTimeDistributed):
            x = keras.layers.TimeDistributed(keras.layers.deserialize(config["layer"]), name=layer.name)(x)
        elif isinstance(layer, RecomputedConvLSTM2D):
            x = keras.layers.ConvLSTM2D.from_config(config)(x)
        else:
            x = type(layer).from_config(config)(x)
    twin = keras.Model(clip, x)
    twin.set_weights(lean.get_weights())
    return twin


def test_lean_layers_compute_and_train_as_keras_own():
    keras.utils.set_random_seed(1)
    clips, labels = blob_clips(6, np.random.default_rng(1))
    models = []
    for make in (lambda m: m, keras_twin):
        stack = make(build_convlstm([SHAPE], 2, layers="conv,pool,convlstm,convlstm", filters=(4, 6, 5)).layers[1])
        head = keras.layers.Dense(2, activation="softmax")
        model = keras.Sequential([stack, keras.layers.GlobalAveragePooling1D(), head])
        model.build((None, *SHAPE))
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    lean, plain = models
    assert np.allclose(lean.predict(clips, verbose=0), plain.predict(clips, verbose=0), rtol=0, atol=1e-6)
    losses = []
    for model in models:
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
        losses.append([float(np.ravel(model.train_on_batch(clips, labels))[0]) for _ in range(3)])
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-6) and losses[0][-1] < losses[0][0]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the gradients agree: recomputed steps, folded frames
    for a, b in zip(lean.get_weights(), plain.get_weights()):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_memory_estimate_counts_what_the_lean_layers_keep():
    shape = (29, 112, 112, 1)
    model = build_convlstm([shape], 3)  # the default stack: conv, pool, convlstm, pool, convlstm
    frames, conv, pooled, lstm1, pooled2, lstm2 = (
        29,
        112 * 112 * 32,
        56 * 56 * 32,
        56 * 56 * 48,
        28 * 28 * 48,
        28 * 28 * 64,
    )
    kept = (
        frames
        * (
            3 * conv  # conv, batch norm, relu
            + pooled
            + (pooled + 3 * lstm1)  # each step's input, h and c, and the output sequence
            + lstm1  # batch norm
            + pooled2
            + (pooled2 + 3 * lstm2)
            + lstm2
        )
        + frames * 64  # per-frame spatial pool
        + 2 * 64  # time pool, dropout
        + 3  # classifier
    )
    assert counted_elements(model) == kept
    assert calibration(model) == LEAN_CALIBRATION < CALIBRATION
    assert estimate_bytes(model, 8) == int(LEAN_CALIBRATION * 4 * 8 * kept)
    assert calibration(keras_twin(model.get_layer("stack0"))) == CALIBRATION  # Keras's own layers keep more
