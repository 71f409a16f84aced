"""Moving digits after Srivastava et al.'s Moving MNIST.

Digits bounce inside a square canvas, overlapping by pixel-wise max.

The digit images are scikit-learn's bundled 8x8 handwritten digits, upscaled and padded like MNIST (a 20-22 px
digit centred in a 28 px box), so nothing is downloaded. Defaults follow the paper: 64x64 frames, 20 frames
(10 seen, 10 to predict), two digits. The clips serve unsupervised pretraining (the composite LSTM model);
each carries its digits' classes, the first digit's class as the label.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed

from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest, Sample, Source
from pipeline.recipes.common import RecipeError
from pipeline.recipes.splits import assign_splits
from pipeline.recipes.synthetic import FPS, reuse_outputs, write_clip
from pipeline.storage.atomic import file_sha256

log = get_logger(__name__)

GENERATOR = "mpview-moving-digits-1"
PARAMS_FILE = "moving_digits.json"


@functools.lru_cache(maxsize=4)
def digit_glyphs(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digit images as uint8 ``[N, size, size]`` (digit in the central ~78 %) and their classes."""
    small, classes = _sklearn_digits()
    inner = int(round(size * 0.78))
    pad = (size - inner) // 2
    images = np.zeros((len(small), size, size), np.uint8)
    for i, image in enumerate(small):
        big = cv2.resize(image * 16, (inner, inner), interpolation=cv2.INTER_CUBIC)
        images[i, pad : pad + inner, pad : pad + inner] = np.clip(big, 0, 255).astype(np.uint8)
    return images, classes


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits (float32, 0..16) and classes from scikit-learn's data file, read directly: importing
    ``sklearn.datasets`` pulls in SciPy and takes seconds; ``load_digits`` is the fallback if the file moved."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def bouncing_trajectories(
    n: int, frames: int, canvas: int, digits: int, rng: np.random.Generator, step: float = 0.1
) -> np.ndarray:
    """Top-left corners ``[n, digits, frames, 2]`` of digits moving in straight lines.

    Corners are (x, y), float pixels in ``[0, canvas]``; the digits move with speed ``step * canvas`` per frame in a
    random direction, reflected at the edges.
    """
    position = rng.random((n, digits, 2)) * canvas
    angle = rng.random((n, digits)) * 2 * np.pi
    velocity = np.stack([np.cos(angle), np.sin(angle)], -1) * step * canvas
    out = np.empty((n, digits, frames, 2))
    for t in range(frames):
        out[:, :, t] = position
        position = position + velocity
        low, high = position < 0, position > canvas
        position = np.where(low, -position, np.where(high, 2 * canvas - position, position))
        velocity = np.where(low | high, -velocity, velocity)
    return out


def authors_trajectories(n: int, frames: int, canvas: int, rng: np.random.Generator, step: float = 0.1) -> np.ndarray:
    """Top-left corners ``[n, frames, 2]`` (x, y), integer pixels in ``[0, canvas]``, by the motion model of the
    authors' ``BouncingMNISTDataHandler.GetRandomTrajectory``.

    A position uniform in the unit square and a direction uniform in [0, 2 pi); each frame first moves ``step``
    along it (so frame 0 is one step from the drawn position), then a coordinate past an edge is set on the edge
    and its velocity reversed; corners are ``canvas * position`` truncated.
    """
    position = rng.random((n, 2))
    angle = rng.random(n) * 2 * np.pi
    velocity = np.stack([np.cos(angle), np.sin(angle)], -1)
    out = np.empty((n, frames, 2), np.int64)
    for t in range(frames):
        position = position + velocity * step
        outside = (position <= 0.0) | (position >= 1.0)
        position = np.clip(position, 0.0, 1.0)
        velocity = np.where(outside, -velocity, velocity)
        out[:, t] = (canvas * position).astype(np.int64)
    return out


