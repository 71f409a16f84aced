"""Fitting: best checkpoint by val accuracy, resume after an interruption, finished runs not redone."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.training.fit import COMPLETE, FitConfig, fit, load_checkpoint, one_hot, read_history  # noqa: E402


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
    fit(
        _model(),
        (x, y),
        (x, y),
        tmp_path,
        config,
        {"run": "t"},
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: again.append(e))],
    )
    assert again == []


def _dropout_model():
    keras.utils.set_random_seed(7)  # as `train` does before building: the same initial weights in every run
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.RMSprop(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _history_rows(path):
    return [row[1:] for row in _epochs(path)]


class _SeenRows(keras.layers.Layer):
    """Passes its input through, recording the sample ids (column 0) of every training batch, in order."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def call(self, x, training=None):
        if training:  # run eagerly: x holds this batch's values under every backend
            self.seen.append(np.asarray(x)[:, 0].astype(int).tolist())
        return x


def _epoch_orders(tmp_path, seed):
    inputs, recorder = keras.Input((2,)), _SeenRows()
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(recorder(inputs)))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"], run_eagerly=True)
    x = np.stack([np.arange(12), np.zeros(12)], axis=1).astype("float32")
    y = one_hot(np.arange(12) % 2, 2)
    config = FitConfig(epochs=3, batch_size=4, patience=10, seed=seed, tensorboard=False, verbose=0)
    fit(model, (x, y), (x, y), tmp_path / f"seed{seed}-{len(list(tmp_path.iterdir()))}", config, {"run": "t"})
    return [sum(recorder.seen[e * 3 : e * 3 + 3], []) for e in range(3)]


