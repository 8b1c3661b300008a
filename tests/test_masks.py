"""Tests of kspace_ldm.data.masks against fastMRI's own mask functions and transforms."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from kspace_ldm.data import masks as M
from kspace_ldm.errors import InputError

fm_subsample = pytest.importorskip("fastmri.data.subsample")

FASTMRI_CLASSES = {
    "random": fm_subsample.RandomMaskFunc,
    "equispaced": fm_subsample.EquiSpacedMaskFunc,
    "equispaced_fraction": fm_subsample.EquispacedMaskFractionFunc,
    "magic": fm_subsample.MagicMaskFunc,
    "magic_fraction": fm_subsample.MagicMaskFractionFunc,
}
COLUMN_TYPES = tuple(FASTMRI_CLASSES)
WIDTHS = (368, 372, 320, 17, 640)
CONFIGS = (([0.08], [4]), ([0.04], [8]), ([0.08, 0.04], [4, 8]))
SEEDS = (
    0,
    1,
    1234,
    2**32 - 1,
    (3, 1, 4),
    M.seed_from_filename("file1000001.h5"),
    M.seed_from_filename("file1002546.h5"),
)


def _fastmri_mask(mask_type, cfs, accs, width, seed, offset=None, **kw):
    """fastMRI's mask for a real-view k-space (1, 640, W, 2): float32 [1, 1, W, 1], n_low."""
    func = FASTMRI_CLASSES[mask_type](cfs, accs, **kw)
    return func((1, 640, width, 2), offset, seed)


# --------------------------------------------------------------------------------------------
# exact equality with fastMRI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_type", COLUMN_TYPES)
def test_column_masks_equal_fastmri(mask_type):
    checked = 0
    for width in WIDTHS:
        for cfs, accs in CONFIGS:
            ours = M.create_mask(mask_type, cfs, accs)
            for seed in SEEDS:
                fm_mask, fm_low = _fastmri_mask(mask_type, cfs, accs, width, seed)
                res = ours((8, 640, width), seed)  # complex k-space shape (slices, H, W)
                assert res.mask.dtype == np.bool_ and res.mask.shape == (width,)
                # exact: the same columns, as booleans, no tolerance
                np.testing.assert_array_equal(res.mask, fm_mask.numpy().reshape(width) == 1)
                assert res.num_low_frequencies == fm_low
                # fastMRI's layout and dtype, bit for bit
                lay, low = ours.fastmri_call((1, 640, width, 2), None, seed)
                assert lay.dtype == torch.float32 and lay.shape == fm_mask.shape
                assert torch.equal(lay, fm_mask) and low == fm_low
                checked += 1
    assert checked == len(WIDTHS) * len(CONFIGS) * len(SEEDS)


@pytest.mark.parametrize("mask_type", ["equispaced", "equispaced_fraction", "magic"])
@pytest.mark.parametrize("width", [368, 17])
def test_explicit_offsets_equal_fastmri(mask_type, width):
    ours = M.create_mask(mask_type, [0.08], [4])
    for offset in range(4):
        fm_mask, fm_low = _fastmri_mask(mask_type, [0.08], [4], width, 7, offset=offset)
        res = ours((width,), 7, offset=offset)
        np.testing.assert_array_equal(res.mask, fm_mask.numpy().ravel() == 1)
        assert res.num_low_frequencies == fm_low


def test_magic_fraction_explicit_offset_equals_fastmri():
    # the offset is used with the adjusted spacing (368 / (92 - 29) -> 6)
    ours = M.MagicFractionMask([0.08], [4])
    for offset in range(6):
        fm_mask, fm_low = _fastmri_mask("magic_fraction", [0.08], [4], 368, 3, offset=offset)
        res = ours((368,), 3, offset=offset)
        np.testing.assert_array_equal(res.mask, fm_mask.numpy().ravel() == 1)
        assert res.num_low_frequencies == fm_low


@pytest.mark.parametrize("mask_type", ["random", "equispaced_fraction", "magic_fraction"])
def test_fractional_accelerations_equal_fastmri(mask_type):
    # these three types do not use the acceleration as a slice step, so fastMRI accepts floats
    ours = M.create_mask(mask_type, [0.08, 0.06], [4.5, 6.4])
    for seed in SEEDS:
        fm_mask, fm_low = _fastmri_mask(mask_type, [0.08, 0.06], [4.5, 6.4], 368, seed)
        res = ours((368,), seed)
        np.testing.assert_array_equal(res.mask, fm_mask.numpy().ravel() == 1)
        assert res.num_low_frequencies == fm_low


