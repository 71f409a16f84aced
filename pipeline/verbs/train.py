"""``train``: embeddings (or ROI pixels) of the train/val splits -> a checkpointed sequence model."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger, progress_disabled
from pipeline.execution.settings import (
    SettingsChanged,
    check_options,
    differences,
    option,
    plain,
    recorded_settings,
)
from pipeline.manifest import DONE, Manifest
from pipeline.models import registry
from pipeline.training import presets
from pipeline.training.experiment import SPEC, RunSpec, build_model, load_inputs, run_recipe, split_future
from pipeline.training.feed import MODES, RunInputs
from pipeline.training.fit import FitConfig
from pipeline.training.presets import CLIP_MODES, OPTIMIZERS, SCHEDULES
from pipeline.verbs.common import refuse_or_clear
from pipeline.workspace import COMPOSITE, PREPARE, TRAIN_BEST, Workspace, features_name, features_stage

log = get_logger(__name__)
# recorded in spec.json while training, derived from what was asked (compared through what they derive from)
DERIVED_OPTIONS = ("memory_estimate_bytes", "lr", "replicas", "global_batch", "dtype_policy", "recipe", "extended")
RELEASED_TIMESTEPS = 20


@dataclass(frozen=True)
class TrainConfig:
    """What to train on which inputs, and how to fit it.

    ``options`` holds model options by field name (``units``, ``dropout``, ``augment``, ...), or is an instance of
    the model's options dataclass (``MPLSTMOptions(units=16)``); they are checked when the config is built, the
    rest take the chosen model's own defaults (its options dataclass), and an option the model does not use is
    refused.

    ``recipe`` names a paper's training recipe (``pipeline.training.presets``): the settings left unset (None) take
    its values, the others take the standard defaults (``presets.STANDARD``); a setting given beside it that differs
    from its value is one of its ``overrides`` (the run records them, the report lists them).
    """

    model: str | None = None  # default: the recipe's, else mplstm
    features: str | None = None  # features name from `extract` (default: the latest); pixel models read ROI clips
    perspectives: tuple[str, ...] | None = None  # default: all
    name: str | None = None  # run name (default: from model, perspectives and features)
    timesteps: int | None = option(None, "frames per sequence (default: the clip length the manifest records)", least=1)
    options: Mapping[str, Any] = field(default_factory=dict)
    recipe: str | None = None  # a paper's training recipe by name (`presets.PRESETS`)
    epochs: int | None = option(None, "most epochs to train (default: 50)", least=1)
    lr: float | None = option(None, "learning rate (default: 0.001)", above=0.0)
    patience: int | None = option(None, "early stopping patience (default: 10)", least=0)
    early_stopping: bool | None = None  # default: True (stop after --patience epochs without a better val accuracy)
    optimizer: str | None = option(None, "optimizer (default: the model's own)", choices=OPTIMIZERS)
    weight_decay: float | None = option(
        None, "weight decay: decoupled for adamw, else an L2 term added to the gradient (default: 0)", least=0.0
    )
    momentum: float | None = option(None, "momentum of sgd and rmsprop (default: 0)", least=0.0, below=1.0)
    clip: float | None = option(None, "clipping bound (default: none)", above=0.0)
    clip_mode: str | None = option(
        None, "clip each gradient value, the gradient norm, or sgd's step (default: value)", choices=CLIP_MODES
    )
    lr_schedule: str | None = option(
        None, "constant, or plateau: times --lr-factor after --lr-patience epochs without gain", choices=SCHEDULES
    )
    lr_patience: int | None = option(None, "plateau schedule: epochs without gain (default: 5)", least=1)
    lr_factor: float | None = option(None, "plateau schedule: learning rate factor (default: 0.5)", above=0, below=1)
    seed: int = 0
    val_fraction: float = option(
        0.15, "share held out when the dataset defines no validation split", above=0.0, below=1.0
    )
    force: bool = False  # a run folder trained with other settings: delete it and train anew
    tensorboard: bool = True
    input: str = option("auto", "memory, stream, or auto (memory when the splits fit a quarter of RAM)", choices=MODES)
    distribute: bool = False
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        """Check every field, fill in the recipe's (or the standard) settings, and check the model options against
        the model's own dataclass (types, ranges, foreign ones)."""
        check_options(self)
        if isinstance(self.perspectives, str):
            raise ConfigError(
                f"perspectives must be a tuple of names, e.g. ({self.perspectives!r},), got {self.perspectives!r}"
            )
        options = self.options
        if is_dataclass(options) and not isinstance(options, type):
            given = {f.name: getattr(options, f.name) for f in fields(options)}
            options = {
                name: value for name, value in given.items() if value != options.__dataclass_fields__[name].default
            }
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            raise ConfigError(f"options must be a mapping of model option names to values, got {self.options!r}")
        preset = presets.get(self.recipe) if self.recipe else None
        fitting, options = presets.resolve(preset, {k: getattr(self, k) for k in presets.STANDARD}, dict(options))
        for key, value in fitting.items():
            object.__setattr__(self, key, value)
        check_options(self)
        registry.model_options(self.model, options)
        object.__setattr__(self, "options", options)
        self.optimizer_settings()  # refuses what the optimizer cannot honour, before any backend starts

    @property
    def overrides(self) -> list[dict[str, Any]]:
        """The settings given beside ``recipe`` that differ from its values (``{setting, preset, given}`` each)."""
        if not self.recipe:
            return []
        fitting = {k: getattr(self, k) for k in presets.STANDARD}
        return presets.deviations(presets.get(self.recipe), fitting, dict(self.options))

    def optimizer_settings(self) -> dict[str, Any]:
        """The optimizer a run records: its name (the model's own unless given), weight decay, momentum, clipping."""
        settings = {
            "name": self.optimizer or registry.get(self.model).optimizer,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "clip": self.clip,
            "clip_mode": self.clip_mode if self.clip else None,
        }
        presets.check_settings(settings)
        return settings

    def schedule_settings(self) -> dict[str, Any]:
        """The learning-rate schedule a run records."""
        if self.lr_schedule == "constant":
            return {"name": "constant"}
        return {"name": self.lr_schedule, "patience": self.lr_patience, "factor": self.lr_factor}


