"""Packages: the design's ``pipeline`` and ``stages`` trees, found, plus the split files mapped from ``manifests/``.

Everything else about the distribution is in setup.cfg; ``find:`` there cannot see the mapped package.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["pipeline", "pipeline.*", "stages", "stages.*"]), "pipeline.recipes.split_files"]
)
