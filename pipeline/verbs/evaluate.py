"""``evaluate``: checkpoints + a split -> metrics, JSON/Markdown reports, plots, a comparison table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DataError, MpviewError
from pipeline.execution.logs import get_logger
from pipeline.execution.settings import check_options, option
from pipeline.manifest import Manifest
from pipeline.models import registry
from pipeline.training.experiment import RunSpec, load_inputs
from pipeline.training.feed import MODES, RunInputs, flip
from pipeline.workspace import HISTORY, Workspace

log = get_logger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    """Which checkpoints, on which split, reported where."""

    models: tuple[str, ...] | None = None  # run names or folders (default: every trained run)
    split: str = option("test", "which split to score", choices=("train", "val", "test"))
    out: Path | None = None  # report folder (default WORK/reports)
    top_k: tuple[int, ...] = (1, 3, 5)
    tta: bool = False  # pixel models: add the logits of the horizontally flipped clip
    input: str = option("auto", "memory, stream, or auto", choices=MODES)

    def __post_init__(self) -> None:
        """Check every field's type and range, and that each top-k is a positive integer."""
        check_options(self)
        if isinstance(self.models, str):
            raise ConfigError(f"models must be a tuple of run names, e.g. ({self.models!r},), got {self.models!r}")
        if not self.top_k or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.top_k):
            raise ConfigError(f"top_k must be positive integers, got {self.top_k!r}")


@dataclass(frozen=True)
class EvaluateResult:
    """The reports written, the runs that could not be scored, and the comparison table."""

    out: Path
    reports: list[dict[str, Any]] = field(default_factory=list)
    unscored: list[str] = field(default_factory=list)
    table: str = ""


def evaluate_run(run_dir: Path, manifest: Manifest, ws: Workspace, config: EvaluateConfig) -> tuple[dict, dict]:
    """Score one checkpoint on the config's split: returns (metrics, run info)."""
    from pipeline.evaluation.metrics import evaluate_predictions
    from pipeline.execution.device import describe
    from pipeline.execution.provenance import package_versions
    from pipeline.training.fit import load_checkpoint

    checkpoint = ws.checkpoint(run_dir)
    if not checkpoint.exists():
        raise DataError(f"{checkpoint}: no checkpoint (training not finished, or wrong name)")
    spec = RunSpec.load(run_dir)
    if spec.classes != manifest.classes:
        raise DataError(
            f"{run_dir}: trained on classes {spec.classes[:5]}..., the manifest has {manifest.classes[:5]}..."
        )
    model = load_checkpoint(checkpoint)
    batch = (
        int(spec.options.get("batch_size", 8)) if spec.pixels else 128
    )  # pixel models: their training batch fits memory
    split = config.split
    inputs = RunInputs(manifest, spec, ws.root, (split,), config.input, audio=False)  # the scored network reads none
    data = load_inputs(manifest, spec, split, ws.root) if inputs.mode == "memory" else None

    def scores(mirrored: bool):
        if data is None:
            return inputs.predict(model, split, batch, mirrored=mirrored)
        return model.predict(flip(data.inputs) if mirrored else data.inputs, batch_size=batch, verbose=0)

    probs = scores(False)
    preset = spec.options.get("preset") or {}
    tta = bool((config.tta or preset.get("settings", {}).get("tta")) and spec.pixels)  # a recipe's own TTA
    if tta:
        from pipeline.training.augment import flipped_logit_sum

        plan = registry.get(spec.model).two_networks
        probs = flipped_logit_sum(probs, scores(True), logits=bool(plan and plan.logits))
    speakers = inputs.speakers(split)
    metrics = evaluate_predictions(
        inputs.labels(split), probs, spec.classes, speakers if any(speakers) else None, k=list(config.top_k)
    )
    info = {
        "model": spec.model,
        "run": spec.name,
        "perspectives": spec.perspectives,
        "inputs": spec.input_stage,
        "backbone": spec.backbone or "pixels",
        "weights": spec.weights,
        "timesteps": spec.timesteps,
        "split": split,
        "checkpoint": str(checkpoint),
        "tta": tta,
        "options": spec.options,
        "device": describe(),
        "versions": package_versions(),
    }
    return metrics, info


def evaluate(ws: Workspace, config: EvaluateConfig) -> EvaluateResult:
    """Score every requested run, write a report each and a comparison when there are several.

    One unusable checkpoint does not stop the others being scored: it is logged and listed in ``unscored``.
    """
    manifest = ws.load_manifest()
    run_dirs = ws.run_dirs(list(config.models) if config.models else None)
    from pipeline.evaluation.report import comparison_table, load_report, write_comparison, write_report
    from pipeline.execution.device import start_tensorflow_quietly

    start_tensorflow_quietly()  # inputs checked: now the backend may start
    from pipeline.training.fit import read_history

    out = Path(config.out) if config.out else ws.reports
    reports, unscored = [], []
    for run_dir in run_dirs:
        try:
            metrics, info = evaluate_run(run_dir, manifest, ws, config)
        except (MpviewError, OSError) as exc:
            log.error("%s: not scored: %s", run_dir.name, exc)
            unscored.append(run_dir.name)
            continue
        paths = write_report(out, run_dir.name, metrics, info, read_history(run_dir / HISTORY))
        reports.append(load_report(paths["json"]))
        log.info(
            "%s: %s accuracy %.3f (%d samples) -> %s",
            run_dir.name,
            config.split,
            metrics["accuracy"],
            metrics["n_samples"],
            paths["markdown"],
        )
    if len(reports) > 1:
        paths = write_comparison(out, reports)
        log.info("comparison: %s", paths["markdown"])
    if unscored:
        log.error(
            "%d of %d run(s) could not be scored: %s", len(unscored), len(unscored) + len(reports), ", ".join(unscored)
        )
    return EvaluateResult(out, reports, unscored, comparison_table(reports) if reports else "")
