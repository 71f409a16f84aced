"""Multi-View LSTM (Rajagopalan, Morency, Baltrusaitis, Goecke, ECCV 2016): cell and layer.

The memory and the gates are partitioned into one region of ``n = units / m`` cells per view. View v's
gates (MV-sigmoid for i, f, o; MV-tanh for g) read its own input and the previous hidden states through
two fixed selections (paper eqs. 7-17)::

    gate^(v) = act(W_x^(v) x^(v) + W_h^(v,v) A h^(v)_{t-1} + sum_{k != v} W_h^(v,k) B h^(k)_{t-1} + b^(v))
    c^(v)_t = f^(v) * c^(v)_{t-1} + i^(v) * g^(v);   h^(v)_t = o^(v) * c^(v)_t   (paper: no tanh on c)

``A`` keeps the first ``round(alpha * n)`` units of the view's own hidden state, ``B`` the last
``round(beta * n)`` units of every other view's. So each hidden unit is view-specific (read by its own
view only), coupled (read by the other views only), fully connected (both) or input-oriented (neither).
Topologies (paper Fig. 2): view-specific (alpha=1, beta=0), coupled (0, 1), fully connected (1, 1) and
hybrid (the paper's Table 1 setting: alpha=0.1, beta=1). As in the authors' released code, every view has
its own recurrent weights for every source view (``W_h^(v,k)``), stored as one ``[units, 4 units]`` kernel
whose unselected rows are masked out (unused, zero gradient); their released code takes B's units from the
start of the hidden state rather than the end, which differs only when 0 < beta < 1. Their linear
per-view input embedding is left out: it composes linearly with ``W_x^(v)``.

The output is the concatenation of the views' hidden states, ``[B, units]``. With one view, alpha = 1
and ``output_activation="tanh"`` the cell is ``keras.layers.LSTMCell``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.models.mplstm.layers import GATES, PerspectiveCell, PerspectiveRNN, get_activation
from pipeline.models.mvlstm import TOPOLOGIES
from pipeline.models.networks import Layout


def connectivity(units: int, views: int, alpha: float, beta: float) -> np.ndarray:
    """0/1 ``[units, 4 units]``: which hidden units (rows, by view) feed which gates (columns, by gate then view)."""
    n = units // views
    own = np.arange(n) < round(alpha * n)
    cross = np.arange(n) >= n - round(beta * n)
    mask = np.zeros((views, n, GATES, views, n), dtype="float32")
    for source in range(views):
        for target in range(views):
            rows = own if source == target else cross
            mask[source, rows, :, target, :] = 1.0
    return mask.reshape(units, GATES * units)


@keras.saving.register_keras_serializable(package="mpview")
class MVLSTMCell(PerspectiveCell):
    """One MV-LSTM step over m view regions of ``units / m`` cells; topology set by ``alpha`` and ``beta``."""

    def __init__(
        self,
        units: int,
        perspectives: int = 1,
        alpha: float = 1.0,
        beta: float = 1.0,
        output_activation: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(units, perspectives, **kwargs)
        if units % perspectives:
            raise ValueError(f"MV-LSTM splits its {units} units evenly over {perspectives} views; pick a multiple")
        if not (0.0 <= alpha <= 1.0 and 0.0 <= beta <= 1.0):
            raise ValueError(f"alpha and beta are fractions in [0, 1], got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.output_activation = get_activation(output_activation)
        self.connectivity = connectivity(self.units, self.perspectives, self.alpha, self.beta)

    @property
    def width(self) -> int:
        """Four gate blocks of one view region."""
        return GATES * (self.units // self.perspectives)

    @property
    def recurrent_shape(self) -> tuple[int, int]:
        """All hidden units to every view's gates (masked by the topology)."""
        return (self.units, GATES * self.units)

    def project(self, inputs: Any, training: bool = False) -> Any:
        """The views' projections, regrouped gate-major (all views' i, then f, c, o) as the step reads them."""
        z = super().project(inputs, training=training)
        lead = tuple(ops.shape(z)[:-1])
        rank = len(lead)
        n = self.units // self.perspectives
        z = ops.reshape(z, lead + (self.perspectives, GATES, n))
        z = ops.transpose(z, tuple(range(rank)) + (rank + 1, rank, rank + 2))
        return ops.reshape(z, lead + (GATES * self.units,))

    def step_kernel(self) -> Any:
        """The recurrent kernel with the topology's unused connections zeroed."""
        mask = ops.convert_to_tensor(self.connectivity, dtype=self.compute_dtype)
        return self.recurrent_kernel * mask

    def call(self, inputs: Any, states: Sequence[Any]) -> tuple[Any, list[Any]]:
        """One step from the projected inputs ``[B, 4 * units]`` (gate-major) and the state (h, c)."""
        h_tm1, c_tm1 = states
        z_i, z_f, z_c, z_o = ops.split(inputs + self.recurrent_term(h_tm1), GATES, axis=-1)
        c = self.recurrent_activation(z_f) * c_tm1 + self.recurrent_activation(z_i) * self.activation(z_c)
        h = self.recurrent_activation(z_o) * self.output_activation(c)
        return h, [h, c]

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, serialised."""
        extra = {
            "alpha": self.alpha,
            "beta": self.beta,
            "output_activation": keras.activations.serialize(self.output_activation),
        }
        return {**super().get_config(), **extra}


@keras.saving.register_keras_serializable(package="mpview")
class MVLSTM(PerspectiveRNN):
    """Multi-View LSTM layer: ``MVLSTM(units, perspectives, alpha=..., beta=..., return_sequences=...)``."""

    cell_class = MVLSTMCell


def mvlstm_layout(
    dims: list[int],
    units: int,
    dropout: float,
    recurrent_dropout: float,
    *,
    topology: str = "hybrid",
    alpha: float | None = None,
    beta: float | None = None,
    output_activation: Any = None,
) -> Layout:
    """MV-LSTM baseline in the same network; ``units`` is rounded down to a multiple of the number of views.

    ``topology`` picks (alpha, beta) from ``TOPOLOGIES``; explicit ``alpha`` / ``beta`` override it.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; choose from {sorted(TOPOLOGIES)}")
    preset_alpha, preset_beta = TOPOLOGIES[topology]
    views = len(dims)
    per_view = units // views
    if per_view < 1:
        raise ValueError(f"units={units} is fewer than one per view ({views} views)")

    def recurrent(sequences: bool) -> MVLSTM:
        return MVLSTM(
            per_view * views,
            views,
            input_dims=dims,
            alpha=preset_alpha if alpha is None else alpha,
            beta=preset_beta if beta is None else beta,
            output_activation=output_activation,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            return_sequences=sequences,
        )

    return Layout("mvlstm", recurrent, (("mvlstm", tuple(range(views))),))
