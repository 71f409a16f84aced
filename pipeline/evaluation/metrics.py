"""Classification metrics for the evaluate stage: accuracy, top-k, per class, per speaker, confusion, macro F1.

All results are plain Python numbers, lists and dicts, so they can be written as JSON as they are.
Accuracies are fractions in [0, 1]; a class or speaker with no test samples has accuracy ``None``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from pipeline.errors import ConfigError


def topk_key(k: int) -> str:
    """The key under which top-``k`` accuracy is stored (``top1``, ``top5``...)."""
    return f"top{k}"


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically (speaker ``s2`` before ``s10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def ranked_classes(scores: np.ndarray) -> np.ndarray:
    """Class indices per row from highest to lowest score; ties go to the lower index, as with ``argmax``."""
    return np.argsort(-scores, axis=1, kind="stable")


def topk_accuracies(y_true: np.ndarray, scores: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Fraction of samples whose true class is among the ``k`` highest scores, for each k below C (and always k=1).

    A k at or above the number of classes C is dropped: every sample would be a hit, a 100% that says nothing.
    """
    n_classes = scores.shape[1]
    if not ks or min(int(k) for k in ks) < 1:
        raise ConfigError(f"top-k values must be >= 1, got {list(ks)}")
    capped = sorted({int(k) for k in ks if int(k) < n_classes or int(k) == 1})
    order = ranked_classes(scores)[:, : capped[-1]]
    hits = order == y_true[:, None]
    return {topk_key(k): float(hits[:, :k].any(axis=1).mean()) for k in capped}


def _fraction(correct: int, total: int) -> float | None:
    """``correct / total``, or ``None`` when there is nothing to count."""
    return float(correct / total) if total else None


def per_class_accuracy(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per class: accuracy (recall: correct / true samples of that class), correct count and support."""
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    return {
        str(name): {
            "accuracy": _fraction(int(correct[i]), int(support[i])),
            "correct": int(correct[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }


def per_speaker_accuracy(correct: np.ndarray, speakers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per speaker (natural order): accuracy, correct count and number of test samples."""
    speakers_arr = np.asarray([str(s) for s in speakers])
    result = {}
    for speaker in sorted(set(speakers_arr.tolist()), key=natural_key):
        mask = speakers_arr == speaker
        n_correct, n = int(correct[mask].sum()), int(mask.sum())
        result[speaker] = {"accuracy": _fraction(n_correct, n), "correct": n_correct, "n": n}
    return result


def _validated(
    y_true: Any, probs: Any, classes: Sequence[str], speakers: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 ``[N]`` and scores as float64 ``[N, C]``, or a ValueError naming what is wrong."""
    y = np.asarray(y_true)
    scores = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if scores.ndim != 2 or scores.shape[0] != y.shape[0]:
        raise ValueError(f"probs must have shape [N={y.shape[0]}, C], got {scores.shape}")
    if y.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    if scores.shape[1] != len(classes):
        raise ValueError(f"probs has {scores.shape[1]} columns but {len(classes)} class names were given")
    if len({str(c) for c in classes}) != len(classes):
        raise ValueError("class names must be unique")
    if y.min() < 0 or y.max() >= len(classes):
        raise ValueError(f"labels must lie in [0, {len(classes) - 1}], got {int(y.min())}..{int(y.max())}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("probs contains NaN or infinite values")
    if speakers is not None and len(speakers) != y.shape[0]:
        raise ValueError(f"{len(speakers)} speakers given for {y.shape[0]} samples")
    return y.astype(np.int64), scores


def evaluate_predictions(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    speakers: Sequence[str] | None = None,
    k: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """Score predictions: ``probs`` is ``[N, C]`` class scores (probabilities or logits), rows of ``y_true``.

    Returns a JSON-ready dict: ``n_samples``, ``n_classes``, ``classes``, ``accuracy``, ``top_k``
    (``{"top1": .., "top5": ..}``, k at or above C dropped), ``macro_f1`` (over the classes that occur in
    the labels or the predictions, as scikit-learn does), ``per_class`` (accuracy = recall, correct,
    support), ``per_speaker`` (``None`` without speakers) and ``confusion_matrix`` (rows = true class,
    columns = predicted class, in ``classes`` order). The prediction is the highest score, ties going
    to the lower class index.
    """
    y, scores = _validated(y_true, probs, classes, speakers)
    y_pred = ranked_classes(scores)[:, 0]
    correct = y_pred == y
    cm = confusion_matrix(y, y_pred, labels=np.arange(len(classes)))
    present = np.union1d(y, y_pred)
    top_k = topk_accuracies(y, scores, k)
    return {
        "n_samples": int(y.shape[0]),
        "n_classes": len(classes),
        "classes": [str(c) for c in classes],
        "accuracy": float(correct.mean()),
        "top_k": top_k,
        "macro_f1": float(f1_score(y, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class": per_class_accuracy(cm, classes),
        "per_speaker": None if speakers is None else per_speaker_accuracy(correct, speakers),
        "confusion_matrix": cm.astype(int).tolist(),
        "warnings": score_warnings(cm, k, top_k, classes),
    }


MIN_PER_CLASS = 10  # fewer test clips than this for a class: its accuracy moves in steps of 10% or more
MOST_CLIPS = 0.9  # one class predicted for this share of the clips or more: the model has collapsed onto it


def score_warnings(cm: np.ndarray, ks: Sequence[int], top_k: Mapping[str, float], classes: Sequence[str]) -> list[str]:
    """What makes these numbers mean little: a small test split, dropped trivial top-k, one class predicted for most."""
    warnings = []
    support, n = cm.sum(axis=1), int(cm.sum())
    if len(classes) and support.min() < MIN_PER_CLASS:
        warnings.append(
            f"small test split: {n} clips for {len(classes)} classes, as few as {int(support.min())} "
            f"for a class (under {MIN_PER_CLASS}); accuracies move in large steps and can be chance"
        )
    trivial = sorted({int(k) for k in ks} - {int(key[3:]) for key in top_k})
    if trivial:
        warnings.append(
            f"top-{', '.join(map(str, trivial))} not reported: with {len(classes)} classes every clip would be a hit"
        )
    predicted = cm.sum(axis=0)
    if len(classes) > 1 and n and predicted.max() >= MOST_CLIPS * n:
        top = classes[int(predicted.argmax())]
        warnings.append(
            f"the model predicts {top!r} for {int(predicted.max())} of {n} clips: it has collapsed onto one class"
        )
    return warnings
