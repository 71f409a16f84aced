"""The per-shard work of ``extract``: ROI clips in, per-frame embeddings out, batched across samples.

Reading the next samples' ROI clips (HDF5 decompression) runs in a background thread while the
backbone embeds the current batch, and frames of several samples share one forward pass.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.runner import SampleError, ShardTask, write_shard
from pipeline.shards import ShardError
from pipeline.sequences import read_shard_samples

EMBEDDING_KIND = "embedding"


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build; hashable so each worker process builds it once and reuses it."""

    name: str
    weights: str | None = None
    cache_dir: str | None = None
    batch_size: int = 32
    pixel_size: int = 32
    pca: str | None = None


@functools.lru_cache(maxsize=2)
def load_backbone(spec: BackboneSpec):
    """Build (once per process) the backbone a spec names."""
    from pipeline.backbones.registry import build_backbone

    kwargs: dict[str, Any] = {"cache_dir": spec.cache_dir, "batch_size": spec.batch_size, "pixel_size": spec.pixel_size, "pca": spec.pca}
    if spec.weights is not None:
        kwargs["weights"] = spec.weights
    return build_backbone(spec.name, **kwargs)


@dataclasses.dataclass(frozen=True)
class ExtractJob:
    """Picklable shard job: embed every frame of every perspective of the shard's samples."""

    work: str
    backbone: BackboneSpec
    perspectives: tuple[str, ...]
    classes: tuple[str, ...]
    dtype: str = "float16"
    frames_per_batch: int = 256
    strict: bool = False

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        model = load_backbone(self.backbone)
        attrs = {"stage": "extract", "backbone": model.name, "dim": model.dim, "weights": model.weights_label, "dtype": self.dtype, "perspectives": list(self.perspectives)}
        return write_shard(task, EMBEDDING_KIND, attrs, self._outcomes(task, model), self.strict)

    def _outcomes(self, task: ShardTask, model) -> Iterator[tuple[str, Any]]:
        pending: list[tuple[dict[str, Any], dict[str, np.ndarray]]] = []
        frames = 0
        for sample, clips in self._read_ahead(task):
            if isinstance(clips, SampleError):
                yield from self._embed(pending, model)
                pending, frames = [], 0
                yield sample["id"], clips
                continue
            pending.append((sample, clips))
            frames += sum(len(c) for c in clips.values())
            if frames >= self.frames_per_batch:
                yield from self._embed(pending, model)
                pending, frames = [], 0
        yield from self._embed(pending, model)

    def _read_ahead(self, task: ShardTask) -> Iterator[tuple[dict[str, Any], Any]]:
        """Yield (sample, clips or SampleError), reading the next sample while the caller computes."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            futures = [pool.submit(self._read, sample) for sample in task.samples[:2]]
            for index, sample in enumerate(task.samples):
                if index + 2 < len(task.samples):
                    futures.append(pool.submit(self._read, task.samples[index + 2]))
                yield sample, futures[index].result()

    def _read(self, sample: dict[str, Any]) -> dict[str, np.ndarray] | SampleError:
        record = sample.get("stages", {}).get("prepare", {})
        shard = Path(self.work) / record.get("shard", "")
        try:
            return next(read_shard_samples(shard, [sample["id"]], list(self.perspectives))).arrays
        except (ShardError, StopIteration) as exc:
            return SampleError(f"ROI clips unreadable: {exc}", "bad-roi-shard")

    def _embed(self, pending: list[tuple[dict[str, Any], dict[str, np.ndarray]]], model) -> Iterator[tuple[str, Any]]:
        """Embed the pending samples' frames in one batch per perspective and split them back."""
        if not pending:
            return
        out: list[dict[str, np.ndarray]] = [{} for _ in pending]
        for view in self.perspectives:
            clips = [clips[view] for _, clips in pending]
            features = model.embed(np.concatenate(clips)).astype(self.dtype)
            bounds = np.cumsum([0] + [len(c) for c in clips])
            for i in range(len(pending)):
                out[i][view] = features[bounds[i] : bounds[i + 1]]
        index = {c: i for i, c in enumerate(self.classes)}
        for (sample, _), arrays in zip(pending, out):
            label = sample.get("label")
            attrs = {"label": label, "label_index": index.get(label, -1), "split": sample.get("split"), "speaker": sample.get("speaker")}
            yield sample["id"], {"arrays": arrays, "attrs": attrs, "record": {"dim": model.dim, "weights": model.weights_label}}
