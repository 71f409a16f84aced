"""The command line as a newcomer meets it: help that states defaults, quiet start-up on a CPU machine."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", list(cli.STAGES))
def test_every_option_has_help_and_shows_its_default(stage: str) -> None:
    """No option without help text, and every option with a default says it."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[stage]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{stage} {action.option_strings[0]} has no help text"
        text = formatter._get_help_string(action)
        if action.default not in (None, False, [], ()):
            assert "default" in text, f"{stage} {action.option_strings[0]}: {text!r}"


def test_help_text_shows_defaults() -> None:
    """`train --help` prints the released defaults a user would otherwise have to look up."""
    out = subprocess.run(
        [sys.executable, "cli.py", "train", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    assert "step (per device with --distribute) (default: 60)" in flat and "sooner) (default: 50)" in flat


def test_quiet_start_on_a_machine_without_gpu(tmp_path: Path) -> None:
    """A model stage on a CPU machine prints no CUDA driver errors (TensorFlow's C++ start-up logs)."""
    from pipeline.execution.device import gpu_present

    if gpu_present():
        pytest.skip("this machine has a GPU: its start-up messages are meant to show")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    run = subprocess.run(
        [sys.executable, "cli.py", "train", "--work", str(tmp_path / "w")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "manifest" in run.stderr  # the stage's own one-line error still shows
    assert "cuInit" not in run.stderr and "CUDA" not in run.stderr and "cuda" not in run.stderr, run.stderr


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``MpviewError`` (here a ConfigError from the verb) exits 2 with its message; any other exception is a bug:
    it propagates with its traceback after a line saying so, never dressed as the user's mistake."""
    import stages.prepare
    from pipeline.errors import BUG_HINT, ConfigError, MpviewError

    assert issubclass(ConfigError, MpviewError) and ConfigError.code == "config"
    assert cli.main(["prepare", "-q", "--work", str(tmp_path / "w")]) == 2  # no manifest and no --dataset
    assert any("pass --dataset" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)

    def shape_bug(ws, config):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(stages.prepare, "prepare", shape_bug)
    caplog.clear()
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["prepare", "-q", "--work", str(tmp_path / "w"), "--dataset", "synthetic"])
    assert any(BUG_HINT in r.getMessage() for r in caplog.records)


def _stage_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def _parse_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """What the parser prints when it refuses ``argv`` (it exits with status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


POSITIONALS = {"convert": ["mvm", "released.ckpt"]}  # the stages' required positional arguments


@pytest.mark.parametrize("stage", list(cli.STAGES))
def test_no_stage_takes_a_flag_by_its_prefix(stage: str, capsys: pytest.CaptureFixture) -> None:
    """Every long flag cut short by a letter is refused (``--epoch`` is not ``--epochs``), with the full one offered."""
    flags = [s for s in _stage_parsers()[stage]._option_string_actions if s.startswith("--") and len(s) > 4]
    assert flags
    for flag in flags:
        if flag[:-1] in flags:
            continue
        err = _parse_error([stage, *POSITIONALS.get(stage, []), flag[:-1]], capsys)
        assert f"usage: mpview {stage} " in err and f"unrecognized arguments: {flag[:-1]}" in err, err
        assert "did you mean --" in err, err


def test_mistyped_flag_is_reported_by_its_stage_with_the_closest_flag(capsys: pytest.CaptureFixture) -> None:
    """``--epocs`` and ``--unit=8`` are ``train``'s errors, shown with ``train``'s usage and the flags meant."""
    err = _parse_error(["train", "--epocs", "2"], capsys)
    assert err.startswith("usage: mpview train ")
    assert "mpview train: error: unrecognized arguments: --epocs 2 (did you mean --epochs?)" in err
    err = _parse_error(["train", "--epocs", "2", "--unit=8"], capsys)
    assert "(did you mean --epochs for --epocs, --units for --unit?)" in err
    err = _parse_error(["prepare", "--frobnicate"], capsys)
    assert "mpview prepare: error: unrecognized arguments: --frobnicate\n" in err  # nothing close: no guess
    assert cli.build_parser().parse_args(["train", "--lr", "-1"]).lr == -1  # a negative value is not a flag


def test_version() -> None:
    """``python cli.py --version`` (and so ``mpview --version``) prints the package version."""
    from pipeline import __version__

    run = subprocess.run([sys.executable, "cli.py", "--version"], cwd=REPO, capture_output=True, text=True, check=True)
    assert run.stdout == f"mpview {__version__}\n"


def test_python_api_module_reexports_the_verbs() -> None:
    """``import mpview`` gives the four verbs, their configs and the Workspace, the same objects as the packages'."""
    import mpview
    import pipeline.verbs
    from pipeline.workspace import Workspace

    assert mpview.Workspace is Workspace
    for name in (
        "prepare",
        "extract",
        "train",
        "evaluate",
        "PrepareConfig",
        "ExtractConfig",
        "TrainConfig",
        "EvaluateConfig",
        "ExecutionConfig",
    ):
        assert getattr(mpview, name) is getattr(pipeline.verbs, name), name
    assert set(mpview.__all__) <= set(dir(mpview))


def test_shard_compression_is_recorded_and_a_change_is_refused(tmp_path: Path) -> None:
    """--compression reaches the ROI and feature shards' attributes; a re-run asking for another is refused."""
    from pipeline.storage.shards import ShardReader

    work = str(tmp_path / "w")
    synthetic = [
        "--dataset",
        "synthetic",
        "--option",
        "n_per_class=2",
        "--option",
        "n_classes=2",
        "--option",
        "frames=6",
    ]
    assert cli.main(["prepare", "-q", "--work", work, *synthetic, "--compression", "lzf", "--contact-sheet", "0"]) == 0
    assert cli.main(["extract", "-q", "--work", work, "--backbone", "pixels", "--compression", "none"]) == 0
    for folder, expected in (("roi", "lzf"), ("features/pixels", "none")):
        shards = sorted((tmp_path / "w" / folder).glob("*.h5"))
        assert shards
        for shard in shards:
            with ShardReader(shard) as reader:
                assert reader.attrs["compression"] == expected
                assert reader.attrs.get("preprocess", "none") == "none"
    assert cli.main(["prepare", "-q", "--work", work, "--compression", "gzip"]) == 2
    assert cli.main(["extract", "-q", "--work", work, "--backbone", "pixels", "--compression", "lzf"]) == 2
    assert cli.main(["extract", "-q", "--work", work, "--backbone", "pixels"]) == 0  # the default is none
    assert cli.main(["extract", "-q", "--work", work, "--backbone", "pixels", "--preprocess", "released"]) == 2