@dataclass(frozen=True)
class TrainResult:
    """Where the run is and how its best epoch scored."""

    name: str
    run_dir: Path
    monitor: str
    best: float
    epochs: int


def pick_features(manifest: Manifest, wanted: str | None) -> str:
    """The ``extract:<name>`` stage to train on: the one asked for, or the most recently run."""
    names = [run["stage"] for run in manifest.runs if features_name(run["stage"])]
    if wanted:
        stage = features_stage(wanted)
        if stage not in names:
            raise ConfigError(
                f"no features named {wanted!r} in the manifest; extracted: "
                f"{sorted({features_name(n) for n in names}) or 'none'}"
            )
        return stage
    if not names:
        raise ConfigError("no features extracted yet: run `extract` first (or pick a pixel model)")
    return names[-1]


def stage_weights(manifest: Manifest, stage: str) -> str:
    """The weights label the stage stamped into its records ('random (smoke test only)', a sha256, ...)."""
    labels = sorted({str(s.stages[stage].get("weights", "")) for s in manifest.samples if s.status(stage) == DONE})
    return ", ".join(label for label in labels if label) or "n/a"


def make_spec(config: TrainConfig, manifest: Manifest) -> RunSpec:
    """What this run is, from the config and the manifest."""
    entry = registry.get(config.model)
    stage = PREPARE if entry.inputs == "pixels" else pick_features(manifest, config.features)
    perspectives = list(config.perspectives) if config.perspectives else list(manifest.perspectives)
    if len(set(perspectives)) != len(perspectives):
        raise ConfigError(f"--perspectives names a perspective twice: {','.join(perspectives)}")
    unknown = [p for p in perspectives if p not in manifest.perspectives]
    if unknown:
        raise ConfigError(f"unknown perspective(s) {unknown}; the manifest has {manifest.perspectives}")
    if entry.perspectives and len(perspectives) != entry.perspectives:
        count = (
            "one --perspectives entry" if entry.perspectives == 1 else f"{entry.perspectives} --perspectives entries"
        )
        raise ConfigError(f"--model {config.model} needs exactly {count}")
    options = registry.model_options(config.model, dict(config.options))
    source = features_name(stage) or "pixels"
    tag = ("-released" if getattr(options, "released", False) else "") + (
        f"-{options.pretrain}" if getattr(options, "pretrain", None) else ""
    )
    name = config.name or f"{config.model}{tag}-{'+'.join(perspectives)}-{source if stage != PREPARE else 'roi'}"
    timesteps = resolve_timesteps(
        config.timesteps, clip_length(manifest, perspectives), getattr(options, "future", None) or 0
    )
    preset = presets.get(config.recipe) if config.recipe else None
    recorded = {
        **asdict(options),
        "lr": config.lr,
        "optimizer": config.optimizer_settings(),
        "lr_schedule": config.schedule_settings(),
    }
    if preset:
        recorded["preset"] = preset_record(config, preset, manifest, stage, asdict(options))
    weights = stage_weights(manifest, stage) if stage != PREPARE else "n/a (ROI pixels)"
    return RunSpec(
        name,
        config.model,
        stage,
        perspectives,
        timesteps,
        list(manifest.classes),
        weights,
        "" if stage == PREPARE else source,
        recorded,
    )


