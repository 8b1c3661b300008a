"""Checks a CUDA build of kspace-ldm on a machine without a GPU (called by ci/cuda_check.sh).

The import is the link check (Python loads extensions with RTLD_NOW, so any unresolved symbol
fails here); then every kldm op must have a CUDA kernel registered, and the library must hold a
cubin for every requested architecture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import torch


def main(lib: str) -> int:
    import kspace_ldm.ops as ops

    info = ops.build_info()
    print(
        "cuda-check: build_info",
        {k: info[k] for k in ("version", "torch_version", "cuda", "cuda_archs")},
    )
    assert info["cuda"], "library was built without CUDA kernels"
    missing = [
        op for op in info["ops"] if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    ]
    assert not missing, f"ops without a CUDA kernel: {missing}"
    print(
        f"cuda-check: CUDA kernels registered for {len(info['ops'])} ops: {', '.join(info['ops'])}"
    )

    archs = os.environ.get("KLDM_CUDA_ARCHITECTURES", "80;90").split(";")
    cuobjdump = shutil.which("cuobjdump") or os.path.join(
        os.path.dirname(sys.executable), "cuobjdump"
    )
    if not os.path.exists(cuobjdump):
        import nvidia  # the nvidia-cuda-cuobjdump wheel

        for root in nvidia.__path__:
            for dirpath, _, files in os.walk(root):
                if "cuobjdump" in files:
                    cuobjdump = os.path.join(dirpath, "cuobjdump")
    out = subprocess.run([cuobjdump, "--list-elf", lib], capture_output=True, text=True, check=True)
    found = set(re.findall(r"\.sm_(\d+a?)\.cubin", out.stdout))
    want = {re.sub(r"-(real|virtual)$", "", a) for a in archs if not a.endswith("-virtual")}
    assert want <= found, f"cubins for sm_{sorted(want - found)} missing (found {sorted(found)})"
    print(f"cuda-check: cubins in libkldm: sm_{', sm_'.join(sorted(found))}")

    # The CPU path of this build gives the reference's answer.
    from kspace_ldm.ops import _reference

    p = torch.randn(2, 3, 9, 7, dtype=torch.complex64)
    q = torch.randn_like(p)
    m = torch.rand(7) > 0.5
    assert torch.equal(ops.dc_project(p, q, m), _reference.dc_project(p, q, m))
    if not torch.cuda.is_available():
        print("cuda-check: no GPU here: CUDA kernels compiled and linked, not run")
    print("cuda-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