def test_in_memory_training_reshuffles_every_epoch_and_repeats_per_seed(tmp_path):
    """Every epoch sees every sample once in a new order (Keras's own array shuffle repeats one order once a seed is
    set); the same seed gives the same orders, another seed others."""
    orders = _epoch_orders(tmp_path, seed=0)
    assert all(sorted(order) == list(range(12)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3
    assert _epoch_orders(tmp_path, seed=0) == orders
    assert _epoch_orders(tmp_path, seed=1) != orders


def test_epochs_do_not_reset_tensorflows_seed(tmp_path, monkeypatch):
    """TensorFlow's seed is set once per fit: setting it clears its kernel cache, and every epoch would then
    re-instantiate the compiled step (3-5 s an epoch for a ResNet-50-feature MP-LSTM on 2 cores, against 1 s)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's seed")
    import tensorflow as tf

    calls = []
    real = tf.random.set_seed
    monkeypatch.setattr(tf.random, "set_seed", lambda seed: calls.append(seed) or real(seed))
    x, y = _data()
    fit(_model(), (x, y), (x, y), tmp_path, FitConfig(epochs=4, batch_size=8, tensorboard=False, verbose=0), {})
    assert len(calls) == 1


def test_resumed_fit_equals_the_uninterrupted_one(tmp_path):
    """Shuffling, dropout and optimizer state continue as if never interrupted: same history, same weights."""
    x, y = _data()
    config = FitConfig(epochs=8, batch_size=8, patience=10, seed=3, tensorboard=False, verbose=0)
    fit(_dropout_model(), (x, y), (x, y), tmp_path / "whole", config, {"run": "t"})
    for stop in (2, 5):
        with pytest.raises(KeyboardInterrupt):
            fit(_dropout_model(), (x, y), (x, y), tmp_path / "parts", config, {"run": "t"}, callbacks=[StopAt(stop)])
    fit(_dropout_model(), (x, y), (x, y), tmp_path / "parts", config, {"run": "t"})
    assert (
        _history_rows(tmp_path / "parts") != [] and len(read_history(tmp_path / "parts" / "history.csv")["loss"]) >= 4
    )
    assert read_history(tmp_path / "parts" / "history.csv") == read_history(tmp_path / "whole" / "history.csv")
    whole, parts = (load_checkpoint(tmp_path / d / "best.keras") for d in ("whole", "parts"))
    for a, b in zip(whole.get_weights(), parts.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_damaged_backup_is_discarded_and_the_previous_one_used(tmp_path, caplog):
    """A backup cut short by a kill (or a full disk) is moved aside with a warning; resume uses the one before."""
    x, y = _data()
    config = FitConfig(epochs=6, batch_size=8, patience=10, seed=1, tensorboard=False, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        fit(_dropout_model(), (x, y), (x, y), tmp_path, config, {"run": "t"}, callbacks=[StopAt(4)])
    backups = sorted((tmp_path / "backup").glob("epoch-*.weights.h5"))
    assert [b.name for b in backups] == ["epoch-00003.weights.h5", "epoch-00004.weights.h5"]
    backups[-1].write_bytes(backups[-1].read_bytes()[:200])  # the newest backup is damaged
    epochs_run = []
    with caplog.at_level("WARNING"):
        history = fit(
            _dropout_model(),
            (x, y),
            (x, y),
            tmp_path,
            config,
            {"run": "t"},
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))],
        )
    assert "damaged training backup" in caplog.text
    assert epochs_run[0] == 3 and len(history["loss"]) == 6  # resumed after epoch 3, the last good backup
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch-00006.weights.h5",
        "state.json",
    ]  # the last only


def test_checkpoint_is_never_half_written(tmp_path, monkeypatch):
    """A save that fails part way (full disk, kill) leaves the previous best checkpoint whole and no partial file."""
    from pipeline.training import checkpoints

    x, y = _data()
    config = FitConfig(epochs=3, batch_size=8, patience=10, tensorboard=False, verbose=0)
    fit(_model(), (x, y), (x, y), tmp_path, config, {"run": "t"})
    before = (tmp_path / "best.keras").read_bytes()

    def failing(path):
        with open(path, "wb") as handle:
            handle.write(b"PK half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        checkpoints.save_atomically(failing, tmp_path / "best.keras")
    assert (tmp_path / "best.keras").read_bytes() == before
    from pipeline.storage.atomic import TMP_MARK

    assert not [p.name for p in tmp_path.iterdir() if TMP_MARK in p.name or p.name.startswith(".partial-")]


TRAIN_SCRIPT = """
import sys
import numpy as np
import keras
sys.path.insert(0, {tests!r})
from test_training import _dropout_model
from pipeline.training.fit import FitConfig, fit, one_hot
rng = np.random.default_rng(0)
x = rng.normal(size=(1500, 4)).astype("float32")
y = one_hot((x[:, 0] + 0.3 * x[:, 1] > 0).astype(int), 2)
fit(_dropout_model(), (x, y), (x[:200], y[:200]), __import__("pathlib").Path(sys.argv[1]),
    FitConfig(epochs=10, batch_size=8, patience=20, seed=5, tensorboard=False, verbose=0), {{"run": "kill"}})
"""


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    """SIGKILL at seeded random moments (inside checkpoint and backup writes too), resumed each time: the history and
    the best checkpoint equal an uninterrupted run's."""
    import random
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, str(script), str(tmp_path / "whole")], check=True, env=env, timeout=600)
    chance = random.Random(11)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed")], env=env)
        deadline = time.monotonic() + 300
        while (
            not (tmp_path / "killed" / "history.csv").exists()
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        time.sleep(chance.uniform(0.0, 3.0))
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait()
    subprocess.run([sys.executable, str(script), str(tmp_path / "killed")], check=True, env=env, timeout=600)
    assert kills >= 2
    assert read_history(tmp_path / "killed" / "history.csv") == read_history(tmp_path / "whole" / "history.csv")
    whole, killed = (load_checkpoint(tmp_path / d / "best.keras") for d in ("whole", "killed"))
    for a, b in zip(whole.get_weights(), killed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_full_disk_at_a_backup_then_resume_writes_each_epoch_once(tmp_path, monkeypatch):
    """The history row of an epoch whose backup could not be saved is logged, then redone on resume: never twice."""
    import errno
    import os

    from pipeline.training import checkpoints

    x, y = _data()
    config = FitConfig(epochs=5, batch_size=8, patience=10, seed=2, tensorboard=False, verbose=0)
    fit(_dropout_model(), (x, y), (x, y), tmp_path / "whole", config, {"run": "t"})
    original = checkpoints.save_atomically

    def save(save, path, model=None):
        if path.name == "epoch-00003.weights.h5":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(save, path, model)

    monkeypatch.setattr(checkpoints, "save_atomically", save)
    with pytest.raises(OSError, match="No space left") as failure:
        fit(_dropout_model(), (x, y), (x, y), tmp_path / "full", config, {"run": "t"})
    assert failure.value.filename.endswith("epoch-00003.weights.h5")
    assert [row[0] for row in _epochs(tmp_path / "full")] == ["0", "1", "2"]  # epoch 2's row is there, its backup not
    monkeypatch.undo()
    fit(_dropout_model(), (x, y), (x, y), tmp_path / "full", config, {"run": "t"})
    assert _epochs(tmp_path / "full") == _epochs(tmp_path / "whole") and len(_epochs(tmp_path / "whole")) == 5


def _epochs(path):
    return [line.split(",") for line in path.joinpath("history.csv").read_text().splitlines()[1:]]
