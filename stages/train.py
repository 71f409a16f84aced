"""``train``: embeddings (or ROI pixels) of the train/val splits -> a checkpointed sequence model."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path

from pipeline.augment import RECIPES
from pipeline.experiment import PIXEL_MODELS, SEQUENCE_MODELS, SPEC, RunSpec, build_model, load_inputs, run_recipe, split_future
from pipeline.feed import MODES, RunInputs
from pipeline.logs import get_logger
from pipeline.manifest import DONE, Manifest, ManifestError
from pipeline.model_options import ALL_OPTIONS, COMPOSITE_CHOICES, model_options
from pipeline.settings import SettingsChanged, differences
from pipeline.shards import ShardError
from pipeline.worklock import work_lock
from stages.common import add_work_argument, manifest_path, non_negative_int, positive_int

log = get_logger(__name__)
EXPECTED_ERRORS = (ManifestError, ShardError, ValueError, FileNotFoundError, MemoryError)
# recorded in spec.json while training, derived from what was asked (compared through what they derive from)
DERIVED_OPTIONS = ("memory_estimate_bytes", "lr", "replicas", "global_batch", "dtype_policy", "recipe")
RELEASED_TIMESTEPS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, inputs, pretraining and fitting options."""
    add_work_argument(parser)
    what = parser.add_argument_group("model and inputs")
    what.add_argument("--model", choices=SEQUENCE_MODELS + PIXEL_MODELS, default="mplstm", help="MP-LSTM (default), a baseline, or a pixel model")
    what.add_argument("--features", help="features name from `extract` (default: the latest); convlstm and mvm read ROI clips")
    what.add_argument("--perspectives", help="comma-separated perspectives to use (default: all); `single` uses exactly one")
    what.add_argument("--name", help="run name (default: derived from model, perspectives and features)")
    what.add_argument("--timesteps", type=positive_int, help="frames per sequence: longer ones truncated (logged), shorter zero-padded and masked "
                      "(default: the clip length the manifest records, 29 for LRW; 20, the released MP-LSTM's, when unknown)")
    models = parser.add_argument_group("model options (each model takes its own; an option the chosen model does not use is refused)")
    models.add_argument("--units", type=positive_int, help="recurrent units; mvm: memory width (default: 256; mvm 512)")
    models.add_argument("--dropout", type=float, help="input dropout; convlstm, mvm: before the classifier (default: 0.2; convlstm 0.3, mvm 0.5)")
    models.add_argument("--released", action="store_true", default=None, help="mplstm: reproduce the released code exactly (U_f in the candidate, hard sigmoid)")
    models.add_argument("--combine", choices=("scores", "features"), help="late_fusion: average scores or join representations (default: scores)")
    models.add_argument("--topology", help="mvlstm topology: view_specific, coupled, fully_connected, hybrid (default: hybrid)")
    models.add_argument("--mv-output", choices=("none", "tanh"), help="mvlstm hidden state: o*c as in the paper (none) or o*tanh(c) as in an LSTM (default: none)")
    models.add_argument("--layers", help="convlstm: layer stack, conv/convlstm/pool tokens (default: conv,pool,convlstm,pool,convlstm)")
    models.add_argument("--filters", help="convlstm: one width per conv/convlstm layer (default: 32,48,64)")
    models.add_argument("--front", choices=("resnet18", "small"), help="mvm: visual front-end, the paper's 3D stem + ResNet-18 per frame, or a small 3D/2D conv stack (default: resnet18)")
    models.add_argument("--back", choices=("mstcn", "tcn"), help="mvm: back-end, the paper's multi-scale TCN or one dilated conv per level (default: mstcn)")
    models.add_argument("--levels", type=positive_int, help="mvm: memory levels, their losses averaged (default: 2)")
    models.add_argument("--slots", type=positive_int, help="mvm: memory slots (default: 112)")
    models.add_argument("--heads", type=positive_int, help="mvm: addressing heads (default: 8)")
    models.add_argument("--radius", type=float, help="mvm: addressing radius (default: 16)")
    models.add_argument("--augment", nargs="?", const="lrw", choices=RECIPES, help="convlstm, mvm: training augmentation; `lrw` (given alone) is Kim et al.'s "
                        "recipe: the 136 px box shifted by up to +-5 px inside the frame and resized to 112, flip, a 56x56 patch and 3 frames erased, "
                        "mixup Beta(0.4, 0.4); `crop`: a --crop crop shifted by +-5 px without resizing or erasing")
    models.add_argument("--crop", type=positive_int, help="convlstm, mvm: side of the frames the model sees (default: 112 for LRW's 136 px box, else the box side)")
    pre = parser.add_argument_group("composite pretraining (Srivastava et al. 2015)")
    pre.add_argument("--pretrain", choices=COMPOSITE_CHOICES, help="composite: pretrain the encoder without labels, then fine-tune a classifier from it; "
                     "scratch: the very same classifier from random weights (the like-for-like baseline)")
    pre.add_argument("--pretrain-epochs", type=positive_int, help="epochs of composite pretraining before fine-tuning (default: 20)")
    pre.add_argument("--future", type=non_negative_int, help="frames after the first --timesteps the predictor learns to forecast (default: 10)")
    pre.add_argument("--conditional", action="store_true", default=None, help="decoders see their previous output")
    pre.add_argument("--labelled-fraction", type=float, help="share of the training clips whose labels the classifier sees (seeded, stratified); "
                     "pretraining sees every training clip (default: 1)")
    fit = parser.add_argument_group("fitting")
    fit.add_argument("--epochs", type=positive_int, default=50, help="most epochs to train (early stopping may end sooner)")
    fit.add_argument("--batch-size", type=positive_int, help="samples per training step (per device with --distribute) (default: 60) for the embedding models; "
                     "convlstm and mvm 8, sized for a 24 GB machine")
    fit.add_argument("--lr", type=float, default=1e-3, help="learning rate (RMSprop; Adam for mvm)")
    fit.add_argument("--patience", type=non_negative_int, default=10, help="early stopping patience (epochs without a better val accuracy)")
    fit.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling, dropout and a carved validation set")
    fit.add_argument("--val-fraction", type=float, default=0.15, help="when the dataset defines no validation split: the share "
                     "of training speakers (seeded, stratified, speaker-disjoint) held out to pick the best checkpoint")
    fit.add_argument("--force", action="store_true", help="when WORK/models/NAME holds a run trained with other settings: "
                     "delete it and train anew")
    fit.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs (WORK/models/NAME/tensorboard)")
    fit.add_argument("--input", choices=MODES, default="auto", help="read the splits into memory, or stream batches from the shards (auto: memory when they fit in a quarter of RAM)")
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
    perspectives = [p.strip() for p in args.perspectives.split(",")] if args.perspectives else list(manifest.perspectives)
    if len(set(perspectives)) != len(perspectives):
        raise ValueError(f"--perspectives names a perspective twice: {args.perspectives}")
    unknown = [p for p in perspectives if p not in manifest.perspectives]
    if unknown:
        raise ValueError(f"unknown perspective(s) {unknown}; the manifest has {manifest.perspectives}")
    if args.model in ("single", "mvm") and len(perspectives) != 1:
        raise ValueError(f"--model {args.model} needs exactly one --perspectives entry")
    options = model_options(args.model, {name: getattr(args, name, None) for name in ALL_OPTIONS})
    source = "pixels" if stage == "prepare" else stage.split(":", 1)[1]
    tag = ("-released" if getattr(options, "released", False) else "") + (f"-{options.pretrain}" if getattr(options, "pretrain", None) else "")
    name = args.name or f"{args.model}{tag}-{'+'.join(perspectives)}-{source if stage != 'prepare' else 'roi'}"
    timesteps = resolve_timesteps(args.timesteps, clip_length(manifest, perspectives), getattr(options, "future", None) or 0)
    recorded = {**asdict(options), "lr": args.lr}
    weights = stage_weights(manifest, stage) if stage != "prepare" else "n/a (ROI pixels)"
    return RunSpec(name, args.model, stage, perspectives, timesteps, list(manifest.classes), weights, "" if stage == "prepare" else source, recorded)


