#!/usr/bin/env bash
# Download, here (with registry access), the Python wheels the GPU machine's image lacks, into
# .whl/ (git-ignored), for scripts/gpu_check.sh. The GPU image has Python 3.12 and torch 2.11.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for pkg in "diffusers==0.42.1" "importlib_metadata" "zipp"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg" 2>&1 | { grep -v "^WARNING: Location '" || true; }
done
ls -la .whl
