"""The stage commands of the README and the docs pages, as the tests that run them read them.

A stage command is a line of a ```bash block that starts with ``mpview <stage>`` or ``python cli.py <stage>``
(``python cli.py`` is the checkout's spelling of the installed ``mpview``); a comment after two spaces and ``#``
is dropped. Other lines of those blocks (installs, ``dask worker``, ``bench/...``) are not stage commands.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "extract", "train", "evaluate")
PREFIXES = ("mpview ", "python cli.py ")


def pages() -> list[Path]:
    """README.md, then every docs page by name."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def page_commands(text: str) -> list[str]:
    """Every stage command line of the bash blocks of one page, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            prefix = next((p for p in PREFIXES if line.startswith(p)), None)
            if prefix and line[len(prefix) :].split(" ", 1)[0] in STAGES:
                commands.append(line)
    return commands


def stage_commands() -> list[tuple[str, list[str]]]:
    """(page name, argv after the program) of every page's stage commands, stage by stage in pipeline order.

    Within a stage the pages' order (README first) and each page's order are kept; a line found twice runs once.
    """
    found: dict[tuple[str, ...], str] = {}
    for page in pages():
        for line in page_commands(page.read_text()):
            prefix = next(p for p in PREFIXES if line.startswith(p))
            found.setdefault(tuple(shlex.split(line[len(prefix) :])), page.name)
    ordered = sorted(found.items(), key=lambda item: STAGES.index(item[0][0]))
    return [(page, list(argv)) for argv, page in ordered]
