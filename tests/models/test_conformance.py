"""Every registered model keeps the registry's contract: it builds at its smallest, takes a training step, saves,
loads back through the loader ``evaluate`` uses, and refuses an option it does not use."""

from __future__ import annotations

from dataclasses import asdict, fields

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.models import registry  # noqa: E402
from pipeline.training.experiment import RunSpec, build_model  # noqa: E402
from pipeline.training.fit import load_checkpoint  # noqa: E402
from pipeline.workspace import PREPARE  # noqa: E402

STEPS, CLASSES, N = 4, ["a", "b"], 4


def tiny_inputs(entry: registry.ModelEntry, rng: np.random.Generator) -> tuple[list, list, np.ndarray | None]:
    """Input shapes and a batch for the model: pixel clips or embedding sequences, the audio when it reads it."""
    count = entry.perspectives or 2
    shapes = [(STEPS, 16, 16, 1)] * count if entry.inputs == "pixels" else [(STEPS, 3 + j) for j in range(count)]
    x = [rng.normal(size=(N, *s)).astype("float32") for s in shapes]
    audio = rng.normal(size=(N, STEPS, 4, 8)).astype("float32") if entry.audio else None
    return shapes, x, audio


@pytest.mark.parametrize("name", registry.names())
def test_a_registered_model_builds_trains_saves_loads_and_refuses_a_foreign_option(name, tmp_path):
    entry = registry.get(name)
    options = registry.model_options(name, dict(entry.smallest))
    stage = PREPARE if entry.inputs == "pixels" else "extract:pixels"
    perspectives = [f"v{j + 1}" for j in range(entry.perspectives or 2)]
    spec = RunSpec(f"{name}-tiny", name, stage, perspectives, STEPS, CLASSES, options={**asdict(options), "lr": 1e-2})
    rng = np.random.default_rng(0)
    shapes, x, audio = tiny_inputs(entry, rng)
    y = keras.utils.to_categorical(rng.integers(0, 2, N), 2)
    built = build_model(spec, shapes, audio.shape[1:] if audio is not None else None)
    plan = entry.two_networks
    network, scoring = (plan.training(built), plan.scoring(built)) if plan else (built, built)
    inputs, targets = plan.arrange(x, audio, y) if plan else (x, y)
    losses = network.train_on_batch(inputs, targets)
    assert np.all(np.isfinite(losses))
    path = tmp_path / "best.keras"
    scoring.save(path)
    loaded = load_checkpoint(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), scoring.predict(x, verbose=0), atol=1e-5)
    own = {f.name for f in fields(entry.options)}
    foreign = next(f.name for f in registry.model_flags() if f.name not in own)
    with pytest.raises(ConfigError, match=f"--model {name} does not use {registry.flag(foreign)}"):
        registry.model_options(name, {foreign: 1})
