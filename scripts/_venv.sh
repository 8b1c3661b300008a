#!/usr/bin/env bash
# Shared by scripts/demo.sh and scripts/test.sh (sourced): create .venv with the CPU build of torch
# and install kspace-ldm into it, compiling the native core. Idempotent: a second run only rebuilds
# what changed (the CMake build dir build/ is kept).
#   kldm_setup_venv [EXTRAS]    e.g. kldm_setup_venv test
set -euo pipefail

KLDM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KLDM_VENV=${KLDM_VENV:-$KLDM_ROOT/.venv}
KLDM_PY=$KLDM_VENV/bin/python

_kldm_pip() {
  # The local package index prints one harmless "Location ... is ignored" line per package.
  "$KLDM_PY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
  return "${PIPESTATUS[0]}"
}

kldm_setup_venv() {
  local extras=${1:-}
  local t0=$SECONDS
  if [[ ! -x "$KLDM_PY" ]]; then
    echo "[setup] creating $KLDM_VENV"
    "${PYTHON:-python3}" -m venv "$KLDM_VENV"
  fi
  # CPU torch first, pinned (a bare `torch` would pull a multi-GB CUDA build), then the build tools;
  # every later pip call keeps the pin through -c constraints-cpu.txt.
  echo "[setup] torch (CPU) and build tools"
  _kldm_pip install -q -c "$KLDM_ROOT/constraints-cpu.txt" torch==2.13.0 \
    "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.26" ninja
  echo "[setup] kspace-ldm${extras:+[$extras]} (compiles the native core)"
  local spec="$KLDM_ROOT"
  [[ -n "$extras" ]] && spec="$KLDM_ROOT[$extras]"
  _kldm_pip install -q --no-build-isolation -c "$KLDM_ROOT/constraints-cpu.txt" -e "$spec"
  if [[ "$extras" == *test* ]]; then
    # fastMRI's own package, the reference for mask/metric/dataset conformance tests; --no-deps
    # because its declared torchvision/lightning requirements would replace the CPU torch.
    _kldm_pip install -q --no-deps fastmri==0.3.0
  fi
  echo "[setup] done in $((SECONDS - t0)) s"
}
