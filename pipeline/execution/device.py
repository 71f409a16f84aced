"""Which Keras backend and device a run uses, for logs and every report."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import shutil
import sys
from typing import Any, Iterator

from pipeline.execution.logs import get_logger


def describe() -> dict[str, Any]:
    """Backend name, accelerator list and mixed-precision policy of the current process."""
    import keras

    backend = keras.backend.backend()
    devices: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices()]
    elif backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch

        devices = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    accelerated = any(("GPU" in d.upper() or "CUDA" in d.upper()) for d in devices)
    return {
        "backend": backend,
        "keras": keras.__version__,
        "devices": devices,
        "device": "gpu" if accelerated else "cpu",
        "dtype_policy": keras.config.dtype_policy().name,
    }


def gpu_present() -> bool:
    """Whether this machine shows an NVIDIA GPU (a device node or the driver's tool), without starting CUDA."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send the process's file descriptor 2 to /dev/null for a while (native libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def start_tensorflow_quietly() -> None:
    """On a machine without a GPU, import TensorFlow and probe its devices with stderr silenced.

    TensorFlow's C++ start-up logs CUDA driver errors ("failed call to cuInit") before any Python logging setting
    applies; they mean nothing on a CPU machine. With a GPU, another backend or debug logging (``--verbose``), nothing
    is done, so real problems show. The verbs call it where they start the backend, after checking their inputs.
    """
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or gpu_present() or "tensorflow" in sys.modules:
        return
    if get_logger().isEnabledFor(logging.DEBUG):
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
