"""kspace_ldm.metrics against the reference implementations (fastmri.evaluate, skimage).

Measured worst cases over the cases below (numpy 2.4, scipy 1.17, skimage 0.26, this machine):
* SSIM vs fastmri.evaluate.ssim and vs skimage per slice: 1.5e-13 (float32 volumes); other
  dtypes / maxval types vs skimage: 1.6e-15; SSIM map per pixel vs skimage ``full=True``: 1.5e-8
  (a fraction of a float32 ulp: both compute in float32);
* PSNR vs fastmri.evaluate.psnr: 0 (same float32 difference, same float64 mean);
* NMSE vs fastmri.evaluate.nmse on float32 input: 2.2e-8 absolute, 1.5e-6 relative -- fastMRI
  accumulates float32 norms in float32 (BLAS sdot); against fastmri.evaluate.nmse on the same
  data cast to float64 it is 3.7e-16 relative.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch
from fastmri import evaluate as fe
from skimage.metrics import structural_similarity

from kspace_ldm import metrics
from kspace_ldm.errors import InputError, KldmError

# Tolerances: the measured worst cases above with a wide margin (>= 40x for NMSE, which
# depends on the BLAS summation order; >= 1000x for the others).
SSIM_ATOL = 1e-9
PSNR_ATOL = 1e-9  # dB
NMSE_ATOL_VS_FLOAT32_FASTMRI = 1e-6
NMSE_RTOL_VS_FLOAT64 = 1e-12


def _phantom(rng: np.random.Generator, shape: tuple[int, int, int], scale: float) -> np.ndarray:
    """Knee-like structured volume: an ellipse with texture that changes per slice, plus noise."""
    s, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2
    vol = np.stack(
        [
            (r < 1) * (0.6 + 0.4 * np.sin(xx / 5 + k) * np.cos(yy / 7)) + 0.02 * rng.random((h, w))
            for k in range(s)
        ]
    )
    return (vol * scale).astype(np.float32)


# (shape, intensity scale, structured?): odd and non-square sizes, the 7x7 minimum, and the
# ranges seen in practice (fastMRI ESC magnitudes are ~1e-4; normalised images ~1; raw ~1e3).
CASES = [
    ((3, 64, 64), 1e-4, True),
    ((2, 33, 47), 1.0, True),
    ((1, 7, 7), 1.0, False),
    ((4, 100, 81), 3e3, True),
    ((2, 320, 320), 5e-4, True),
    ((3, 40, 29), 1.0, False),
    ((2, 12, 300), 250.0, False),
]


def _pair(case_index: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    shape, scale, structured = CASES[case_index]
    rng = np.random.default_rng(case_index)
    if structured:
        gt = _phantom(rng, shape, scale)
    else:
        gt = (rng.random(shape) * scale).astype(np.float32)
    # Noise plus a smooth bias, so SSIM, PSNR and NMSE are all far from their ideal values.
    pred = gt + rng.normal(0, 0.05 * scale, shape) + 0.02 * scale * np.linspace(-1, 1, shape[-1])
    return gt.astype(dtype), pred.astype(dtype)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_fastmri_evaluate(case):
    gt, pred = _pair(case)

    assert abs(metrics.psnr(gt, pred) - float(fe.psnr(gt, pred))) <= PSNR_ATOL
    assert abs(metrics.ssim(gt, pred) - float(fe.ssim(gt, pred)[0])) <= SSIM_ATOL

    ours = metrics.nmse(gt, pred)
    assert abs(ours - float(fe.nmse(gt, pred))) <= NMSE_ATOL_VS_FLOAT32_FASTMRI
    ref64 = float(fe.nmse(gt.astype(np.float64), pred.astype(np.float64)))
    assert ours == pytest.approx(ref64, rel=NMSE_RTOL_VS_FLOAT64)

    # An explicit maxval (fastMRI's optional argument) is honoured the same way.
    maxval = 1.7 * float(gt.max())
    assert abs(metrics.psnr(gt, pred, maxval) - float(fe.psnr(gt, pred, maxval))) <= PSNR_ATOL
    assert abs(metrics.ssim(gt, pred, maxval) - float(fe.ssim(gt, pred, maxval)[0])) <= SSIM_ATOL


@pytest.mark.parametrize("case", range(len(CASES)))
def test_ssim_per_slice_matches_skimage(case):
    gt, pred = _pair(case)
    ours = metrics.ssim_per_slice(gt, pred)
    assert ours.shape == (gt.shape[0],) and ours.dtype == np.float64
    ref = [structural_similarity(g, p, data_range=gt.max()) for g, p in zip(gt, pred, strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=SSIM_ATOL)


@pytest.mark.parametrize(
    ("dtype", "maxval_kind"),
    [
        (np.float64, "volume"),  # float64 arithmetic throughout
        (np.float32, "python float"),
        (np.float32, "numpy float64"),  # promotes skimage's float32 algebra to float64
        (np.float16, "volume"),  # computed in float32, as skimage
        (np.uint16, "python float"),  # integers are computed in float64
    ],
)
def test_ssim_dtype_rules_match_skimage(dtype, maxval_kind):
    gt, pred = _pair(3)  # values up to ~3e3 fit uint16 and float16
    gt = np.clip(gt, 0, None).astype(dtype)
    pred = np.clip(pred, 0, None).astype(dtype)
    maxval = {
        "volume": gt.max(),
        "python float": float(gt.max()) * 1.1,
        "numpy float64": np.float64(gt.max()) * 1.1,
    }[maxval_kind]
    ours = metrics.ssim_per_slice(gt, pred, maxval)
    ref = [structural_similarity(g, p, data_range=maxval) for g, p in zip(gt, pred, strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=SSIM_ATOL)


def test_ssim_map_is_skimage_full_map_cropped():
    gt, pred = _pair(1)
    ours = metrics.ssim_map(gt, pred)
    assert ours.shape == (gt.shape[0], gt.shape[1] - 6, gt.shape[2] - 6)
    assert ours.dtype == np.float32
    for s in range(gt.shape[0]):
        _, full = structural_similarity(gt[s], pred[s], data_range=gt.max(), full=True)
        # Per-pixel values (not averaged): measured 1.5e-8, below one float32 ulp at 0.5.
        np.testing.assert_allclose(ours[s], full[3:-3, 3:-3], rtol=0, atol=1e-7)


def test_ssim_chunking_does_not_change_values(monkeypatch):
    gt, pred = _pair(0)
    whole = metrics.ssim_per_slice(gt, pred)
    monkeypatch.setattr(metrics, "_SSIM_CHUNK_ELEMENTS", 1)  # one slice per chunk
    np.testing.assert_array_equal(metrics.ssim_per_slice(gt, pred), whole)


def test_volume_max_not_slice_max_sets_the_data_range():
    gt, pred = _pair(0)
    gt[0] *= 10  # slice 0 now holds the volume max; the other slices are much darker
    pred[0] *= 10
    per_slice = metrics.ssim_per_slice(gt, pred)
    own_max = [
        structural_similarity(gt[s], pred[s], data_range=gt[s].max()) for s in range(len(gt))
    ]
    # Darker slices get larger constants C1, C2 from the volume max, hence higher SSIM.
    assert np.all(per_slice[1:] > np.asarray(own_max[1:]) + 1e-3)


def test_identical_volumes():
    gt, _ = _pair(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage would warn (divide by zero) for PSNR
        assert metrics.psnr(gt, gt) == float("inf")
    assert metrics.ssim(gt, gt) == 1.0
    assert metrics.nmse(gt, gt) == 0.0


def test_metrics_move_the_right_way():
    gt, pred = _pair(2)
    worse = gt + 2 * (pred - gt)
    assert metrics.nmse(gt, worse) == pytest.approx(4 * metrics.nmse(gt, pred), rel=1e-5)
    # Doubling the error costs 20 log10(2) = 6.02 dB.
    assert metrics.psnr(gt, pred) - metrics.psnr(gt, worse) == pytest.approx(6.0206, abs=1e-3)
    assert metrics.ssim(gt, worse) < metrics.ssim(gt, pred) < 1.0


def _fn(name):
    return getattr(metrics, name)


ALL = ["nmse", "psnr", "ssim", "ssim_map", "ssim_per_slice", "lpips_volume"]


@pytest.mark.parametrize("name", ALL)
def test_rank_error(name):
    gt = np.ones((8, 8), np.float32)
    with pytest.raises(InputError, match=r"vol\.h5: target has shape \(8, 8\); expected"):
        _fn(name)(gt, gt, source="vol.h5")


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_error(name):
    gt = np.ones((2, 8, 8), np.float32)
    with pytest.raises(InputError) as err:
        _fn(name)(gt, np.ones((2, 8, 9), np.float32), source="p.h5")
    assert str(err.value) == (
        "p.h5: prediction shape (2, 8, 9) does not match target shape (2, 8, 8)"
    )


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_errors(name, bad):
    gt, pred = _pair(1)
    pred[1, 3, 4] = bad
    pred[0, 0, 0] = bad
    with pytest.raises(InputError, match=r"^p\.h5: prediction contains 2 non-finite values"):
        _fn(name)(gt, pred, source="p.h5")
    gt2 = gt.copy()
    gt2[0, 5, 5] = bad
    with pytest.raises(InputError, match=r"^target contains 1 non-finite values"):
        _fn(name)(gt2, gt)


def test_dtype_and_empty_errors():
    z = np.ones((2, 8, 8), np.complex64)
    with pytest.raises(InputError, match="dtype complex64; expected a real-valued array"):
        metrics.psnr(z, z)
    e = np.ones((0, 8, 8), np.float32)
    with pytest.raises(InputError, match="is empty"):
        metrics.nmse(e, e)


@pytest.mark.parametrize("maxval", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["psnr", "ssim", "lpips_volume"])
def test_bad_maxval(name, maxval):
    gt, pred = _pair(1)
    with pytest.raises(InputError, match="maxval must be a finite positive number"):
        _fn(name)(gt, pred, maxval)


def test_all_zero_target():
    z = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(InputError, match="all zeros; NMSE is undefined"):
        metrics.nmse(z, z + 1)
    with pytest.raises(InputError, match=r"maxval \(the target volume max\) must be"):
        metrics.ssim(z, z + 1)


def test_ssim_window_larger_than_slice():
    v = np.ones((1, 6, 9), np.float32)
    with pytest.raises(InputError, match="slices of 6x9 are smaller than the 7x7 SSIM window"):
        metrics.ssim(v, v)


# ---------------------------------------------------------------------------------------------
# LPIPS: the real package is not installed here; fake modules only exercise the plumbing.
# ---------------------------------------------------------------------------------------------


class _FakeLPIPS:
    """Stands in for lpips.LPIPS: distance = mean |in0 - in1| per image, records its inputs."""

    instances: ClassVar[list[_FakeLPIPS]] = []

    def __init__(self, net="alex", version="0.1", verbose=True):
        self.net, self.version, self.calls = net, version, []
        _FakeLPIPS.instances.append(self)

    def eval(self):
        return self

    def to(self, device):
        self.device = device
        return self

    def __call__(self, in0, in1):
        self.calls.append((in0.clone(), in1.clone()))
        return (in0 - in1).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


@pytest.fixture
def fake_lpips_env(tmp_path, monkeypatch):
    """Fake torchvision and lpips modules, the lpips linear weights, and a private hub dir."""
    pkg = tmp_path / "site" / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"x")
    lpips_mod = types.ModuleType("lpips")
    lpips_mod.__file__ = str(pkg / "__init__.py")
    lpips_mod.__version__ = "0.1.4-fake"
    lpips_mod.LPIPS = _FakeLPIPS
    monkeypatch.setitem(sys.modules, "lpips", lpips_mod)
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(metrics, "_LPIPS_MODELS", {})
    _FakeLPIPS.instances.clear()
    return hub / "checkpoints" / "alexnet-owt-7be5be79.pth"


def test_lpips_status_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import raises ImportError
    ok, reason = metrics.lpips_status()
    assert not ok and "torchvision" in reason and "pip install" in reason


def test_lpips_status_without_lpips(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "lpips", None)
    ok, reason = metrics.lpips_status()
    assert not ok and "'lpips' package" in reason


def test_lpips_status_in_this_environment():
    ok, reason = metrics.lpips_status()
    assert isinstance(ok, bool) and reason  # always a reason or a description
    if not ok:
        gt, pred = _pair(1)
        with pytest.raises(metrics.MetricUnavailableError) as err:
            metrics.lpips_volume(gt, pred)
        assert isinstance(err.value, KldmError) and str(err.value) == reason


def test_lpips_status_reports_missing_backbone_without_download(fake_lpips_env):
    ok, reason = metrics.lpips_status()
    assert not ok
    assert str(fake_lpips_env) in reason and "never downloads" in reason
    assert not fake_lpips_env.exists()
    gt, pred = _pair(1)
    with pytest.raises(metrics.MetricUnavailableError, match="never downloads"):
        metrics.lpips_volume(gt, pred)
    assert _FakeLPIPS.instances == []  # nothing was built (building could download)


def test_lpips_status_asks_torchvision_for_the_file_name(fake_lpips_env, monkeypatch):
    tv = sys.modules["torchvision"]
    weights = types.SimpleNamespace(url="https://example.invalid/models/alexnet-new-123.pth")
    tv.models = types.SimpleNamespace(AlexNet_Weights=types.SimpleNamespace(IMAGENET1K_V1=weights))
    ok, reason = metrics.lpips_status()
    assert not ok and "alexnet-new-123.pth" in reason


def test_lpips_status_unknown_net():
    ok, reason = metrics.lpips_status("resnet")
    assert not ok and "unknown LPIPS network" in reason


def test_lpips_volume_plumbing_and_fixed_scaling(fake_lpips_env):
    fake_lpips_env.parent.mkdir(parents=True)
    fake_lpips_env.write_bytes(b"weights")
    ok, reason = metrics.lpips_status()
    assert ok, reason

    rng = np.random.default_rng(3)
    gt = rng.random((5, 16, 12)).astype(np.float32) * 2.0
    gt[2] *= 0.25  # a dark slice: fixed scaling keeps it dark (per-image min-max would not)
    pred = gt + rng.normal(0, 0.1, gt.shape).astype(np.float32)
    maxval = 2.5
    value = metrics.lpips_volume(gt, pred, maxval, batch_size=2, device="cpu")

    # Fake distance is mean |a - b| of the scaled inputs = 2 |gt - pred| / maxval per slice.
    expected = np.mean(
        [np.mean(np.abs(2 * (g - p) / maxval)) for g, p in zip(gt, pred, strict=True)]
    )
    assert value == pytest.approx(expected, rel=1e-6)  # float32 inputs: measured 1e-8

    (model,) = _FakeLPIPS.instances
    assert model.net == "alex" and model.device == "cpu"
    assert [c[0].shape[0] for c in model.calls] == [2, 2, 1]  # batch_size respected
    in0 = torch.cat([c[0] for c in model.calls])
    assert in0.dtype == torch.float32 and in0.shape == (5, 3, 16, 12)
    assert torch.equal(in0[:, 0], in0[:, 1]) and torch.equal(in0[:, 0], in0[:, 2])
    np.testing.assert_allclose(in0[:, 0].numpy(), 2 * gt / maxval - 1, rtol=0, atol=1e-6)
    # The dark slice (max 0.5) maps to at most 2 * 0.5 / 2.5 - 1 = -0.6, not to +1.
    assert float(in0[2].max()) <= -0.6 + 1e-6

    # Default maxval is the target volume max, mapped to exactly +1; the model is reused.
    metrics.lpips_volume(gt, pred, device="cpu")
    assert len(_FakeLPIPS.instances) == 1
    second = torch.cat([c[0] for c in model.calls[3:]])
    assert float(second.max()) == 1.0 and float(second.min()) >= -1.0
