"""The layout of the released MP-LSTM code: ``{Train,Validation,Test}/CAM<k>/<class>/<video>``.

Each ``CAM<k>`` folder is a perspective; a sample is one video name (file stem, or an image folder's name) found under
the same split and class in every selected camera. Classes are the class folder names in natural order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest, natural_sorted
from pipeline.recipes.common import (
    RecipeError,
    SampleCollector,
    StrPath,
    dataset_root,
    finish,
    safe_id,
    sequence_entries,
    sequence_name,
    split_of_folder,
    subfolders,
)

log = get_logger(__name__)

CAMERA_PATTERN = re.compile(r"cam(\d+)", re.IGNORECASE)


def prepare_mplstm_layout(root: StrPath, *, perspectives: Sequence[int | str] | None = None) -> Manifest:
    """Manifest of an MP-LSTM style tree; ``perspectives`` (cameras, e.g. ``[1, 3]`` or ``["CAM1", "CAM3"]``) picks
    some, default all."""
    base = dataset_root(root)
    found: list[tuple[str, str, Path]] = []  # (split, perspective, camera folder)
    for folder in subfolders(base):
        split = split_of_folder(folder.name)
        if split is None:
            log.warning("mplstm: ignoring %s (not a Train/Validation/Test folder)", folder)
            continue
        for camera in subfolders(folder):
            match = CAMERA_PATTERN.fullmatch(camera.name)
            if match is None:
                log.warning("mplstm: ignoring %s (not a CAM<k> folder)", camera)
                continue
            found.append((split, f"CAM{int(match[1])}", camera))
    available = natural_sorted({p for _, p, _ in found})
    perspectives = available if perspectives is None else _parse_cameras(perspectives, available)
    collector = SampleCollector(base, perspectives)
    for split, perspective, camera in found:
        if perspective not in perspectives:
            continue
        for class_folder in subfolders(camera):
            for entry in sequence_entries(class_folder):
                sample_id = safe_id(split, class_folder.name, sequence_name(entry))
                collector.add(sample_id, perspective, entry, label=class_folder.name, split=split)
    info = {"layout": "mplstm", "cameras": perspectives}
    return finish("mplstm", base, collector, info=info, layout="{Train,Validation,Test}/CAM<k>/<class>/<video>")


def _parse_cameras(cameras: Sequence[int | str], available: list[str]) -> list[str]:
    """Perspective names ``CAM<k>`` for the requested cameras, refusing ones the tree does not have."""
    names = []
    for camera in cameras:
        text = str(camera).strip()
        match = CAMERA_PATTERN.fullmatch(text)
        number = int(match[1]) if match else int(text) if text.isdigit() else None
        if number is None or f"CAM{number}" not in available:
            raise RecipeError(f"camera {camera!r} not found; the tree has {available}")
        names.append(f"CAM{number}")
    return natural_sorted(set(names))
