"""Loading of the native library and its build information."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch


@functools.cache
def load_library() -> Any:
    """Import :mod:`kspace_ldm._C` (which links ``libkldm`` and so registers the ``kldm`` ops).

    Raises ImportError with the fix when the extension is missing or was compiled against another
    torch release than the one imported (C++ ABI of torch changes between minor releases).
    """
    try:
        from kspace_ldm import _C
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "kspace_ldm's compiled extension is not available "
            f"({err}); install the package with `pip install --no-build-isolation .` "
            "in an environment that already has torch"
        ) from err
    built = _C.build_info()["torch_version"]
    running = torch.__version__.split("+")[0]
    if built.split(".")[:2] != running.split(".")[:2]:
        raise ImportError(
            f"kspace_ldm was compiled against torch {built} but torch {running} is imported; "
            "rebuild it with `pip install --no-build-isolation .` in this environment"
        )
    return _C


def build_info() -> dict[str, Any]:
    """What the native library was built with, plus where its CMake package and library live.

    Returns a dict with ``version``, ``torch_version`` (compiled against), ``cuda`` (bool: CUDA
    kernels compiled in), ``cuda_archs``, ``compiler``, ``build_date``, ``library`` (path of
    libkldm), ``cmake_prefix_path``, ``ops`` (registered op names) and ``recon_tool`` (the
    ``kldm-recon`` executable, ``None`` when built without HDF5), ``recon_ismrmrd`` (whether
    kldm-recon was built with libismrmrd: ISMRMRD input and ``--format ismrmrd``).
    """
    _C = load_library()
    info = dict(_C.build_info())
    pkg = Path(_C.__file__).resolve().parent
    libs = sorted((pkg / "lib").glob("libkldm.so*"))
    info["library"] = str(libs[0]) if libs else None
    info["cmake_prefix_path"] = str(pkg)
    info["cmake_config"] = str(pkg / "share" / "cmake" / "KspaceLDM")
    info["ops"] = sorted(_C.registered_ops())
    tool = pkg / "bin" / "kldm-recon"
    info["recon_tool"] = str(tool) if tool.is_file() else None
    features = pkg / "bin" / "kldm-recon.features"
    info["recon_ismrmrd"] = features.is_file() and "ismrmrd=ON" in features.read_text()
    return info
