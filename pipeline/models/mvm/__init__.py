"""The multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022) on ROI pixel clips: options, builder, registration.

The authors' modules are in ``modules`` (Keras, layer for layer, named after their ``state_dict`` paths), the memory
layer and the network in ``layers``, imported by the builder, which returns the ``(train, infer)`` pair: the
audio-reading training network (test and training paths) and the video-only inference network sharing its
weights. Its names are also reachable from this package. The defaults build the authors' LRW system; ``--front``,
``--back`` and ``--audio-front`` offer lighter variants that are not theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.registry import ModelEntry, TwoNetworks, flag, keras_names, option, register, serializables
from pipeline.models.shared import PixelOptions

FRONTS = ("ir-resnet18", "resnet18", "small")
BACKS = ("mstcn", "tcn")
AUDIO_FRONTS = ("ir", "small")
MSTCN_BLOCKS = 4  # the authors' MS-TCN: dilations 1, 2, 4, 8 (``modules.DILATIONS``)


@dataclass(frozen=True)
class MVMOptions(PixelOptions):
    """Multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022); the defaults are the authors' LRW architecture."""

    units: int = option(512, "audio feature and value memory width (the front's output width)", least=1)
    slots: int = option(112, "memory slots", least=1)
    heads: int = option(8, "addressing heads", least=1)
    radius: float = option(16.0, "addressing radius", above=0.0)
    levels: int = option(
        4,
        "memories: the front's, then one after each of the first levels - 1 blocks (the authors': 4, after "
        "MS-TCN blocks 1-3); with --back tcn also its number of blocks",
        least=1,
    )
    front: str = option(
        "ir-resnet18",
        "visual front-end: ir-resnet18 is the authors' (3D stem, IR-ResNet-18 per frame, flatten, linear, "
        "layer norm); resnet18 a torchvision-style ResNet-18 per frame (ReLU, global pool); small a 3D conv and "
        "two strided 2D convs",
        choices=FRONTS,
    )
    back: str = option(
        "mstcn",
        "back-end: mstcn is the authors' multi-scale TCN (4 blocks, 768 wide); tcn one dilated conv per level",
        choices=BACKS,
    )
    audio_front: str = option(
        "ir",
        "audio front-end (never trained: the memory reads its output detached, as the authors'): ir is the "
        "authors' (2 strided convs, an IR block, linear 5120->512, layer norm); small dense, conv, dense",
        choices=AUDIO_FRONTS,
    )
    dropout: float = option(0.0, "dropout before the classifier (the authors' has none)", least=0.0, below=1.0)
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
    if o["back"] == "mstcn" and o["levels"] > MSTCN_BLOCKS:
        raise ConfigError(
            f"--back mstcn has {MSTCN_BLOCKS} blocks: --levels at most {MSTCN_BLOCKS} (the front's memory and one "
            f"after each block but the last), got {o['levels']}"
        )
    audio_front = o.get("audio_front", "ir")
    if audio_front == "ir" and len(audio_shape) == 3 and audio_shape[1] != 4:
        raise ConfigError(
            f"--audio-front ir takes 4 mel frames per video frame (10 ms hop at 25 fps), this audio has "
            f"{audio_shape[1]}: use --audio-front small"
        )
    return build_mvm(
        shapes[0],
        audio_shape,
        len(spec.classes),
        units=o["units"],
        slots=o["slots"],
        heads=o["heads"],
        radius=o["radius"],
        levels=o["levels"],
        front=o["front"],
        back=o["back"],
        audio_front=audio_front,
        dropout=o["dropout"],
        optimizer=make_optimizer(o, "adam"),
    )


def memory_inputs(inputs: list, audio: Any, y: Any) -> tuple[dict, dict]:
    """The memory model's training network reads the video and the audio and learns both classifiers."""
    return {"video": inputs[0], "audio": audio}, {"visual": y, "audio": y}


MEMORY_FITTING = TwoNetworks(
    "val_visual_accuracy", memory_inputs, training=lambda built: built.train, scoring=lambda built: built.infer
)
CUSTOM = serializables("pipeline.models.mvm.layers", "pipeline.models.mvm.modules", "pipeline.models.fronts")
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
        lower=("--front small", "--back tcn", "--units"),
        audio=True,
        two_networks=MEMORY_FITTING,
        listed=6,
        optimizer="adam",
        smallest={
            "units": 8,
            "slots": 4,
            "heads": 2,
            "levels": 1,
            "front": "small",
            "back": "tcn",
            "audio_front": "small",
        },
    )
)
__getattr__ = keras_names(__name__)
