"""Accelerator benchmark, prepared to run as it is on a GPU machine with JAX (and no TensorFlow, no network).

Sections, each timed after its compilation and warm-up, each skipped (and said so) when the time budget
left is too short, each recorded with its error instead of stopping the others:

* ``matmul``: the card's measured bfloat16 matmul peak (TFLOP/s), best of square sizes;
* ``extract``: VGGFace ResNet50, SENet50 and VGG16 (random weights: speed does not depend on them)
  forward passes at batch 256 from host float32 input, in float32 and in bfloat16 compute
  (``mixed_bfloat16``): images/s, FLOPs per image counted from the layers, and the share of the
  measured bf16 matmul peak reached; and from uint8 96x96 crops as ``extract`` runs them, the resize
  to 224 and the means in the graph on the device (``uint8_img_per_s``);
* ``feed``: the CPU side of ``extract`` on one core: ROI clips read from an HDF5 shard and cut into
  uint8 batches (``feed_img_per_s_per_core``, images per CPU-second), for each shard compression;
* ``train``: MP-LSTM train steps/s against ``keras.layers.LSTM`` and the released per-gate loop
  (``bench/train.py``, its default sizes);
* ``stream``: MP-LSTM training samples/s on LRW-shaped features streamed from HDF5 shards, for each
  shard compression, against the same split in memory (``bench/stream.py``'s measurement, a smaller set).

``--dry-run`` runs every section with tiny sizes (and without XLA for the convnets) so that a CPU test
proves the script works before a GPU is at hand. Run it as ``bench/device.sh``; the last line printed is
one JSON object, also written to ``--out`` after every section.

    KERAS_BACKEND=jax python bench/device.py [--dry-run] [--budget 450] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

import numpy as np  # noqa: E402

BACKBONES = ("resnet50", "senet50", "vgg16")
COMPRESSIONS = ("none", "gzip", "lzf")  # the default first
ROI = 96  # side of the stored mouth crops
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def _bench_module(name: str) -> Any:
    """Another script of bench/ loaded as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matmul_peak(sizes: list[int], reps: int) -> dict[str, Any]:
    """Best bfloat16 ``n x n`` matmul throughput over ``sizes`` (TFLOP/s), each after a compiled warm-up."""
    import jax
    import jax.numpy as jnp

    product = jax.jit(lambda a, b: a @ b)
    measured = {}
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype=jnp.bfloat16)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype=jnp.bfloat16)
        product(a, b).block_until_ready()
        start = time.perf_counter()
        for _ in range(reps):
            out = product(a, b)
        out.block_until_ready()
        measured[str(n)] = float(
            f"{2 * n**3 * reps / (time.perf_counter() - start) / 1e12:.4g}"
        )  # 4 significant digits: a slow CPU is not 0
    return {"bf16_tflops": max(measured.values()), "by_size": measured}


def model_flops(model: Any) -> int:
    """Multiply-add FLOPs (2 per MAC) of one image through the model's Conv2D and Dense layers."""
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or type(layer).__name__ not in ("Conv2D", "Dense"):
            continue
        positions = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
        total += 2 * positions * int(np.prod(kernel.shape))
    return total


def extract_throughput(names: list[str], batch: int, reps: int, jit: bool, peak_tflops: float | None) -> dict[str, Any]:
    """Images/s of each VGGFace backbone's forward pass at ``batch``, float32 and bfloat16 compute."""
    import keras

    from pipeline.backbones.registry import build_backbone

    results: dict[str, Any] = {}
    for name in names:
        for label, policy in POLICIES.items():
            keras.config.set_dtype_policy(policy)
            try:
                backbone = build_backbone(name, "random", batch_size=batch)
                model = backbone.model
                if not jit:
                    model.compile(jit_compile=False)
                size = int(model.inputs[0].shape[1])
                x = np.random.default_rng(0).normal(0, 50, (batch, size, size, 3)).astype(np.float32)
                np.asarray(model.predict_on_batch(x))  # compile
                start = time.perf_counter()
                for _ in range(reps):
                    out = model.predict_on_batch(x)
                np.asarray(out)
                ips = batch * reps / (time.perf_counter() - start)
                flops = model_flops(model)
                entry = {
                    "img_per_s": round(ips, 1),
                    "gflops_per_img": round(flops / 1e9, 2),
                    "tflops": round(ips * flops / 1e12, 3),
                }
                if peak_tflops:
                    entry["share_of_bf16_peak"] = round(ips * flops / 1e12 / peak_tflops, 3)
                crops = np.random.default_rng(1).integers(0, 256, (batch, ROI, ROI, 3), dtype=np.uint8)
                fed = backbone.feed_model(crops.shape[1:])
                if not jit:
                    fed.compile(jit_compile=False)
                np.asarray(fed.predict_on_batch(crops))  # compile
                start = time.perf_counter()
                for _ in range(reps):
                    out = fed.predict_on_batch(crops)
                np.asarray(out)
                entry["uint8_img_per_s"] = round(batch * reps / (time.perf_counter() - start), 1)
                entry["uint8_vs_float_input"] = round(entry["uint8_img_per_s"] / entry["img_per_s"], 3)
                results[f"{name}_{label}"] = entry
            finally:
                keras.config.set_dtype_policy("float32")
            keras.backend.clear_session()
    return results


def train_steps(argv: list[str]) -> dict[str, Any]:
    """bench/train.py's measurement: steps/s of MP-LSTM, keras.layers.LSTM and the released per-gate loop."""
    result = _bench_module("train").main(argv)
    return {
        "steps_per_s": {name: round(1000.0 / ms, 2) for name, ms in result["step_ms"].items()},
        "step_ms": result["step_ms"],
        "ratio_vs_keras_lstm": result["ratio_vs_keras_lstm"],
        "speedup_vs_released_loop": result["speedup_vs_released_loop"],
        "config": result["config"],
    }


