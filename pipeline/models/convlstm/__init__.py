"""Deep ConvLSTM (Courtney and Sreenivas, ACPR 2019) on ROI pixel clips: options, builder and registration.

The network is in ``layers`` (Keras), imported by the builder; its names are also reachable from this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.models.registry import ModelEntry, keras_names, option, register, serializables
from pipeline.models.shared import PixelOptions

DEFAULT_LAYERS = "conv,pool,convlstm,pool,convlstm"


@dataclass(frozen=True)
class ConvLSTMOptions(PixelOptions):
    """Deep ConvLSTM (Courtney and Sreenivas, ACPR 2019)."""

    layers: str = option(DEFAULT_LAYERS, "layer stack, conv/convlstm/pool tokens")
    filters: str = option("32,48,64", "one width per conv/convlstm layer")
    dropout: float = option(0.3, "dropout before the classifier", least=0.0, below=1.0)


def build(spec: Any, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None) -> Any:
    """The compiled ConvLSTM for per-perspective ``[T, H, W, C]`` clip shapes."""
    from pipeline.models import networks
    from pipeline.models.convlstm.layers import build_convlstm

    o = spec.options
    filters = [int(f) for f in str(o.get("filters", "32,48,64")).split(",") if f.strip()]
    model = build_convlstm(
        [tuple(s) for s in shapes],
        len(spec.classes),
        layers=o.get("layers", DEFAULT_LAYERS),
        filters=filters,
        dropout=o.get("dropout", 0.3),
    )
    from pipeline.training.optimizers import make_optimizer

    return networks.compile_model(model, o["lr"], optimizer=make_optimizer(o))


register(
    ModelEntry(
        "convlstm",
        "pixels",
        ConvLSTMOptions,
        build,
        serializables("pipeline.models.convlstm.layers"),
        (),
        "Deep ConvLSTM (Courtney and Sreenivas, ACPR 2019)",
        lower=("--filters",),
        listed=5,
        smallest={"layers": "conv,pool,convlstm", "filters": "4,4", "dropout": 0.0},
    )
)
__getattr__ = keras_names(__name__)
