"""What ran where: package versions, backend, device; stamped into manifests, shards and reports."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
from typing import Any

PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "dlib-bin",
    "av",
    "h5py",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "jax",
    "scikit-learn",
    "joblib",
)


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the packages the pipeline's results depend on."""
    from pipeline import __version__

    found = {"mpview": __version__}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, Any]:
    """Python, platform and package versions (no heavy imports)."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": package_versions()}
