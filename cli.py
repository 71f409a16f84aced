#!/usr/bin/env python3
"""mpview command line: ``prepare``, ``extract``, ``train``, ``evaluate`` and the one-command ``demo``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from pipeline.execution.logs import configure, get_logger

STAGES = {
    "prepare": "discover a dataset, split it, crop face/mouth ROIs per perspective into HDF5 shards",
    "extract": "turn ROI clips into per-frame embeddings (VGGFace, dlib, pixels) in HDF5 / TFRecord shards",
    "train": "train MP-LSTM or a baseline on the embeddings (or ROI pixels)",
    "evaluate": "score checkpoints on the test split: accuracy, confusion matrix, reports, plots",
    "demo": "run the whole pipeline offline on the embedded synthetic dataset",
}


class HelpFormatter(argparse.HelpFormatter):
    """Help that states each option's default, unless the text already does or there is none to state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"
TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``timeout``, ``kill``): unwinds like Ctrl-C, so workers stop and temporary files go."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_unwinds() -> object:
    """Turn SIGTERM into ``Terminated`` while a stage runs (main thread only), restoring the old handler after."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per stage (each stage module adds its own options)."""
    parser = argparse.ArgumentParser(prog="mpview", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        noise = stage_parser.add_mutually_exclusive_group()
        noise.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
        noise.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        importlib.import_module(f"stages.{name}").add_arguments(stage_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, set up logging, run the chosen stage; return its exit status."""
    args = build_parser().parse_args(argv)
    configure(-1 if args.quiet else 1 if args.verbose else 0)
    from pipeline.errors import BUG_HINT, MpviewError

    stage = importlib.import_module(f"stages.{args.command}")
    try:
        with _sigterm_unwinds():
            return stage.run(args)
    except Terminated:
        get_logger().error("terminated (SIGTERM); finished shards are kept, re-run the same command to resume")
        return TERMINATED
    except KeyboardInterrupt:
        get_logger().error("interrupted; re-run the same command to resume")
        return 130
    except (MpviewError, OSError) as exc:  # the user's data, options or environment: one line (traceback with --verbose)
        if args.verbose:
            raise
        get_logger().error("%s", _one_line(exc))
        return 2
    except Exception:
        get_logger().critical("%s", BUG_HINT)
        raise


def _one_line(exc: BaseException) -> str:
    """An error as one line; an OS error names its file and the cause (read-only folder, full disk, ...)."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