def clip_length(manifest: Manifest, perspectives: list[str]) -> int | None:
    """The longest clip the manifest knows of: frames ``prepare`` decoded, else the recipe's ``frames`` (LRW: 29)."""
    lengths = [int(m["frames"]) for s in manifest.samples for v, m in s.stages.get("prepare", {}).get("media", {}).items() if v in perspectives and m.get("frames")]
    if not lengths:
        lengths = [int(s.meta["frames"]) for s in manifest.samples if isinstance(s.meta.get("frames"), int)] or ([int(manifest.info["frames"])] if isinstance(manifest.info.get("frames"), int) else [])
    return max(lengths) if lengths else None


def resolve_timesteps(given: int | None, known: int | None, future: int = 0) -> int:
    """``--timesteps`` as given, else the clip length (less the ``future`` frames pretraining predicts), else the
    released 20; logs whenever frames are cut."""
    timesteps = given or (known - future if known and known > future else None) or RELEASED_TIMESTEPS
    if given is None:
        log.info("--timesteps %d (%s)", timesteps, "the manifest's clip length" if known else "the released MP-LSTM's default; clip length unknown")
    if known and known > timesteps + future:
        log.warning("clips have up to %d frames; --timesteps %d%s keeps the first %d (%d dropped)", known, timesteps,
                    f" + --future {future}" if future else "", timesteps + future, known - timesteps - future)
    return timesteps


