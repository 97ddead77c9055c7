#!/usr/bin/env bash
# Sets up this checkout and runs the release blog's two examples: on the machine's GPU
# where there is one, else on the CPU. Works on a fresh machine by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c "import torch" >/dev/null 2>&1 || "$PY" -m pip install --quiet torch==2.13.0
for pkg in setuptools wheel pybind11 ninja numpy; do
  "$PY" -c "import $pkg" >/dev/null 2>&1 || "$PY" -m pip install --quiet "$pkg"
done
MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install --quiet --no-build-isolation -e .
"$PY" examples/blog_single_prefill.py
"$PY" examples/blog_batch_paged_prefill.py
