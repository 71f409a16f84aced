"""The docs' LRW commands, as written, on an LRW-shaped tree of real talking-face video (small sizes appended)."""

from __future__ import annotations

import json
import re

import pytest
from doc_commands import stage_commands

import cli
from trees import lrw_tree

SMALL = {  # sizes appended to the docs' lines so that the test runs in about a minute
    "convlstm": ["--crop", "32", "--filters", "4,4,4", "--epochs", "1"],
    "mvm": "--crop 32 --front small --back tcn --audio-front small --units 16 --slots 8 --epochs 1".split(),
}


def readme_lrw_commands() -> list[list[str]]:
    """Every stage command of the README and docs pages that works on ``runs/lrw`` (not a cluster's), as argv; the
    recipes' lines train at the authors' full sizes and run small in tests/training/test_presets.py."""
    return [argv for _, argv in stage_commands() if "runs/lrw" in argv and "--recipe" not in argv]


@pytest.mark.slow
def test_readme_lrw_commands_run_on_an_lrw_tree(tmp_path, grid_dir, caplog):
    root = lrw_tree(tmp_path / "lrw", grid_dir)
    work = tmp_path / "runs" / "lrw"
    commands = readme_lrw_commands()
    assert [c[0] for c in commands] == ["prepare", "train", "train", "evaluate"]
    for argv in commands:
        argv = [str(root) if a == "/data/lrw" else str(work) if a == "runs/lrw" else a for a in argv]
        model = argv[argv.index("--model") + 1] if "--model" in argv else None
        extra = SMALL.get(model, []) if argv[0] == "train" else []
        assert cli.main([argv[0], "--quiet", *argv[1:], *extra]) == 0, argv
    manifest = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines()]
    assert manifest[0]["info"]["fixed_box"] == [54, 90, 200, 236]  # the 136 px box with its 5 px shift margin
    for name, model in (("convlstm-v1-roi", "convlstm"), ("mvm-v1-roi", "mvm")):
        spec = json.loads((work / "models" / name / "spec.json").read_text())
        assert spec["timesteps"] == 29  # LRW's clip length, not the released 20
        assert spec["options"]["recipe"] == {"name": "lrw", "box": 136, "size": 32}
        assert spec["options"]["batch_size"] == 8 and spec["options"]["memory_estimate_bytes"] > 0
        assert "units" not in spec["options"] if model == "convlstm" else spec["options"]["units"] == 16
    report = json.loads((work / "reports" / "convlstm-v1-roi.json").read_text())
    assert report["run_info"]["tta"] is True and report["metrics"]["n_samples"] == 3


@pytest.mark.slow
def test_an_option_the_model_does_not_use_is_a_one_line_error(tmp_path, grid_dir, caplog):
    root = lrw_tree(
        tmp_path / "lrw", grid_dir, words=("ABOUT", "LITTLE"), per_split={"train": 1, "val": 1, "test": 1}, frames=8
    )
    work = str(tmp_path / "w")
    assert cli.main(["prepare", "--quiet", "--work", work, "--dataset", "lrw", "--root", str(root), "--gray"]) == 0
    caplog.clear()
    assert cli.main(["train", "--quiet", "--work", work, "--model", "convlstm", "--units", "64"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert re.search(r"--model convlstm does not use --units; its options are .*--filters", errors[0])
    caplog.clear()
    assert (
        cli.main(["train", "--quiet", "--work", work, "--model", "convlstm", "--batch-size", "100000", "--epochs", "1"])
        == 2
    )
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "lower --batch-size, --crop, --timesteps" in errors[0]
