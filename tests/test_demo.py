"""The bundled demo model and ``kldm demo``: manifest verification (a tampered or missing file is
one clear error), relative first-stage resolution, held-out data, the demo end to end with cgs
ahead of zero-filled, ``metrics.json`` keys, the unavailable C++ backend, and the reproduction
script on tiny step counts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run

from kspace_ldm.data.synth import _file_numbers
from kspace_ldm.demo import DEFAULT_SEED
from kspace_ldm.errors import InputError
from kspace_ldm.models.ldm import load_ldm
from kspace_ldm.pretrained import (
    MANIFEST,
    build_bundle,
    bundle_dir,
    demo_model,
    sha256_file,
    verify_bundle,
)
from kspace_ldm.training.evaluate import load_first_stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir("demo"), dst)
    return dst


def test_bundle_is_complete_small_and_verified():
    root = bundle_dir("demo")
    manifest = verify_bundle(root)
    listed = set(manifest["files"])
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert present - {MANIFEST} == listed  # every shipped file is covered by a checksum
    assert sum(e["bytes"] for e in manifest["files"].values()) < 20 * 2**20
    # sampling needs only the EMA weights of the denoiser
    assert "ldm/ema.safetensors" in listed and "ldm/model.safetensors" not in listed
    ldm_dir, _ = demo_model()
    ldm = load_ldm(ldm_dir)
    assert ldm.used_ema and Path(ldm.first_stage) == (root / "first_stage").resolve()
    meta = json.loads((ldm_dir / "ldm.json").read_text())
    assert not Path(meta["first_stage"]).is_absolute()
    # no machine-specific paths in anything shipped
    for name in ("first_stage/config.yaml", "ldm/config.yaml", "ldm/ldm.json", MANIFEST):
        assert "/work/" not in (root / name).read_text()


@pytest.mark.parametrize("name", ["ldm/ema.safetensors", "first_stage/model.safetensors"])
def test_tampered_bundle_file_is_one_clear_error(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    for load in (lambda: load_ldm(bundle_copy / "ldm"), lambda: load_first_stage(path.parent)):
        with pytest.raises(InputError) as err:
            load()
        msg = str(err.value)
        assert name.split("/")[-1] in msg and "sha256" in msg and "\n" not in msg


def test_missing_bundle_file_is_one_clear_error(bundle_copy):
    (bundle_copy / "ldm" / "ldm.json").unlink()
    with pytest.raises(InputError, match="missing from the bundled model"):
        verify_bundle(bundle_copy)


def test_relative_first_stage_resolves_against_the_ldm_dir(bundle_copy, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a path relative to the working directory would break here
    ldm = load_ldm(bundle_copy / "ldm")
    assert Path(ldm.first_stage) == (bundle_copy / "first_stage").resolve()
    # an ordinary run (no manifest) with a relative first stage, loaded through its best/
    run_dir = tmp_path / "runs" / "ldm"
    shutil.copytree(bundle_copy / "ldm", run_dir / "best")
    shutil.copytree(bundle_copy / "first_stage", tmp_path / "runs" / "ae" / "best")
    meta_file = run_dir / "best" / "ldm.json"
    meta = json.loads(meta_file.read_text())
    meta["first_stage"] = "../../ae/best"
    meta_file.write_text(json.dumps(meta))
    ldm = load_ldm(Path("..") / "runs" / "ldm")
    assert Path(ldm.first_stage) == (tmp_path / "runs" / "ae" / "best").resolve()
    model, _, _ = load_first_stage(ldm.first_stage)
    assert model.in_channels == 2


def test_build_bundle_round_trip(bundle_copy, tmp_path):
    out = build_bundle(
        bundle_copy / "first_stage", bundle_copy / "ldm", tmp_path / "b2", {"name": "x"}
    )
    manifest = verify_bundle(out)
    assert manifest["name"] == "x"
    # the same files give the same checksums (ldm.json already relative: rewritten identically)
    ref = json.loads((bundle_copy / MANIFEST).read_text())["files"]
    for rel in ("first_stage/model.safetensors", "ldm/ema.safetensors", "ldm/ldm.json"):
        assert manifest["files"][rel]["sha256"] == ref[rel]["sha256"]
    assert sha256_file(out / "ldm" / "ema.safetensors") == ref["ldm/ema.safetensors"]["sha256"]
    with pytest.raises(InputError, match="missing"):
        build_bundle(tmp_path / "nope", bundle_copy / "ldm", tmp_path / "b3")
    assert not (tmp_path / "b3").exists()


def test_demo_volumes_are_held_out():
    _, manifest = demo_model()
    data = manifest["data"]
    assert DEFAULT_SEED != data["seed"]
    used = {n for names in data["files"].values() for n in names}
    assert len(used) == 38  # 32 train + 2 val + 4 test volumes of the training data set
    demo_names = {f"file{n}.h5" for n in _file_numbers(DEFAULT_SEED, 16)}
    assert not demo_names & used


def test_demo_end_to_end_cgs_beats_zero_filled(tmp_path):
    out = tmp_path / "demo"
    res = run("demo", "--out", out)
    assert "| cgs |" in res.output and "| zero-filled |" in res.output
    assert "| cs-wavelet |" in res.output  # the compressed-sensing row
    assert (out / "panel.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"zero-filled", "cs-wavelet", "cgs", "seconds"} <= set(metrics)
    assert metrics["cs-wavelet"]["psnr"] > metrics["zero-filled"]["psnr"]
    for method in ("zero-filled", "cgs"):
        assert set(metrics[method]) == {"nmse", "psnr", "ssim"}
    zf, cgs = metrics["zero-filled"], metrics["cgs"]
    assert cgs["psnr"] > zf["psnr"] + 1.0 and cgs["ssim"] > zf["ssim"] and cgs["nmse"] < zf["nmse"]
    for key in ("total", "synthesise", "zero-filled", "cgs", "cgs_per_slice"):
        assert metrics["seconds"][key] >= 0
    assert metrics["seconds"]["total"] < 180
    assert metrics["acceleration"] == 4 and 3.0 < metrics["effective_acceleration"] < 5.5
    assert metrics["data"]["seed"] == DEFAULT_SEED and metrics["sampler"]["backend"] == "python"
    table = (out / "metrics.md").read_text()
    assert "| cgs |" in table and "4x" in table


def test_demo_8x_cgs_beats_zero_filled(tmp_path):
    out = tmp_path / "demo8"
    run("demo", "--out", out, "--accel", 8, "--volumes", 3, "--slices", 1)
    run("demo", "--out", out, "--accel", 8, "--volumes", 2, "--slices", 4)  # same folder again
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_volume"]["cgs"]) == 2  # no stale volume of the first run
    assert metrics["center_fraction"] == 0.04 and 6.0 < metrics["effective_acceleration"] < 11
    assert metrics["cgs"]["psnr"] > metrics["zero-filled"]["psnr"]
    assert metrics["cgs"]["ssim"] > metrics["zero-filled"]["ssim"]


def test_demo_cpp_backend_matches_python(tmp_path, monkeypatch):
    """--backend cpp exports the bundle once into the cache (KLDM_CACHE), reuses it, and gives the
    Python backend's metrics."""
    monkeypatch.setenv("KLDM_CACHE", str(tmp_path / "cache"))
    res = {}
    for backend in ("python", "cpp", "cpp"):
        out = tmp_path / backend
        r = run("demo", "--out", out, "--backend", backend, "--volumes", 1, "--slices", 2)
        res[backend] = json.loads((out / "metrics.json").read_text())
        if backend == "cpp":
            assert res[backend]["sampler"]["backend"] == "cpp"
    assert "exporting the bundled model" not in r.output  # second cpp run: cached export
    assert len(list((tmp_path / "cache" / "exports").iterdir())) == 1
    for k in ("psnr", "ssim", "nmse"):
        assert res["cpp"]["cgs"][k] == pytest.approx(res["python"]["cgs"][k], rel=1e-4)


