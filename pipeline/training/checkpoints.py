"""Checkpoints a kill cannot damage, and a resume that continues exactly where the run stopped.

``BestCheckpoint`` keeps the best model by a monitored metric, written under a temporary name and renamed.
``ResumableBackup`` saves the training state after every epoch (weights with the optimizer state, the epoch, early
stopping's counters) as a numbered file plus a small state file, both renamed into place; a damaged backup is
discarded in favour of the previous one, or the run starts over, saying so. ``EpochSeed`` reseeds the random sources
at the start of each epoch from (seed, epoch), so a resumed epoch draws what the uninterrupted one drew.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import TMP_MARK, atomic_path, write_text_atomic

log = get_logger(__name__)
STATE = "state.json"
KEEP = 2  # backups kept: the newest and the one before it, to fall back on


def save_atomically(save: Any, path: Path, model: Any = None) -> None:
    """Call ``save(temporary_path)`` and rename the result onto ``path``: ``path`` is whole or absent, never half.

    The temporary name keeps ``path``'s suffixes, since Keras picks the file format from them. With ``model``, a disk
    without room for its weights (and optimizer state) twice over is refused first, naming ``path``: HDF5, which Keras
    writes weights with, can crash the process when a full disk fails its writes.
    """
    if model is not None:
        _check_room(path, model)
    with atomic_path(path, keep_suffix=True) as partial:
        save(str(partial))


def _check_room(path: Path, model: Any) -> None:
    """``OSError(ENOSPC)`` naming ``path`` when its disk has less room than twice ``model``'s variables + 1 MiB."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + list(getattr(optimizer, "variables", None) or [])
    needed = 2 * sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables) + (1 << 20)
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)} (saving needs about {needed / 1e6:.1f} MB, {free / 1e6:.1f} MB free)",
            str(path),
        )


class BestCheckpoint(keras.callbacks.Callback):
    """Save the whole model whenever ``monitor`` beats its best value so far (``best``: from earlier epochs)."""

    def __init__(self, path: Path, monitor: str, best: float = -math.inf) -> None:
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = float(value)
        save_atomically(self.model.save, self.path, self.model)
        log.debug("epoch %d: %s %.4f, saved %s", epoch + 1, self.monitor, self.best, self.path)


class EpochSeed(keras.callbacks.Callback):
    """Seed Python, NumPy and every layer's seed generator from ``seed`` and the epoch number before every epoch.

    Not TensorFlow's global seed: setting it clears TensorFlow's kernel cache, so each epoch would re-instantiate the
    compiled step (seconds for a large model), and Keras layers draw from their own generators, not from it.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        base = (self.seed * 100003 + epoch * 7919) % 2**31
        random.seed(base)
        np.random.seed(base)
        # layers draw dropout masks from their own seed generators, whose state checkpoints do not hold
        generators = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        for index, state in enumerate(generators):
            state.assign(keras.ops.convert_to_tensor([base + index, 0], dtype=state.dtype))


class HistoryRows(keras.callbacks.Callback):
    """The history CSV rewritten after every epoch from the rows of the epochs that count as done, and that one.

    A resumed run starts after its last backup: rows the file holds from that epoch on (logged before a kill or a full
    disk stopped the backup) are dropped, so no epoch appears twice and none goes missing.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.rows: dict[int, dict[str, Any]] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.rows is None:  # the first epoch of this fit: the backup (restored at train begin) decided which
            from pipeline.training.fit import history_rows

            self.rows = {done: row for done, row in history_rows(self.path).items() if done < epoch}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from pipeline.training.fit import write_history_rows

        assert self.rows is not None
        self.rows[epoch] = {key: float(value) for key, value in (logs or {}).items()}
        write_history_rows(self.path, self.rows)


