"""What a stage's outputs were made with, against what a new run asks for: outputs are never reused under other
settings.

Also the fields of a config or options dataclass (:func:`option`: a default, help text and checks) and the checks
themselves, which configs run when built and the command line's argument types reuse.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, field, fields, is_dataclass
from pathlib import PurePath
from typing import Any, Mapping

from pipeline.errors import ConfigError
from pipeline.manifest import Manifest


class SettingsChanged(ConfigError):
    """A re-run asks for settings other than those its existing outputs were made with."""

    code = "settings-changed"


def recorded_settings(manifest: Manifest, stage: str) -> dict[str, Any] | None:
    """The settings of the latest run of ``stage`` recorded in the manifest, or None if it never ran."""
    runs = [run for run in manifest.runs if run.get("stage") == stage]
    return dict(runs[-1].get("config") or {}) if runs else None


def differences(recorded: Mapping[str, Any], asked: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``name: old -> new`` for every setting both hold that differs (nested dicts key by key; lists and tuples alike).

    Only what both name is compared: a record from an older version lacks newer settings, and run facts such as the
    number of workers are recorded but not asked.
    """
    lines = []
    for key in sorted(set(recorded) & set(asked)):
        old, new = recorded.get(key), asked.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            lines += differences(old, new, f"{prefix}{key}.")
        elif plain(old) != plain(new):
            lines.append(f"{prefix}{key}: {plain(old)!r} -> {plain(new)!r}")
    return lines


def plain(value: Any) -> Any:
    """A setting as the JSON a run records: dataclasses and mappings as dicts, tuples as lists, paths as text; so a
    value read back from the record equals the one a config holds."""
    if is_dataclass(value):
        return {k: plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value) if isinstance(value, PurePath) else value


def option(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    least: float | None = None,
    most: float | None = None,
    above: float | None = None,
    below: float | None = None,
    const: Any = None,
    flag: str | None = None,
) -> Any:
    """An options dataclass field: its default, help text and the checks :func:`check_options` applies.

    ``least``/``most`` bound the value inclusively, ``above``/``below`` exclusively; ``const`` is the value a flag
    given without one takes (``--augment`` alone: ``lrw``); ``flag`` names the option in messages when the command
    line spells it otherwise than the field (``--smooth`` for ``smooth_window``).
    """
    checks = {
        "choices": choices,
        "least": least,
        "most": most,
        "above": above,
        "below": below,
        "const": const,
        "flag": flag,
    }
    return field(default=default, metadata={"help": help, **{k: v for k, v in checks.items() if v is not None}})


def flag(name: str) -> str:
    """The command-line spelling of an option field."""
    return "--" + name.replace("_", "-")


SIMPLE = (bool, int, float, str)  # the field types checked (others, such as tuples and mappings, by their config)


def _base_type(hint: Any) -> Any:
    """``int`` for ``int | None``: the type a field's value has when given."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def field_types(cls: type) -> dict[str, Any]:
    """Each field of an options dataclass and the type its value has when given."""
    return {name: _base_type(hint) for name, hint in typing.get_type_hints(cls).items()}


def check_value(name: str, kind: type, value: Any, meta: Any) -> Any:
    """``value`` of option ``name`` if it has the field's type and passes its checks, else a ConfigError naming it."""
    if kind not in SIMPLE:
        return value
    spelled = meta.get("flag") or flag(name)
    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{spelled} must be {kinds.get(kind, kind.__name__)}, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{spelled} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    bounds = [
        ("least", lambda v, b: v >= b, ">="),
        ("most", lambda v, b: v <= b, "<="),
        ("above", lambda v, b: v > b, ">"),
        ("below", lambda v, b: v < b, "<"),
    ]
    for key, holds, sign in bounds:
        if key in meta and not holds(value, meta[key]):
            raise ConfigError(f"{spelled} must be {sign} {meta[key]:g}, got {value!r}")
    return value


def check_options(options: Any) -> None:
    """Type and range checks of every set field of an options dataclass instance."""
    types = field_types(type(options))
    for f in fields(options):
        value = getattr(options, f.name)
        if value is not None:
            check_value(f.name, types[f.name], value, f.metadata)
