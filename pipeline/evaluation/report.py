"""Evaluation reports: one checkpoint's JSON + Markdown + plots, and a comparison of several on one test split."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import topk_key
from pipeline.evaluation.plots import plot_comparison, plot_confusion_matrix, plot_training_curves
from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import write_text_atomic

log = get_logger(__name__)

RANDOM_WARNING = "features from random weights: smoke test only"
MAX_MARKDOWN_CONFUSION = 30
MISSING = "–"


def uses_random_weights(run_info: Any) -> bool:
    """Whether any run-info entry whose key mentions ``weights`` (at any depth) has a value mentioning ``random``."""
    if isinstance(run_info, Mapping):
        return any(
            ("weights" in str(key).lower() and "random" in str(value).lower()) or uses_random_weights(value)
            for key, value in run_info.items()
        )
    return False


def build_report(
    name: str,
    metrics: Mapping[str, Any],
    run_info: Mapping[str, Any],
    history: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The report record written as JSON: name, random-weights flag and warning, the training recipe and the run's
    deviations from it, metrics, run info, history."""
    random = uses_random_weights(run_info)
    preset = (run_info.get("options") or {}).get("preset")
    return {
        "name": name,
        "random_weights": random,
        "warning": RANDOM_WARNING if random else None,
        "recipe": {"name": preset["name"], "deviations": list(preset["overrides"])} if preset else None,
        "metrics": dict(metrics),
        "run_info": dict(run_info),
        "history": None
        if history is None
        else {key: [_finite_or_none(v) for v in values] for key, values in history.items()},
    }


def _finite_or_none(value: float) -> float | None:
    """A history value as a float, with NaN or infinity (a diverged loss) as ``None`` so the JSON stays valid."""
    value = float(value)
    return value if math.isfinite(value) else None


def _to_json(data: Any) -> str:
    """Indented strict JSON; paths and other objects as their text."""
    return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"


def load_report(path: Path | str) -> dict[str, Any]:
    """Read a report JSON written by :func:`write_report`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals, or a dash."""
    return MISSING if value is None else f"{100 * value:.2f}%"


def _cell(value: Any) -> str:
    """A value made safe for a Markdown table cell."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    text = MISSING if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _flatten(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested run info as ``(dotted.key, value)`` pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in info.items():
        if isinstance(value, Mapping):
            pairs += _flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _topk_label(key: str) -> str:
    """``top5`` -> ``top-5``."""
    return f"top-{key[3:]}"


def _confusion_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The confusion matrix as a Markdown table (rows = true class), or a pointer when there are too many classes."""
    classes = metrics["classes"]
    if len(classes) > MAX_MARKDOWN_CONFUSION:
        return [f"{len(classes)} classes: too many for a table; the counts are in the JSON report."]
    rows = [[name, *counts] for name, counts in zip(classes, metrics["confusion_matrix"])]
    return ["Rows: true class; columns: predicted class.", "", *_table(["true \\ predicted", *classes], rows)]


def _recipe_lines(recipe: Mapping[str, Any] | None) -> list[str]:
    """The report's recipe section: the preset trained with and every setting the run changed from it."""
    if not recipe:
        return []
    head = ["", "## Training recipe", ""]
    if not recipe["deviations"]:
        return [*head, f"Trained with `--recipe {recipe['name']}`; no setting departs from it."]
    rows = [[d["setting"], d["preset"], d["given"]] for d in recipe["deviations"]]
    return [
        *head,
        f"Trained with `--recipe {recipe['name']}`; deviations from it:",
        "",
        *_table(["setting", "recipe", "this run"], rows),
    ]


