"""Contact sheets: one PNG with a few evenly spaced frames of each ROI clip, so a person can check crops at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pipeline.storage.atomic import write_bytes_atomic

TITLE_HEIGHT = 20
GAP = 4
BACKGROUND = 255
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """A uint8 BGR copy of an RGB or gray frame."""
    frame = np.asarray(frame, np.uint8)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def _row(title: str, clip: np.ndarray, frames_per_clip: int, tile: int) -> np.ndarray:
    """A titled row of ``frames_per_clip`` frames spread over the clip, ``tile`` px high, frame index in a corner."""
    if len(clip) == 0:
        raise ValueError(f"clip {title!r} has no frames")
    picks = np.unique(np.linspace(0, len(clip) - 1, min(frames_per_clip, len(clip))).round().astype(int))
    width = max(1, round(tile * clip.shape[2] / clip.shape[1]))
    tiles = []
    for index in picks:
        image = cv2.resize(_as_bgr(clip[index]), (width, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(image, str(index), (3, tile - 4), FONT, 0.35, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(image)
        tiles.append(np.full((tile, GAP, 3), BACKGROUND, np.uint8))
    strip = np.concatenate(tiles[:-1], axis=1)
    header = np.full((TITLE_HEIGHT, strip.shape[1], 3), BACKGROUND, np.uint8)
    cv2.putText(header, f"{title}  ({len(clip)} frames)", (2, TITLE_HEIGHT - 6), FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, strip], axis=0)


def write_contact_sheet(
    path: Path | str, clips: Sequence[tuple[str, np.ndarray]], frames_per_clip: int = 6, tile: int = 96
) -> Path:
    """Write a PNG grid, one row per ``(title, clip)`` (clip ``[T, h, w]`` or ``[T, h, w, 3]`` uint8), atomically."""
    if not clips:
        raise ValueError("no clips for the contact sheet")
    rows = [_row(title, np.asarray(clip), frames_per_clip, tile) for title, clip in clips]
    width = max(row.shape[1] for row in rows)
    padded = []
    for row in rows:
        pad = np.full((row.shape[0] + GAP, width, 3), BACKGROUND, np.uint8)
        pad[: row.shape[0], : row.shape[1]] = row
        padded.append(pad)
    ok, png = cv2.imencode(".png", np.concatenate(padded, axis=0))
    if not ok:
        raise RuntimeError(f"could not encode the contact sheet for {path}")
    path = Path(path)
    write_bytes_atomic(path, png.tobytes())
    return path
