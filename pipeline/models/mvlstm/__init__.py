"""MV-LSTM (Rajagopalan et al., ECCV 2016), the multi-view baseline: options, builder and registration (no Keras).

The cell, the layer and the network's layout are in ``layers`` (Keras), whose names this package also gives on
first use. Composite pretraining does not transfer into it (its encoder is not this network's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.models.registry import ModelEntry, keras_names, option, register, serializables
from pipeline.models.shared import RecurrentOptions, build_sequence_network

TOPOLOGIES: dict[str, tuple[float, float]] = {  # (alpha, beta): the paper's Fig. 2
    "view_specific": (1.0, 0.0),
    "coupled": (0.0, 1.0),
    "fully_connected": (1.0, 1.0),
    "hybrid": (0.1, 1.0),
}


@dataclass(frozen=True)
class MVLSTMOptions(RecurrentOptions):
    """MV-LSTM (Rajagopalan et al., ECCV 2016)."""

    topology: str = option("hybrid", "hidden-state topology", choices=tuple(TOPOLOGIES))
    mv_output: str = option(
        "none", "hidden state: o*c as in the paper (none) or o*tanh(c) as in an LSTM", choices=("none", "tanh")
    )


def build(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled MV-LSTM network for per-perspective ``[T, d]`` shapes."""
    from pipeline.models.mvlstm.layers import mvlstm_layout

    o = spec.options
    activation = None if o.get("mv_output", "none") == "none" else o["mv_output"]
    return build_sequence_network(
        spec, shapes, mvlstm_layout, topology=o.get("topology", "hybrid"), output_activation=activation
    )


CUSTOM = serializables("pipeline.models.attention", "pipeline.models.mvlstm.layers")
register(
    ModelEntry(
        "mvlstm",
        "features",
        MVLSTMOptions,
        build,
        CUSTOM,
        (),
        "MV-LSTM (Rajagopalan et al., ECCV 2016)",
        listed=4,
        smallest={"units": 4, "dropout": 0.0},
    )
)
__getattr__ = keras_names(__name__)
