"""kspace_ldm.evaluate: folder evaluation against fastmri.evaluate on small synthetic files.

Targets are 70x64 (H x W) so fastMRI's crop to (W, W) = 64x64 is exercised; predictions are
72x70 so they are cropped too. Agreement with fastMRI, measured worst case over 5 seeds of
the 3-volume fixture: per row PSNR and SSIM 0 (bit-identical), NMSE 3.0e-8 absolute / 1.8e-7
relative (fastMRI sums float32 norms in float32, we sum in float64); summary vs fastMRI's own
``evaluate()``: PSNR/SSIM mean and std 3.6e-15, NMSE mean and std 1.8e-7 relative.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from fastmri import evaluate as fe
from fastmri.data.transforms import center_crop

from kspace_ldm import evaluate as ev
from kspace_ldm import metrics
from kspace_ldm.errors import InputError

ATOL = 1e-6  # per-row agreement with fastmri.evaluate (measured worst: NMSE 3.0e-8)
SUMMARY_ATOL = 1e-12  # PSNR/SSIM mean and std vs fastMRI's Metrics (measured 3.6e-15)
SUMMARY_NMSE_RTOL = 1e-5  # NMSE mean and std, float32-accumulated in fastMRI (measured 1.8e-7)

TGT_H, TGT_W = 70, 64
PRED_H, PRED_W = 72, 70


def _volume(rng: np.random.Generator, slices: int, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    r = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2
    vol = np.stack([(r < 1) * (1 + 0.5 * np.sin(xx / 4 + s)) for s in range(slices)])
    return (1e-4 * (vol + 0.05 * rng.random(vol.shape))).astype(np.float32)


def write_target(
    path: Path,
    slices: int,
    seed: int,
    acquisition: str | None = "CORPD_FBK",
    multicoil: bool = False,
    keys: tuple[str, ...] | None = None,
) -> np.ndarray:
    """A fastMRI-like target file; returns its ground truth (esc for single-coil, else rss)."""
    rng = np.random.default_rng(seed)
    esc = _volume(rng, slices, TGT_H, TGT_W)
    rss = (esc * 1.3 + 1e-5 * rng.random(esc.shape)).astype(np.float32)
    if keys is None:
        keys = (
            ("reconstruction_rss",) if multicoil else ("reconstruction_esc", "reconstruction_rss")
        )
    kshape = (slices, 4, 16, 12) if multicoil else (slices, 16, 12)
    with h5py.File(path, "w") as f:
        f["kspace"] = (rng.normal(size=kshape) + 1j * rng.normal(size=kshape)).astype(np.complex64)
        if "reconstruction_esc" in keys:
            f["reconstruction_esc"] = esc
        if "reconstruction_rss" in keys:
            f["reconstruction_rss"] = rss
        gt = rss if multicoil else esc
        f.attrs["max"] = float(gt.max())
        f.attrs["norm"] = float(np.linalg.norm(gt))
        if acquisition is not None:
            f.attrs["acquisition"] = acquisition
    return rss if multicoil else esc


def write_pred(path: Path, target: np.ndarray, seed: int, noise: float = 0.1) -> np.ndarray:
    """A submission file: the target embedded in a larger canvas, plus noise."""
    rng = np.random.default_rng(seed)
    s = target.shape[0]
    canvas = np.full((s, PRED_H, PRED_W), 2e-6, np.float32)
    top, left = (PRED_H - TGT_H) // 2, (PRED_W - TGT_W) // 2
    canvas[:, top : top + TGT_H, left : left + TGT_W] = target
    pred = canvas + noise * target.max() * rng.normal(size=canvas.shape)
    pred = pred.astype(np.float32)
    with h5py.File(path, "w") as f:
        f["reconstruction"] = pred
    return pred


@pytest.fixture
def folders(tmp_path):
    """Three single-coil volumes (two PD, one PDFS) with predictions of different quality."""
    tgt, pred = tmp_path / "targets", tmp_path / "preds"
    tgt.mkdir()
    pred.mkdir()
    specs = [("file_a.h5", 3, "CORPD_FBK", 0.05), ("file_b.h5", 4, "CORPDFS_FBK", 0.2)]
    specs.append(("file_c.h5", 2, "CORPD_FBK", 0.1))
    for i, (name, slices, acq, noise) in enumerate(specs):
        gt = write_target(tgt / name, slices, seed=i, acquisition=acq)
        write_pred(pred / name, gt, seed=100 + i, noise=noise)
    return pred, tgt


def _fastmri_row(pred_file: Path, tgt_file: Path, key: str) -> dict[str, float]:
    """fastmri.evaluate's metrics for one volume, computed by hand as its evaluate() does."""
    with h5py.File(tgt_file) as t, h5py.File(pred_file) as p:
        target, recon = t[key][()], p["reconstruction"][()]
    target = center_crop(target, (target.shape[-1], target.shape[-1]))
    recon = center_crop(recon, (target.shape[-1], target.shape[-1]))
    return {
        "nmse": float(fe.nmse(target, recon)),
        "psnr": float(fe.psnr(target, recon)),
        "ssim": float(fe.ssim(target, recon)[0]),
        "maxval": float(target.max()),
    }


