"""End to end through the CLI: the quick demo, TFRecord features, composite pretraining, random-weights stamping."""

from __future__ import annotations

import json

import pytest

import cli
from pipeline.manifest import Manifest
from pipeline.models.shared import NEEDS_PRETRAIN

COMPOSITE_ONLY = ("pretrain", *NEEDS_PRETRAIN)


@pytest.fixture(scope="module")
def demo_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo") / "work"
    # models trained two at a time, in worker processes
    assert cli.main(["demo", "--quiet", "--quick", "--work", str(work), "--jobs", "2"]) == 0
    return work


def test_demo_sizes_default_full_and_quick():
    """The default demo is the 5-minute one; --full is the larger run; --per-class and --epochs win over both."""
    from stages.demo import EPOCHS, FULL_EPOCHS, FULL_LR, FULL_PER_CLASS, LR, PER_CLASS, demo_size

    parser = cli.build_parser()
    runs = ((), ("--full",), ("--quick",), ("--full", "--per-class", "7"), ("--epochs", "20"))
    sizes = {flags: demo_size(parser.parse_args(["demo", *flags])) for flags in runs}
    assert sizes == {
        (): (PER_CLASS, EPOCHS, LR),
        ("--full",): (FULL_PER_CLASS, FULL_EPOCHS, FULL_LR),
        ("--quick",): (4, 3, LR),
        ("--full", "--per-class", "7"): (7, FULL_EPOCHS, FULL_LR),
        ("--epochs", "20"): (PER_CLASS, 20, LR),
    }
    assert PER_CLASS < FULL_PER_CLASS == 40 and EPOCHS < FULL_EPOCHS == 50 and FULL_LR == 1e-3 < LR


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_compares_every_model(demo_work):
    manifest = Manifest.load(demo_work / "manifest.jsonl")
    assert [run["stage"] for run in manifest.runs] == ["prepare", "extract:pixels"]
    assert all(s.status("prepare") == "done" and s.status("extract:pixels") == "done" for s in manifest)
    rows = json.loads((demo_work / "reports" / "comparison.json").read_text())["rows"]
    models = sorted(row["model"] for row in rows)
    assert models == ["early_fusion", "late_fusion", "mplstm", "mvlstm", "single", "single", "single"]
    singles = sorted(row["name"] for row in rows if row["model"] == "single")
    assert singles == [f"single-{v}-pixels" for v in ("v1", "v2", "v3")]
    # every run trained to its end in a worker process and recorded its history
    for name in (row["name"] for row in rows):
        assert len(json.loads((demo_work / "models" / name / "history.json").read_text())["loss"]) == 3
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["n_samples"] == rows[0]["n_samples"] for row in rows)
    for name in ("comparison.md", "comparison.png", "mplstm-v1+v2+v3-pixels_confusion.png"):
        assert (demo_work / "reports" / name).stat().st_size > 0
    report = json.loads((demo_work / "reports" / "mplstm-v1+v2+v3-pixels.json").read_text())
    assert report["run_info"]["device"]["backend"] == "tensorflow" and report["run_info"]["versions"]["keras"]
    assert (demo_work / "roi" / "contact_sheet.png").exists()


@pytest.mark.slow
def test_tfrecord_features_train_and_evaluate_like_hdf5(demo_work):
    work = str(demo_work)
    assert (
        cli.main(
            [
                "extract",
                "--quiet",
                "--work",
                work,
                "--backbone",
                "pixels",
                "--pixel-size",
                "16",
                "--format",
                "tfrecord",
                "--name",
                "px16",
            ]
        )
        == 0
    )
    shards = sorted((demo_work / "features" / "px16").glob("emb-*.tfrecord"))
    assert shards and all(p.with_name(p.name + ".json").exists() for p in shards)
    assert (
        cli.main(
            [
                "train",
                "--quiet",
                "--work",
                work,
                "--features",
                "px16",
                "--timesteps",
                "30",
                "--units",
                "8",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert cli.main(["evaluate", "--quiet", "--work", work, "--models", "mplstm-v1+v2+v3-px16"]) == 0
    report = json.loads((demo_work / "reports" / "mplstm-v1+v2+v3-px16.json").read_text())
    assert report["run_info"]["inputs"] == "extract:px16" and report["metrics"]["n_samples"] > 0
    # re-running a finished training changes nothing
    before = (demo_work / "models" / "mplstm-v1+v2+v3-px16" / "best.keras").read_bytes()
    assert (
        cli.main(
            [
                "train",
                "--quiet",
                "--work",
                work,
                "--features",
                "px16",
                "--timesteps",
                "30",
                "--units",
                "8",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert (demo_work / "models" / "mplstm-v1+v2+v3-px16" / "best.keras").read_bytes() == before


@pytest.mark.slow
def test_random_weights_are_stamped_into_every_output(tmp_path):
    work = str(tmp_path / "digits")
    assert (
        cli.main(
            [
                "prepare",
                "--quiet",
                "--work",
                work,
                "--dataset",
                "moving-digits",
                "--option",
                "n=20",
                "--option",
                "frames=6",
                "--fixed-box",
                "0",
                "0",
                "64",
                "64",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "extract",
                "--quiet",
                "--work",
                work,
                "--backbone",
                "vgg16-pool5",
                "--weights",
                "random",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    manifest = Manifest.load(tmp_path / "digits" / "manifest.jsonl")
    assert {s.stages["extract:vgg16-pool5"]["weights"] for s in manifest} == {"random (smoke test only)"}
    assert (
        cli.main(
            [
                "train",
                "--quiet",
                "--work",
                work,
                "--timesteps",
                "6",
                "--units",
                "8",
                "--epochs",
                "1",
                "--model",
                "single",
                "--perspectives",
                "v1",
            ]
        )
        == 0
    )
    assert cli.main(["evaluate", "--quiet", "--work", work]) == 0
    report = (tmp_path / "digits" / "reports" / "single-v1-vgg16-pool5.md").read_text()
    assert "random" in report and "smoke test only" in report


@pytest.mark.slow
def test_composite_demo_pretrains_and_plots(tmp_path):
    work = tmp_path / "digits"
    assert cli.main(["demo", "--quiet", "--quick", "--composite", "--work", str(work), "--jobs", "1"]) == 0
    pretrained = tmp_path / "digits-composite" / "models" / "single-composite-v1-pixels"
    assert (pretrained / "pretrain" / "predictions.png").read_bytes()[:4] == b"\x89PNG"
    assert (pretrained / "pretrain" / "composite.keras").exists() and (pretrained / "best.keras").exists()
    rows = json.loads((tmp_path / "digits-composite" / "reports" / "comparison.json").read_text())["rows"]
    assert sorted(r["name"] for r in rows) == ["single-composite-v1-pixels", "single-scratch-v1-pixels"]
    # like for like: the scratch classifier is the fine-tuned one's network with random initial weights
    specs = [
        json.loads((tmp_path / "digits-composite" / "models" / n / "spec.json").read_text())
        for n in ("single-composite-v1-pixels", "single-scratch-v1-pixels")
    ]
    assert [s["options"]["pretrain"] for s in specs] == ["composite", "scratch"]
    assert {k: v for k, v in specs[0]["options"].items() if k not in COMPOSITE_ONLY} == {
        k: v for k, v in specs[1]["options"].items() if k not in COMPOSITE_ONLY
    }
    assert specs[1]["options"]["pretrain_epochs"] is None  # unused by a scratch run, so recorded as such
    summary = (tmp_path / "digits-composite" / "reports" / "seed_summary.md").read_text()
    assert "| composite | 1 |" in summary and "| scratch | 1 |" in summary