def preset_record(config: TrainConfig, preset: presets.Preset, manifest: Manifest, stage: str, options: dict) -> dict:
    """What a run records of its recipe: the name, every setting as resolved, and where the run departs from it
    (settings given beside it, and features extracted otherwise than the recipe's ``features`` say)."""
    overrides = [dict(o) for o in config.overrides]
    made = {} if stage == PREPARE else recorded_settings(manifest, stage) or {}  # pixel models read no features
    for key, wanted in preset.features.items() if stage != PREPARE else ():
        given = made.get(key, "unrecorded")
        if given == wanted:
            continue
        overrides.append({"setting": f"features.{key}", "preset": wanted, "given": given})
        flag = key.replace("_", "-")
        log.warning(
            "--recipe %s: the features %s were extracted with --%s %s, not %s as the authors' (extract again "
            "with --%s %s --name ...); recorded as a deviation",
            preset.name,
            features_name(stage),
            flag,
            given,
            wanted,
            flag,
            wanted,
        )
    for override in overrides:
        log.info("--recipe %s: %s", preset.name, presets.describe_override(override))
    settings = {key: getattr(config, key) for key in presets.STANDARD}
    return {
        "name": preset.name,
        "settings": {**settings, **options, "tta": preset.tta, "features": dict(preset.features)},
        "overrides": overrides,
    }


def clip_length(manifest: Manifest, perspectives: list[str]) -> int | None:
    """The longest clip the manifest knows of: frames ``prepare`` decoded, else the recipe's ``frames`` (LRW: 29)."""
    lengths = [
        int(m["frames"])
        for s in manifest.samples
        for v, m in s.stages.get(PREPARE, {}).get("media", {}).items()
        if v in perspectives and m.get("frames")
    ]
    if not lengths:
        lengths = [int(s.meta["frames"]) for s in manifest.samples if isinstance(s.meta.get("frames"), int)] or (
            [int(manifest.info["frames"])] if isinstance(manifest.info.get("frames"), int) else []
        )
    return max(lengths) if lengths else None


def resolve_timesteps(given: int | None, known: int | None, future: int = 0) -> int:
    """``--timesteps`` as given, else the clip length (less the ``future`` frames pretraining predicts), else the
    released 20; logs whenever frames are cut."""
    timesteps = given or (known - future if known and known > future else None) or RELEASED_TIMESTEPS
    if given is None:
        log.info(
            "--timesteps %d (%s)",
            timesteps,
            "the manifest's clip length" if known else "the released MP-LSTM's default; clip length unknown",
        )
    if known and known > timesteps + future:
        log.warning(
            "clips have up to %d frames; --timesteps %d%s keeps the first %d (%d dropped)",
            known,
            timesteps,
            f" + --future {future}" if future else "",
            timesteps + future,
            known - timesteps - future,
        )
    return timesteps


def train(ws: Workspace, config: TrainConfig) -> TrainResult:
    """Train one model; calling it again with the same config resumes it.

    Other settings on an existing run are refused.
    """
    from pipeline.execution.worklock import work_lock

    manifest = ws.load_manifest()
    validation = ensure_validation(manifest, config.val_fraction, config.seed)
    spec = make_spec(config, manifest)
    if validation:
        spec.options["validation"] = validation
    spec.options.update(
        epochs=config.epochs,
        patience=config.patience,
        early_stopping=config.early_stopping,
        seed=config.seed,
        lr_asked=config.lr,
        distribute=config.distribute,
        mixed_precision=config.mixed_precision,
    )
    spec.config = plain(config)
    out = ws.run(spec.name)
    out.mkdir(parents=True, exist_ok=True)
    # one process per run folder; other runs may train beside it
    with work_lock(out, f"train {spec.name}", "train another run beside it with --name"):
        check_run_folder(out, spec, config.force)
        return train_run(ws, config, manifest, spec, out)


