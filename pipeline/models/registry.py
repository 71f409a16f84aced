"""The model registry: every trainable model's name, input kind, options, builder and checkpoint custom objects.

A model is one package under ``pipeline.models``: its ``__init__`` holds the options dataclass (each field with its
help text, see :func:`option`), the builder and the :func:`register` call, and imports no Keras, so listing models
stays cheap; the Keras code sits beside it and is imported by the builder. Every package there is imported on
first use of the registry. The command line's model choices and flags (:func:`model_flags`), each model's option
defaults and checks (:func:`model_options`), the builder ``build_model`` dispatches to, the refusal of ``--pretrain``
for networks it cannot serve, and the custom objects ``load_checkpoint`` hands Keras all come from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

from pipeline.errors import ConfigError
from pipeline.execution.settings import check_options, check_value, field_types, flag, option  # noqa: F401

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
    lower: tuple[str, ...] = ("--units",)  # options lowering a run's memory (besides batch, crop and timesteps)
    multi_perspective_encoder: bool = False  # composite pretraining encodes with one MP-LSTM (else one LSTM)
    smallest: Mapping[str, Any] = field(default_factory=dict)  # options of its smallest network (conformance test)
    listed: int = 100  # where the model choices list it (lower first; ties in registration order)
    optimizer: str = "rmsprop"  # the optimizer its runs use unless one is given (``pipeline.training.optimizers``)

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ConfigError(f"model {self.name!r}: inputs must be one of {INPUTS}, got {self.inputs!r}")
        if "batch_size" not in {f.name for f in fields(self.options)}:
            raise ConfigError(f"model {self.name!r}: its options dataclass needs a batch_size field")


_ENTRIES: dict[str, ModelEntry] = {}
_loaded = False


def _builtins() -> dict[str, ModelEntry]:
    """The entries in listing order, after importing every model package under ``pipeline.models`` once."""
    global _loaded
    if not _loaded:
        _loaded = True
        import pipeline.models as home

        for module in pkgutil.iter_modules(home.__path__):
            if module.ispkg:
                importlib.import_module(f"{home.__name__}.{module.name}")
    return _ENTRIES


def register(entry: ModelEntry) -> ModelEntry:
    """Add ``entry``; a second model under the same name is refused. Returns the entry."""
    entries = _builtins()
    if entry.name in entries:
        raise ConfigError(f"model {entry.name!r} is already registered")
    entries[entry.name] = entry
    ordered = sorted(entries.values(), key=lambda e: e.listed)  # stable: registration order among equals
    entries.clear()
    entries.update((e.name, e) for e in ordered)
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
    raise ConfigError(
        f"--pretrain {choice} transfers into {', '.join(serving) or 'no registered model'} only; "
        f"--model {name} cannot use it"
    )


def serializables(*modules: str) -> Callable[[], dict[str, Any]]:
    """A ``custom_objects`` callable: every Keras-serializable object the named modules register when imported."""

    def gather() -> dict[str, Any]:
        import keras

        for module in modules:
            importlib.import_module(module)
        return {
            key: obj
            for key, obj in keras.saving.get_custom_objects().items()
            if getattr(obj, "__module__", None) in modules
        }

    return gather


def keras_names(package: str, module: str = "layers") -> Callable[[str], Any]:
    """A package's ``__getattr__``: its Keras module's public names, that module imported on first use."""

    def lookup(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return lookup


# --- model options: fields with help and checks, the command line's flags, and the refusal of foreign options ---


def model_options(model: str, given: dict[str, Any]) -> Any:
    """The ``model``'s options from the explicitly ``given`` ones (others ``None``); refuses options it does not use.

    An options class may define ``resolve(chosen)`` for checks across fields (it builds the instance); the fields'
    types and ranges are checked in any case.
    """
    cls = get(model).options
    own = {f.name for f in fields(cls)}
    chosen = {k: v for k, v in given.items() if v is not None}
    foreign = sorted(set(chosen) - own)
    if foreign:
        takes = ", ".join(flag(n) for n in sorted(own))
        unused = ", ".join(flag(n) for n in foreign)
        raise ConfigError(f"--model {model} does not use {unused}; its options are {takes}")
    types = field_types(cls)
    chosen = {k: check_value(k, types[k], v, cls.__dataclass_fields__[k].metadata) for k, v in chosen.items()}
    check_pretrain(model, chosen.get("pretrain"))
    options = cls.resolve(chosen) if hasattr(cls, "resolve") else cls(**chosen)
    check_options(options)
    return options


@dataclass
class ModelFlag:
    """One ``train`` flag made from the option fields of the same name: its help, type and the models taking it."""

    name: str
    kind: type
    field: Field
    helps: list[tuple[tuple[str, ...], str, Any]]  # (models, help, default) per distinct declaration
    group: str  # title of the group it is shown under

    def help(self) -> str:
        """The help text: each declaration's help and default, the first's unnamed (it is the most common)."""
        parts = []
        for i, (models, text, default) in enumerate(self.helps):
            shown = "" if default is None or default is False else f" (default: {default})"
            parts.append((f"{', '.join(models)}: " if i else "") + text + shown)
        return "; ".join(parts)


def _declarer(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO whose body declares field ``name``."""
    return next(c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {}))


def _group_title(owner: type, models: list[str]) -> str:
    """A group's title: the declaring class's one-line docstring and the models that take its fields."""
    doc = (owner.__doc__ or owner.__name__).strip().splitlines()[0].rstrip(".")
    if len(models) == 1:
        entry = get(models[0])
        return f"--model {models[0]}: {entry.description or doc}"
    return f"{doc} ({', '.join(models)})"


def model_flags() -> list[ModelFlag]:
    """Every registered model's options as flags, one per field name, in registration order.

    A field declared once for several models (a shared base's) is shown under that base; each model's own fields
    under the model; a name several classes declare (``--units``) under the first, its help naming the others.
    """
    by_name: dict[str, ModelFlag] = {}
    holders: dict[type, list[str]] = {}
    for model, cls in options().items():
        for f in fields(cls):
            models = holders.setdefault(_declarer(cls, f.name), [])
            if model not in models:
                models.append(model)
    for model, cls in options().items():
        types = field_types(cls)
        for f in fields(cls):
            owner = _declarer(cls, f.name)
            default = None if f.default is MISSING else f.default
            text = f.metadata.get("help") or f"{model} option {f.name}"
            entry = by_name.get(f.name)
            if entry is None:
                by_name[f.name] = ModelFlag(
                    f.name, types[f.name], f, [([model], text, default)], _group_title(owner, holders[owner])
                )
                continue
            same = next((h for h in entry.helps if h[1] == text and h[2] == default), None)
            if same:
                same[0].append(model)
            else:
                entry.helps.append(([model], text, default))
    for entry in by_name.values():
        entry.helps = [(tuple(models), text, default) for models, text, default in entry.helps]
    return list(by_name.values())


def model_takes() -> dict[str, list[str]]:
    """Each model's flags, for the line under its name in ``train --help``."""
    return {model: [flag(f.name) for f in fields(cls)] for model, cls in options().items()}