def test_rows_match_fastmri_by_hand(folders):
    pred, tgt = folders
    result = ev.evaluate_folders(pred, tgt)
    assert [r.file for r in result.rows] == ["file_a.h5", "file_b.h5", "file_c.h5"]
    assert result.challenge == "singlecoil" and result.metric_names == ("nmse", "psnr", "ssim")
    for row in result.rows:
        ref = _fastmri_row(pred / row.file, tgt / row.file, "reconstruction_esc")
        for name in ("nmse", "psnr", "ssim"):
            assert abs(getattr(row, name) - ref[name]) <= ATOL, (row.file, name)
        assert row.maxval == ref["maxval"]
        assert row.lpips is None and row.challenge == "singlecoil"
    assert [r.slices for r in result.rows] == [3, 4, 2]
    assert [r.acquisition for r in result.rows] == ["CORPD_FBK", "CORPDFS_FBK", "CORPD_FBK"]
    # Noisier predictions score worse.
    a, b, c = result.rows
    assert a.psnr > c.psnr > b.psnr and a.ssim > c.ssim > b.ssim and a.nmse < c.nmse < b.nmse


def test_summary_matches_fastmri_evaluate(folders):
    pred, tgt = folders
    result = ev.evaluate_folders(pred, tgt)
    args = argparse.Namespace(
        target_path=tgt, predictions_path=pred, acquisition=None, acceleration=None
    )
    ref = fe.evaluate(args, "reconstruction_esc")  # fastMRI's own loop and Metrics (runstats)
    means, stds = ref.means(), ref.stddevs()
    summary = result.summary()
    for name in ("nmse", "psnr", "ssim"):
        assert summary[name].n == 3
        tol = {"rel": SUMMARY_NMSE_RTOL} if name == "nmse" else {"abs": SUMMARY_ATOL, "rel": 0}
        assert summary[name].mean == pytest.approx(np.asarray(means[name.upper()]).item(), **tol)
        assert summary[name].std == pytest.approx(np.asarray(stds[name.upper()]).item(), **tol)
        assert summary[name].two_std == 2 * summary[name].std
        values = [getattr(r, name) for r in result.rows]
        assert summary[name].std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    # The terminal table carries fastMRI's "mean +/- 2 std" line.
    table = result.format_table()
    assert f"SSIM = {summary['ssim'].mean:.4g} +/- {summary['ssim'].two_std:.4g}" in table
    for name in ("file_a.h5", "file_b.h5", "file_c.h5", "std (ddof=1)", "2*std"):
        assert name in table


def _strict_json(path: Path):
    def no_constant(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constant)