def run(args: argparse.Namespace) -> int:
    """Train one model; re-running the same command resumes it (other settings on an existing run are refused)."""
    manifest = Manifest.load(manifest_path(args.work))
    validation = ensure_validation(manifest, args.val_fraction, args.seed)
    spec = make_spec(args, manifest)
    if validation:
        spec.options["validation"] = validation
    spec.options.update(epochs=args.epochs, patience=args.patience, seed=args.seed, lr_asked=args.lr,
                        distribute=args.distribute, mixed_precision=args.mixed_precision)
    out = args.work / "models" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    with work_lock(out, f"train {spec.name}"):  # one process per run folder; other runs may train beside it
        check_run_folder(out, spec, args.force)
        return train_run(args, manifest, spec, out)


def check_run_folder(out: Path, spec: RunSpec, force: bool) -> None:
    """Stop when ``out`` holds a run trained with other settings than ``spec``; with ``force``, delete it first."""
    if not (out / SPEC).exists():
        return
    changed = differences(_comparable(RunSpec.load(out)), _comparable(spec))
    if not changed:
        return
    where = f"{out} holds a run trained with other settings ({'; '.join(changed)})"
    if not force:
        raise SettingsChanged(f"{where}: re-run with the same options, pass --force to train it anew, or choose another --name")
    log.warning("%s: deleting it to train anew (--force)", where)
    shutil.rmtree(out)
    out.mkdir(parents=True)


def _comparable(spec: RunSpec) -> dict:
    """What a run's outputs depend on: the spec without what training derives or measures along the way."""
    fields = asdict(spec)
    fields["options"] = {k: v for k, v in spec.options.items() if k not in DERIVED_OPTIONS}
    return fields


