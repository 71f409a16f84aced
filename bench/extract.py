"""Extract-stage benchmark: the real extract path against a one-frame-at-a-time loop and the model's batched pass.

All three run in one process on the same model and cores:

* ``per_frame``: what the released MP-LSTM code does, per frame: resize the ROI to 224 and preprocess on
  the CPU (``pipeline.backbones.preprocess.cpu_inputs``), ``model.predict(x[None], verbose=0)`` (Keras 2's
  default verbosity); it is also the reference the pipeline's embeddings must equal (within 1e-3 relative
  L2 per frame, ``embed_rel_l2_max``);
* ``model_only``: ``predict_on_batch`` on random, already preprocessed ``[batch, 224, 224, 3]`` input,
  the ceiling for this model, batch size and device;
* ``pipeline``: ``ExtractJob`` on a shard task end to end: read the ROI clips from an HDF5 ROI
  shard (read-ahead thread), embed across samples (the uint8 crops go into the model, whose first layer
  resizes and preprocesses them in the graph), write the float16 embedding shard;
* ``feed``: the input side alone, on one core (OpenCV limited to one thread): read each sample's ROI
  clips from the shard and cut them into the model's uint8 input batches, no model
  (``feed_img_per_s_per_core``, images per CPU-second: what one core can feed an accelerator; with
  ``--preprocess released`` the OpenCV resize to 224 is part of it, as in the released code).

The ROI clips are real GRID mouth crops (``pipeline.media.video.read_frames`` + ``pipeline.media.roi.crop_clip``)
when ``../shared/data/grid`` holds videos, else uniform noise; cropping is not timed. The model build,
first-call tracing and a warm-up task are not timed either. The three measurements are interleaved in
``--rounds`` rounds (each round: a slice of the per-frame loop, a few model-only batches, one shard task
of ``--samples`` new samples), so drifting load from other processes hits all three alike; each
figure is the fastest round (as in bench/prepare.py), the pooled figures over all rounds are shown too.
Weights are random (``--weights random``): the figures are for timing only, which does not depend on
weight values.

    python bench/extract.py [--backbone resnet50] [--preprocess auto] [--batch-size 32] [--rounds 3] [--samples 4]
                            [--perspectives 2] [--frames 30] [--per-frame-count 21] [--model-batches 6] [--clips DIR]

Prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipeline.backbones.preprocess import cpu_inputs  # noqa: E402
from pipeline.backbones.registry import KERAS_SPECS  # noqa: E402
from pipeline.execution.device import describe  # noqa: E402
from pipeline.execution.extract_job import BackboneSpec, ExtractJob, load_backbone  # noqa: E402
from pipeline.execution.prepare_job import ROI_KIND  # noqa: E402
from pipeline.execution.runner import ShardTask  # noqa: E402
from pipeline.storage.readers import read_sample  # noqa: E402
from pipeline.storage.shards import ShardReader, ShardWriter  # noqa: E402

DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "grid"
VIDEO_SUFFIXES = {".mpg", ".mp4", ".avi", ".mov", ".mkv"}
WEIGHTS_LABEL = "random (timing only)"
ROI_SIZE = 96


def roi_clips(folder: Path, count: int, frames: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """``count`` uint8 ``[frames, 96, 96, 3]`` ROI clips.

    GRID mouth crops cut from the videos in ``folder``, else noise.
    """
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)[:3] if folder.is_dir() else []
    sources: list[np.ndarray] = []
    if paths:
        from pipeline.media.roi import RoiConfig, crop_clip
        from pipeline.media.video import read_frames

        config = RoiConfig(roi="mouth", size=(ROI_SIZE, ROI_SIZE))
        for path in paths:
            try:
                sources.append(crop_clip(read_frames(path), config, str(path)).clip)
            except Exception as exc:  # noqa: BLE001 - a clip that cannot be cropped is skipped, noise is the fallback
                print(f"(skipping {path.name}: {exc})", file=sys.stderr)
    if not sources:
        rng = np.random.default_rng(seed)
        return [
            rng.integers(0, 256, (frames, ROI_SIZE, ROI_SIZE, 3), dtype=np.uint8) for _ in range(count)
        ], "synthetic noise"
    clips = []
    for index in range(count):  # different clips and offsets, so no two (sample, perspective) pairs are identical
        source = sources[index % len(sources)]
        if len(source) < frames:
            source = np.concatenate([source] * -(-frames // len(source)))
        start = (index // len(sources) * 7) % (len(source) - frames + 1)
        clips.append(np.ascontiguousarray(source[start : start + frames]))
    return clips, f"GRID mouth crops from {len(sources)} video(s) in {folder}"


def write_roi_shard(work: Path, clips: list[np.ndarray], samples: int, views: tuple[str, ...]) -> list[dict[str, Any]]:
    """Store the clips as a prepare-stage ROI shard under ``work``.

    Returns manifest-style sample dicts pointing at it.
    """
    location = "roi/roi-00000-of-00001.h5"
    (work / "roi").mkdir(parents=True)
    records = []
    with ShardWriter(work / location, ROI_KIND, {"stage": "prepare", "perspectives": list(views)}) as writer:
        for index in range(samples):
            sample_id = f"bench/s{index:03d}"
            arrays = {view: clips[index * len(views) + j] for j, view in enumerate(views)}
            writer.add(sample_id, arrays, {"label": f"w{index % 4}", "split": "train", "speaker": "s1"})
            records.append(
                {
                    "id": sample_id,
                    "label": f"w{index % 4}",
                    "split": "train",
                    "speaker": "s1",
                    "sources": {view: {"path": f"{sample_id}.mpg", "kind": "video"} for view in views},
                    "stages": {"prepare": {"status": "done", "shard": location}},
                }
            )
    return records


class Timer:
    """Per-round wall and process-CPU seconds and item counts of one method."""

    def __init__(self) -> None:
        self.rounds: list[tuple[int, float, float]] = []  # (items, wall s, cpu s)

    def time(self, items: int, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        self.rounds.append((items, time.perf_counter() - wall, time.process_time() - cpu))
        return result

    @property
    def items(self) -> int:
        return sum(r[0] for r in self.rounds)

    @property
    def wall(self) -> float:
        return sum(r[1] for r in self.rounds)

    @property
    def best(self) -> float:
        """Images/s of the fastest round."""
        return max(items / wall for items, wall, _ in self.rounds)

    @property
    def pooled(self) -> float:
        """Images/s over all rounds."""
        return self.items / self.wall

    @property
    def cpu(self) -> float:
        """Images per process-CPU-second over all rounds (all threads of this process)."""
        return self.items / sum(r[2] for r in self.rounds)


def split(total: int, parts: int) -> list[int]:
    """``total`` cut into ``parts`` near-equal counts."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--backbone", choices=sorted(KERAS_SPECS), default="resnet50")
    parser.add_argument(
        "--preprocess",
        choices=("auto", "v1", "v2", "released"),
        default="auto",
        help="input preprocessing (as `extract --preprocess`)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="frames per forward pass (as `extract --batch-size`)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest counts")
    parser.add_argument("--samples", type=int, default=4, help="samples in each round's shard task")
    parser.add_argument("--perspectives", type=int, default=2, help="perspectives per sample")
    parser.add_argument("--frames", type=int, default=30, help="frames per clip")
    parser.add_argument(
        "--per-frame-count", type=int, default=21, help="frames for the one-at-a-time loop (all rounds)"
    )
    parser.add_argument("--model-batches", type=int, default=6, help="batches for the model-only figure (all rounds)")
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="folder of talking-face videos (GRID)")
    args = parser.parse_args(argv)
    rounds = args.rounds
    if (
        min(rounds, args.samples, args.perspectives, args.frames, args.batch_size) < 1
        or min(args.per_frame_count, args.model_batches) < rounds
    ):
        parser.error("counts must be positive, and --per-frame-count and --model-batches at least --rounds")

    views = tuple(f"v{j + 1}" for j in range(args.perspectives))
    clips, source = roi_clips(args.clips, rounds * args.samples * args.perspectives, args.frames)
    spec = BackboneSpec(args.backbone, "random", None, args.batch_size, preprocess=args.preprocess)
    started = time.perf_counter()
    backbone = load_backbone(spec)  # the same (cached) object ExtractJob uses
    build_s = time.perf_counter() - started
    info = describe()
    model, mode = backbone.model, backbone.preprocess

    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        work = Path(tmp)
        samples = write_roi_shard(work, clips, rounds * args.samples, views)
        (work / "features").mkdir()
        job = ExtractJob(str(work), spec, views, tuple(f"w{i}" for i in range(4)))
        tasks = [
            ShardTask(
                r,
                str(work / "features" / f"emb-{r:05d}-of-{rounds:05d}.h5"),
                tuple(samples[r * args.samples : (r + 1) * args.samples]),
            )
            for r in range(rounds)
        ]

        # warm-up (untimed): one small task through the whole path, every padded batch shape, the per-frame path
        started = time.perf_counter()
        job(ShardTask(0, str(work / "features" / "warmup.h5"), tuple(samples[:1])))
        size = model.inputs[0].shape[1]
        buckets = [1 << k for k in range(args.batch_size.bit_length()) if 1 << k < args.batch_size] + [args.batch_size]
        for bucket in buckets:
            model.predict_on_batch(np.zeros((bucket, size, size, 3), np.float32))
            for _, inputs in backbone.model_inputs(np.zeros((bucket,) + clips[0].shape[1:], np.uint8)):
                backbone.feed_model(inputs.shape[1:]).predict_on_batch(inputs)
        frames = clips[0][: args.per_frame_count]
        if len(frames) < args.per_frame_count:
            frames = np.concatenate([frames] * -(-args.per_frame_count // len(frames)))[: args.per_frame_count]
        for frame in frames[:2]:
            model.predict(cpu_inputs(frame[None], mode), verbose=0)
        warm_s = time.perf_counter() - started

        def per_frame(chunk: np.ndarray) -> list[np.ndarray]:
            """The reference loop: one frame at a time through resize, preprocess and ``model.predict``."""
            out = []
            for frame in chunk:
                out.append(np.asarray(model.predict(cpu_inputs(frame[None], mode), verbose=0)).reshape(-1))
            return out

        batch = cpu_inputs(
            np.random.default_rng(1).integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8), mode
        )

        def feed(task: ShardTask) -> None:
            """The input side alone on one core: read each sample's ROI clips, cut them into uint8 batches; no model."""
            import cv2

            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                for sample in task.samples:
                    arrays = read_sample(work / sample["stages"]["prepare"]["shard"], sample["id"], views).arrays
                    for view in views:
                        for _ in backbone.model_inputs(arrays[view]):
                            pass
            finally:
                cv2.setNumThreads(threads)

        def model_only(count: int) -> None:
            for _ in range(count):
                np.asarray(model.predict_on_batch(batch))

        slow, ceiling, ours, inputs = Timer(), Timer(), Timer(), Timer()
        load_before = os.getloadavg()[0]
        reference: list[np.ndarray] = []
        records: dict[str, dict[str, Any]] = {}
        task_frames = args.samples * args.perspectives * args.frames
        frame_slices = np.cumsum([0] + split(len(frames), rounds))
        for r, batches in enumerate(split(args.model_batches, rounds)):
            chunk = frames[frame_slices[r] : frame_slices[r + 1]]
            reference += slow.time(len(chunk), per_frame, chunk)
            ceiling.time(batches * args.batch_size, model_only, batches)
            records.update(ours.time(task_frames, job, tasks[r]))
            inputs.time(task_frames, feed, tasks[r])
        load_after = os.getloadavg()[0]

        # every shard must hold its samples, and the first clip must match the reference loop's embeddings
        assert len(records) == len(samples) and all(r["status"] == "done" for r in records.values()), records
        shapes = set()
        for task in tasks:
            with ShardReader(task.path, "embedding") as reader:
                shapes |= {reader.read(s["id"], list(views)).arrays[v].shape for s in task.samples for v in views}
        assert shapes == {(args.frames, backbone.dim)}, shapes
        with ShardReader(tasks[0].path, "embedding") as reader:
            stored = reader.read(samples[0]["id"], [views[0]]).arrays[views[0]]
        expected = np.stack(reference)[: min(len(reference), args.frames)]
        got = stored[: len(expected)].astype(np.float32)
        error = float(np.abs(got - expected).max() / max(1e-12, float(np.abs(expected).max())))
        assert error < 1e-2, f"pipeline embeddings differ from the per-frame loop's (relative error {error:.3g})"
        # in-graph preprocessing against the CPU path, in float32 (the stored float16 adds its own rounding)
        reference_all = np.stack(reference)
        embedded = backbone.embed(frames[: len(reference_all)])
        rel_l2 = np.linalg.norm(embedded - reference_all, axis=1) / np.maximum(
            1e-12, np.linalg.norm(reference_all, axis=1)
        )
        embed_rel_l2_max = float(rel_l2.max())
        assert embed_rel_l2_max < 1e-3, (
            f"in-graph preprocessing differs from the CPU path's (relative L2 {embed_rel_l2_max:.3g})"
        )
        output_bytes = Path(tasks[0].path).stat().st_size

    summary = {
        "pipeline_ips": round(ours.best, 2),
        "per_frame_ips": round(slow.best, 2),
        "model_only_ips": round(ceiling.best, 2),
        "speedup": round(ours.best / slow.best, 2),
        "ratio_vs_model_only": round(ours.best / ceiling.best, 3),
        "speedup_pooled": round(ours.pooled / slow.pooled, 2),
        "ratio_vs_model_only_pooled": round(ours.pooled / ceiling.pooled, 3),
        "speedup_cpu_time": round(ours.cpu / slow.cpu, 2),
        "feed_img_per_s_per_core": round(inputs.cpu, 1),
        "embed_rel_l2_max": float(f"{embed_rel_l2_max:.3g}"),
        "embeddings_equal": embed_rel_l2_max < 1e-3,
        "preprocess": mode,
        "feed_img_per_s_wall": round(inputs.best, 1),
        "ratio_vs_model_only_cpu_time": round(ours.cpu / ceiling.cpu, 3),
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
        "device": info["device"],
        "devices": info["devices"],
        "backend": info["backend"],
        "keras": info["keras"],
        "cpu_count": os.cpu_count(),
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "frames": ours.items,
        "rounds": rounds,
        "per_frame_frames": slow.items,
        "roi_source": "grid" if source.startswith("GRID") else "synthetic",
        "weights": WEIGHTS_LABEL,
    }
    print(
        f"backbone {args.backbone} ({backbone.dim}-d), weights: RANDOM - figures are for TIMING ONLY (speed does not "
        "depend on weight values)"
    )
    print(
        f"device {info['device']} {info['devices']}, backend {info['backend']} (Keras {info['keras']}), "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    )
    print(
        f"ROI clips: {source}; per round one shard task of {args.samples} samples x {len(views)} perspectives x "
        f"{args.frames} frames of {ROI_SIZE}x{ROI_SIZE}x3 uint8 = {task_frames} frames; batch {args.batch_size}; "
        f"{rounds} interleaved rounds"
    )
    print(
        f"untimed: model build {build_s:.1f}s, warm-up {warm_s:.1f}s; embedding shard {output_bytes / 1024:.0f} KiB "
        "per task; "
        f"pipeline vs per-frame embeddings: max relative difference {error:.1e} (stored float16), "
        f"relative L2 per frame {embed_rel_l2_max:.1e} in float32 (goal < 1e-3); preprocessing {mode} in the graph"
    )
    print(
        f"{'method':<52}{'frames':>7}{'seconds':>9}{'img/s best':>11}{'vs model':>9}"
        f"{'img/s all':>10}{'vs model':>9}{'img/CPU-s':>10}{'vs model':>9}"
    )
    rows = (
        ("one frame at a time (model.predict(x[None]))", slow),
        ("model only (predict_on_batch, preprocessed input)", ceiling),
        ("extract pipeline (read+resize+embed+write shard)", ours),
    )
    rows += (("input side alone, one core (read+batch uint8)", inputs),)
    for label, timer in rows:
        print(
            f"{label:<52}{timer.items:>7}{timer.wall:>9.1f}{timer.best:>11.2f}{timer.best / ceiling.best:>9.3f}"
            f"{timer.pooled:>10.2f}{timer.pooled / ceiling.pooled:>9.3f}"
            f"{timer.cpu:>10.2f}{timer.cpu / ceiling.cpu:>9.3f}"
        )
    print(
        f"speedup vs one frame at a time: {summary['speedup']}x (target >= 2.5); "
        f"pipeline / model only: {summary['ratio_vs_model_only']} (target >= 0.8)  [fastest round of each]"
    )
    print(
        f"input side alone: {summary['feed_img_per_s_per_core']} images per CPU-second on one core (goal >= 4000); "
        f"the model's own forward pass takes {summary['model_only_ips']} images/s on this device"
    )
    print(
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after the timed rounds, on "
        f"{os.cpu_count()} cores"
    )
    if ours.best > ceiling.best or load_before > (os.cpu_count() or 1):
        print(
            "note: the cores are shared with other processes, so wall-clock figures carry scheduling noise (a pipeline "
            "cannot beat its own forward pass); images per process-CPU-second ('img/CPU-s') is the steadier comparison"
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
