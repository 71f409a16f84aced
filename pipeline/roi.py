"""Mouth and face ROI cropping: tracked, smoothed landmarks, similarity alignment, per-frame crop matrices."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.faces import MOUTH_IDS, POLICIES, STABLE_IDS, FaceTrack, NoFaceError, fit_every_frame, track_face
from pipeline.logs import get_logger
from pipeline.video import VideoError, read_frames

__all__ = ["NoFaceError", "RoiConfig", "RoiResult", "crop_clip", "crop_clip_naive", "crop_matrices", "crop_video",
           "similarity_to_reference", "smooth_landmarks"]

log = get_logger(__name__)

# Nose base (33) and eye corners (36, 39, 42, 45) of a mean frontal face in a 256x256 reference: the Procrustes mean
# of dlib landmarks on the GRID speakers, made left-right symmetric and scaled so the 68 points span x 53..203
# (REFERENCE_FACE_BOX). The mouth is then about 52 px wide, so a 96x96 mouth crop also shows nostrils and chin.
REFERENCE_STABLE = np.array([[128.0, 126.0], [82.4, 77.4], [108.4, 77.4], [147.6, 77.4], [173.6, 77.4]], np.float32)
REFERENCE_FACE_BOX = (53.2, 48.6, 202.8, 207.4)
DEFAULT_SIZE = {"mouth": (96, 96), "face": (112, 112), "frame": (96, 96)}
RESIZE_MODES = ("pad", "stretch")  # whole-frame mode: keep the aspect ratio by padding, or stretch to the ROI size


@dataclass(frozen=True)
class RoiConfig:
    """How to find and crop the region of interest; recorded in the manifest so a crop can be redone."""

    roi: str = "mouth"  # "mouth" (landmarks 48-67), "face" (landmark hull with margin), "frame" (whole frame, no detection)
    size: tuple[int, int] | None = None  # (height, width); None: 96x96 mouth/frame, 112x112 face, fixed box: its own size
    resize: str = "pad"  # "frame" mode: "pad" keeps the aspect ratio (black borders), "stretch" fills the ROI size
    perspective_sizes: tuple[tuple[str, int, int], ...] = ()  # (perspective, height, width) overriding ``size``
    grayscale: bool = False
    align: bool = True  # similarity-align the stable points to the 256x256 mean face before cropping
    fixed_box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) for pre-aligned data (LRW: 59, 95, 195, 231)
    face_policy: str = "largest"  # which face when several: "largest" or "central"
    face_margin: float = 0.15  # face ROI: margin on each side, as a fraction of the landmark box side
    detect_every: int = 25  # re-run the detector at least this often (frames); tracking in between
    detect_scale: float = 0.5  # detect on a frame resized by this factor (full size is retried when nothing is found)
    detect_upsample: int = 0
    landmark_every: int = 12  # fit the 68 landmarks every n-th frame; optical flow follows the crop points in between
    smooth_window: int = 12  # temporal landmark smoothing window (frames), Gaussian weights; 0 or 1 turns it off
    max_missing_fraction: float = 0.2  # fail the clip when the face is missing from more frames than this

    def __post_init__(self) -> None:
        """Check values and fill in the default crop size."""
        if self.roi not in DEFAULT_SIZE:
            raise ValueError(f"roi must be one of {sorted(DEFAULT_SIZE)}, got {self.roi!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.roi == "frame" and self.fixed_box is not None:
            raise ValueError("roi 'frame' uses the whole frame: it cannot be combined with a fixed box")
        sizes = tuple((str(name), int(h), int(w)) for name, h, w in self.perspective_sizes)
        if any(min(h, w) < 1 for _, h, w in sizes) or len({name for name, _, _ in sizes}) != len(sizes):
            raise ValueError(f"perspective sizes must be positive and name each perspective once, got {self.perspective_sizes}")
        object.__setattr__(self, "perspective_sizes", sizes)
        if self.face_policy not in POLICIES:
            raise ValueError(f"face_policy must be one of {POLICIES}, got {self.face_policy!r}")
        if self.fixed_box is not None:
            x0, y0, x1, y1 = self.fixed_box
            if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
                raise ValueError(f"fixed_box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {self.fixed_box}")
            object.__setattr__(self, "fixed_box", tuple(int(v) for v in self.fixed_box))
        if self.size is None:
            box = self.fixed_box
            size = (box[3] - box[1], box[2] - box[0]) if box else DEFAULT_SIZE[self.roi]
            object.__setattr__(self, "size", size)
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if min(self.size) < 1 or self.detect_every < 1 or self.landmark_every < 1:
            raise ValueError("size, detect_every and landmark_every must be positive")
        if not 0.0 < self.detect_scale <= 1.0 or not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ValueError("detect_scale must be in (0, 1] and max_missing_fraction in [0, 1]")

    def to_dict(self) -> dict:
        """Plain-JSON form for the manifest."""
        return dataclasses.asdict(self)

    def for_perspective(self, name: str) -> RoiConfig:
        """The settings for one perspective: its own size when ``perspective_sizes`` names it."""
        size = next(((h, w) for view, h, w in self.perspective_sizes if view == name), None)
        return dataclasses.replace(self, size=size, perspective_sizes=()) if size else self


@dataclass
class RoiResult:
    """The cropped clip plus, per frame, everything needed to audit or redo the crop."""

    clip: np.ndarray  # [T, h, w, 3] or [T, h, w] uint8
    crop_matrices: np.ndarray  # [T, 2, 3] float32 affine maps, frame pixels to crop pixels (as cv2.warpAffine takes)
    landmarks: np.ndarray  # [T, 68, 2] float32 smoothed landmarks the crop was computed from (NaN in fixed-box mode)
    raw_landmarks: np.ndarray  # [T, 68, 2] float32 before smoothing: fitted, flow-followed or interpolated (see fitted)
    det_boxes: np.ndarray  # [T, 4] float32 detector box (x0, y0, x1, y1); NaN where the detector did not find it
    detected: np.ndarray  # [T] bool: the detector found the face on this frame
    fitted: np.ndarray  # [T] bool: the 68-point model was fitted on this frame
    found: np.ndarray  # [T] bool: the face was located on this frame (False: landmarks filled in from neighbours)

    @property
    def missing_fraction(self) -> float:
        """Fraction of frames without a located face."""
        return float(1.0 - self.found.mean())

    def crop_centers(self) -> np.ndarray:
        """Where each crop's centre lies in frame pixels, ``[T, 2]``, by inverting the stored matrices."""
        height, width = self.clip.shape[1:3]
        centre = np.array([(width - 1) / 2, (height - 1) / 2], np.float64)
        linear = self.crop_matrices[:, :, :2].astype(np.float64)
        return np.linalg.solve(linear, (centre - self.crop_matrices[:, :, 2])[..., None])[..., 0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-frame audit arrays (everything but the clip), e.g. to save next to the clip."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "clip"}


def smooth_landmarks(points: np.ndarray, window: int) -> np.ndarray:
    """Centred Gaussian moving average over time (sigma = window / 6, weights renormalised at the clip ends)."""
    if window <= 1 or len(points) < 2:
        return points.astype(np.float32, copy=True)
    half = window // 2
    offsets = np.arange(-half, half + 1)
    weights = np.exp(-0.5 * (offsets / (window / 6.0)) ** 2)
    total = np.zeros(points.shape, np.float64)
    norm = np.zeros(len(points), np.float64)
    for offset, weight in zip(offsets, weights):
        lo, hi = max(0, -offset), min(len(points), len(points) - offset)
        total[lo:hi] += weight * points[lo + offset:hi + offset]
        norm[lo:hi] += weight
    return (total / norm.reshape((-1,) + (1,) * (points.ndim - 1))).astype(np.float32)


def similarity_to_reference(points: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms ``[T, 2, 3]`` taking stable points ``[T, 5, 2]`` onto REFERENCE_STABLE."""
    src = points[..., 0].astype(np.float64) + 1j * points[..., 1]
    dst = REFERENCE_STABLE[:, 0].astype(np.float64) + 1j * REFERENCE_STABLE[:, 1]
    src_mean, dst_mean = src.mean(axis=1), dst.mean()
    src_c = src - src_mean[:, None]
    scale_rot = (np.conj(src_c) * (dst - dst_mean)).sum(axis=1) / (np.abs(src_c) ** 2).sum(axis=1)
    shift = dst_mean - scale_rot * src_mean
    return np.stack([
        np.stack([scale_rot.real, -scale_rot.imag, shift.real], axis=1),
        np.stack([scale_rot.imag, scale_rot.real, shift.imag], axis=1),
    ], axis=1)


def _apply(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points ``[T, N, 2]`` through per-frame affine matrices ``[T, 2, 3]``."""
    return np.einsum("tij,tnj->tni", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def _scale_about(matrices: np.ndarray, centres: np.ndarray, scale: np.ndarray | float,
                 size: tuple[int, int]) -> np.ndarray:
    """Compose ``matrices`` with a zoom by ``scale`` that sends ``centres`` (already mapped) to the crop centre."""
    height, width = size
    out = matrices * np.reshape(scale, (-1, 1, 1))
    target = np.array([(width - 1) / 2, (height - 1) / 2])
    out[:, :, 2] += target - centres * np.reshape(scale, (-1, 1))
    return out


def crop_matrices(points: np.ndarray, config: RoiConfig) -> np.ndarray:
    """Per-frame frame-to-crop affine matrices ``[T, 2, 3]`` from (smoothed) landmarks ``[T, 68, 2]``."""
    count = len(points)
    base = similarity_to_reference(points[:, STABLE_IDS]) if config.align else np.tile(np.eye(2, 3), (count, 1, 1))
    mapped = _apply(base, points.astype(np.float64))
    if config.roi == "mouth":
        return _scale_about(base, mapped[:, MOUTH_IDS].mean(axis=1), 1.0, config.size).astype(np.float32)
    if config.align:
        x0, y0, x1, y1 = REFERENCE_FACE_BOX
        lo, hi = np.tile([[x0, y0]], (count, 1)), np.tile([[x1, y1]], (count, 1))
    else:
        lo, hi = mapped.min(axis=1), mapped.max(axis=1)
    side = (hi - lo).max(axis=1) * (1 + 2 * config.face_margin)
    return _scale_about(base, (lo + hi) / 2, min(config.size) / side, config.size).astype(np.float32)


def _warp(frames: np.ndarray, matrices: np.ndarray, config: RoiConfig) -> np.ndarray:
    """Resample each crop straight from its frame (only the output pixels are computed)."""
    height, width = config.size
    crops = [cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
             for frame, matrix in zip(frames, matrices)]
    return _to_output(np.stack(crops), config)


def _to_output(clip: np.ndarray, config: RoiConfig) -> np.ndarray:
    """Convert crops to grayscale when asked (gray input stays gray)."""
    if config.grayscale and clip.ndim == 4:
        return np.stack([cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) for crop in clip])
    return clip


def _check_frames(frames: np.ndarray, source: str) -> np.ndarray:
    """Accept ``[T, H, W, 3]`` RGB or ``[T, H, W]`` gray uint8 with at least one frame."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        raise VideoError(source, "no frames")
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise VideoError(source, f"unsupported frame layout {frames.dtype} {frames.shape} (need uint8 RGB or gray)")
    return frames


def _from_track(frames: np.ndarray, config: RoiConfig, track: FaceTrack, window: int) -> RoiResult:
    """Smooth the tracked landmarks, derive the crop matrices and cut the clip."""
    smooth = smooth_landmarks(track.landmarks, window)
    matrices = crop_matrices(smooth, config)
    return RoiResult(_warp(frames, matrices, config), matrices, smooth, track.landmarks, track.det_boxes,
                     track.detected, track.fitted, track.found)


def _without_landmarks(clip: np.ndarray, matrix: np.ndarray, config: RoiConfig) -> RoiResult:
    """A crop made without detection (fixed box, whole frame): one matrix for every frame, no landmarks to audit."""
    count = len(clip)
    nan_points = np.full((count, 68, 2), np.nan, np.float32)
    return RoiResult(_to_output(np.ascontiguousarray(clip), config), np.tile(matrix, (count, 1, 1)), nan_points,
                     nan_points.copy(), np.full((count, 4), np.nan, np.float32), np.zeros(count, bool),
                     np.zeros(count, bool), np.ones(count, bool))


def _fixed_box(frames: np.ndarray, config: RoiConfig, source: str) -> RoiResult:
    """Cut the same box from every frame (pre-aligned data); resized only when ``size`` differs from the box."""
    x0, y0, x1, y1 = config.fixed_box
    height, width = frames.shape[1:3]
    if x1 > width or y1 > height:
        raise VideoError(source, f"fixed box {config.fixed_box} does not fit in {width}x{height} frames; "
                                 f"for clips that are already cropped use --roi frame")
    clip = frames[:, y0:y1, x0:x1]
    out_h, out_w = config.size
    if (out_h, out_w) != (y1 - y0, x1 - x0):
        clip = np.stack([cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA) for crop in clip])
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    matrix = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]], np.float32)
    return _without_landmarks(clip, matrix, config)


def whole_frame_layout(height: int, width: int, size: tuple[int, int], resize: str) -> tuple[int, int, int, int]:
    """Where a ``height`` x ``width`` frame goes in the ROI: (scaled height, scaled width, top, left) padding offsets."""
    out_h, out_w = size
    if resize == "stretch":
        return out_h, out_w, 0, 0
    scale = min(out_h / height, out_w / width)
    new_h, new_w = min(out_h, max(1, round(height * scale))), min(out_w, max(1, round(width * scale)))
    return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2


def _whole_frame(frames: np.ndarray, config: RoiConfig) -> RoiResult:
    """Resize whole frames to the ROI size (pre-cropped clips: no detection), padding with black to keep the aspect."""
    height, width = frames.shape[1:3]
    new_h, new_w, top, left = whole_frame_layout(height, width, config.size, config.resize)
    shrink = new_h * new_w < height * width
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out_h, out_w = config.size
    clip = np.zeros((len(frames), out_h, out_w) + frames.shape[3:], np.uint8)
    for out, frame in zip(clip, frames):
        out[top:top + new_h, left:left + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    sx, sy = new_w / width, new_h / height
    matrix = np.array([[sx, 0, 0.5 * sx - 0.5 + left], [0, sy, 0.5 * sy - 0.5 + top]], np.float32)
    return _without_landmarks(clip, matrix, config)


def crop_clip(frames: np.ndarray, config: RoiConfig = RoiConfig(), source: str = "<frames>") -> RoiResult:
    """Crop the ROI from ``[T, H, W, 3]`` (or gray) frames: track the face, smooth, align, warp (or cut a fixed box,
    or resize whole pre-cropped frames)."""
    frames = _check_frames(frames, source)
    if config.roi == "frame":
        return _whole_frame(frames, config)
    if config.fixed_box is not None:
        return _fixed_box(frames, config, source)
    track = track_face(frames, config.landmark_every, config.detect_every, config.detect_scale, config.detect_upsample,
                       config.face_policy, config.max_missing_fraction, source)
    log.debug("%s: %d frames, %d detections, %d landmark fits", source, len(frames), track.detected.sum(),
              track.fitted.sum())
    return _from_track(frames, config, track, config.smooth_window)


def crop_video(path: Path | str, config: RoiConfig = RoiConfig()) -> RoiResult:
    """Decode a video and crop its ROI clip; errors name the file."""
    return crop_clip(read_frames(path), config, source=str(path))


def crop_clip_naive(frames: np.ndarray, config: RoiConfig = RoiConfig(), source: str = "<frames>") -> RoiResult:
    """The slow reference: full-size detection and landmarks on every frame, no tracking and no smoothing."""
    frames = _check_frames(frames, source)
    track = fit_every_frame(frames, config.detect_upsample, config.face_policy, config.max_missing_fraction, source)
    return _from_track(frames, config, track, window=0)
