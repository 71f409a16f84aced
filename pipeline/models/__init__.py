"""Sequence models: the MP-LSTM cell and layer, MV-LSTM, temporal attention and the network builders."""

from pipeline.models.attention import TemporalAttention
from pipeline.models.mplstm import MPLSTM, MPLSTMCell, keras2_hard_sigmoid
from pipeline.models.mvlstm import MVLSTM, TOPOLOGIES, MVLSTMCell
from pipeline.models.networks import MODELS, build_model, compile_model

__all__ = [
    "MODELS",
    "MPLSTM",
    "MPLSTMCell",
    "MVLSTM",
    "MVLSTMCell",
    "TOPOLOGIES",
    "TemporalAttention",
    "build_model",
    "compile_model",
    "keras2_hard_sigmoid",
]
