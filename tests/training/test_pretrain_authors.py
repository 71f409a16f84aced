"""Composite pretraining under the authors' options: their Moving MNIST motion model, the endless stream of fresh
clips, the options' checks, and one small ``train`` run through them all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.media.roi import RoiConfig
from pipeline.models.registry import model_options
from pipeline.recipes.common import RecipeError
from pipeline.recipes.moving_digits import authors_trajectories, fresh_clips
from pipeline.training.batches import FreshMovingDigits
from pipeline.verbs import ExecutionConfig, ExtractConfig, PrepareConfig, TrainConfig, extract, prepare, train
from pipeline.workspace import Workspace

AUTHORS = {
    "pretrain": "composite",
    "conditional": "teacher",
    "peepholes": True,
    "lstm_init": "authors",
    "classifier_head": "time-average",
    "pretrain_loss": "sum",
}


def test_trajectories_step_then_clamp_at_the_edges():
    rng = np.random.default_rng(0)
    canvas, step = 1000, 0.1
    corners = authors_trajectories(200, 30, canvas, rng, step)
    assert corners.dtype == np.int64 and corners.min() >= 0 and corners.max() <= canvas
    moves = np.abs(np.diff(corners, axis=1)).astype(float)
    speed = np.hypot(moves[..., 0], moves[..., 1])
    inside = (corners[:, 1:] > 0).all(-1) & (corners[:, 1:] < canvas).all(-1) & (corners[:, :-1] > 0).all(-1)
    inside &= (corners[:, :-1] < canvas).all(-1)
    assert np.allclose(speed[inside], step * canvas, atol=1.5)  # 0.1 of the canvas a frame away from the edges
    assert ((corners == 0) | (corners == canvas)).any()  # an edge is reached, and held there for that frame
    again = authors_trajectories(1, 3, canvas, np.random.default_rng(7), step)[0]
    draw = np.random.default_rng(7)
    start, angle = draw.random((1, 2))[0], draw.random(1)[0] * 2 * np.pi
    first = np.clip(start + step * np.array([np.cos(angle), np.sin(angle)]), 0, 1)
    assert again[0].tolist() == (canvas * first).astype(int).tolist()  # frame 0 is one step from the draw


def test_fresh_clips_and_the_endless_stream():
    clips = fresh_clips(3, 20, 64, 2, np.random.default_rng(1))
    assert clips.shape == (3, 20, 64, 64) and clips.dtype == np.float32
    assert 0.0 <= clips.min() and clips.max() <= 1.0 and clips.max() > 0.5
    stream = FreshMovingDigits(batch_size=4, steps=3, timesteps=10, future=10, side=64, seed=2)
    assert len(stream) == 3
    x, targets = stream[0]
    assert x.shape == (4, 10, 4096) and targets["prediction"].shape == (4, 10, 4096)
    assert np.array_equal(targets["reconstruction"], x[:, ::-1])
    assert np.array_equal(stream[0][0], x) and not np.array_equal(stream[1][0], x)
    stream.set_epoch(1)
    assert not np.array_equal(stream[0][0], x)  # a fresh batch each epoch too
    stream.teacher = True
    seen, future = stream[0][0]
    assert np.array_equal(future, stream[0][1]["prediction"])
    with pytest.raises(RecipeError, match="must exceed the digit size"):
        fresh_clips(1, 2, 28)


def test_authors_options_and_their_checks():
    options = model_options("single", {**AUTHORS, "pretrain_data": "moving-digits", "pretrain_steps": 5})
    assert (options.conditional, options.peepholes, options.lstm_init, options.classifier_head) == (
        "teacher",
        True,
        "authors",
        "time-average",
    )
    assert options.pretrain_steps == 5 and model_options("single", {"pretrain": "composite"}).pretrain_steps is None
    scratch = model_options("single", {"pretrain": "scratch", "peepholes": True, "classifier_head": "time-average"})
    assert scratch.peepholes and scratch.conditional is None and scratch.pretrain_loss is None
    with pytest.raises(ConfigError, match="--pretrain-loss only apply with --pretrain composite"):
        model_options("single", {"pretrain": "scratch", "pretrain_loss": "sum"})
    with pytest.raises(ConfigError, match="--peepholes only apply with --pretrain composite|scratch"):
        model_options("single", {"peepholes": True})
    with pytest.raises(ConfigError, match="give --pretrain-data moving-digits"):
        model_options("single", {"pretrain": "composite", "pretrain_steps": 5})
    with pytest.raises(ConfigError, match="--conditional"):
        model_options("single", {"pretrain": "composite", "conditional": "yes"})
    plain = model_options("single", {})
    assert plain.peepholes is None and plain.classifier_head is None and plain.conditional is None


@pytest.mark.slow
def test_train_pretrains_on_fresh_clips_with_the_authors_options(tmp_path):
    ws = Workspace(tmp_path / "digits")
    prepare(
        ws,
        PrepareConfig(
            dataset="moving-digits",
            options={"n": 20, "size": 32, "frames": 8},
            roi=RoiConfig(roi=None, fixed_box=(0, 0, 32, 32), grayscale=True),
            execution=ExecutionConfig(jobs=1),
        ),
    )
    extract(ws, ExtractConfig(backbone="pixels", pixel_size=32, dtype="float32"))
    options = {**AUTHORS, "units": 8, "batch_size": 4, "future": 4, "pretrain_epochs": 1}
    options.update(pretrain_data="moving-digits", pretrain_steps=2)
    config = TrainConfig(model="single", features="pixels", perspectives=("v1",), timesteps=4, epochs=1)
    result = train(ws, TrainConfig(**{**config.__dict__, "options": options, "name": "authors"}))
    run = ws.run("authors")
    spec = json.loads((run / "spec.json").read_text())
    assert {k: spec["options"][k] for k in AUTHORS} == AUTHORS and spec["options"]["pretrain_steps"] == 2
    history = json.loads((ws.pretrain(run) / "history.json").read_text())
    assert len(history["loss"]) == 1 and history["loss"][0] > 4 * 32 * 32 * 0.1  # summed over values and frames
    assert (run / "best.keras").exists() and result is not None
