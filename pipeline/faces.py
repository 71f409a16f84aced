"""Faces with dlib: detection, 68-point landmarks (models from face-recognition-models), following a face in a clip."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from pipeline.logs import get_logger
from pipeline.video import VideoError

log = get_logger(__name__)

MODELS_PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
POLICIES = ("largest", "central")


def model_path(filename: str) -> Path:
    """Path of a model file in face-recognition-models, found without importing it (its import needs pkg_resources)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {MODELS_PACKAGE!r} package is not installed: pip install face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall face-recognition-models")
    return path


@functools.lru_cache(maxsize=None)
def frontal_detector() -> dlib.fhog_object_detector:
    """dlib's HOG frontal face detector, built once per process."""
    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def shape_predictor() -> dlib.shape_predictor:
    """dlib's 68-point landmark predictor, loaded once per process."""
    path = model_path(SHAPE_PREDICTOR_68)
    log.debug("loading %s", path)
    return dlib.shape_predictor(str(path))


def to_gray(image: np.ndarray) -> np.ndarray:
    """A contiguous uint8 grayscale copy of an RGB or gray image (what dlib's HOG detector reads)."""
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image)


def detect_faces(image: np.ndarray, upsample: int = 0, scale: float = 1.0) -> np.ndarray:
    """Face boxes ``[N, 4]`` (x0, y0, x1, y1) in frame pixels, best first, found on a ``scale``-resized frame."""
    gray = to_gray(image)
    if scale != 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rects, scores, _ = frontal_detector().run(gray, upsample, 0.0)
    if not rects:
        return np.zeros((0, 4), np.float32)
    order = np.argsort(scores)[::-1]
    boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)[order]
    return boxes / np.float32(scale)


def choose_face(boxes: np.ndarray, frame_shape: tuple[int, ...], policy: str = "largest") -> np.ndarray | None:
    """Pick one of several faces: the largest, or the one nearest the frame centre; None if there are none."""
    if policy not in POLICIES:
        raise ValueError(f"face policy must be one of {POLICIES}, got {policy!r}")
    if len(boxes) == 0:
        return None
    if policy == "largest":
        key = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(key))]
    centre = np.array([frame_shape[1], frame_shape[0]], np.float32) / 2
    distance = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)
    return boxes[int(np.argmin(distance))]


def landmarks(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 68 dlib landmarks ``[68, 2]`` float32 (x, y) fitted in ``box`` (x0, y0, x1, y1) of an RGB or gray frame."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    shape = shape_predictor()(frame, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    return np.fromiter((c for p in shape.parts() for c in (p.x, p.y)), np.float32, 136).reshape(68, 2)


# ---------------------------------------------------------------------------------------------------------------------
# Following one face through a clip
# ---------------------------------------------------------------------------------------------------------------------

STABLE_IDS = [33, 36, 39, 42, 45]  # nose base and eye corners: they move with the head, not with speech
MOUTH_IDS = slice(48, 68)
FLOW_IDS = STABLE_IDS + list(range(48, 68))  # the points a crop depends on, followed by optical flow between fits
# Health checks of a tracked fit, as fractions of the face box side: landmarks may stray this far outside the box,
# and the mouth centre may differ this much from where the flow expected it, before the face is re-detected.
BOX_SLACK = 0.25
MAX_OUTSIDE_FRACTION = 0.1
MAX_MOUTH_JUMP = 0.15
MAX_SCALE_CHANGE = 1.25
MIN_MATCH_IOU = 0.3
# Before each tracked fit a thumbnail of the expected box must still correlate with the one at the previous fit;
# GRID speakers score >= 0.96 over 8 frames, a face displaced by 10 px about 0.6-0.9.
THUMBNAIL = 24
MIN_THUMBNAIL_NCC = 0.9
# Pyramidal Lucas-Kanade at half resolution on the followed points' box grown by FLOW_MARGIN (of the face box side);
# the flow stops, and a fit is made, when a point is lost or the median patch error exceeds MAX_FLOW_ERROR grey levels
# (GRID frame to frame: <= 11; a cut to another place: 17-20).
FLOW_SCALE = 0.5
FLOW_WINDOW = (9, 9)
FLOW_LEVELS = 1
FLOW_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)
FLOW_MARGIN = 0.25
MAX_FLOW_ERROR = 16.0


class NoFaceError(VideoError):
    """Too many frames of a clip have no detectable face."""

    def __init__(self, path: Path | str, fraction: float, limit: float) -> None:
        self.fraction = fraction
        super().__init__(path, f"no face found in {fraction:.0%} of frames (at most {limit:.0%} allowed)")


