"""The installed CMake package: a C++ program finds KspaceLDM, links libkldm, runs sans Python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kspace_ldm

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++")
def test_example_consumer_builds_and_runs(tmp_path):
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
    # Run with a bare environment: no Python, no LD_LIBRARY_PATH (RPATHs must resolve libtorch).
    run = subprocess.run(
        [build / "kldm_example"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "measured lines kept: 1, others untouched: 1" in run.stdout
    assert f"libkldm {kspace_ldm.__version__}" in run.stdout
