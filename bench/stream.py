"""Streaming-input benchmark: MP-LSTM training on LRW-shaped features, streamed from HDF5 shards and in memory.

Builds an LRW-shaped feature set (``--frames`` 29 frames x ``--dim`` 2048 float16 per clip, one
perspective, 500 classes) of 4N clips in HDF5 shards, and a manifest whose training split is the
first N clips or all 4N. Each measurement runs in its own process through the training code
(``pipeline.training.feed.RunInputs`` or ``experiment.load_inputs``, then ``pipeline.training.fit.fit``, the released
network: bidirectional MP-LSTM, attention, softmax; batch 60):

* ``stream`` on N and on 4N clips: peak resident memory must not grow with the data
  (``rss_growth`` = 4N over N, goal <= 1.15);
* ``memory`` on N clips: the split read into float32 arrays first (the 4N arrays would not fit
  this machine's per-process share); ``stream_vs_memory`` compares training samples/s of the last
  epoch, compilation excluded (goal >= 0.95).

Each shard compression in ``--compressions`` (HDF5 ``gzip``, ``lzf``, ``none``; all keep fletcher32
checksums) gets its own copy of the shards, and for each: bytes on disk, read throughput (every
sample of the N set read once, in this process) and streamed training speed, interleaved in
``--rounds`` rounds (fastest round counts), so that load from other processes hits all alike; the
figures are best compared as ratios to the first compression. ``rss_growth`` and the top-level
``stream_*`` figures are the first compression's (list the default first).

    python bench/stream.py [--n 6000] [--epochs 2] [--work DIR]        # 4N = 24000 clips, 2.85 GB of float16
    python bench/stream.py --n 600 --compressions none,gzip,lzf        # a small run, the three compressions

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
from pipeline.storage.readers import read_samples  # noqa: E402
from pipeline.storage.shards import COMPRESSIONS, DEFAULT_COMPRESSION, ShardWriter, shard_name  # noqa: E402

STAGE = "extract:lrw"
CLASSES = 500
SHARD_SIZE = 500


def build(work: Path, clips: int, frames: int, dim: int, compression: str = DEFAULT_COMPRESSION) -> int:
    """Write ``clips`` float16 feature clips into HDF5 shards under ``work`` (kept when already there); bytes on disk.

    The features are non-negative and smooth in time, like a ReLU network's pooled embeddings (not white noise,
    which no compressor could shrink): a random walk per clip, clipped at zero.
    """
    root = work / "features" / "lrw"
    root.mkdir(parents=True, exist_ok=True)
    shards = -(-clips // SHARD_SIZE)
    rng = np.random.default_rng(0)
    for shard in range(shards):
        path = root / shard_name("emb", shard, shards)
        if path.exists():
            continue
        with ShardWriter(path, "embedding", compression=compression) as writer:
            for i in range(shard * SHARD_SIZE, min(clips, (shard + 1) * SHARD_SIZE)):
                walk = rng.standard_normal((frames, dim), dtype=np.float32).cumsum(axis=0) * 0.2
                features = np.maximum(0.0, walk + rng.standard_normal(dim, dtype=np.float32)).astype(np.float16)
                writer.add(f"c{i:06d}", {"v1": features}, {"label": f"w{i % CLASSES}"})
    return sum(p.stat().st_size for p in root.glob("*.h5"))


def manifest_for(work: Path, clips: int, used: int) -> Path:
    """A manifest whose training split holds the first ``used`` of ``clips`` clips (the rest in none)."""
    shards = -(-clips // SHARD_SIZE)
    samples = []
    for i in range(clips):
        sample = Sample(
            id=f"c{i:06d}",
            sources={"v1": Source(f"c{i:06d}.mp4")},
            label=f"w{i % CLASSES}",
            split="train" if i < used else None,
        )
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
    spec = RunSpec(
        "bench",
        "mplstm",
        STAGE,
        ["v1"],
        args.frames,
        list(manifest.classes),
        options={"units": args.units, "dropout": 0.2, "lr": 1e-3},
    )
    inputs = RunInputs(manifest, spec, Path(args.work), ("train",), args.child)
    keras.utils.set_random_seed(0)
    model = build_model(spec, inputs.model_shapes())
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: ends.append(time.perf_counter()),
        on_epoch_end=lambda e, logs: ends.append(time.perf_counter()),
    )
    start = time.perf_counter()
    if inputs.mode == "memory":  # what `train` does in memory: the split as arrays
        data = load_inputs(manifest, spec, "train", Path(args.work))
        train = (data.inputs, one_hot(data.labels, len(spec.classes)))
    else:
        train = inputs.training("train", args.batch, seed=0)
    loaded = time.perf_counter() - start
    out = Path(tempfile.mkdtemp(prefix=f"stream-{args.child}-", dir=args.work))
    fit(
        model,
        train,
        None,
        out,
        FitConfig(epochs=args.epochs, batch_size=args.batch, tensorboard=False, verbose=0),
        {},
        callbacks=[timer],
    )
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


def read_speed(manifest: Path, work: Path) -> dict[str, float]:
    """Read every training sample once, shard by shard (decompression and checksums included): clips/s and MB/s."""
    samples = [s for s in Manifest.load(manifest).samples if s.split == "train"]
    by_shard: dict[str, list[str]] = {}
    for sample in samples:
        by_shard.setdefault(sample.stages[STAGE]["shard"], []).append(sample.id)
    start, nbytes = time.perf_counter(), 0
    for shard, ids in by_shard.items():
        nbytes += sum(s.arrays["v1"].nbytes for s in read_samples(work / shard, ids, ["v1"]))
    seconds = time.perf_counter() - start
    return {"read_clips_per_s": round(len(samples) / seconds, 1), "read_mb_per_s": round(nbytes / seconds / 1e6, 1)}


def measure(args: argparse.Namespace, mode: str, manifest: Path, epochs: int) -> dict[str, Any]:
    """Run ``child`` in a fresh process (on the shards next to ``manifest``) and return its JSON line."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--manifest",
        str(manifest),
        "--work",
        str(manifest.parent),
        "--epochs",
        str(epochs),
        "--frames",
        str(args.frames),
        "--units",
        str(args.units),
        "--batch",
        str(args.batch),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--n", type=int, default=6000, help="clips of the small set; the large one has 4N")
    parser.add_argument("--frames", type=int, default=29)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs of the N runs (samples/s is the last one's); the 4N run does one"
    )
    parser.add_argument(
        "--work", type=Path, help="folder for the shards (kept for re-runs; default: a temporary folder)"
    )
    parser.add_argument(
        "--compressions",
        default="none,gzip,lzf",
        help="shard compressions to compare, comma-separated; the first gives the top-level figures",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds of the streamed runs; the fastest counts"
    )
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
    names = [c.strip() for c in args.compressions.split(",") if c.strip()]
    if not names or any(c not in COMPRESSIONS for c in names) or args.rounds < 1:
        raise SystemExit(f"--compressions takes some of {', '.join(COMPRESSIONS)}; --rounds must be positive")
    start = time.perf_counter()
    on_disk = {c: build(args.work / c / "work", 4 * args.n, args.frames, args.dim, c) for c in names}
    built = time.perf_counter() - start
    small = {c: manifest_for(args.work / c / "work", 4 * args.n, args.n) for c in names}
    load_before = os.getloadavg()[0]
    streamed: dict[str, list[dict[str, Any]]] = {c: [] for c in names}
    reads: dict[str, list[dict[str, float]]] = {c: [] for c in names}
    for _ in range(args.rounds):
        for c in names:
            reads[c].append(read_speed(small[c], small[c].parent))
            streamed[c].append(measure(args, "stream", small[c], args.epochs))
    memory_n = measure(args, "memory", small[names[0]], args.epochs)
    stream_4n = measure(args, "stream", manifest_for(args.work / names[0] / "work", 4 * args.n, 4 * args.n), 1)
    load_after = os.getloadavg()[0]
    best = {c: max(runs, key=lambda r: r["samples_per_s"]) for c, runs in streamed.items()}
    first = names[0]
    table = {}
    for c in names:
        read = max(reads[c], key=lambda r: r["read_clips_per_s"])
        table[c] = {
            "gb_on_disk_4n": round(on_disk[c] / 1e9, 3),
            "size_vs_none": round(on_disk[c] / on_disk["none"], 3) if "none" in on_disk else None,
            **read,
            "read_vs_first": round(
                read["read_clips_per_s"] / max(reads[first], key=lambda r: r["read_clips_per_s"])["read_clips_per_s"], 3
            ),
            "stream_samples_per_s": best[c]["samples_per_s"],
            "stream_vs_memory": round(best[c]["samples_per_s"] / memory_n["samples_per_s"], 3),
            "stream_vs_first": round(best[c]["samples_per_s"] / best[first]["samples_per_s"], 3),
        }
    stream_n = best[first]
    result = {
        "compression": first,
        "peak_rss_mb_n": stream_n["peak_rss_mb"],
        "peak_rss_mb_4n": stream_4n["peak_rss_mb"],
        "rss_growth": round(stream_4n["peak_rss_mb"] / stream_n["peak_rss_mb"], 3),
        "stream_samples_per_s": stream_n["samples_per_s"],
        "memory_samples_per_s": memory_n["samples_per_s"],
        "stream_vs_memory": round(stream_n["samples_per_s"] / memory_n["samples_per_s"], 3),
        "memory_peak_rss_mb_n": memory_n["peak_rss_mb"],
        "memory_load_s": memory_n["load_s"],
        "compressions": table,
        "n": args.n,
        "gb_on_disk_4n": round(on_disk[first] / 1e9, 2),
        "build_s": round(built, 1),
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
        "runs": {"stream_n": stream_n, "memory_n": memory_n, "stream_4n": stream_4n},
        "config": {
            "frames": args.frames,
            "dim": args.dim,
            "units": args.units,
            "batch": args.batch,
            "epochs": args.epochs,
            "rounds": args.rounds,
            "cores": len(os.sched_getaffinity(0)),
        },
    }
    print(f"{'run':<12}{'clips':>8}{'samples/s':>12}{'peak RSS MB':>14}")
    for name, run in result["runs"].items():
        print(f"{name:<12}{run['clips']:>8}{run['samples_per_s']:>12}{run['peak_rss_mb']:>14}")
    print(
        f"{'compression':<12}{'GB (4N)':>9}{'vs none':>8}{'read clips/s':>13}{'read MB/s':>10}{'stream/s':>10}"
        f"{'vs memory':>10}{'vs ' + first:>10}"
    )
    for c, row in table.items():
        print(
            f"{c:<12}{row['gb_on_disk_4n']:>9}{row['size_vs_none'] or '':>8}{row['read_clips_per_s']:>13}"
            f"{row['read_mb_per_s']:>10}{row['stream_samples_per_s']:>10}{row['stream_vs_memory']:>10}{row['stream_vs_first']:>10}"
        )
    print(
        f"rss_growth {result['rss_growth']} (goal <= 1.15); stream_vs_memory {result['stream_vs_memory']} (goal >= "
        "0.95) "
        f"with {first}; 1-minute load {load_before:.1f} before, {load_after:.1f} after on "
        f"{result['config']['cores']} cores (shared machine: compare the compressions as ratios)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
