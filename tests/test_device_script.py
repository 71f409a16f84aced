"""bench/device.sh --dry-run: the prepared accelerator benchmark runs end to end on a CPU under JAX.

Its last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_script_dry_run_reports_every_section(tmp_path):
    out = tmp_path / "device.json"
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "device.sh"), "--dry-run", "--backbones", "resnet50", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=470,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == json.loads(out.read_text())
    assert result["dry_run"] is True and result["info"]["backend"] == "jax"
    assert result["errors"] == {} and result["skipped"] == {}
    assert result["matmul"]["bf16_tflops"] > 0
    assert set(result["extract"]) == {"resnet50_float32", "resnet50_bfloat16"}
    assert result["extract"]["resnet50_float32"]["gflops_per_img"] == pytest.approx(
        7.7, abs=0.2
    )  # VGGFace2 ResNet50 at 224x224
    assert all(e["img_per_s"] > 0 and 0 < e["share_of_bf16_peak"] for e in result["extract"].values())
    assert set(result["train"]["steps_per_s"]) == {"mplstm", "keras_lstm", "released_loop"}
    assert all(e["uint8_img_per_s"] > 0 for e in result["extract"].values())
    assert set(result["feed"]["compressions"]) == {"gzip", "lzf", "none"}
    assert all(f["feed_img_per_s_per_core"] > 0 for f in result["feed"]["compressions"].values())
    assert set(result["stream"]["compressions"]) == {"gzip", "lzf", "none"}
    assert result["stream"]["stream_samples_per_s"] > 0 and result["stream"]["runs"]["stream_none"]["mode"] == "stream"
    assert result["stream"]["runs"]["memory"]["mode"] == "memory"