def fresh_clips(
    n: int, frames: int = 20, size: int = 64, digits: int = 2, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``n`` new float32 clips ``[n, frames, size, size]`` in [0, 1] as the authors' ``GetBatch`` draws them: each
    digit (our 28 px glyphs, drawn at random) on its own trajectory (:func:`authors_trajectories`), overlaps by max."""
    glyph_size = 28
    if size <= glyph_size:
        raise RecipeError(f"moving-digits: frame size {size} must exceed the digit size {glyph_size}")
    rng = rng or np.random.default_rng()
    images, _ = digit_glyphs(glyph_size)
    glyphs = images[rng.integers(0, len(images), (n, digits))]
    corners = authors_trajectories(n * digits, frames, size - glyph_size, rng).reshape(n, digits, frames, 2)
    return compose_max(glyphs, corners, size).astype(np.float32) / 255.0


def compose_max(glyphs: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Paste ``glyphs [n, digits, g, g]`` at integer ``corners [n, digits, frames, 2]``.

    Into ``[n, frames, size, size]`` uint8, by pixel-wise max.
    """
    n, digits, g = glyphs.shape[:3]
    frames = corners.shape[2]
    out = np.zeros((n, frames, size, size), np.uint8)
    xy = np.rint(corners).astype(np.int64)
    for i in range(n):
        for k in range(digits):
            for t in range(frames):
                x, y = xy[i, k, t]
                window = out[i, t, y : y + g, x : x + g]
                np.maximum(window, glyphs[i, k], out=window)
    return out


@dataclass(frozen=True)
class MovingDigits:
    """A batch of moving-digit clips with what made them: per-clip digit images, classes and trajectories."""

    videos: np.ndarray  # uint8 [n, frames, size, size]
    labels: np.ndarray  # int [n, digits]
    glyphs: np.ndarray  # uint8 [n, digits, g, g]
    corners: np.ndarray  # float [n, digits, frames, 2], top-left (x, y)


def generate(
    n: int, frames: int = 20, size: int = 64, digits: int = 2, seed: int = 0, digit_size: int = 28
) -> MovingDigits:
    """``n`` clips of ``digits`` bouncing digits, deterministic from ``seed``."""
    if size <= digit_size:
        raise RecipeError(f"moving-digits: frame size {size} must exceed the digit size {digit_size}")
    images, classes = digit_glyphs(digit_size)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), (n, digits))
    corners = bouncing_trajectories(n, frames, size - digit_size, digits, rng)
    glyphs = images[pick]
    return MovingDigits(compose_max(glyphs, corners, size), classes[pick], glyphs, corners)


def moving_digits(
    n: int, frames: int = 20, size: int = 64, digits: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Moving-digit videos uint8 ``[n, frames, size, size]`` and their digit classes ``[n, digits]``."""
    batch = generate(n, frames, size, digits, seed)
    return batch.videos, batch.labels


def _write(path: Path, video: np.ndarray, reuse: bool) -> dict:
    """Write one gray clip as an RGB MP4 unless ``reuse`` and it exists; return its media record."""
    if not (reuse and path.is_file()):
        write_clip(path, np.repeat(video[..., None], 3, axis=-1))
    return {
        "frames": len(video),
        "fps": float(FPS),
        "width": video.shape[2],
        "height": video.shape[1],
        "sha256": file_sha256(path),
    }


def prepare_moving_digits(
    out_dir: str | Path, n: int = 1000, frames: int = 20, size: int = 64, digits: int = 2, seed: int = 0, jobs: int = 1
) -> Manifest:
    """Write ``n`` moving-digit clips to ``out_dir/videos/v1/<id>.mp4`` and return their manifest.

    The split is seeded, 80/10/10.

    Re-running with the same parameters keeps the videos already written.
    """
    started = time.time()
    out = Path(out_dir).absolute()
    cfg = {"generator": GENERATOR, "n": n, "frames": frames, "size": size, "digits": digits, "seed": seed, "fps": FPS}
    reuse = reuse_outputs(out / PARAMS_FILE, cfg)
    batch = generate(n, frames, size, digits, seed)
    ids = [f"md{i:06d}" for i in range(n)]
    paths = [f"videos/v1/{sample_id}.mp4" for sample_id in ids]
    media = Parallel(n_jobs=jobs, batch_size=32)(
        delayed(_write)(out / p, v, reuse) for p, v in zip(paths, batch.videos)
    )
    samples = [
        Sample(
            sample_id,
            {"v1": Source(path)},
            label=str(batch.labels[i, 0]),
            media={"v1": media[i]},
            meta={
                "digits": [int(d) for d in batch.labels[i]],
                "corners": np.rint(batch.corners[i]).astype(int).tolist(),
                "seed": seed,
            },
        )
        for i, (sample_id, path) in enumerate(zip(ids, paths))
    ]
    samples = assign_splits(samples, fractions=(0.8, 0.1, 0.1), seed=seed, by_speaker=False)
    info = {
        "generator": GENERATOR,
        "params": cfg,
        "digit_source": "sklearn.datasets.load_digits (8x8, upscaled)",
        "label": "class of the first digit",
    }
    log.info(
        "moving digits: %d clips in %s (%.1f s%s)",
        n,
        out,
        time.time() - started,
        ", reused existing files" if reuse else "",
    )
    return Manifest(
        dataset="moving_digits",
        root=str(out),
        perspectives=["v1"],
        samples=samples,
        classes=[str(d) for d in range(10)],
        info=info,
    )
