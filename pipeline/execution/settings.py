"""What a stage's outputs were made with, against what a new run asks for: outputs are never reused under other settings."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import PurePath
from typing import Any, Mapping

from pipeline.manifest import Manifest
from pipeline.errors import ConfigError


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
