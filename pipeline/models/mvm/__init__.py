"""The multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022) on ROI pixel clips: options, builder, registration.

The memory layer and the network are in ``layers`` (Keras; its front-ends in ``pipeline.models.fronts``), imported
by the builder, which returns the ``(train, infer)`` pair: an audio-reading training network and the video-only
inference network sharing its weights. Its names are also reachable from this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.registry import ModelEntry, TwoNetworks, flag, keras_names, option, register, serializables
from pipeline.models.shared import PixelOptions


@dataclass(frozen=True)
class MVMOptions(PixelOptions):
    """Multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022)."""

    units: int = option(512, "memory width", least=1)
    slots: int = option(112, "memory slots", least=1)
    heads: int = option(8, "addressing heads", least=1)
    radius: float = option(16.0, "addressing radius", above=0.0)
    levels: int = option(2, "memory levels, their losses averaged", least=1)
    front: str = option(
        "resnet18",
        "visual front-end, the paper's 3D stem + ResNet-18 per frame, or a small 3D/2D conv stack",
        choices=("resnet18", "small"),
    )
    back: str = option(
        "mstcn", "back-end, the paper's multi-scale TCN or one dilated conv per level", choices=("mstcn", "tcn")
    )
    dropout: float = option(0.5, "dropout before the classifier", least=0.0, below=1.0)
    freq_mask: int = option(
        0, "--augment: mask up to this many mel bins of the training audio (Kim et al.: 10)", least=0
    )
    time_mask: int = option(
        0, "--augment: mask up to this many audio frames of the training audio (Kim et al.: 20)", least=0
    )

    @classmethod
    def resolve(cls, chosen: dict[str, Any]) -> "MVMOptions":
        """The options from those ``chosen``: the audio masks are part of the training augmentation."""
        masks = [flag(n) for n in ("freq_mask", "time_mask") if chosen.get(n)]
        if masks and not chosen.get("augment"):
            raise ConfigError(f"{', '.join(masks)} mask the training audio: give them with --augment lrw|crop")
        return super().resolve(chosen)


def build(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled ``MVMModels`` pair for one perspective's clip shape and the frame-aligned audio's shape."""
    from pipeline.models.mvm.layers import build_mvm
    from pipeline.training.optimizers import make_optimizer

    if audio_shape is None:
        raise ConfigError("mvm trains with audio: prepare with --audio")
    o = spec.options
    return build_mvm(
        shapes[0],
        audio_shape,
        len(spec.classes),
        dim=o["units"],
        slots=o.get("slots", 112),
        heads=o.get("heads", 8),
        radius=o.get("radius", 16.0),
        levels=o.get("levels", 2),
        dropout=o.get("dropout", 0.5),
        front=o.get("front", "small"),
        back=o.get("back", "tcn"),
        optimizer=make_optimizer(o, "adam"),
    )


def memory_inputs(inputs: list, audio: Any, y: Any) -> tuple[dict, dict]:
    """The memory model's training network reads the video and the audio and learns both classifiers."""
    return {"video": inputs[0], "audio": audio}, {"visual": y, "audio": y}


MEMORY_FITTING = TwoNetworks(
    "val_visual_accuracy", memory_inputs, training=lambda built: built.train, scoring=lambda built: built.infer
)
CUSTOM = serializables("pipeline.models.mvm.layers", "pipeline.models.fronts")
register(
    ModelEntry(
        "mvm",
        "pixels",
        MVMOptions,
        build,
        CUSTOM,
        (),
        "multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022)",
        perspectives=1,
        lower=("--front small", "--units"),
        audio=True,
        two_networks=MEMORY_FITTING,
        listed=6,
        optimizer="adam",
        smallest={"units": 8, "slots": 4, "heads": 2, "levels": 1, "front": "small", "back": "tcn", "dropout": 0.0},
    )
)
__getattr__ = keras_names(__name__)
