"""``train`` on the command line: arguments -> ``TrainConfig`` -> ``pipeline.verbs.train``."""

from __future__ import annotations

import argparse

from pipeline.training.augment import RECIPES
from pipeline.training.experiment import PIXEL_MODELS, SEQUENCE_MODELS
from pipeline.training.feed import MODES
from pipeline.models.options import ALL_OPTIONS, COMPOSITE_CHOICES
from pipeline.verbs.train import TrainConfig, train
from pipeline.workspace import Workspace
from stages.common import add_work_argument, non_negative_int, positive_int


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


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The command line as the verb's config (model options only where given, so each model keeps its defaults)."""
    return TrainConfig(
        model=args.model, features=args.features, name=args.name, timesteps=args.timesteps,
        perspectives=tuple(p.strip() for p in args.perspectives.split(",")) if args.perspectives else None,
        options={name: getattr(args, name) for name in ALL_OPTIONS if getattr(args, name, None) is not None},
        epochs=args.epochs, lr=args.lr, patience=args.patience, seed=args.seed, val_fraction=args.val_fraction,
        force=args.force, tensorboard=not args.no_tensorboard, input=args.input, distribute=args.distribute,
        mixed_precision=args.mixed_precision,
    )


def run(args: argparse.Namespace) -> int:
    """Train one model; re-running the same command resumes it."""
    train(Workspace(args.work), config_from(args))
    return 0
