"""The option fields model families share (no Keras): the recurrent head with composite pretraining of its
encoder, and the inputs of the models on ROI pixel clips. Each model's own options dataclass extends one of these."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.registry import flag, option
from pipeline.training.augment import POLICIES

COMPOSITE_CHOICES = ("composite", "scratch")  # scratch: the composite run's classifier, randomly initialised
NEEDS_PRETRAIN = ("pretrain_epochs", "future", "conditional")


@dataclass(frozen=True)
class RecurrentOptions:
    """The embedding models' recurrent head and its composite pretraining (Srivastava et al. 2015)."""

    units: int = option(256, "recurrent units", least=1)
    dropout: float = option(0.2, "input dropout", least=0.0, below=1.0)
    batch_size: int = option(60, "samples per training step (per device with --distribute)", least=1)
    pretrain: str | None = option(
        None,
        "composite: pretrain the encoder without labels, then fine-tune a classifier "
        "from it; scratch: the very same classifier from random weights (the like-for-like "
        "baseline)",
        choices=COMPOSITE_CHOICES,
    )
    pretrain_epochs: int = option(20, "epochs of composite pretraining before fine-tuning", least=1)
    future: int = option(10, "frames after the first --timesteps the predictor learns to forecast", least=0)
    conditional: bool = option(False, "composite pretraining: decoders see their previous output")
    labelled_fraction: float = option(
        1.0,
        "share of the training clips whose labels the classifier sees (seeded, "
        "stratified); pretraining sees every training clip",
        above=0.0,
        most=1.0,
    )

    @classmethod
    def resolve(cls, chosen: dict[str, Any]) -> "RecurrentOptions":
        """The options from those ``chosen``: pretraining's own need ``--pretrain composite`` and are recorded as
        None without it (never as a value in use)."""
        pretrain = chosen.get("pretrain")
        if pretrain != "composite":
            idle = [n for n in NEEDS_PRETRAIN if n in chosen]
            if "labelled_fraction" in chosen and not pretrain:
                idle.append("labelled_fraction")
            if idle:
                needed = "composite" if pretrain else "composite|scratch"
                raise ConfigError(f"{', '.join(flag(n) for n in idle)} only apply with --pretrain {needed}")
        options = cls(**chosen)
        if pretrain != "composite":
            options = replace(options, **{n: None for n in NEEDS_PRETRAIN})
        return options


@dataclass(frozen=True)
class PixelOptions:
    """The pixel models' batch, training augmentation and input side."""

    batch_size: int = option(8, "samples per training step, sized for a 24 GB machine", least=1)
    augment: str | None = option(
        None,
        "training augmentation policy; `lrw` (given alone) is Kim et al.'s: the 136 px "
        "box shifted by up to +-5 px inside the frame and resized to 112, flip, a 56x56 patch "
        "and 3 frames erased, mixup Beta(0.4, 0.4); `crop`: a --crop crop shifted by +-5 px "
        "without resizing or erasing",
        choices=POLICIES,
        const="lrw",
    )
    crop: int | None = option(
        None, "side of the frames the model sees (default: 112 for LRW's 136 px box, else the box side)", least=1
    )

    @classmethod
    def resolve(cls, chosen: dict[str, Any]) -> "PixelOptions":
        """The options from those ``chosen``: ``--crop`` sizes the augmented frames, so it needs ``--augment``."""
        if "crop" in chosen and not chosen.get("augment"):
            raise ConfigError("--crop sets the side of the augmented frames: give it with --augment lrw|crop")
        return cls(**chosen)


def build_sequence_network(spec: Any, shapes: list[tuple[int, ...]], layout: Any, **own: Any) -> Any:
    """The compiled embedding network of ``layout`` (a ``networks.Layout`` factory) for per-perspective ``[T, d]``
    shapes: the shared head sized from the run's options, plus the network's ``own`` options."""
    from pipeline.models import networks

    o = spec.options
    model = networks.build_model(
        layout,
        [s[-1] for s in shapes],
        len(spec.classes),
        timesteps=spec.timesteps,
        units=o["units"],
        dropout=o["dropout"],
        **own,
    )
    from pipeline.training.optimizers import make_optimizer

    return networks.compile_model(model, o["lr"], optimizer=make_optimizer(o))
