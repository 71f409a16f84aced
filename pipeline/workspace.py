"""A work folder: the one place that knows where each stage's outputs live and what each stage is called.

Layout::

    WORK/manifest.jsonl            samples, splits, per-stage records, run records
    WORK/data/                     generated datasets (synthetic, moving digits)
    WORK/roi/                      prepare: ROI clip shards, contact_sheet.png
    WORK/features/NAME/            extract: embedding shards (and pca.npz for the pixels backbone)
    WORK/models/NAME/              train: best.keras, spec.json, history.csv, config.json, complete.json,
                                   backup/, tensorboard/ (and pretrain/ for composite pretraining)
    WORK/reports/                  evaluate: JSON / Markdown reports, plots, comparison

Stage keys name a stage's records in the manifest: ``prepare`` for the ROI clips, ``extract:NAME`` for features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

from pipeline.errors import ConfigError, DataError
from pipeline.manifest import Manifest

PREPARE = "prepare"
EXTRACT_PREFIX = "extract:"
MANIFEST_NAME = "manifest.jsonl"
BEST = "best.keras"  # the checkpoint `evaluate` scores
SPEC = "spec.json"  # what a training run is, beside its checkpoint
TRAIN_BEST = "train_best.keras"  # the memory model's training network (best.keras holds its inference network)
COMPOSITE = "composite.keras"  # composite pretraining's autoencoder, under PRETRAIN
PRETRAIN = "pretrain"  # composite pretraining's folder inside a run folder
HISTORY = "history.csv"  # a fit's per-epoch history, kept across resumes
RUN_CONFIG = "config.json"  # a fit's config, run info and environment
COMPLETE = "complete.json"  # written when a fit ended (a re-run then only reads the history)
BACKUP = "backup"  # a fit's resumable state, each epoch
TENSORBOARD = "tensorboard"  # a fit's TensorBoard logs


def shard_path(work: Path | str, record: dict) -> Path:
    """The shard a sample's stage record points to (stored relative to the work folder ``work``)."""
    return Path(work) / record.get("shard", "")


def features_stage(name: str) -> str:
    """The manifest key of the features called ``name``."""
    return f"{EXTRACT_PREFIX}{name}"


def features_name(stage: str) -> str | None:
    """The features name of an ``extract:NAME`` key; None for ``prepare`` (ROI pixels)."""
    return stage[len(EXTRACT_PREFIX) :] if stage.startswith(EXTRACT_PREFIX) else None


@dataclass(frozen=True)
class Workspace:
    """A run folder and every path in it; stages and the library ask it, never spell a path themselves."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def data(self) -> Path:
        """Where generated datasets are written when no ``--root`` is given."""
        return self.root / "data"

    @property
    def roi(self) -> Path:
        return self.root / "roi"

    @property
    def contact_sheet(self) -> Path:
        return self.roi / "contact_sheet.png"

    @property
    def features_root(self) -> Path:
        return self.root / "features"

    def features(self, name: str) -> Path:
        return self.features_root / name

    def pca(self, name: str) -> Path:
        """The pixel PCA fitted for the features ``name``."""
        return self.features(name) / "pca.npz"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def run(self, name: str) -> Path:
        """A training run's folder."""
        return self.models / name

    @staticmethod
    def pretrain(run_dir: Path) -> Path:
        """Composite pretraining's folder (its checkpoint, history and predictions) inside a run folder."""
        return Path(run_dir) / PRETRAIN

    @staticmethod
    def checkpoint(run_dir: Path) -> Path:
        """The best checkpoint inside a run folder."""
        return Path(run_dir) / BEST

    def trained_runs(self) -> list[Path]:
        """Every run folder holding a best checkpoint, by name."""
        return sorted(p for p in self.models.glob("*") if self.checkpoint(p).exists())

    def run_dirs(self, names: list[str] | None) -> list[Path]:
        """The run folders ``names`` mean (run names, or folders), or every trained run."""
        dirs = [Path(n) if Path(n).is_dir() else self.run(n) for n in names] if names else self.trained_runs()
        if not dirs:
            raise ConfigError(f"no trained runs under {self.models}: run `train` first")
        return dirs

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def shard(self, record: dict) -> Path:
        """The shard a sample's stage record points to (stored relative to the work folder)."""
        return shard_path(self.root, record)

    def _check_not_a_file(self) -> None:
        """A file where the folder should be is an error naming it."""
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"--work {self.root}: is a file, not a folder")

    def create(self) -> None:
        """Make the folder (and its parents)."""
        self._check_not_a_file()
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self, what: str) -> ContextManager[None]:
        """Hold the folder's lock while one process writes its manifest (``what`` is shown to a second process)."""
        from pipeline.execution.worklock import work_lock

        if not self.manifest_path.exists():
            self.load_manifest()  # the error that says which stage makes it
        return work_lock(self.root, what)

    def load_manifest(self) -> Manifest:
        """The manifest, or an error saying which stage makes it."""
        self._check_not_a_file()
        if not self.manifest_path.exists():
            raise DataError(f"no manifest in {self.root}: run `prepare` first (or pass the right --work)")
        return Manifest.load(self.manifest_path)
