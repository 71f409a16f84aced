"""The mpview command line: ``prepare``, ``extract``, ``train``, ``evaluate``, ``convert``, the one-command ``demo``."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import os
import signal
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from pipeline import __version__
from pipeline.execution.logs import configure, get_logger

STAGES = {
    "prepare": "discover a dataset, split it, crop face/mouth ROIs per perspective into HDF5 shards",
    "extract": "turn ROI clips into per-frame embeddings (VGGFace, dlib, pixels) in HDF5 / TFRecord shards",
    "train": "train MP-LSTM or a baseline on the embeddings (or ROI pixels)",
    "evaluate": "score checkpoints on the test split: accuracy, confusion matrix, reports, plots",
    "convert": "load a model's released checkpoint (the memory model's PyTorch one) as a run that evaluate scores",
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


class StageParser(argparse.ArgumentParser):
    """A stage's parser: flags only in full (``--epoch`` is not ``--epochs``), and an argument it does not know is
    its own error, shown with its usage and the closest flag it has."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse like ``ArgumentParser``, but exit with this parser's usage on any argument left over."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            guess = suggest_flags(extras, list(self._option_string_actions))
            self.error(f"unrecognized arguments: {' '.join(extras)}{guess}")
        return namespace, extras

    def error(self, message: str) -> None:  # type: ignore[override]
        """Exit with this stage's usage, ``message`` and the closest choice, if any."""
        super().error(suggest_choice(message))


def suggest_flags(unknown: Sequence[str], known: Sequence[str]) -> str:
    """`` (did you mean --epochs?)`` for the flags among ``unknown`` that resemble one of ``known``, else ``""``."""
    names = {flag.lstrip("-"): flag for flag in known}  # compared without the dashes, which every flag shares
    flags = [
        arg.split("=", 1)[0]
        for arg in unknown
        if arg.startswith("-") and not arg.lstrip("-").replace(".", "").isdigit()
    ]  # not a negative number
    guesses = {flag: difflib.get_close_matches(flag.lstrip("-"), list(names), n=1, cutoff=0.7) for flag in flags}
    found = [(flag, names[close[0]]) for flag, close in guesses.items() if close]
    if not found:
        return ""
    if len(found) == 1:
        return f" (did you mean {found[0][1]}?)"
    return " (did you mean " + ", ".join(f"{close} for {flag}" for flag, close in found) + "?)"


def suggest_choice(message: str) -> str:
    """argparse's ``invalid choice: 'trian' (choose from 'prepare', ...)`` with `` (did you mean train?)`` added when
    the wrong word resembles one of the choices."""
    if "invalid choice:" not in message or "(choose from" not in message:
        return message
    wrong, listed = message.split("invalid choice:", 1)[1].split("(choose from", 1)
    choices = [choice.strip(" '\"") for choice in listed.rsplit(")", 1)[0].split(",")]
    close = difflib.get_close_matches(wrong.strip(" '\""), choices, n=1, cutoff=0.6)
    return f"{message} (did you mean {close[0]}?)" if close else message


class MainParser(argparse.ArgumentParser):
    """The top-level parser: a mistyped stage name is answered with the closest stage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Exit with ``message`` and the closest choice, if any."""
        super().error(suggest_choice(message))


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
    parser = MainParser(prog="mpview", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=StageParser)
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
        kept = {"train": "finished epochs are kept, ", "evaluate": ""}.get(args.command, "finished shards are kept, ")
        get_logger().error("terminated (SIGTERM); %sre-run the same command to resume", kept)
        return TERMINATED
    except KeyboardInterrupt:
        get_logger().error("interrupted; re-run the same command to resume")
        return 130
    except (
        MpviewError,
        OSError,
    ) as exc:  # the user's data, options or environment: one line (traceback with --verbose)
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
