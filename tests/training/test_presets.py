"""Training recipes as presets: ``train --recipe`` runs on small data with the authors' optimizer, schedule and batch
in its spec, the overrides listed in the report; the plateau schedule halves as the authors' ``endurance`` loop does;
the authors' SGD update; the audio masks; the recipe compared on a re-run like any other setting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import cli  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.execution.settings import SettingsChanged  # noqa: E402
from pipeline.manifest import Manifest, Sample, Source  # noqa: E402
from pipeline.storage.readers import open_writer  # noqa: E402
from pipeline.training.augment import mask_audio  # noqa: E402
from pipeline.training.fit import FitConfig, fit, read_history  # noqa: E402
from pipeline.training.optimizers import MomentumSGD, PlateauHalving, make_optimizer  # noqa: E402
from pipeline.verbs.train import TrainConfig, train  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402

SPLITS = ("train",) * 6 + ("val",) * 2 + ("test",) * 2


def small_work(root: Path, pixels: bool, frames: int, side: int = 24, dim: int = 16) -> Path:
    """A work folder of 10 two-class samples over the splits: ROI clips of ``side`` px with frame-aligned audio
    (``pixels``), else one ``extract:pixels`` features run of ``dim`` values in [0, 1] per frame."""
    stage = "prepare" if pixels else "extract:pixels"
    samples = [
        Sample(f"s{k}", {"v1": Source(f"s{k}.mp4")}, label="ab"[k % 2], split=split, speaker=f"p{k % 3}")
        for k, split in enumerate(SPLITS)
    ]
    manifest = Manifest("toy", str(root), ["v1"], samples, classes=["a", "b"])
    rng = np.random.default_rng(0)
    location = f"{'prepare/roi' if pixels else 'features/pixels/emb'}-00000-of-00001.h5"
    with open_writer(root / location, "roi" if pixels else "embedding") as writer:
        for sample in samples:
            if pixels:
                arrays = {"v1": rng.integers(0, 256, (frames, side, side), dtype=np.uint8)}
                extras = {"audio/mel": rng.normal(size=(frames, 4, 12)).astype(np.float32)}
            else:
                arrays, extras = {"v1": rng.random((frames, dim)).astype(np.float16)}, {}
            writer.add(sample.id, arrays, {"label": sample.label}, extras)
    for sample_id, record in writer.records.items():
        manifest.by_id()[sample_id].stages[stage] = {**record, "status": "done", "shard": location}
    if not pixels:
        made = {"backbone": "pixels", "pixel_size": int(dim**0.5), "pca": 0, "preprocess": "none"}
        manifest.add_run(stage, made, {"done": len(samples)}, 0.0, 1.0)
    manifest.save(root / "manifest.jsonl")
    return root


SMALL_MVM = ["--front", "small", "--audio-front", "small", "--back", "tcn", "--levels", "1", "--units", "8"]
SMALL_MVM += ["--slots", "4", "--heads", "2", "--batch-size", "4"]


def test_mvm_recipe_trains_with_the_authors_settings_and_the_report_lists_the_overrides(tmp_path):
    """``--recipe mvm-lrw --epochs 1`` with smaller sizes: AdamW 1e-3 / 1e-5, halving after 5 epochs, the audio
    masks and TTA in the spec; the report (JSON and Markdown) lists every override and scores with TTA."""
    work = small_work(tmp_path / "work", pixels=True, frames=6)
    argv = ["train", "--work", str(work), "--recipe", "mvm-lrw", "--epochs", "1", "--timesteps", "6", *SMALL_MVM]
    assert cli.main([*argv, "--no-tensorboard", "-q"]) == 0
    spec = json.loads((work / "models" / "mvm-v1-roi" / "spec.json").read_text())
    o = spec["options"]
    assert o["optimizer"] == {"name": "adamw", "weight_decay": 1e-5, "momentum": 0.0, "clip": None, "clip_mode": None}
    assert o["lr"] == 1e-3 and o["lr_schedule"] == {"name": "plateau", "patience": 5, "factor": 0.5}
    assert o["early_stopping"] is False and o["augment"] == "lrw" and o["dropout"] == 0.0 and spec["timesteps"] == 6
    assert (o["recipe"]["freq_mask"], o["recipe"]["time_mask"]) == (10, 20)
    preset = o["preset"]
    assert preset["name"] == "mvm-lrw" and preset["settings"]["tta"] is True
    given = {d["setting"]: (d["preset"], d["given"]) for d in preset["overrides"]}
    assert given == {
        "epochs": (400, 1),
        "timesteps": (29, 6),
        "front": ("ir-resnet18", "small"),
        "audio_front": ("ir", "small"),
        "back": ("mstcn", "tcn"),
        "levels": (4, 1),
        "units": (512, 8),
        "slots": (112, 4),
        "heads": (8, 2),
        "batch_size": (40, 4),
    }
    history = read_history(work / "models" / "mvm-v1-roi" / "history.csv")
    assert history["learning_rate"] == pytest.approx([1e-3])
    assert cli.main(["evaluate", "--work", str(work), "-q"]) == 0
    report = json.loads((work / "reports" / "mvm-v1-roi.json").read_text())
    assert report["recipe"]["name"] == "mvm-lrw" and len(report["recipe"]["deviations"]) == len(given)
    assert report["run_info"]["tta"] is True  # the recipe's test-time augmentation, not asked of evaluate
    markdown = (work / "reports" / "mvm-v1-roi.md").read_text()
    assert "Trained with `--recipe mvm-lrw`; deviations from it:" in markdown
    assert "| batch_size | 40 | 4 |" in markdown and "| front | ir-resnet18 | small |" in markdown


def test_composite_recipe_pretrains_with_the_authors_sgd_and_is_compared_on_a_rerun(tmp_path):
    """``--recipe composite-mnist --epochs 1`` with smaller sizes: SGD lr 1e-4 momentum 0.9, L2 1e-4, the step
    clipped at 1e-4, the authors' network and pretraining options (fresh moving digits, 10 + 10 frames); another
    momentum on the same run is refused as a changed setting."""
    work = small_work(tmp_path / "work", pixels=False, frames=20, dim=32 * 32)
    argv = ["train", "--work", str(work), "--recipe", "composite-mnist", "--epochs", "1", "--units", "8"]
    small = ["--pretrain-epochs", "1", "--pretrain-steps", "1", "--batch-size", "4", "--no-tensorboard", "-q"]
    assert cli.main([*argv, *small]) == 0
    run = work / "models" / "single-composite-v1-pixels"
    spec = json.loads((run / "spec.json").read_text())
    o = spec["options"]
    assert o["optimizer"] == {"name": "sgd", "weight_decay": 1e-4, "momentum": 0.9, "clip": 1e-4, "clip_mode": "update"}
    assert o["lr"] == 1e-4 and o["lr_schedule"] == {"name": "constant"} and spec["timesteps"] == 10
    authors = ("composite", "teacher", 10, True, "authors", "sum", "moving-digits", "time-average")
    keys = ("pretrain", "conditional", "future", "peepholes", "lstm_init", "pretrain_loss", "pretrain_data")
    assert tuple(o[k] for k in (*keys, "classifier_head")) == authors
    given = {d["setting"]: (d["preset"], d["given"]) for d in o["preset"]["overrides"]}
    assert given == {
        "epochs": (50, 1),
        "units": (2048, 8),
        "pretrain_epochs": (20_000, 1),
        "pretrain_steps": (500, 1),
        "batch_size": (80, 4),
        "features.pixel_size": (64, 32),
    }
    assert (run / "pretrain").is_dir()
    sizes = {"units": 8, "pretrain_epochs": 1, "pretrain_steps": 1, "batch_size": 4}
    with pytest.raises(SettingsChanged, match=r"momentum: 0\.9 -> 0\.5"):
        train(Workspace(work), TrainConfig(recipe="composite-mnist", epochs=1, momentum=0.5, options=sizes))


def test_a_setting_equal_to_the_recipes_is_no_override_and_a_foreign_model_drops_its_options():
    """Giving the recipe's own value is no deviation; another model takes none of the recipe's model options."""
    same = TrainConfig(recipe="mvm-lrw", epochs=400, options={"batch_size": 40})
    assert same.overrides == [] and same.model == "mvm" and same.optimizer == "adamw"
    other = TrainConfig(recipe="mplstm-released", model="single")
    assert other.options == {} and {"setting": "model", "preset": "mplstm", "given": "single"} in other.overrides
    assert TrainConfig().epochs == 50 and TrainConfig().optimizer is None and TrainConfig().overrides == []
    with pytest.raises(ConfigError, match=r"did you mean composite-mnist\?"):
        TrainConfig(recipe="composite-mnst")


def test_plateau_halving_follows_the_authors_endurance_loop():
    """The rate halves at the 5th epoch in a row without a better val accuracy, the count restarts, a gain resets
    it; the first epoch's 0.0 is no gain over their starting best of 0.0."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer=make_optimizer({"lr": 1e-3, "optimizer": {"name": "adamw", "weight_decay": 1e-5}}))
    halving = PlateauHalving("val_accuracy", patience=5)
    halving.set_model(model)
    accuracy = [0.0, 0.5, 0.5, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6]
    rates = []
    for epoch, value in enumerate(accuracy):
        logs = {"val_accuracy": value}
        halving.on_epoch_end(epoch, logs)
        rates.append(logs["learning_rate"])
    # epoch 0: wait 1; 0.5 resets; epochs 2-6 wait 1..5 -> halved after epoch 6; 7-10 wait 1..4; 0.6 resets
    assert rates == pytest.approx([1e-3] * 7 + [5e-4] * 6)
    assert halving.state() == {"best": 0.6, "wait": 1}
    again = PlateauHalving("val_accuracy", patience=5)
    again.restore(halving.state())
    assert again.state() == halving.state()


