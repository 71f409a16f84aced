"""Animate a still face photograph: viseme mouth openings, speaker styling, yaw views and view corruptions.

Pure numpy / OpenCV, no file access: the recipe in ``pipeline.recipes.synthetic`` supplies the still
image and its 68 dlib landmarks. Coordinates are ``(x, y)`` pixels of the still ("canonical") image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

# Mouth shape of each viseme at its peak: opening height as a fraction of the mouth width, and the
# horizontal stretch of the mouth (1 = as in the still).
VISEMES: dict[str, tuple[float, float]] = {"a": (0.30, 1.08), "o": (0.26, 0.80), "e": (0.10, 1.22)}
CLEAN, OCCLUDE, BLUR, DARK, NOISE = range(5)
CORRUPTIONS = {OCCLUDE: "occlude", BLUR: "blur", DARK: "dark", NOISE: "noise"}
INTERIOR_RGB = np.array([52.0, 16.0, 22.0], np.float32)


def class_patterns(n: int) -> list[str]:
    """The first ``n`` viseme sequences (one per class): single visemes, then pairs, then triples."""
    patterns = ["".join(p) for length in (1, 2, 3) for p in itertools.product(VISEMES, repeat=length)]
    if not 1 <= n <= len(patterns):
        raise ValueError(f"number of classes must be 1..{len(patterns)}, got {n}")
    return patterns[:n]


@dataclass(frozen=True)
class Face:
    """A still RGB face image with its 68 landmarks (float ``[68, 2]``, image coordinates)."""

    image: np.ndarray
    landmarks: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """Centre of the landmark box."""
        return (self.landmarks.min(0) + self.landmarks.max(0)) / 2

    @property
    def mouth_centre(self) -> np.ndarray:
        """Centre of the closed mouth: middle of the inner lip line."""
        inner = self.landmarks[60:68]
        return np.array([inner[:, 0].mean(), (self.landmarks[62, 1] + self.landmarks[66, 1]) / 2])

    @property
    def mouth_width(self) -> float:
        """Distance between the outer mouth corners (landmarks 48 and 54)."""
        return float(np.linalg.norm(self.landmarks[54] - self.landmarks[48]))


@dataclass(frozen=True)
class Speaker:
    """How a simulated speaker differs: skin tone, brightness, background, face scale and position, speaking style."""

    gains: tuple[float, float, float]
    brightness: float
    background: tuple[int, int, int]
    scale: float
    offset: tuple[float, float]
    amplitude: float
    speed: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Speaker":
        """A speaker drawn from ``rng``."""
        return cls(
            gains=tuple(float(g) for g in 1 + rng.uniform(-0.15, 0.15, 3)),
            brightness=float(rng.uniform(0.8, 1.12)),
            background=tuple(int(c) for c in rng.integers(30, 226, 3)),
            scale=float(rng.uniform(0.92, 1.08)),
            offset=(float(rng.uniform(-6, 6)), float(rng.uniform(-5, 5))),
            amplitude=float(rng.uniform(0.85, 1.15)),
            speed=float(rng.uniform(0.9, 1.1)),
        )


def style_face(face: Face, speaker: Speaker) -> Face:
    """The face recoloured for ``speaker`` with the background outside a soft head ellipse replaced by its colour."""
    img = face.image.astype(np.float32) * np.array(speaker.gains, np.float32) * speaker.brightness
    h, w = img.shape[:2]
    lm = face.landmarks
    cx, cy = face.centre
    rx = (lm[:, 0].max() - lm[:, 0].min()) * 0.85
    ry = (lm[:, 1].max() - lm[:, 1].min()) * 1.05
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - (cy - 0.12 * ry)) / ry) ** 2)
    outside = np.clip((r - 0.9) / 0.5, 0, 1)[..., None] * 0.8
    img = img * (1 - outside) + np.array(speaker.background, np.float32) * outside
    return Face(np.clip(img, 0, 255).astype(np.uint8), lm.copy())


def viseme_track(
    pattern: str, frames: int, rng: np.random.Generator, amplitude: float = 1.0, speed: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mouth opening (fraction of mouth width) and width factor for saying ``pattern`` once.

    Each viseme is a raised-cosine opening; onset, durations, gaps and amplitudes are jittered from ``rng``.
    """
    unit = frames / 30 * 8 / speed
    durations = unit * rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, len(pattern))
    gaps = unit * 0.35 * rng.uniform(0.6, 1.4, max(len(pattern) - 1, 0))
    total = durations.sum() + gaps.sum()
    room = frames - 2.0
    if total > room:
        durations, gaps, total = durations * room / total, gaps * room / total, room
    start = 1 + rng.uniform(0, room - total)
    t = np.arange(frames, dtype=np.float64)
    height, width = np.zeros(frames), np.ones(frames)
    for k, viseme in enumerate(pattern):
        open_frac, stretch = VISEMES[viseme]
        phase = np.clip((t - start) / durations[k], 0, 1)
        profile = np.sin(np.pi * phase) ** 2
        height += profile * open_frac * amplitude * rng.uniform(0.8, 1.2)
        width += profile * (stretch - 1) * rng.uniform(0.7, 1.3)
        start += durations[k] + (gaps[k] if k < len(gaps) else 0)
    return height, width


