"""The embedding networks' layouts on the shared skeleton: each trains a step with its own options; the MP-LSTM
network learns a cross-view task. (Every registered model is also run through ``test_conformance``.)"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.models.baselines.layers import early_fusion_layout, late_fusion_layout, single_layout
from pipeline.models.mplstm.layers import mplstm_layout
from pipeline.models.mvlstm.layers import mvlstm_layout
from pipeline.models.networks import build_model, compile_model

DIMS = [5, 4, 3]
STEPS = 6
RNG = np.random.default_rng(3)


def batch(n: int = 6, classes: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    """Random perspective sequences with some zero-padded tails, and one-hot labels."""
    xs = [RNG.normal(size=(n, STEPS, d)).astype("float32") for d in DIMS]
    for x in xs:
        x[::2, STEPS - 2 :] = 0.0
    return xs, keras.utils.to_categorical(RNG.integers(0, classes, n), classes)


@pytest.mark.parametrize(
    "layout,options",
    [
        (mplstm_layout, {}),
        (mplstm_layout, {"released": True, "bidirectional": False, "attention": False}),
        (single_layout, {"perspective": 2}),
        (early_fusion_layout, {}),
        (late_fusion_layout, {"combine": "scores"}),
        (late_fusion_layout, {"combine": "features"}),
        (mvlstm_layout, {"topology": "coupled"}),
    ],
)
def test_every_layout_trains_one_step(layout, options):
    model = compile_model(build_model(layout, DIMS, 3, timesteps=STEPS, units=6, **options), learning_rate=1e-2)
    model.run_eagerly = True  # one step: skip tracing (graph mode is exercised by the learning test)
    assert [i.name for i in model.inputs] == ["perspective_0", "perspective_1", "perspective_2"]
    xs, y = batch()
    loss, accuracy = model.train_on_batch(xs, y)
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert model.predict(xs, verbose=0).shape == (6, 3)


def test_layout_options_are_checked():
    with pytest.raises(ValueError, match="topology"):
        build_model(mvlstm_layout, DIMS, 3, topology="star")
    with pytest.raises(ValueError, match="combine"):
        build_model(late_fusion_layout, DIMS, 3, combine="max")
    model = build_model(mvlstm_layout, DIMS, 3, timesteps=STEPS, units=8)
    assert model.get_layer("mvlstm_encoder").forward_layer.cell.units == 6  # rounded down to a multiple of 3 views


def test_saved_networks_reload_with_the_same_predictions(tmp_path):
    xs, _ = batch()
    for name, layout in (("mplstm", mplstm_layout), ("mvlstm", mvlstm_layout)):
        model = build_model(layout, DIMS, 3, timesteps=STEPS, units=6)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        np.testing.assert_allclose(loaded.predict(xs, verbose=0), model.predict(xs, verbose=0), atol=1e-6)


def test_mplstm_learns_a_class_only_visible_across_two_views():
    n, rng = 64, np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(n, 2))
    labels = (signs[:, 0] != signs[:, 1]).astype(int)  # XOR: either view alone says nothing
    xs = [(signs[:, j, None, None] + 0.3 * rng.normal(size=(n, STEPS, 2))).astype("float32") for j in range(2)]
    y = keras.utils.to_categorical(labels, 2)
    keras.utils.set_random_seed(0)
    model = compile_model(
        build_model(mplstm_layout, [2, 2], 2, timesteps=STEPS, units=12, dropout=0.0), learning_rate=1e-2
    )
    history = model.fit(xs, y, batch_size=n, epochs=30, verbose=0).history
    assert history["loss"][-1] < 0.3 * history["loss"][0]
    assert history["accuracy"][-1] >= 0.95
