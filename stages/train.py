"""``train`` on the command line: arguments -> ``TrainConfig`` -> ``pipeline.verbs.train``."""

from __future__ import annotations

import argparse
from dataclasses import fields

from pipeline.models import registry
from pipeline.training import presets
from pipeline.training.feed import MODES
from pipeline.verbs.train import TrainConfig, train
from pipeline.workspace import Workspace
from stages.common import add_work_argument, field_type, non_negative_int, positive_int, value_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, inputs, pretraining and fitting options."""
    add_work_argument(parser)
    what = parser.add_argument_group("model and inputs")
    what.add_argument(
        "--recipe",
        metavar="NAME",
        help=f"a paper's full training recipe ({', '.join(presets.PRESETS)}): model, options and fitting as the "
        "authors' code sets them; options given beside it override it and are recorded as deviations",
    )
    what.add_argument(
        "--model", choices=registry.names(), help="MP-LSTM (default, or the recipe's), a baseline, or a pixel model"
    )
    what.add_argument(
        "--features", help="features name from `extract` (default: the latest); convlstm and mvm read ROI clips"
    )
    what.add_argument(
        "--perspectives", help="comma-separated perspectives to use (default: all); `single` uses exactly one"
    )
    what.add_argument("--name", help="run name (default: derived from model, perspectives and features)")
    what.add_argument(
        "--timesteps",
        type=positive_int,
        help="frames per sequence: longer ones truncated (logged), shorter zero-padded and masked "
        "(default: the clip length the manifest records, 29 for LRW; 20, the released MP-LSTM's, when unknown)",
    )
    add_model_options(parser)
    fit = parser.add_argument_group("fitting")
    fit.add_argument(
        "--epochs", type=positive_int, help="most epochs to train (early stopping may end sooner) (default: 50)"
    )
    fit.add_argument("--lr", type=float, help="learning rate (default: 0.001)")
    fit.add_argument(
        "--patience",
        type=non_negative_int,
        help="early stopping patience (epochs without a better val accuracy) (default: 10)",
    )
    fit.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        help="stop after --patience epochs without a better val accuracy (default: on)",
    )
    fit.add_argument(
        "--optimizer", choices=presets.OPTIMIZERS, help="optimizer (default: the model's own: rmsprop; adam for mvm)"
    )
    fit.add_argument(
        "--weight-decay",
        type=field_type(TrainConfig, "weight_decay"),
        help="weight decay: decoupled for adamw, an L2 term added to the gradient otherwise (default: 0)",
    )
    fit.add_argument(
        "--momentum", type=field_type(TrainConfig, "momentum"), help="momentum of sgd and rmsprop (default: 0)"
    )
    fit.add_argument("--clip", type=field_type(TrainConfig, "clip"), help="clipping bound (default: none)")
    fit.add_argument(
        "--clip-mode",
        choices=presets.CLIP_MODES,
        help="what --clip bounds: each gradient value, the gradient norm, or sgd's momentum step (default: value)",
    )
    fit.add_argument(
        "--lr-schedule",
        choices=presets.SCHEDULES,
        help="constant, or plateau: the learning rate times --lr-factor once --lr-patience epochs in a row bring "
        "no better val accuracy (default: constant)",
    )
    fit.add_argument("--lr-patience", type=positive_int, help="plateau schedule: epochs without gain (default: 5)")
    fit.add_argument(
        "--lr-factor",
        type=field_type(TrainConfig, "lr_factor"),
        help="plateau schedule: learning rate factor (default: 0.5)",
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="seed for weights, shuffling, dropout and a carved validation set"
    )
    fit.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="when the dataset defines no validation split: the share "
        "of training speakers (seeded, stratified, speaker-disjoint) held out to pick the best checkpoint",
    )
    fit.add_argument(
        "--force",
        action="store_true",
        help="when WORK/models/NAME holds a run trained with other settings: delete it and train anew",
    )
    fit.add_argument(
        "--no-tensorboard", action="store_true", help="do not write TensorBoard logs (WORK/models/NAME/tensorboard)"
    )
    fit.add_argument(
        "--input",
        choices=MODES,
        default="auto",
        help="read the splits into memory, or stream batches from the shards "
        "(auto: memory when they fit in a quarter of RAM)",
    )
    scale = parser.add_argument_group("devices")
    scale.add_argument(
        "--distribute",
        action="store_true",
        help="data-parallel over all local devices; --batch-size is then per device "
        "and the learning rate scales with the replicas",
    )
    scale.add_argument("--mixed-precision", action="store_true", help="float16 compute with float32 variables (GPUs)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Every registered model's options as flags, made from its options dataclass (type, default and help), each
    under its model (or under the family of models sharing it); an option the chosen model does not use is refused."""
    flags = {f.name: f for f in registry.model_flags()}
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(title: str, description: str | None = None) -> argparse._ArgumentGroup:
        if title not in groups:
            groups[title] = parser.add_argument_group(title, description)
        return groups[title]

    for model, takes in registry.model_takes().items():
        for name in (f.name for f in fields(registry.get(model).options)):
            option = flags.pop(name, None)
            if option is not None:
                add_model_flag(group(option.group), option)
        entry = registry.get(model)
        group(f"--model {model}: {entry.description}").description = f"takes {', '.join(takes)}"


def add_model_flag(group: argparse._ArgumentGroup, option: registry.ModelFlag) -> None:
    """One model option's flag: ``store_true`` for a boolean, else a typed value checked as the config checks it."""
    if option.kind is bool:
        group.add_argument(registry.flag(option.name), action="store_true", default=None, help=option.help())
        return
    meta = option.field.metadata
    extra = {"nargs": "?", "const": meta["const"]} if "const" in meta else {}
    group.add_argument(
        registry.flag(option.name),
        type=value_type(option.name, option.kind, meta),
        choices=meta.get("choices"),
        help=option.help(),
        **extra,
    )


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The command line as the verb's config (model options only where given, so each model keeps its defaults)."""
    return TrainConfig(
        model=args.model,
        recipe=args.recipe,
        features=args.features,
        name=args.name,
        timesteps=args.timesteps,
        perspectives=tuple(p.strip() for p in args.perspectives.split(",")) if args.perspectives else None,
        options={
            f.name: getattr(args, f.name) for f in registry.model_flags() if getattr(args, f.name, None) is not None
        },
        **{key: getattr(args, key) for key in presets.STANDARD if key not in ("model", "timesteps")},
        seed=args.seed,
        val_fraction=args.val_fraction,
        force=args.force,
        tensorboard=not args.no_tensorboard,
        input=args.input,
        distribute=args.distribute,
        mixed_precision=args.mixed_precision,
    )


def run(args: argparse.Namespace) -> int:
    """Train one model; re-running the same command resumes it."""
    train(Workspace(args.work), config_from(args))
    return 0
