"""Every stage command of the README and the docs pages, run as written, on small trees shaped like the releases.

The commands are read by ``doc_commands`` (the bash blocks of README.md and docs/*.md) and run stage by stage:
every ``prepare`` first, then ``extract``, ``train`` and ``evaluate``, in the pages' order within a stage. Dataset
and weight paths of the docs (``/data/OuluVS2``, ``/data/mplstm``, ``/models/...``) are mapped to trees built from the
real GRID clips and to a weight file in the official layout; nothing else of a command is changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_commands import STAGES, page_commands, pages, stage_commands

import cli
from trees import mplstm_tree, ouluvs2_cropped_tree

NOT_RUN = {
    # needs the released VGG16 file with its 2622-class top (550 MB as float32): too large to generate in a test
    "--backbone vgg16 --format tfrecord": "VGG16 with top: a 550 MB weight file",
    "tcp://HOST:8786": "an address of a running Dask scheduler (the cluster tests run real ones)",
    # a paper's full recipe is hundreds of epochs: tests/training/test_presets.py runs each with --epochs 1, small
    "--recipe": "a paper's full training recipe",
    "runs/digits": "composite-mnist's data, for its recipe (tests/training/test_presets.py)",
    # the authors' released checkpoint cannot ship: tests/models/test_mvm_convert.py converts one of their structure
    "runs/lrw-authors": "the memory model's released checkpoint",
}
LRW = ("runs/lrw", "/data/lrw")  # run by tests/recipes/test_lrw_readme.py on an LRW-shaped tree


def test_docs_list_commands_for_every_stage() -> None:
    """The parser finds the examples (so the end-to-end test below cannot pass by finding none), the README's too."""
    found = stage_commands()
    assert {argv[0] for _, argv in found} == set(STAGES)
    assert sum(argv[0] in ("prepare", "train") for _, argv in found) >= 8
    readme = page_commands(pages()[0].read_text())
    assert {line.split()[1] for line in readme} == set(STAGES), readme
    assert any(page.name == "models.md" for page in pages())


def test_page_commands_reads_only_stage_lines_of_bash_blocks() -> None:
    text = (
        "```bash\nmpview train --work w  # a comment\npip install -e .\nmpview --version\n"
        "python cli.py evaluate --work w\n```\n```python\nmpview prepare --work w\n```\n"
    )
    assert page_commands(text) == ["mpview train --work w", "python cli.py evaluate --work w"]


@pytest.mark.slow
def test_docs_commands_run_in_order(tmp_path: Path, grid_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stage command exits 0 (or is listed in NOT_RUN with the reason), stage by stage."""
    from pipeline.backbones import vggface
    from pipeline.backbones.weights import write_keras2_weight_file

    data = tmp_path / "data"
    # speakers 1, 2 train in both protocols, 4 validation in 28-12-12 (train in the other), 6 test in both;
    # 3 speakers x 2 utterances x 10 frames x 3 views: 180 training frames for the docs' 100 PCA components
    speakers = (1, 2, 4, 6)
    oulu = ouluvs2_cropped_tree(data / "OuluVS2", grid_dir, frames=10, speakers=speakers, utterances=(31, 34))
    ouluvs2_cropped_tree(data / "OuluVS2", grid_dir, frames=10, speakers=speakers, utterances=(1, 4), subset="digit")
    places = {
        "/data/OuluVS2": oulu,
        "/data/mplstm": mplstm_tree(
            data / "mplstm", grid_dir, frames=8, per_split={"Train": 2, "Validation": 1, "Test": 1}
        ),
        "/models/rcmalli_vggface_tf_notop_resnet50.h5": write_keras2_weight_file(
            vggface.resnet50(include_top=False), tmp_path / "models" / "rcmalli_vggface_tf_notop_resnet50.h5"
        ),
    }
    monkeypatch.chdir(tmp_path)  # the docs' runs/... folders are relative
    monkeypatch.setenv("MPVIEW_OFFLINE", "1")
    ran, skipped = [], []
    for page, argv in stage_commands():
        command = " ".join(argv)
        reason = next((why for key, why in NOT_RUN.items() if key in command), None)
        if any(place in argv for place in LRW):
            reason = "LRW tree: covered by the LRW test"
        if reason:
            skipped.append((command, reason))
            continue
        assert cli.main([str(places.get(arg, arg)) for arg in argv]) == 0, f"{page} example failed: {command}"
        ran.append(command)
    assert len(ran) >= 16, (ran, skipped)
