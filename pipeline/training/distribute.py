"""Data-parallel training across the visible devices, with the same code on TensorFlow and JAX.

TensorFlow uses ``tf.distribute.MirroredStrategy``; JAX uses Keras's distribution API
(``keras.distribution.DataParallel``). The batch given on the command line is per device; the
global batch is that times the number of replicas, and the learning rate scales linearly with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Parallelism:
    """How many replicas train in step, and the resulting global batch and learning rate."""

    replicas: int
    global_batch: int
    learning_rate: float


@contextlib.contextmanager
def data_parallel(
    enabled: bool, batch_per_replica: int, learning_rate: float, scale_lr: bool = True
) -> Iterator[Parallelism]:
    """Build, compile and fit inside this context to train data-parallel over all local devices."""
    if not enabled:
        yield Parallelism(1, batch_per_replica, learning_rate)
        return
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        strategy = tf.distribute.MirroredStrategy(devices)
        replicas = strategy.num_replicas_in_sync
        scope = strategy.scope()
    elif backend == "jax":
        devices = keras.distribution.list_devices()
        replicas = len(devices)
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        scope = contextlib.nullcontext()
    else:
        raise ConfigError(f"--distribute supports the tensorflow and jax backends, not {backend}")
    plan = Parallelism(replicas, batch_per_replica * replicas, learning_rate * replicas if scale_lr else learning_rate)
    log.info(
        "data-parallel over %d replica(s) (%s): global batch %d, learning rate %g",
        replicas,
        backend,
        plan.global_batch,
        plan.learning_rate,
    )
    with scope:
        yield plan


def set_precision(mixed: bool) -> str:
    """Use mixed float16 compute (float32 variables) when asked; returns the policy name."""
    import keras

    policy = "mixed_float16" if mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    if mixed and "gpu" not in str(keras.distribution.list_devices()).lower():
        log.warning("mixed precision on a CPU is usually slower; it pays off on GPUs")
    return policy
