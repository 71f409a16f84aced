"""Faces with dlib: detection, 68-point landmarks (models from face-recognition-models), following a face in a clip."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import dlib
import numpy as np

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.media.video import VideoError

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
        raise ConfigError(f"face policy must be one of {POLICIES}, got {policy!r}")
    if len(boxes) == 0:
        return None
    if policy == "largest":
        key = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(key))]
    centre = np.array([frame_shape[1], frame_shape[0]], np.float32) / 2
    distance = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)
    return boxes[int(np.argmin(distance))]


def landmarks(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 68 dlib landmarks ``[68, 2]`` float32 (x, y) fitted in ``box`` (x0, y0, x1, y1) of an RGB or gray frame.

    The model reads pixels in and near the box only, so it is given that part of the frame (same result, less work).
    """
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    margin = (x1 - x0) // 2
    left, top = max(x0 - margin, 0), max(y0 - margin, 0)
    part = np.ascontiguousarray(frame[top : y1 + margin, left : x1 + margin])
    shape = shape_predictor()(part, dlib.rectangle(x0 - left, y0 - top, x1 - 1 - left, y1 - 1 - top))
    points = np.fromiter((c for p in shape.parts() for c in (p.x, p.y)), np.float32, 136).reshape(68, 2)
    return points + np.array([left, top], np.float32)


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
# (GRID frame to frame: <= 11; a cut to another place: 17-20). A 13x13 window (26 px at full size) reaches past the
# lip edges into texture, so the lip points drift less than with 9x9 and a fit every 20 frames stays as close to the
# reference as one every 12 did; past 5 iterations the points hardly move (GRID: mean and max crop offsets the same
# to 0.01 px as with 10).
FLOW_SCALE = 0.5
FLOW_WINDOW = (13, 13)
FLOW_LEVELS = 1
FLOW_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 5, 0.03)
FLOW_MARGIN = 0.25
MAX_FLOW_ERROR = 16.0
# dlib's 68-point model expects the box its detector finds on a frame where the face spans well over the detector's
# 80 px window. On a downscaled frame a small face falls below it and the box comes out too large (GRID at half size:
# 146 px instead of 125 px, the fitted mouth 4.6 px low), so a coarse box is re-detected in a window around it (the box
# grown by REFINE_MARGIN of its side on every side) at full resolution, or for boxes over REFINE_SIDE px on that window
# resized so that the box spans REFINE_SIDE px: the face stays above the detector's window, and the detector's image
# pyramid has fewer levels to search (GRID: 2.5x faster than at full size, the crops as close to the reference).
REFINE_MARGIN = 0.2
REFINE_SIDE = 110.0
# the tracker's defaults (``RoiConfig`` takes them): fit every 20th frame, re-detect every 50th, detect at half size
LANDMARK_EVERY, DETECT_EVERY, DETECT_SCALE = 20, 50, 0.5


class NoFaceError(VideoError):
    """Too many frames of a clip have no detectable face."""

    def __init__(self, path: Path | str, missing: int, frames: int, limit: float, checked: int | None = None) -> None:
        checked = frames if checked is None else checked
        self.missing, self.frames = missing, frames
        self.fraction = missing / frames if frames else 1.0  # a lower bound when the search stopped early
        if checked >= frames:
            text = f"no face found in {missing} of {frames} frames ({self.fraction:.0%})"
        else:
            text = f"no face found in at least {missing} of {frames} frames (stopped after {checked} frames)"
        super().__init__(path, f"{text}; at most {limit:.0%} allowed", "no-face")


@dataclass
class FaceTrack:
    """One face followed through a clip: per-frame landmarks and how each frame's landmarks were obtained."""

    landmarks: np.ndarray  # [T, 68, 2] float32; on frames without a face, filled in from the nearest frames with one
    det_boxes: np.ndarray  # [T, 4] float32 detector box (x0, y0, x1, y1); NaN where the detector did not find it
    detected: np.ndarray  # [T] bool: the detector found the face on this frame
    fitted: np.ndarray  # [T] bool: the 68-point model was fitted on this frame (else: flow-followed or filled in)
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


