"""The trainable models, one package each (``mplstm``, ``baselines``, ``mvlstm``, ``convlstm``, ``mvm``): its options,
builder and registration in the package, its Keras code in the package's ``layers`` (the memory model's authors'
modules in ``mvm.modules``); plus what they share (``registry``, ``shared`` options, the ``networks`` skeleton,
temporal ``attention``, ``composite`` pretraining, ``fronts``: a torchvision-style ResNet-18).

Importing the package loads no Keras (``pipeline.models.registry`` lists models without it); the names below load
their module on first use.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "TemporalAttention": "attention",
    "MPLSTM": "mplstm.layers",
    "MPLSTMCell": "mplstm.layers",
    "keras2_hard_sigmoid": "mplstm.layers",
    "MVLSTM": "mvlstm.layers",
    "MVLSTMCell": "mvlstm.layers",
    "TOPOLOGIES": "mvlstm",
    "build_model": "networks",
    "compile_model": "networks",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """The public name ``name`` from its module, imported on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
