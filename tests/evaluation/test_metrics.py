"""Evaluation metrics against hand-computed values, and the reports, plots and comparison built from them."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.evaluation.metrics import evaluate_predictions
from pipeline.evaluation.plots import plot_comparison, plot_confusion_matrix, plot_training_curves
from pipeline.evaluation.report import (
    RANDOM_WARNING,
    comparison_rows,
    comparison_table,
    load_report,
    write_comparison,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["a", "b", "c"]
# sample:          0    1    2    3    4    5
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.70, 0.20, 0.10],  # true a, predicted a; top-2 {a, b}: hit
        [0.30, 0.60, 0.10],  # true a, predicted b; top-2 {b, a}: hit
        [0.20, 0.70, 0.10],  # true b, predicted b
        [0.10, 0.50, 0.40],  # true b, predicted b
        [0.10, 0.20, 0.70],  # true c, predicted c
        [0.40, 0.35, 0.25],  # true c, predicted a; top-2 {a, b}: miss
    ]
)
SPEAKERS = ["s10", "s10", "s2", "s2", "s2", "s10"]


@pytest.fixture()
def metrics() -> dict:
    """Metrics of the hand-checked six-sample case."""
    return evaluate_predictions(Y_TRUE, PROBS, CLASSES, SPEAKERS, k=(1, 2, 5))


def _assert_png(path: Path) -> np.ndarray:
    """Check ``path`` is a non-empty PNG matplotlib can read; return the image."""
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return image


def test_headline_numbers_match_hand_computation(metrics: dict) -> None:
    assert metrics["n_samples"] == 6
    assert metrics["n_classes"] == 3
    assert metrics["classes"] == CLASSES
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # k=5 is at or above the 3 classes, where every sample is a hit: dropped, with a warning
    assert metrics["top_k"] == pytest.approx({"top1": 4 / 6, "top2": 5 / 6})
    assert list(metrics["top_k"]) == ["top1", "top2"]
    assert any("top-5 not reported: with 3 classes" in w for w in metrics["warnings"])
    assert any(w.startswith("small test split: 6 clips for 3 classes, as few as 2") for w in metrics["warnings"])


def test_confusion_per_class_and_per_speaker_match_hand_computation(metrics: dict) -> None:
    # predictions: a, b, b, b, c, a
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert metrics["per_class"] == {
        "a": {"accuracy": 0.5, "correct": 1, "support": 2},
        "b": {"accuracy": 1.0, "correct": 2, "support": 2},
        "c": {"accuracy": 0.5, "correct": 1, "support": 2},
    }
    # natural order: s2 before s10; s10 = samples 0, 1, 5 (only 0 right), s2 = samples 2, 3, 4 (all right)
    assert list(metrics["per_speaker"]) == ["s2", "s10"]
    assert metrics["per_speaker"]["s2"] == {"accuracy": 1.0, "correct": 3, "n": 3}
    assert metrics["per_speaker"]["s10"] == pytest.approx({"accuracy": 1 / 3, "correct": 1, "n": 3})


def test_macro_f1_matches_hand_computation(metrics: dict) -> None:
    # precision / recall: a 1/2, 1/2 -> F1 1/2; b 2/3, 1 -> 4/5; c 1, 1/2 -> 2/3
    expected = (Fraction(1, 2) + Fraction(4, 5) + Fraction(2, 3)) / 3
    assert expected == Fraction(59, 90)
    assert metrics["macro_f1"] == pytest.approx(float(expected))


def test_metrics_are_json_serialisable(metrics: dict) -> None:
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_ties_go_to_lower_index_for_both_accuracy_and_top1() -> None:
    result = evaluate_predictions(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), ["x", "y"], k=(1,))
    assert result["accuracy"] == result["top_k"]["top1"] == 0.5
    assert result["confusion_matrix"] == [[1, 0], [1, 0]]
    assert result["per_speaker"] is None


def test_class_absent_from_test_set_has_no_accuracy() -> None:
    result = evaluate_predictions(
        np.array([0, 1]), np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]), ["a", "b", "c"], k=(1, 2)
    )
    assert result["per_class"]["c"] == {"accuracy": None, "correct": 0, "support": 0}
    assert result["macro_f1"] == 1.0
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize(
    ("y_true", "probs", "classes", "speakers", "message"),
    [
        (np.array([0, 3]), np.eye(2, 3), CLASSES, None, "labels must lie"),
        (np.array([0, 1]), np.eye(2, 2), CLASSES, None, "columns"),
        (np.array([0, 1]), np.eye(2, 3), CLASSES, ["s1"], "speakers"),
        (np.array([0.0, 1.0]), np.eye(2, 3), CLASSES, None, "integer"),
        (np.array([0, 1]), np.array([[np.nan, 0, 0], [0, 1, 0]]), CLASSES, None, "NaN"),
        (np.array([], dtype=int), np.zeros((0, 3)), CLASSES, None, "no samples"),
        (np.array([0, 1]), np.eye(2, 3), ["a", "a", "b"], None, "unique"),
    ],
)
def test_bad_inputs_are_refused(y_true, probs, classes, speakers, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(y_true, probs, classes, speakers)


RUN_INFO = {
    "model": "mplstm",
    "perspectives": ["v1", "v3"],
    "backbone": "resnet50",
    "weights": "vggface2 rcmalli v2.0",
    "checkpoint": "runs/mplstm/best.keras",
    "device": "cpu",
    "backend": "tensorflow",
    "versions": {"numpy": "2.0", "keras": "3.3"},
}
HISTORY = {
    "loss": [1.2, 0.9, 0.7],
    "val_loss": [1.3, 1.0, 0.9],
    "accuracy": [0.4, 0.6, 0.7],
    "val_accuracy": [0.35, 0.5, 0.6],
}


def test_write_report_files_and_markdown_numbers(tmp_path: Path, metrics: dict) -> None:
    paths = write_report(tmp_path, "mplstm_v1v3", metrics, RUN_INFO, HISTORY)
    assert set(paths) == {"json", "markdown", "confusion_png", "curves_png"}
    report = load_report(paths["json"])
    assert report["metrics"] == metrics and report["run_info"] == RUN_INFO and report["history"] == HISTORY
    assert report["random_weights"] is False and report["warning"] is None
    md = paths["markdown"].read_text(encoding="utf-8")
    for text in (
        "66.67%",
        "(4 / 6 correct)",
        "| top-2 | 83.33% |",
        "> **Warning: small test split",
        "0.6556",
        "| b | 100.00% | 2 | 2 |",
        "| s10 | 33.33% | 1 | 3 |",
        "| s2 | 100.00% | 3 | 3 |",
    ):
        assert text in md
    assert "| true \\ predicted | a | b | c |" in md and "| c | 1 | 0 | 1 |" in md
    assert "| versions.keras | 3.3 |" in md and "| perspectives | v1, v3 |" in md
    assert "mplstm_v1v3_confusion.png" in md and "mplstm_v1v3_curves.png" in md
    assert RANDOM_WARNING not in md
    for key in ("confusion_png", "curves_png"):
        _assert_png(paths[key])
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_random_weights_are_flagged_in_report(tmp_path: Path, metrics: dict) -> None:
    run_info = {**RUN_INFO, "extract": {"weights_label": "random (smoke test)"}}
    paths = write_report(tmp_path, "smoke", metrics, run_info, None)
    assert "curves_png" not in paths
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert report["random_weights"] is True and report["warning"] == RANDOM_WARNING
    assert RANDOM_WARNING in paths["markdown"].read_text(encoding="utf-8")


def test_report_name_must_be_a_file_name(tmp_path: Path, metrics: dict) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        write_report(tmp_path, "../escape", metrics, RUN_INFO)


def _report(name: str, accuracy: float, weights: str, n: int = 6) -> dict:
    """A minimal report record as :func:`pipeline.evaluation.report.build_report` makes it."""
    metrics = {
        "accuracy": accuracy,
        "top_k": {"top1": accuracy, "top5": min(1.0, accuracy + 0.2)},
        "macro_f1": accuracy - 0.05,
        "n_samples": n,
        "classes": CLASSES,
    }
    return {
        "name": name,
        "metrics": metrics,
        "run_info": {"model": name.split("_")[0], "perspectives": ["v1", "v2"], "weights": weights},
    }


def test_comparison_table_sorted_without_warning() -> None:
    reports = [
        _report("early_fusion", 0.61, "vggface2"),
        _report("mplstm_full", 0.74, "vggface2"),
        _report("lstm_v1", 0.55, "vggface2"),
    ]
    assert [row["name"] for row in comparison_rows(reports)] == ["mplstm_full", "early_fusion", "lstm_v1"]
    table = comparison_table(reports)
    lines = table.splitlines()
    assert lines[0].startswith(
        "| # | report | model | perspectives | weights | test accuracy | top-5 | macro F1 | n test |"
    )
    assert lines[2].startswith("| 1 | mplstm_full | mplstm | v1, v2 | vggface2 | 74.00% | 94.00% | 0.6900 | 6 |")
    assert lines[3].startswith("| 2 | early_fusion") and lines[4].startswith("| 3 | lstm_v1")
    assert "Warning" not in table


def test_comparison_warns_about_random_weights_and_other_test_sets(tmp_path: Path) -> None:
    reports = [_report("mplstm_full", 0.74, "vggface2"), _report("smoke_run", 0.34, "random", n=12)]
    table = comparison_table(reports)
    assert f"**Warning: {RANDOM_WARNING} (smoke_run).**" in table
    assert "not evaluated on the same test set" in table
    assert "⚠ random (smoke test only)" in table
    paths = write_comparison(tmp_path, reports)
    assert RANDOM_WARNING in paths["markdown"].read_text(encoding="utf-8")
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert [row["name"] for row in data["rows"]] == ["mplstm_full", "smoke_run"]
    assert [row["random_weights"] for row in data["rows"]] == [False, True]
    assert any(RANDOM_WARNING in w for w in data["warnings"])
    _assert_png(paths["png"])


def test_plots_write_valid_pngs(tmp_path: Path) -> None:
    many = [f"w{i}" for i in range(50)]
    cm = np.diag(np.arange(1, 51)).tolist()
    _assert_png(plot_confusion_matrix(cm, many, tmp_path / "big.png"))
    _assert_png(plot_confusion_matrix([[2, 1], [0, 3]], ["x", "y"], tmp_path / "counts.png", normalise=False))
    _assert_png(plot_training_curves({"loss": [1.0, 0.5]}, tmp_path / "loss_only.png"))
    _assert_png(plot_comparison([_report("a_b", 0.5, "vggface2")], tmp_path / "one.png"))
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 0], [0, 1]], ["x", "y", "z"], tmp_path / "bad.png")


def test_two_clip_two_class_test_warns_and_drops_trivial_top_k(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2-class, 2-clip test split where the model predicts one class: small split, no top-2, collapsed model,
    each in the log and the report."""
    metrics = evaluate_predictions(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]), ["x", "y"], k=(1, 2, 5))
    assert list(metrics["top_k"]) == ["top1"]
    small, top, collapsed = metrics["warnings"]
    assert "small test split: 2 clips for 2 classes" in small and "top-2, 5 not reported" in top
    assert "predicts 'x' for 2 of 2 clips" in collapsed
    with caplog.at_level("WARNING"):
        paths = write_report(tmp_path, "tiny", metrics, RUN_INFO)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert all(f"> **Warning: {w}.**" in md for w in metrics["warnings"]) and "top-2 |" not in md
    assert load_report(paths["json"])["metrics"]["warnings"] == metrics["warnings"]
    assert sum("tiny: " in r.getMessage() for r in caplog.records if r.levelname == "WARNING") == 3
