"""Mouth and face ROI cropping: tracked, smoothed landmarks, similarity alignment, per-frame crop matrices."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.execution.settings import check_options, option
from pipeline.media.faces import (
    DETECT_EVERY,
    DETECT_SCALE,
    LANDMARK_EVERY,
    MOUTH_IDS,
    POLICIES,
    STABLE_IDS,
    FaceTracker,
    NoFaceError,
    fit_every_frame,
)
from pipeline.media.video import VideoError, iter_frames, probe, read_ahead

__all__ = [
    "NoFaceError",
    "RoiConfig",
    "RoiResult",
    "crop_clip",
    "crop_clip_naive",
    "crop_frames",
    "crop_matrices",
    "crop_video",
    "similarity_to_reference",
    "smooth_landmarks",
]

FrameSource = Callable[[], Iterable[np.ndarray]]  # gives a clip's frames from the first, each [H, W, 3] or [H, W] uint8

log = get_logger(__name__)
DECODE_AHEAD = 4  # frames decoded ahead on a second thread while a clip is tracked (``crop_frames``)

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

    # "mouth" (landmarks 48-67), "face" (landmark hull with margin), "frame" (whole frame, no detection); None: not
    # chosen yet (``prepare`` takes the dataset recipe's choice, else mouth)
    roi: str | None = option("mouth", "region of interest", choices=tuple(DEFAULT_SIZE))
    size: tuple[int, int] | None = (
        None  # (height, width); None: 96x96 mouth/frame, 112x112 face, fixed box: its own size
    )
    resize: str = option(
        "pad",
        "frame mode: pad keeps the aspect ratio (black borders), stretch fills the ROI size",
        choices=RESIZE_MODES,
    )
    perspective_sizes: tuple[tuple[str, int, int], ...] = ()  # (perspective, height, width) overriding ``size``
    grayscale: bool = False
    align: bool = True  # similarity-align the stable points to the 256x256 mean face before cropping
    fixed_box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) for pre-aligned data (LRW: 59, 95, 195, 231)
    face_policy: str = option("largest", "which face when several", choices=POLICIES)
    face_margin: float = 0.15  # face ROI: margin on each side, as a fraction of the landmark box side
    detect_every: int = option(DETECT_EVERY, "re-run the detector at least this often (frames)", least=1)
    # detect on a frame resized by this factor (full size is retried when nothing is found)
    detect_scale: float = option(DETECT_SCALE, "detect on frames resized by this factor", above=0.0, most=1.0)
    detect_upsample: int = 0
    # fit the 68 landmarks every n-th frame; optical flow follows the crop points in between
    landmark_every: int = option(LANDMARK_EVERY, "fit the landmarks at least every N frames", least=1)
    # temporal landmark smoothing window (frames), Gaussian weights; 0 or 1 turns it off
    smooth_window: int = option(12, "landmark smoothing window (frames)", least=0, flag="--smooth")
    # fail the clip when the face is missing from more frames than this
    max_missing_fraction: float = option(
        0.2, "share of frames the face may be missing from", least=0.0, most=1.0, flag="--max-missing"
    )

    def __post_init__(self) -> None:
        """Check values and fill in the default crop size (once the ROI mode is chosen)."""
        check_options(self)
        if self.roi == "frame" and self.fixed_box is not None:
            raise ConfigError("roi 'frame' uses the whole frame: it cannot be combined with a fixed box")
        sizes = tuple((str(name), int(h), int(w)) for name, h, w in self.perspective_sizes)
        if any(min(h, w) < 1 for _, h, w in sizes) or len({name for name, _, _ in sizes}) != len(sizes):
            raise ConfigError(
                f"perspective sizes must be positive and name each perspective once, got {self.perspective_sizes}"
            )
        object.__setattr__(self, "perspective_sizes", sizes)
        if self.fixed_box is not None:
            x0, y0, x1, y1 = self.fixed_box
            if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
                raise ConfigError(f"fixed_box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got {self.fixed_box}")
            object.__setattr__(self, "fixed_box", tuple(int(v) for v in self.fixed_box))
        if self.size is None and self.roi is None:
            return
        if self.size is None:
            box = self.fixed_box
            size = (box[3] - box[1], box[2] - box[0]) if box else DEFAULT_SIZE[self.roi]
            object.__setattr__(self, "size", size)
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"size must be (height, width), both positive, got {self.size}")

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
    return _smooth(points, window, 0, len(points))


def _smooth(points: np.ndarray, window: int, start: int, stop: int) -> np.ndarray:
    """``smooth_landmarks`` of frames ``start..stop-1`` only; ``points`` must reach half a window past ``stop``.

    Offsets that fall outside ``points`` are left out, so the window shrinks to fit clips shorter than it.
    """
    if window <= 1:
        return points[start:stop].astype(np.float32, copy=True)
    half = window // 2
    offsets = np.arange(-half, half + 1)
    weights = np.exp(-0.5 * (offsets / (window / 6.0)) ** 2)
    total = np.zeros((stop - start,) + points.shape[1:], np.float64)
    norm = np.zeros(stop - start, np.float64)
    for offset, weight in zip(offsets, weights):
        lo, hi = max(start, -offset), min(stop, len(points) - offset)
        if lo < hi:
            total[lo - start : hi - start] += weight * points[lo + offset : hi + offset]
            norm[lo - start : hi - start] += weight
    return (total / norm.reshape((-1,) + (1,) * (points.ndim - 1))).astype(np.float32)


def similarity_to_reference(points: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms ``[T, 2, 3]`` taking stable points ``[T, 5, 2]`` onto REFERENCE_STABLE."""
    src = points[..., 0].astype(np.float64) + 1j * points[..., 1]
    dst = REFERENCE_STABLE[:, 0].astype(np.float64) + 1j * REFERENCE_STABLE[:, 1]
    src_mean, dst_mean = src.mean(axis=1), dst.mean()
    src_c = src - src_mean[:, None]
    scale_rot = (np.conj(src_c) * (dst - dst_mean)).sum(axis=1) / (np.abs(src_c) ** 2).sum(axis=1)
    shift = dst_mean - scale_rot * src_mean
    return np.stack(
        [
            np.stack([scale_rot.real, -scale_rot.imag, shift.real], axis=1),
            np.stack([scale_rot.imag, scale_rot.real, shift.imag], axis=1),
        ],
        axis=1,
    )


