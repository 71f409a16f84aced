"""Accelerator benchmark, prepared to run as it is on a GPU machine with JAX (and no TensorFlow, no network).

Sections, each timed after its compilation and warm-up, each skipped (and said so) when the time budget
left is too short, each recorded with its error instead of stopping the others:

* ``matmul``: the card's measured bfloat16 matmul peak (TFLOP/s), best of square sizes;
* ``extract``: VGGFace ResNet50, SENet50 and VGG16 (random weights: speed does not depend on them)
  forward passes at batch 256 from host float32 input, as ``extract`` runs them, in float32 and in
  bfloat16 compute (``mixed_bfloat16``): images/s, FLOPs per image counted from the layers, and the
  share of the measured bf16 matmul peak reached;
* ``train``: MP-LSTM train steps/s against ``keras.layers.LSTM`` and the released per-gate loop
  (``bench/train.py``, its default sizes);
* ``stream``: MP-LSTM training samples/s on LRW-shaped features streamed from HDF5 shards, and the
  same split in memory (``bench/stream.py``'s measurement, a smaller set).

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
        measured[str(n)] = float(f"{2 * n**3 * reps / (time.perf_counter() - start) / 1e12:.4g}")  # 4 significant digits: a slow CPU is not 0
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
                model = build_backbone(name, "random", batch_size=batch).model
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
                entry = {"img_per_s": round(ips, 1), "gflops_per_img": round(flops / 1e9, 2), "tflops": round(ips * flops / 1e12, 3)}
                if peak_tflops:
                    entry["share_of_bf16_peak"] = round(ips * flops / 1e12 / peak_tflops, 3)
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


def stream_training(clips: int, frames: int, dim: int, units: int, epochs: int) -> dict[str, Any]:
    """bench/stream.py's measurement on ``clips`` clips: streamed and in-memory training samples/s."""
    stream = _bench_module("stream")
    with tempfile.TemporaryDirectory(prefix="device-stream-") as tmp:
        work = Path(tmp)
        stream.build(work, clips, frames, dim)
        manifest = stream.manifest_for(work, clips, clips)
        runs = {}
        for mode in ("stream", "memory"):
            args = argparse.Namespace(manifest=str(manifest), work=str(work), child=mode, frames=frames, units=units, batch=60, epochs=epochs)
            runs[mode] = stream.child(args)
    return {
        "stream_samples_per_s": runs["stream"]["samples_per_s"],
        "memory_samples_per_s": runs["memory"]["samples_per_s"],
        "stream_vs_memory": round(runs["stream"]["samples_per_s"] / runs["memory"]["samples_per_s"], 3),
        "clips": clips,
        "runs": runs,
    }


def device_info() -> dict[str, Any]:
    """Backend, accelerator and package versions."""
    import keras

    from pipeline.execution.provenance import package_versions

    info: dict[str, Any] = {"backend": keras.backend.backend(), "keras": keras.__version__, "versions": package_versions(), "cpu_cores": len(os.sched_getaffinity(0))}
    if info["backend"] == "jax":
        import jax

        device = jax.devices()[0]
        info.update(platform=device.platform, device=device.device_kind, devices=len(jax.devices()), jax=jax.__version__)
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, no XLA for the convnets: proves the script on a CPU")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections; one that would not fit is skipped")
    parser.add_argument("--out", type=Path, help="also write the JSON here after every section")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated VGGFace backbones to time (default: all three)")
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
    section("extract", 5 if dry else 200, lambda: extract_throughput(args.backbones.split(","), 2 if dry else 256, 1 if dry else 10, jit=not dry, peak_tflops=peak))
    train_argv = ["--batch", "4", "--timesteps", "3", "--dim", "8", "--units", "8", "--warmup", "1", "--steps", "1"] if dry else ["--warmup", "3", "--steps", "20"]
    section("train", 5 if dry else 90, lambda: train_steps(train_argv))
    section("stream", 5 if dry else 90, lambda: stream_training(*((130, 5, 16, 8, 1) if dry else (6000, 29, 2048, 256, 2))))
    result["total_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        args.out.write_text(json.dumps(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