def test_reports_written_and_parseable(folders, tmp_path):
    pred, tgt = folders
    result = ev.evaluate_folders(pred, tgt)
    out = tmp_path / "out" / "nested"
    result.to_json(out / "m.json")
    result.to_csv(out / "m.csv")
    result.to_markdown(out / "m.md")
    assert sorted(p.name for p in out.iterdir()) == ["m.csv", "m.json", "m.md"]  # no temp files

    doc = _strict_json(out / "m.json")
    assert doc["challenge"] == "singlecoil" and doc["target_key"] == "reconstruction_esc"
    assert doc["metrics"] == ["nmse", "psnr", "ssim"]
    assert [v["file"] for v in doc["volumes"]] == [r.file for r in result.rows]
    assert doc["volumes"][1]["psnr"] == result.rows[1].psnr
    assert "lpips" not in doc["volumes"][0]
    summary = result.summary()
    assert doc["summary"]["ssim"] == summary["ssim"].as_dict()
    assert set(doc["summary_by_acquisition"]) == {"CORPD_FBK", "CORPDFS_FBK"}
    assert doc["summary_by_acquisition"]["CORPD_FBK"]["psnr"]["n"] == 2
    assert "ddof = 1" in doc["protocol"]

    with open(out / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["file", "acquisition", "challenge", "slices", "maxval", "nmse", "psnr", "ssim"]
    assert list(rows[0]) == columns
    for parsed, row in zip(rows, result.rows, strict=True):
        assert parsed["file"] == row.file and int(parsed["slices"]) == row.slices
        for name in ("maxval", "nmse", "psnr", "ssim"):
            assert float(parsed[name]) == getattr(row, name)  # full precision round trip

    md = (out / "m.md").read_text()
    assert "| metric | mean | std (ddof=1) | fastMRI: mean ± 2·std |" in md
    assert f"| SSIM | {summary['ssim'].mean:.4g} | {summary['ssim'].std:.4g} |" in md
    assert "| CORPDFS_FBK | 1 |" in md  # per-acquisition breakdown
    for r in result.rows:
        assert f"| {r.file} | {r.acquisition} | {r.slices} | {r.nmse:.4g} |" in md


def test_acquisition_filter(folders):
    pred, tgt = folders
    (pred / "file_b.h5").unlink()  # a filtered-out target needs no prediction
    result = ev.evaluate_folders(pred, tgt, acquisition="CORPD_FBK")
    assert [r.file for r in result.rows] == ["file_a.h5", "file_c.h5"]
    assert result.skipped == ["file_b.h5"] and result.acquisition == "CORPD_FBK"
    assert "acquisition CORPD_FBK, 1 other(s) skipped" in result.format_table()

    with pytest.raises(InputError) as err:
        ev.evaluate_folders(pred, tgt, acquisition="AXT2")
    assert str(err.value) == (
        f"{tgt}: no target file has acquisition 'AXT2' (found: CORPDFS_FBK, CORPD_FBK)"
    )


def test_acquisition_breakdown_matches_filtered_run(folders):
    pred, tgt = folders
    whole = ev.evaluate_folders(pred, tgt)
    only_pd = ev.evaluate_folders(pred, tgt, acquisition="CORPD_FBK")
    assert whole.summary("CORPD_FBK") == only_pd.summary()
    with pytest.raises(InputError, match="no evaluated volume has acquisition 'AXT1'"):
        whole.summary("AXT1")


def test_filter_needs_acquisition_attribute(tmp_path):
    tgt, pred = tmp_path / "t", tmp_path / "p"
    tgt.mkdir()
    pred.mkdir()
    write_pred(pred / "x.h5", write_target(tgt / "x.h5", 2, 0, acquisition=None), 1)
    assert ev.evaluate_folders(pred, tgt).rows[0].acquisition is None
    with pytest.raises(InputError, match=r"x\.h5: has no 'acquisition' attribute"):
        ev.evaluate_folders(pred, tgt, acquisition="CORPD_FBK")


def test_challenge_detection_and_override(tmp_path):
    tgt, pred = tmp_path / "t", tmp_path / "p"
    tgt.mkdir()
    pred.mkdir()
    gt = write_target(tgt / "sc.h5", 2, seed=0)
    write_pred(pred / "sc.h5", gt, seed=1)

    # Both keys present, kspace rank 3 -> single-coil -> reconstruction_esc.
    auto = ev.evaluate_folders(pred, tgt)
    ref_esc = _fastmri_row(pred / "sc.h5", tgt / "sc.h5", "reconstruction_esc")
    assert auto.challenge == "singlecoil"
    assert abs(auto.rows[0].ssim - ref_esc["ssim"]) <= ATOL

    # An explicit challenge picks the other key (esc and rss differ in these files).
    forced = ev.evaluate_folders(pred, tgt, challenge="multicoil")
    ref_rss = _fastmri_row(pred / "sc.h5", tgt / "sc.h5", "reconstruction_rss")
    assert forced.challenge == "multicoil"
    assert abs(forced.rows[0].psnr - ref_rss["psnr"]) <= ATOL
    assert abs(forced.rows[0].psnr - auto.rows[0].psnr) > 0.1

    # A multi-coil file (rank-4 kspace, rss only) in the same folder: mixed challenges.
    write_pred(pred / "mc.h5", write_target(tgt / "mc.h5", 2, seed=2, multicoil=True), seed=3)
    with pytest.raises(InputError, match="mixes singlecoil and multicoil targets"):
        ev.evaluate_folders(pred, tgt)
    (tgt / "sc.h5").unlink()
    mc = ev.evaluate_folders(pred, tgt)
    assert mc.challenge == "multicoil" and [r.file for r in mc.rows] == ["mc.h5"]
    assert mc.unmatched_predictions == ["sc.h5"]
    assert (
        abs(
            mc.rows[0].nmse
            - _fastmri_row(pred / "mc.h5", tgt / "mc.h5", "reconstruction_rss")["nmse"]
        )
        <= ATOL
    )

    with pytest.raises(InputError, match=r"mc\.h5: missing HDF5 key 'reconstruction_esc'"):
        ev.evaluate_folders(pred, tgt, challenge="singlecoil")
    with pytest.raises(InputError, match="unknown challenge 'knee'"):
        ev.evaluate_folders(pred, tgt, challenge="knee")


def test_target_without_ground_truth_or_rank(tmp_path):
    tgt, pred = tmp_path / "t", tmp_path / "p"
    tgt.mkdir()
    pred.mkdir()
    write_target(tgt / "test.h5", 2, 0, keys=())
    with pytest.raises(InputError, match="has neither 'reconstruction_esc' nor"):
        ev.evaluate_folders(pred, tgt)
    with h5py.File(tgt / "both.h5", "w") as f:  # both keys, no kspace: ambiguous
        f["reconstruction_esc"] = np.ones((1, 8, 8), np.float32)
        f["reconstruction_rss"] = np.ones((1, 8, 8), np.float32)
    (tgt / "test.h5").unlink()
    with pytest.raises(InputError, match="pass the challenge"):
        ev.evaluate_folders(pred, tgt)


def _single(tmp_path, slices=2):
    tgt, pred = tmp_path / "t", tmp_path / "p"
    tgt.mkdir()
    pred.mkdir()
    gt = write_target(tgt / "v.h5", slices, seed=0)
    return pred, tgt, gt


def test_missing_prediction(folders):
    pred, tgt = folders
    (pred / "file_b.h5").unlink()
    (pred / "file_c.h5").unlink()
    with pytest.raises(InputError) as err:
        ev.evaluate_folders(pred, tgt)
    assert str(err.value) == (
        f"{pred / 'file_b.h5'}: missing prediction for target {tgt / 'file_b.h5'} "
        "(2 of 3 targets have no prediction)"
    )
    assert err.value.source == str(pred / "file_b.h5")


def test_prediction_missing_key(tmp_path):
    pred, tgt, _ = _single(tmp_path)
    with h5py.File(pred / "v.h5", "w") as f:
        f["recon"] = np.ones((2, PRED_H, PRED_W), np.float32)
    with pytest.raises(InputError) as err:
        ev.evaluate_folders(pred, tgt)
    assert str(err.value) == f"{pred / 'v.h5'}: missing HDF5 key 'reconstruction'"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prediction_non_finite(tmp_path, bad):
    pred, tgt, gt = _single(tmp_path)
    p = write_pred(pred / "v.h5", gt, seed=1)
    p[1, 0, 0] = bad  # outside the crop: still rejected, the file is broken
    p[0, 30, 30] = bad
    with h5py.File(pred / "v.h5", "w") as f:
        f["reconstruction"] = p
    with pytest.raises(InputError) as err:
        ev.evaluate_folders(pred, tgt)
    assert str(err.value) == (
        f"{pred / 'v.h5'}: 'reconstruction' contains 2 non-finite values (NaN or Inf)"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones((PRED_H, PRED_W), np.float32), "'reconstruction' has shape (72, 70); expected"),
        (np.ones((3, PRED_H, PRED_W), np.float32), "'reconstruction' has 3 slices but the target"),
        (np.ones((2, 60, PRED_W), np.float32), "is 60x70, smaller than the 64x64 evaluation crop"),
        (np.ones((2, PRED_H, PRED_W), np.complex64), "has dtype complex64; expected real"),
    ],
)
def test_prediction_shape_errors(tmp_path, data, message):
    pred, tgt, _ = _single(tmp_path)
    with h5py.File(pred / "v.h5", "w") as f:
        f["reconstruction"] = data
    with pytest.raises(InputError) as err:
        ev.evaluate_folders(pred, tgt)
    assert str(err.value).startswith(f"{pred / 'v.h5'}: ") and message in str(err.value)