class ResumableBackup(keras.callbacks.Callback):
    """Per-epoch training state in ``folder``, restored at the start of a re-run; removed when training ends.

    Put it after the callbacks whose effects an epoch must have had (history rows, best checkpoint, early stopping):
    an epoch counts as done only once its backup exists, so a kill before that redoes the epoch.
    """

    def __init__(
        self,
        folder: Path,
        early_stopping: keras.callbacks.EarlyStopping | None = None,
        counters: dict[str, Any] | None = None,
    ) -> None:
        """``counters``: callbacks by name whose ``state()`` is saved each epoch and ``restore``d on resume."""
        super().__init__()
        self.folder, self.early_stopping, self.counters = Path(folder), early_stopping, dict(counters or {})

    # -- saving -----------------------------------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:05d}.weights.h5"
        save_atomically(self.model.save_weights, self.folder / name, self.model)
        state = {"epoch": epoch + 1, "weights": name, "stop_training": bool(self.model.stop_training)}
        if self.early_stopping is not None:
            state["early_stopping"] = {
                "wait": int(self.early_stopping.wait),
                "best": float(self.early_stopping.best),
                "best_epoch": int(self.early_stopping.best_epoch),
            }
        state.update({name: callback.state() for name, callback in self.counters.items()})
        write_text_atomic(self.folder / STATE, json.dumps(state))
        for old in self._backups()[KEEP:]:
            old.unlink(missing_ok=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        """Keep only the last epoch's backup and state: ``train --epochs`` with more epochs continues from them."""
        if self.folder.exists():
            keep = {STATE, *(p.name for p in self._backups()[:1])}
            for path in self.folder.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)

    # -- extending --------------------------------------------------------------------------------------------------
    def last_epoch(self) -> int | None:
        """The epoch the kept backup ends (``None`` without a usable state file and backup)."""
        state = self._state()
        return int(state["epoch"]) if state and (self.folder / state.get("weights", "")).is_file() else None

    def reopen(self) -> None:
        """Let a finished (or early-stopped) run train on from its last backup, as a resume would."""
        state = self._state()
        if state is not None:
            write_text_atomic(self.folder / STATE, json.dumps({**state, "stop_training": False}))

    # -- restoring --------------------------------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.folder.exists():
            return
        for path in self.folder.glob(f".*{TMP_MARK}*"):  # a save the kill interrupted
            path.unlink(missing_ok=True)
        state = self._state()
        candidates = self._backups()
        if state and (self.folder / state["weights"]).exists():
            candidates.remove(self.folder / state["weights"])
            candidates.insert(0, self.folder / state["weights"])
        for path in candidates:
            if self._load(path):
                epoch = int(path.name.split("-")[1].split(".")[0])
                self._resume_at(epoch, state if state and state.get("weights") == path.name else None)
                return
        if candidates:
            log.warning("%s: no usable training backup (all damaged): training starts over", self.folder)

    def _backups(self) -> list[Path]:
        """Backup weight files, newest first."""
        return sorted(self.folder.glob("epoch-*.weights.h5"), reverse=True)

    def _state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / STATE).read_text())
        except (OSError, ValueError):
            return None

    def _load(self, path: Path) -> bool:
        """Load one backup; a damaged one is moved aside with a warning."""
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(str(path))
            return True
        except Exception as exc:  # h5py, Keras and OS errors alike: any unloadable file is damaged
            aside = path.with_name(path.name + ".damaged")
            path.replace(aside)
            log.warning(
                "%s: damaged training backup (%s: %s), moved aside to %s", path, type(exc).__name__, exc, aside.name
            )
            return False

    def _resume_at(self, epoch: int, state: dict[str, Any] | None) -> None:
        """Continue after ``epoch``, with early stopping's counters as they were then (when the state file says)."""
        self.model._initial_epoch = epoch  # what Keras's own BackupAndRestore sets: fit() starts at this epoch
        if state is not None and state.get("stop_training"):  # it had stopped early: nothing is left to train
            self.model._initial_epoch = self.params.get("epochs", epoch)
        if state is None:
            log.warning(
                "%s: resuming after epoch %d from an older backup; early stopping counts afresh", self.folder, epoch
            )
        elif self.early_stopping is not None and "early_stopping" in state:
            saved = state["early_stopping"]
            self.early_stopping.wait, self.early_stopping.best = saved["wait"], saved["best"]
            self.early_stopping.best_epoch = saved["best_epoch"]
        for name, callback in self.counters.items():
            if state is not None and name in state:
                callback.restore(state[name])
        log.info("resuming training after epoch %d (%s)", epoch, self.folder)