def constant_model():
    """A model predicting class 0 whatever it is fed, at a learning rate too small to change that."""
    bias = keras.initializers.Constant([1.0, 0.0])
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer=bias)]
    )
    model.compile(optimizer=make_optimizer({"lr": 1e-9}), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_fit_with_the_plateau_schedule_and_no_early_stopping_runs_every_epoch(tmp_path):
    """A model whose val accuracy cannot move: every epoch runs despite patience 2, and the history's learning rate
    halves after epochs 6 and 11 (1.0 at epoch 1 is the best; 5 epochs without gain each time)."""
    x = np.ones((8, 2), np.float32)
    y = np.tile([1.0, 0.0], (8, 1)).astype(np.float32)
    config = FitConfig(
        epochs=12,
        batch_size=4,
        patience=2,
        early_stopping=False,
        lr_schedule={"name": "plateau", "patience": 5, "factor": 0.5},
        tensorboard=False,
        verbose=0,
    )
    history = fit(constant_model(), (x, y), (x, y), tmp_path / "run", config, {})
    assert history["val_accuracy"] == [1.0] * 12
    assert history["learning_rate"] == pytest.approx([1e-9] * 6 + [5e-10] * 5 + [2.5e-10])
    state = json.loads((tmp_path / "run" / "backup" / "state.json").read_text())
    assert state["lr_schedule"] == {"best": 1.0, "wait": 1}


def test_momentum_sgd_is_the_authors_update():
    """v = 0.9 v - lr (g + l2 w) on weights and peepholes (no L2 on biases), v clipped to +-1e-4, w += v."""
    kernel = keras.Variable(np.array([[1.0, -2.0]], np.float32), name="kernel")
    peephole = keras.Variable(np.array([0.5, 0.25], np.float32), name="peephole")
    bias = keras.Variable(np.array([3.0], np.float32), name="bias")
    variables = [kernel, peephole, bias]
    optimizer = MomentumSGD(learning_rate=1e-4, momentum=0.9, l2=1e-4, step_clip=1e-4)
    grads = [np.array([[0.5, 3.0]], np.float32), np.array([0.1, -0.1], np.float32), np.array([-0.2], np.float32)]
    values = [v.numpy().astype(np.float64) for v in variables]
    steps = [np.zeros_like(v) for v in values]
    for _ in range(3):
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
        for i, l2 in enumerate((1e-4, 1e-4, 0.0)):
            steps[i] = np.clip(0.9 * steps[i] - 1e-4 * (grads[i] + l2 * values[i]), -1e-4, 1e-4)
            values[i] = values[i] + steps[i]
    for variable, value in zip(variables, values):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6)
    assert abs(steps[0][0, 1]) == pytest.approx(1e-4)  # the large gradient's step was clipped
    unclipped = MomentumSGD(learning_rate=1e-4, momentum=0.9, l2=1e-4)
    bias_only = keras.Variable(np.array([3.0], np.float32), name="bias")
    unclipped.apply_gradients([(keras.ops.convert_to_tensor(np.array([-0.2], np.float32)), bias_only)])
    assert bias_only.numpy()[0] == pytest.approx(3.0 + 1e-4 * 0.2)  # no L2 on a bias