def test_not_hdf5_and_folder_errors(tmp_path):
    pred, tgt, _ = _single(tmp_path)
    (pred / "v.h5").write_text("not hdf5")
    with pytest.raises(InputError, match=r"v\.h5: cannot be opened as HDF5"):
        ev.evaluate_folders(pred, tgt)
    with pytest.raises(InputError, match="prediction folder does not exist"):
        ev.evaluate_folders(tmp_path / "nope", tgt)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("ignored: not .h5")
    with pytest.raises(InputError, match=r"contains no \.h5 target files"):
        ev.evaluate_folders(pred, empty)


def test_target_errors(tmp_path):
    pred, tgt, gt = _single(tmp_path)
    write_pred(pred / "v.h5", gt, seed=1)
    with h5py.File(tgt / "v.h5", "a") as f:
        del f["reconstruction_esc"]
        f["reconstruction_esc"] = np.zeros((2, TGT_H, TGT_W), np.float32)
    with pytest.raises(InputError, match=r"v\.h5: 'reconstruction_esc' has max 0\.0"):
        ev.evaluate_folders(pred, tgt)
    with h5py.File(tgt / "v.h5", "a") as f:
        del f["reconstruction_esc"]
        f["reconstruction_esc"] = np.ones((2, 50, TGT_W), np.float32)  # H < W
    with pytest.raises(InputError, match="cannot centre-crop it to 64x64"):
        ev.evaluate_folders(pred, tgt)