def train_run(args: argparse.Namespace, manifest: Manifest, spec: RunSpec, out: Path) -> int:
    """Read the inputs (in memory or streamed), fit, and report the best epoch."""
    import keras

    from pipeline.device import describe
    from pipeline.distribute import data_parallel, set_precision

    future = spec.options.get("future") or 0
    whole = "composite pretraining" if spec.options.get("pretrain") else "--labelled-fraction" if spec.options.get("labelled_fraction", 1.0) < 1.0 else ""
    inputs = RunInputs(manifest, spec, args.work, ("train", "val"), "memory" if whole else args.input, f"{whole} reads the training split whole" if whole else "")
    if spec.options.get("augment"):
        from pipeline.batches import make_recipe

        spec.options["recipe"] = make_recipe(spec.options["augment"], min(inputs.shapes[0][0][:2]), spec.options["crop"]).to_dict()
        log.info("--augment %s: %s", spec.options["augment"], spec.options["recipe"])
    if inputs.mode == "memory":
        train = load_inputs(manifest, spec, "train", args.work, audio=spec.audio, extra_frames=future, raw=True)
        val = load_inputs(manifest, spec, "val", args.work, audio=spec.audio)  # the best checkpoint is chosen on it
    keras.utils.set_random_seed(args.seed)
    policy = set_precision(args.mixed_precision)
    with data_parallel(args.distribute, spec.options["batch_size"], args.lr) as plan:
        spec.options.update(lr=plan.learning_rate, replicas=plan.replicas, global_batch=plan.global_batch, dtype_policy=policy)
        spec.save(out)
        info = {"spec": spec.__dict__, "device": describe()}
        log.info("training %s on %d train / %d val samples (%s, perspectives %s, %d timesteps) -> %s", spec.name, inputs.count("train"), inputs.count("val"), spec.input_stage, spec.perspectives, spec.timesteps, out)
        if inputs.mode == "memory":
            history, monitor = fit_run(spec, train, val, out, info, args, plan.global_batch)
        else:
            history, monitor = fit_streamed(spec, inputs, out, info, args, plan.global_batch)
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
    """Build the spec's model, check its activation memory, and fit it; returns (history, the monitored metric)."""
    from pipeline.memory import check_fits
    from pipeline.training import FitConfig, fit, one_hot

    n = len(spec.classes)
    config = FitConfig(epochs=args.epochs, batch_size=batch_size, patience=args.patience, seed=args.seed, tensorboard=not args.no_tensorboard, verbose=0 if args.quiet else 2)
    y_train, y_val = one_hot(train.labels, n), one_hot(val.labels, n)
    shapes = [v.shape[1:] for v in val.inputs]  # after any evaluation crop: what the model takes
    lower = ["--batch-size", "--crop", "--timesteps"] + {"convlstm": ["--filters"], "mvm": ["--front small", "--units"]}.get(spec.model, ["--units"])
    if spec.model == "mvm":
        models = build_model(spec, shapes, train.audio.shape[1:])
        spec.options["memory_estimate_bytes"] = check_fits(models.train, batch_size, lower)
        spec.save(out)
        x_train, x_val = {"video": train.inputs[0], "audio": train.audio}, {"video": val.inputs[0], "audio": val.audio}
        config.monitor, config.checkpoint = "val_visual_accuracy", "train_best.keras"
        history = fit(models.train, batches(spec, x_train, {"visual": y_train, "audio": y_train}, batch_size, args.seed), (x_val, {"visual": y_val, "audio": y_val}), out, config, info)
        models.train.load_weights(out / config.checkpoint)
        from pipeline.checkpoints import save_atomically

        save_atomically(models.infer.save, out / "best.keras")
    elif spec.pixels:
        model = build_model(spec, shapes)
        spec.options["memory_estimate_bytes"] = check_fits(model, batch_size, lower)
        spec.save(out)
        history = fit(model, batches(spec, train.inputs, y_train, batch_size, args.seed), (val.inputs, y_val), out, config, info)
    else:
        x_train = train.inputs
        if spec.options.get("pretrain"):
            x_train, _ = split_future(train, spec.timesteps)
        model = pretrain(spec, train, out, config, info) if spec.options.get("pretrain") == "composite" else build_model(spec, shapes)
        rows = labelled_rows(train.labels, spec.options.get("labelled_fraction", 1.0), args.seed)
        if len(rows) < len(train.labels):
            log.info("classifier sees the labels of %d of %d training clips (--labelled-fraction %g, seed %d)", len(rows), len(train.labels), spec.options["labelled_fraction"], args.seed)
            x_train, y_train = [x[rows] for x in x_train], y_train[rows]
        history = fit(model, (x_train, y_train), (val.inputs, y_val), out, config, info)
    return history, config.monitor