@dataclass
class FaceTrack:
    """One face followed through a clip: per-frame landmarks and how each frame's landmarks were obtained."""

    landmarks: np.ndarray  # [T, 68, 2] float32; on frames without a face, interpolated from the nearest frames with one
    det_boxes: np.ndarray  # [T, 4] float32 detector box (x0, y0, x1, y1); NaN where the detector did not find it
    detected: np.ndarray  # [T] bool: the detector found the face on this frame
    fitted: np.ndarray  # [T] bool: the 68-point model was fitted on this frame (else: flow-followed or interpolated)
    found: np.ndarray  # [T] bool: the face was located on this frame


@dataclass
class _Pose:
    """Landmarks as the tracker uses them: the points, the stable points' centroid and spread, the mouth centre."""

    points: np.ndarray
    centre: np.ndarray
    spread: float
    mouth: np.ndarray

    @classmethod
    def of(cls, points: np.ndarray) -> _Pose:
        """Summarise ``[68, 2]`` landmarks."""
        stable = points[STABLE_IDS]
        centre = stable.mean(axis=0)
        spread = float(np.sqrt(((stable - centre) ** 2).sum() / len(stable)))
        return cls(points, centre, spread, points[MOUTH_IDS].mean(axis=0))


def _thumbnail(frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """A tiny zero-mean, unit-norm image of the box (linear resizing: microseconds); None if it is off the frame."""
    height, width = frame.shape[:2]
    x0, y0 = max(int(round(float(box[0]))), 0), max(int(round(float(box[1]))), 0)
    x1, y1 = min(int(round(float(box[2]))), width), min(int(round(float(box[3]))), height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    thumb = cv2.resize(frame[y0:y1, x0:x1], (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_LINEAR)
    thumb = thumb.astype(np.float32).ravel()
    thumb -= thumb.mean()
    return thumb / max(float(np.linalg.norm(thumb)), 1e-6)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` [N, 4] with one box ``b`` [4]."""
    inter = np.clip(np.minimum(a[:, 2:], b[2:]) - np.maximum(a[:, :2], b[:2]), 0, None).prod(axis=1)
    return inter / ((a[:, 2:] - a[:, :2]).prod(axis=1) + (b[2:] - b[:2]).prod() - inter)


def _interpolate(points: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill frames without landmarks linearly in time from the nearest frames with them (held at the clip ends)."""
    index = np.flatnonzero(known)
    position = np.interp(np.arange(len(points)), index, np.arange(len(index), dtype=np.float64))
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, len(index) - 1)
    weight = (position - lo)[:, None, None]
    return ((1 - weight) * points[index[lo]] + weight * points[index[hi]]).astype(np.float32)


def _finish(points: np.ndarray, det_boxes: np.ndarray, detected: np.ndarray, fitted: np.ndarray, missing: np.ndarray,
            limit: float, source: str) -> FaceTrack:
    """Fail on too many frames without a face, otherwise fill those frames in from their neighbours."""
    if missing.mean() > limit or missing.all():
        raise NoFaceError(source, float(missing.mean()), limit)
    return FaceTrack(_interpolate(points, ~missing), det_boxes, detected, fitted, ~missing)


class _Tracker:
    """Follows the face: sparse detection, a 68-point fit every few frames, optical flow of crop points between."""

    def __init__(self, frames: np.ndarray, landmark_every: int, detect_every: int, detect_scale: float, upsample: int,
                 policy: str, max_missing_fraction: float, source: str) -> None:
        count = len(frames)
        self.frames, self.source = frames, source
        self.landmark_every, self.detect_every, self.detect_scale = landmark_every, detect_every, detect_scale
        self.upsample, self.policy, self.max_missing_fraction = upsample, policy, max_missing_fraction
        self.points = np.full((count, 68, 2), np.nan, np.float32)
        self.det_boxes = np.full((count, 4), np.nan, np.float32)
        self.detected = np.zeros(count, bool)
        self.fitted = np.zeros(count, bool)
        self.missing = np.zeros(count, bool)
        self.anchor: tuple[np.ndarray, _Pose] | None = None  # the last detector box and the fit made inside it
        self.last: _Pose | None = None  # the latest landmarks: a fit, or where the flow expects the face
        self.next_box: np.ndarray | None = None  # the box the next tracked fit uses
        self.thumbnail: np.ndarray | None = None  # the next box's thumbnail on the frame of the last fit
        self.last_detect = -detect_every

    def run(self) -> FaceTrack:
        """Fit every ``landmark_every`` frames (every frame while the face is lost) and follow the flow in between."""
        count = len(self.frames)
        index, previous = 0, None
        while index < count:
            followed = None
            if previous is not None and index - previous > 1:
                followed = self._follow(previous, index)
                index = min(index, previous + len(followed))
                self._expect(followed[-1])
            fitted = self._fit(index)
            if followed is not None:
                self._fill(previous, followed, index, fitted)
            if fitted:
                previous = index
                index = min(index + self.landmark_every, count - 1) if index < count - 1 else count
            else:
                self._fail_early()
                previous, index = None, index + 1
        return _finish(self.points, self.det_boxes, self.detected, self.fitted, self.missing,
                       self.max_missing_fraction, self.source)

    def _fail_early(self) -> None:
        """Give up as soon as the clip has more missing frames than allowed."""
        if self.missing.sum() > self.max_missing_fraction * len(self.frames):
            raise NoFaceError(self.source, float(self.missing.sum()) / len(self.frames), self.max_missing_fraction)

    def _fit(self, index: int) -> bool:
        """Fit landmarks on one frame: tracked, after a detection when due, or detected if the tracked fit fails."""
        tracking = self.last is not None
        tried = not tracking or index - self.last_detect >= self.detect_every
        if tried and self._fit_detected(index):
            return True
        if tracking and (self._fit_tracked(index) or (not tried and self._fit_detected(index))):
            return True
        return self._lose(index)

    def _fit_tracked(self, index: int) -> bool:
        """Fit inside the expected box, after checking the face is still there, and check the result."""
        frame, box = self.frames[index], self.next_box
        thumbnail = _thumbnail(frame, box)
        if thumbnail is None or self.thumbnail is None or float(thumbnail @ self.thumbnail) < MIN_THUMBNAIL_NCC:
            log.debug("%s: the face left the tracked box at frame %d", self.source, index)
            return False
        pose = _Pose.of(landmarks(frame, box))
        if self._degraded(pose, box):
            log.debug("%s: landmark fit degraded at frame %d", self.source, index)
            return False
        return self._accept(index, pose)

    def _fit_detected(self, index: int) -> bool:
        """Detect (downscaled first, then full size), fit landmarks in the chosen box and make it the new anchor."""
        frame = self.frames[index]
        gray = to_gray(frame)
        boxes = detect_faces(gray, self.upsample, self.detect_scale)
        if len(boxes) == 0 and self.detect_scale < 1.0:
            boxes = detect_faces(gray, self.upsample, 1.0)
        self.last_detect = index
        box = self._choose(boxes, gray.shape)
        if box is None:
            return False
        self.det_boxes[index], self.detected[index] = box, True
        pose = _Pose.of(landmarks(frame, box))
        self.anchor = (box, pose)
        return self._accept(index, pose)

    def _choose(self, boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
        """While tracking keep the same person (best overlap with the expected box); otherwise apply the face policy."""
        if len(boxes) and self.next_box is not None:
            overlap = _iou(boxes, self.next_box)
            if overlap.max() >= MIN_MATCH_IOU:
                return boxes[int(np.argmax(overlap))]
        return choose_face(boxes, shape, self.policy)

    def _accept(self, index: int, pose: _Pose) -> bool:
        """Record a fit and prepare the box (and its thumbnail) the next tracked fit starts from."""
        self.points[index], self.fitted[index], self.last = pose.points, True, pose
        self.next_box = self._box_from(pose)
        self.thumbnail = _thumbnail(self.frames[index], self.next_box)
        return True

    def _lose(self, index: int) -> bool:
        """Mark the frame as missing and forget the face, so the next frames search for it again."""
        self.missing[index] = True
        self.anchor = self.last = self.next_box = self.thumbnail = None
        return False

    def _box_from(self, pose: _Pose) -> np.ndarray:
        """The detection box moved and scaled with the stable points: where the detector would put it now."""
        box, anchor = self.anchor
        ratio = pose.spread / anchor.spread
        centre = pose.centre + ((box[:2] + box[2:]) / 2 - anchor.centre) * ratio
        half = (box[2:] - box[:2]) / 2 * ratio
        return np.concatenate([centre - half, centre + half])

    def _degraded(self, pose: _Pose, box: np.ndarray) -> bool:
        """Whether a tracked fit looks wrong: points outside the box, the mouth off, or the face changing size."""
        side = float(box[2] - box[0])
        points = pose.points
        outside = ((points < box[:2] - BOX_SLACK * side) | (points > box[2:] + BOX_SLACK * side)).any(axis=1).mean()
        jump = float(np.hypot(*(pose.mouth - self.last.mouth)))
        ratio = pose.spread / self.last.spread
        return bool(outside > MAX_OUTSIDE_FRACTION or jump > MAX_MOUTH_JUMP * side
                    or not 1 / MAX_SCALE_CHANGE < ratio < MAX_SCALE_CHANGE)

    def _follow(self, start: int, end: int) -> np.ndarray:
        """Lucas-Kanade flow of the crop points from the fit at ``start`` towards ``end``; stops where it fails."""
        height, width = self.frames.shape[1:3]
        start_points = self.points[start][FLOW_IDS]
        margin = FLOW_MARGIN * float(self.next_box[2] - self.next_box[0])
        (x0, y0), (x1, y1) = start_points.min(axis=0) - margin, start_points.max(axis=0) + margin
        region = (max(int(x0), 0), max(int(y0), 0), min(int(x1) + 1, width), min(int(y1) + 1, height))
        origin = np.array(region[:2], np.float32)
        previous = self._flow_image(start, region)
        limit = np.array(previous.shape[::-1], np.float32) - 1
        tracked = [((start_points - origin) * FLOW_SCALE).reshape(-1, 1, 2)]
        for index in range(start + 1, end + 1):
            current = self._flow_image(index, region)
            moved, status, error = cv2.calcOpticalFlowPyrLK(previous, current, tracked[-1], None, winSize=FLOW_WINDOW,
                                                            maxLevel=FLOW_LEVELS, criteria=FLOW_CRITERIA)
            lost = not status.all() or float(np.median(error)) > MAX_FLOW_ERROR
            if lost or (moved < 0).any() or (moved > limit).any():
                log.debug("%s: optical flow lost the face at frame %d", self.source, index)
                break
            tracked.append(moved)
            previous = current
        return np.stack(tracked)[:, :, 0, :] / FLOW_SCALE + origin

    def _flow_image(self, index: int, region: tuple[int, int, int, int]) -> np.ndarray:
        """The region of a frame in gray at FLOW_SCALE, what the optical flow runs on."""
        x0, y0, x1, y1 = region
        gray = to_gray(self.frames[index][y0:y1, x0:x1])
        return cv2.resize(gray, None, fx=FLOW_SCALE, fy=FLOW_SCALE, interpolation=cv2.INTER_AREA)

    def _expect(self, points: np.ndarray) -> None:
        """Where the flow says the face is now: the pose and the box for the next fit."""
        full = self.last.points.copy()
        full[FLOW_IDS] = points
        self.last = _Pose.of(full)
        self.next_box = self._box_from(self.last)

    def _fill(self, start: int, followed: np.ndarray, end: int, fitted: bool) -> None:
        """Landmarks for the frames between the fit at ``start`` and frame ``end`` (fitted, or where the face was lost).

        The followed crop points are drift-corrected to meet the fit at ``end``; the other points are interpolated
        between the two fits and carried along with the followed eyes and nose.
        """
        reached = start + len(followed) - 1
        frames = np.arange(start + 1, min(reached, end - 1) + 1)
        if len(frames) == 0:
            return
        tracked = followed[frames - start]
        if not fitted:
            base = np.repeat(self.points[start][None], len(frames), axis=0)
        else:
            weight = ((frames - start) / (end - start))[:, None, None]
            base = (1 - weight) * self.points[start] + weight * self.points[end]
            if reached == end:
                drift = self.points[end][FLOW_IDS] - followed[-1]
                if float(np.abs(drift).max()) > MAX_MOUTH_JUMP * float(self.next_box[2] - self.next_box[0]):
                    log.debug("%s: flow and fit disagree at frame %d, interpolating instead", self.source, end)
                    self.points[frames] = base
                    return
                tracked = tracked + weight * drift
        shift = tracked[:, :len(STABLE_IDS)].mean(axis=1) - base[:, STABLE_IDS].mean(axis=1)
        filled = base + shift[:, None, :]
        filled[:, FLOW_IDS] = tracked
        self.points[frames] = filled


def track_face(frames: np.ndarray, landmark_every: int = 12, detect_every: int = 25, detect_scale: float = 0.5,
               upsample: int = 0, policy: str = "largest", max_missing_fraction: float = 0.2,
               source: str = "<frames>") -> FaceTrack:
    """Follow the face through ``[T, H, W, 3]`` (or gray) frames cheaply; NoFaceError if it is missing too often."""
    return _Tracker(frames, landmark_every, detect_every, detect_scale, upsample, policy, max_missing_fraction,
                    source).run()


def fit_every_frame(frames: np.ndarray, upsample: int = 0, policy: str = "largest", max_missing_fraction: float = 0.2,
                    source: str = "<frames>") -> FaceTrack:
    """The slow reference: full-size detection and the 68-point fit on every frame, nothing carried over."""
    count = len(frames)
    points = np.full((count, 68, 2), np.nan, np.float32)
    det_boxes = np.full((count, 4), np.nan, np.float32)
    found = np.zeros(count, bool)
    for index, frame in enumerate(frames):
        gray = to_gray(frame)
        box = choose_face(detect_faces(gray, upsample, 1.0), gray.shape, policy)
        if box is not None:
            det_boxes[index], found[index] = box, True
            points[index] = landmarks(frame, box)
    return _finish(points, det_boxes, found.copy(), found.copy(), ~found, max_missing_fraction, source)