def test_exact_single_volume_writes_strict_json(tmp_path):
    pred, tgt, gt = _single(tmp_path)
    with h5py.File(pred / "v.h5", "w") as f:
        f["reconstruction"] = gt  # exact: PSNR +inf; one volume: std undefined
    result = ev.evaluate_folders(pred, tgt)
    row = result.rows[0]
    assert row.psnr == float("inf") and row.ssim == 1.0 and row.nmse == 0.0
    summary = result.summary()
    assert np.isnan(summary["ssim"].std) and summary["ssim"].n == 1
    result.to_json(tmp_path / "r.json")
    doc = _strict_json(tmp_path / "r.json")
    assert doc["volumes"][0]["psnr"] is None and doc["summary"]["nmse"]["std"] is None
    result.to_csv(tmp_path / "r.csv")
    assert float(next(csv.DictReader(open(tmp_path / "r.csv")))["psnr"]) == float("inf")
    assert "n/a" in result.format_table() and "n/a" in result.format_markdown()


def test_lpips_unavailable_fails_before_reading(folders, monkeypatch):
    pred, tgt = folders
    monkeypatch.setitem(sys.modules, "torchvision", None)  # make LPIPS unavailable for sure
    (pred / "file_a.h5").unlink()  # would be an InputError if files were read first
    with pytest.raises(metrics.MetricUnavailableError, match="torchvision"):
        ev.evaluate_folders(pred, tgt, lpips=True)


def test_lpips_column(folders, monkeypatch, tmp_path):
    """The LPIPS plumbing with a stand-in network (distance = mean |a - b| of its inputs)."""
    pred, tgt = folders

    class FakeNet:
        def __call__(self, a, b):
            return (a - b).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)

    monkeypatch.setattr(metrics, "lpips_status", lambda net="alex": (True, "fake"))
    monkeypatch.setattr(metrics, "_lpips_model", lambda net, device: FakeNet())
    result = ev.evaluate_folders(pred, tgt, lpips=True)
    assert result.metric_names == ("nmse", "psnr", "ssim", "lpips")
    for row in result.rows:
        with h5py.File(tgt / row.file) as t, h5py.File(pred / row.file) as p:
            g = center_crop(t["reconstruction_esc"][()], (TGT_W, TGT_W))
            q = center_crop(p["reconstruction"][()], (TGT_W, TGT_W))
        expected = np.mean(2 * np.abs(g.astype(float) - q) / g.max())
        assert row.lpips == pytest.approx(expected, rel=1e-5)
    assert result.summary()["lpips"].n == 3
    result.to_csv(tmp_path / "l.csv")
    assert "lpips" in next(csv.DictReader(open(tmp_path / "l.csv")))
    assert "LPIPS" in result.format_table() and "LPIPS v0.1" in result.format_markdown()


def test_progress_bar_goes_to_stderr(folders, capsys):
    pred, tgt = folders
    ev.evaluate_folders(pred, tgt, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "3/3" in captured.err


def test_importing_does_not_load_compiled_ops_or_torch():
    # The evaluator must run without the C++ extension; torch loads only when LPIPS is used.
    code = (
        "import sys, kspace_ldm.evaluate, kspace_ldm.metrics; "
        "bad = [m for m in ('kspace_ldm.ops', 'kspace_ldm._C', 'torch') if m in sys.modules]; "
        "print(bad)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert out.stdout.strip() == "[]"
