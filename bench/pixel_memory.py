"""Peak memory and seconds per clip of a pixel model's training steps against the activation estimate.

Each configuration runs in its own process (peak RSS via ``getrusage``) on random clips of the given size: the
estimate of ``pipeline.training.memory`` is compared with the measured peak minus the same process's peak after building
the model and before the first step. Prints one JSON object per configuration, the last line the summary.

    python bench/pixel_memory.py --model convlstm --crop 64 --batch 1 2 --timesteps 29
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one(model_name: str, crop: int, batch: int, timesteps: int, steps: int) -> dict:
    """Run ``steps`` training steps in this process; the measured figures."""
    import resource

    import keras
    import numpy as np

    from pipeline.models.registry import model_options
    from pipeline.training.experiment import RunSpec, build_model
    from pipeline.training.memory import counted_elements, estimate_bytes

    options = {**vars(model_options(model_name, {})), "lr": 1e-3}
    spec = RunSpec("bench", model_name, "prepare", ["v1"], timesteps, [str(i) for i in range(10)], options=options)
    shape = (timesteps, crop, crop, 1)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    if model_name == "mvm":
        built = build_model(spec, [shape], (timesteps, 4, 80))
        model, data = (
            built.train,
            (
                {"video": x, "audio": rng.normal(size=(batch, timesteps, 4, 80)).astype(np.float32)},
                {"visual": y, "audio": y},
            ),
        )
    else:
        model, data = build_model(spec, [shape]), (x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model.train_on_batch(*data)  # compile and first step
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*data)
    seconds = (time.perf_counter() - start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    keras.backend.clear_session()
    return {
        "model": model_name,
        "crop": crop,
        "batch": batch,
        "timesteps": timesteps,
        "peak_gib": round(peak / 2**30, 2),
        "step_gib": round((peak - before) / 2**30, 2),
        "estimate_gib": round(estimate_bytes(model, batch) / 2**30, 2),
        "counted_elements_per_clip": counted_elements(model),
        "seconds_per_clip": round(seconds / batch, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", choices=("convlstm", "mvm"), default="convlstm")
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timesteps", type=int, default=29)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.model, args.crop, args.batch[0], args.timesteps, args.steps)))
        return
    rows = []
    for batch in args.batch:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--model",
            args.model,
            "--crop",
            str(args.crop),
            "--batch",
            str(batch),
            "--timesteps",
            str(args.timesteps),
            "--steps",
            str(args.steps),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(out, flush=True)
    if len(rows) > 1:
        slope = (rows[-1]["peak_gib"] - rows[0]["peak_gib"]) / (rows[-1]["batch"] - rows[0]["batch"])
        est = (rows[-1]["estimate_gib"] - rows[0]["estimate_gib"]) / (rows[-1]["batch"] - rows[0]["batch"])
        print(
            json.dumps(
                {
                    "measured_gib_per_clip": round(slope, 3),
                    "estimated_gib_per_clip": round(est, 3),
                    "ratio": round(slope / est, 2) if est else None,
                }
            )
        )


if __name__ == "__main__":
    main()
