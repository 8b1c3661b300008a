"""Helpers shared by the test files (conftest.py keeps only fixtures and hooks).

Seeds come from a CRC-32 of the key's ``repr``, never from Python's ``hash()``, which is salted per
process for strings: a failing case seeded here draws the same numbers in every run and can be
replayed.
"""

from __future__ import annotations

import subprocess
import zlib

import pytest
import torch


def devices() -> list:
    """CPU always; CUDA as a parameter that skips when no GPU is present."""
    return [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ]


def seed_of(*key) -> int:
    """A stable 32-bit seed for a key (e.g. a parametrisation: shapes, dtypes, names).

    The key parts' ``repr`` must be stable across processes (ints, strings, tuples, torch dtypes).
    """
    return zlib.crc32(repr(key).encode())


def seeded(*key) -> torch.Generator:
    """A fresh CPU generator seeded from ``key``: a different, reproducible stream per case."""
    return torch.Generator().manual_seed(seed_of(*key))


def randn(shape, dtype, gen: torch.Generator, device="cpu") -> torch.Tensor:
    """Standard normal samples drawn on the CPU (same values on every device), then moved."""
    return torch.randn(shape, dtype=dtype, generator=gen).to(device)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (guarded against an all-zero ``want``)."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def recon_tool() -> str:
    """The built kldm-recon executable; skips the test when it was not built (no HDF5 C library
    at build time)."""
    from kspace_ldm.ops import build_info

    tool = build_info()["recon_tool"]
    if tool is None:
        pytest.skip("kldm-recon was not built (no HDF5 C library at build time)")
    return tool


def run_recon_tool(src, out, *args, env=None):
    """Run ``kldm-recon SRC OUT ARGS...``, assert it succeeded and return ``(reconstruction
    [S, H, W] float32, the file's attributes)`` of ``out``."""
    import h5py

    cmd = [recon_tool(), str(src), str(out), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as f:
        return f["reconstruction"][()], dict(f.attrs)