def fit_streamed(spec: RunSpec, inputs: RunInputs, out: Path, info: dict, args: argparse.Namespace, batch_size: int) -> tuple[dict, str]:
    """``fit_run`` with batches streamed from the shards: build the model, check its activation memory, fit."""
    from pipeline.memory import check_fits
    from pipeline.training import FitConfig, fit

    config = FitConfig(epochs=args.epochs, batch_size=batch_size, patience=args.patience, seed=args.seed, tensorboard=not args.no_tensorboard, verbose=0 if args.quiet else 2)
    lower = ["--batch-size", "--crop", "--timesteps"] + {"convlstm": ["--filters"], "mvm": ["--front small", "--units"]}.get(spec.model, ["--units"])
    built = build_model(spec, inputs.model_shapes(), inputs.audio_shape)
    model = built.train if spec.model == "mvm" else built
    if spec.pixels:
        spec.options["memory_estimate_bytes"] = check_fits(model, batch_size, lower)
        spec.save(out)
    if spec.model == "mvm":
        config.monitor, config.checkpoint = "val_visual_accuracy", "train_best.keras"
    history = fit(model, inputs.training("train", batch_size, args.seed), inputs.validation("val", batch_size), out, config, info)
    if spec.model == "mvm":
        built.train.load_weights(out / config.checkpoint)
        built.infer.save(out / "best.keras")
    return history, config.monitor


def labelled_rows(labels, fraction: float, seed: int):
    """A seeded, stratified ``fraction`` of the row indices (at least one per class), in order."""
    import numpy as np

    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[: max(1, int(round(fraction * np.sum(labels == c))))] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def batches(spec: RunSpec, x, y, batch_size: int, seed: int) -> tuple:
    """``(x, y)`` arrays for ``fit``, or an augmenting batch sequence (and no ``y``) under ``--augment``."""
    recipe = run_recipe(spec)
    if recipe is None:
        return x, y
    from pipeline.batches import AugmentedClips

    return AugmentedClips(x, y, batch_size, recipe, seed), None


def pretrain(spec: RunSpec, train, out: Path, config, info: dict):
    """Composite pretraining on every training clip's frames (labels unused), then the classifier to fine-tune."""
    import dataclasses

    from pipeline.plots_composite import plot_composite_predictions
    from pipeline.pretrain import pretrain_composite, square_frames

    o = spec.options
    seen, future = split_future(train, spec.timesteps)
    pre_config = dataclasses.replace(config, epochs=o["pretrain_epochs"], monitor="loss", checkpoint="composite.keras")
    composite = pretrain_composite(seen, future, o["units"], spec.model == "mplstm", o["conditional"], out / "pretrain", pre_config, info)
    shown = [square_frames(x[:1]) for x in (seen[0], future[0])]
    if len(seen) == 1 and future[0].shape[1] and all(s is not None for s in shown):
        outputs = composite.predict(seen[0][:1], verbose=0)
        recon, pred = (square_frames(outputs[k]) for k in ("reconstruction", "prediction"))
        path = plot_composite_predictions(shown[0][0], shown[1][0], recon[0], pred[0], out / "pretrain" / "predictions.png")
        log.info("composite reconstructions and predictions: %s", path)
    from pipeline.experiment import composite_classifier

    return composite_classifier(spec, [x.shape[1:] for x in seen], composite)