@pytest.mark.parametrize("mask_type", COLUMN_TYPES)
def test_unseeded_stream_and_any_combination_equal_fastmri(mask_type):
    # Without a per-call seed both continue the generator the constructor seeded.
    fm = FASTMRI_CLASSES[mask_type]([0.08, 0.04], [4, 8], seed=11)
    ours = M.create_mask(mask_type, [0.08, 0.04], [4, 8], seed=11)
    for _ in range(6):
        fm_mask, fm_low = fm((1, 640, 368, 2))
        res = ours((640, 368))
        np.testing.assert_array_equal(res.mask, fm_mask.numpy().ravel() == 1)
        assert res.num_low_frequencies == fm_low
    # A seeded call restores the stream: the next unseeded masks still agree.
    fm((1, 640, 368, 2), None, 99)
    ours((640, 368), 99)
    fm_mask, _ = fm((1, 640, 368, 2))
    np.testing.assert_array_equal(ours((640, 368)).mask, fm_mask.numpy().ravel() == 1)

    # allow_any_combination: lists of different lengths, drawn with rng.choice
    kw = {"allow_any_combination": True}
    cfs, accs = [0.08, 0.04, 0.06], [4, 8]
    ours = M.create_mask(mask_type, cfs, accs, **kw)
    seen = set()
    for seed in range(40):
        fm_mask, fm_low = _fastmri_mask(mask_type, cfs, accs, 372, seed, **kw)
        res = ours((372,), seed)
        np.testing.assert_array_equal(res.mask, fm_mask.numpy().ravel() == 1)
        assert res.num_low_frequencies == fm_low
        seen.add((res.center_fraction, res.acceleration))
    assert len(seen) == 6  # every cross combination occurred


def test_result_metadata():
    res = M.RandomMask([0.08, 0.04], [4, 8])((640, 368), M.seed_from_filename("file1000001.h5"))
    assert (res.center_fraction, res.acceleration) in {(0.08, 4.0), (0.04, 8.0)}
    assert res.num_low_frequencies == round(368 * res.center_fraction)
    assert res.effective_acceleration == 368 / res.mask.sum()
    assert M.effective_acceleration(res) == res.effective_acceleration
    # the centre block holds the DC column W // 2 and is contiguous
    start = (368 - res.num_low_frequencies + 1) // 2
    assert res.mask[start : start + res.num_low_frequencies].all()
    assert start <= 368 // 2 < start + res.num_low_frequencies


def test_seed_from_filename():
    assert M.seed_from_filename("file1000001.h5") == tuple(ord(c) for c in "file1000001.h5")
    assert M.seed_from_filename("/data/knee/val/file1000001.h5") == M.seed_from_filename(
        "file1000001.h5"
    )
    a = M.RandomMask(0.08, 4)((368,), M.seed_from_filename("file1000001.h5")).mask
    b = M.RandomMask(0.08, 4)((368,), M.seed_from_filename("file1000002.h5")).mask
    assert not np.array_equal(a, b)


# --------------------------------------------------------------------------------------------
# apply_mask
# --------------------------------------------------------------------------------------------