def check_run_folder(out: Path, spec: RunSpec, force: bool) -> None:
    """Stop when ``out`` holds a run trained with other settings than ``spec``; with ``force``, delete it first."""
    if not (out / SPEC).exists():
        return

    def clear() -> None:
        shutil.rmtree(out)
        out.mkdir(parents=True)

    recorded = RunSpec.load(out)
    if "extended" in recorded.options:
        spec.options["extended"] = recorded.options["extended"]  # the run's record of its extensions is kept
    changed = differences(_comparable(recorded), _comparable(spec))
    old, new = recorded.options.get("epochs"), spec.options.get("epochs")
    if not force and changed == [f"options.epochs: {old!r} -> {new!r}"] and isinstance(old, int) and new > old:
        extend_run(out, spec, old, new)
        return
    refuse_or_clear(f"{out} holds a run", changed, force, "keep it and train another with --name", clear)


def extend_run(out: Path, spec: RunSpec, old: int, new: int) -> None:
    """``--epochs`` raised on a run, and nothing else: train on from its last epoch as a resume would, recording it."""
    from pipeline.training.checkpoints import ResumableBackup
    from pipeline.training.fit import COMPLETE

    backup = ResumableBackup(out / "backup")
    last = backup.last_epoch()
    if (out / COMPLETE).exists() and last is None:
        raise SettingsChanged(
            f"{out} finished {old} epochs without keeping its last backup (trained by an older "
            f"mpview), so it cannot train on to {new}: pass --force to retrain it, or use --name"
        )
    backup.reopen()
    (out / COMPLETE).unlink(missing_ok=True)
    spec.options["extended"] = [*spec.options.get("extended", []), {"from_epochs": old, "to_epochs": new}]
    log.info(
        "%s: --epochs %d -> %d: training on from epoch %s, as a resume would", out, old, new, last or "its last backup"
    )


def _comparable(spec: RunSpec) -> dict:
    """What a run's outputs depend on: the spec without what training derives or measures along the way."""
    fields = asdict(spec)
    fields.pop("config", None)  # how it was asked for: compared through the spec it resolved to
    fields["options"] = {k: v for k, v in spec.options.items() if k not in DERIVED_OPTIONS}
    if "preset" in fields["options"]:  # its settings and overrides are compared through the options they set
        fields["options"]["preset"] = {"name": spec.options["preset"]["name"]}
    return fields


def train_run(ws: Workspace, config: TrainConfig, manifest: Manifest, spec: RunSpec, out: Path) -> TrainResult:
    """Read the inputs (in memory or streamed), fit, and report the best epoch."""
    from pipeline.execution.device import describe, start_tensorflow_quietly

    start_tensorflow_quietly()
    import keras

    from pipeline.training.distribute import data_parallel, set_precision

    future = spec.options.get("future") or 0
    whole = (
        "composite pretraining"
        if spec.options.get("pretrain")
        else "--labelled-fraction"
        if spec.options.get("labelled_fraction", 1.0) < 1.0
        else ""
    )
    inputs = RunInputs(
        manifest,
        spec,
        ws.root,
        ("train", "val"),
        "memory" if whole else config.input,
        f"{whole} reads the training split whole" if whole else "",
    )
    if spec.options.get("augment"):
        from pipeline.training.batches import make_recipe

        masks = (spec.options.get("freq_mask") or 0, spec.options.get("time_mask") or 0)
        spec.options["recipe"] = make_recipe(
            spec.options["augment"], min(inputs.shapes[0][0][:2]), spec.options["crop"], audio_masks=masks
        ).to_dict()
        log.info("--augment %s: %s", spec.options["augment"], spec.options["recipe"])
    if inputs.mode == "memory":
        train = load_inputs(manifest, spec, "train", ws.root, audio=spec.audio, extra_frames=future, raw=True)
        val = load_inputs(manifest, spec, "val", ws.root, audio=spec.audio)  # the best checkpoint is chosen on it
    keras.utils.set_random_seed(config.seed)
    policy = set_precision(config.mixed_precision)
    with data_parallel(config.distribute, spec.options["batch_size"], config.lr) as plan:
        spec.options.update(
            lr=plan.learning_rate, replicas=plan.replicas, global_batch=plan.global_batch, dtype_policy=policy
        )
        spec.save(out)
        info = {"spec": spec.__dict__, "device": describe()}
        log.info(
            "training %s on %d train / %d val samples (%s, perspectives %s, %d timesteps) -> %s",
            spec.name,
            inputs.count("train"),
            inputs.count("val"),
            spec.input_stage,
            spec.perspectives,
            spec.timesteps,
            out,
        )
        fitting = FitConfig(
            epochs=config.epochs,
            batch_size=plan.global_batch,
            patience=config.patience,
            early_stopping=config.early_stopping,
            lr_schedule=spec.options["lr_schedule"],
            seed=config.seed,
            tensorboard=config.tensorboard,
            verbose=0 if progress_disabled() else 2,
        )
        if inputs.mode == "memory":
            history = fit_run(spec, train, val, out, info, fitting)
        else:
            history = fit_streamed(spec, inputs, out, info, fitting)
    best = max(history.get(fitting.monitor, [float("nan")]))
    epochs = len(history.get("loss", []))
    log.info(
        "%s: best %s %.3f after %d epochs; checkpoint %s", spec.name, fitting.monitor, best, epochs, ws.checkpoint(out)
    )
    return TrainResult(spec.name, out, fitting.monitor, best, epochs)


