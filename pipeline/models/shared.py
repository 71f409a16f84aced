"""The option fields model families share (no Keras): the recurrent head with composite pretraining of its
encoder, and the inputs of the models on ROI pixel clips. Each model's own options dataclass extends one of these."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.registry import flag, option
from pipeline.training.augment import POLICIES

COMPOSITE_CHOICES = ("composite", "scratch")  # scratch: the composite run's classifier, randomly initialised
# what pretraining alone uses (recorded as None without --pretrain composite)
NEEDS_PRETRAIN = ("pretrain_epochs", "future", "conditional", "pretrain_loss", "pretrain_data", "pretrain_steps")
# the composite classifier's network: the same under --pretrain composite and scratch (recorded as None without)
NEEDS_COMPOSITE_CLASSIFIER = ("peepholes", "lstm_init", "classifier_head")
# the choices of pipeline.models.composite (CONDITIONINGS, INITS, HEADS, LOSS_REDUCTIONS), which imports Keras
CONDITIONINGS = ("teacher", "free")
LSTM_INITS = ("keras", "authors")
HEADS = ("final", "time-average")
PRETRAIN_LOSSES = ("mean", "sum")
PRETRAIN_DATA = ("clips", "moving-digits")


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
    conditional: str | None = option(
        None,
        "composite pretraining: conditional decoders; teacher (given alone) is the authors' (dec_conditional, "
        "future_conditional): the reconstruction decoder is fed the true previous seen frame, the predictor the "
        "true previous future frame in training and its own previous output at inference; free: both fed their own "
        "previous output, in training too; not given: unconditional decoders (no input)",
        choices=CONDITIONINGS,
        const="teacher",
    )
    peepholes: bool = option(
        False,
        "composite encoder and decoders: peephole LSTM cells (input and forget gates see c_{t-1}, the output gate "
        "c_t: the authors' lstm.py); an MP-LSTM encoder over several perspectives has none",
    )
    lstm_init: str = option(
        "keras",
        "composite cells' initialisation: keras (Glorot, orthogonal, forget bias 1) or authors (uniform +-0.01 "
        "weights, +-0.1 peepholes, zero biases)",
        choices=LSTM_INITS,
    )
    classifier_head: str = option(
        "final",
        "composite classifier: softmax on the final state, or time-average (a softmax at every timestep averaged "
        "over time, trained on each step's cross-entropy: the authors' lstm_classifier.py)",
        choices=HEADS,
    )
    pretrain_loss: str = option(
        "mean",
        "composite pretraining loss: mean (per-value mean, Keras) or sum (summed over values, frames and clips as "
        "the authors' lstm_combo.py; learning rates then act on the summed gradient)",
        choices=PRETRAIN_LOSSES,
    )
    pretrain_data: str = option(
        "clips",
        "composite pretraining data: the run's training clips, or moving-digits (fresh two-digit bouncing clips "
        "every batch, the authors' motion model, our digit glyphs; needs square [0, 1] pixel features of one "
        "perspective)",
        choices=PRETRAIN_DATA,
    )
    pretrain_steps: int = option(
        500,
        "batches per pretraining epoch with --pretrain-data moving-digits (the authors validate every 500)",
        least=1,
    )
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
        needs = [(NEEDS_PRETRAIN, pretrain != "composite", "composite")]
        needs.append(((*NEEDS_COMPOSITE_CLASSIFIER, "labelled_fraction"), not pretrain, "composite|scratch"))
        for names, unused, needed in needs:
            idle = [n for n in names if n in chosen]
            if unused and idle:
                raise ConfigError(f"{', '.join(flag(n) for n in idle)} only apply with --pretrain {needed}")
        if "pretrain_steps" in chosen and chosen.get("pretrain_data") != "moving-digits":
            raise ConfigError(
                "--pretrain-steps sizes the epochs of an endless stream: give --pretrain-data moving-digits"
            )
        options = cls(**chosen)
        if pretrain != "composite":
            options = replace(options, **{n: None for n in NEEDS_PRETRAIN})
        if not pretrain:
            options = replace(options, **{n: None for n in NEEDS_COMPOSITE_CLASSIFIER})
        if options.pretrain_data == "clips":
            options = replace(options, pretrain_steps=None)
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
