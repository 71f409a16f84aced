"""How closely one set of ROI crops agrees with another (e.g. tracked crops against per-frame detection)."""

from __future__ import annotations

import numpy as np

from pipeline.media.roi import RoiResult


def _scale_and_angle(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame zoom (frame pixels to crop pixels) and in-plane rotation in radians of ``[T, 2, 3]`` crop matrices."""
    linear = matrices[:, :, :2].astype(np.float64)
    return np.sqrt(np.abs(np.linalg.det(linear))), np.arctan2(linear[:, 1, 0], linear[:, 0, 0])


def jitter(centres: np.ndarray) -> float:
    """Mean frame-to-frame movement of the crop centre ``[T, 2]`` in pixels (0 for a one-frame clip)."""
    return float(np.linalg.norm(np.diff(centres, axis=0), axis=1).mean()) if len(centres) > 1 else 0.0


def crop_agreement(ours: RoiResult, reference: RoiResult) -> dict[str, np.ndarray | float]:
    """Centre offsets per frame in frame pixels and in ROI pixels (times the reference crop's zoom, so that a crop is
    judged by what it holds whatever the video's resolution), mean scale and rotation errors, both crops' jitter."""
    offsets = np.linalg.norm(ours.crop_centers() - reference.crop_centers(), axis=1)
    scale, angle = _scale_and_angle(ours.crop_matrices)
    ref_scale, ref_angle = _scale_and_angle(reference.crop_matrices)
    turn = np.angle(np.exp(1j * (angle - ref_angle)))
    return {
        "offsets": offsets,
        "roi_offsets": offsets * ref_scale,
        "scale_error": float(np.abs(scale / ref_scale - 1).mean()),
        "rotation_error_deg": float(np.degrees(np.abs(turn)).mean()),
        "jitter_px": jitter(ours.crop_centers()),
        "reference_jitter_px": jitter(reference.crop_centers()),
    }
