#!/usr/bin/env bash
# Does torch's own AOTInductor CUDA package load when inductor compiles it with the system g++
# instead of $CXX (on the 2026-11 GPU image CXX=/opt/gcc/bin/g++ and every CUDA package load
# segfaulted, torch alone, without kspace_ldm)?
set -uo pipefail
py=${PYTHON:-python3}
cd /tmp
ls -la /usr/bin/g++* /usr/bin/gcc* 2>&1 | head -5
/opt/gcc/bin/g++ --version 2>&1 | head -1; /usr/bin/g++ --version 2>&1 | head -1
"$py" -c "import torch; print(torch.__version__, torch._C._GLIBCXX_USE_CXX11_ABI)"
cat > /tmp/probe2.py <<'PY'
import faulthandler, sys, zipfile, subprocess
faulthandler.enable()
import torch
tag, mode = sys.argv[1], sys.argv[2]
path = f"/tmp/probe_{tag}.pt2"
if mode == "compile":
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.SiLU()).cuda()
    ep = torch.export.export(m, (torch.randn(1, 2, 16, 16, device="cuda"),))
    torch._inductor.aoti_compile_and_package(ep, package_path=path)
    z = zipfile.ZipFile(path)
    so = [n for n in z.namelist() if n.endswith(".so")][0]
    z.extract(so, f"/tmp/x_{tag}")
    f = f"/tmp/x_{tag}/{so}"
    print(subprocess.run(f"ldd {f} | grep -E 'stdc|gcc_s|cudart'; nm -D --defined-only {f} | grep -c ' __cxa_'; readelf -p .comment {f} | grep -i gcc | head -2", shell=True, capture_output=True, text=True).stdout, flush=True)
else:
    r = torch._inductor.aoti_load_package(path)
    print(tag, "loaded; ran OK", r(torch.randn(1, 2, 16, 16, device="cuda")).shape, flush=True)
PY
for pair in "sys:/usr/bin/g++" "env:${CXX:-g++}"; do
  tag=${pair%%:*}; cxx=${pair#*:}
  echo "== CXX=$cxx"
  CXX=$cxx timeout 100 "$py" /tmp/probe2.py $tag compile 2>&1 | grep -v "Warning\|warn\|cls.__new__"
  CXX=$cxx timeout 40 "$py" /tmp/probe2.py $tag load 2>&1 | grep -E "loaded|Segmentation|Error" | head -3
done