def test_unknown_backend_is_one_line_error(tmp_path):
    res = run("recon", tmp_path, "--out", tmp_path / "o", "--backend", "rust", ok=False)
    assert res.exit_code == 2 and "rust" in res.output and "Traceback" not in res.output


def test_demo_refuses_the_training_seed(tmp_path):
    res = run("demo", "--out", tmp_path / "d", "--seed", 0, ok=False)
    assert res.exit_code == 2 and "training data" in res.output


@pytest.mark.slow
def test_train_demo_model_script_tiny(tmp_path):
    """scripts/train_demo_model.sh end to end with tiny step counts, into a temporary bundle."""
    env = dict(
        os.environ,
        AE_STEPS="2",
        LDM_STEPS="2",
        EVERY="2",
        BUNDLE_OUT=str(tmp_path / "bundle"),
        KLDM=str(Path(sys.executable).parent / "kldm"),
        PY=sys.executable,
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_demo_model.sh"), str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = verify_bundle(tmp_path / "bundle")
    assert manifest["data"]["shape"] == [96, 96] and manifest["data"]["seed"] == 0
    assert manifest["training"]["ldm"]["best"]["step"] == 2
    ldm = load_ldm(tmp_path / "bundle" / "ldm")
    assert Path(ldm.first_stage) == (tmp_path / "bundle" / "first_stage").resolve()
