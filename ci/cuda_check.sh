#!/usr/bin/env bash
# CUDA compile-and-link check, for machines without a GPU (CI). Builds kspace-ldm against the CUDA
# build of torch (cached venv outside the clone, keyed by a hash of the requirements), compiles the
# .cu kernels for sm_80/sm_90, links libkldm and _C with --no-undefined, imports the module, checks
# that a CUDA kernel is registered for every op, that the cubins for each architecture are in the
# library, and runs the CPU op tests in that build.
#
# Env: KLDM_CUDA_CACHE (cache dir, default ~/.cache/kldm-ci), KLDM_CI_CUDA=off (skip),
#      KLDM_CUDA_ARCHITECTURES (default "80;90").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [[ "${KLDM_CI_CUDA:-on}" == "off" ]]; then
  echo "cuda-check: skipped (KLDM_CI_CUDA=off)"; exit 0
fi
nvcc_bin=$(command -v nvcc || true)
if [[ -z "$nvcc_bin" ]]; then
  echo "cuda-check: FAILED: nvcc not found on PATH" >&2; exit 1
fi
cache=${KLDM_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kldm-ci}
mkdir -p "$cache"
free_kb=$(df -Pk "$cache" | awk 'NR==2 {print $4}')
if (( free_kb < 8000000 )); then
  echo "cuda-check: FAILED: less than 8 GB free in $cache for the CUDA venv" >&2; exit 1
fi

py=${PYTHON:-python3}
key=$( (cat ci/requirements-cuda.txt; "$py" -c 'import sys,platform;print(sys.version_info[:2],platform.machine())') \
       | sha256sum | cut -c1-16)
venv="$cache/venv-cuda-$key"
# Build the venv once per key, under a lock, marked complete by a stamp file.
(
  flock 9
  if [[ ! -f "$venv/.complete" ]]; then
    echo "cuda-check: creating $venv (CUDA torch, ~2 min)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q -r ci/requirements-cuda.txt 2>&1 | grep -v "^WARNING: Location" || true
    "$venv/bin/python" -c "import torch; assert torch.version.cuda, 'not a CUDA torch'" 
    touch "$venv/.complete"
  fi
) 9>"$cache/.lock-$key"
touch "$venv/.complete"
# Venvs of other keys unused for 14 days are deleted (5.6 GB each).
find "$cache" -maxdepth 1 -name 'venv-cuda-*' ! -name "venv-cuda-$key" -mtime +14 -exec rm -rf {} + || true

toolkit=$("$nvcc_bin" --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1)
toolkit=${toolkit:-$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")}
export CUDA_PATH="$toolkit" CUDA_HOME="$toolkit" CUDACXX="$toolkit/bin/nvcc"
export KLDM_WITH_CUDA=ON KLDM_CUDA_ARCHITECTURES="${KLDM_CUDA_ARCHITECTURES:-80;90}"

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
strict=OFF
if [[ $("$venv/bin/python" -c 'import sysconfig;print(sysconfig.get_config_var("Py_ENABLE_SHARED"))') == 1 ]]; then
  strict=ON
fi
echo "cuda-check: building with $("$venv/bin/python" -c 'import torch;print(torch.__version__)'), nvcc $toolkit, archs $KLDM_CUDA_ARCHITECTURES, strict link $strict"
start=$(date +%s)
"$venv/bin/pip" install -q --no-build-isolation --no-deps --target "$site" \
  -C build-dir="$repo/build/cuda-check" -C cmake.define.KLDM_STRICT_LINK=$strict "$repo" \
  2>&1 | grep -v "^WARNING: Location" || true
[[ -f "$site/kspace_ldm/lib/libkldm.so" ]] || { echo "cuda-check: FAILED: build produced no libkldm.so" >&2; exit 1; }
echo "cuda-check: build took $(( $(date +%s) - start )) s"

export PYTHONPATH="$site"
"$venv/bin/python" ci/check_cuda_ext.py "$site/kspace_ldm/lib/libkldm.so"
# The CPU tests of the ops, run against this (CUDA) build; CUDA-device tests skip without a GPU.
"$venv/bin/python" -c "import pytest" 2>/dev/null || "$venv/bin/pip" install -q pytest 2>&1 | grep -v "^WARNING: Location" || true
cd "$site" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$repo" \
  -c "$repo/pyproject.toml" "$repo"/tests/test_ops_*.py
