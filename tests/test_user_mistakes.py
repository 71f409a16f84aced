"""User mistakes, through the command line and the Python API: each is an ``MpviewError`` (or the parser's own
usage error) reported as one line naming what to fix, never as a bug in mpview."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import cli
from pipeline.errors import BUG_HINT, MpviewError

DIGITS = [
    "--dataset",
    "moving-digits",
    "--option",
    "n=20",
    "--option",
    "frames=6",
    "--option",
    "size=32",
    "--fixed-box",
    "0",
    "0",
    "32",
    "32",
]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A prepared and extracted work folder, shared by the mistakes made on it."""
    root = tmp_path_factory.mktemp("mistakes") / "w"
    assert cli.main(["prepare", "-q", "--work", str(root), *DIGITS]) == 0
    assert cli.main(["extract", "-q", "--work", str(root), "--backbone", "pixels", "--pixel-size", "4"]) == 0
    return root


def reported(caplog: pytest.LogCaptureFixture, argv: list[str]) -> str:
    """Run ``argv``; it must exit 2 with one error line and no bug wording: returns that line."""
    caplog.clear()
    assert cli.main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert len(errors) == 1 and "\n" not in errors[0] and BUG_HINT not in errors[0], errors
    assert not any(r.levelname == "CRITICAL" for r in caplog.records)
    return errors[0]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["train", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["train", "--units", "0"], "--units must be >= 1, got 0"),
        (["train", "--dropout", "1.5"], "--dropout must be < 1, got 1.5"),
        (["train", "--model", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--model", "mplsmt"], "(did you mean mplstm?)"),
        (["prepare", "--detect-scale", "0"], "--detect-scale must be > 0, got 0.0"),
        (["prepare", "--option", "subset"], "--option expects KEY=VALUE, got 'subset'"),
    ],
)
def test_a_flag_out_of_range_is_the_parsers_one_line_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"mpview {argv[0]}: error:") and says in last and BUG_HINT not in last


def test_a_mistyped_stage_is_answered_with_the_closest_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trian", "--work", "w"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("(did you mean train?)")


def test_mistakes_on_a_work_folder_are_one_line_errors(work: Path, tmp_path: Path, caplog, monkeypatch):
    w = ["-q", "--work", str(work)]
    assert "does not use --slots" in reported(caplog, ["train", *w, "--model", "mplstm", "--slots", "4"])
    assert "--crop sets the side" in reported(caplog, ["train", *w, "--model", "convlstm", "--crop", "16"])
    assert "no features named 'nope'" in reported(caplog, ["train", *w, "--features", "nope"])
    assert "unknown perspective(s) ['v9']" in reported(caplog, ["train", *w, "--perspectives", "v9"])
    assert "--perspectives does not apply to --dataset moving-digits" in reported(
        caplog, ["prepare", "-q", "--work", str(tmp_path / "other"), *DIGITS, "--perspectives", "1"]
    )
    assert "frame size 16 must exceed" in reported(
        caplog,
        ["prepare", "-q", "--work", str(tmp_path / "small"), "--dataset", "moving-digits", "--option", "size=16"],
    )
    assert "needs --root" in reported(
        caplog, ["prepare", "-q", "--work", str(tmp_path / "oulu"), "--dataset", "ouluvs2"]
    )
    assert str(tmp_path / "absent") in reported(
        caplog,
        ["prepare", "-q", "--work", str(tmp_path / "o2"), "--dataset", "ouluvs2", "--root", str(tmp_path / "absent")],
    )
    assert "no trained runs" in reported(caplog, ["evaluate", *w])
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the [dask] extra were not installed
    assert "pip install 'mpview[dask]'" in reported(
        caplog, ["extract", *w, "--backbone", "pixels", "--pixel-size", "4", "--dask-local", "1"]
    )


def test_a_corrupt_run_spec_is_a_data_error_naming_the_file(work: Path, tmp_path: Path):
    from pipeline.training.experiment import RunSpec

    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text("{not json")
    with pytest.raises(MpviewError, match=r"spec.json: unreadable run spec") as error:
        RunSpec.load(run)
    assert error.value.code == "data"
    (run / "spec.json").write_text(json.dumps({"name": "r"}))
    with pytest.raises(MpviewError, match="unreadable run spec"):
        RunSpec.load(run)
    with pytest.raises(MpviewError, match="no run spec"):
        RunSpec.load(tmp_path)


def test_python_callers_get_the_same_checks_when_a_config_is_built():
    from pipeline.media.roi import RoiConfig
    from pipeline.verbs import EvaluateConfig, ExecutionConfig, ExtractConfig, PrepareConfig, TrainConfig

    mistakes = [
        (lambda: TrainConfig(epochs=0), "--epochs must be >= 1, got 0"),
        (lambda: TrainConfig(options={"units": "16"}), "--units must be an integer, got '16'"),
        (lambda: TrainConfig(model="mvm", options={"released": True}), "--model mvm does not use --released"),
        (lambda: TrainConfig(model="transformer"), "unknown model 'transformer'"),
        (lambda: TrainConfig(perspectives="v1"), "perspectives must be a tuple"),
        (lambda: PrepareConfig(options=("n=3",)), "options must be a mapping"),
        (lambda: PrepareConfig(roi=RoiConfig(max_missing_fraction=2.0)), "--max-missing must be <= 1, got 2.0"),
        (lambda: PrepareConfig(roi=RoiConfig(roi="lips")), "--roi must be one of mouth, face, frame"),
        (lambda: PrepareConfig(roi="mouth"), "roi must be a RoiConfig"),
        (lambda: ExtractConfig(pixel_size=0), "--pixel-size must be >= 1, got 0"),
        (lambda: PrepareConfig(compression="zstd"), "--compression must be one of gzip, lzf, none, got 'zstd'"),
        (lambda: ExtractConfig(compression="zstd"), "--compression must be one of gzip, lzf, none, got 'zstd'"),
        (lambda: ExtractConfig(preprocess="v3"), "--preprocess must be one of auto, v1, v2, released, got 'v3'"),
        (lambda: EvaluateConfig(split="dev"), "--split must be one of train, val, test"),
        (lambda: ExecutionConfig(jobs=0), "--jobs must be >= 1, got 0"),
    ]
    for make, says in mistakes:
        with pytest.raises(MpviewError) as error:
            make()
        assert says in str(error.value) and "\n" not in str(error.value)
