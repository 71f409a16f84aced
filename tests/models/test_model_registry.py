"""The model registry: a toy model is one registration, trains from a spec, and evaluation's loader reads it back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.models import registry  # noqa: E402
from pipeline.models.registry import model_options  # noqa: E402
from pipeline.training.experiment import RunSpec, build_model  # noqa: E402
from pipeline.training.fit import load_checkpoint  # noqa: E402
from pipeline.workspace import Workspace  # noqa: E402


class ToyGain(keras.layers.Layer):
    """A learnt per-feature gain; deliberately not registered with Keras, so only the registry can resolve it."""

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gain")

    def call(self, x):
        return x * self.gain


@dataclass(frozen=True)
class ToyOptions:
    """The toy's own options."""

    units: int = 4
    dropout: float = 0.0
    batch_size: int = 8
    gain_floor: float = registry.option(0.0, "the toy's smallest gain", least=0.0)


def build_toy(spec, shapes, audio_shape=None):
    """GRU over the first perspective -> ToyGain -> softmax, compiled."""
    inputs = [keras.Input(shape=tuple(s), name=f"perspective_{j}") for j, s in enumerate(shapes)]
    x = keras.layers.GRU(spec.options["units"])(inputs[0])
    outputs = keras.layers.Dense(len(spec.classes), activation="softmax")(ToyGain(name="gain")(x))
    model = keras.Model(inputs, outputs, name="toy")
    model.compile(
        optimizer=keras.optimizers.RMSprop(spec.options["lr"]), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    return model


@pytest.fixture
def toy():
    """The toy model registered for one test, removed afterwards."""
    entry = registry.register(
        registry.ModelEntry(
            "toy", "features", ToyOptions, build_toy, lambda: {"ToyGain": ToyGain}, description="a test's toy"
        )
    )
    yield entry
    registry.unregister("toy")
    assert "toy" not in registry.names()


def test_a_registered_toy_trains_saves_and_loads_back_through_the_registry(toy, tmp_path):
    assert "toy" in registry.names("features") and "toy" not in registry.names("pixels")
    assert registry.options()["toy"] is ToyOptions
    options = model_options("toy", {"units": 3})
    assert options == ToyOptions(units=3)
    with pytest.raises(ValueError, match="--gain-floor must be >= 0, got -1.0"):
        model_options("toy", {"gain_floor": -1})
    with pytest.raises(ValueError, match="--model toy does not use --released"):
        model_options("toy", {"released": True})
    spec = RunSpec(
        "toy-v1", "toy", "extract:pixels", ["v1"], 5, ["a", "b"], options={"units": 3, "dropout": 0.0, "lr": 0.01}
    )
    model = build_model(spec, [(5, 2)])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5, 2)).astype("float32"), keras.utils.to_categorical(rng.integers(0, 2, 8), 2)
    model.fit([x], y, epochs=1, verbose=0)
    path = tmp_path / "best.keras"
    model.save(path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded.get_layer("gain"), ToyGain)
    np.testing.assert_allclose(loaded.predict([x], verbose=0), model.predict([x], verbose=0), atol=1e-6)
    registry.unregister("toy")  # without its registration the custom layer cannot be resolved
    with pytest.raises(TypeError, match="Could not locate class 'ToyGain'"):
        load_checkpoint(path)


def test_names_options_and_unknown_models_come_from_the_registry():
    SEQUENCE_MODELS, PIXEL_MODELS, MODEL_OPTIONS = (
        registry.names("features"),
        registry.names("pixels"),
        registry.options(),
    )
    assert SEQUENCE_MODELS == ("mplstm", "single", "early_fusion", "late_fusion", "mvlstm")
    assert PIXEL_MODELS == ("convlstm", "mvm")
    assert list(MODEL_OPTIONS) == list(SEQUENCE_MODELS + PIXEL_MODELS)
    with pytest.raises(ValueError, match=r"unknown model 'transformer'; choose from mplstm, single, .*mvm"):
        registry.get("transformer")
    with pytest.raises(ValueError, match="unknown model 'transformer'"):
        model_options("transformer", {})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("mplstm"))
    with pytest.raises(ValueError, match="inputs must be one of"):
        registry.ModelEntry("odd", "audio", ToyOptions, build_toy, dict)


@pytest.mark.parametrize("model", ["late_fusion", "mvlstm"])
@pytest.mark.parametrize("choice", ["composite", "scratch"])
def test_pretrain_is_refused_for_networks_it_does_not_transfer_into(model, choice):
    with pytest.raises(
        ValueError,
        match=f"--pretrain {choice} transfers into mplstm, single, early_fusion only; --model {model} cannot use it",
    ):
        model_options(model, {"pretrain": choice})
    spec = RunSpec(
        "r",
        model,
        "extract:pixels",
        ["v1", "v2"],
        4,
        ["a", "b"],
        options={"units": 4, "dropout": 0.0, "lr": 0.01, "pretrain": choice},
    )
    with pytest.raises(ValueError, match="cannot use it"):
        build_model(spec, [(4, 3), (4, 2)])


def test_pretrain_builds_the_composite_classifier_of_the_networks_it_serves():
    from pipeline.models.mplstm import MPLSTM

    assert model_options("early_fusion", {"pretrain": "scratch"}).pretrain == "scratch"
    spec = RunSpec(
        "r",
        "mplstm",
        "extract:pixels",
        ["v1", "v2"],
        4,
        ["a", "b"],
        options={"units": 4, "dropout": 0.0, "lr": 0.01, "pretrain": "scratch", "conditional": False},
    )
    model = build_model(spec, [(4, 3), (4, 2)])
    assert any(isinstance(layer, MPLSTM) for layer in model.get_layer("encoder").layers)


def test_a_toy_registered_in_a_test_file_shows_its_flags_in_train_help_and_trains_from_the_command_line(toy, tmp_path):
    import cli

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["train"]
    text = " ".join(sub.format_help().split())
    assert "--model toy: a test's toy: takes --units, --dropout, --batch-size, --gain-floor" in text
    assert "--gain-floor GAIN_FLOOR the toy's smallest gain (default: 0.0)" in text
    work = ["--quiet", "--work", str(tmp_path / "w")]
    assert (
        cli.main(
            [
                "prepare",
                *work,
                "--dataset",
                "moving-digits",
                "--option",
                "n=20",
                "--option",
                "frames=5",
                "--option",
                "size=32",
                "--fixed-box",
                "0",
                "0",
                "32",
                "32",
            ]
        )
        == 0
    )
    assert cli.main(["extract", *work, "--backbone", "pixels", "--pixel-size", "4"]) == 0
    assert (
        cli.main(
            [
                "train",
                *work,
                "--model",
                "toy",
                "--units",
                "3",
                "--gain-floor",
                "0.5",
                "--timesteps",
                "5",
                "--epochs",
                "1",
                "--no-tensorboard",
            ]
        )
        == 0
    )
    run = Workspace(tmp_path / "w").run("toy-v1-pixels")
    assert Workspace.checkpoint(run).exists() and RunSpec.load(run).options["gain_floor"] == 0.5
    assert cli.main(["train", *work, "--model", "toy", "--released"]) == 2  # an option the toy does not use
