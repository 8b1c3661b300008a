#!/usr/bin/env bash
# Quick start, command 2: set everything up on a fresh machine and run the whole test suite.
#   scripts/test.sh [PYTEST ARGS...]
# Creates .venv (CPU torch 2.13.0), installs kspace-ldm with its test extras (compiling the native
# core), runs ruff (lint + format check), clang-format (check) and pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$KLDM_ROOT"
kldm_setup_venv test
echo "[test] ruff"
"$KLDM_VENV/bin/ruff" check .
"$KLDM_VENV/bin/ruff" format --check .
echo "[test] clang-format (.clang-format)"
find csrc examples \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print0 \
  | xargs -0 "$KLDM_VENV/bin/clang-format" --dry-run --Werror
echo "[test] pytest"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$KLDM_ROOT/build/inductor-cache}
exec "$KLDM_PY" -m pytest -q "$@"