def _apply(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points ``[T, N, 2]`` through per-frame affine matrices ``[T, 2, 3]``."""
    return np.einsum("tij,tnj->tni", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def _scale_about(
    matrices: np.ndarray, centres: np.ndarray, scale: np.ndarray | float, size: tuple[int, int]
) -> np.ndarray:
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


def _warp(frame: np.ndarray, matrix: np.ndarray, config: RoiConfig) -> np.ndarray:
    """Resample one crop straight from its frame (only the output pixels are computed)."""
    height, width = config.size
    crop = cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return _to_output(crop, config)


def _to_output(crop: np.ndarray, config: RoiConfig) -> np.ndarray:
    """Convert a crop to grayscale when asked (gray input stays gray)."""
    if config.grayscale and crop.ndim == 3:
        return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return crop


def _layout_error(dtype: np.dtype, shape: tuple[int, ...], per_frame: bool) -> str | None:
    """Why frames of this dtype and shape cannot be cropped (uint8 RGB or gray is needed), or None."""
    ndim = len(shape) + (1 if per_frame else 0)
    if dtype != np.uint8 or ndim not in (3, 4) or (ndim == 4 and shape[-1] != 3):
        return f"unsupported frame layout {dtype} {shape} (need uint8 RGB or gray)"
    return None


def _check_frames(frames: np.ndarray, source: str) -> np.ndarray:
    """Accept ``[T, H, W, 3]`` RGB or ``[T, H, W]`` gray uint8 with at least one frame."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        raise VideoError(source, "no frames", "zero-frames")
    error = _layout_error(frames.dtype, frames.shape, per_frame=False)
    if error:
        raise VideoError(source, error)
    return frames


def _checked(frames: Iterable[np.ndarray], source: str) -> Iterator[np.ndarray]:
    """Frames one by one, each checked like ``_check_frames`` and against the first one's size."""
    shape = None
    for frame in frames:
        error = _layout_error(frame.dtype, frame.shape, per_frame=True)
        if error is None and shape is not None and frame.shape != shape:
            error = f"frame size {frame.shape} differs from the first frame's {shape}"
        if error:
            raise VideoError(source, error)
        shape = frame.shape
        yield frame
    if shape is None:
        raise VideoError(source, "no frames", "zero-frames")


class _TrackedCrop:
    """Track -> smooth -> warp over a stream of frames, each frame kept only until its crop can be cut.

    A frame's crop needs the landmarks up to half a smoothing window later, and a frame's landmarks are final at most
    ``landmark_every`` frames later (the next fit, or a gap held: see ``faces._Record``), so at most
    ``landmark_every + window // 2 + 2`` frames are held, the arriving one included. The one exception, a clip that
    starts without a face: beyond that many frames the oldest are let go and decoded once more (``open_frames``
    again) when the face is found.
    """

    def __init__(
        self, open_frames: FrameSource, config: RoiConfig, source: str, frame_count: Callable[[], int | None] | None
    ) -> None:
        self.open_frames, self.config, self.source = open_frames, config, source
        self.tracker = FaceTracker(
            config.landmark_every,
            config.detect_every,
            config.detect_scale,
            config.detect_upsample,
            config.face_policy,
            config.max_missing_fraction,
            source,
            frame_count,
        )
        self.half = config.smooth_window // 2 if config.smooth_window > 1 else 0
        self.capacity = config.landmark_every + self.half + 1
        # Frames first, first + 1, ... not yet cropped, copied into slots that are reused: holding the decoder's own
        # arrays while long-lived crops are allocated between them fragments the heap (12 s of 1080p: 0.93 GB peak).
        self.held: deque[np.ndarray] = deque()
        self.free: list[np.ndarray] = []
        self.first = 0  # index of held[0]; frames before it that are not cropped yet were let go
        self.again: Iterator[np.ndarray] | None = None  # the frames decoded once more, for those let go
        self.crops: list[np.ndarray] = []
        self.matrices: list[np.ndarray] = []
        self.smoothed: list[np.ndarray] = []
        self.peak_held = 0  # most frames held at once (tests check the bound)

    def run(self, frames: Iterable[np.ndarray]) -> RoiResult:
        """Crop every frame of the stream."""
        for frame in frames:
            slot = self.free.pop() if self.free else np.empty_like(frame)
            np.copyto(slot, frame)
            del frame  # the decoder's array goes back to the allocator at once, as when only decoding
            self.tracker.push(slot)
            self.held.append(slot)
            self.peak_held = max(self.peak_held, len(self.held))
            self._cut(self.tracker.ready - self.half)
            if len(self.held) > self.capacity and self.tracker.ready == 0:
                self.free.append(self.held.popleft())
                self.first += 1
        track = self.tracker.finish()
        self._cut(len(track.landmarks))
        smooth = np.stack(self.smoothed)
        log.debug(
            "%s: %d frames, %d detections, %d landmark fits, at most %d frames held",
            self.source,
            len(smooth),
            track.detected.sum(),
            track.fitted.sum(),
            self.peak_held,
        )
        return RoiResult(
            np.stack(self.crops),
            np.stack(self.matrices),
            smooth,
            track.landmarks,
            track.det_boxes,
            track.detected,
            track.fitted,
            track.found,
        )

    def _cut(self, stop: int) -> None:
        """Smooth, align and crop every frame before ``stop`` not yet cropped."""
        start = len(self.crops)
        if stop <= start:
            return
        smooth = _smooth(self.tracker.points, self.config.smooth_window, start, stop)
        matrices = crop_matrices(smooth, self.config)
        for index, (points, matrix) in enumerate(zip(smooth, matrices), start):
            self.crops.append(_warp(self._frame(index), matrix, self.config))
            self.matrices.append(matrix)
            self.smoothed.append(points)

    def _frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (the oldest not cropped yet), from the held ones or decoded once more."""
        if index >= self.first:
            self.first += 1
            slot = self.held.popleft()
            self.free.append(slot)  # reused only after this frame's crop is cut: frames are taken one at a time
            return slot
        if self.again is None:
            self.again = iter(_checked(self.open_frames(), self.source))
        frame = next(self.again, None)
        if frame is None:
            raise VideoError(self.source, f"only {index} frames when read a second time", "truncated")
        if index == self.first - 1:
            self.again = None
        return frame


def _without_landmarks(crops: list[np.ndarray], matrix: np.ndarray) -> RoiResult:
    """A crop made without detection (fixed box, whole frame): one matrix for every frame, no landmarks to audit."""
    count = len(crops)
    nan_points = np.full((count, 68, 2), np.nan, np.float32)
    return RoiResult(
        np.stack(crops),
        np.tile(matrix, (count, 1, 1)),
        nan_points,
        nan_points.copy(),
        np.full((count, 4), np.nan, np.float32),
        np.zeros(count, bool),
        np.zeros(count, bool),
        np.ones(count, bool),
    )


def _crop_fixed_box(frames: Iterable[np.ndarray], config: RoiConfig, source: str) -> RoiResult:
    """Cut the same box from every frame (pre-aligned data); resized only when ``size`` differs from the box."""
    x0, y0, x1, y1 = config.fixed_box
    out_h, out_w = config.size
    crops = []
    for frame in frames:
        height, width = frame.shape[:2]
        if x1 > width or y1 > height:
            raise VideoError(
                source,
                f"fixed box {config.fixed_box} does not fit in {width}x{height} frames; "
                f"for clips that are already cropped use --roi frame",
            )
        crop = frame[y0:y1, x0:x1]
        if (out_h, out_w) != (y1 - y0, x1 - x0):
            crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
        crops.append(_to_output(crop.copy(), config))  # a copy: a view would keep the whole frame alive
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    return _without_landmarks(
        crops, np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]], np.float32)
    )


def whole_frame_layout(height: int, width: int, size: tuple[int, int], resize: str) -> tuple[int, int, int, int]:
    """Where a ``height`` x ``width`` frame goes in the ROI.

    Returns (scaled height, scaled width, top, left) padding offsets.
    """
    out_h, out_w = size
    if resize == "stretch":
        return out_h, out_w, 0, 0
    scale = min(out_h / height, out_w / width)
    new_h, new_w = min(out_h, max(1, round(height * scale))), min(out_w, max(1, round(width * scale)))
    return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2


def _crop_whole_frame(frames: Iterable[np.ndarray], config: RoiConfig) -> RoiResult:
    """Resize whole frames to the ROI size (pre-cropped clips: no detection), padding with black to keep the aspect."""
    out_h, out_w = config.size
    crops = []
    for frame in frames:
        if not crops:
            height, width = frame.shape[:2]
            new_h, new_w, top, left = whole_frame_layout(height, width, config.size, config.resize)
            interpolation = cv2.INTER_AREA if new_h * new_w < height * width else cv2.INTER_LINEAR
        out = np.zeros((out_h, out_w) + frame.shape[2:], np.uint8)
        out[top : top + new_h, left : left + new_w] = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
        crops.append(_to_output(out, config))
    sx, sy = new_w / width, new_h / height
    return _without_landmarks(
        crops, np.array([[sx, 0, 0.5 * sx - 0.5 + left], [0, sy, 0.5 * sy - 0.5 + top]], np.float32)
    )


def crop_frames(
    open_frames: FrameSource,
    config: RoiConfig = RoiConfig(),
    source: str = "<frames>",
    frame_count: Callable[[], int | None] | None = None,
    decode_ahead: int = DECODE_AHEAD,
) -> RoiResult:
    """Crop the ROI from a stream of frames, holding only a bounded window of them; the one entry for every mode.

    ``open_frames()`` gives the frames from the first; it is called a second time only for a clip that starts
    without a face for long (see ``_TrackedCrop``). ``frame_count()``, if given, tells the clip's length so that a
    clip without a face can stop early. When tracking, up to ``decode_ahead`` next frames are decoded on a second
    thread meanwhile (``video.read_ahead``; 0: in this thread). The crops are the same either way; the thread pays
    off while a core is idle and costs a few percent when every core is busy (e.g. as many workers as cores).
    """
    frames = _checked(open_frames(), source)
    if config.roi == "frame":
        return _crop_whole_frame(frames, config)
    if config.fixed_box is not None:
        return _crop_fixed_box(frames, config, source)
    tracked = _TrackedCrop(open_frames, config, source, frame_count)
    if decode_ahead < 1:
        return tracked.run(frames)
    with contextlib.closing(read_ahead(frames, decode_ahead)) as decoded:
        return tracked.run(decoded)


def crop_clip(frames: np.ndarray, config: RoiConfig = RoiConfig(), source: str = "<frames>") -> RoiResult:
    """Crop the ROI from ``[T, H, W, 3]`` (or gray) frames: track the face, smooth, align, warp (or cut a fixed box,
    or resize whole pre-cropped frames)."""
    frames = _check_frames(frames, source)
    return crop_frames(lambda: iter(frames), config, source, frame_count=lambda: len(frames))


def crop_video(path: Path | str, config: RoiConfig = RoiConfig(), decode_ahead: int = DECODE_AHEAD) -> RoiResult:
    """Decode a video frame by frame and crop its ROI clip; errors name the file.

    For ``decode_ahead`` see ``crop_frames``.
    """
    return crop_frames(
        lambda: iter_frames(path),
        config,
        str(path),
        frame_count=lambda: probe(path)["frames"],
        decode_ahead=decode_ahead,
    )


def crop_clip_naive(frames: np.ndarray, config: RoiConfig = RoiConfig(), source: str = "<frames>") -> RoiResult:
    """The slow reference: full-size detection and landmarks on every frame, no tracking and no smoothing."""
    frames = _check_frames(frames, source)
    track = fit_every_frame(frames, config.detect_upsample, config.face_policy, config.max_missing_fraction, source)
    matrices = crop_matrices(track.landmarks, config)
    clip = np.stack([_warp(frame, matrix, config) for frame, matrix in zip(frames, matrices)])
    return RoiResult(
        clip,
        matrices,
        track.landmarks.copy(),
        track.landmarks,
        track.det_boxes,
        track.detected,
        track.fitted,
        track.found,
    )
