"""Frame helpers shared by the backbones, and the pixel backbone for mouth ROIs.

The pixel backbone turns frames gray, resizes and flattens them, with an optional PCA.

The PCA is fitted on training-split frames only and stored as a plain ``.npz`` (mean, components;
loaded with ``allow_pickle=False``), never as a pickle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import atomic_path

log = get_logger(__name__)

DEFAULT_SIZE = 32


def as_frames(batch: np.ndarray) -> np.ndarray:
    """Validate ``[N,H,W]`` or ``[N,H,W,1|3]`` uint8 frames; return them as ``[N,H,W,C]``."""
    batch = np.asarray(batch)
    if batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {batch.dtype}")
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.ndim != 4 or batch.shape[-1] not in (1, 3):
        raise ValueError(f"expected frames [N,H,W] or [N,H,W,1|3], got shape {batch.shape}")
    return batch


def as_rgb(batch: np.ndarray) -> np.ndarray:
    """``[N,H,W]`` gray or ``[N,H,W,1|3]`` uint8 frames as ``[N,H,W,3]`` uint8 (RGB)."""
    batch = as_frames(batch)
    return np.repeat(batch, 3, axis=-1) if batch.shape[-1] == 1 else batch


def as_gray(batch: np.ndarray) -> np.ndarray:
    """``[N,H,W]`` gray or ``[N,H,W,1|3]`` RGB uint8 frames as ``[N,H,W]`` uint8 gray (ITU-R 601 luma)."""
    batch = as_frames(batch)
    if batch.shape[-1] == 1 or not len(batch):
        return batch[..., 0]
    return np.stack([cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in batch])


def resize(batch: np.ndarray, size: int) -> np.ndarray:
    """Resize ``[N,H,W(,C)]`` frames to ``size`` x ``size`` (area filter when shrinking, bilinear when enlarging)."""
    if batch.shape[1:3] == (size, size):
        return batch
    interpolation = cv2.INTER_AREA if min(batch.shape[1:3]) > size else cv2.INTER_LINEAR
    out = np.empty((len(batch), size, size) + batch.shape[3:], batch.dtype)
    for i, frame in enumerate(batch):
        out[i] = cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=interpolation).reshape(
            out.shape[1:]
        )
    return out


@dataclass(frozen=True)
class PcaProjection:
    """A fitted PCA as plain arrays: ``transform(x) = (x - mean) @ components.T``."""

    mean: np.ndarray  # [D]
    components: np.ndarray  # [K, D]
    explained_variance_ratio: np.ndarray  # [K]

    @classmethod
    def fit(cls, features: np.ndarray, n_components: int, seed: int = 0) -> "PcaProjection":
        """Fit on ``[N, D]`` features (training split only) with scikit-learn."""
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n_components, random_state=seed).fit(np.asarray(features, np.float32))
        return cls(
            pca.mean_.astype(np.float32),
            pca.components_.astype(np.float32),
            pca.explained_variance_ratio_.astype(np.float32),
        )

    @property
    def dim(self) -> int:
        """Number of components."""
        return int(self.components.shape[0])

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Project ``[N, D]`` features to ``[N, K]`` float32."""
        return ((np.asarray(features, np.float32) - self.mean) @ self.components.T).astype(np.float32)

    def digest(self) -> str:
        """SHA-256 of the mean and components (identifies the projection in outputs)."""
        return hashlib.sha256(self.mean.tobytes() + self.components.tobytes()).hexdigest()

    def save(self, path: Path | str) -> Path:
        """Write the projection as ``.npz`` atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(
                out, mean=self.mean, components=self.components, explained_variance_ratio=self.explained_variance_ratio
            )
        return path

    @classmethod
    def load(cls, path: Path | str) -> "PcaProjection":
        """Read a projection written by :meth:`save` (no pickles)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["components"], data["explained_variance_ratio"])


class PixelBackbone:
    """Mouth ROI pixels: gray, resized to ``size`` x ``size``, flattened, scaled to [0, 1], optionally PCA-projected."""

    def __init__(self, size: int = DEFAULT_SIZE, pca: PcaProjection | None = None) -> None:
        self.name, self.size, self.pca = "pixels", size, pca
        if pca is not None and pca.mean.shape != (size * size,):
            raise ConfigError(f"PCA expects {pca.mean.shape[0]} inputs, pixel size {size} gives {size * size}")

    @property
    def dim(self) -> int:
        """Embedding width: PCA components, or size * size."""
        return self.pca.dim if self.pca is not None else self.size * self.size

    @property
    def weights_label(self) -> str:
        """``none`` for raw pixels, else the PCA's digest."""
        return f"pca sha256:{self.pca.digest()}" if self.pca is not None else "none"

    def flat(self, batch: np.ndarray) -> np.ndarray:
        """``[N, size*size]`` float32 in [0, 1], before any PCA."""
        gray = resize(as_gray(batch), self.size)
        return gray.reshape(len(gray), self.size * self.size).astype(np.float32) / 255.0

    def fit_pca(self, train_frames: np.ndarray, n_components: int, seed: int = 0) -> PcaProjection:
        """Fit the PCA on training-split frames and use it from now on."""
        self.pca = PcaProjection.fit(self.flat(train_frames), n_components, seed)
        log.info(
            "pixel PCA: %d components keep %.1f%% of the variance",
            self.pca.dim,
            100 * float(self.pca.explained_variance_ratio.sum()),
        )
        return self.pca

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``[N,H,W(,C)]`` uint8 frames -> ``[N, dim]`` float32."""
        flat = self.flat(batch)
        return self.pca.transform(flat) if self.pca is not None else flat
