"""mpview as a library: the four stages as functions of a ``Workspace`` and a config.

    import mpview
    summary = mpview.prepare(mpview.Workspace("work"), mpview.PrepareConfig(dataset="synthetic"))

``python -m mpview COMMAND ...`` is the ``mpview`` command.
"""

from __future__ import annotations

import sys

import pipeline.verbs
from pipeline import __version__
from pipeline.media.roi import RoiConfig
from pipeline.verbs import *  # noqa: F403  (the verbs, their configs and results: pipeline.verbs.__all__)
from pipeline.workspace import Workspace

__all__ = ["__version__", "Workspace", "RoiConfig", *pipeline.verbs.__all__, "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``mpview`` command: parse ``argv`` (default: the process's arguments), run the stage, return its status."""
    from stages.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
