#!/usr/bin/env bash
# The device check, run ON a lent GPU machine (torch with CUDA preinstalled, no network):
# build kspace-ldm with CUDA kernels against that torch, run every op test (CPU and CUDA
# parametrisations, so CPU/CUDA parity runs), and the GPU benchmarks. Results go to $OUT (the
# device tool's output folder) or build/gpu_check.
#
# Prepare here first (downloads the wheels the GPU image lacks, e.g. diffusers, into .whl/):
#   scripts/gpu_wheels.sh
# Then, with the device tool:  run(command="scripts/gpu_check.sh", carry=[".whl"])
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=${OUT:-$repo/build/gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
t0=$SECONDS

if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/kldm-deps .whl/*.whl
  export PYTHONPATH=/tmp/kldm-deps${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
arch=$("$py" -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')")

echo "== build (CUDA kernels for sm_$arch) =="
KLDM_WITH_CUDA=ON KLDM_CUDA_ARCHITECTURES="${KLDM_CUDA_ARCHITECTURES:-$arch}" \
  "$py" -m pip install -q --no-build-isolation --no-deps --no-cache-dir --target /tmp/kldm-pkg \
  -C build-dir="$repo/build/gpu" "$repo"
export PYTHONPATH=/tmp/kldm-pkg:$PYTHONPATH
echo "build done at $((SECONDS - t0)) s"

# Run from outside the checkout so `kspace_ldm` is the built package, not the source folder.
cd /tmp
"$py" -m kspace_ldm.cli info | tee "$out/info.txt"

echo "== op tests (CPU + CUDA parametrisations) =="
# pytest-xdist (in the GPU image): a crashing test fails alone instead of ending the run.
xdist=(); "$py" -c "import xdist" 2>/dev/null && xdist=(-n 8)
"$py" -m pytest -q -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml" "${xdist[@]}" \
  "$repo"/tests/test_ops_*.py --junitxml "$out/op_tests.xml" ${KLDM_PYTEST_ARGS:-} || status=$?

[ -n "${KLDM_SKIP_BENCH:-}" ] && exit "${status:-0}"
echo "== benchmarks =="
"$py" -m kspace_ldm.cli bench ops --device cuda --json "$out/bench_ops_cuda.json" || status=$?
# First-stage training throughput at the fastMRI single-coil crop (320x320), reference configs.
"$py" -m kspace_ldm.cli bench train --device cuda --size 1x320x320 --batch-size 4 --steps 5 \
  --config "$repo/configs/ae_kl_4.yaml" --config "$repo/configs/sae_kl_4.yaml" \
  --config "$repo/configs/unet_wn.yaml" --json "$out/bench_train_cuda.json" || status=$?
echo "gpu_check finished in $((SECONDS - t0)) s"
exit "${status:-0}"