def _kspace(shape, dtype=np.complex64, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    k = k.astype(dtype)
    k.real[..., 0, :] = -0.0  # negative zeros: fastMRI's "+ 0.0" must clear them
    return k


@pytest.mark.parametrize("padding", [None, (17, 351), (0, 368), (5, 400)])
@pytest.mark.parametrize("shape", [(32, 368), (3, 32, 368)])
def test_apply_mask_equals_fastmri(shape, padding):
    transforms = pytest.importorskip("fastmri.data.transforms")
    k = _kspace(shape)
    seed = M.seed_from_filename("file1000001.h5")
    fm_func = fm_subsample.RandomMaskFunc([0.08], [4])
    fm_out, fm_mask, fm_low = transforms.apply_mask(
        torch.view_as_real(torch.from_numpy(k)), fm_func, seed=seed, padding=padding
    )
    res = M.RandomMask([0.08], [4])(shape, seed)
    assert res.num_low_frequencies == fm_low

    out_np, used_np = M.apply_mask(k, res, padding)
    assert out_np.dtype == np.complex64 and out_np.shape == shape
    np.testing.assert_array_equal(used_np, fm_mask.numpy().ravel() == 1)
    fm_complex = torch.view_as_complex(fm_out.contiguous()).numpy()
    # exact values and the same signs of zero (bitwise equality of the float32 words)
    np.testing.assert_array_equal(out_np.view(np.uint32), fm_complex.view(np.uint32))

    out_t, used_t = M.apply_mask(torch.from_numpy(k), res.mask, padding)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.complex64
    assert used_t.dtype == torch.bool
    assert torch.equal(torch.view_as_real(out_t), fm_out)
    np.testing.assert_array_equal(
        torch.view_as_real(out_t).numpy().view(np.uint32), fm_out.numpy().view(np.uint32)
    )
    if padding is not None:
        left, right = padding
        assert not used_np[:left].any() and not used_np[right:].any()
        assert np.array_equal(used_np[left:right], res.mask[left:right])


def test_apply_mask_padding_window_is_exact():
    # fastMRI: mask[..., :left, :] = 0 and mask[..., right:, :] = 0 -> columns left..right-1 stay
    k = _kspace((4, 368))
    out, used = M.apply_mask(k, np.ones(368, bool), (17, 351))
    assert used.tolist() == [False] * 17 + [True] * (351 - 17) + [False] * (368 - 351)
    np.testing.assert_array_equal(out[:, 17:351], k[:, 17:351] + 0.0)
    assert not out[:, :17].any() and not out[:, 351:].any()
    # a right edge beyond W clamps like slicing: nothing removed on the right
    assert M.apply_mask(k, np.ones(368, bool), (0, 400))[1].all()


def test_apply_mask_2d_and_float_masks():
    k = _kspace((2, 48, 40), np.complex128)
    res = M.GaussianMask(0.1, 4)((48, 40), seed=1)
    out, used = M.apply_mask(k, res.mask.astype(np.float32))  # 0/1 floats accepted
    assert out.dtype == np.complex128
    np.testing.assert_array_equal(used, res.mask)
    np.testing.assert_array_equal(out[:, res.mask], k[:, res.mask] + 0.0)
    dropped = out[:, ~res.mask]
    assert np.all(dropped == 0)
    assert not np.signbit(dropped.real).any() and not np.signbit(dropped.imag).any()


def test_apply_mask_errors():
    k = _kspace((16, 368))
    with pytest.raises(InputError) as err:
        M.apply_mask(k, np.ones(372, bool), source="file1.h5")
    assert str(err.value) == "file1.h5: mask of length 372 does not fit k-space width 368"
    with pytest.raises(InputError, match=r"^mask of length 372 does not fit k-space width 368$"):
        M.apply_mask(k, np.ones(372, bool))
    with pytest.raises(InputError, match="must be complex"):
        M.apply_mask(torch.view_as_real(torch.from_numpy(k)), np.ones(368, bool))
    with pytest.raises(InputError, match="does not fit k-space shape"):
        M.apply_mask(k, np.ones((15, 368), bool))
    with pytest.raises(InputError, match="values must be 0 or 1"):
        M.apply_mask(k, np.full(368, 0.5))
    with pytest.raises(InputError, match="leaves no acquired columns"):
        M.apply_mask(k, np.ones(368, bool), (200, 100))
    with pytest.raises(InputError, match="two non-negative ints"):
        M.apply_mask(k, np.ones(368, bool), (-1, 100))


# --------------------------------------------------------------------------------------------
# effective acceleration statistics (368 columns, 500 seeds)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask_type", "cf", "acc", "expected", "rel_tol"),
    [
        # random: E[samples] = W / R, so W / samples averages just above R (Jensen): 2 %
        ("random", 0.08, 4, 4.0, 0.02),
        ("random", 0.04, 8, 8.0, 0.02),
        # equispaced: lines on top of the centre -> well below nominal (fastMRI's design)
        ("equispaced", 0.08, 4, 3.24, 0.01),
        ("equispaced", 0.04, 8, 6.22, 0.01),
        ("equispaced_fraction", 0.08, 4, 4.0, 0.01),
        ("equispaced_fraction", 0.04, 8, 8.0, 0.01),
        ("magic", 0.08, 4, 3.23, 0.01),
        # magic_fraction overshoots: its outer lines may fall inside the centre block
        ("magic_fraction", 0.08, 4, 4.30, 0.01),
    ],
)
def test_mean_effective_acceleration(mask_type, cf, acc, expected, rel_tol):
    func = M.create_mask(mask_type, cf, acc)
    eff = np.array([func((640, 368), seed).effective_acceleration for seed in range(500)])
    assert abs(eff.mean() - expected) <= rel_tol * expected, eff.mean()
    if mask_type == "equispaced":
        assert eff.max() < acc  # never reaches the nominal rate


