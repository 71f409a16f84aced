"""Training-step benchmark: MPLSTM against keras.layers.LSTM and a transcription of the released MP-LSTM loop.

Each model is input ``[B, T, sum d_j]`` -> recurrent layer (``units``) -> softmax over 10 classes, trained
with RMSprop and categorical cross-entropy; a step is one ``train_on_batch`` (forward + backward + update),
all three compiled the same way (XLA where the backend has it, unless ``--jit off``). The released
loop is checked against ``MPLSTM(released=True)`` on the same weights before it is timed. Prints a
table; the last line is one JSON object.

    python bench/train.py [--batch 60] [--timesteps 20] [--perspectives 3] [--dim 512] [--units 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from pipeline.execution.provenance import package_versions  # noqa: E402
from pipeline.models.mplstm import MPLSTM, keras2_hard_sigmoid  # noqa: E402

warnings.filterwarnings("ignore", message="Gradients do not exist for variables .*recurrent_c")  # U_c, as released

GATE_NAMES = ("i", "f", "c", "o")
N_CLASSES = 10


class ReleasedLoopCell(keras.layers.Layer):
    """The released MP-LSTM step as written: per perspective, per gate, its own input and recurrent matmul.

    Weights are separate variables per gate and perspective (no slicing in the loop); U h_{t-1} is
    multiplied out for every perspective and gate, with U_f in the candidate (U_c unused, as released)
    and the Keras 2 hard sigmoid. The released fifth gate, computed and never used, is left out.
    """

    def __init__(self, units: int, input_dims: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.input_dims = list(input_dims)
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape: Any) -> None:
        """Kernels and biases per perspective and gate; four recurrent kernels."""
        self.kernels = [
            {g: self.add_weight(shape=(d, self.units), name=f"kernel_{g}_{j}") for g in GATE_NAMES}
            for j, d in enumerate(self.input_dims)
        ]
        self.biases = [
            {g: self.add_weight(shape=(self.units,), name=f"bias_{g}_{j}", initializer="zeros") for g in GATE_NAMES}
            for j in range(len(self.input_dims))
        ]
        self.recurrent = {
            g: self.add_weight(shape=(self.units, self.units), name=f"recurrent_{g}", initializer="orthogonal")
            for g in GATE_NAMES
        }

    def call(self, inputs: Any, states: list[Any]) -> tuple[Any, list[Any]]:
        """One step, perspective after perspective, gate after gate."""
        h_tm1, c = states
        start = 0
        outputs = []
        for kernel, bias, dim in zip(self.kernels, self.biases, self.input_dims):
            x = inputs[:, start : start + dim]
            start += dim
            i = keras2_hard_sigmoid(ops.matmul(x, kernel["i"]) + bias["i"] + ops.matmul(h_tm1, self.recurrent["i"]))
            f = keras2_hard_sigmoid(ops.matmul(x, kernel["f"]) + bias["f"] + ops.matmul(h_tm1, self.recurrent["f"]))
            g = ops.tanh(ops.matmul(x, kernel["c"]) + bias["c"] + ops.matmul(h_tm1, self.recurrent["f"]))
            o = keras2_hard_sigmoid(ops.matmul(x, kernel["o"]) + bias["o"] + ops.matmul(h_tm1, self.recurrent["o"]))
            c = f * c + i * g
            outputs.append(o)
        h = outputs[0] * ops.tanh(c)
        for o in outputs[1:]:
            h = h + o * ops.tanh(c)
        return h, [h, c]


def copy_from_mplstm(loop: ReleasedLoopCell, cell: Any) -> None:
    """Give the released-loop cell the weights of an MPLSTMCell."""
    u = cell.units
    bias = ops.convert_to_numpy(cell.bias)
    recurrent = ops.convert_to_numpy(cell.recurrent_kernel)
    for j, kernel in enumerate(cell.kernels):
        kernel = ops.convert_to_numpy(kernel)
        for k, g in enumerate(GATE_NAMES):
            loop.kernels[j][g].assign(kernel[:, k * u : (k + 1) * u])
            loop.biases[j][g].assign(bias[(4 * j + k) * u : (4 * j + k + 1) * u])
    for k, g in enumerate(GATE_NAMES):
        loop.recurrent[g].assign(recurrent[:, k * u : (k + 1) * u])


def classifier_model(layer: keras.layers.Layer, timesteps: int, features: int) -> keras.Model:
    """``[B, T, features]`` -> layer -> softmax."""
    inputs = keras.Input(shape=(timesteps, features))
    outputs = keras.layers.Dense(N_CLASSES, activation="softmax")(layer(inputs))
    return keras.Model(inputs, outputs)


def check_transcription(dims: list[int], units: int, timesteps: int) -> float:
    """Largest output difference between the released loop and MPLSTM(released=True) on the same weights."""
    x = np.random.default_rng(1).normal(size=(4, timesteps, sum(dims))).astype("float32")
    ours = MPLSTM(units, len(dims), input_dims=dims, released=True, return_sequences=True)
    ours.build(x.shape)
    loop_cell = ReleasedLoopCell(units, dims)
    loop = keras.layers.RNN(loop_cell, return_sequences=True)
    loop.build(x.shape)
    copy_from_mplstm(loop_cell, ours.cell)
    return float(np.max(np.abs(ops.convert_to_numpy(ours(x)) - ops.convert_to_numpy(loop(x)))))


def time_steps(
    models: dict[str, keras.Model], x: np.ndarray, y: np.ndarray, jit: bool, warmup: int, steps: int
) -> dict[str, float]:
    """Median ms of one ``train_on_batch`` per model, in interleaved rounds (load from others hits all alike)."""
    for model in models.values():
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="categorical_crossentropy", jit_compile=jit)
        for _ in range(warmup):
            model.train_on_batch(x, y)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(steps):
        for name, model in models.items():
            start = time.perf_counter()
            loss = model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
            if not np.isfinite(loss):
                raise RuntimeError(f"non-finite loss {loss} for {name}")
    return {name: round(1000.0 * statistics.median(t), 2) for name, t in times.items()}


def device_name() -> str:
    """The accelerator the backend computes on, or the CPU model and core count."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.platform}:{device.device_kind}"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return "gpu:" + tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "cuda:" + torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"cpu:{cpu} ({len(os.sched_getaffinity(0))} cores)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--timesteps", type=int, default=20)
    parser.add_argument("--perspectives", type=int, default=3)
    parser.add_argument("--dim", type=int, default=512, help="features per perspective (fc7: 4096, ResNet50: 2048)")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", choices=("on", "off"), default="on", help="XLA-compile all three train steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the three timings, print the table and the JSON line; return the JSON object."""
    args = parse_args(argv)
    dims = [args.dim] * args.perspectives
    features = sum(dims)
    jit = args.jit == "on" and keras.backend.backend() != "torch"
    error = check_transcription(dims, min(args.units, 32), 5)
    if error > 1e-4:
        raise RuntimeError(f"released-loop transcription differs from MPLSTM(released=True) by {error}")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.timesteps, features)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, N_CLASSES, args.batch), N_CLASSES)
    layers = {
        "mplstm": MPLSTM(args.units, args.perspectives, input_dims=dims),
        "keras_lstm": keras.layers.LSTM(args.units, use_cudnn=False),  # the cuDNN path cannot be XLA-compiled
        "released_loop": keras.layers.RNN(ReleasedLoopCell(args.units, dims)),
    }
    models = {name: classifier_model(layer, args.timesteps, features) for name, layer in layers.items()}
    step_ms = time_steps(models, x, y, jit, args.warmup, args.steps)

    result = {
        "ratio_vs_keras_lstm": round(step_ms["mplstm"] / step_ms["keras_lstm"], 3),
        "speedup_vs_released_loop": round(step_ms["released_loop"] / step_ms["mplstm"], 2),
        "step_ms": step_ms,
        "device": device_name(),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "versions": package_versions(),
        "jit_compile": jit,
        "transcription_max_abs_diff": error,
        "config": {
            "batch": args.batch,
            "timesteps": args.timesteps,
            "perspectives": args.perspectives,
            "dims": dims,
            "units": args.units,
            "steps": args.steps,
        },
    }
    print(f"{'model':<16}{'step ms':>10}{'vs mplstm':>12}")
    for name, ms in step_ms.items():
        print(f"{name:<16}{ms:>10.1f}{ms / step_ms['mplstm']:>11.2f}x")
    print(
        f"ratio MPLSTM / keras LSTM: {result['ratio_vs_keras_lstm']} (target <= 1.3); "
        f"speed-up over released loop: {result['speedup_vs_released_loop']}x (target >= 3)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
