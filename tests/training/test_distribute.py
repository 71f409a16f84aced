"""Data-parallel training: two replicas (logical CPUs) train with the global batch and scaled learning rate."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from pipeline.training.distribute import data_parallel
    from pipeline.models.mplstm.layers import mplstm_layout
    from pipeline.models.networks import build_model, compile_model
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(32, 6, 5)).astype("float32"), rng.normal(size=(32, 6, 3)).astype("float32")]
    y = keras.utils.to_categorical((x[0][:, :, 0].sum(1) > 0).astype(int), 2)
    with data_parallel(True, batch_per_replica=4, learning_rate=1e-3) as plan:
        model = compile_model(
            build_model(mplstm_layout, [5, 3], 2, timesteps=6, units=8, dropout=0.0), plan.learning_rate
        )
        history = model.fit(x, y, batch_size=plan.global_batch, epochs=3, verbose=0).history
    print(json.dumps({"replicas": plan.replicas, "global_batch": plan.global_batch, "lr": plan.learning_rate,
                      "loss": history["loss"], "optimizer_lr": float(model.optimizer.learning_rate.numpy())}))
    """
)


@pytest.mark.slow
def test_two_replicas_train_with_global_batch(tmp_path):
    script = tmp_path / "dp.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["global_batch"] == 8
    assert result["lr"] == pytest.approx(2e-3) and result["optimizer_lr"] == pytest.approx(2e-3)
    assert np.all(np.isfinite(result["loss"])) and result["loss"][-1] < result["loss"][0]


def test_disabled_is_a_no_op():
    from pipeline.training.distribute import data_parallel

    with data_parallel(False, 60, 1e-3) as plan:
        assert (plan.replicas, plan.global_batch, plan.learning_rate) == (1, 60, 1e-3)
