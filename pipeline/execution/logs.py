"""Logging set-up shared by the CLI and stages: one format, ``--quiet`` and ``--verbose``."""

from __future__ import annotations

import logging
import os

LOGGER_NAME = "mpview"


def get_logger(name: str | None = None) -> logging.Logger:
    """The project logger, or a child of it (``mpview.<name>``)."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def configure(verbosity: int = 0) -> None:
    """Set up logging: verbosity -1 quiet (warnings only), 0 info, 1 debug; silence TensorFlow's chatter."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    get_logger().setLevel(level)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if verbosity < 1 else "0")
    if verbosity < 1:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def progress_disabled() -> bool:
    """Whether tqdm bars should be hidden (quiet mode)."""
    return get_logger().getEffectiveLevel() > logging.INFO
