"""The installed package as a new user gets it: a wheel holding only ``pipeline``, ``stages`` and ``mpview`` (the split
files inside the package), whose ``mpview`` command prepares data from any folder.

The wheel is built offline from a copy of the checkout with the test environment's own setuptools
(``pip wheel --no-deps --no-build-isolation``) and installed with ``pip install --no-deps --target DIR``: the code under
test is the installed copy in DIR, and its dependencies (TensorFlow, OpenCV, dlib, ...) are the test environment's,
which a fresh virtual environment could only get by downloading them again. Every check that runs the installed copy
also asserts that ``mpview``, ``pipeline`` and the split files were loaded from DIR, not from the checkout (nor from an
editable install of it), and runs in a folder holding a ``cli.py`` of its own that must not be picked up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

from pipeline import __version__
from pipeline.manifest import DONE, Manifest
from trees import ouluvs2_cropped_tree

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = (
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "README.md",
    "mpview.py",
    "cli.py",
    "pipeline",
    "stages",
    "manifests",
)
SPLIT_FILES = sorted(p.name for p in (REPO / "manifests").glob("*.json"))
SYNTHETIC = [
    "--dataset",
    "synthetic",
    "--option",
    "n_per_class=2",
    "--option",
    "n_classes=2",
    "--option",
    "frames=8",
    "--option",
    "n_speakers=3",
    "--option",
    "perspectives=2",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout (so that no build/ or egg-info lands in it)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (built,) = out.glob("mpview-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the wheel is installed into (``pip install --target``), console script under ``bin/``."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A user's folder away from the checkout, with a ``cli.py`` of its own that nothing may run."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "cli.py").write_text("raise SystemExit('the folder\\'s own cli.py ran')\n")
    return folder


def _run(installed: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    """Run a command with only the installed copy on the path (not the checkout), in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(installed), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_wheel_holds_only_the_packages_and_the_split_files(wheel: Path) -> None:
    """Top level: ``mpview.py``, ``pipeline/``, ``stages/`` and the metadata; no ``cli.py``, no ``manifests/``."""
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"mpview.py", "pipeline", "stages", f"mpview-{__version__}.dist-info"}, sorted(top)
    packages = find_packages(str(REPO), include=["pipeline", "pipeline.*", "stages", "stages.*"])
    missing = [p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names]
    assert not missing, f"packages left out of the wheel: {missing}"
    data = "pipeline/recipes/split_files/"
    shipped = sorted(n.removeprefix(data) for n in names if n.startswith(data) and n.endswith(".json"))
    assert shipped == SPLIT_FILES and SPLIT_FILES
    entry_points = zipfile.ZipFile(wheel).read(f"mpview-{__version__}.dist-info/entry_points.txt").decode()
    assert "mpview = stages.cli:main" in entry_points


@pytest.mark.slow
def test_installed_package_finds_its_split_files(installed: Path, elsewhere: Path) -> None:
    """``import mpview`` and the OuluVS2 split definitions come from the installed copy."""
    script = textwrap.dedent("""
        import json, mpview, pipeline
        from pipeline.recipes.splits import load_split_definition, shipped_split_files

        definition = load_split_definition("ouluvs2_speaker_independent")
        print(json.dumps({"mpview": mpview.__file__, "pipeline": pipeline.__file__, "version": mpview.__version__,
                          "splits": str(shipped_split_files()), "test": sorted(definition.speakers["test"]),
                          "api": [callable(mpview.prepare), mpview.PrepareConfig.__name__, mpview.Workspace.__name__]}))
    """)
    run = _run(installed, elsewhere, sys.executable, "-c", script)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    for key in ("mpview", "pipeline", "splits"):
        assert Path(found[key]).resolve().is_relative_to(installed.resolve()), (key, found[key])
    assert found["version"] == __version__ and found["api"] == [True, "PrepareConfig", "Workspace"]
    assert "6" in found["test"] and "8" in found["test"]


@pytest.mark.slow
def test_installed_command_prepares_the_synthetic_data(installed: Path, elsewhere: Path) -> None:
    """``mpview --version`` and ``mpview prepare --dataset synthetic`` from another folder: every sample cropped."""
    command = str(installed / "bin" / "mpview")
    version = _run(installed, elsewhere, command, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mpview {__version__}", version.stderr
    run = _run(installed, elsewhere, command, "prepare", "-q", "--work", "work", *SYNTHETIC)
    assert run.returncode == 0, run.stderr
    manifest = Manifest.load(elsewhere / "work" / "manifest.jsonl")
    assert manifest.dataset == "synthetic" and len(manifest) == 4
    assert all(s.status("prepare") == DONE for s in manifest.samples)
    assert list((elsewhere / "work" / "roi").rglob("*.h5"))


@pytest.mark.slow
def test_installed_command_splits_ouluvs2_by_the_shipped_speaker_lists(
    installed: Path, elsewhere: Path, grid_dir: Path
) -> None:
    """OuluVS2 prepared by the installed command: its speaker-independent split (test speakers 6 and 8) applies."""
    root = ouluvs2_cropped_tree(elsewhere / "OuluVS2", grid_dir, frames=8, utterances=(31,), views=(1,))
    run = _run(
        installed,
        elsewhere,
        str(installed / "bin" / "mpview"),
        "prepare",
        "-q",
        "--work",
        "oulu",
        "--dataset",
        "ouluvs2",
        "--root",
        str(root),
        "--views",
        "1",
    )
    assert run.returncode == 0, run.stderr
    manifest = Manifest.load(elsewhere / "oulu" / "manifest.jsonl")
    splits = {s.speaker: s.split for s in manifest.samples}
    assert splits["s6"] == splits["s8"] == "test"
    assert {splits[f"s{k}"] for k in (1, 2, 3, 4, 5)} <= {"train", "val"}
