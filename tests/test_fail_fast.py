"""Mistakes fail fast: each stage checks the work folder, manifest, features and options before it starts a backend.

Each command runs in a fresh interpreter, as a user's does. CPU time is what is bounded (a shared machine's load
stretches wall time, not CPU time): starting TensorFlow alone costs about 4 s of it, so a 2 s bound fails whenever a
check comes after the backend. The child also reports whether TensorFlow or Keras got imported at all.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.manifest import Manifest, Sample, Source

REPO = Path(__file__).resolve().parents[1]
CPU_SECONDS = 2.0
CHILD = (
    "import json, sys, cli; rc = cli.main(sys.argv[1:]); "
    "print('BACKENDS', json.dumps([m for m in ('tensorflow', 'keras') if m in sys.modules])); sys.exit(rc)"
)


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float, list[str]]:
    """``cli.py ARGS`` in a fresh interpreter: the finished process, its CPU seconds, the backends it imported."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # null: the child exited before printing (argparse's --help)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BACKENDS ")), "BACKENDS null")
    return done, cpu, json.loads(line.split(" ", 1)[1])


def prepared_work(root: Path, extracted: bool) -> Path:
    """A work folder whose manifest has three prepared samples, one per split (and a ``pixels`` features run when
    ``extracted``)."""
    samples = [
        Sample(
            f"s{k}",
            {"v1": Source(f"videos/s{k}.mp4")},
            label="ab"[k % 2],
            split=split,
            speaker=f"spk{k}",
            stages={"prepare": {"status": "done", "shard": "roi/roi-00000.h5"}},
        )
        for k, split in enumerate(("train", "val", "test"))
    ]
    manifest = Manifest(dataset="synthetic", root=str(root), perspectives=["v1"], samples=samples, classes=["a", "b"])
    if extracted:
        manifest.add_run("extract:pixels", {"backbone": "pixels"}, {"done": 3}, 0.0, 1.0)
    root.mkdir(parents=True)
    manifest.save(root / "manifest.jsonl")
    return root


NO_MANIFEST = "no manifest in {work}: run `prepare` first (or pass the right --work)"
# mistake: (manifest written, features extracted, stage and arguments, the start of today's one-line error)
MISTAKES = {
    "train before prepare": (False, None, ["train"], NO_MANIFEST),
    "extract before prepare": (False, None, ["extract"], NO_MANIFEST),
    "train before extract": (
        True,
        False,
        ["train"],
        "no features extracted yet: run `extract` first (or pick a pixel model)",
    ),
    "evaluate before train": (True, True, ["evaluate"], "no trained runs under {work}/models: run `train` first"),
    "unknown --features": (
        True,
        True,
        ["train", "--features", "vgg"],
        "no features named 'vgg' in the manifest; extracted: ['pixels']",
    ),
    "an option the model does not use": (
        True,
        True,
        ["train", "--model", "mplstm", "--filters", "8"],
        "--model mplstm does not use --filters; its options are ",
    ),
    "an unknown --recipe": (
        True,
        True,
        ["train", "--recipe", "mvm-lwr"],
        "unknown --recipe 'mvm-lwr' (did you mean mvm-lrw?); choose from mplstm-released, mvm-lrw, composite-mnist",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_prints_its_one_line_error_without_starting_a_backend(mistake: str, tmp_path: Path) -> None:
    """The listed mistakes exit 2 with today's message, within 2 s of CPU, TensorFlow never imported."""
    has_manifest, extracted, args, message = MISTAKES[mistake]
    work = prepared_work(tmp_path / "work", extracted) if has_manifest else tmp_path / "work"
    done, cpu, backends = run_cli(args[0], "--work", str(work), *args[1:])
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].split("ERROR mpview: ", 1)[1].startswith(message.format(work=work)), done.stderr
    assert backends == [], f"{mistake}: imported {backends} before refusing"
    assert cpu <= CPU_SECONDS, f"{mistake}: {cpu:.2f} s of CPU before the error"


@pytest.mark.parametrize("stage", ["prepare", "extract", "train", "evaluate", "demo"])
def test_help_is_fast(stage: str) -> None:
    """``STAGE --help`` prints its options within 2 s of CPU, without importing a backend."""
    done, cpu, _ = run_cli(stage, "--help")
    assert done.returncode == 0 and "--work" in done.stdout, done.stderr
    assert cpu <= CPU_SECONDS, f"{stage} --help: {cpu:.2f} s of CPU"


def test_the_backend_starts_after_the_checks_and_quietly(tmp_path: Path) -> None:
    """Checks passed, the backend starts (here for a run with no checkpoint) and prints no CUDA driver errors."""
    from pipeline.execution.device import gpu_present

    if gpu_present():
        pytest.skip("this machine has a GPU: its start-up messages are meant to show")
    work = prepared_work(tmp_path / "work", True)
    done, _, backends = run_cli("evaluate", "--work", str(work), "--models", "mplstm-v1-pixels")
    assert done.returncode == 1, done.stderr
    assert "mplstm-v1-pixels: not scored:" in done.stderr and "no checkpoint" in done.stderr, done.stderr
    assert "tensorflow" in backends
    assert "cuInit" not in done.stderr and "CUDA" not in done.stderr and "cuda" not in done.stderr, done.stderr