def ensure_validation(manifest: Manifest, fraction: float, seed: int) -> dict | None:
    """Carve a validation set from the training speakers when the split defines none; what was carved, or None."""
    from pipeline.recipes.splits import carve_validation

    if manifest.split("val"):
        return None
    manifest.samples = carve_validation(manifest.samples, fraction, seed)
    held = manifest.split("val")
    speakers = sorted({s.speaker for s in held if s.speaker is not None})
    log.info(
        "the dataset's split has no validation set: %d training samples (%s) held out as val (seed %d, "
        "--val-fraction %g)",
        len(held),
        f"speakers {', '.join(speakers)}" if speakers else "no speakers known",
        seed,
        fraction,
    )
    return {"carved_from": "train", "fraction": fraction, "seed": seed, "samples": len(held), "speakers": speakers}


def fit_run(spec: RunSpec, train, val, out: Path, info: dict, config: FitConfig) -> dict:
    """Build the spec's model, check its activation memory, and fit it; returns the history (``config.monitor`` set)."""
    from pipeline.training.fit import fit, one_hot

    n, batch_size, seed = len(spec.classes), config.batch_size, config.seed
    y_train, y_val = one_hot(train.labels, n), one_hot(val.labels, n)
    shapes = [v.shape[1:] for v in val.inputs]  # after any evaluation crop: what the model takes
    if spec.pixels:
        built, model, plan = built_for_fitting(spec, shapes, train.audio.shape[1:] if spec.audio else None, out, config)
        (x_train, y_train), (x_val, y_val) = (
            (plan.arrange(d.inputs, d.audio, y) if plan else (d.inputs, y)) for d, y in ((train, y_train), (val, y_val))
        )
        history = fit(model, batches(spec, x_train, y_train, batch_size, seed), (x_val, y_val), out, config, info)
        if plan:
            keep_scoring_network(plan, built, out)
    else:
        x_train = train.inputs
        if spec.options.get("pretrain"):
            x_train, _ = split_future(train, spec.timesteps)
        model = (
            pretrain(spec, train, out, config, info)
            if spec.options.get("pretrain") == "composite"
            else build_model(spec, shapes)
        )
        rows = labelled_rows(train.labels, spec.options.get("labelled_fraction", 1.0), seed)
        if len(rows) < len(train.labels):
            log.info(
                "classifier sees the labels of %d of %d training clips (--labelled-fraction %g, seed %d)",
                len(rows),
                len(train.labels),
                spec.options["labelled_fraction"],
                seed,
            )
            x_train, y_train = [x[rows] for x in x_train], y_train[rows]
        history = fit(model, (x_train, y_train), (val.inputs, y_val), out, config, info)
    return history


def fit_streamed(spec: RunSpec, inputs: RunInputs, out: Path, info: dict, config: FitConfig) -> dict:
    """``fit_run`` with batches streamed from the shards: build the model, check its activation memory, fit."""
    from pipeline.training.fit import fit

    built, model, plan = built_for_fitting(spec, inputs.model_shapes(), inputs.audio_shape, out, config)
    history = fit(
        model,
        inputs.training("train", config.batch_size, config.seed),
        inputs.validation("val", config.batch_size),
        out,
        config,
        info,
    )
    if plan:
        keep_scoring_network(plan, built, out)
    return history


