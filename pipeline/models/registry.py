"""The model registry: every trainable model's name, input kind, options, builder and checkpoint custom objects.

A model is one module (its Keras code) plus one :func:`register` call; the built-in registrations live in
``pipeline.models.entries`` (imported on first use, without Keras, so listing names stays cheap). The command
line's model choices, each model's options dataclass, the builder ``build_model`` dispatches to, the refusal of
``--pretrain`` for networks it cannot serve, and the custom objects ``load_checkpoint`` hands Keras all come from
here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import ConfigError

INPUTS = ("features", "pixels")


@dataclass(frozen=True)
class TwoNetworks:
    """A model fitted as one network and scored as another (the memory model: audio-reading training network,
    video-only inference network sharing its weights).

    ``arrange(inputs, audio, y)`` gives the training network's inputs and targets; the best epoch is chosen on
    ``monitor`` and kept in the run folder's ``TRAIN_BEST``, then the inference network is saved as the checkpoint.
    """

    monitor: str
    arrange: Callable[[list[Any], Any, Any], tuple[Any, Any]]
    training: Callable[[Any], Any]  # built -> the network to fit
    scoring: Callable[[Any], Any]  # built -> the network evaluate loads
    logits: bool = True  # whether the scoring network outputs logits (test-time augmentation adds them)


@dataclass(frozen=True)
class ModelEntry:
    """One model: ``build(spec, shapes, audio_shape)`` returns it compiled; ``custom_objects()`` what loading it needs.

    ``pretrain`` names the ``--pretrain`` choices whose classifier is truly this network's encoder (empty: refused).
    """

    name: str
    inputs: Literal["features", "pixels"]
    options: type
    build: Callable[..., Any]
    custom_objects: Callable[[], dict[str, Any]]
    pretrain: tuple[str, ...] = ()
    description: str = ""
    perspectives: int | None = None  # exactly this many perspectives (None: any number)
    audio: bool = False  # whether it reads the frame-aligned audio
    two_networks: TwoNetworks | None = None  # fitted as one network, scored as another
    lower: tuple[str, ...] = ("--units",)  # options to lower when a run would not fit memory (besides batch, crop, timesteps)

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ConfigError(f"model {self.name!r}: inputs must be one of {INPUTS}, got {self.inputs!r}")


_ENTRIES: dict[str, ModelEntry] = {}
_loaded = False


def _builtins() -> dict[str, ModelEntry]:
    """The entries, after importing every built-in registration module once."""
    global _loaded
    if not _loaded:
        _loaded = True
        from pipeline.models import entries

        for module in pkgutil.iter_modules(entries.__path__):
            importlib.import_module(f"{entries.__name__}.{module.name}")
    return _ENTRIES


def register(entry: ModelEntry) -> ModelEntry:
    """Add ``entry``; a second model under the same name is refused. Returns the entry."""
    entries = _builtins()
    if entry.name in entries:
        raise ConfigError(f"model {entry.name!r} is already registered")
    entries[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove the model ``name`` (a test's or a plugin's registration)."""
    _builtins().pop(name, None)


def get(name: str) -> ModelEntry:
    """The entry of model ``name``; an unknown name is an error listing the registered ones."""
    entries = _builtins()
    if name not in entries:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(entries)}")
    return entries[name]


def names(inputs: str | None = None) -> tuple[str, ...]:
    """Registered model names in registration order, those reading ``inputs`` ("features" or "pixels") if given."""
    return tuple(n for n, e in _builtins().items() if inputs is None or e.inputs == inputs)


def options() -> dict[str, type]:
    """Each model's options dataclass by name."""
    return {n: e.options for n, e in _builtins().items()}


def custom_objects() -> dict[str, Any]:
    """Every registered model's custom objects, merged: what loading any project checkpoint needs."""
    merged: dict[str, Any] = {}
    for entry in _builtins().values():
        merged.update(entry.custom_objects())
    return merged


def check_pretrain(name: str, choice: str | None) -> None:
    """Refuse ``--pretrain choice`` for a model whose network it does not transfer into, naming those it does."""
    if not choice or choice in get(name).pretrain:
        return
    serving = [n for n, e in _builtins().items() if choice in e.pretrain]
    raise ConfigError(f"--pretrain {choice} transfers into {', '.join(serving) or 'no registered model'} only; --model {name} cannot use it")


def serializables(*modules: str) -> Callable[[], dict[str, Any]]:
    """A ``custom_objects`` callable: every Keras-serializable object the named modules register when imported."""

    def gather() -> dict[str, Any]:
        import keras

        for module in modules:
            importlib.import_module(module)
        return {key: obj for key, obj in keras.saving.get_custom_objects().items() if getattr(obj, "__module__", None) in modules}

    return gather