def feed_rate(samples: int, frames: int, batch: int) -> dict[str, Any]:
    """Images per CPU-second one core feeds ``extract``: uint8 ROI clips read from a shard, cut into model batches."""
    import cv2

    from pipeline.backbones.registry import build_backbone
    from pipeline.storage.readers import read_sample
    from pipeline.storage.shards import ShardWriter

    backbone = build_backbone("resnet50", "random", batch_size=batch)
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (frames, ROI, ROI, 3), dtype=np.uint8) for _ in range(samples)]
    results: dict[str, Any] = {}
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="device-feed-") as tmp:
            for compression in COMPRESSIONS:
                path = Path(tmp) / f"roi-{compression}.h5"
                with ShardWriter(path, "roi", compression=compression) as writer:
                    for index, clip in enumerate(clips):
                        writer.add(f"s{index}", {"v1": clip})
                cpu = time.process_time()
                for index in range(samples):
                    for _ in backbone.model_inputs(read_sample(path, f"s{index}", ["v1"]).arrays["v1"]):
                        pass
                results[compression] = {
                    "feed_img_per_s_per_core": round(samples * frames / (time.process_time() - cpu), 1),
                    "shard_mb": round(path.stat().st_size / 1e6, 2),
                }
    finally:
        cv2.setNumThreads(threads)
    return {
        "roi": f"{ROI}x{ROI}x3 uint8 noise (incompressible: the worst case for reading)",
        "frames": samples * frames,
        "compressions": results,
    }


def stream_training(clips: int, frames: int, dim: int, units: int, epochs: int) -> dict[str, Any]:
    """bench/stream.py's measurement on ``clips`` clips, for each shard compression, against training in memory."""
    stream = _bench_module("stream")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="device-stream-") as tmp:
        for compression in COMPRESSIONS:
            work = Path(tmp) / compression
            stream.build(work, clips, frames, dim, compression)
            manifest = stream.manifest_for(work, clips, clips)
            for mode in ("stream", "memory") if compression == COMPRESSIONS[0] else ("stream",):
                args = argparse.Namespace(
                    manifest=str(manifest),
                    work=str(work),
                    child=mode,
                    frames=frames,
                    units=units,
                    batch=60,
                    epochs=epochs,
                )
                runs[mode if mode == "memory" else f"stream_{compression}"] = stream.child(args)
    memory = runs["memory"]["samples_per_s"]
    first = runs[f"stream_{COMPRESSIONS[0]}"]["samples_per_s"]
    return {
        "stream_samples_per_s": first,
        "memory_samples_per_s": memory,
        "stream_vs_memory": round(first / memory, 3),
        "compressions": {
            c: {
                "stream_samples_per_s": runs[f"stream_{c}"]["samples_per_s"],
                "stream_vs_memory": round(runs[f"stream_{c}"]["samples_per_s"] / memory, 3),
            }
            for c in COMPRESSIONS
        },
        "clips": clips,
        "runs": runs,
    }


def device_info() -> dict[str, Any]:
    """Backend, accelerator and package versions."""
    import keras

    from pipeline.execution.provenance import package_versions

    info: dict[str, Any] = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "versions": package_versions(),
        "cpu_cores": len(os.sched_getaffinity(0)),
    }
    if info["backend"] == "jax":
        import jax

        device = jax.devices()[0]
        info.update(
            platform=device.platform, device=device.device_kind, devices=len(jax.devices()), jax=jax.__version__
        )
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes, no XLA for the convnets: proves the script on a CPU"
    )
    parser.add_argument(
        "--budget", type=float, default=450.0, help="seconds for all sections; one that would not fit is skipped"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here after every section")
    parser.add_argument(
        "--backbones",
        default=",".join(BACKBONES),
        help="comma-separated VGGFace backbones to time (default: all three)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sections in order within the budget; print and return the JSON object."""
    args = parse_args(argv)
    started = time.perf_counter()
    dry = args.dry_run
    result: dict[str, Any] = {"dry_run": dry, "info": device_info(), "skipped": {}, "errors": {}}

    def section(name: str, needs_s: float, run: Callable[[], Any]) -> None:
        left = args.budget - (time.perf_counter() - started)
        if left < needs_s:
            result["skipped"][name] = f"{left:.0f} s left of the budget, section needs about {needs_s:.0f} s"
        else:
            begun = time.perf_counter()
            try:
                result[name] = run()
            except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others' figures
                result["errors"][name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            result.setdefault("seconds", {})[name] = round(time.perf_counter() - begun, 1)
        if args.out:
            args.out.write_text(json.dumps(result))

    section("matmul", 5 if dry else 30, lambda: matmul_peak([64] if dry else [4096, 8192, 16384], 2 if dry else 20))
    peak = result.get("matmul", {}).get("bf16_tflops")
    section(
        "extract",
        5 if dry else 200,
        lambda: extract_throughput(
            args.backbones.split(","), 2 if dry else 256, 1 if dry else 10, jit=not dry, peak_tflops=peak
        ),
    )
    train_argv = (
        ["--batch", "4", "--timesteps", "3", "--dim", "8", "--units", "8", "--warmup", "1", "--steps", "1"]
        if dry
        else ["--warmup", "3", "--steps", "20"]
    )
    section("train", 5 if dry else 90, lambda: train_steps(train_argv))
    section("feed", 5 if dry else 30, lambda: feed_rate(*((2, 8, 4) if dry else (24, 30, 256))))
    section(
        "stream", 5 if dry else 120, lambda: stream_training(*((130, 5, 16, 8, 1) if dry else (2000, 29, 2048, 256, 2)))
    )
    result["total_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        args.out.write_text(json.dumps(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
