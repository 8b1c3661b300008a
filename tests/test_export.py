"""Deployment: kldm export (AOTInductor packages + manifest), the C++ sampler kldm::Sampler against
the Python sampler (golden parity), kldm recon --backend cpp, the kldm-recon executable, bad input.

Two exports of untrained tiny models are made once per module (compiling is the slow part): a
single-coil first stage with ``standardize`` normalisation at an odd width (static batch 1), and
a two-coil posterior-sampling one with ``rms`` normalisation and log companding (dynamic batch).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import recon_tool, run_recon_tool
from tiny_models import tiny_sampler

from kspace_ldm.errors import InputError
from kspace_ldm.export import (
    EXPORT_RTOL,
    PACKAGES,
    compiled_layout,
    export_sampler,
    load_manifest,
    sampler_networks,
)
from kspace_ldm.sampling.cgs import CGS_DEFAULTS, SamplerOptions
from kspace_ldm.sampling.cpp import CppSampler

# Python vs C++ sampler on the same packages' source networks (acceptance criterion of the C++
# sampler: rel. error < 1e-4). Measured worst
# case on the CPU: 1.5e-5 (cgs on the untrained standardize model, where the refit amplifies the
# ~5e-7 network differences); 2e-6 for cgs-ref.
PARITY_RTOL = 1e-4
H, W = 24, 19  # odd width: the first stage pads to 24x20 and unpads


def tiny(coils: int, mode: str, weighting: str, sample_posterior: bool, seed: int):
    return tiny_sampler(coils, seed, mode, weighting, sample_posterior, shift=0.01)


def phantom(batch: int, coils: int, seed: int = 0) -> torch.Tensor:
    from kspace_ldm.physics.fft import fft2c

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    disc = ((yy / 0.7) ** 2 + (xx / 0.5) ** 2 < 1).float()
    img = disc[None, None] * (1 + 0.1 * torch.randn(batch, coils, H, W, generator=g))
    return fft2c(img.to(torch.complex64)) * 1e-3


def mask_w(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(W, generator=g) < 0.3
    m[W // 2 - 2 : W // 2 + 2] = True
    return m


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    s = tiny(1, "standardize", "none", False, seed=0)
    out = tmp_path_factory.mktemp("exp") / "single"
    export_sampler(s, out, (H, W), batch=1, log=lambda *_: None)
    return s, out


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    s = tiny(2, "rms", "log", True, seed=1)
    out = tmp_path_factory.mktemp("exp") / "multi"
    export_sampler(s, out, (H, W), batch=2, dynamic_batch=True, log=lambda *_: None)
    return s, out


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def copy_export(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------
# The manifest
# ------------------------------------------------------------------------------------------------
def test_manifest_records_shapes_hashes_and_sampler_config(single):
    _, out = single
    m = load_manifest(out)
    assert (m["coils"], m["height"], m["width"]) == (1, H, W)
    assert m["latent_shape"] == [4, H // 2, 20 // 2]  # padded to 24x20, f = 2
    assert m["torch_version"] == torch.__version__.split("+")[0]
    assert m["normalization"]["mode"] == "standardize"
    assert m["scale_factor"] == pytest.approx(0.8)
    assert m["sampler_defaults"]["cgs"] == CGS_DEFAULTS  # incl. start: cs-wavelet
    assert m["sampler_defaults"]["cs_start"] == {
        "lam": 0.001,
        "lam_multicoil": 0.005,
        "iterations": 200,
    }
    assert len(m["scheduler"]["alphas_cumprod"]) == 1000
    assert m["scheduler"]["ddpm_step"]["noise_std"][0] == 0.0
    for name in PACKAGES:
        p = m["packages"][name]
        assert p["sha256"] == hashlib.sha256((out / p["file"]).read_bytes()).hexdigest()
        assert p["max_rel_err_vs_eager"] < EXPORT_RTOL  # exported == eager (float32, < 1e-5)
    enc = m["packages"]["encoder"]
    assert enc["inputs"][0] == {"name": "x", "shape": [1, 2, H, W], "dtype": "float32"}
    assert [o["name"] for o in enc["outputs"]] == ["mean", "std"]


def test_dynamic_batch_manifest(multi):
    m = load_manifest(multi[1])
    assert m["dynamic_batch"] is True
    assert m["packages"]["denoiser"]["inputs"][0]["shape"][0] == -1
    lo, hi = m["packages"]["denoiser"]["batch_range"]
    assert lo <= 2 <= hi
    assert m["packages"]["decoder_vjp"]["batch_range"] == [1, 1]


@torch.no_grad()
def test_cpu_packages_compile_channels_last_behind_an_nchw_interface():
    # What kldm export compiles on the CPU: channels-last weights inside, NCHW-contiguous tensors
    # at the interface (kldm::Sampler passes contiguous tensors and reads outputs as NCHW), the
    # same values as the eager network; on CUDA the eager module itself.
    s = tiny(2, "rms", "log", True, seed=1)
    for name, (module, args) in sampler_networks(s, (H, W), batch=2).items():
        wrapped = compiled_layout(module, "cpu")
        convs = [m for m in wrapped.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(
            c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
        ), name
        assert all(
            c.weight.is_contiguous() for c in module.modules() if isinstance(c, torch.nn.Conv2d)
        ), f"{name}: the eager network must stay untouched"
        got, ref = wrapped(*args), module(*args)
        got = (got,) if isinstance(got, torch.Tensor) else got
        ref = (ref,) if isinstance(ref, torch.Tensor) else ref
        for g, r in zip(got, ref, strict=True):
            assert g.is_contiguous() and g.shape == r.shape, name
            assert rel(g, r) < EXPORT_RTOL, name
        assert compiled_layout(module, "cuda") is module


def test_sha256_matches_hashlib(tmp_path):
    from kspace_ldm import _C

    rng = np.random.default_rng(0)
    for n in (0, 1, 55, 56, 63, 64, 65, 1000, 3 << 20):
        f = tmp_path / f"b{n}"
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        f.write_bytes(data)
        assert _C.sha256_file(str(f)) == hashlib.sha256(data).hexdigest(), n


# ------------------------------------------------------------------------------------------------
# Golden parity: the same inputs, seed and models through Python and C++
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("cgs", SamplerOptions()),
        ("cgs", SamplerOptions(start="zero-filled")),
        ("cgs", SamplerOptions(steps=3, guidance=0.5, eta=0.5, samples=2)),
        ("cgs-ref", SamplerOptions(t0=60)),
    ],
    ids=["cgs", "cgs-zero-filled-start", "cgs-guided-eta-2samples", "cgs-ref"],
)
@pytest.mark.parametrize("which", ["single", "multi"])
def test_cpp_matches_python(which, name, options, request):
    s, out = request.getfixturevalue(which)
    coils = s.ae.in_channels // 2
    batch = 3  # static export of batch 1: chunked; dynamic (min 2): a padded last chunk
    y = phantom(batch, coils) * mask_w()
    m = mask_w()
    options = replace(options, sampler=name, seed=11)
    want = s.sample(y, m, options)
    cpp = CppSampler(out)
    cpp.profiling = True
    got, image = cpp.reconstruct(y, m, options)
    assert got.shape == want.shape and got.dtype == torch.complex64
    assert rel(got, want) < PARITY_RTOL, rel(got, want)
    assert image.shape == (batch, H, W) and image.dtype == torch.float32
    if name == "cgs":  # final hard data consistency: measured samples exact
        assert torch.equal(got[..., m], y[..., m])
    assert cpp.network_calls() > 0 and cpp.network_seconds() > 0
    assert not cpp.cuda_graphs and cpp.cuda_graph_status() == {"captured": 0, "error": ""}


def test_cpp_is_deterministic_and_seed_dependent(single):
    _, out = single
    cpp = CppSampler(out)
    y, m = phantom(1, 1) * mask_w(), mask_w()
    opts = SamplerOptions(eta=1.0, seed=5)
    a = cpp.sample(y, m, opts)
    assert torch.equal(a, cpp.sample(y, m, opts))
    assert not torch.equal(a, cpp.sample(y, m, replace(opts, seed=6)))


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error, never a crash
# ------------------------------------------------------------------------------------------------
def test_not_an_export_directory(tmp_path):
    with pytest.raises(InputError, match="not an export directory"):
        CppSampler(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        CppSampler(tmp_path / "missing")
    with pytest.raises(InputError, match="not an export directory"):
        load_manifest(tmp_path)


def test_tampered_package_is_refused(single, tmp_path):
    d = copy_export(single[1], tmp_path / "e")
    with open(d / "denoiser.pt2", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(InputError, match=r"denoiser\.pt2: sha256 does not match"):
        CppSampler(d)
    with pytest.raises(InputError, match="sha256 does not match"):
        load_manifest(d)


def test_other_torch_version_is_refused(single, tmp_path):
    d = copy_export(single[1], tmp_path / "e")
    m = json.loads((d / "manifest.json").read_text())
    m["torch_version"] = "2.0.0"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match=r"made by torch 2\.0\.0"):
        CppSampler(d)
    with pytest.raises(InputError, match=r"made by torch 2\.0\.0"):
        load_manifest(d)


def test_broken_manifest_is_refused(single, tmp_path):
    d = copy_export(single[1], tmp_path / "e")
    (d / "manifest.json").write_text('{"format": "kspace-ldm-export", ')
    with pytest.raises(InputError, match="invalid JSON"):
        CppSampler(d)
    m = json.loads((single[1] / "manifest.json").read_text())
    del m["scheduler"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="missing key 'scheduler'"):
        CppSampler(d)
    m = json.loads((single[1] / "manifest.json").read_text())
    del m["scheduler"]["ddpm_step"]["noise_std"]  # errors name the full key path
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match=r"missing key 'scheduler\.ddpm_step\.noise_std'"):
        CppSampler(d)
    m = json.loads((single[1] / "manifest.json").read_text())
    m["packages"]["denoiser"]["batch_range"] = "1"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match=r"packages\.denoiser\.batch_range must be an array"):
        CppSampler(d)


def test_start_option_and_exports_without_a_recorded_start(single, tmp_path):
    """The C++ sampler follows SamplerOptions.start (and the manifest's default); an export made
    before the manifest recorded the start (no cgs.start, no cs_start) keeps the zero-filled
    start, so it reproduces what it gave before. A bad start is a one-line error."""
    s, out = single
    y, m = phantom(2, 1) * mask_w(), mask_w()
    cpp = CppSampler(out)
    zf = replace(SamplerOptions(), start="zero-filled", seed=3)
    want_zf = s.sample(y, m, zf)
    got_zf = cpp.sample(y, m, zf)
    assert rel(got_zf, want_zf) < PARITY_RTOL
    default = cpp.sample(y, m, SamplerOptions(seed=3))
    assert rel(default, got_zf) > 1e-3  # the default (CS start) is not the zero-filled start
    old = copy_export(out, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["sampler_defaults"]["cgs"]["start"], manifest["sampler_defaults"]["cs_start"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert torch.equal(CppSampler(old).sample(y, m, SamplerOptions(seed=3)), got_zf)
    bad = SamplerOptions(seed=3)
    object.__setattr__(bad, "start", "cs-tv")  # past the Python check: the C++ one answers
    with pytest.raises(InputError, match="unknown start 'cs-tv'"):
        cpp.sample(y, m, bad)


def test_bad_kspace_shape_device_and_values(single):
    cpp = CppSampler(single[1])
    y, m = phantom(1, 1) * mask_w(), mask_w()
    with pytest.raises(InputError, match=r"does not match the export \(\[B, 1, 24, 19\]\)"):
        z = torch.zeros(1, 1, 24, 20, dtype=torch.complex64)
        cpp.sample(z, torch.ones(20), SamplerOptions())
    with pytest.raises(InputError, match="complex"):
        cpp.sample(y.real, m, SamplerOptions())
    bad = y.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN or Inf"):
        cpp.sample(bad, m, SamplerOptions())
    with pytest.raises(InputError, match="mask: shape"):
        cpp.sample(y, torch.ones(7, dtype=torch.bool), SamplerOptions())
    with pytest.raises(InputError, match="unknown sampler"):
        cpp.sample(y, m, SamplerOptions(sampler="ddpm"))
    with pytest.raises(InputError, match="t0"):
        cpp.sample(y, m, SamplerOptions(t0=5000))
    with pytest.raises(InputError, match="exported for cpu, not cuda"):
        CppSampler(single[1], "cuda")


# ------------------------------------------------------------------------------------------------
# The kldm-recon executable and kldm recon --backend cpp on a fastMRI test-format file
# ------------------------------------------------------------------------------------------------
def _test_file(tmp_path: Path, coils: int) -> Path:
    from kspace_ldm.data.fastmri import write_fastmri_file
    from kspace_ldm.data.synth import synth_volume, write_challenge_test_file

    vol = synth_volume(3, coils=coils, shape=(H, W), recon_size=16, slices=3)
    full = write_fastmri_file(tmp_path / "full" / "vol.h5", vol.kspace, header=vol.header)
    return write_challenge_test_file(full, tmp_path / "in" / "vol.h5", mask_w().numpy(), 4, 4)


def test_compiler_with_static_libstdcxx_is_refused(tmp_path):
    # A compiler wrapper that links libstdc++ statically (as CXX=/opt/gcc/bin/g++ on a GPU image
    # did): its packages crash the process on load, so export refuses before compiling anything.
    from kspace_ldm import toolchain

    if shutil.which("g++") is None or shutil.which("nm") is None:
        pytest.skip("needs g++ and nm")
    wrapper = tmp_path / "gxx-static"
    wrapper.write_text('#!/bin/sh\nexec g++ "$@" -static-libstdc++\n')
    wrapper.chmod(0o755)
    assert toolchain.static_cxx_runtime(str(wrapper)) is True
    assert toolchain.static_cxx_runtime(shutil.which("g++")) is False
    s = tiny(1, "standardize", "none", False, seed=0)
    with (
        torch._inductor.config.patch({"cpp.cxx": (None, str(wrapper))}),
        pytest.raises(InputError, match=r"gxx-static\) links a static libstdc\+\+.*set CXX="),
    ):
        export_sampler(s, tmp_path / "e", (H, W), log=lambda *_: None)
    assert not (tmp_path / "e").exists()
    with torch._inductor.config.patch({"cpp.cxx": (None, str(wrapper))}):
        fix = toolchain.compiler_fix()  # what scripts/gpu_check.sh exports as CXX
    assert fix is not None and toolchain.static_cxx_runtime(fix) is False


def test_kldm_recon_executable_matches_both_backends(single, tmp_path):
    from click.testing import CliRunner

    from kspace_ldm.cli import main

    src = _test_file(tmp_path, 1)
    exe_out = tmp_path / "exe" / "vol.h5"
    exe, attrs = run_recon_tool(
        src, exe_out, "--model", single[1], "--batch-size", 2, env={"PATH": "/usr/bin:/bin"}
    )
    assert attrs["backend"] == "cpp"
    res = CliRunner().invoke(
        main,
        ["recon", str(src.parent), "--out", str(tmp_path / "cpp"), "--model", str(single[1]),
         "--backend", "cpp", "--batch-size", "2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "cpp" / "vol.h5") as f:
        cli = f["reconstruction"][()]
    assert exe.shape == (3, 16, 16) and exe.dtype == np.float32
    np.testing.assert_allclose(exe, cli, rtol=0, atol=1e-6 * np.abs(cli).max())
    # and the Python sampler on the same networks, batch by batch with the same seeds
    from kspace_ldm.recon import ReconOptions, reconstruct_file

    opts = ReconOptions(sampler="cgs", batch_size=2)
    reconstruct_file(src, tmp_path / "py", opts, sampler=single[0])
    with h5py.File(tmp_path / "py" / "vol.h5") as f:
        py = f["reconstruction"][()]
    assert np.linalg.norm(exe - py) / np.linalg.norm(py) < PARITY_RTOL


def test_kldm_recon_executable_bad_input(single, tmp_path):
    tool = recon_tool()
    src = _test_file(tmp_path, 1)

    def run(*args):
        p = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
        return p.returncode, p.stderr.strip()

    rc, err = run(src, tmp_path / "o.h5", "--model", tmp_path / "nowhere")
    assert rc == 2 and "export directory does not exist" in err and err.count("\n") == 0
    with h5py.File(src, "a") as f:
        del f["mask"]
    rc, err = run(src, tmp_path / "o.h5", "--model", single[1])
    assert rc == 2 and "missing HDF5 key 'mask'" in err
    assert not (tmp_path / "o.h5").exists()
    rc, err = run(src)
    assert rc == 2 and "need INPUT.h5 OUTPUT.h5" in err
    rc, err = run(src, tmp_path / "o.h5", "--model", single[1], "--steps", "x")
    assert rc == 2 and "not a number" in err
    rc, err = run(src, tmp_path / "o.h5", "--model", single[1], "--start", "cs-tv")
    assert rc == 2 and "--start must be cs-wavelet or zero-filled" in err and "\n" not in err
    nan = _test_file(tmp_path / "n", 1)
    with h5py.File(nan, "a") as f:
        k = f["kspace"][()]
        k[1, 2, 3] = np.nan
        f["kspace"][...] = k
    rc, err = run(nan, tmp_path / "o.h5", "--model", single[1])
    assert rc == 2 and "NaN or Inf" in err
    assert not (tmp_path / "o.h5").exists()


def test_kldm_recon_multicoil(multi, tmp_path):
    src = _test_file(tmp_path, 2)
    out = tmp_path / "o.h5"
    rec, _ = run_recon_tool(src, out, "--model", multi[1], "--sampler", "cgs-ref", "--t0", 30)
    assert rec.shape == (3, 16, 16) and np.isfinite(rec).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_export_matches_python_on_cuda(tmp_path):
    # One dynamic-batch export (compiling is the slow part on a GPU machine), CUDA graphs on and
    # off, guidance (the decoder-VJP package, static batch 1: chunked per slice), and two batch
    # sizes so each network is captured at two input shapes.
    s = tiny(1, "standardize", "none", False, seed=0)
    s.ae.cuda()
    s.ldm.unet.cuda()
    export_sampler(s, tmp_path / "e", (H, W), batch=1, dynamic_batch=True, log=lambda *_: None)
    cpp = CppSampler(tmp_path / "e", "cuda")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cases = [
        ("cgs", SamplerOptions()),
        ("cgs", SamplerOptions(steps=3, guidance=0.5)),
        ("cgs-ref", SamplerOptions(t0=60)),
    ]
    try:
        for graphs in (True, False):
            cpp.cuda_graphs = graphs
            for batch in (3, 2):
                y, m = (phantom(batch, 1) * mask_w()).cuda(), mask_w().cuda()
                for name, opts in cases:
                    opts = replace(opts, sampler=name, seed=3)
                    want = s.sample(y, m, opts)
                    got = cpp.sample(y, m, opts)
                    assert got.is_cuda
                    assert rel(got, want) < PARITY_RTOL, (graphs, batch, name, rel(got, want))
            if graphs:
                status = cpp.cuda_graph_status()
                # encoder, decoder, denoiser at batch 3 and 2, the VJP at batch 1
                assert status["error"] == "" and status["captured"] >= 7, status
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.slow
def test_bench_sampler_cli_records_both_backends(tmp_path):
    # The benchmark the GPU check runs (scripts/gpu_check.sh, stage sampler), on tiny untrained
    # networks: untrained run -> export without the VJP -> kldm bench sampler --json.
    from cli_runner import run

    root = Path(__file__).resolve().parents[1]
    run("bench", "untrained-run", "--ae-config", root / "configs/tiny_ae_kl.yaml",
        "--ldm-config", root / "configs/tiny_ldm.yaml", "--out", tmp_path / "r",
        "--size", "32x24")  # fmt: skip
    run("export", tmp_path / "r/ldm", "--out", tmp_path / "e", "--size", "32x24", "--no-guidance")
    out = run("bench", "sampler", "--model", tmp_path / "e", "--steps", "2", "--repeats", "1",
              "--json", tmp_path / "b.json").output  # fmt: skip
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["device_type"] == "cpu" and r["steps"] == 2 and r["size"] == [1, 32, 24]
    assert r["python_s_per_slice"] > 0 and r["cpp_s_per_slice"] > 0
    assert r["speedup"] == pytest.approx(r["python_s_per_slice"] / r["cpp_s_per_slice"])
    assert 0 < r["network_s_per_slice"] and 0 <= r["overhead_fraction"] < 1
    assert "cuda_graphs" not in r  # CPU: no graph columns
    assert "| cpp |" in out and "| python |" in out


def test_expect_sha256_pins_the_export_manifest(single, tmp_path):
    """``--expect-sha256`` (kldm recon --backend cpp, kldm-recon, kldm::Sampler): the pinned hash
    of manifest.json loads the export; any other hash is refused before anything is loaded."""
    from cli_runner import run

    from kspace_ldm.sampling.cpp import CppSampler

    good = hashlib.sha256((single[1] / "manifest.json").read_bytes()).hexdigest()
    bad = "0" * 64
    assert CppSampler(single[1], "cpu", expect_sha256=good).info["height"] == H
    src = _test_file(tmp_path, 1)
    common = ["recon", src.parent, "--model", single[1], "--backend", "cpp"]
    run(*common, "--out", tmp_path / "ok", "--expect-sha256", good)
    assert (tmp_path / "ok" / "vol.h5").is_file()
    res = run(*common, "--out", tmp_path / "no", "--expect-sha256", bad, ok=False)
    assert res.exit_code == 2 and "differs from the pinned --expect-sha256" in res.output
    assert not (tmp_path / "no" / "vol.h5").exists()
    tool = recon_tool()
    args = [tool, str(src), str(tmp_path / "exe.h5"), "--model", str(single[1])]
    proc = subprocess.run([*args, "--expect-sha256", good], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*args[:2], str(tmp_path / "exe2.h5"), *args[3:], "--expect-sha256",
                           bad], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "differs from the pinned" in proc.stderr
    assert not (tmp_path / "exe2.h5").exists()