def open_mouth(face: Face, opening: float, width: float) -> np.ndarray:
    """The face image with the jaw dropped by ``opening`` pixels and the mouth stretched by ``width``.

    The lower lip and chin move down (fading out below the chin), the upper lip rises slightly, the
    gap between them is painted as the dark mouth interior, and the lips stretch horizontally.
    """
    out = face.image.copy()
    if opening < 0.25 and abs(width - 1) < 0.01:
        return out
    lm = face.landmarks
    cx, y0 = (float(c) for c in face.mouth_centre)
    half_outer = face.mouth_width / 2
    half_inner = max(float(lm[64, 0] - lm[60, 0]) / 2, 0.6 * half_outer) * width
    below = 1.5 * max(float(lm[8, 1]) - y0, 10.0)  # distance over which the jaw displacement fades
    above = 0.9 * half_outer
    h, w = out.shape[:2]
    x0, x1 = int(max(cx - 3 * half_outer, 0)), int(min(cx + 3 * half_outer + 1, w))
    ya, yb = int(max(y0 - above - 2, 0)), int(min(y0 + below + 2, h))
    yy, xx = np.mgrid[ya:yb, x0:x1].astype(np.float32)
    dx = xx - cx
    v = yy - y0
    drop, rise = 0.85 * opening, 0.15 * opening

    def jaw(u: np.ndarray) -> np.ndarray:
        """Downward displacement of source points ``u`` pixels below the lip line (widening towards the chin)."""
        spread = half_inner + np.maximum(u, 0)
        return drop * np.sqrt(np.clip(1 - (dx / spread) ** 2, 0, 1)) * np.clip(1 - u / below, 0, 1)

    gap_bottom = jaw(np.zeros_like(v))
    gap_top = -rise * gap_bottom / max(drop, 1e-6)
    u = v - gap_bottom
    for _ in range(3):  # invert v = u + jaw(u) by fixed-point iteration
        u = v - jaw(np.maximum(u, 0))
    u = np.where(v >= gap_bottom, np.maximum(u, 0), 0)
    lifted = (v - gap_top) / (1 + gap_top / above)  # the upper lip rises by -gap_top, fading out by ``above``
    u = np.where(v <= gap_top, np.minimum(np.where(lifted > -above, lifted, v), 0), u)
    src_y = y0 + u
    k = 1 - 1 / width
    g = np.exp(-((dx / (1.7 * half_outer)) ** 4)) * np.exp(-((u / (0.6 * half_outer)) ** 2))
    src_x = cx + dx * (1 - k * g)
    patch = cv2.remap(
        face.image,
        src_x.astype(np.float32),
        src_y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT101,
    )
    inside = np.clip(np.minimum(v - gap_top, gap_bottom - v) + 0.5, 0, 1) * np.clip(gap_bottom - gap_top - 0.5, 0, 1)
    middle, half_gap = (gap_bottom + gap_top) / 2, np.maximum((gap_bottom - gap_top) / 2, 1e-3)
    depth = 0.55 + 0.45 * np.clip(np.abs(v - middle) / half_gap, 0, 1)
    interior = INTERIOR_RGB * depth[..., None]
    alpha = inside[..., None]
    patch = patch.astype(np.float32)
    out[ya:yb, x0:x1] = np.clip(patch * (1 - alpha) + interior * alpha, 0, 255).astype(np.uint8)
    return out


