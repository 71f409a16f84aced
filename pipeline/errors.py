"""The one base of every error a user can act on, each kind with a stable ``code``.

Stages report an ``MpviewError`` (or an ``OSError`` from the environment) as one line and exit 2; anything else is
a bug and keeps its traceback. Per-sample failures are counted by ``code``, never by matching message text.
Importable without Keras or TensorFlow.
"""

from __future__ import annotations


class MpviewError(Exception):
    """An error in the input, the options or the environment that the message tells the user how to fix."""

    code = "error"


class ConfigError(MpviewError, ValueError):
    """Options that cannot work: out of range, unknown, or not combinable with each other or with the data."""

    code = "config"


class DataError(MpviewError, ValueError):
    """Inputs on disk that cannot be used as they are (no usable samples, an unreadable spec or checkpoint)."""

    code = "data"


class TooLargeError(MpviewError, MemoryError):
    """A run that would not fit in this machine's memory; the message names the options to lower."""

    code = "too-large"


BUG_HINT = "this is a bug in mpview, not in your data or options: please report it with the traceback that follows"
