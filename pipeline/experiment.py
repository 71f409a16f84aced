"""What a training run is: its model, inputs and options, saved beside the checkpoint.

``evaluate`` reads the same spec back, so a checkpoint is always scored on the inputs it was
trained on (the same stage, perspectives, timesteps and class order).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.manifest import Manifest

SPEC = "spec.json"
PIXEL_MODELS = ("convlstm", "mvm")


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

    @property
    def pixels(self) -> bool:
        """Whether the model reads ROI pixel clips instead of embedding sequences."""
        return self.input_stage == "prepare"

    def save(self, out_dir: Path) -> None:
        from pipeline.atomic import write_text_atomic

        write_text_atomic(out_dir / SPEC, json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, out_dir: Path) -> "RunSpec":
        path = out_dir / SPEC
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no run spec beside this checkpoint (was it trained by `mpview train`?)") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable run spec ({exc})") from None


def load_inputs(manifest: Manifest, spec: RunSpec, split: str, work: Path):
    """The ``SequenceSet`` of ``split`` for this run's stage, perspectives and timesteps."""
    from pipeline.sequences import load_split

    return load_split(manifest, spec.input_stage, split, spec.perspectives, spec.timesteps, work, flatten=not spec.pixels)


def model_inputs(sequences) -> list[np.ndarray]:
    """The list of per-perspective arrays a model's ``predict``/``fit`` takes."""
    return list(sequences.inputs)
