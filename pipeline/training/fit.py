"""Fit a compiled Keras model with the run semantics researchers expect.

Best checkpoint by validation accuracy, early stopping, resume after an interruption that continues exactly as the
uninterrupted run would have (``pipeline.training.checkpoints``), a CSV history that survives resumes, TensorBoard logs,
seeds, and the run's config and versions saved beside the checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.execution.logs import get_logger
from pipeline.execution.provenance import environment
from pipeline.storage.atomic import write_text_atomic
from pipeline.workspace import BACKUP, BEST, COMPLETE, HISTORY, RUN_CONFIG, TENSORBOARD

log = get_logger(__name__)


@dataclass
class FitConfig:
    """How to fit: epochs, batch, patience, seed; ``monitor`` picks the best checkpoint."""

    epochs: int = 50
    batch_size: int = 60
    patience: int = 10
    early_stopping: bool = True  # False: every epoch runs (the best checkpoint is still kept)
    lr_schedule: dict[str, Any] | None = None  # recorded schedule (``optimizers.schedule_callback``); None: constant
    seed: int = 0
    monitor: str = "val_accuracy"
    checkpoint: str = BEST
    tensorboard: bool = True
    verbose: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _tensorboard_available() -> bool:
    """Whether TensorBoard logs can be written here (they need the tensorboard and tensorflow packages)."""
    import importlib.util

    missing = [name for name in ("tensorboard", "tensorflow") if importlib.util.find_spec(name) is None]
    if missing:
        log.warning(
            "TensorBoard logs skipped: %s not installed (pip install %s)", " and ".join(missing), " ".join(missing)
        )
    return not missing


def fit(
    model,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None,
    out_dir: Path,
    config: FitConfig,
    run_info: dict[str, Any],
    callbacks: list[Any] | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` on ``train`` and return the full history.

    ``train`` is (x, y) arrays, or a batch sequence or ``tf.data`` dataset (y None).

    Re-running with the same ``out_dir`` resumes from the last finished epoch; a finished run is not redone.
    """
    import keras

    from pipeline.training.batches import ArrayBatches, AugmentedClips, EpochBatches, EpochSync, FreshMovingDigits
    from pipeline.training.checkpoints import BestCheckpoint, EpochSeed, HistoryRows, ResumableBackup, save_atomically
    from pipeline.training.optimizers import schedule_callback

    if is_complete(out_dir, config):
        log.info("%s already finished training; pass --force to train it anew, or --name to train another run", out_dir)
        return read_history(out_dir / HISTORY)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out_dir / RUN_CONFIG,
        json.dumps(
            {**run_info, "fit": asdict(config), "environment": environment()}, indent=2, sort_keys=True, default=str
        ),
    )
    history_path = out_dir / HISTORY
    previous = read_history(history_path)
    best_so_far = max(previous.get(config.monitor, [-math.inf]))
    early = schedule = None
    if val is not None and config.early_stopping:
        early = keras.callbacks.EarlyStopping(
            monitor=config.monitor, mode="max", patience=config.patience, restore_best_weights=False
        )
    # order matters: an epoch's history row, best checkpoint and early-stopping step all happen before its backup,
    # so a run killed in between redoes that epoch, with the same random draws (EpochSeed)
    if val is not None:
        schedule = schedule_callback(config.lr_schedule, config.monitor)
    # the schedule logs each epoch's learning rate before the history row is written
    callbacks = list(callbacks or []) + [c for c in (schedule,) if c] + [EpochSeed(config.seed)]
    callbacks.append(HistoryRows(history_path))
    if val is not None:
        callbacks += [c for c in (BestCheckpoint(out_dir / config.checkpoint, config.monitor, best_so_far), early) if c]
    callbacks.append(ResumableBackup(out_dir / BACKUP, early, {"lr_schedule": schedule} if schedule else None))
    if config.tensorboard and _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / TENSORBOARD), write_graph=False))
    keras.utils.set_random_seed(config.seed)
    x, y = train
    if y is not None:
        x, y = ArrayBatches(x, y, config.batch_size, config.seed), None
    # a batch sequence orders its own batches (EpochBatches: seeded per epoch)
    kwargs: dict[str, Any] = {
        "epochs": config.epochs,
        "callbacks": callbacks,
        "verbose": config.verbose,
        "shuffle": False,
    }
    if isinstance(x, (EpochBatches, AugmentedClips, FreshMovingDigits)):
        callbacks.append(EpochSync(x))
    if val is not None:
        kwargs["validation_data"] = val if val[1] is not None else val[0]
    model.fit(x, y, **kwargs)
    if val is None:
        save_atomically(model.save, out_dir / config.checkpoint)
    history = read_history(history_path)
    write_text_atomic(out_dir / "history.json", json.dumps(history, indent=1))
    write_text_atomic(
        out_dir / COMPLETE,
        json.dumps(
            {"checkpoint": config.checkpoint, "epochs": len(history.get("loss", [])), "fit": asdict(config)},
            default=str,
        ),
    )
    return history


