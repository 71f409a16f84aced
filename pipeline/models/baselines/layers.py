"""The baselines MP-LSTM is compared with, as layouts of the shared skeleton (``pipeline.models.networks``)."""

from __future__ import annotations

from pipeline.models.networks import Layout, lstm_factory


def single_layout(
    dims: list[int], units: int, dropout: float, recurrent_dropout: float, *, perspective: int = 0
) -> Layout:
    """Single-perspective baseline: an LSTM network on perspective ``perspective`` only (the others are ignored)."""
    name = f"single_{perspective}"
    return Layout(name, lstm_factory(units, dropout, recurrent_dropout), ((name, (perspective,)),))


def early_fusion_layout(dims: list[int], units: int, dropout: float, recurrent_dropout: float) -> Layout:
    """Early fusion: perspectives concatenated per frame -> one LSTM network."""
    return Layout(
        "early_fusion", lstm_factory(units, dropout, recurrent_dropout), (("early", tuple(range(len(dims)))),)
    )


def late_fusion_layout(
    dims: list[int], units: int, dropout: float, recurrent_dropout: float, *, combine: str = "scores"
) -> Layout:
    """Late fusion: one LSTM network per perspective; ``combine="scores"`` averages their softmax scores,
    ``"features"`` concatenates their representations under one classifier."""
    if combine not in ("scores", "features"):
        raise ValueError(f"combine must be 'scores' or 'features', got {combine!r}")
    branches = tuple((f"late_{j}", (j,)) for j in range(len(dims)))
    return Layout(f"late_fusion_{combine}", lstm_factory(units, dropout, recurrent_dropout), branches, combine, "late")
