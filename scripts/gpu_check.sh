#!/usr/bin/env bash
# The device check, run ON a lent GPU machine (torch with CUDA preinstalled, no network):
# build kspace-ldm with CUDA kernels against that torch, run the op tests (CPU and CUDA
# parametrisations, so CPU/CUDA parity runs) and the CUDA sampler parity test, and the GPU
# benchmarks (ops, first-stage training, C++ vs Python sampler on the reference-size models at
# 320x320). Results go to $OUT (the device tool's output folder) or build/gpu_check.
#
# Prepare here first (downloads the wheels the GPU image lacks, e.g. diffusers, into .whl/):
#   scripts/gpu_wheels.sh
# Then, with the device tool:  run(command="scripts/gpu_check.sh", carry=[".whl"])
# KLDM_GPU_STAGES selects stages (default: all): build samplerdemo sampler samplertest optests opbench
# trainbench
# (run in that order; every stage after the build has a time limit so one cannot eat the budget).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=${OUT:-$repo/build/gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
stages=" ${KLDM_GPU_STAGES:-build samplerdemo sampler samplertest optests opbench trainbench} "
want() { [[ "$stages" == *" $1 "* ]]; }
t0=$SECONDS
status=0

if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/kldm-deps .whl/*.whl
  export PYTHONPATH=/tmp/kldm-deps${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
arch=$("$py" -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')")

# Every library in the process must use libtorch's C++ runtime (libstdc++.so.6). On the 2026-11 GPU
# image CXX=/opt/gcc/bin/g++ is a wrapper linking libstdc++ statically: AOTInductor packages built
# with it crash any process that loads them (torch's own aoti_load_package included; kldm export
# refuses such a compiler), and libkldm built with it carries a second runtime. Use the compiler
# kspace_ldm.toolchain names instead, for the build and for the packages inductor compiles.
fix=$(cd /tmp && PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -c "from kspace_ldm.toolchain import compiler_fix; print(compiler_fix() or '')")
if [[ -n "$fix" ]]; then
  echo "C++ compiler: CXX=$fix (was ${CXX:-unset}: static libstdc++)"
  export CXX=$fix
  [[ -x /usr/bin/gcc ]] && export CC=/usr/bin/gcc
fi

echo "== build (CUDA kernels for sm_$arch) =="
KLDM_WITH_CUDA=ON KLDM_CUDA_ARCHITECTURES="${KLDM_CUDA_ARCHITECTURES:-$arch}" \
  "$py" -m pip install -q --no-build-isolation --no-deps --no-cache-dir --target /tmp/kldm-pkg \
  -C build-dir="$repo/build/gpu" "$repo"
export PYTHONPATH=/tmp/kldm-pkg:$PYTHONPATH
echo "build done at $((SECONDS - t0)) s"
# libkldm must link the shared C++ runtime (a static one crashed every exception on a GPU image)
lib=/tmp/kldm-pkg/kspace_ldm/lib/libkldm.so
ldd "$lib" | grep -E "stdc|gcc_s|gomp|cudart" || true
if ! ldd "$lib" | grep -q "libstdc++.so.6" || nm -D --defined-only "$lib" | grep -q " __cxa_"; then
  echo "ERROR: $lib carries its own (static) libstdc++: see CMakeLists.txt"
  env | grep -iE "FLAGS|^CC=|^CXX=" || true
  cat "$repo/build/gpu/CMakeFiles/kldm.dir/link.txt" || true
else
  echo "libkldm: shared C++ runtime (libstdc++.so.6, no __cxa_* defined)"
fi

# Run from outside the checkout so `kspace_ldm` is the built package, not the source folder.
cd /tmp
"$py" -m kspace_ldm.cli info | tee "$out/info.txt"
pytest_args=(-q -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml")
# pytest-xdist (in the GPU image): a crashing test fails alone instead of ending the run.
"$py" -c "import xdist" 2>/dev/null && xdist=(-n 8) || xdist=()

# sampler_bench NAME RUN_DIR TOLERANCE: export RUN_DIR for CUDA at 320x320 (cgs needs no decoder VJP:
# --no-guidance skips the slowest package to compile) and time Python vs C++ (with and without CUDA
# graphs) at 50 and 5 steps into $out/bench_sampler_cuda_NAME_STEPS.json.
sampler_bench() {
  local name=$1 run=$2 tol=$3 rc=0
  timeout "${KLDM_EXPORT_TIMEOUT:-300}" \
    "$py" -m kspace_ldm.cli export "$run" --out "/tmp/exp_$name" --device cuda --size 320x320 \
    --tolerance "$tol" --no-guidance || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "export of $name failed (rc $rc): no sampler benchmark"
    status=$rc
    return
  fi
  for steps in 50 5; do
    timeout "${KLDM_BENCH_TIMEOUT:-240}" "$py" -m kspace_ldm.cli bench sampler \
      --model "/tmp/exp_$name" --steps $steps --repeats 3 \
      --json "$out/bench_sampler_cuda_${name}_${steps}.json" || status=$?
  done
}
if want samplerdemo; then
  # The bundled demo model (small networks: quick to compile; shows the loop's own cost and what
  # CUDA graphs save) before the slow reference-size export below.
  echo "== sampler benchmark: bundled demo model, 320x320, at $((SECONDS - t0)) s =="
  # 1e-4: the export prints each package's error; the exactness check is the samplertest stage
  # (1e-5), and a benchmark must not be lost to a ~1e-5 miss on an untested device.
  sampler_bench demo "$repo/kspace_ldm/pretrained/demo/ldm" 1e-4
fi
if want sampler; then
  echo "== sampler benchmark: reference-size models (untrained), 320x320, at $((SECONDS - t0)) s =="
  "$py" -m kspace_ldm.cli bench untrained-run --ae-config "$repo/configs/ae_kl_4.yaml" \
    --ldm-config "$repo/configs/ldm_ref.yaml" --out /tmp/refrun --size 320x320
  # TF32 is off while compiling and checking; a reference-size network in float32 accumulates
  # ~1e-6 to 1e-5 relative error (7e-6 measured for the CPU decoder), well inside 1e-4.
  sampler_bench ref /tmp/refrun/ldm 1e-4
fi
if want samplertest; then
  echo "== C++ sampler parity on CUDA at $((SECONDS - t0)) s =="
  timeout "${KLDM_SAMPLERTEST_TIMEOUT:-240}" \
    "$py" -m pytest "${pytest_args[@]}" -m cuda "$repo/tests/test_export.py" \
    --junitxml "$out/sampler_tests.xml" || status=$?
fi
if want optests; then
  echo "== op tests (CPU + CUDA parametrisations) at $((SECONDS - t0)) s =="
  timeout "${KLDM_OPTESTS_TIMEOUT:-300}" \
    "$py" -m pytest "${pytest_args[@]}" "${xdist[@]}" "$repo"/tests/test_ops_*.py \
    --junitxml "$out/op_tests.xml" ${KLDM_PYTEST_ARGS:-} || status=$?
fi
if want opbench; then
  echo "== op benchmarks at $((SECONDS - t0)) s =="
  "$py" -m kspace_ldm.cli bench ops --device cuda --json "$out/bench_ops_cuda.json" || status=$?
fi
if want trainbench; then
  # First-stage training throughput at the fastMRI single-coil crop (320x320), reference configs.
  "$py" -m kspace_ldm.cli bench train --device cuda --size 1x320x320 --batch-size 4 --steps 5 \
    --config "$repo/configs/ae_kl_4.yaml" --config "$repo/configs/sae_kl_4.yaml" \
    --config "$repo/configs/unet_wn.yaml" --json "$out/bench_train_cuda.json" || status=$?
fi
echo "gpu_check finished in $((SECONDS - t0)) s (status $status)"
exit "$status"
