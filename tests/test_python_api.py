"""The README's Python API block runs as written, and a second call with other settings is refused, not mixed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def api_block() -> str:
    """The one ``python`` block of the README's "Python API" section."""
    section = re.search(r"^## Python API\n(.*?)(?=^## )", (REPO / "README.md").read_text(), re.S | re.M)
    assert section, "README has no '## Python API' section"
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    assert len(blocks) == 1, f"expected one python block, found {len(blocks)}"
    return blocks[0]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_readme_python_api_block_runs_as_written(tmp_path: Path) -> None:
    done = run_python(api_block(), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| mplstm-v1+v2+v3-pixels |" in done.stdout
    assert (tmp_path / "api-work" / "models" / "mplstm-v1+v2+v3-pixels" / "best.keras").exists()
    # the config is what the run recorded, and the same verb with other settings is refused with the error's code
    again = run_python(
        "from pipeline.errors import MpviewError\n"
        "from pipeline.verbs import ExtractConfig, extract\n"
        "from pipeline.workspace import Workspace\n"
        "try:\n"
        "    extract(Workspace('api-work'), ExtractConfig(backbone='pixels', pixel_size=8))\n"
        "except MpviewError as exc:\n"
        "    print('refused', exc.code, exc)\n",
        tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith("refused settings-changed") and "pixel_size: 16 -> 8" in again.stdout
    import json

    spec = json.loads((tmp_path / "api-work" / "models" / "mplstm-v1+v2+v3-pixels" / "spec.json").read_text())
    assert (
        spec["config"]["model"] == "mplstm"
        and spec["config"]["options"] == {"units": 16}
        and spec["config"]["epochs"] == 3
    )
