"""MP-LSTM (Sepas-Moghaddam et al., CVPR 2021): the model's options, builder and registration (no Keras here).

The cell, the layer and the network's layout are in ``layers`` (Keras), imported by the builder; their names are
also reachable from this package (``from pipeline.models.mplstm import MPLSTM``), loading ``layers`` on first use.
Composite pretraining's classifier is an MP-LSTM encoder over the perspectives -> dropout -> softmax: this
network's encoder, so it takes ``--pretrain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.models.registry import ModelEntry, keras_names, option, register, serializables
from pipeline.models.shared import COMPOSITE_CHOICES, RecurrentOptions, build_sequence_network


@dataclass(frozen=True)
class MPLSTMOptions(RecurrentOptions):
    """MP-LSTM (CVPR 2021)."""

    released: bool = option(False, "reproduce the released code exactly (U_f in the candidate, hard sigmoid)")


def build(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled MP-LSTM network for per-perspective ``[T, d]`` shapes."""
    from pipeline.models.mplstm.layers import mplstm_layout

    return build_sequence_network(spec, shapes, mplstm_layout, released=bool(spec.options.get("released", False)))


CUSTOM = serializables("pipeline.models.attention", "pipeline.models.mplstm.layers", "pipeline.models.composite")
register(
    ModelEntry(
        "mplstm",
        "features",
        MPLSTMOptions,
        build,
        CUSTOM,
        COMPOSITE_CHOICES,
        "MP-LSTM (CVPR 2021)",
        multi_perspective_encoder=True,
        listed=0,
        smallest={"units": 4, "dropout": 0.0},
    )
)
__getattr__ = keras_names(__name__)