def built_for_fitting(spec: RunSpec, shapes, audio_shape, out: Path, config: FitConfig) -> tuple:
    """The built model, the network to fit and the model's two-network plan (or None).

    A pixel model's activation memory is checked and recorded first; a two-network model is monitored on its own
    metric and keeps its training network's best epoch apart from the checkpoint ``evaluate`` loads.
    """
    from pipeline.training.memory import check_fits

    plan = registry.get(spec.model).two_networks
    built = build_model(spec, shapes, audio_shape)
    model = plan.training(built) if plan else built
    if spec.pixels:
        spec.options["memory_estimate_bytes"] = check_fits(model, config.batch_size, memory_options(spec))
        spec.save(out)
    if plan:
        config.monitor, config.checkpoint = plan.monitor, TRAIN_BEST
    return built, model, plan


def keep_scoring_network(plan, built, out: Path) -> None:
    """A two-network model: load the best training epoch, save the network ``evaluate`` scores as the checkpoint."""
    from pipeline.training.checkpoints import save_atomically

    plan.training(built).load_weights(out / TRAIN_BEST)
    save_atomically(plan.scoring(built).save, Workspace.checkpoint(out))


def memory_options(spec: RunSpec) -> list[str]:
    """The options that lower a run's activation memory, named when it would not fit."""
    return ["--batch-size", "--crop", "--timesteps", *registry.get(spec.model).lower]


def labelled_rows(labels, fraction: float, seed: int):
    """A seeded, stratified ``fraction`` of the row indices (at least one per class), in order."""
    import numpy as np

    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [
        rng.permutation(np.flatnonzero(labels == c))[: max(1, int(round(fraction * np.sum(labels == c))))]
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(keep))


def batches(spec: RunSpec, x, y, batch_size: int, seed: int) -> tuple:
    """``(x, y)`` arrays for ``fit``, or an augmenting batch sequence (and no ``y``) under ``--augment``."""
    recipe = run_recipe(spec)
    if recipe is None:
        return x, y
    from pipeline.training.batches import AugmentedClips

    return AugmentedClips(x, y, batch_size, recipe, seed), None


def pretrain(spec: RunSpec, train, out: Path, config, info: dict):
    """Composite pretraining on every training clip's frames (labels unused), or on fresh moving-digit clips with
    ``--pretrain-data moving-digits``, then the classifier to fine-tune."""
    import dataclasses

    from pipeline.evaluation.plots_composite import plot_composite_predictions
    from pipeline.models.composite import composite_inputs
    from pipeline.training.optimizers import make_optimizer
    from pipeline.training.pretrain import CompositeSettings, pretrain_composite, square_frames, stream_side

    o = spec.options
    seen, future = split_future(train, spec.timesteps)
    pre_config = dataclasses.replace(config, epochs=o["pretrain_epochs"], monitor="loss", checkpoint=COMPOSITE)
    stream = None
    if o.get("pretrain_data") == "moving-digits":
        from pipeline.training.batches import FreshMovingDigits

        side = stream_side(seen, future)
        stream = FreshMovingDigits(
            config.batch_size, o["pretrain_steps"], spec.timesteps, o["future"], side, config.seed
        )
    settings = CompositeSettings.of(o, registry.get(spec.model).multi_perspective_encoder)
    composite = pretrain_composite(
        seen, future, settings, Workspace.pretrain(out), pre_config, info, make_optimizer(o), stream
    )
    shown = [square_frames(x[:1]) for x in (seen[0], future[0])]
    if len(seen) == 1 and future[0].shape[1] and all(s is not None for s in shown):
        outputs = composite.predict(composite_inputs(composite, seen[0][:1], future[0][:1]), verbose=0)
        recon, pred = (square_frames(outputs[k]) for k in ("reconstruction", "prediction"))
        path = plot_composite_predictions(
            shown[0][0], shown[1][0], recon[0], pred[0], Workspace.pretrain(out) / "predictions.png"
        )
        log.info("composite reconstructions and predictions: %s", path)
    from pipeline.training.experiment import composite_classifier

    return composite_classifier(spec, [x.shape[1:] for x in seen], composite)
