"""The embedding-sequence networks (``pipeline.models.networks``): MP-LSTM and the baselines it is compared with.

Composite pretraining's classifier is an LSTM encoder over the perspectives concatenated per frame (an MP-LSTM
encoder for ``mplstm``) -> dropout -> softmax: that is the MP-LSTM, single-perspective and early-fusion network's
encoder, so those three take ``--pretrain``; late fusion (one encoder per perspective) and MV-LSTM do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.models.options import (COMPOSITE_CHOICES, EarlyFusionOptions, LateFusionOptions, MPLSTMOptions, MVLSTMOptions,
                                    SingleOptions)
from pipeline.models.registry import ModelEntry, register, serializables

OwnOptions = Callable[[dict[str, Any]], dict[str, Any]]
CUSTOM = serializables("pipeline.models.attention", "pipeline.models.mplstm", "pipeline.models.mvlstm", "pipeline.models.composite")


def network(name: str, own: OwnOptions) -> Callable[..., Any]:
    """The builder of network ``name``: the shared head from the run's options, plus the network's ``own(options)``."""

    def build(spec, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None):
        """The compiled network for per-perspective ``[T, d]`` shapes."""
        from pipeline.models import networks

        o = spec.options
        model = networks.build_model(name, [s[-1] for s in shapes], len(spec.classes), timesteps=spec.timesteps, units=o["units"], dropout=o["dropout"], **own(o))
        return networks.compile_model(model, o["lr"])

    return build


def mv_output(o: dict[str, Any]) -> dict[str, Any]:
    """MV-LSTM's own options: topology and output activation ("none": linear)."""
    return {"topology": o.get("topology", "hybrid"), "output_activation": None if o.get("mv_output", "none") == "none" else o["mv_output"]}


for entry in (
    ModelEntry("mplstm", "features", MPLSTMOptions, network("mplstm", lambda o: {"released": o.get("released", False)}), CUSTOM, COMPOSITE_CHOICES, "MP-LSTM (CVPR 2021)"),
    ModelEntry("single", "features", SingleOptions, network("single", lambda o: {}), CUSTOM, COMPOSITE_CHOICES, "one perspective's LSTM network", perspectives=1),
    ModelEntry("early_fusion", "features", EarlyFusionOptions, network("early_fusion", lambda o: {}), CUSTOM, COMPOSITE_CHOICES, "perspectives concatenated per frame into one LSTM"),
    ModelEntry("late_fusion", "features", LateFusionOptions, network("late_fusion", lambda o: {"combine": o.get("combine", "scores")}), CUSTOM, (), "one LSTM per perspective, combined"),
    ModelEntry("mvlstm", "features", MVLSTMOptions, network("mvlstm", mv_output), CUSTOM, (), "MV-LSTM (Rajagopalan et al., ECCV 2016)"),
):
    register(entry)
