"""Activation-memory estimate of a training step, checked against the memory the machine has before the first step.

The estimate counts the elements of every layer output per sample (layers inside ``TimeDistributed`` once per
frame, nested models recursively, recurrent layers times the tensors one step keeps for backpropagation; a layer
with a ``kept_elements()`` method says itself what it keeps, all calls together), times 4 bytes, the batch size
and a calibration factor measured on this project's machine through ``fit``: 3 for a model with Keras's per-frame
``TimeDistributed`` (which slices, stacks and transposes the frames) or a plain recurrent layer, 1.25 for a model
whose per-frame and recurrent layers all count what they keep (``pipeline.models.convlstm.layers``). It is a
guide, not a bound: its purpose is a one-line error naming what to lower instead of a kernel kill.
"""

from __future__ import annotations

import math
from typing import Sequence

from pipeline.errors import TooLargeError
from pipeline.execution.logs import get_logger

log = get_logger(__name__)

RECURRENT_FACTOR = 15  # per step: 4 gate pre-activations from input and from state, 4 activations, c, tanh c, h
CALIBRATION = 3.0  # bytes per counted float32 element, measured through `fit` on TensorFlow CPU (README, "Memory")
# the same for a model whose per-frame and recurrent layers all report what they keep (the ConvLSTM): the gradients
# alive beside the kept tensors; measured 1.1 through `fit` (README's ConvLSTM line), 1.5 for bare train_on_batch steps
LEAN_CALIBRATION = 1.25
HEADROOM = 0.9  # use at most this share of the available memory


def _elements(shape: Sequence[int | None]) -> int:
    return math.prod(int(d or 1) for d in shape[1:])


def _output_elements(layer) -> int:
    """Elements per sample of every output of every call of ``layer``."""
    from keras import tree

    total = 0
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in tree.flatten(node.outputs):
            total += _elements(tensor.shape)
    return total


def counted_elements(model) -> int:
    """Activation elements per sample that a forward pass of ``model`` keeps for the backward pass (see module doc)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        kept = _kept(layer)
        if kept is not None:
            total += kept
            continue
        inner = getattr(layer, "layer", None) if isinstance(layer, keras.layers.TimeDistributed) else None
        calls = max(1, len(getattr(layer, "_inbound_nodes", [])))
        if isinstance(inner, keras.Model):
            frames = int(layer._inbound_nodes[0].outputs[0].shape[1] or 1) if layer._inbound_nodes else 1
            total += calls * frames * counted_elements(inner)
        elif isinstance(layer, keras.Model):
            total += calls * counted_elements(layer)
        elif isinstance(layer, keras.layers.RNN) or "LSTM" in type(layer).__name__ or "GRU" in type(layer).__name__:
            total += RECURRENT_FACTOR * _output_elements(layer) * _steps_if_last(layer)
        else:
            total += _output_elements(layer)
    return total


def _kept(layer) -> int | None:
    """What a layer says it keeps per sample for the backward pass (its ``kept_elements()``), else None."""
    report = getattr(layer, "kept_elements", None)
    return report() if callable(report) else None


def _heavy(model) -> bool:
    """Whether ``model`` (nested models included) has a per-frame or recurrent layer that does not count its keeps."""
    import keras

    for layer in model.layers:
        if _kept(layer) is not None:
            continue
        inner = getattr(layer, "layer", None) if isinstance(layer, keras.layers.TimeDistributed) else None
        if inner is not None or isinstance(layer, keras.layers.RNN) or "LSTM" in type(layer).__name__:
            return True
        if isinstance(layer, keras.Model) and _heavy(layer):
            return True
    return False


def calibration(model) -> float:
    """Bytes per counted byte: ``CALIBRATION``, or ``LEAN_CALIBRATION`` when every such layer counts its keeps."""
    return CALIBRATION if _heavy(model) else LEAN_CALIBRATION


def _steps_if_last(layer) -> int:
    """A recurrent layer that returns only its last state still keeps every step: count the input's time axis."""
    if getattr(layer, "return_sequences", True):
        return 1
    node = layer._inbound_nodes[0] if layer._inbound_nodes else None
    from keras import tree

    first = tree.flatten(node.arguments.keras_tensors)[0] if node is not None else None
    return int(first.shape[1] or 1) if first is not None and len(first.shape) > 2 else 1


def estimate_bytes(model, batch_size: int) -> int:
    """Estimated activation memory of one training step of ``batch_size`` samples, in bytes."""
    return int(calibration(model) * 4 * batch_size * counted_elements(model))


def available_bytes() -> int | None:
    """Memory available to this process: psutil, else /proc/meminfo's MemAvailable, capped by a cgroup limit."""
    available = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) * 1024
        except OSError:
            pass
    limit = _cgroup_limit()
    return min(v for v in (available, limit) if v is not None) if (available or limit) else None


def _cgroup_limit() -> int | None:
    """The cgroup v2/v1 memory limit minus current use, when one is set."""
    for limit_path, used_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = open(limit_path).read().strip()
            if raw == "max" or int(raw) > 1 << 60:
                return None
            return int(raw) - int(open(used_path).read().strip())
        except (OSError, ValueError):
            continue
    return None


def resident_bytes() -> int | None:
    """This process's resident memory now (``/proc/self/statm``), None where it cannot be read."""
    import os

    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def gib(n: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / 2**30:.1f} GiB"


def check_fits(model, batch_size: int, to_lower: Sequence[str], available: int | None = None) -> int:
    """Log the estimate; raise ``TooLargeError`` (one line naming ``to_lower``) when it exceeds the available memory."""
    need = estimate_bytes(model, batch_size)
    have = available_bytes() if available is None else available
    held = resident_bytes()
    log.info(
        "activation memory estimate: %s for batch %d (%s per sample)%s; available: %s",
        gib(need),
        batch_size,
        gib(need / max(batch_size, 1)),
        f", a peak of about {gib(held + need)} with the {gib(held)} this process holds" if held else "",
        gib(have) if have else "unknown",
    )
    if have is not None and need > HEADROOM * have:
        raise TooLargeError(
            f"training would need about {gib(need)} of activations (batch {batch_size}), more than the "
            f"{gib(have)} available: lower {', '.join(to_lower)}"
        )
    return need
