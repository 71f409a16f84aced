#!/usr/bin/env bash
# The prepared accelerator benchmark (bench/device.py) for a GPU machine with JAX and no TensorFlow and no network.
#
#   bench/device.sh [--dry-run] [--budget SECONDS] [--out FILE]
#
# Runs from this source tree (no install). When keras or h5py cannot be imported, wheels are installed offline from
# $MPVIEW_WHEELS (default bench/wheels, e.g. filled beforehand with `pip download keras h5py -d bench/wheels`) into a
# throw-away folder put on PYTHONPATH. The whole run is capped at 470 s (under 8 minutes); the last line printed is one
# JSON object with every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import keras, h5py" 2>/dev/null; then
    wheels=${MPVIEW_WHEELS:-bench/wheels}
    target=$(mktemp -d)
    "$PYTHON" -m pip install --quiet --no-index --find-links "$wheels" --target "$target" keras h5py
    export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
fi
exec timeout 470 "$PYTHON" bench/device.py "$@"
