"""Each model's own options (frozen dataclasses) and the check that refuses an option the chosen model does not use.

The command line leaves every model option at ``None`` unless the user gives it; :func:`model_options` then builds
the chosen model's dataclass from the options given, so a default is always the model's own (the ConvLSTM's
dropout is 0.3, the memory model's 0.5, the MP-LSTM's 0.2) and an option the model ignores is an error naming the
options it does take, never a value silently recorded as used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pipeline.errors import ConfigError

COMPOSITE_CHOICES = ("composite", "scratch")  # scratch: the composite run's classifier, randomly initialised


@dataclass(frozen=True)
class RecurrentOptions:
    """The released head shared by the embedding sequence models, and composite pretraining of its encoder."""

    units: int = 256
    dropout: float = 0.2
    batch_size: int = 60
    pretrain: str | None = None  # "composite", or "scratch" for the same classifier without pretraining
    pretrain_epochs: int = 20
    future: int = 10
    conditional: bool = False
    labelled_fraction: float = 1.0  # share of the training labels the classifier sees (pretraining sees every clip)


@dataclass(frozen=True)
class MPLSTMOptions(RecurrentOptions):
    """MP-LSTM (CVPR 2021)."""

    released: bool = False


@dataclass(frozen=True)
class SingleOptions(RecurrentOptions):
    """One perspective's LSTM network."""


@dataclass(frozen=True)
class EarlyFusionOptions(RecurrentOptions):
    """Perspectives concatenated per frame into one LSTM."""


@dataclass(frozen=True)
class LateFusionOptions(RecurrentOptions):
    """One LSTM per perspective, scores or representations combined."""

    combine: str = "scores"


@dataclass(frozen=True)
class MVLSTMOptions(RecurrentOptions):
    """MV-LSTM (Rajagopalan et al., ECCV 2016)."""

    topology: str = "hybrid"
    mv_output: str = "none"


@dataclass(frozen=True)
class PixelOptions:
    """Models on ROI pixel clips: batch size fitted to a 24 GB machine, the training augmentation and the input side."""

    batch_size: int = 8
    augment: str | None = None  # "lrw" (Kim et al.'s recipe) or "crop" (shifted crop without resizing)
    crop: int | None = None  # side of the frames the model sees (default: 112 for LRW, else the box side)


@dataclass(frozen=True)
class ConvLSTMOptions(PixelOptions):
    """Deep ConvLSTM (Courtney and Sreenivas, ACPR 2019)."""

    layers: str = "conv,pool,convlstm,pool,convlstm"
    filters: str = "32,48,64"
    dropout: float = 0.3


@dataclass(frozen=True)
class MVMOptions(PixelOptions):
    """Multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022)."""

    units: int = 512
    slots: int = 112
    heads: int = 8
    radius: float = 16.0
    levels: int = 2
    front: str = "resnet18"
    back: str = "mstcn"
    dropout: float = 0.5


NEEDS_PRETRAIN = ("pretrain_epochs", "future", "conditional")


def __getattr__(name: str):
    """``MODEL_OPTIONS`` (each registered model's options class) and ``ALL_OPTIONS`` (their fields), from the registry."""
    from pipeline.models import registry  # its registrations import the classes above: read it lazily

    if name == "MODEL_OPTIONS":
        return registry.options()
    if name == "ALL_OPTIONS":
        return sorted({f.name for cls in registry.options().values() for f in fields(cls)})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flag(name: str) -> str:
    """The command-line spelling of an option field."""
    return "--" + name.replace("_", "-")


def model_options(model: str, given: dict[str, Any]):
    """The ``model``'s options from the explicitly ``given`` ones (others ``None``); refuses options it does not use."""
    from pipeline.models import registry

    cls = registry.get(model).options
    own = {f.name for f in fields(cls)}
    chosen = {k: v for k, v in given.items() if v is not None}
    foreign = sorted(set(chosen) - own)
    if foreign:
        takes = ", ".join(flag(n) for n in sorted(own))
        raise ConfigError(f"--model {model} does not use {', '.join(flag(n) for n in foreign)}; its options are {takes}")
    registry.check_pretrain(model, chosen.get("pretrain"))
    if "pretrain" in own and chosen.get("pretrain") != "composite":
        idle = [n for n in NEEDS_PRETRAIN if n in chosen] + (["labelled_fraction"] if "labelled_fraction" in chosen and not chosen.get("pretrain") else [])
        if idle:
            raise ConfigError(f"{', '.join(flag(n) for n in idle)} only apply with --pretrain {'composite' if chosen.get('pretrain') else 'composite|scratch'}")
    if "crop" in chosen and not chosen.get("augment"):
        raise ConfigError("--crop sets the side of the augmented frames: give it with --augment lrw|crop")
    options = cls(**chosen)
    check(options)
    if "pretrain" in own and options.pretrain != "composite":  # unused: recorded as None, never as a value in use
        options = replace(options, **{n: None for n in NEEDS_PRETRAIN})
    return options


def check(options) -> None:
    """Range checks that need no model code."""
    values = asdict(options)
    for name in ("units", "batch_size", "slots", "heads", "levels", "pretrain_epochs", "crop"):
        if values.get(name) is not None and values[name] < (0 if name == "pretrain_epochs" else 1):
            raise ConfigError(f"{flag(name)} must be positive, got {values[name]}")
    if not 0.0 <= values.get("dropout", 0.0) < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {values['dropout']}")
    if "labelled_fraction" in values and not 0.0 < values["labelled_fraction"] <= 1.0:
        raise ConfigError(f"--labelled-fraction must be in (0, 1], got {values['labelled_fraction']}")
    if (values.get("future") or 0) < 0:
        raise ConfigError(f"--future must be >= 0, got {values['future']}")
