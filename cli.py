#!/usr/bin/env python3
"""mpview from a checkout, not installed: ``python cli.py COMMAND ...`` (installed: the ``mpview`` command)."""

from __future__ import annotations

import sys

from stages.cli import STAGES, build_parser, main

__all__ = ["STAGES", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
