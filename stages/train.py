"""``train``: embeddings (or ROI pixels) of the train/val splits -> a checkpointed sequence model."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.augment import MAX_SHIFT
from pipeline.experiment import PIXEL_MODELS, SEQUENCE_MODELS, RunSpec, build_model, load_inputs, split_future
from pipeline.logs import get_logger
from pipeline.manifest import DONE, Manifest, ManifestError
from pipeline.shards import ShardError
from stages.common import add_work_argument, manifest_path

log = get_logger(__name__)
EXPECTED_ERRORS = (ManifestError, ShardError, ValueError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, inputs, pretraining and fitting options."""
    add_work_argument(parser)
    what = parser.add_argument_group("model and inputs")
    what.add_argument("--model", choices=SEQUENCE_MODELS + PIXEL_MODELS, default="mplstm", help="MP-LSTM (default), a baseline, or a pixel model")
    what.add_argument("--features", help="features name from `extract` (default: the latest); convlstm and mvm read ROI clips")
    what.add_argument("--perspectives", help="comma-separated perspectives to use (default: all); `single` uses exactly one")
    what.add_argument("--name", help="run name (default: derived from model, perspectives and features)")
    what.add_argument("--timesteps", type=int, default=20, help="frames per sequence: longer ones truncated, shorter zero-padded and masked")
    what.add_argument("--units", type=int, default=256, help="recurrent units (mvm: memory width)")
    what.add_argument("--dropout", type=float, default=0.2, help="input dropout")
    what.add_argument("--released", action="store_true", help="MP-LSTM: reproduce the released code exactly (U_f in the candidate, hard sigmoid)")
    what.add_argument("--combine", choices=("scores", "features"), default="scores", help="late fusion: average scores or join representations")
    what.add_argument("--topology", default="hybrid", help="MV-LSTM topology: view_specific, coupled, fully_connected, hybrid")
    what.add_argument("--mv-output", choices=("none", "tanh"), default="none", help="MV-LSTM hidden state: o*c as in the paper (none) or o*tanh(c) as in an LSTM")
    what.add_argument("--layers", default="conv,pool,convlstm,pool,convlstm", help="convlstm: layer stack, conv/convlstm/pool tokens")
    what.add_argument("--slots", type=int, default=112, help="mvm: memory slots")
    what.add_argument("--heads", type=int, default=8, help="mvm: addressing heads")
    what.add_argument("--radius", type=float, default=16.0, help="mvm: addressing radius")
    what.add_argument("--augment", action="store_true", help="convlstm/mvm: the LRW recipe: shifted crop (+-5 px), random flip, normalisation, mixup Beta(0.4, 0.4)")
    what.add_argument("--crop", type=int, help="--augment: crop side (default: the ROI side minus 10, e.g. 112 from LRW's 122 box)")
    pre = parser.add_argument_group("composite pretraining (Srivastava et al. 2015)")
    pre.add_argument("--pretrain", choices=("composite",), help="pretrain the encoder without labels, then fine-tune a classifier from it")
    pre.add_argument("--pretrain-epochs", type=int, default=20, help="epochs of composite pretraining before fine-tuning")
    pre.add_argument("--future", type=int, default=10, help="frames after the first --timesteps the predictor learns to forecast")
    pre.add_argument("--conditional", action="store_true", help="decoders see their previous output")
    fit = parser.add_argument_group("fitting")
    fit.add_argument("--epochs", type=int, default=50, help="most epochs to train (early stopping may end sooner)")
    fit.add_argument("--batch-size", type=int, default=60, help="samples per training step (per device with --distribute)")
    fit.add_argument("--lr", type=float, default=1e-3, help="learning rate (RMSprop; Adam for mvm)")
    fit.add_argument("--patience", type=int, default=10, help="early stopping patience (epochs without a better val accuracy)")
    fit.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling, dropout and a carved validation set")
    fit.add_argument("--val-fraction", type=float, default=0.15, help="when the dataset defines no validation split: the share "
                     "of training speakers (seeded, stratified, speaker-disjoint) held out to pick the best checkpoint")
    fit.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs (WORK/models/NAME/tensorboard)")
    scale = parser.add_argument_group("devices")
    scale.add_argument("--distribute", action="store_true", help="data-parallel over all local devices; --batch-size is then per device and the learning rate scales with the replicas")
    scale.add_argument("--mixed-precision", action="store_true", help="float16 compute with float32 variables (GPUs)")


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
    if args.model in ("single", "mvm") and len(perspectives) != 1:
        raise ValueError(f"--model {args.model} needs exactly one --perspectives entry")
    if args.pretrain and args.model not in SEQUENCE_MODELS:
        raise ValueError("--pretrain composite applies to the embedding sequence models")
    if args.augment and args.model not in PIXEL_MODELS:
        raise ValueError("--augment applies to the pixel models (convlstm, mvm)")
    source = "pixels" if stage == "prepare" else stage.split(":", 1)[1]
    variant = ("-released" if args.released else "") + ("-composite" if args.pretrain else "")
    name = args.name or f"{args.model}{variant}-{'+'.join(perspectives)}-{source if stage != 'prepare' else 'roi'}"
    options = {
        "units": args.units, "dropout": args.dropout, "lr": args.lr, "released": args.released, "combine": args.combine,
        "topology": args.topology, "mv_output": args.mv_output, "layers": args.layers, "slots": args.slots, "heads": args.heads, "radius": args.radius,
        "pretrain": args.pretrain, "future": args.future if args.pretrain else 0, "augment": args.augment, "crop": args.crop,
    }
    weights = stage_weights(manifest, stage) if stage != "prepare" else "n/a (ROI pixels)"
    return RunSpec(name, args.model, stage, perspectives, args.timesteps, list(manifest.classes), weights, "" if stage == "prepare" else source, options)


