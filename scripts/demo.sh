#!/usr/bin/env bash
# The whole pipeline on the bundled synthetic data set (make demo).
set -euo pipefail
PY=${PYTHON:-python}
OUT=${DEMO_DIR:-demo_output}
echo "demo: (pipeline under construction)"
