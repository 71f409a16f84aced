"""The per-shard work of ``extract``: ROI clips in, per-frame embeddings out, batched across samples.

Reading the next samples' ROI clips (HDF5 decompression) runs in a background thread while the
backbone embeds the current batch; the frames of every perspective of consecutive samples stream
through the backbone in whole batches (a remainder is carried to the next call, not padded), so
only a shard's last batch is padded.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
from typing import Any, Iterator

import numpy as np

from pipeline.execution.runner import RunError, SampleError, ShardTask, write_shard
from pipeline.storage.readers import read_sample
from pipeline.storage.shards import ShardError
from pipeline.workspace import PREPARE, shard_path

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
    preprocess: str = "auto"  # VGGFace backbones: v1, v2, released, or auto (the architecture's own)


@functools.lru_cache(maxsize=2)
def load_backbone(spec: BackboneSpec):
    """Build (once per process) the backbone a spec names."""
    from pipeline.backbones.registry import build_backbone

    kwargs: dict[str, Any] = {
        "cache_dir": spec.cache_dir,
        "batch_size": spec.batch_size,
        "pixel_size": spec.pixel_size,
        "pca": spec.pca,
        "preprocess": spec.preprocess,
    }
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
    weights_label: str | None = None  # what the client loaded ("sha256:..."): every worker must load the same
    compression: str | None = None  # feature shard compression (None: the format's default)

    @functools.cached_property
    def _class_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        model = load_backbone(self.backbone)
        if self.weights_label is not None and model.weights_label != self.weights_label:
            raise RunError(
                f"{task.path}: this worker loaded weights {model.weights_label}, not the {self.weights_label} "
                f"the command checked ({self.backbone.weights or 'the cache'}): give every worker the same file"
            )
        attrs = {
            "stage": "extract",
            "backbone": model.name,
            "dim": model.dim,
            "weights": model.weights_label,
            "dtype": self.dtype,
            "perspectives": list(self.perspectives),
            "preprocess": getattr(model, "preprocess", "none"),
        }
        return write_shard(task, EMBEDDING_KIND, attrs, self._outcomes(task, model), self.strict, self.compression)

    def _outcomes(self, task: ShardTask, model) -> Iterator[tuple[str, Any]]:
        """Stream every perspective's frames of consecutive samples through the backbone in whole batches.

        Frames wait in a buffer until ``frames_per_batch`` are there; then every whole batch of them is
        embedded and the few left over are carried into the next call, so only the shard's last batch is
        padded. Samples are yielded in order as soon as all their frames are embedded.
        """
        unit = max(1, int(getattr(model, "batch_size", 1) or 1))
        queue: collections.deque[_Pending] = collections.deque()
        buffer: list[tuple[_Pending, str, np.ndarray]] = []
        buffered = 0
        for sample, clips in self._read_ahead(task):
            if isinstance(clips, SampleError):
                queue.append(_Pending(sample, error=clips))
            else:
                entry = _Pending(sample, remaining=sum(len(clips[perspective]) for perspective in self.perspectives))
                queue.append(entry)
                for perspective in self.perspectives:
                    entry.parts[perspective] = []
                    buffer.append((entry, perspective, clips[perspective]))
                    buffered += len(clips[perspective])
                if buffered >= self.frames_per_batch:
                    buffered = self._embed(buffer, buffered // unit * unit, model)
            yield from self._finished(queue, model)
        self._embed(buffer, buffered, model)
        yield from self._finished(queue, model)

    def _read_ahead(self, task: ShardTask) -> Iterator[tuple[dict[str, Any], Any]]:
        """Yield (sample, clips or SampleError), reading the next sample while the caller computes."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            futures = [pool.submit(self._read, sample) for sample in task.samples[:2]]
            for index, sample in enumerate(task.samples):
                if index + 2 < len(task.samples):
                    futures.append(pool.submit(self._read, task.samples[index + 2]))
                yield sample, futures[index].result()

    def _read(self, sample: dict[str, Any]) -> dict[str, np.ndarray] | SampleError:
        record = sample.get("stages", {}).get(PREPARE, {})
        shard = shard_path(self.work, record)
        try:
            return read_sample(shard, sample["id"], list(self.perspectives)).arrays
        except ShardError as exc:
            return SampleError(f"ROI clips unreadable: {exc}", "bad-roi-shard")

    def _embed(self, buffer: list[tuple["_Pending", str, np.ndarray]], count: int, model) -> int:
        """Embed the first ``count`` buffered frames in one call and hand the features to their samples.

        Returns the frames left.
        """
        if count <= 0:
            return sum(len(frames) for _, _, frames in buffer)
        pieces, gathered = [], 0
        for _, _, frames in buffer:
            if gathered >= count:
                break
            pieces.append(frames[: count - gathered])
            gathered += len(pieces[-1])
        features = model.embed(np.concatenate(pieces)).astype(self.dtype)
        used = 0
        while buffer and used < count:
            entry, perspective, frames = buffer[0]
            take = min(len(frames), count - used)
            entry.parts[perspective].append(features[used : used + take])
            entry.remaining -= take
            used += take
            if take == len(frames):
                buffer.pop(0)
            else:
                buffer[0] = (entry, perspective, frames[take:])
        return sum(len(frames) for _, _, frames in buffer)

    def _finished(self, queue: collections.deque["_Pending"], model) -> Iterator[tuple[str, Any]]:
        """Yield, in order, the samples at the head of the queue whose frames are all embedded (or that failed)."""
        index = self._class_index
        while queue and (queue[0].error is not None or queue[0].remaining == 0):
            entry = queue.popleft()
            sample = entry.sample
            if entry.error is not None:
                yield sample["id"], entry.error
                continue
            arrays = {
                perspective: np.concatenate(parts) if parts else np.zeros((0, model.dim), self.dtype)
                for perspective, parts in entry.parts.items()
            }
            label = sample.get("label")
            attrs = {
                "label": label,
                "label_index": index.get(label, -1),
                "split": sample.get("split"),
                "speaker": sample.get("speaker"),
            }
            yield (
                sample["id"],
                {"arrays": arrays, "attrs": attrs, "record": {"dim": model.dim, "weights": model.weights_label}},
            )


@dataclasses.dataclass(eq=False)
class _Pending:
    """A sample read from its ROI shard whose features are still being computed (or its read failure)."""

    sample: dict[str, Any]
    remaining: int = 0
    parts: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    error: SampleError | None = None
