"""Streaming-input benchmark: MP-LSTM training on LRW-shaped features, streamed from HDF5 shards and in memory.

Builds an LRW-shaped feature set (``--frames`` 29 frames x ``--dim`` 2048 float16 per clip, one
perspective, 500 classes) of 4N clips in HDF5 shards, and a manifest whose training split is the
first N clips or all 4N. Each measurement runs in its own process through the training code
(``pipeline.training.feed.RunInputs`` or ``experiment.load_inputs``, then ``pipeline.training.fit.fit``, the released network: bidirectional
MP-LSTM, attention, softmax; batch 60):

* ``stream`` on N and on 4N clips: peak resident memory must not grow with the data
  (``rss_growth`` = 4N over N, goal <= 1.15);
* ``memory`` on N clips: the split read into float32 arrays first (the 4N arrays would not fit
  this machine's per-process share); ``stream_vs_memory`` compares training samples/s of the last
  epoch, compilation excluded (goal >= 0.9).

    python bench/stream.py [--n 6000] [--epochs 2] [--work DIR]        # 4N = 24000 clips, 2.85 GB of float16
    python bench/stream.py --n 600                                     # a small run

Prints a table; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipeline.manifest import Manifest, Sample, Source  # noqa: E402
from pipeline.storage.shards import ShardWriter, shard_name  # noqa: E402

STAGE = "extract:lrw"
CLASSES = 500
SHARD_SIZE = 500


def build(work: Path, clips: int, frames: int, dim: int) -> int:
    """Write ``clips`` random float16 feature clips into HDF5 shards under ``work`` (kept when already there); bytes on disk."""
    root = work / "features" / "lrw"
    root.mkdir(parents=True, exist_ok=True)
    shards = -(-clips // SHARD_SIZE)
    rng = np.random.default_rng(0)
    for shard in range(shards):
        path = root / shard_name("emb", shard, shards)
        if path.exists():
            continue
        with ShardWriter(path, "embedding") as writer:
            for i in range(shard * SHARD_SIZE, min(clips, (shard + 1) * SHARD_SIZE)):
                features = rng.standard_normal((frames, dim), dtype=np.float32).astype(np.float16)
                writer.add(f"c{i:06d}", {"v1": features}, {"label": f"w{i % CLASSES}"})
    return sum(p.stat().st_size for p in root.glob("*.h5"))


def manifest_for(work: Path, clips: int, used: int) -> Path:
    """A manifest whose training split holds the first ``used`` of ``clips`` clips (the rest in none)."""
    shards = -(-clips // SHARD_SIZE)
    samples = []
    for i in range(clips):
        sample = Sample(id=f"c{i:06d}", sources={"v1": Source(f"c{i:06d}.mp4")}, label=f"w{i % CLASSES}", split="train" if i < used else None)
        sample.stages[STAGE] = {"status": "done", "shard": f"features/lrw/{shard_name('emb', i // SHARD_SIZE, shards)}"}
        samples.append(sample)
    manifest = Manifest("lrw-shaped", str(work), ["v1"], samples, classes=[f"w{k}" for k in range(CLASSES)])
    path = work / f"manifest-{used}.jsonl"
    manifest.save(path)
    return path


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: train ``args.epochs`` epochs, report samples/s of the last and peak RSS."""
    import keras

    from pipeline.training.experiment import RunSpec, build_model, load_inputs
    from pipeline.training.feed import RunInputs
    from pipeline.training.fit import FitConfig, fit, one_hot

    manifest = Manifest.load(Path(args.manifest))
    spec = RunSpec("bench", "mplstm", STAGE, ["v1"], args.frames, list(manifest.classes), options={"units": args.units, "dropout": 0.2, "lr": 1e-3})
    inputs = RunInputs(manifest, spec, Path(args.work), ("train",), args.child)
    keras.utils.set_random_seed(0)
    model = build_model(spec, inputs.model_shapes())
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: ends.append(time.perf_counter()), on_epoch_end=lambda e, logs: ends.append(time.perf_counter()))
    start = time.perf_counter()
    if inputs.mode == "memory":  # what `train` does in memory: the split as arrays
        data = load_inputs(manifest, spec, "train", Path(args.work))
        train = (data.inputs, one_hot(data.labels, len(spec.classes)))
    else:
        train = inputs.training("train", args.batch, seed=0)
    loaded = time.perf_counter() - start
    out = Path(tempfile.mkdtemp(prefix=f"stream-{args.child}-", dir=args.work))
    fit(model, train, None, out, FitConfig(epochs=args.epochs, batch_size=args.batch, tensorboard=False, verbose=0), {}, callbacks=[timer])
    last = ends[-1] - ends[-2]
    return {
        "mode": inputs.mode,
        "clips": inputs.count("train"),
        "samples_per_s": round(inputs.count("train") / last, 1),
        "last_epoch_s": round(last, 2),
        "load_s": round(loaded, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "backend": keras.backend.backend(),
    }


def measure(args: argparse.Namespace, mode: str, manifest: Path, epochs: int) -> dict[str, Any]:
    """Run ``child`` in a fresh process and return its JSON line."""
    command = [sys.executable, __file__, "--child", mode, "--manifest", str(manifest), "--work", str(args.work), "--epochs", str(epochs),
               "--frames", str(args.frames), "--units", str(args.units), "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="clips of the small set; the large one has 4N")
    parser.add_argument("--frames", type=int, default=29)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the N runs (samples/s is the last one's); the 4N run does one")
    parser.add_argument("--work", type=Path, help="folder for the shards (kept for re-runs; default: a temporary folder)")
    parser.add_argument("--child", choices=("stream", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the data, run the three measurements, print the table and the JSON line."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    args.work = args.work or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    start = time.perf_counter()
    on_disk = build(args.work, 4 * args.n, args.frames, args.dim)
    built = time.perf_counter() - start
    small, large = manifest_for(args.work, 4 * args.n, args.n), manifest_for(args.work, 4 * args.n, 4 * args.n)
    stream_n = measure(args, "stream", small, args.epochs)
    memory_n = measure(args, "memory", small, args.epochs)
    stream_4n = measure(args, "stream", large, 1)
    result = {
        "peak_rss_mb_n": stream_n["peak_rss_mb"],
        "peak_rss_mb_4n": stream_4n["peak_rss_mb"],
        "rss_growth": round(stream_4n["peak_rss_mb"] / stream_n["peak_rss_mb"], 3),
        "stream_samples_per_s": stream_n["samples_per_s"],
        "memory_samples_per_s": memory_n["samples_per_s"],
        "stream_vs_memory": round(stream_n["samples_per_s"] / memory_n["samples_per_s"], 3),
        "memory_peak_rss_mb_n": memory_n["peak_rss_mb"],
        "memory_load_s": memory_n["load_s"],
        "n": args.n,
        "gb_on_disk_4n": round(on_disk / 1e9, 2),
        "build_s": round(built, 1),
        "runs": {"stream_n": stream_n, "memory_n": memory_n, "stream_4n": stream_4n},
        "config": {"frames": args.frames, "dim": args.dim, "units": args.units, "batch": args.batch, "epochs": args.epochs, "cores": len(os.sched_getaffinity(0))},
    }
    print(f"{'run':<12}{'clips':>8}{'samples/s':>12}{'peak RSS MB':>14}")
    for name, run in result["runs"].items():
        print(f"{name:<12}{run['clips']:>8}{run['samples_per_s']:>12}{run['peak_rss_mb']:>14}")
    print(f"rss_growth {result['rss_growth']} (goal <= 1.15); stream_vs_memory {result['stream_vs_memory']} (goal >= 0.9)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
