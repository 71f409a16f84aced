"""``train``: embeddings (or ROI pixels) of the train/val splits -> a checkpointed sequence model."""

from __future__ import annotations

import argparse

from pipeline.experiment import PIXEL_MODELS, RunSpec, load_inputs
from pipeline.logs import get_logger
from pipeline.manifest import DONE, Manifest, ManifestError
from pipeline.shards import ShardError
from stages.common import add_work_argument, manifest_path

log = get_logger(__name__)
EXPECTED_ERRORS = (ManifestError, ShardError, ValueError, FileNotFoundError)
SEQUENCE_MODELS = ("mplstm", "single", "early_fusion", "late_fusion", "mvlstm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, inputs and fitting options."""
    add_work_argument(parser)
    what = parser.add_argument_group("model and inputs")
    what.add_argument("--model", choices=SEQUENCE_MODELS + PIXEL_MODELS, default="mplstm", help="MP-LSTM (default), a baseline, or a pixel model")
    what.add_argument("--features", help="features name from `extract` (default: the only one, or the latest); pixel models read ROI clips")
    what.add_argument("--perspectives", help="comma-separated perspectives to use (default: all); `single` uses exactly one")
    what.add_argument("--name", help="run name (default: derived from model, perspectives and features)")
    what.add_argument("--timesteps", type=int, default=20, help="frames per sequence: longer ones truncated, shorter zero-padded and masked")
    what.add_argument("--units", type=int, default=256, help="recurrent units")
    what.add_argument("--dropout", type=float, default=0.2, help="input dropout")
    what.add_argument("--released", action="store_true", help="MP-LSTM: reproduce the released code exactly (U_f in the candidate, hard sigmoid)")
    what.add_argument("--combine", choices=("scores", "features"), default="scores", help="late fusion: average scores or join representations")
    what.add_argument("--topology", default="hybrid", help="MV-LSTM topology (see README)")
    fit = parser.add_argument_group("fitting")
    fit.add_argument("--epochs", type=int, default=50)
    fit.add_argument("--batch-size", type=int, default=60)
    fit.add_argument("--lr", type=float, default=1e-3, help="RMSprop learning rate")
    fit.add_argument("--patience", type=int, default=10, help="early stopping patience (epochs without a better val accuracy)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--no-tensorboard", action="store_true")


def pick_features(manifest: Manifest, wanted: str | None) -> str:
    """The ``extract:<name>`` stage to train on: the one asked for, or the most recently run."""
    names = [run["stage"] for run in manifest.runs if run["stage"].startswith("extract:")]
    if wanted:
        stage = f"extract:{wanted}"
        if stage not in names:
            raise ValueError(f"no features named {wanted!r} in the manifest; extracted: {sorted({n[8:] for n in names}) or 'none'}")
        return stage
    if not names:
        raise ValueError("no features extracted yet: run `extract` first (or pick a pixel model)")
    return names[-1]


def stage_weights(manifest: Manifest, stage: str) -> str:
    """The weights label the stage stamped into its records ('random (smoke test only)', a sha256, ...)."""
    labels = sorted({str(s.stages[stage].get("weights", "")) for s in manifest.samples if s.status(stage) == DONE})
    return ", ".join(label for label in labels if label) or "n/a"


def make_spec(args: argparse.Namespace, manifest: Manifest) -> RunSpec:
    """What this run is, from the command line and the manifest."""
    stage = "prepare" if args.model in PIXEL_MODELS else pick_features(manifest, args.features)
    perspectives = args.perspectives.split(",") if args.perspectives else list(manifest.perspectives)
    unknown = [p for p in perspectives if p not in manifest.perspectives]
    if unknown:
        raise ValueError(f"unknown perspective(s) {unknown}; the manifest has {manifest.perspectives}")
    if args.model == "single" and len(perspectives) != 1:
        raise ValueError("--model single needs exactly one --perspectives entry (train one run per view)")
    source = "pixels" if stage == "prepare" else stage.split(":", 1)[1]
    name = args.name or f"{args.model}-{'+'.join(perspectives)}-{source}"
    options = {"units": args.units, "dropout": args.dropout, "lr": args.lr, "released": args.released, "combine": args.combine, "topology": args.topology}
    backbone = "" if stage == "prepare" else source
    return RunSpec(name, args.model, stage, perspectives, args.timesteps, list(manifest.classes), stage_weights(manifest, stage) if backbone else "n/a (ROI pixels)", backbone, options)


def build(spec: RunSpec, shapes: list[tuple[int, ...]]):
    """Build and compile the model a spec names for inputs of these per-perspective shapes."""
    from pipeline.models.networks import build_model, compile_model

    o = spec.options
    n = len(spec.classes)
    if spec.model == "convlstm":
        from pipeline.models.convlstm import build_convlstm

        return compile_model(build_convlstm([tuple(s) for s in shapes], n), o["lr"])
    extra = {"released": o["released"]} if spec.model == "mplstm" else {"combine": o["combine"]} if spec.model == "late_fusion" else {"topology": o["topology"]} if spec.model == "mvlstm" else {}
    model = build_model(spec.model, [s[-1] for s in shapes], n, timesteps=spec.timesteps, units=o["units"], dropout=o["dropout"], **extra)
    return compile_model(model, o["lr"])


def run(args: argparse.Namespace) -> int:
    """Train one model; re-running the same command resumes it."""
    from pipeline.training import FitConfig, fit, one_hot

    manifest = Manifest.load(manifest_path(args.work))
    spec = make_spec(args, manifest)
    out = args.work / "models" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    train = load_inputs(manifest, spec, "train", args.work)
    try:
        val = load_inputs(manifest, spec, "val", args.work)
    except ValueError:
        raise ValueError("the manifest has no usable validation samples: the best checkpoint is chosen on the val split") from None
    spec.save(out)
    import keras

    keras.utils.set_random_seed(args.seed)
    model = build(spec, [x.shape[1:] for x in train.inputs])
    n = len(spec.classes)
    log.info("training %s on %d train / %d val samples (%s, perspectives %s) -> %s", spec.name, len(train), len(val), spec.input_stage, spec.perspectives, out)
    from pipeline.device import describe

    config = FitConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.patience, seed=args.seed, tensorboard=not args.no_tensorboard, verbose=0 if args.quiet else 2)
    history = fit(model, (train.inputs, one_hot(train.labels, n)), (val.inputs, one_hot(val.labels, n)), out, config, {"spec": spec.__dict__, "device": describe()})
    best = max(history.get("val_accuracy", [float("nan")]))
    log.info("%s: best val accuracy %.3f after %d epochs; checkpoint %s", spec.name, best, len(history.get("loss", [])), out / "best.keras")
    return 0