def detect_near(image: np.ndarray, box: np.ndarray, upsample: int = 0) -> np.ndarray | None:
    """The face box the detector finds at full resolution in a small window around ``box`` (the one overlapping it
    most), or None: refines a box found on a downscaled frame, or re-detects a followed face cheaply."""
    gray = to_gray(image)
    height, width = gray.shape
    side = float(box[2] - box[0])
    margin = REFINE_MARGIN * side
    x0, y0 = max(int(box[0] - margin), 0), max(int(box[1] - margin), 0)
    x1, y1 = min(int(box[2] + margin) + 1, width), min(int(box[3] + margin) + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    boxes = detect_faces(gray[y0:y1, x0:x1], upsample, min(1.0, REFINE_SIDE / side))
    if len(boxes) == 0:
        return None
    boxes += np.array([x0, y0, x0, y0], np.float32)
    overlap = _iou(boxes, box)
    best = int(np.argmax(overlap))
    return boxes[best] if overlap[best] >= MIN_MATCH_IOU else None


class _Record:
    """Per-frame outcomes of following a face, settled in frame order; frames without a face are filled in.

    A frame's landmarks become final (``ready``) once its tracking outcome is final and, for a frame without a face,
    once the face is found again: the gap is then interpolated linearly. A gap never keeps more than ``hold_after``
    frames waiting: older frames of a longer gap hold the last landmarks seen, so the interpolation covers only the
    gap's last ``hold_after`` frames. Frames before the first face wait for it (held at its landmarks); a clip's last
    frames without a face hold the last landmarks.
    """

    def __init__(
        self, hold_after: int, max_missing_fraction: float, source: str, frame_count: Callable[[], int | None] | None
    ) -> None:
        self.hold_after, self.limit, self.source = hold_after, max_missing_fraction, source
        self.frame_count, self.total = frame_count, None
        self.count = self.settled = self.ready = self.missing_count = 0
        self.points = np.full((64, 68, 2), np.nan, np.float32)
        self.det_boxes = np.full((64, 4), np.nan, np.float32)
        self.detected, self.fitted, self.missing = (np.zeros(64, bool) for _ in range(3))

    def add(self) -> int:
        """Start a new frame; its index."""
        if self.count == len(self.points):
            grown = 2 * self.count
            self.points = np.concatenate([self.points, np.full((grown - self.count, 68, 2), np.nan, np.float32)])
            self.det_boxes = np.concatenate([self.det_boxes, np.full((grown - self.count, 4), np.nan, np.float32)])
            self.detected, self.fitted, self.missing = (
                np.concatenate([flags, np.zeros(grown - self.count, bool)])
                for flags in (self.detected, self.fitted, self.missing)
            )
        self.count += 1
        return self.count - 1

    def settle(self, upto: int) -> None:
        """Frames before ``upto`` have their final tracking outcome: make every landmark final that this allows."""
        self.settled = upto
        while self.ready < self.settled:
            start = self.ready
            if not self.missing[start]:
                self.ready += 1
                continue
            found = np.flatnonzero(~self.missing[start : self.settled])
            if len(found):
                self._fill_gap(start, start + int(found[0]))
            elif start > 0 and self.count - start > self.hold_after:
                self.points[start] = self.points[start - 1]
                self.ready += 1
            else:
                break

    def _fill_gap(self, start: int, end: int) -> None:
        """Landmarks of frames ``start..end-1`` without a face: linear from frame start-1 to end, held at clip ends."""
        if start == 0:
            self.points[start:end] = self.points[end]
        elif end == self.count:
            self.points[start:end] = self.points[start - 1]
        else:
            weight = ((np.arange(start, end) - (start - 1)) / (end - start + 1))[:, None, None]
            self.points[start:end] = (1 - weight) * self.points[start - 1] + weight * self.points[end]
        self.ready = end

    def lose(self, index: int) -> None:
        """Mark a frame as having no face."""
        self.missing[index] = True
        self.missing_count += 1

    def check_missing(self) -> None:
        """Fail as soon as more frames lack the face than the whole clip may (when its length is known).

        Only once a face has been seen: a clip without any is searched to the end, so that its count is exact.
        """
        if self.missing_count == self.count or not self.missing_count:
            return
        if self.total is None and self.frame_count is not None:
            self.total = self.frame_count() or 0
        if self.total and self.missing_count > self.limit * self.total:
            raise NoFaceError(
                self.source, self.missing_count, max(self.total, self.count), self.limit, checked=self.count
            )

    def finish(self) -> FaceTrack:
        """The whole clip is in: fail on too many frames without a face, else fill in the last ones."""
        self.settle(self.count)
        missing = self.missing_count
        if missing == self.count or missing > self.limit * self.count:
            raise NoFaceError(self.source, missing, self.count, self.limit)
        if self.ready < self.count:
            self._fill_gap(self.ready, self.count)
        count = self.count
        return FaceTrack(
            self.points[:count],
            self.det_boxes[:count],
            self.detected[:count],
            self.fitted[:count],
            ~self.missing[:count],
        )


class _Flow:
    """Pyramidal Lucas-Kanade flow of the crop points from a fit onwards, on a half-resolution patch around them."""

    def __init__(self, frame: np.ndarray, points: np.ndarray, box: np.ndarray) -> None:
        height, width = frame.shape[:2]
        margin = FLOW_MARGIN * float(box[2] - box[0])
        (x0, y0), (x1, y1) = points.min(axis=0) - margin, points.max(axis=0) + margin
        self.region = (max(int(x0), 0), max(int(y0), 0), min(int(x1) + 1, width), min(int(y1) + 1, height))
        self.origin = np.array(self.region[:2], np.float32)
        self.previous = self._image(frame)
        self.limit = np.array(self.previous.shape[::-1], np.float32) - 1
        self.tracked = [((points - self.origin) * FLOW_SCALE).reshape(-1, 1, 2)]

    def _image(self, frame: np.ndarray) -> np.ndarray:
        """The region of a frame in gray at FLOW_SCALE, what the flow runs on."""
        x0, y0, x1, y1 = self.region
        return cv2.resize(
            to_gray(frame[y0:y1, x0:x1]), None, fx=FLOW_SCALE, fy=FLOW_SCALE, interpolation=cv2.INTER_AREA
        )

    def step(self, frame: np.ndarray) -> bool:
        """Follow the points into the next frame; False (and nothing recorded) when the flow loses them."""
        current = self._image(frame)
        moved, status, error = cv2.calcOpticalFlowPyrLK(
            self.previous,
            current,
            self.tracked[-1],
            None,
            winSize=FLOW_WINDOW,
            maxLevel=FLOW_LEVELS,
            criteria=FLOW_CRITERIA,
        )
        lost = not status.all() or float(np.sort(error, axis=None)[len(error) // 2]) > MAX_FLOW_ERROR  # 25: the median
        if lost or (moved < 0).any() or (moved > self.limit).any():
            return False
        self.tracked.append(moved)
        self.previous = current
        return True

    def points(self) -> np.ndarray:
        """The followed points ``[n, 25, 2]`` in frame pixels, from the fit's frame to the last frame followed."""
        return np.stack(self.tracked)[:, :, 0, :] / FLOW_SCALE + self.origin


class FaceTracker:
    """Follows one face frame by frame: sparse detection, a 68-point fit every few frames, optical flow in between.

    Frames are pushed one at a time and none is kept. ``ready`` counts the leading frames whose landmarks are final
    (``points``): a followed frame waits for the next fit (at most ``landmark_every`` frames), a frame without a face
    for the face to return (see ``_Record``).
    """

    def __init__(
        self,
        landmark_every: int = LANDMARK_EVERY,
        detect_every: int = DETECT_EVERY,
        detect_scale: float = DETECT_SCALE,
        upsample: int = 0,
        policy: str = "largest",
        max_missing_fraction: float = 0.2,
        source: str = "<frames>",
        frame_count: Callable[[], int | None] | None = None,
    ) -> None:
        self.source = source
        self.landmark_every, self.detect_every, self.detect_scale = landmark_every, detect_every, detect_scale
        self.upsample, self.policy = upsample, policy
        self.record = _Record(landmark_every, max_missing_fraction, source, frame_count)
        self.anchor: tuple[np.ndarray, _Pose] | None = None  # the last detector box and the fit made inside it
        self.last: _Pose | None = None  # the latest landmarks: a fit, or where the flow expects the face
        self.next_box: np.ndarray | None = None  # the box the next tracked fit uses
        self.thumbnail: np.ndarray | None = None  # the next box's thumbnail on the frame of the last fit
        self.last_detect = -detect_every
        self.previous: int | None = None  # the frame of the last fit while the face is followed
        self.flow: _Flow | None = None  # the flow from that fit onwards
        self.latest: np.ndarray | None = None  # the newest frame (fitted at the end of the clip)

    @property
    def ready(self) -> int:
        """How many leading frames have final landmarks."""
        return self.record.ready

    @property
    def points(self) -> np.ndarray:
        """Landmarks ``[ready, 68, 2]`` of the frames that have final ones."""
        return self.record.points[: self.record.ready]

    def push(self, frame: np.ndarray) -> None:
        """Take the next frame: follow the flow into it, and fit when a fit is due or the flow is lost."""
        index = self.record.add()
        self.latest = frame
        if self.flow is not None:
            if self.flow.step(frame):
                if index < self.previous + self.landmark_every:
                    return
            else:
                log.debug("%s: optical flow lost the face at frame %d", self.source, index)
        self._fit_at(index, frame)

    def finish(self) -> FaceTrack:
        """End of the clip: fit its last frame if it was only followed.

        Raises NoFaceError if the face was missing too often.
        """
        if self.flow is not None and self.previous < self.record.count - 1:
            self._fit_at(self.record.count - 1, self.latest)
        self.latest = self.flow = None
        return self.record.finish()

    def _fit_at(self, index: int, frame: np.ndarray) -> None:
        """Fit on one frame, fill in the followed frames since the last fit, and start following from this one."""
        followed = None
        if self.flow is not None:
            followed = self.flow.points()
            self._expect(followed[-1])
        fitted = self._fit(index, frame)
        if followed is not None:
            self._fill(self.previous, followed, index, fitted)
        if fitted:
            self.previous = index
            self.flow = (
                _Flow(frame, self.record.points[index][FLOW_IDS], self.next_box) if self.landmark_every > 1 else None
            )
        else:
            self.previous = self.flow = None
        self.record.settle(index + 1)
        self.record.check_missing()

    def _fit(self, index: int, frame: np.ndarray) -> bool:
        """Fit landmarks on one frame: tracked, after a detection when due, or detected if the tracked fit fails."""
        tracking = self.last is not None
        tried = not tracking or index - self.last_detect >= self.detect_every
        if tried and self._fit_detected(index, frame):
            return True
        if tracking and (self._fit_tracked(index, frame) or (not tried and self._fit_detected(index, frame))):
            return True
        return self._lose(index)

    def _fit_tracked(self, index: int, frame: np.ndarray) -> bool:
        """Fit inside the expected box, after checking the face is still there, and check the result."""
        box = self.next_box
        thumbnail = _thumbnail(frame, box)
        if thumbnail is None or self.thumbnail is None or float(thumbnail @ self.thumbnail) < MIN_THUMBNAIL_NCC:
            log.debug("%s: the face left the tracked box at frame %d", self.source, index)
            return False
        pose = _Pose.of(landmarks(frame, box))
        if self._degraded(pose, box):
            log.debug("%s: landmark fit degraded at frame %d", self.source, index)
            return False
        return self._accept(index, frame, pose)

    def _fit_detected(self, index: int, frame: np.ndarray) -> bool:
        """Detect the face, fit landmarks in its box and make that box the new anchor.

        A followed face is looked for at full resolution near the expected box; a new one (or one not there) on the
        downscaled frame, its box then refined at full resolution near where it was found.
        """
        gray = to_gray(frame)
        self.last_detect = index
        box = None if self.next_box is None else detect_near(gray, self.next_box, self.upsample)
        if box is None:
            box = self._detect(gray)
        if box is None:
            return False
        self.record.det_boxes[index], self.record.detected[index] = box, True
        pose = _Pose.of(landmarks(frame, box))
        self.anchor = (box, pose)
        return self._accept(index, frame, pose)

    def _detect(self, gray: np.ndarray) -> np.ndarray | None:
        """Search the whole frame: downscaled (full size if that finds nothing), the chosen box refined at full size."""
        coarse = self.detect_scale < 1.0
        boxes = detect_faces(gray, self.upsample, self.detect_scale)
        if len(boxes) == 0 and coarse:
            boxes, coarse = detect_faces(gray, self.upsample, 1.0), False
        box = self._choose(boxes, gray.shape)
        if box is None or not coarse:
            return box
        refined = detect_near(gray, box, self.upsample)
        return box if refined is None else refined

    def _choose(self, boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
        """While tracking keep the same person (best overlap with the expected box); otherwise apply the face policy."""
        if len(boxes) and self.next_box is not None:
            overlap = _iou(boxes, self.next_box)
            if overlap.max() >= MIN_MATCH_IOU:
                return boxes[int(np.argmax(overlap))]
        return choose_face(boxes, shape, self.policy)

    def _accept(self, index: int, frame: np.ndarray, pose: _Pose) -> bool:
        """Record a fit and prepare the box (and its thumbnail) the next tracked fit starts from."""
        self.record.points[index], self.record.fitted[index], self.last = pose.points, True, pose
        self.next_box = self._box_from(pose)
        self.thumbnail = _thumbnail(frame, self.next_box)
        return True

    def _lose(self, index: int) -> bool:
        """Mark the frame as missing and forget the face, so the next frames search for it again."""
        self.record.lose(index)
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
        return bool(
            outside > MAX_OUTSIDE_FRACTION
            or jump > MAX_MOUTH_JUMP * side
            or not 1 / MAX_SCALE_CHANGE < ratio < MAX_SCALE_CHANGE
        )

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
        points = self.record.points
        reached = start + len(followed) - 1
        frames = np.arange(start + 1, min(reached, end - 1) + 1)
        if len(frames) == 0:
            return
        tracked = followed[frames - start]
        if not fitted:
            base = np.repeat(points[start][None], len(frames), axis=0)
        else:
            weight = ((frames - start) / (end - start))[:, None, None]
            base = (1 - weight) * points[start] + weight * points[end]
            if reached == end:
                drift = points[end][FLOW_IDS] - followed[-1]
                if float(np.abs(drift).max()) > MAX_MOUTH_JUMP * float(self.next_box[2] - self.next_box[0]):
                    log.debug("%s: flow and fit disagree at frame %d, interpolating instead", self.source, end)
                    points[frames] = base
                    return
                tracked = tracked + weight * drift
        shift = tracked[:, : len(STABLE_IDS)].mean(axis=1) - base[:, STABLE_IDS].mean(axis=1)
        filled = base + shift[:, None, :]
        filled[:, FLOW_IDS] = tracked
        points[frames] = filled


def track_face(
    frames: np.ndarray,
    landmark_every: int = LANDMARK_EVERY,
    detect_every: int = DETECT_EVERY,
    detect_scale: float = DETECT_SCALE,
    upsample: int = 0,
    policy: str = "largest",
    max_missing_fraction: float = 0.2,
    source: str = "<frames>",
) -> FaceTrack:
    """Follow the face through ``[T, H, W, 3]`` (or gray) frames cheaply; NoFaceError if it is missing too often."""
    tracker = FaceTracker(
        landmark_every,
        detect_every,
        detect_scale,
        upsample,
        policy,
        max_missing_fraction,
        source,
        frame_count=lambda: len(frames),
    )
    for frame in frames:
        tracker.push(frame)
    return tracker.finish()


def fit_every_frame(
    frames: np.ndarray,
    upsample: int = 0,
    policy: str = "largest",
    max_missing_fraction: float = 0.2,
    source: str = "<frames>",
) -> FaceTrack:
    """The slow reference: full-size detection and the 68-point fit on every frame, nothing carried over."""
    record = _Record(len(frames), max_missing_fraction, source, frame_count=None)
    for frame in frames:
        index = record.add()
        gray = to_gray(frame)
        box = choose_face(detect_faces(gray, upsample, 1.0), gray.shape, policy)
        if box is None:
            record.lose(index)
        else:
            record.det_boxes[index], record.detected[index], record.fitted[index] = box, True, True
            record.points[index] = landmarks(frame, box)
    return record.finish()