def summary_markdown(report: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """The Markdown summary of one report; ``images`` maps ``confusion``/``curves`` to relative PNG paths."""
    metrics = report["metrics"]
    correct = sum(row[i] for i, row in enumerate(metrics["confusion_matrix"]))
    lines = [f"# Evaluation report: {report['name']}", ""]
    if report["random_weights"]:
        lines += [f"> **Warning: {RANDOM_WARNING}.** These numbers say nothing about the model.", ""]
    lines += [f"> **Warning: {warning}.**" for warning in metrics.get("warnings") or []]
    lines += [
        *([""] if metrics.get("warnings") else []),
        f"**Test accuracy: {_pct(metrics['accuracy'])}** ({correct} / {metrics['n_samples']} correct)",
        "",
    ]
    headline = [[_topk_label(key), _pct(value)] for key, value in metrics["top_k"].items()]
    headline += [
        ["macro F1", f"{metrics['macro_f1']:.4f}"],
        ["test samples", metrics["n_samples"]],
        ["classes", metrics["n_classes"]],
    ]
    lines += [*_table(["metric", "value"], headline), "", "## Per class", ""]
    lines += _table(
        ["class", "accuracy", "correct", "support"],
        [[name, _pct(v["accuracy"]), v["correct"], v["support"]] for name, v in metrics["per_class"].items()],
    )
    if metrics.get("per_speaker"):
        lines += ["", "## Per speaker", ""]
        lines += _table(
            ["speaker", "accuracy", "correct", "n"],
            [[name, _pct(v["accuracy"]), v["correct"], v["n"]] for name, v in metrics["per_speaker"].items()],
        )
    lines += [
        "",
        "## Confusion matrix",
        "",
        *_confusion_lines(metrics),
        "",
        f"![confusion matrix]({images['confusion']})",
    ]
    if "curves" in images:
        lines += ["", "## Training curves", "", f"![training curves]({images['curves']})"]
    lines += _recipe_lines(report.get("recipe"))
    shown = {**report["run_info"], "options": {**(report["run_info"].get("options") or {}), "preset": None}}
    shown["options"].pop("preset")  # the recipe has its own section
    lines += ["", "## Run", "", *_table(["field", "value"], _flatten(shown))]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: Path | str,
    name: str,
    metrics: Mapping[str, Any],
    run_info: Mapping[str, Any],
    history: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md``, ``<name>_confusion.png`` and (with history) ``<name>_curves.png``."""
    if not name or Path(name).name != name:
        raise ConfigError(f"report name must be a plain file name, got {name!r}")
    out_dir = Path(out_dir)
    report = build_report(name, metrics, run_info, history)
    paths = {
        "confusion_png": plot_confusion_matrix(
            metrics["confusion_matrix"], metrics["classes"], out_dir / f"{name}_confusion.png"
        )
    }
    if history and any(len(values) for values in history.values()):
        paths["curves_png"] = plot_training_curves(history, out_dir / f"{name}_curves.png")
    images = {key.removesuffix("_png"): path.name for key, path in paths.items()}
    paths["markdown"] = out_dir / f"{name}.md"
    write_text_atomic(paths["markdown"], summary_markdown(report, images))
    paths["json"] = out_dir / f"{name}.json"
    write_text_atomic(paths["json"], _to_json(report))
    if report["random_weights"]:
        log.warning("%s: %s", name, RANDOM_WARNING)
    for warning in metrics.get("warnings") or []:
        log.warning("%s: %s", name, warning)
    log.info("report %s: accuracy %s, written to %s", name, _pct(metrics["accuracy"]), out_dir)
    return paths


def _short_hashes(text: Any) -> Any:
    """Hex digests cut to 12 characters for tables (the JSON keeps them whole)."""
    return re.sub(r"([0-9a-f]{12})[0-9a-f]{52}", r"\1…", text) if isinstance(text, str) else text


def _summary_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """One comparison row: what ran and how well it scored."""
    run_info, metrics = report.get("run_info") or {}, report["metrics"]
    return {
        "name": report["name"],
        "model": run_info.get("model"),
        "perspectives": run_info.get("perspectives"),
        "weights": run_info.get("weights"),
        "checkpoint": run_info.get("checkpoint"),
        "random_weights": bool(report.get("random_weights")) or uses_random_weights(run_info),
        "accuracy": metrics["accuracy"],
        "top_k": metrics["top_k"],
        "macro_f1": metrics["macro_f1"],
        "n_samples": metrics["n_samples"],
        "classes": metrics["classes"],
    }


def _rank_key(row: Mapping[str, Any]) -> tuple[float, float, str]:
    """Best test accuracy first, then macro F1, then name."""
    return -row["accuracy"], -row["macro_f1"], row["name"]


def _ranked(reports: Sequence[Mapping[str, Any]]) -> list[tuple[dict[str, Any], Mapping[str, Any]]]:
    """``(summary row, report)`` pairs, best first."""
    return sorted(((_summary_row(r), r) for r in reports), key=lambda pair: _rank_key(pair[0]))


def comparison_rows(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows of several reports, best test accuracy first (then macro F1, then name)."""
    return [row for row, _ in _ranked(reports)]


def comparison_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings a reader of the comparison must see: random-weight runs, test sets that differ."""
    warnings = []
    random = [row["name"] for row in rows if row["random_weights"]]
    if random:
        warnings.append(f"{RANDOM_WARNING} ({', '.join(random)})")
    if len({(row["n_samples"], tuple(row["classes"])) for row in rows}) > 1:
        warnings.append("reports were not evaluated on the same test set (n test or classes differ): not like for like")
    return warnings


def comparison_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table comparing checkpoints on one test split, best accuracy first, warnings above it."""
    rows = comparison_rows(reports)
    ks = sorted({key for row in rows for key in row["top_k"] if key != topk_key(1)}, key=lambda key: int(key[3:]))
    header = [
        "#",
        "report",
        "model",
        "perspectives",
        "weights",
        "test accuracy",
        *[_topk_label(k) for k in ks],
        "macro F1",
        "n test",
    ]
    body = [
        [
            rank,
            row["name"],
            row["model"],
            row["perspectives"],
            f"⚠ {row['weights'] or 'random'} (smoke test only)"
            if row["random_weights"]
            else _short_hashes(row["weights"]),
            _pct(row["accuracy"]),
            *[_pct(row["top_k"].get(k)) for k in ks],
            f"{row['macro_f1']:.4f}",
            row["n_samples"],
        ]
        for rank, row in enumerate(rows, start=1)
    ]
    lines = [f"> **Warning: {warning}.**" for warning in comparison_warnings(rows)]
    return "\n".join([*lines, *([""] if lines else []), *_table(header, body)]) + "\n"


def write_comparison(out_dir: Path | str, reports: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png`` for several reports."""
    if not reports:
        raise ValueError("no reports to compare")
    out_dir = Path(out_dir)
    ranked = _ranked(reports)
    rows = [row for row, _ in ranked]
    paths = {
        "png": plot_comparison(
            [dict(report, random_weights=row["random_weights"]) for row, report in ranked], out_dir / "comparison.png"
        )
    }
    markdown = f"# Checkpoint comparison\n\n{comparison_table(reports)}\n![comparison](comparison.png)\n"
    paths["markdown"] = out_dir / "comparison.md"
    write_text_atomic(paths["markdown"], markdown)
    paths["json"] = out_dir / "comparison.json"
    write_text_atomic(paths["json"], _to_json({"warnings": comparison_warnings(rows), "rows": rows}))
    log.info("compared %d reports in %s", len(rows), out_dir)
    return paths


def seed_summary(reports_dir: Path, names: Sequence[str], group: Any) -> str:
    """Markdown table of test accuracy per group of runs (``group(name)``): each run, then mean and spread over seeds.

    Also written to ``reports_dir / seed_summary.{md,json}``; the spread is the sample standard deviation.
    """
    groups: dict[str, list[tuple[str, float, int]]] = {}
    for name in names:
        report = load_report(reports_dir / f"{name}.json")
        groups.setdefault(group(name), []).append((name, report["metrics"]["accuracy"], report["metrics"]["n_samples"]))
    rows, summary = [], {}
    for key, runs in groups.items():
        values = [accuracy for _, accuracy, _ in runs]
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        summary[key] = {
            "runs": [{"name": n, "accuracy": a, "n_test": t} for n, a, t in runs],
            "mean": mean,
            "std": spread,
            "seeds": len(values),
        }
        rows.append([key, len(values), ", ".join(_pct(v) for v in values), _pct(mean), _pct(spread), runs[0][2]])
    text = (
        "\n".join(_table(["initialisation", "seeds", "test accuracy per seed", "mean", "std", "n test"], rows)) + "\n"
    )
    write_text_atomic(reports_dir / "seed_summary.md", text)
    write_text_atomic(reports_dir / "seed_summary.json", json.dumps(summary, indent=2))
    return text
