"""The C++ compiler AOTInductor builds export packages with, and whether its output can load.

A package's shared library must use the process's one C++ runtime (``libstdc++.so.6``, shared
with libtorch). A compiler that links libstdc++ statically -- seen on a GPU image whose
``CXX=/opt/gcc/bin/g++`` is a wrapper doing exactly that -- produces packages that define their own
``__cxa_*`` and crash the process (segmentation fault) as soon as they are loaded, torch's own
``aoti_load_package`` included (measured on an H100 image, 2026-11-26: the same tiny package built
with ``/usr/bin/g++`` loaded and ran). ``kldm export`` checks the compiler in about a second before
spending minutes compiling, and refuses with a message naming the fix.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "aoti_compiler",
    "check_aoti_compiler",
    "compiler_fix",
    "shared_runtime_compiler",
    "static_cxx_runtime",
]

_PROBE = '#include <stdexcept>\nvoid kldm_probe(int x) { if (x) throw std::runtime_error("x"); }\n'


def aoti_compiler() -> str:
    """The C++ compiler torch's inductor uses (``$CXX`` or ``g++``), resolved to a path."""
    from torch._inductor import cpp_builder

    cxx = cpp_builder.get_cpp_compiler()
    return shutil.which(cxx) or cxx


@functools.lru_cache(maxsize=8)
def static_cxx_runtime(cxx: str) -> bool | None:
    """Whether a shared library built by ``cxx`` carries its own (static) libstdc++: it defines
    ``__cxa_*`` symbols. ``None`` when that cannot be told (no compiler or no ``nm``)."""
    nm = shutil.which("nm")
    if nm is None or shutil.which(cxx) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="kldm-cxx-") as d:
        src, lib = Path(d) / "probe.cpp", Path(d) / "probe.so"
        src.write_text(_PROBE)
        try:
            subprocess.run(
                [cxx, "-shared", "-fPIC", "-O0", str(src), "-o", str(lib)],
                check=True,
                capture_output=True,
                timeout=120,
            )
            syms = subprocess.run(
                [nm, "-D", "--defined-only", str(lib)],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    return any(line.split()[-1].startswith("__cxa_") for line in syms.splitlines() if line)


def shared_runtime_compiler(cxx: str) -> str | None:
    """A compiler other than ``cxx`` that links libstdc++ dynamically (``/usr/bin/g++``,
    ``clang++``, ``g++``/``c++`` on PATH, in that order), or ``None``."""
    candidates = ("/usr/bin/g++", "/usr/bin/clang++", shutil.which("g++"), shutil.which("c++"))
    for c in candidates:
        if c and Path(c).exists() and Path(c).resolve() != Path(cxx).resolve():
            if static_cxx_runtime(c) is False:
                return c
    return None


def compiler_fix() -> str | None:
    """The compiler to set as ``CXX`` when AOTInductor's own links libstdc++ statically, else
    ``None`` (also when no working one is found; :func:`check_aoti_compiler` then says so)."""
    cxx = aoti_compiler()
    return shared_runtime_compiler(cxx) if static_cxx_runtime(cxx) else None


def check_aoti_compiler() -> str | None:
    """``None`` if AOTInductor's compiler builds loadable packages (or it cannot be told), else a
    one-line message naming the compiler and a fix."""
    cxx = aoti_compiler()
    if not static_cxx_runtime(cxx):
        return None
    ok = shared_runtime_compiler(cxx)
    hint = f"set CXX={ok}" if ok else "set CXX to a compiler that links libstdc++.so.6"
    return (
        f"the C++ compiler torch builds packages with ({cxx}) links a static libstdc++; packages "
        f"built with it crash the process when loaded (torch's runtime is libstdc++.so.6): {hint}"
    )
