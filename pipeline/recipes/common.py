"""Helpers shared by the dataset recipes: folder conventions, sources, and gathering perspectives into samples."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from pipeline.errors import MpviewError
from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest, Sample, Source, natural_sorted
from pipeline.recipes.splits import assign_splits

log = get_logger(__name__)

StrPath = str | os.PathLike

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mpg", ".mpeg", ".mkv", ".webm", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"})

# Split folder names seen in distributed datasets (compared case-insensitively) -> manifest split name.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


class RecipeError(MpviewError, ValueError):
    """A dataset root that a recipe cannot use at all (wrong layout, bad option); the message says what was expected."""

    code = "recipe"


def dataset_root(root: StrPath) -> Path:
    """``root`` as an absolute path (symbolic links kept as given), refusing anything that is not a folder."""
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise RecipeError(f"dataset root {path} is not a folder")
    return path


def split_of_folder(name: str) -> str | None:
    """The manifest split (``train``/``val``/``test``) a folder or column value names, or ``None``."""
    return SPLIT_FOLDERS.get(name.strip().lower())


def safe_id(*parts: object) -> str:
    """A sample id from name parts.

    Parts are joined by ``-``; characters other than letters, digits, ``_`` and ``.`` are made ``_``.
    """
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(p)).strip("_") or "_" for p in parts)


def subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder`` in natural order."""
    names = natural_sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [folder / n for n in names]


def is_video(path: Path) -> bool:
    """Whether ``path`` is a file with a video extension."""
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order."""
    names = natural_sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    return [folder / n for n in names]


def sequence_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` that can be a sequence: video files and sub-folders (of images), in natural order."""
    names = natural_sorted(
        p.name for p in folder.iterdir() if not p.name.startswith(".") and (p.is_dir() or is_video(p))
    )
    return [folder / n for n in names]


def sequence_name(path: Path) -> str:
    """The name a sequence is matched by across perspectives: a video's stem or an image folder's name."""
    return path.name if path.is_dir() else path.stem


def walk_matching(root: Path, pattern: re.Pattern[str]) -> Iterator[tuple[Path, re.Match[str]]]:
    """Files under ``root`` whose name fully matches ``pattern``.

    Recursively, in natural path order, hidden entries skipped.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = natural_sorted(d for d in dirnames if not d.startswith("."))
        for name in natural_sorted(filenames):
            match = pattern.fullmatch(name)
            if match:
                yield Path(dirpath) / name, match


def real_root(root: Path) -> str:
    """The dataset root with symbolic links resolved, against which source paths are computed."""
    return os.path.realpath(root)


def relative_path(root_real: str, path: Path) -> str:
    """``path`` relative to the resolved dataset root, as POSIX text.

    ``ValueError`` when it resolves outside the root.
    """
    relative = os.path.relpath(os.path.realpath(path), root_real)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} resolves outside the dataset root {root_real}")
    return Path(relative).as_posix()


def source_for(root_real: str, path: Path) -> Source:
    """A video file or a folder of images as a :class:`Source` relative to the resolved root.

    ``ValueError`` says why not.
    """
    if path.is_dir():
        frames = image_files(path)
        if not frames:
            raise ValueError(f"no image files in folder {relative_path(root_real, path)}")
        return Source(
            relative_path(root_real, path), kind="images", frames=[relative_path(root_real, f) for f in frames]
        )
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    return Source(relative_path(root_real, path))


def problem(sample_id: str, reason: str, path: str | None = None) -> dict[str, Any]:
    """One entry of ``Manifest.problems``."""
    return {"id": sample_id, "reason": reason, "path": path}


@dataclass
class _Draft:
    label: str | None
    split: str | None
    speaker: str | None
    meta: dict[str, Any]
    sources: dict[str, Source] = field(default_factory=dict)


class SampleCollector:
    """Gathers per-perspective sources into samples keyed by id, recording every sample that cannot be built."""

    def __init__(self, root: Path, perspectives: Sequence[str]):
        self.root = root
        self.root_real = real_root(root)
        self.perspectives = list(perspectives)
        self.problems: list[dict[str, Any]] = []
        self._drafts: dict[str, _Draft] = {}
        self._rejected: set[str] = set()

    def add(
        self,
        sample_id: str,
        perspective: str,
        source: Path | Source,
        *,
        label: str | None = None,
        split: str | None = None,
        speaker: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Record one perspective of a sample (a path is turned into a source; a bad one becomes a problem)."""
        if sample_id in self._rejected:
            return
        if isinstance(source, Path):
            try:
                source = source_for(self.root_real, source)
            except ValueError as exc:
                self.reject(sample_id, str(exc), Path(os.path.relpath(source, self.root)).as_posix())
                return
        draft = self._drafts.setdefault(sample_id, _Draft(label, split, speaker, dict(meta or {})))
        for name, value in (("label", label), ("split", split), ("speaker", speaker)):
            if getattr(draft, name) != value:
                self.reject(sample_id, f"conflicting {name}: {getattr(draft, name)!r} and {value!r}", source.path)
                return
        if perspective in draft.sources:
            self.problems.append(
                problem(
                    sample_id,
                    f"duplicate source for perspective {perspective} (kept {draft.sources[perspective].path})",
                    source.path,
                )
            )
            return
        draft.sources[perspective] = source

    def reject(self, sample_id: str, reason: str, path: str | None = None) -> None:
        """Leave a sample out of the manifest and record why (once per sample)."""
        if sample_id in self._rejected:
            return
        self._rejected.add(sample_id)
        self._drafts.pop(sample_id, None)
        self.problems.append(problem(sample_id, reason, path))

    def samples(self) -> list[Sample]:
        """The complete samples in natural id order; those lacking a perspective are moved to ``problems``."""
        out = []
        for sample_id in natural_sorted(self._drafts):
            draft = self._drafts[sample_id]
            missing = [p for p in self.perspectives if p not in draft.sources]
            if missing:
                word = "perspective" if len(missing) == 1 else "perspectives"
                first = next(iter(draft.sources.values()))
                self.problems.append(problem(sample_id, f"missing {word} {', '.join(missing)}", first.path))
                continue
            sources = {p: draft.sources[p] for p in self.perspectives}
            out.append(Sample(sample_id, sources, draft.label, draft.split, draft.speaker, meta=draft.meta))
        return out