def run(args: argparse.Namespace) -> int:
    """Train one model; re-running the same command resumes it."""
    import keras

    from pipeline.device import describe
    from pipeline.distribute import data_parallel, set_precision

    manifest = Manifest.load(manifest_path(args.work))
    validation = ensure_validation(manifest, args.val_fraction, args.seed)
    spec = make_spec(args, manifest)
    if validation:
        spec.options["validation"] = validation
    out = args.work / "models" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    future = spec.options["future"]
    train = load_inputs(manifest, spec, "train", args.work, audio=spec.audio, extra_frames=future, raw=True)
    if spec.options["augment"] and not spec.options["crop"]:
        spec.options["crop"] = min(train.inputs[0].shape[2:4]) - 2 * MAX_SHIFT
    val = load_inputs(manifest, spec, "val", args.work, audio=spec.audio)  # the best checkpoint is chosen on it
    keras.utils.set_random_seed(args.seed)
    policy = set_precision(args.mixed_precision)
    with data_parallel(args.distribute, args.batch_size, args.lr) as plan:
        spec.options.update(lr=plan.learning_rate, replicas=plan.replicas, global_batch=plan.global_batch, dtype_policy=policy)
        spec.save(out)
        info = {"spec": spec.__dict__, "device": describe()}
        log.info("training %s on %d train / %d val samples (%s, perspectives %s) -> %s", spec.name, len(train), len(val), spec.input_stage, spec.perspectives, out)
        history, monitor = fit_run(spec, train, val, out, info, args, plan.global_batch)
    best = max(history.get(monitor, [float("nan")]))
    log.info("%s: best %s %.3f after %d epochs; checkpoint %s", spec.name, monitor, best, len(history.get("loss", [])), out / "best.keras")
    return 0


