"""Optimizers and learning-rate schedules a run can name: what the authors' training loops use.

``make_optimizer`` builds the Keras optimizer a run's recorded ``optimizer`` settings name (RMSprop, Adam, AdamW,
or SGD with momentum), with weight decay and clipping. ``sgd`` is the update of Srivastava et al.'s ``util.py``
(``Param.Update``): an L2 term added to the gradient, heavy-ball momentum, and with ``clip_mode="update"`` the
step itself clipped elementwise (their ``gradient_clip`` bounds the momentum buffer, not the gradient).
``PlateauHalving`` is Kim et al.'s ``endurance`` loop: the learning rate times ``factor`` once ``patience`` epochs in
a row fail to beat the best validation accuracy, the count then starting afresh.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import keras
from keras import ops

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.training.presets import SCHEDULES, check_settings

log = get_logger(__name__)
UNDECAYED = ("bias", "beta", "gamma")  # variable names MomentumSGD's L2 term skips
TORCH_EPSILON = 1e-8  # torch.optim.Adam/AdamW's default eps (Keras defaults to 1e-7)


@keras.saving.register_keras_serializable(package="mpview")
class MomentumSGD(keras.optimizers.Optimizer):
    """SGD as Srivastava et al.'s ``Param.Update``: ``v = m v - lr (g + l2 w)``, ``v`` clipped to +-``step_clip``
    elementwise when set, ``w += v``. The L2 term skips biases (and normalisation offsets and scales), as their
    configs give ``l2_decay`` to the weights and peepholes (``w_*``) but not to ``b``, ``b_output``."""

    def __init__(
        self,
        learning_rate: float = 1e-4,
        momentum: float = 0.9,
        l2: float = 0.0,
        step_clip: float | None = None,
        name: str = "momentum_sgd",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum, self.l2, self.step_clip = float(momentum), float(l2), step_clip

    def build(self, variables: list) -> None:
        """One velocity per variable."""
        if self.built:
            return
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(v, "velocity") for v in variables]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One step of ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2 and variable.name.split("/")[-1] not in UNDECAYED:
            gradient = ops.add(gradient, ops.multiply(variable, self.l2))
        velocity = self.velocities[self._get_variable_index(variable)]
        step = ops.subtract(ops.multiply(velocity, self.momentum), ops.multiply(gradient, lr))
        if self.step_clip:
            step = ops.clip(step, -self.step_clip, self.step_clip)
        self.assign(velocity, step)
        self.assign_add(variable, step)

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {**super().get_config(), "momentum": self.momentum, "l2": self.l2, "step_clip": self.step_clip}


def custom_objects() -> dict[str, Any]:
    """The optimizers a checkpoint may have been compiled with that Keras does not know by itself."""
    return {"mpview>MomentumSGD": MomentumSGD, "MomentumSGD": MomentumSGD}


def make_optimizer(options: Mapping[str, Any], default: str = "rmsprop") -> keras.optimizers.Optimizer:
    """The Keras optimizer of a run's options: ``options["optimizer"]`` (name, weight decay, momentum, clipping) at
    ``options["lr"]``; a run recorded without optimizer settings gets ``default`` with none of them."""
    settings = dict(options.get("optimizer") or {"name": default})
    check_settings(settings)
    lr = float(options["lr"])
    name, decay = settings["name"], float(settings.get("weight_decay") or 0.0)
    momentum, clip, mode = float(settings.get("momentum") or 0.0), settings.get("clip"), settings.get("clip_mode")
    clipping = {"value": {"clipvalue": clip}, "norm": {"clipnorm": clip}}.get(mode, {}) if clip else {}
    if name == "sgd":
        return MomentumSGD(lr, momentum, decay, clip if mode == "update" else None, **clipping)
    decayed = {"weight_decay": decay} if decay else {}
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=momentum, **decayed, **clipping)
    if name == "adam":
        return keras.optimizers.Adam(lr, **decayed, **clipping)
    return keras.optimizers.AdamW(lr, weight_decay=decay, epsilon=TORCH_EPSILON, **clipping)


class PlateauHalving(keras.callbacks.Callback):
    """Kim et al.'s ``endurance``: after each epoch, a ``monitor`` above the best so far resets the count, any other
    value adds one; at ``patience`` the learning rate is multiplied by ``factor`` and the count starts again.

    ``best`` starts at ``baseline`` (their ``best_val_acc = 0.0``). The learning rate of each epoch is logged as
    ``learning_rate`` (the history CSV records it); ``state``/``restore`` carry the counters across a resume.
    """

    def __init__(self, monitor: str, patience: int, factor: float = 0.5, baseline: float = 0.0) -> None:
        super().__init__()
        self.monitor, self.patience, self.factor = monitor, patience, factor
        self.best, self.wait = baseline, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        value = logs.get(self.monitor)
        if value is None or math.isnan(value):
            return
        if value > self.best:
            self.best, self.wait = float(value), 0
        else:
            self.wait += 1
        if self.wait >= self.patience:
            self.wait = 0
            self.model.optimizer.learning_rate = logs["learning_rate"] * self.factor
            log.info(
                "epoch %d: %s not above %.4f for %d epochs: learning rate -> %g",
                epoch + 1,
                self.monitor,
                self.best,
                self.patience,
                logs["learning_rate"] * self.factor,
            )

    def state(self) -> dict[str, Any]:
        """The counters a resumed run continues from."""
        return {"best": self.best, "wait": self.wait}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (``state()`` of the interrupted run)."""
        self.best, self.wait = float(state["best"]), int(state["wait"])


def schedule_callback(schedule: Mapping[str, Any] | None, monitor: str) -> PlateauHalving | None:
    """The callback of a run's recorded ``lr_schedule`` (None for a constant learning rate)."""
    if not schedule or schedule.get("name", "constant") == "constant":
        return None
    if schedule["name"] != "plateau":
        raise ConfigError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {schedule['name']!r}")
    return PlateauHalving(monitor, int(schedule["patience"]), float(schedule["factor"]))
