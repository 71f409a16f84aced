"""Every command of the README's stage sections, run in order as written, on small trees shaped like the releases.

Dataset and weight paths of the README (``/data/OuluVS2``, ``/data/mplstm``, ``/models/...``) are mapped to trees
built from the real GRID clips and to a weight file in the official layout; nothing else of a command is changed.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import cli
from trees import mplstm_tree, ouluvs2_cropped_tree

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = ("prepare", "extract", "train", "evaluate")
# Needs the released VGG16 file with its 2622-class top (550 MB as float32): too large to generate in a test.
NOT_RUN = {"--backbone vgg16 --format tfrecord": "VGG16 with top: a 550 MB weight file"}


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(section, command) for each ``python cli.py`` line of the bash blocks under ``### <stage>``, in order."""
    commands = []
    for section in SECTIONS:
        body = re.search(rf"^### {section}\n(.*?)(?=^### |^## )", text, re.S | re.M)
        assert body, f"README has no '### {section}' section"
        for block in re.findall(r"```bash\n(.*?)```", body.group(1), re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("python cli.py"):
                    commands.append((section, line))
    return commands


def test_readme_lists_commands_for_every_stage() -> None:
    """The parser finds the README's examples (so the end-to-end test below cannot pass by finding none)."""
    found = readme_commands(README.read_text())
    assert {section for section, _ in found} == set(SECTIONS)
    assert sum(section in ("prepare", "train") for section, _ in found) >= 8


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path: Path, grid_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each README command exits 0 (or is listed in NOT_RUN with the reason), in the README's order."""
    from pipeline.backbones import vggface
    from pipeline.backbones.weights import write_keras2_weight_file

    data = tmp_path / "data"
    # speakers 1, 2 train in both protocols, 4 validation in 28-12-12 (train in the other), 6 test in both;
    # 3 x 2 x 20 training frames leave room for the README's 100 PCA components
    speakers = (1, 2, 4, 6)
    oulu = ouluvs2_cropped_tree(data / "OuluVS2", grid_dir, frames=20, speakers=speakers, utterances=(31, 34))
    ouluvs2_cropped_tree(data / "OuluVS2", grid_dir, frames=20, speakers=speakers, utterances=(1, 4), subset="digit")
    places = {
        "/data/OuluVS2": oulu,
        "/data/mplstm": mplstm_tree(data / "mplstm", grid_dir, frames=8, per_split={"Train": 2, "Validation": 1, "Test": 1}),
        "/models/rcmalli_vggface_tf_notop_resnet50.h5": write_keras2_weight_file(
            vggface.resnet50(include_top=False), tmp_path / "models" / "rcmalli_vggface_tf_notop_resnet50.h5"),
    }
    monkeypatch.chdir(tmp_path)  # the README's runs/... folders are relative
    monkeypatch.setenv("MPVIEW_OFFLINE", "1")
    ran, skipped = [], []
    for section, command in readme_commands(README.read_text()):
        if "runs/lrw" in command or "/data/lrw" in command:
            skipped.append((command, "LRW tree: covered by the LRW test"))
            continue
        reason = next((why for key, why in NOT_RUN.items() if key in command), None)
        if reason:
            skipped.append((command, reason))
            continue
        argv = [str(places.get(arg, arg)) for arg in shlex.split(command)[2:]]
        assert cli.main(argv) == 0, f"README {section} example failed: {command}"
        ran.append(command)
    assert len(ran) >= 15, (ran, skipped)
