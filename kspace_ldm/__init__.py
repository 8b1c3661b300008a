"""kspace-ldm: accelerated MRI reconstruction with latent diffusion directly in k-space.

Importing the package is cheap; the compiled ops load on first use of :mod:`kspace_ldm.ops`.
"""

__version__ = "0.1.0"


def cmake_prefix_path() -> str:
    """Directory to put on ``CMAKE_PREFIX_PATH`` for ``find_package(KspaceLDM)`` (C++ consumers).

    Mirrors ``torch.utils.cmake_prefix_path``; torch's own prefix is needed beside it.
    """
    from kspace_ldm.ops import build_info

    return build_info()["cmake_prefix_path"]