def is_complete(out_dir: Path, config: FitConfig) -> bool:
    """Whether ``out_dir`` holds a finished fit of this checkpoint (its marker and checkpoint exist)."""
    marker = out_dir / COMPLETE
    if not marker.exists() or not (out_dir / config.checkpoint).exists():
        return False
    try:
        return json.loads(marker.read_text()).get("checkpoint") == config.checkpoint
    except ValueError:
        return False


def read_history(path: Path) -> dict[str, list[float]]:
    """The per-epoch metrics in a history CSV (empty when absent); duplicate epochs keep the latest."""
    rows = history_rows(path)
    history: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            if value not in ("", "NA", None):
                history.setdefault(key, []).append(float(value))
    return history


def history_rows(path: Path) -> dict[int, dict[str, str]]:
    """Epoch -> its row (metric -> text) in a history CSV; empty when absent; a later row of one epoch wins."""
    if not path.exists():
        return {}
    rows: dict[int, dict[str, str]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("epoch", "").isdigit():
                rows[int(row["epoch"])] = {k: v for k, v in row.items() if k != "epoch"}
    return rows


def write_history_rows(path: Path, rows: dict[int, dict[str, Any]]) -> None:
    """Write ``rows`` (epoch -> metrics) as a history CSV, in epoch order, atomically."""
    keys = sorted({key for row in rows.values() for key in row})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for epoch in sorted(rows):
        writer.writerow([epoch, *(rows[epoch].get(key, "NA") for key in keys)])
    write_text_atomic(path, out.getvalue())


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Integer labels -> float32 one-hot rows."""
    out = np.zeros((len(labels), n_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def load_checkpoint(path: Path):
    """Load a saved model with ``safe_mode`` on (no arbitrary code from the file).

    Every registered model's layers resolve.
    """
    import zipfile

    import keras

    from pipeline.models import registry
    from pipeline.training.optimizers import custom_objects

    problem = checkpoint_problem(Path(path))
    if problem:
        raise DataError(f"{path}: unreadable checkpoint ({problem}); retrain it")
    try:
        known = {**registry.custom_objects(), **custom_objects()}
        return keras.models.load_model(path, safe_mode=True, custom_objects=known)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        size = Path(path).stat().st_size if Path(path).exists() else 0
        raise DataError(
            f"{path}: unreadable checkpoint ({size} bytes; {type(exc).__name__}: {exc}); retrain it"
        ) from None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a saved Keras model, in our words (missing, unreadable, not an archive, truncated)."""
    import zipfile

    if not path.is_file():
        return "no such file"
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if path.suffix == ".h5":
        return None if head == b"\x89HDF\r\n\x1a\n" else f"{size} bytes, not an HDF5 file"
    if not head.startswith(b"PK"):
        return f"{size} bytes, not a Keras archive (a .keras file is a zip)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return f"{size} bytes, a truncated or damaged Keras archive"
    return None if "config.json" in names else f"{size} bytes, a zip without a model's config.json, not a Keras archive"
