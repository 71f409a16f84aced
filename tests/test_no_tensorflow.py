"""The HDF5 path needs no TensorFlow: prepare, extract, train (streamed and in memory) and evaluate run through the
CLI under KERAS_BACKEND=jax in a process where `import tensorflow` fails as if it were not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")

REPO = Path(__file__).resolve().parents[1]

# Every finder answers "no such module" for tensorflow and its submodules, exactly what an absent package gives
# (imports raise ModuleNotFoundError, importlib.util.find_spec returns None).
SCRIPT = textwrap.dedent(
    """
    import json, sys

    class Hidden:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            return None if name.split(".")[0] == "tensorflow" else self.inner.find_spec(name, path, target)

    sys.meta_path[:] = [Hidden(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
    import cli

    work = sys.argv[1]
    common = ["--quiet", "--work", work]
    fit = ["--timesteps", "6", "--epochs", "1"]  # TensorBoard left on: skipped with a warning without TensorFlow
    codes = [
        cli.main(["prepare", *common, "--dataset", "moving-digits", "--option", "n=20", "--option", "frames=6",
                  "--option", "size=32", "--fixed-box", "0", "0", "32", "32"]),
        cli.main(["extract", *common, "--backbone", "pixels", "--pixel-size", "8"]),
        cli.main(["train", *common, *fit, "--units", "4", "--model", "single", "--perspectives", "v1",
                  "--input", "stream"]),
        cli.main(["train", *common, *fit, "--units", "4", "--model", "mplstm", "--input", "memory"]),
        cli.main(["train", *common, *fit, "--model", "convlstm", "--perspectives", "v1", "--augment", "--crop", "22",
                  "--input", "stream"]),
        cli.main(["evaluate", *common, "--input", "stream", "--tta"]),
        cli.main(["extract", *common, "--backbone", "pixels", "--format", "tfrecord", "--name", "tfr"]),
    ]
    print(json.dumps({"codes": codes, "tensorflow_loaded": any(m.split(".")[0] == "tensorflow" for m in sys.modules)}))
    """
)


@pytest.mark.slow
def test_hdf5_pipeline_runs_under_jax_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "work")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0, 0, 0, 2], "tensorflow_loaded": False}
    assert "--format tfrecord: tfrecord shards need tensorflow, which is not installed" in done.stderr
    reports = sorted(p.name for p in (tmp_path / "work" / "reports").glob("*.json"))
    assert reports == ["comparison.json", "convlstm-v1-roi.json", "mplstm-v1-pixels.json", "single-v1-pixels.json"]
    report = json.loads((tmp_path / "work" / "reports" / "convlstm-v1-roi.json").read_text())
    assert report["run_info"]["device"]["backend"] == "jax" and report["run_info"]["tta"] is True
