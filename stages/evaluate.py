"""``evaluate``: checkpoints + the test split -> metrics, JSON/Markdown reports, plots, a comparison table."""

from __future__ import annotations

import argparse
from pathlib import Path


from pipeline.experiment import RunSpec, load_inputs
from pipeline.feed import MODES, RunInputs, flip
from pipeline.logs import get_logger
from pipeline.manifest import Manifest, ManifestError
from pipeline.shards import ShardError
from stages.common import add_work_argument, manifest_path, positive_int

log = get_logger(__name__)
EXPECTED_ERRORS = (ManifestError, ShardError, ValueError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which checkpoints, which split, where reports go."""
    add_work_argument(parser)
    parser.add_argument("--models", nargs="*", help="run names or folders under WORK/models (default: every trained run)")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split to score")
    parser.add_argument("--out", type=Path, help="report folder (default WORK/reports)")
    parser.add_argument("--top-k", type=positive_int, nargs="+", default=[1, 3, 5], help="top-k accuracies to report")
    parser.add_argument("--tta", action="store_true", help="pixel models: add the logits of the horizontally flipped clip to the clip's own (softmax models: their log-probabilities)")
    parser.add_argument("--input", choices=MODES, default="auto", help="read the split into memory, or stream batches from the shards (auto: memory when it fits in a quarter of RAM)")


def run_dirs(work: Path, names: list[str] | None) -> list[Path]:
    """The run folders to evaluate, each holding best.keras and spec.json."""
    root = work / "models"
    dirs = [Path(n) if Path(n).is_dir() else root / n for n in names] if names else sorted(p for p in root.glob("*") if (p / "best.keras").exists())
    if not dirs:
        raise ValueError(f"no trained runs under {root}: run `train` first")
    return dirs


def evaluate_run(run_dir: Path, manifest: Manifest, work: Path, split: str, top_k: list[int], tta: bool, mode: str = "auto") -> tuple[dict, dict]:
    """Score one checkpoint on ``split``: returns (metrics, run info)."""
    from pipeline.device import describe
    from pipeline.metrics import evaluate_predictions
    from pipeline.provenance import package_versions
    from pipeline.training import load_checkpoint

    if not (run_dir / "best.keras").exists():
        raise FileNotFoundError(f"{run_dir / 'best.keras'}: no checkpoint (training not finished, or wrong name)")
    spec = RunSpec.load(run_dir)
    if spec.classes != manifest.classes:
        raise ValueError(f"{run_dir}: trained on classes {spec.classes[:5]}..., the manifest has {manifest.classes[:5]}...")
    model = load_checkpoint(run_dir / "best.keras")
    batch = int(spec.options.get("batch_size", 8)) if spec.pixels else 128  # pixel models: their training batch fits memory
    inputs = RunInputs(manifest, spec, work, (split,), mode)
    data = load_inputs(manifest, spec, split, work) if inputs.mode == "memory" else None

    def scores(mirrored: bool):
        if data is None:
            return inputs.predict(model, split, batch, mirrored=mirrored)
        return model.predict(flip(data.inputs) if mirrored else data.inputs, batch_size=batch, verbose=0)

    probs = scores(False)
    if tta and spec.pixels:
        from pipeline.augment import flipped_logit_sum

        probs = flipped_logit_sum(probs, scores(True), logits=spec.model == "mvm")
    speakers = inputs.speakers(split)
    metrics = evaluate_predictions(inputs.labels(split), probs, spec.classes, speakers if any(speakers) else None, k=top_k)
    info = {
        "model": spec.model, "run": spec.name, "perspectives": spec.perspectives, "inputs": spec.input_stage,
        "backbone": spec.backbone or "pixels", "weights": spec.weights, "timesteps": spec.timesteps, "split": split,
        "checkpoint": str(run_dir / "best.keras"), "tta": bool(tta and spec.pixels), "options": spec.options,
        "device": describe(), "versions": package_versions(),
    }
    return metrics, info


def run(args: argparse.Namespace) -> int:
    """Evaluate every requested run, write a report each and a comparison when there are several."""
    from pipeline.report import comparison_table, load_report, write_comparison, write_report
    from pipeline.training import read_history

    manifest = Manifest.load(manifest_path(args.work))
    out = args.out or args.work / "reports"
    reports, unscored = [], []
    for run_dir in run_dirs(args.work, args.models):
        try:
            metrics, info = evaluate_run(run_dir, manifest, args.work, args.split, args.top_k, args.tta, args.input)
        except EXPECTED_ERRORS as exc:  # one unusable checkpoint does not stop the others being scored
            log.error("%s: not scored: %s", run_dir.name, exc)
            unscored.append(run_dir.name)
            continue
        paths = write_report(out, run_dir.name, metrics, info, read_history(run_dir / "history.csv"))
        reports.append(load_report(paths["json"]))
        log.info("%s: %s accuracy %.3f (%d samples) -> %s", run_dir.name, args.split, metrics["accuracy"], metrics["n_samples"], paths["markdown"])
    if len(reports) > 1:
        paths = write_comparison(out, reports)
        log.info("comparison: %s", paths["markdown"])
    if reports:
        print(comparison_table(reports))
        print(f"reports and plots: {out}")
    if unscored:
        log.error("%d of %d run(s) could not be scored: %s", len(unscored), len(unscored) + len(reports), ", ".join(unscored))
        return 1
    return 0
