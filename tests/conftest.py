"""Shared test fixtures: the GRID clips from ../shared (skipped when absent), quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
GRID_DIR = REPO.parent / "shared" / "data" / "grid"
# the longest files, longest first: started first, they end before the short ones the other worker takes meanwhile
# (pytest-xdist --dist loadfile hands out files in collection order)
LONGEST_FIRST = (
    "test_readme_examples.py",
    "test_demo.py",
    "test_faults.py",
    "test_training.py",
    "test_fronts.py",
    "test_release_trees.py",
    "test_no_tensorflow.py",
    "test_device_script.py",
    "test_python_api.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collect the longest test files first (a stable sort: the order inside each file is kept)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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


def set_display_rotation(path: Path, degrees: int) -> Path:
    """Write a display rotation into an MP4's track header, as phones do.

    ``degrees`` is counter-clockwise, as FFmpeg reads it.

    The ``tkhd`` box holds a 3x3 matrix in 16.16 fixed point; players rotate the decoded picture by it.
    """
    import math
    import struct

    data = bytearray(path.read_bytes())
    box = data.index(b"tkhd")
    version = data[box + 4]
    start = box + 8 + (20 if version == 0 else 32) + 16  # after version/flags, times, track id, duration, layer...
    radians = -math.radians(degrees)
    cos, sin = round(math.cos(radians) * 65536), round(math.sin(radians) * 65536)
    data[start : start + 36] = struct.pack(">9i", cos, sin, 0, -sin, cos, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(autouse=True)
def _project_logger_reset():
    """Each test starts, and leaves, the project logger at its default level (unset).

    A CLI run with --quiet raises it for the process, also from a module-scoped fixture set up before this one.
    """
    import logging

    logger = logging.getLogger("mpview")
    logger.setLevel(logging.NOTSET)
    yield
    logger.setLevel(logging.NOTSET)
