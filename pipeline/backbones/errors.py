"""Errors about model weights, importable without loading Keras (the CLI lists them as expected errors)."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import MpviewError


class WeightFileError(MpviewError, ValueError):
    """A weight file that cannot be loaded into the model; the message names the file and the first mismatch."""

    code = "weight-file"

    def __init__(self, file: Path | str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = str(file)
        self.reason = reason


class WeightsUnavailableError(MpviewError, RuntimeError):
    """The requested weights cannot be found or fetched; the message says how to supply them."""

    code = "weights-unavailable"