def complete_splits(
    collector: SampleCollector,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    by_speaker: bool = True,
    speaker_hint: str = "",
) -> list[Sample]:
    """The collector's samples with splits.

    Splits are kept when every sample has one, assigned when none has, else a problem each.
    """
    samples = collector.samples()
    if samples and all(s.split is None for s in samples):
        return assign_splits(samples, fractions=fractions, seed=seed, by_speaker=by_speaker, speaker_hint=speaker_hint)
    for sample in (s for s in samples if s.split is None):
        path = next(iter(sample.sources.values())).path
        collector.problems.append(problem(sample.id, "no split given while other samples have one", path))
    return [s for s in samples if s.split is not None]


def finish(
    dataset: str,
    root: Path,
    collector: SampleCollector,
    *,
    classes: Sequence[str] = (),
    info: dict[str, Any] | None = None,
    samples: list[Sample] | None = None,
    layout: str = "",
) -> Manifest:
    """Build the manifest from a collector (or already built ``samples``), log a summary and warn about problems."""
    samples = collector.samples() if samples is None else samples
    problems = collector.problems
    kinds = [_reason_kind(p["reason"]) for p in problems]
    reasons = Counter(kinds)
    examples = {}
    for kind, item in zip(kinds, problems):
        examples.setdefault(kind, item)
    summary = "; ".join(f"{n} x {r} (e.g. {_example(examples[r])})" for r, n in reasons.most_common())
    if not samples:
        hint = f" (expected {layout})" if layout else ""
        raise RecipeError(
            f"{dataset}: no usable samples under {root}{hint}" + (f"; problems: {summary}" if summary else "")
        )
    manifest = Manifest(
        dataset=dataset,
        root=str(root),
        perspectives=list(collector.perspectives),
        samples=samples,
        classes=list(classes),
        info=dict(info or {}),
        problems=problems,
    )
    manifest.set_classes_from_labels()
    splits = Counter(s.split for s in samples)
    log.info(
        "%s: %d samples (%s), %d perspectives, %d classes",
        dataset,
        len(samples),
        ", ".join(f"{k}={splits[k]}" for k in ("train", "val", "test", None) if splits[k]),
        len(manifest.perspectives),
        len(manifest.classes),
    )
    if problems:
        log.warning("%s: %d problem(s) recorded in the manifest: %s", dataset, len(problems), summary)
    return manifest


def _reason_kind(reason: str) -> str:
    """A reason without its details and with bare numbers blurred, so alike problems group.

    Names such as ``v5`` are kept.
    """
    return re.sub(r"\b\d+\b", "N", reason.split(":")[0].split(" (")[0])


def _example(item: dict[str, Any]) -> str:
    """One problem as the warning shows it: the sample and the file it concerns."""
    return f"{item['id']}: {item['path']}" if item.get("path") else str(item["id"])
