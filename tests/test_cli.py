"""The ``kldm`` CLI end to end: info, data synth/inspect, recon, evaluate, bad input (the demo:
tests/test_demo.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run

from kspace_ldm.data.fastmri import FastMRIFile, read_reconstruction
from kspace_ldm.physics.transforms import zero_filled

SHAPE = "64x48"
RECON = 32


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    run(
        "data",
        "synth",
        out,
        "--val",
        2,
        "--test",
        1,
        "--shape",
        SHAPE,
        "--recon-size",
        RECON,
        "--slices",
        3,
        "--seed",
        5,
    )
    return out


def test_info_reports_build():
    res = run("info", "--json")
    info = json.loads(res.output)
    assert info["version"] and info["torch_version"].startswith("2.")
    assert info["cuda"] in (True, False)
    assert "kldm::dc_project" in info["ops"]
    assert (Path(info["cmake_config"]) / "KspaceLDMConfig.cmake").is_file()
    text = run("info").output
    assert "CUDA kernels" in text and "CMake package" in text


def test_console_script_runs():
    exe = Path(sys.executable).parent / "kldm"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert "kspace-ldm" in proc.stdout


def test_synth_and_inspect(synth_dir, tmp_path):
    files = sorted((synth_dir / "singlecoil_val").glob("*.h5"))
    assert len(files) == 2 and len(list((synth_dir / "singlecoil_test").glob("*.h5"))) == 1
    png = tmp_path / "p.png"
    out = run("data", "inspect", files[0], "--png", png).output
    assert "kspace" in out and "reconstruction_esc" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recon_zero_filled_and_evaluate(synth_dir, tmp_path):
    val = synth_dir / "singlecoil_val"
    out = tmp_path / "zf"
    res = run(
        "recon",
        val,
        "--out",
        out,
        "--sampler",
        "zero-filled",
        "--mask",
        "random",
        "--accel",
        "4",
        "--center-fraction",
        "0.08",
        "--png",
    )
    assert "2 volumes, 6 slices" in res.output
    for f in sorted(val.glob("*.h5")):
        rec = read_reconstruction(out / f.name)
        assert rec.shape == (3, RECON, RECON) and rec.dtype == np.float32
        assert (out / "png" / f"{f.stem}.png").is_file()
        # The CLI result is the zero-filled image of fastMRI's own mask for this file name.
        from fastmri.data.subsample import RandomMaskFunc

        with FastMRIFile(f) as fh:
            k = fh.read_volume_kspace()
        import torch

        m = RandomMaskFunc([0.08], [4])((1, 48, 1), seed=tuple(map(ord, f.name)))[0]
        want = zero_filled(torch.from_numpy(k) * m.flatten().bool(), crop=(RECON, RECON))
        np.testing.assert_array_equal(rec, want.numpy())

    jpath, cpath, mpath = tmp_path / "m.json", tmp_path / "m.csv", tmp_path / "m.md"
    res = run(
        "evaluate",
        "--pred",
        out,
        "--target",
        val,
        "--json",
        jpath,
        "--csv",
        cpath,
        "--markdown",
        mpath,
    )
    data = json.loads(jpath.read_text())
    assert "PSNR" in res.output or "psnr" in res.output
    assert cpath.read_text().count("\n") >= 3 and "|" in mpath.read_text()
    text = json.dumps(data)
    assert "psnr" in text and "ssim" in text and "nmse" in text


def test_recon_8x_worse_than_4x(synth_dir, tmp_path):
    val = synth_dir / "singlecoil_val"
    psnr = {}
    for acc, cf in ((4, 0.08), (8, 0.04)):
        out = tmp_path / f"r{acc}"
        run("recon", val, "--out", out, "--accel", acc, "--center-fraction", cf)
        run("evaluate", "--pred", out, "--target", val, "--json", tmp_path / f"{acc}.json")
        psnr[acc] = json.loads((tmp_path / f"{acc}.json").read_text())
    assert json.dumps(psnr[4]) != json.dumps(psnr[8])


def _one_line_error(result, needle: str):
    assert result.exit_code == 2, result.output
    # Progress bars may precede it; the error itself is one line, and nothing else is printed
    # (no traceback).
    errors = [ln for ln in result.output.splitlines() if ln.startswith("kldm: error: ")]
    assert len(errors) == 1, result.output
    assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert result.output.rstrip().endswith(errors[0])


def _copy_with(src: Path, dst: Path, edit) -> Path:
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k in a:
            a.copy(k, b)
        for k, v in a.attrs.items():
            b.attrs[k] = v
        edit(b)
    return dst


def test_recon_bad_inputs_exit_2_without_output(synth_dir, tmp_path):
    src = sorted((synth_dir / "singlecoil_val").glob("*.h5"))[0]
    bad = tmp_path / "bad"
    bad.mkdir()

    def drop_kspace(f):
        del f["kspace"]

    def nan_kspace(f):
        k = f["kspace"][()]
        k[1, 3, 4] = np.nan
        del f["kspace"]
        f["kspace"] = k

    def real_kspace(f):
        k = np.abs(f["kspace"][()]).astype(np.float32)
        del f["kspace"]
        f["kspace"] = k

    def bad_mask(f):
        f["mask"] = np.ones(50, dtype=bool)

    cases = {
        "nokey.h5": (drop_kspace, "missing HDF5 key 'kspace'"),
        "nan.h5": (nan_kspace, "NaN"),
        "real.h5": (real_kspace, "complex"),
        "mask.h5": (bad_mask, "mask"),
    }
    for name, (edit, needle) in cases.items():
        path = _copy_with(src, bad / name, edit)
        out = tmp_path / f"out_{name}"
        res = run("recon", path, "--out", out, ok=False)
        _one_line_error(res, needle)
        assert str(path) in res.output or name in res.output
        assert not (out / name).exists()
        assert not any(out.glob("*.tmp")) if out.exists() else True

    trunc = bad / "trunc.h5"
    trunc.write_bytes(src.read_bytes()[:2000])
    _one_line_error(run("recon", trunc, "--out", tmp_path / "o", ok=False), "trunc.h5")


def test_unknown_cli_values_exit_2(synth_dir, tmp_path):
    val = synth_dir / "singlecoil_val"
    assert run("recon", val, "--out", tmp_path / "o", "--mask", "nope", ok=False).exit_code == 2
    assert run("recon", val, "--out", tmp_path / "o", "--sampler", "cgs", ok=False).exit_code == 2
    res = run("recon", val, "--out", tmp_path / "o", "--accel", "x", ok=False)
    assert res.exit_code == 2
    res = run(
        "recon", val, "--out", tmp_path / "o", "--mask", "equispaced", "--accel", "4.5", ok=False
    )
    _one_line_error(res, "integer accelerations")


def test_evaluate_missing_prediction_exit_2(synth_dir, tmp_path):
    val = synth_dir / "singlecoil_val"
    out = tmp_path / "zf"
    run("recon", sorted(val.glob("*.h5"))[0], "--out", out)
    res = run("evaluate", "--pred", out, "--target", val, "--json", tmp_path / "m.json", ok=False)
    assert res.exit_code == 2
    assert not (tmp_path / "m.json").exists()


def test_multicoil_recon_and_evaluate(tmp_path):
    data = tmp_path / "mc"
    run("data", "synth", data, "--test", 1, "--coils", 4, "--shape", SHAPE, "--recon-size", RECON,
        "--slices", 2, "--seed", 3)  # fmt: skip
    test_dir = data / "multicoil_test"
    out = tmp_path / "zf"
    run("recon", test_dir, "--out", out, "--accel", "4", "--batch-size", "1")
    f = next(test_dir.glob("*.h5"))
    rec = read_reconstruction(out / f.name)
    assert rec.shape == (2, RECON, RECON)
    with FastMRIFile(f) as fh:
        assert fh.is_multicoil and fh.target_key == "reconstruction_rss"
        target = fh.read_volume_target()
    # Zero-filled RSS at 4x is close to, but not equal to, the fully sampled RSS target.
    rel = np.linalg.norm(rec - target) / np.linalg.norm(target)
    assert 0.01 < rel < 0.6, rel
    run("evaluate", "--pred", out, "--target", test_dir, "--json", tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    assert "multicoil" in json.dumps(data)


def test_evaluate_lpips_unavailable_says_why(synth_dir, tmp_path):
    from kspace_ldm.metrics import lpips_status

    ok, why = lpips_status()
    if ok:  # pragma: no cover - only where lpips, torchvision and the AlexNet weights exist
        pytest.skip("LPIPS is available here")
    val = synth_dir / "singlecoil_val"
    out = tmp_path / "zf"
    run("recon", val, "--out", out)
    res = run("evaluate", "--pred", out, "--target", val, "--lpips", "--json", tmp_path / "m.json",
              ok=False)  # fmt: skip
    assert res.exit_code == 2
    assert "LPIPS unavailable" in res.output and why.split()[0] in res.output
    assert not (tmp_path / "m.json").exists()