def ensure_validation(manifest: Manifest, fraction: float, seed: int) -> dict | None:
    """Carve a validation set from the training speakers when the split defines none; what was carved, or None."""
    from pipeline.splits import carve_validation

    if manifest.split("val"):
        return None
    manifest.samples = carve_validation(manifest.samples, fraction, seed)
    held = manifest.split("val")
    speakers = sorted({s.speaker for s in held if s.speaker is not None})
    log.info("the dataset's split has no validation set: %d training samples (%s) held out as val (seed %d, --val-fraction %g)",
             len(held), f"speakers {', '.join(speakers)}" if speakers else "no speakers known", seed, fraction)
    return {"carved_from": "train", "fraction": fraction, "seed": seed, "samples": len(held), "speakers": speakers}


def fit_run(spec: RunSpec, train, val, out: Path, info: dict, args: argparse.Namespace, batch_size: int) -> tuple[dict, str]:
    """Build the spec's model and fit it; returns (history, the monitored metric)."""
    from pipeline.training import FitConfig, fit, one_hot

    n = len(spec.classes)
    config = FitConfig(epochs=args.epochs, batch_size=batch_size, patience=args.patience, seed=args.seed, tensorboard=not args.no_tensorboard, verbose=0 if args.quiet else 2)
    y_train, y_val = one_hot(train.labels, n), one_hot(val.labels, n)
    shapes = [v.shape[1:] for v in val.inputs]  # after any evaluation crop: what the model takes
    if spec.model == "mvm":
        models = build_model(spec, shapes, train.audio.shape[1:])
        x_train, x_val = {"video": train.inputs[0], "audio": train.audio}, {"video": val.inputs[0], "audio": val.audio}
        config.monitor, config.checkpoint = "val_visual_accuracy", "train_best.keras"
        history = fit(models.train, batches(spec, x_train, {"visual": y_train, "audio": y_train}, batch_size, args.seed), (x_val, {"visual": y_val, "audio": y_val}), out, config, info)
        models.train.load_weights(out / config.checkpoint)
        models.infer.save(out / "best.keras")
    elif spec.pixels:
        model = build_model(spec, shapes)
        history = fit(model, batches(spec, train.inputs, y_train, batch_size, args.seed), (val.inputs, y_val), out, config, info)
    else:
        x_train = train.inputs
        if spec.options["pretrain"]:
            x_train, _ = split_future(train, spec.timesteps)
            model = pretrain(spec, train, out, config, info, args)
        else:
            model = build_model(spec, shapes)
        history = fit(model, (x_train, y_train), (val.inputs, y_val), out, config, info)
    return history, config.monitor


def batches(spec: RunSpec, x, y, batch_size: int, seed: int) -> tuple:
    """``(x, y)`` arrays for ``fit``, or an augmenting batch sequence (and no ``y``) under ``--augment``."""
    if not spec.options["augment"]:
        return x, y
    from pipeline.batches import AugmentedClips

    return AugmentedClips(x, y, batch_size, spec.options["crop"], seed), None


def pretrain(spec: RunSpec, train, out: Path, config, info: dict, args: argparse.Namespace):
    """Composite pretraining on the training split's frames (labels unused), then the classifier to fine-tune."""
    import dataclasses

    from pipeline.plots_composite import plot_composite_predictions
    from pipeline.pretrain import pretrain_composite, pretrained_classifier, square_frames

    seen, future = split_future(train, spec.timesteps)
    pre_config = dataclasses.replace(config, epochs=args.pretrain_epochs, monitor="loss", checkpoint="composite.keras")
    composite = pretrain_composite(seen, future, spec.options["units"], spec.model == "mplstm", args.conditional, out / "pretrain", pre_config, info)
    shown = [square_frames(x[:1]) for x in (seen[0], future[0])]
    if len(seen) == 1 and future[0].shape[1] and all(s is not None for s in shown):
        outputs = composite.predict(seen[0][:1], verbose=0)
        recon, pred = (square_frames(outputs[k]) for k in ("reconstruction", "prediction"))
        path = plot_composite_predictions(shown[0][0], shown[1][0], recon[0], pred[0], out / "pretrain" / "predictions.png")
        log.info("composite reconstructions and predictions: %s", path)
    return pretrained_classifier(composite, len(spec.classes), spec.options["dropout"], spec.options["lr"])
