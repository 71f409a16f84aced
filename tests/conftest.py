"""Shared test fixtures: the GRID clips from ../shared (skipped when absent), quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
GRID_DIR = REPO.parent / "shared" / "data" / "grid"


@pytest.fixture(scope="session")
def grid_dir() -> Path:
    """Folder of real GRID talking-face clips; the test is skipped where ../shared is absent."""
    if not GRID_DIR.is_dir() or not any(GRID_DIR.glob("*.mpg")):
        pytest.skip("../shared/data/grid is absent (fresh clone outside the workplace)")
    return GRID_DIR


@pytest.fixture(scope="session")
def grid_clip(grid_dir: Path) -> Path:
    """One real GRID clip (75 frames, 360x288, 25 fps, with audio)."""
    return grid_dir / "lbax4n.mpg"
