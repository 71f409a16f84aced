"""What a training run is, and the model it builds: spec saved beside the checkpoint.

``evaluate`` reads the same spec back, so a checkpoint is always scored on the inputs it was
trained on (the same stage, perspectives, timesteps and class order).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.manifest import Manifest
from pipeline.models import registry
from pipeline.workspace import PREPARE, SPEC


@dataclass
class RunSpec:
    """A training run's identity: model name, input stage, perspectives, sizes, classes, options."""

    name: str
    model: str
    input_stage: str  # "prepare" for ROI pixels, "extract:<backbone>" for embeddings
    perspectives: list[str]
    timesteps: int
    classes: list[str]
    weights: str = ""
    backbone: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig as asked, recorded by construction

    @property
    def pixels(self) -> bool:
        """Whether the model reads ROI pixel clips instead of embedding sequences."""
        return self.input_stage == PREPARE

    @property
    def audio(self) -> bool:
        """Whether training also reads the frame-aligned audio (visual-audio memory)."""
        return registry.get(self.model).audio

    def save(self, out_dir: Path) -> None:
        from pipeline.storage.atomic import write_text_atomic

        write_text_atomic(out_dir / SPEC, json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, out_dir: Path) -> "RunSpec":
        path = out_dir / SPEC
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise DataError(f"{path}: no run spec beside this checkpoint (was it trained by `mpview train`?)") from None
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: unreadable run spec ({type(exc).__name__}: {exc}); retrain the run") from None


def load_inputs(
    manifest: Manifest,
    spec: RunSpec,
    split: str,
    work: Path,
    audio: bool = False,
    extra_frames: int = 0,
    raw: bool = False,
):
    """The ``SequenceSet`` of ``split`` for this run's stage and perspectives (``extra_frames`` more for pretraining).

    Runs trained with an augmentation see the centred, resized, normalised box unless ``raw`` (the augmenter's
    input); the memory model's audio is turned into dB and normalised per clip (Kim et al.'s CMVN).
    """
    from pipeline.training.sequences import load_split

    sequences = load_split(
        manifest,
        spec.input_stage,
        split,
        spec.perspectives,
        spec.timesteps + extra_frames,
        work,
        flatten=not spec.pixels,
        audio=audio,
    )
    if audio and sequences.audio is not None:
        from pipeline.media.audio import db_cmvn

        sequences.audio = db_cmvn(sequences.audio, sequences.lengths)
    recipe = run_recipe(spec)
    if recipe is not None and not raw:
        from pipeline.training.batches import eval_inputs

        sequences.inputs = eval_inputs(sequences.inputs, recipe)
    return sequences


def run_recipe(spec: RunSpec):
    """The run's augmentation ``Recipe`` (None without one); runs recorded before recipes had names used ``crop``."""
    from pipeline.training.batches import Recipe

    recorded = spec.options.get("recipe")
    if recorded:
        return Recipe(**recorded)
    if spec.options.get("augment") is True and spec.options.get("crop"):
        return Recipe("crop", spec.options["crop"], spec.options["crop"])
    return None


def build_model(spec: RunSpec, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None):
    """The compiled model a spec names (its registry entry's builder), for per-perspective input shapes ``[T, ...]``.

    A model fitted as two networks (``ModelEntry.two_networks``) returns their pair, any other one model. A run with
    ``--pretrain`` gets the composite classifier, refused for a model that classifier is not the encoder of.
    """
    entry = registry.get(spec.model)
    if spec.options.get("pretrain"):
        registry.check_pretrain(spec.model, spec.options["pretrain"])
        return composite_classifier(spec, shapes)
    return entry.build(spec, shapes, audio_shape)


def composite_classifier(spec: RunSpec, shapes: list[tuple[int, ...]], composite=None, optimizer=None):
    """The composite run's classifier: its encoder's copy (from ``composite``, else randomly initialised) -> softmax.

    ``--pretrain composite`` fine-tunes it from the pretrained encoder, ``--pretrain scratch`` trains the very same
    network from random weights: the two differ in initialisation only.
    """
    from pipeline.training.pretrain import CompositeSettings, composite_model, pretrained_classifier

    o = spec.options
    settings = CompositeSettings.of(o, registry.get(spec.model).multi_perspective_encoder)
    if composite is None:
        composite = composite_model(spec.timesteps, 0, [s[-1] for s in shapes], settings, bernoulli=False)
    from pipeline.training.optimizers import make_optimizer

    return pretrained_classifier(
        composite, len(spec.classes), o["dropout"], o["lr"], settings.classifier_head, optimizer or make_optimizer(o)
    )


def split_future(sequences, timesteps: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cut each perspective's ``[N, T+F, d]`` array into the seen first ``timesteps`` frames and the future rest."""
    return [x[:, :timesteps] for x in sequences.inputs], [x[:, timesteps:] for x in sequences.inputs]
