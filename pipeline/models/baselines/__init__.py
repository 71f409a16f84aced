"""The LSTM baselines MP-LSTM is compared with: one perspective, early fusion and late fusion (no Keras here).

Their layouts are in ``layers`` (Keras), imported by the builders. Composite pretraining's classifier is an LSTM
encoder over the perspectives concatenated per frame -> dropout -> softmax: the single-perspective and
early-fusion network's encoder, so those two take ``--pretrain``; late fusion (one encoder per perspective) does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.models.registry import ModelEntry, keras_names, option, register, serializables
from pipeline.models.shared import COMPOSITE_CHOICES, RecurrentOptions, build_sequence_network


@dataclass(frozen=True)
class SingleOptions(RecurrentOptions):
    """One perspective's LSTM network."""


@dataclass(frozen=True)
class EarlyFusionOptions(RecurrentOptions):
    """Perspectives concatenated per frame into one LSTM."""


@dataclass(frozen=True)
class LateFusionOptions(RecurrentOptions):
    """One LSTM per perspective, scores or representations combined."""

    combine: str = option(
        "scores", "average the perspectives' scores or join their representations", choices=("scores", "features")
    )


def build_single(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled LSTM network on the run's one perspective."""
    from pipeline.models.baselines.layers import single_layout

    return build_sequence_network(spec, shapes, single_layout)


def build_early_fusion(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled LSTM network on the perspectives concatenated per frame."""
    from pipeline.models.baselines.layers import early_fusion_layout

    return build_sequence_network(spec, shapes, early_fusion_layout)


def build_late_fusion(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled late-fusion network: one LSTM per perspective, combined as ``--combine`` says."""
    from pipeline.models.baselines.layers import late_fusion_layout

    return build_sequence_network(spec, shapes, late_fusion_layout, combine=spec.options.get("combine", "scores"))


SMALLEST = {"units": 4, "dropout": 0.0}
CUSTOM = serializables("pipeline.models.attention", "pipeline.models.composite")
register(
    ModelEntry(
        "single",
        "features",
        SingleOptions,
        build_single,
        CUSTOM,
        COMPOSITE_CHOICES,
        "one perspective's LSTM network",
        perspectives=1,
        listed=1,
        smallest=SMALLEST,
    )
)
register(
    ModelEntry(
        "early_fusion",
        "features",
        EarlyFusionOptions,
        build_early_fusion,
        CUSTOM,
        COMPOSITE_CHOICES,
        "perspectives concatenated per frame into one LSTM",
        listed=2,
        smallest=SMALLEST,
    )
)
register(
    ModelEntry(
        "late_fusion",
        "features",
        LateFusionOptions,
        build_late_fusion,
        CUSTOM,
        (),
        "one LSTM per perspective, combined",
        listed=3,
        smallest=SMALLEST,
    )
)
__getattr__ = keras_names(__name__)
