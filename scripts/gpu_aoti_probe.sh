#!/usr/bin/env bash
# Diagnose AOTInductor package loading on a device image (run with the device tool, after the
# gpu_check build stage has installed kspace-ldm into /tmp/kldm-pkg): does torch's own
# aoti_load_package crash without kspace_ldm loaded, with it, on CPU and CUDA; and what the
# compiled package's .so links. Native backtrace with gdb when it is there.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
cd /tmp
env | grep -iE "FLAGS|^CC=|^CXX=|^LD_|TORCHINDUCTOR" || true
command -v gdb || echo "no gdb"
cat > /tmp/probe.py <<'PY'
import faulthandler, os, sys
faulthandler.enable()
dev, imp, mode = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
if imp:
    import kspace_ldm.ops  # noqa: F401  (loads libkldm and _C)
import torch
path = f"/tmp/probe_{dev}.pt2"
if mode == "compile":
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.SiLU()).to(dev)
    ep = torch.export.export(m, (torch.randn(1, 2, 16, 16, device=dev),))
    torch._inductor.aoti_compile_and_package(ep, package_path=path)
    print("compiled", path, flush=True)
else:
    print("loading", path, "with kspace_ldm" if imp else "torch only", flush=True)
    r = torch._inductor.aoti_load_package(path)
    print("loaded", flush=True)
    out = r(torch.randn(1, 2, 16, 16, device=dev))
    print("ran OK", out.shape, flush=True)
PY
for dev in cuda cpu; do
  echo "== compile $dev (torch only)"; timeout 120 "$py" /tmp/probe.py $dev 0 compile 2>&1 | tail -3
  so=$(cd /tmp && rm -rf /tmp/px && mkdir /tmp/px && cd /tmp/px && unzip -q -o /tmp/probe_$dev.pt2 && find . -name "*.so" | head -1)
  echo "package .so: $so"; ldd "/tmp/px/$so" | grep -E "stdc|gcc|torch|cuda" ; nm -D --defined-only "/tmp/px/$so" | grep -c " __cxa_" || true
  for imp in 0 1; do
    echo "== load $dev import_kldm=$imp"; timeout 60 "$py" /tmp/probe.py $dev $imp load 2>&1 | grep -v "^  File\|^Thread\|^$" | tail -6
  done
done
if command -v gdb >/dev/null; then
  echo "== gdb: load cuda torch only"
  timeout 90 gdb -q -batch -ex run -ex bt --args "$py" /tmp/probe.py cuda 0 load 2>&1 | grep -E "^#|signal|SIG" | head -30
fi
