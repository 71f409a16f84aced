"""Fitting: best checkpoint by val accuracy, resume after an interruption, finished runs not redone."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.training import COMPLETE, FitConfig, fit, load_checkpoint, one_hot, read_history  # noqa: E402


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = one_hot((x[:, 0] > 0).astype(int), 2)
    return x, y


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.RMSprop(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


class StopAt(keras.callbacks.Callback):
    """Simulates a kill at the end of an epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("killed")


def test_interrupted_fit_resumes_and_finished_fit_is_skipped(tmp_path):
    x, y = _data()
    config = FitConfig(epochs=5, batch_size=8, patience=10, tensorboard=False, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), (x, y), (x, y), tmp_path, config, {"run": "t"}, callbacks=[StopAt(2)])
    assert not (tmp_path / COMPLETE).exists()
    assert len(read_history(tmp_path / "history.csv")["loss"]) == 2  # epochs 0, 1 logged before the kill at 2
    epochs_run = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))
    history = fit(_model(), (x, y), (x, y), tmp_path, config, {"run": "t"}, callbacks=[counter])
    assert epochs_run[0] >= 2 and epochs_run[-1] == 4  # resumed, not restarted
    assert len(history["loss"]) == 5 and (tmp_path / COMPLETE).exists()
    best = load_checkpoint(tmp_path / "best.keras")
    assert best.evaluate(x, y, verbose=0)[1] == pytest.approx(max(history["val_accuracy"]), abs=1e-6)
    again = []
    fit(_model(), (x, y), (x, y), tmp_path, config, {"run": "t"}, callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: again.append(e))])
    assert again == []