def test_adamw_takes_torchs_defaults_and_the_model_default_stays():
    """AdamW at the recipe's decay with torch's eps 1e-8; a run recorded without optimizer settings keeps RMSprop."""
    adamw = make_optimizer({"lr": 1e-3, "optimizer": {"name": "adamw", "weight_decay": 1e-5}})
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 1e-5 and adamw.epsilon == 1e-8
    assert isinstance(make_optimizer({"lr": 1e-3}), keras.optimizers.RMSprop)
    with pytest.raises(ConfigError, match="--momentum applies to sgd and rmsprop"):
        TrainConfig(optimizer="adam", momentum=0.9)


def test_audio_masks_zero_one_mel_band_and_one_run_of_frames_per_clip():
    """Each clip: one band of fewer than 10 mel bins and one run of fewer than 20 audio frames zeroed; none without."""
    rng = np.random.default_rng(3)
    audio = rng.normal(size=(16, 29, 4, 80)).astype(np.float32) + 5.0  # no zero of its own
    masked = mask_audio(audio, rng, freq=10, time=20)
    widths = []
    for clip in masked.reshape(16, -1, 80):
        bins = np.flatnonzero((clip == 0).all(axis=0))
        frames = np.flatnonzero((clip == 0).all(axis=1))
        assert len(bins) < 10 and len(frames) < 20
        assert bins.size == 0 or np.all(np.diff(bins) == 1)
        assert frames.size == 0 or np.all(np.diff(frames) == 1)
        widths.append((len(bins), len(frames)))
    assert any(f > 0 for f, _ in widths) and any(t > 0 for _, t in widths)
    assert np.array_equal(mask_audio(audio, rng, 0, 0), audio)


