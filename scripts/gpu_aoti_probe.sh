#!/usr/bin/env bash
# Diagnose AOTInductor package loading on a machine (the lent GPU image, 2026-11-26): for the
# system compiler and $CXX, compile a one-layer package, show how its .so links the C++ runtime
# (a defined __cxa_* and no libstdc++.so.6 = a static copy), then load and run it in fresh
# processes with torch alone and with kspace_ldm loaded. On that image CXX=/opt/gcc/bin/g++ gave
# 22 __cxa_* and a segfault on load (torch alone too); /usr/bin/g++ loaded and ran.
#   scripts/gpu_aoti_probe.sh [cuda|cpu]     (kspace_ldm importable, e.g. after gpu_check's build)
# A load takes ~40 s there (CUDA start-up included), a compile ~100 s.
set -uo pipefail
dev=${1:-cuda}
py=${PYTHON:-python3}
cd /tmp
env | grep -iE "FLAGS|^CC=|^CXX=|^LD_" || true
cat > /tmp/kldm_aoti_probe.py <<'PY'
import faulthandler, subprocess, sys, zipfile
faulthandler.enable()
dev, tag, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "load-kldm":
    import kspace_ldm.ops  # noqa: F401  (loads libkldm and _C)
import torch
path = f"/tmp/kldm_probe_{tag}_{dev}.pt2"
if mode == "compile":
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.SiLU()).to(dev)
    ep = torch.export.export(m, (torch.randn(1, 2, 16, 16, device=dev),))
    torch._inductor.aoti_compile_and_package(ep, package_path=path)
    z = zipfile.ZipFile(path)
    so = next(n for n in z.namelist() if n.endswith(".so"))
    f = z.extract(so, f"/tmp/kldm_probe_{tag}_{dev}")
    cmd = f"ldd {f} | grep -E 'stdc|gcc_s|cudart'; echo __cxa defined: $(nm -D --defined-only {f} | grep -c ' __cxa_')"
    print(subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout, flush=True)
else:
    r = torch._inductor.aoti_load_package(path)
    print(tag, mode, "loaded and ran:", tuple(r(torch.randn(1, 2, 16, 16, device=dev)).shape))
PY
for pair in "sys:/usr/bin/g++" "env:${CXX:-g++}"; do
  tag=${pair%%:*}; cxx=${pair#*:}
  echo "== CXX=$cxx ($($cxx --version 2>&1 | head -1))"
  rm -rf "/tmp/kldm_probe_${tag}_$dev.pt2" "/tmp/kldm_probe_${tag}_$dev"  # never load a stale one
  CXX=$cxx timeout 150 "$py" /tmp/kldm_aoti_probe.py "$dev" "$tag" compile 2>&1 | grep -v -i "warn\|cls.__new__"
  for mode in load load-kldm; do
    CXX=$cxx timeout 90 "$py" /tmp/kldm_aoti_probe.py "$dev" "$tag" "$mode" 2>&1 \
      | grep -E "loaded|Fatal|Error" | head -2
    echo "   ($mode exit ${PIPESTATUS[0]})"
  done
done
