"""Sequence models: the MP-LSTM cell and layer, MV-LSTM, temporal attention and the network builders.

Importing the package loads no Keras (``pipeline.models.registry`` lists models without it); the names below load
their module on first use.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "TemporalAttention": "attention",
    "MPLSTM": "mplstm",
    "MPLSTMCell": "mplstm",
    "keras2_hard_sigmoid": "mplstm",
    "MVLSTM": "mvlstm",
    "MVLSTMCell": "mvlstm",
    "TOPOLOGIES": "mvlstm",
    "MODELS": "networks",
    "build_model": "networks",
    "compile_model": "networks",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """The public name ``name`` from its module, imported on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
