"""Which Keras backend and device a run uses, for logs and every report."""

from __future__ import annotations

from typing import Any


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