def test_effective_acceleration_function():
    m = np.zeros(368, bool)
    m[::4] = True
    assert M.effective_acceleration(m) == 4.0
    assert M.effective_acceleration(M.to_fastmri_layout(m, (1, 640, 368, 2))) == 4.0
    assert M.effective_acceleration(torch.from_numpy(m)) == 4.0
    with pytest.raises(InputError, match="acquires nothing"):
        M.effective_acceleration(np.zeros(8))


# --------------------------------------------------------------------------------------------
# 2-D masks
# --------------------------------------------------------------------------------------------


def _calib_box(res, h, w):
    c = res.num_low_frequencies
    y0, x0 = (h - c + 1) // 2, (w - c + 1) // 2
    box = np.zeros((h, w), bool)
    box[y0 : y0 + c, x0 : x0 + c] = True
    return box


@pytest.mark.parametrize("cls", [M.PoissonDiscMask, M.GaussianMask])
@pytest.mark.parametrize(("h", "w", "acc"), [(96, 80, 4), (96, 80, 8), (128, 128, 6), (63, 77, 3)])
def test_2d_masks(cls, h, w, acc):
    func = cls(0.1, acc)
    res = func((2, h, w), seed=(1, 2, 3))
    assert res.mask.shape == (h, w) and res.mask.dtype == np.bool_
    assert res.num_low_frequencies == round(0.1 * min(h, w))
    box = _calib_box(res, h, w)
    assert res.mask[box].all()  # calibration square fully sampled
    assert box[h // 2, w // 2]  # ... and centred on DC
    assert res.effective_acceleration == h * w / res.mask.sum()
    # target reached: Gaussian exactly (round(HW/R) points), Poisson within 5 %
    if cls is M.GaussianMask:
        assert res.mask.sum() == round(h * w / acc)
    assert abs(res.effective_acceleration - acc) <= 0.05 * acc
    # deterministic under a seed, different for another seed
    again = cls(0.1, acc)((h, w), seed=(1, 2, 3))
    np.testing.assert_array_equal(again.mask, res.mask)
    other = func((h, w), seed=(1, 2, 4))
    assert not np.array_equal(other.mask, res.mask)
    # variable density: the inner disc (outside the calibration square) is denser than the rim
    rho = np.hypot(
        *np.meshgrid(
            (np.arange(h) - h // 2) / (h / 2), (np.arange(w) - w // 2) / (w / 2), indexing="ij"
        )
    )
    inner = (rho < 0.4) & ~box
    outer = rho > 0.8
    assert res.mask[inner].mean() > 1.5 * res.mask[outer].mean()


@pytest.mark.parametrize(("acc", "min_d2"), [(4, 2), (8, 4)])
def test_poisson_disc_spacing(acc, min_d2):
    # Uniform Poisson disc: no two non-calibration points closer than the disc, whereas
    # uniform i.i.d. sampling at the same density has neighbouring points.
    h, w = 96, 80
    res = M.PoissonDiscMask(0.08, acc, variable_density=0.0)((h, w), seed=5)
    assert abs(res.effective_acceleration - acc) <= 0.05 * acc
    pts = np.argwhere(res.mask & ~_calib_box(res, h, w))
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, 10**9)
    assert d2.min() >= min_d2
    flat = M.GaussianMask(0.08, acc, sigma=1e3)((h, w), seed=5)  # ~uniform random
    gp = np.argwhere(flat.mask & ~_calib_box(flat, h, w))
    g2 = ((gp[:, None, :] - gp[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(g2, 10**9)
    assert g2.min() < min_d2


def test_2d_mask_errors():
    with pytest.raises(InputError, match="calibration square has more points"):
        M.GaussianMask(0.9, 8)((32, 32), seed=0)
    with pytest.raises(InputError, match="sigma must be a positive number"):
        M.GaussianMask(0.1, 4, sigma=0.0)
    with pytest.raises(InputError, match="variable_density must be a number >= 0"):
        M.PoissonDiscMask(0.1, 4, variable_density=-1.0)
    with pytest.raises(InputError, match="at least 2 positive dimension"):
        M.PoissonDiscMask(0.1, 4)((64,), seed=0)


# --------------------------------------------------------------------------------------------
# errors and validation
# --------------------------------------------------------------------------------------------


def test_unknown_mask_type():
    with pytest.raises(InputError) as err:
        M.create_mask("radial", [0.08], [4])
    assert str(err.value) == (
        "unknown mask type 'radial' (choose from: random, equispaced, equispaced_fraction, "
        "magic, magic_fraction, poisson_disc, gaussian)"
    )
    assert err.value.source is None


@pytest.mark.parametrize(
    ("cfs", "accs", "kw", "message"),
    [
        ([1.5], [4], {}, r"^center fraction 1\.5 is outside \(0, 1\)$"),
        ([0.0], [4], {}, r"^center fraction 0\.0 is outside \(0, 1\)$"),
        ([0.08], [1], {}, r"^acceleration 1 must be greater than 1$"),
        ([0.08], [float("nan")], {}, "must be finite numbers"),
        ([], [], {}, "must not be empty"),
        ("0.08", [4], {}, "must be a number or a sequence"),
        ([0.08, 0.04], [4], {}, r"2 center fraction\(s\) but 1 acceleration\(s\)"),
        ([0.08], [4], {"seed": -1}, "invalid mask seed -1"),
    ],
)
def test_bad_parameters(cfs, accs, kw, message):
    with pytest.raises(InputError, match=message):
        M.RandomMask(cfs, accs, **kw)


def test_type_specific_constraints():
    with pytest.raises(InputError, match="equispaced masks need integer accelerations"):
        M.EquispacedMask([0.08], [4.5])
    with pytest.raises(InputError, match="magic masks need integer accelerations"):
        M.create_mask("magic", [0.08], [2.5])
    M.MagicFractionMask([0.08], [4.5])((368,), 0)  # fractional is fine where fastMRI rounds
    # integer-valued floats behave as the ints fastMRI expects
    a = M.EquispacedMask([0.08], [4.0])((368,), 3).mask
    np.testing.assert_array_equal(a, M.EquispacedMask([0.08], [4])((368,), 3).mask)
    with pytest.raises(InputError, match="equispaced_fraction: the 93 centre columns"):
        M.EquispacedFractionMask([0.25], [4])((372,), 0)
    with pytest.raises(InputError, match="magic_fraction: the 46 centre columns"):
        M.MagicFractionMask([0.2], [8])((368,), 0)
    with pytest.raises(InputError, match="keeps all 17 columns"):
        M.RandomMask([0.99], [4])((17,), 0)
    with pytest.raises(InputError, match="looks like a real view"):
        M.RandomMask([0.08], [4])((1, 640, 368, 2), 0)
    with pytest.raises(InputError, match="offset must be a non-negative int"):
        M.EquispacedMask([0.08], [4])((368,), 0, offset=-1)
    with pytest.raises(InputError, match="invalid mask seed"):
        M.RandomMask([0.08], [4])((368,), (1, -2))
    with pytest.raises(TypeError):  # offset is keyword-only: fastMRI's positional order differs
        M.RandomMask([0.08], [4])((368,), None, 3)
    with pytest.raises(InputError, match="does not fit fastMRI k-space shape"):
        M.to_fastmri_layout(np.ones(368, bool), (1, 640, 372, 2))


def test_module_does_not_import_compiled_ops():
    code = (
        "import sys, kspace_ldm.data.masks as m; "
        "bad = [n for n in sys.modules if n.startswith(('kspace_ldm.ops', 'kspace_ldm._C'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
