"""A contact sheet of prepared ROI clips, read back from the shards, so a person can look at the crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.manifest import DONE, Manifest
from pipeline.media.contact_sheet import write_contact_sheet
from pipeline.storage.readers import read_sample
from pipeline.workspace import PREPARE, shard_path


def write_roi_contact_sheet(
    path: Path, manifest: Manifest, work: Path, n_samples: int = 12, seed: int = 0
) -> Path | None:
    """One row per (sample, perspective) for up to ``n_samples`` prepared samples chosen with a seed."""
    done = [s for s in manifest.samples if s.status(PREPARE) == DONE]
    if not done:
        return None
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(done), size=min(n_samples, len(done)), replace=False))
    rows = []
    for index in chosen:
        sample = done[index]
        arrays = read_sample(shard_path(work, sample.stages[PREPARE]), sample.id, manifest.perspectives).arrays
        rows += [(f"{sample.id} {view} [{sample.label}]", arrays[view]) for view in manifest.perspectives]
    return write_contact_sheet(path, rows)