def test_the_released_recipe_records_features_made_with_another_preprocessing(tmp_path, caplog):
    """``mplstm-released`` wants ``extract --preprocess released``: features made otherwise are a deviation, with
    a warning naming the fix; the recipe's 500 epochs, no early stopping, batch 60 and 20 frames are recorded."""
    from pipeline.verbs.train import make_spec

    manifest = Manifest.load(small_work(tmp_path / "work", pixels=False, frames=20) / "manifest.jsonl")
    with caplog.at_level("WARNING", logger="mpview"):
        spec = make_spec(TrainConfig(recipe="mplstm-released"), manifest)
    preset = spec.options["preset"]
    assert preset["overrides"] == [{"setting": "features.preprocess", "preset": "released", "given": "none"}]
    assert "extract again with --preprocess released" in caplog.text
    assert (preset["settings"]["epochs"], preset["settings"]["early_stopping"]) == (500, False)
    assert (spec.options["batch_size"], spec.options["released"], spec.timesteps) == (60, True, 20)
    assert spec.options["optimizer"]["name"] == "rmsprop"


def test_a_resumed_fit_continues_the_schedule_where_it_stopped(tmp_path):
    """7 epochs, then trained on to 12 from the backup (as ``--epochs`` raised does): the learning rate and the
    schedule's count carry over, so the rates are those of 12 uninterrupted epochs."""
    from pipeline.training.checkpoints import ResumableBackup
    from pipeline.workspace import BACKUP, COMPLETE

    x = np.ones((8, 2), np.float32)
    y = np.tile([1.0, 0.0], (8, 1)).astype(np.float32)
    schedule = {"name": "plateau", "patience": 5, "factor": 0.5}

    def run(epochs: int) -> dict:
        model = constant_model()
        config = FitConfig(epochs=epochs, batch_size=4, early_stopping=False, lr_schedule=schedule, verbose=0)
        return fit(model, (x, y), (x, y), tmp_path / "run", replace(config, tensorboard=False), {})

    assert run(7)["learning_rate"] == pytest.approx([1e-9] * 6 + [5e-10])
    ResumableBackup(tmp_path / "run" / BACKUP).reopen()
    (tmp_path / "run" / COMPLETE).unlink()
    assert run(12)["learning_rate"] == pytest.approx([1e-9] * 6 + [5e-10] * 5 + [2.5e-10])


def test_the_command_line_passes_only_what_was_given_beside_the_recipe():
    """Flags left out take the recipe's values; those given are overrides, ``--no-early-stopping`` included."""
    from stages.cli import build_parser
    from stages.train import config_from

    parse = build_parser().parse_args
    plain = config_from(parse(["train", "--recipe", "composite-mnist"]))
    assert plain.overrides == [] and (plain.optimizer, plain.clip_mode, plain.lr) == ("sgd", "update", 1e-4)
    given = config_from(parse(["train", "--recipe", "composite-mnist", "--momentum", "0.5", "--no-early-stopping"]))
    assert {d["setting"]: (d["preset"], d["given"]) for d in given.overrides} == {
        "momentum": (0.9, 0.5),
        "early_stopping": (True, False),
    }
    default = config_from(parse(["train"]))
    assert (default.model, default.epochs, default.lr, default.patience, default.optimizer) == (
        "mplstm",
        50,
        1e-3,
        10,
        None,
    )