def yaw_homography(
    centre: np.ndarray, yaw_deg: float, zoom: float, out_centre: tuple[float, float], focal: float
) -> np.ndarray:
    """3x3 map from still-image pixels to a view.

    Rotates the face plane by ``yaw_deg`` about the vertical through ``centre``, zooms, centres.
    """
    theta = np.deg2rad(yaw_deg)
    to_origin = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]], np.float64)
    rotate = np.array([[np.cos(theta), 0, 0], [0, 1, 0], [np.sin(theta) / focal, 0, 1]], np.float64)
    place = np.array([[zoom, 0, out_centre[0]], [0, zoom, out_centre[1]], [0, 0, 1]], np.float64)
    return place @ rotate @ to_origin


def apply_point(homography: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Map one ``(x, y)`` point through a homography."""
    p = homography @ np.array([point[0], point[1], 1.0])
    return p[:2] / p[2]


def head_motion(frames: int, rng: np.random.Generator, amplitude: float = 1.5) -> np.ndarray:
    """Smooth per-frame head translation ``[frames, 2]`` in pixels (a low-passed random walk)."""
    steps = rng.normal(0, 1, (frames + 8, 2)).cumsum(0)
    kernel = np.hanning(9) / np.hanning(9).sum()
    smooth = np.stack([np.convolve(steps[:, i], kernel, mode="valid") for i in range(2)], 1)[:frames]
    smooth -= smooth.mean(0)
    peak = np.abs(smooth).max() or 1.0
    return smooth / peak * amplitude


def corruption_plan(
    frames: int, views: int, rng: np.random.Generator, rate: float = 0.7, segment: tuple[int, int] = (6, 12)
) -> np.ndarray:
    """Corruption kind per view and frame (``[views, frames]``, 0 = clean) in random stretches.

    Each stretch of frames corrupts each view with probability ``rate``; with several views at least one
    stays clean in every stretch, so the views together always show the mouth while each alone does not.
    """
    plan = np.zeros((views, frames), np.int64)
    t = 0
    while t < frames:
        length = int(rng.integers(segment[0], segment[1] + 1))
        hit = rng.random(views) < rate
        if views > 1 and hit.all():
            hit[rng.integers(views)] = False
        kinds = rng.choice(list(CORRUPTIONS), size=views, p=[0.5, 0.2, 0.15, 0.15])
        plan[:, t : t + length] = np.where(hit, kinds, CLEAN)[:, None]
        t += length
    return plan


def corrupt_region(frame: np.ndarray, centre: np.ndarray, radius: float, kind: int, rng: np.random.Generator) -> None:
    """Corrupt the mouth around ``centre`` in place: an occluding blob, heavy blur, a deep shadow, or heavy noise.

    Fills take their colour from the skin around the region, not from the mouth, so they carry no trace of it.
    """
    h, w = frame.shape[:2]
    cx, cy = centre
    rx, ry = radius * 0.95, radius * 0.65
    x0, x1 = int(max(cx - 1.5 * rx - 2, 0)), int(min(cx + 1.5 * rx + 3, w))
    y0, y1 = int(max(cy - 1.5 * ry - 2, 0)), int(min(cy + 1.5 * ry + 3, h))
    if x1 <= x0 or y1 <= y0:
        return
    region = frame[y0:y1, x0:x1].astype(np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    if kind == OCCLUDE:  # a skin-toned blob (a hand, a microphone) with soft edges over the mouth
        ox, oy = centre + rng.uniform(-0.1, 0.1, 2) * radius
        mask = np.clip((1.2 - (np.abs(xx - ox) / rx) ** 4 - (np.abs(yy - oy) / ry) ** 4) * 3, 0, 1)
    else:  # fully covered out to the ellipse, fading just beyond
        mask = np.clip((1.25 - np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)) * 4, 0, 1)
    cheeks = (mask == 0) & (yy < cy)  # skin beside and above the mouth, which the jaw does not move
    around = region[cheeks].mean(0) if cheeks.any() else region.reshape(-1, 3).mean(0)
    if kind == OCCLUDE:
        changed = around * rng.uniform(0.75, 1.2, 3).astype(np.float32)
    elif kind == BLUR:
        changed = 0.1 * cv2.GaussianBlur(region, (0, 0), radius) + 0.9 * around
    elif kind == DARK:
        changed = 0.45 * around + rng.normal(0, 6, region.shape[:2])[..., None].astype(np.float32)
    else:
        changed = around + rng.normal(0, 25, region.shape).astype(np.float32)
    mask = mask[..., None]
    frame[y0:y1, x0:x1] = np.clip(region * (1 - mask) + changed * mask, 0, 255).astype(np.uint8)


def light_and_noise(
    frames: np.ndarray, gain: float, gradient: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Apply a global gain, a left-to-right lighting gradient and luminance noise to ``[T, H, W, 3]`` frames.

    The noise is uniform, of std ``sigma``.
    """
    t, h, w = frames.shape[:3]
    lit = frames.astype(np.float32)
    lit *= (gain * (1 + gradient * np.linspace(-1, 1, w, dtype=np.float32)))[None, None, :, None]
    noise = rng.random((t, h, w, 1), dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= np.float32(sigma * np.sqrt(12))
    lit += noise
    return np.clip(lit, 0, 255, out=lit).astype(np.uint8)


@dataclass(frozen=True)
class ViewSetup:
    """One camera's look for one clip: yaw, zoom, lighting, sensor noise."""

    yaw: float
    zoom: float
    gain: float
    gradient: float
    sigma: float


def render_clip(
    face: Face,
    opening: np.ndarray,
    width: np.ndarray,
    views: list[ViewSetup],
    plan: np.ndarray,
    motion: np.ndarray,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render every view of a clip: uint8 ``[views, frames, size, size, 3]``.

    ``opening`` (pixels) and ``width`` drive the mouth per frame, ``motion`` moves the head, ``plan``
    (from :func:`corruption_plan`) says which frames of which view get their mouth corrupted.
    """
    frames = len(opening)
    out = np.empty((len(views), frames, size, size, 3), np.uint8)
    centre = face.centre
    # The corrupted region is fixed to the face, whatever the mouth does, so its place and size say nothing of it.
    mouth = face.mouth_centre + np.array([0, 0.15 * face.mouth_width])
    focal = 2.5 * face.image.shape[1]
    for t in range(frames):
        still = open_mouth(face, float(opening[t]), float(width[t]))
        for j, view in enumerate(views):
            homography = yaw_homography(centre - motion[t], view.yaw, view.zoom, (size / 2, size / 2), focal)
            frame = cv2.warpPerspective(
                still, homography, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            )
            if plan[j, t] != CLEAN:
                corrupt_region(
                    frame, apply_point(homography, mouth), 0.6 * face.mouth_width * view.zoom, int(plan[j, t]), rng
                )
            out[j, t] = frame
    for j, view in enumerate(views):
        out[j] = light_and_noise(out[j], view.gain, view.gradient, view.sigma, rng)
    return out
