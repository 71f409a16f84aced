"""The manifest: one serialisable record per sample, JSON Lines with a versioned header line.

Every stage reads the manifest, records per-sample status and outputs under its own stage key, and
appends a run record (config, versions, time) to the header; no stage rewrites another's fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.errors import MpviewError
from pipeline.storage.atomic import write_text_atomic

SCHEMA = "mpview-manifest"
SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
DONE, FAILED = "done", "failed"


class ManifestError(MpviewError, ValueError):
    """A manifest file or record that cannot be used; the message names the file and line."""

    code = "manifest"


@dataclass
class Source:
    """Where one perspective of a sample comes from: a video file, or an ordered list of image files."""

    path: str
    kind: str = "video"  # "video" | "images"
    frames: list[str] | None = None  # for kind "images": files in display order (relative to root)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind}
        if self.frames is not None:
            out["frames"] = list(self.frames)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Source":
        if isinstance(data, str):
            return cls(path=data)
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ValueError(f"source must be a path or an object with 'path', got {data!r}")
        kind = data.get("kind", "video")
        if kind not in ("video", "images"):
            raise ValueError(f"source kind must be 'video' or 'images', got {kind!r}")
        frames = data.get("frames")
        if frames is not None and not (isinstance(frames, list) and all(isinstance(f, str) for f in frames)):
            raise ValueError("source 'frames' must be a list of paths")
        return cls(path=data["path"], kind=kind, frames=frames)


@dataclass
class Sample:
    """One sample: an utterance or face sequence seen from one or more perspectives."""

    id: str
    sources: dict[str, Source]
    label: str | None = None
    split: str | None = None
    speaker: str | None = None
    media: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per perspective: frames, fps, width, height, sha256
    meta: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def status(self, stage: str) -> str | None:
        """``"done"``, ``"failed"`` or ``None`` (not yet run) for ``stage``."""
        return self.stages.get(stage, {}).get("status")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "split": self.split,
            "speaker": self.speaker,
            "sources": {k: v.to_dict() for k, v in self.sources.items()},
            "media": self.media,
            "meta": self.meta,
            "stages": self.stages,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Sample":
        if not isinstance(data, dict):
            raise ValueError("record must be a JSON object")
        missing = [k for k in ("id", "sources") if k not in data]
        if missing:
            raise ValueError(f"record lacks field(s) {', '.join(missing)}")
        if not isinstance(data["id"], str) or not data["id"]:
            raise ValueError("'id' must be a non-empty string")
        if not isinstance(data["sources"], dict) or not data["sources"]:
            raise ValueError("'sources' must be a non-empty object of perspective -> source")
        split = data.get("split")
        if split is not None and split not in SPLITS:
            raise ValueError(f"'split' must be one of {SPLITS} or null, got {split!r}")
        for key in ("media", "meta", "stages"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"'{key}' must be an object")
        return cls(
            id=data["id"],
            sources={str(k): Source.from_dict(v) for k, v in data["sources"].items()},
            label=None if data.get("label") is None else str(data["label"]),
            split=split,
            speaker=None if data.get("speaker") is None else str(data["speaker"]),
            media=dict(data.get("media", {})),
            meta=dict(data.get("meta", {})),
            stages=dict(data.get("stages", {})),
        )


@dataclass
class Manifest:
    """A dataset's samples plus a header: dataset name, root, perspectives, classes and the run log."""

    dataset: str
    root: str
    perspectives: list[str]
    samples: list[Sample] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(
        default_factory=list
    )  # samples a recipe could not build (e.g. a missing perspective)

    # -- access -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def class_index(self) -> dict[str, int]:
        """Label -> integer index, in the header's class order."""
        return {c: i for i, c in enumerate(self.classes)}

    def source_path(self, sample: Sample, perspective: str, frame: str | None = None) -> Path:
        """Absolute path of a sample's source (or one of its image frames), refusing paths outside the root."""
        source = sample.sources[perspective]
        return resolve_inside(self.root, frame if frame is not None else source.path, what=f"sample {sample.id!r}")

    def add_run(
        self, stage: str, config: dict[str, Any], summary: dict[str, Any], started: float, finished: float
    ) -> None:
        """Append what a stage did to the header's run log."""
        from pipeline.execution.provenance import environment

        self.runs.append(
            {
                "stage": stage,
                "config": config,
                "summary": summary,
                "started": started,
                "finished": finished,
                "environment": environment(),
            }
        )

    def set_classes_from_labels(self) -> None:
        """Fill ``classes`` with the sorted distinct labels when a recipe did not fix an order."""
        if not self.classes:
            self.classes = sorted({s.label for s in self.samples if s.label is not None}, key=_natural_key)

    # -- serialisation ------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "dataset": self.dataset,
            "root": self.root,
            "perspectives": self.perspectives,
            "classes": self.classes,
            "info": self.info,
            "problems": self.problems,
            "runs": self.runs,
        }

    def dumps(self) -> str:
        lines = [json.dumps(self.header(), sort_keys=True)]
        lines += [json.dumps(s.to_dict(), sort_keys=True) for s in self.samples]
        return "\n".join(lines) + "\n"

    def save(self, path: Path | str) -> None:
        """Write the manifest atomically (temporary file, then rename)."""
        ids = [s.id for s in self.samples]
        if len(ids) != len(set(ids)):
            raise ManifestError(f"{path}: duplicate sample ids")
        write_text_atomic(path, self.dumps())

    @classmethod
    def load(cls, path: Path | str) -> "Manifest":
        """Read and validate a manifest; errors name the file and the offending line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: no manifest here (run `prepare` first)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
        lines = text.splitlines()
        if not lines:
            raise ManifestError(f"{path}: empty manifest")
        header = parse_json_object(path, 1, lines[0])
        if header.get("schema") != SCHEMA:
            raise ManifestError(f"{path}:1: not an {SCHEMA} header (schema={header.get('schema')!r})")
        if header.get("version") != SCHEMA_VERSION:
            raise ManifestError(
                f"{path}:1: schema version {header.get('version')!r} not supported (expected {SCHEMA_VERSION})"
            )
        for key in ("dataset", "root", "perspectives"):
            if key not in header:
                raise ManifestError(f"{path}:1: header lacks {key!r}")
        manifest = cls(
            dataset=header["dataset"],
            root=header["root"],
            perspectives=list(header["perspectives"]),
            classes=list(header.get("classes", [])),
            runs=list(header.get("runs", [])),
            info=dict(header.get("info", {})),
            problems=list(header.get("problems", [])),
        )
        seen: set[str] = set()
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                sample = Sample.from_dict(parse_json_object(path, number, line))
            except ValueError as exc:
                if isinstance(exc, ManifestError):
                    raise
                raise ManifestError(f"{path}:{number}: {exc}") from None
            if sample.id in seen:
                raise ManifestError(f"{path}:{number}: duplicate sample id {sample.id!r}")
            unknown = set(sample.sources) - set(manifest.perspectives)
            if unknown:
                raise ManifestError(
                    f"{path}:{number}: perspectives {sorted(unknown)} not in header {manifest.perspectives}"
                )
            seen.add(sample.id)
            manifest.samples.append(sample)
        return manifest


def parse_json_object(path: Path, number: int, line: str, error: type[Exception] = ManifestError) -> dict[str, Any]:
    """One JSON Lines record as a dict; ``error`` names the file and line when it is not a JSON object."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise error(f"{path}:{number}: expected a JSON object")
    return value


def resolve_inside(root: Path | str, relative: str, what: str = "path") -> Path:
    """Join ``relative`` onto ``root`` and refuse the result if it escapes ``root`` (``..``, absolute, links)."""
    root_real = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(root_real / relative))
    if candidate != root_real and root_real not in candidate.parents:
        raise ManifestError(f"{what}: source {relative!r} resolves outside the dataset root {root_real}")
    return candidate


def _natural_key(text: str) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def natural_sorted(items: Iterable[str]) -> list[str]:
    """Sort strings so that embedded numbers compare numerically (``u2`` before ``u10``)."""
    return sorted(items, key=_natural_key)


def replace_stage(sample: Sample, stage: str, record: dict[str, Any]) -> Sample:
    """A copy of ``sample`` with ``stage``'s record replaced (other stages untouched)."""
    stages = dict(sample.stages)
    stages[stage] = record
    return dataclasses.replace(sample, stages=stages)


def without_stage(sample: Sample, stage: str) -> Sample:
    """A copy of ``sample`` with no record of ``stage`` (its outputs are being redone)."""
    return dataclasses.replace(sample, stages={k: v for k, v in sample.stages.items() if k != stage})
