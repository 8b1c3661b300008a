"""The installed CMake package: a C++ program finds KspaceLDM, links libkldm, runs sans Python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kspace_ldm

ROOT = Path(__file__).resolve().parents[1]


def build_example(tmp_path: Path) -> Path:
    """Build examples/cpp against the installed package; returns the executable."""
    cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or shutil.which("cmake")
    assert cmake, "cmake not found"
    prefix = f"{kspace_ldm.cmake_prefix_path()};{torch.utils.cmake_prefix_path}"
    build = tmp_path / "build"
    gen = ["-G", "Ninja"] if shutil.which("ninja", path=os.path.dirname(sys.executable)) else []
    subprocess.run(
        [cmake, "-S", ROOT / "examples" / "cpp", "-B", build, *gen,
         f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    proc = subprocess.run([cmake, "--build", build], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return build / "kldm_example"


def write_cfl(name: Path, x: np.ndarray) -> None:
    """BART .hdr/.cfl: dims first-fastest, i.e. the reversed shape of a C-order array."""
    name.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, x.shape[::-1])) + "\n")
    np.ascontiguousarray(x, dtype=np.complex64).tofile(name.with_suffix(".cfl"))


def read_cfl(name: Path) -> np.ndarray:
    dims = [int(d) for d in name.with_suffix(".hdr").read_text().splitlines()[1].split()]
    return np.fromfile(name.with_suffix(".cfl"), dtype=np.complex64).reshape(dims[::-1])


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++")
def test_example_consumer_builds_and_runs(tmp_path):
    """The consumer links KspaceLDM::kldm, runs the ops, and reconstructs a k-space file with
    kldm::Sampler equal to the Python binding's result -- with a bare environment (no Python,
    no LD_LIBRARY_PATH: RPATHs must resolve libtorch)."""
    exe = build_example(tmp_path)
    bare = {"PATH": "/usr/bin:/bin"}
    run = subprocess.run([exe], capture_output=True, text=True, env=bare)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "measured lines kept: 1, others untouched: 1" in run.stdout
    assert f"libkldm {kspace_ldm.__version__}" in run.stdout

    from test_export import H, W, mask_w, phantom, tiny

    from kspace_ldm.export import export_sampler
    from kspace_ldm.sampling.cgs import SamplerOptions
    from kspace_ldm.sampling.cpp import CppSampler

    export = tmp_path / "export"
    export_sampler(tiny(1, "rms", "none", False, 4), export, (H, W), log=lambda *_: None)
    m = mask_w()
    y = phantom(2, 1) * m
    write_cfl(tmp_path / "k", y.numpy())
    write_cfl(tmp_path / "m", m.numpy().astype(np.complex64))
    args = [exe, export, tmp_path / "k", tmp_path / "m", tmp_path / "out"]
    run = subprocess.run(args, capture_output=True, text=True, env=bare)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "measured samples exact: 1" in run.stdout
    got = read_cfl(tmp_path / "out")
    want, image = CppSampler(export).reconstruct(y, m, SamplerOptions())
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(read_cfl(tmp_path / "out_image").real, image.numpy())
    bad = subprocess.run([exe, tmp_path / "nowhere", *args[2:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "export directory does not exist" in bad.stderr


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils nm")
def test_native_library_shares_the_process_cxx_runtime():
    """libkldm must not carry its own C++ runtime: a static libstdc++ exports __cxa_* and breaks
    every exception that crosses into libtorch (it crashed the process on a GPU image)."""
    from kspace_ldm.ops import build_info

    lib = build_info()["library"]
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", lib], capture_output=True, text=True, check=True
    ).stdout
    own_runtime = [s for s in syms.split() if s.startswith(("__cxa_", "_Unwind_", "__gxx_"))]
    assert not own_runtime, own_runtime[:5]
    needed = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    assert "libstdc++.so" in needed
