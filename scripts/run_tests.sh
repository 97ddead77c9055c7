#!/usr/bin/env bash
# Sets up this checkout and runs the test suite; works on a fresh machine by itself.
#   CPU machine: builds the CPU operators and runs every CPU-tier test (the GPU tier skips).
#   GPU machine: builds the GPU kernels too and runs both tiers.
# Installs only what is missing, so it also runs offline where torch is present.
# The compile check for gfx942/gfx950 and sm_80/sm_90a needs clang-22 and nvcc; with
# TFO_REQUIRE_COMPILERS=1 (CI) a missing compiler fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

have_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

if ! have_module torch; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
missing=()
for pkg in setuptools wheel pybind11 ninja pytest expecttest numpy transformers; do
  have_module "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  "$PY" -m pip install --quiet "${missing[@]}" || echo "warning: could not install ${missing[*]} (offline?)"
fi

if ! command -v clang++-22 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq clang-22 libclang-rt-22-dev libamdhip64-dev rocm-device-libs >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq clang-22 libclang-rt-22-dev libamdhip64-dev rocm-device-libs >/dev/null; } ||
    echo "warning: could not install clang-22 (the AMD compile check will skip unless required)"
fi

MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install --quiet --no-build-isolation -e .

# pytest exit codes: 0 all passed; anything else (failures, errors, nothing collected) fails.
set +e
# -rP shows the captured output of passed tests: the compile check's register report.
"$PY" -m pytest -q -raP tests "$@"
status=$?
set -e
if [ $status -ne 0 ]; then
  echo "tests failed (pytest exit code $status)" >&2
fi
exit $status
