"""Composite autoencoder/predictor: outputs, learning on moving squares, MP-LSTM encoder, encoder transfer, plot."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.evaluation.plots_composite import plot_composite_predictions
from pipeline.models.composite import (
    PREDICTION,
    RECONSTRUCTION,
    build_composite,
    classifier_from_encoder,
    composite_inputs,
    composite_targets,
    mplstm_encoder,
    peephole_encoder,
)

SIZE, SEEN, FUTURE = 10, 5, 3


def moving_squares(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, SEEN + FUTURE, SIZE, SIZE] frames of a 3x3 square moving with constant velocity, bouncing off the edges."""
    frames = np.zeros((n, SEEN + FUTURE, SIZE, SIZE), np.float32)
    for i in range(n):
        pos = rng.integers(0, SIZE - 3, size=2).astype(int)
        vel = rng.choice([-1, 1], size=2)
        for t in range(SEEN + FUTURE):
            frames[i, t, pos[0] : pos[0] + 3, pos[1] : pos[1] + 3] = 1.0
            for axis in range(2):
                if not 0 <= pos[axis] + vel[axis] <= SIZE - 3:
                    vel[axis] = -vel[axis]
                pos[axis] += vel[axis]
    return frames


def test_targets_reverse_the_seen_sequence():
    seen = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    targets = composite_targets([seen[..., :1], seen[..., 1:]], [seen, seen])
    assert np.array_equal(targets[RECONSTRUCTION], seen[:, ::-1])
    assert targets[PREDICTION].shape == (1, 3, 8)
    assert set(composite_targets(seen)) == {RECONSTRUCTION}
    with pytest.raises(ValueError):
        build_composite(4, 2, units=4)


@pytest.mark.parametrize("conditional", [False, True, "teacher"])
def test_composite_learns_moving_squares(conditional):
    keras.utils.set_random_seed(1)
    clips = moving_squares(64, np.random.default_rng(1))
    seen, future = clips[:, :SEEN], clips[:, SEEN:]
    authors = {"peepholes": True, "init": "authors", "encoder": peephole_encoder} if conditional == "teacher" else {}
    model = build_composite(
        SEEN,
        FUTURE,
        units=32,
        frame_shape=(SIZE, SIZE),
        conditional=conditional,
        optimizer=keras.optimizers.Adam(1e-2),
        **authors,
    )
    out = model(composite_inputs(model, seen[:2]))
    assert out[RECONSTRUCTION].shape == (2, SEEN, SIZE, SIZE) and out[PREDICTION].shape == (2, FUTURE, SIZE, SIZE)
    assert 0.0 <= float(keras.ops.min(out[PREDICTION])) and float(keras.ops.max(out[PREDICTION])) <= 1.0
    decoder_weights = {w.name for w in model.get_layer("prediction_decoder").cell.weights}
    assert ("kernel" in decoder_weights) == bool(conditional)
    x = composite_inputs(model, seen, future)
    history = model.fit(x, composite_targets(seen, future), batch_size=16, epochs=8, verbose=0).history
    for key in ("reconstruction_loss", "prediction_loss"):
        assert history[key][-1] < 0.8 * history[key][0], (key, history[key])


def test_mplstm_encoder_on_two_perspectives_and_transfer(tmp_path):
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    phase = rng.uniform(0, 2 * np.pi, size=(32, 1, 1))
    t = np.arange(SEEN + FUTURE)[None, :, None]
    views = [np.sin(0.6 * t + phase + k).repeat(d, axis=2).astype(np.float32) for k, d in ((0.0, 3), (1.0, 2))]
    seen, future = [v[:, :SEEN] for v in views], [v[:, SEEN:] for v in views]
    model = build_composite(
        SEEN,
        FUTURE,
        units=8,
        feature_dims=[3, 2],
        encoder=mplstm_encoder,
        conditional=True,
        optimizer=keras.optimizers.Adam(1e-2),
    )
    assert model.get_layer("encoder").get_layer("encoder_mplstm").cell.perspectives == 2
    history = model.fit(seen, composite_targets(seen, future), batch_size=16, epochs=5, verbose=0).history["loss"]
    assert history[-1] < history[0]

    classifier = classifier_from_encoder(model, n_classes=3)
    pretrained = model.get_layer("encoder").get_weights()
    copied = classifier.get_layer("encoder").get_weights()
    assert len(copied) == len(pretrained) > 0
    assert all(np.array_equal(a, b) for a, b in zip(copied, pretrained))
    fresh = build_composite(SEEN, FUTURE, units=8, feature_dims=[3, 2], encoder=mplstm_encoder)
    assert not any(np.allclose(a, b) for a, b in zip(fresh.get_layer("encoder").get_weights(), copied))

    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 32)]
    classifier.fit(seen, labels, epochs=1, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(classifier.get_layer("encoder").get_weights(), pretrained))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_layer("encoder").get_weights(), pretrained))

    path = tmp_path / "composite.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    expected = model(seen, training=False)[PREDICTION]
    assert np.allclose(restored(seen, training=False)[PREDICTION], expected, atol=1e-5)


def test_plot_writes_png_atomically(tmp_path):
    clips = moving_squares(1, np.random.default_rng(3))[0]
    reconstruction = clips[:SEEN][::-1, ..., None]
    path = plot_composite_predictions(clips[:SEEN], clips[SEEN:], reconstruction, clips[SEEN:], tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]
    with pytest.raises(ValueError):
        plot_composite_predictions(clips[0], clips[SEEN:], clips[:SEEN], clips[SEEN:], tmp_path / "q.png")
