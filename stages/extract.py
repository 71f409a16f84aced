"""``extract`` on the command line: arguments -> ``ExtractConfig`` -> ``pipeline.verbs.extract``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.backbones.registry import BACKBONES
from pipeline.storage.readers import FORMAT_SUFFIX
from pipeline.verbs.extract import SHARD_SIZE, ExtractConfig, extract
from pipeline.workspace import Workspace
from stages.common import add_execution_arguments, add_work_argument, execution_from, finish, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Backbone, weights, output format and execution options."""
    add_work_argument(parser)
    model = parser.add_argument_group("backbone")
    model.add_argument(
        "--backbone", choices=BACKBONES, default="resnet50", help="embedding model (default resnet50, VGGFace2)"
    )
    model.add_argument(
        "--weights",
        default=None,
        help="'vggface' (released weights: cache, then download), a .h5 PATH, or 'random' (smoke tests only)",
    )
    model.add_argument(
        "--cache-dir",
        type=Path,
        help="where released weights are cached (default ~/.cache/mpview/weights, or $MPVIEW_CACHE/weights)",
    )
    model.add_argument("--batch-size", type=positive_int, default=32, help="frames per forward pass")
    model.add_argument(
        "--pixel-size", type=positive_int, default=32, help="pixels backbone: side of the resized grayscale frame"
    )
    model.add_argument(
        "--preprocess",
        choices=ExtractConfig.__dataclass_fields__["preprocess"].metadata["choices"],
        default="auto",
        help="VGGFace input preprocessing: keras-vggface v1 (vgg16) or v2 (resnet50, senet50); released: "
        "the released MP-LSTM code's (INTER_AREA, ImageNet caffe means); auto: the backbone's own",
    )
    model.add_argument(
        "--pca",
        type=positive_int,
        metavar="K",
        help="pixels backbone: project to K PCA components fitted on the training split (default: none)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=sorted(FORMAT_SUFFIX), default="hdf5", help="shard format (default hdf5)")
    output.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored embedding precision")
    output.add_argument(
        "--compression",
        choices=ExtractConfig.__dataclass_fields__["compression"].metadata["choices"],
        help="HDF5 shard compression, checksummed "
        "either way (default none: fastest to read); TFRecords are uncompressed",
    )
    output.add_argument("--name", help="features name, used by `train --features` (default: the backbone name)")
    add_execution_arguments(parser, shard_size=SHARD_SIZE)


def config_from(args: argparse.Namespace) -> ExtractConfig:
    """The command line as the verb's config."""
    return ExtractConfig(
        backbone=args.backbone,
        weights=args.weights,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        pixel_size=args.pixel_size,
        pca=args.pca or 0,
        format=args.format,
        dtype=args.dtype,
        name=args.name,
        compression=args.compression,
        preprocess=args.preprocess,
        execution=execution_from(args),
    )


def run(args: argparse.Namespace) -> int:
    """Embed every prepared sample's ROI clips; exit status 1 when samples failed."""
    return finish(extract(Workspace(args.work), config_from(args)), args.allow_failures)
