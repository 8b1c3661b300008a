"""Tests for kspace_ldm.physics: centred FFTs, SENSE operator, coil sensitivities, layout,
crop/pad helpers and fastMRI image formation.

fastMRI (installed without its dependencies) serves as the independent reference for the FFT,
RSS, crop and image-formation conventions. Tolerances are stated next to each check together with
the worst case measured on CPU (torch 2.13, x86-64) when the test was written.
"""

from __future__ import annotations

import math

import fastmri
import pytest
import torch
import torch.nn.functional as F
from fastmri.data import transforms as fm_transforms

from kspace_ldm.errors import InputError
from kspace_ldm.physics import (
    InputTypeError,
    InputValueError,
    PadInfo,
    center_crop,
    center_crop_to_smallest,
    channels_to_complex,
    coil_combine,
    complex_to_channels,
    estimate_sensitivities,
    fft2c,
    ifft2c,
    kspace_to_image,
    pad_to_multiple,
    pad_width,
    rss,
    sense_adjoint,
    sense_forward,
    unpad,
    unpad_width,
    zero_filled,
)

C64, C128, F64 = torch.complex64, torch.complex128, torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randc(*shape: int, dtype=C128, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=_gen(seed))


def _vdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex inner product <a, b> = sum conj(a) * b over all entries."""
    return torch.vdot(a.reshape(-1), b.reshape(-1))


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.linspace(-1, 1, h, dtype=F64)[:, None]
    x = torch.linspace(-1, 1, w, dtype=F64)[None, :]
    return y, x


def _phantom(h: int, w: int, phase: bool = False) -> torch.Tensor:
    """Piecewise-constant ellipse phantom ``[h, w]`` complex128, intensities in [0.5, 1.35] inside
    the outer ellipse and 0 outside; optionally with a smooth non-trivial phase."""
    y, x = _grid(h, w)
    img = torch.zeros(h, w, dtype=F64)
    ellipses = [  # (centre y, centre x, radius y, radius x, value)
        (0.0, 0.0, 0.85, 0.7, 1.0),
        (0.2, -0.25, 0.3, 0.2, -0.4),
        (-0.3, 0.2, 0.25, 0.3, 0.35),
        (0.45, 0.2, 0.12, 0.1, -0.5),
    ]
    for cy, cx, ry, rx, v in ellipses:
        img = img + v * (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1)
    img = img.to(C128)
    if phase:
        img = img * torch.exp(1j * (0.8 * x + 0.5 * y**2 + 0.3))
    return img


def _true_maps(batch: int, coils: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random coil maps ``[batch, coils, h, w]`` complex128 with sum_c |S_c|^2 = 1.

    Coils sit (with random jitter) on a circle outside the field of view, Gaussian magnitude
    fall-off, random linear phase plus a random constant phase per coil.
    """
    g = _gen(seed)
    y, x = _grid(h, w)
    maps = torch.empty(batch, coils, h, w, dtype=C128)
    for b in range(batch):
        for c in range(coils):
            angle = 2 * math.pi * c / coils + 0.3 * torch.rand((), generator=g, dtype=F64)
            py, px = 1.3 * torch.sin(angle), 1.3 * torch.cos(angle)
            mag = torch.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * 0.8**2))
            ky, kx, p0 = torch.randn(3, generator=g, dtype=F64) * torch.tensor([1.0, 1.0, 3.0])
            maps[b, c] = mag * torch.exp(1j * (ky * y + kx * x + p0))
    return maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)


def _interior(image: torch.Tensor, erode: int = 3) -> torch.Tensor:
    """Object support of ``image [h, w]`` eroded by ``erode`` pixels, ``[h, w]`` bool."""
    support = (image.abs() > 0).to(F64)[None, None]
    eroded = -F.max_pool2d(-support, 2 * erode + 1, stride=1, padding=erode)
    return eroded[0, 0] > 0.5


def _align_per_pixel(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Remove the per-pixel phase common to all coils (dim 1) from ``est`` relative to ``ref``."""
    common = (ref.conj() * est).sum(dim=1, keepdim=True)
    return est * (common.conj() / common.abs().clamp_min(1e-300))


def _map_error(est: torch.Tensor, ref: torch.Tensor, where: torch.Tensor) -> tuple[float, float]:
    """(max, rms) over pixels in ``where`` of the coil-vector error ||est - ref||_2 per pixel."""
    per_pixel = torch.linalg.vector_norm(est - ref, dim=1)[:, where]
    return per_pixel.max().item(), per_pixel.pow(2).mean().sqrt().item()


# =============================================================================================
# Centred FFTs
# =============================================================================================

FFT_SHAPES = [(7, 5), (8, 6), (10, 14), (6, 10), (2, 640, 368), (3, 2, 9, 11)]


@pytest.mark.parametrize("shape", FFT_SHAPES)
@pytest.mark.parametrize("dtype", [C64, C128])
def test_fft2c_matches_fastmri(shape, dtype):
    x = _randc(*shape, dtype=dtype, seed=1)
    ours_f = torch.view_as_real(fft2c(x))
    ours_i = torch.view_as_real(ifft2c(x))
    ref_f = fastmri.fft2c(torch.view_as_real(x))
    ref_i = fastmri.ifft2c(torch.view_as_real(x))
    # Measured: bit-identical (max abs diff 0.0) for every shape/dtype here; the slack only
    # allows a different FFT backend, relative to the data magnitude (~4).
    atol = 1e-5 if dtype == C64 else 1e-12
    torch.testing.assert_close(ours_f, ref_f, rtol=0, atol=atol)
    torch.testing.assert_close(ours_i, ref_i, rtol=0, atol=atol)


@pytest.mark.parametrize("shape", FFT_SHAPES)
@pytest.mark.parametrize("dtype", [C64, C128])
def test_fft2c_round_trip_and_parseval(shape, dtype):
    x = _randc(*shape, dtype=dtype, seed=2)
    # Round trip, measured max abs error: complex64 9.7e-7, complex128 1.8e-15 (|x| <= 3.7).
    atol = 1e-5 if dtype == C64 else 1e-13
    torch.testing.assert_close(ifft2c(fft2c(x)), x, rtol=0, atol=atol)
    torch.testing.assert_close(fft2c(ifft2c(x)), x, rtol=0, atol=atol)
    # Orthonormal: energy preserved. Measured relative error: complex64 1.2e-7, complex128 4.4e-16.
    rtol = 1e-5 if dtype == C64 else 1e-13
    ratio = (fft2c(x).abs().pow(2).sum() / x.abs().pow(2).sum()).item()
    assert abs(ratio - 1) < rtol


@pytest.mark.parametrize("shape", [(7, 5), (8, 6), (10, 14), (6, 10)])
def test_fft2c_dc_at_centre(shape):
    # A constant image puts all its energy in the DC sample at (H // 2, W // 2).
    h, w = shape
    k = fft2c(torch.ones(h, w, dtype=C128))
    expected = torch.zeros(h, w, dtype=C128)
    expected[h // 2, w // 2] = math.sqrt(h * w)
    torch.testing.assert_close(k, expected, rtol=0, atol=1e-12)  # measured 1.8e-15


@pytest.mark.parametrize("shape", FFT_SHAPES)
def test_fft2c_adjoint_is_ifft2c(shape):
    x = _randc(*shape, seed=3)
    y = _randc(*shape, seed=4)
    lhs = _vdot(fft2c(x), y)
    rhs = _vdot(x, ifft2c(y))
    # Measured |lhs - rhs| / |lhs| <= 2.6e-14 (complex128, worst for 640x368).
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


# =============================================================================================
# SENSE operator
# =============================================================================================

B, C, H, W = 2, 4, 12, 10


def _mask_variants() -> dict[str, torch.Tensor | None]:
    g = _gen(5)
    cols = torch.rand(W, generator=g) < 0.5
    cols[W // 2] = True
    return {
        "none": None,
        "column_bool_[W]": cols,
        "column_float_[B,1,1,W]": torch.rand(B, 1, 1, W, generator=g, dtype=F64),
        "2d_bool_[H,W]": torch.rand(H, W, generator=g) < 0.4,
        "2d_float_[1,1,H,W]": torch.rand(1, 1, H, W, generator=g, dtype=F64),
        "row_[H,1]": torch.rand(H, 1, generator=g) < 0.5,
        "per_coil_[B,C,H,W]": torch.rand(B, C, H, W, generator=g) < 0.5,
    }


MASKS = _mask_variants()


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("maps_batch", [B, 1])
@pytest.mark.parametrize("image_rank", [3, 4])
def test_sense_adjoint_identity(mask_name, maps_batch, image_rank):
    mask = MASKS[mask_name]
    maps = _randc(maps_batch, C, H, W, seed=6)
    x = _randc(B, 1, H, W, seed=7)
    y = _randc(B, C, H, W, seed=8)
    x_in = x[:, 0] if image_rank == 3 else x
    ax = sense_forward(x_in, maps, mask)
    ahy = sense_adjoint(y, maps, mask)
    assert ax.shape == (B, C, H, W) and ahy.shape == (B, 1, H, W)
    lhs = _vdot(ax, y)
    rhs = _vdot(x, ahy)
    # Measured relative mismatch <= 4.6e-15 (complex128) over all variants.
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@pytest.mark.parametrize("mask_name", ["none", "column_bool_[W]", "2d_bool_[H,W]"])
def test_sense_forward_matches_per_coil_fastmri(mask_name):
    mask = MASKS[mask_name]
    maps = _randc(B, C, H, W, seed=9)
    x = _randc(B, H, W, seed=10)
    expected = torch.empty(B, C, H, W, dtype=C128)
    for b in range(B):
        for c in range(C):
            coil = torch.view_as_real(maps[b, c] * x[b])
            expected[b, c] = torch.view_as_complex(fastmri.fft2c(coil).contiguous())
    if mask is not None:
        expected = expected * mask.to(F64).reshape(1, 1, *mask.shape[-2:])
    # Measured max abs diff 0.0 (identical operations); bound relative to |k| <= 2.7.
    torch.testing.assert_close(sense_forward(x, maps, mask), expected, rtol=0, atol=1e-12)


def test_sense_adjoint_explicit_and_bool_float_masks_agree():
    maps = _randc(B, C, H, W, seed=11)
    y = _randc(B, C, H, W, seed=12)
    cols = MASKS["column_bool_[W]"]
    expected = (maps.conj() * ifft2c(y * cols.to(F64))).sum(1, keepdim=True)
    torch.testing.assert_close(sense_adjoint(y, maps, cols), expected, rtol=0, atol=1e-13)
    # bool and 0/1 float masks are the same operator; both are exact (multiplication by 0/1).
    assert torch.equal(sense_adjoint(y, maps, cols), sense_adjoint(y, maps, cols.to(F64)))
    assert torch.equal(
        sense_forward(y[:, :1], maps, cols), sense_forward(y[:, :1], maps, cols.float())
    )


def test_sense_linearity():
    maps = _randc(B, C, H, W, seed=13)
    mask = MASKS["column_float_[B,1,1,W]"]
    x1, x2 = _randc(B, 1, H, W, seed=14), _randc(B, 1, H, W, seed=15)
    y1, y2 = _randc(B, C, H, W, seed=16), _randc(B, C, H, W, seed=17)
    a, b = 0.7 - 1.3j, -2.1 + 0.4j
    # Measured max abs error 1.6e-15 (forward) and 2.4e-15 (adjoint); values ~10.
    torch.testing.assert_close(
        sense_forward(a * x1 + b * x2, maps, mask),
        a * sense_forward(x1, maps, mask) + b * sense_forward(x2, maps, mask),
        rtol=0,
        atol=1e-12,
    )
    torch.testing.assert_close(
        sense_adjoint(a * y1 + b * y2, maps, mask),
        a * sense_adjoint(y1, maps, mask) + b * sense_adjoint(y2, maps, mask),
        rtol=0,
        atol=1e-12,
    )


def test_sense_normal_operator_is_identity_for_normalised_maps():
    # Without a mask and with sum_c |S_c|^2 = 1, A^H A = I.
    maps = _true_maps(B, C, H, W, seed=18)
    x = _randc(B, 1, H, W, seed=19)
    torch.testing.assert_close(  # measured max abs error 1.3e-15
        sense_adjoint(sense_forward(x, maps), maps), x, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(coil_combine(maps * x, maps), x, rtol=0, atol=1e-12)


def test_sense_autograd_gradient_is_adjoint_of_residual():
    # d/dx* of ||A x - y||^2 is A^H (A x - y); PyTorch reports twice that for complex leaves.
    maps = _randc(B, C, H, W, seed=20)
    mask = MASKS["2d_bool_[H,W]"]
    x = _randc(B, 1, H, W, seed=21).requires_grad_(True)
    y = _randc(B, C, H, W, seed=22)
    loss = (sense_forward(x, maps, mask) - y).abs().pow(2).sum()
    (grad,) = torch.autograd.grad(loss, x)
    expected = 2 * sense_adjoint(sense_forward(x.detach(), maps, mask) - y, maps, mask)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)  # measured 3.6e-15


def test_sense_complex64():
    maps = _randc(B, C, H, W, dtype=C64, seed=23)
    x = _randc(B, 1, H, W, dtype=C64, seed=24)
    y = _randc(B, C, H, W, dtype=C64, seed=25)
    mask = MASKS["column_float_[B,1,1,W]"]  # float64 mask must not promote to complex128
    ax, ahy = sense_forward(x, maps, mask), sense_adjoint(y, maps, mask)
    assert ax.dtype == C64 and ahy.dtype == C64
    lhs, rhs = _vdot(ax, y), _vdot(x, ahy)
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)  # measured relative mismatch 8.1e-7


# =============================================================================================
# RSS and cropping
# =============================================================================================


def test_rss_matches_fastmri():
    real = torch.randn(2, 5, 9, 7, dtype=F64, generator=_gen(26))
    torch.testing.assert_close(rss(real, dim=1), fastmri.rss(real, dim=1), rtol=1e-13, atol=0)
    torch.testing.assert_close(rss(real), fastmri.rss(real, dim=1), rtol=1e-13, atol=0)
    cplx = _randc(2, 5, 9, 7, seed=27)
    ref = fastmri.rss_complex(torch.view_as_real(cplx), dim=1)
    # Measured max relative difference 2.2e-16 (different summation order).
    torch.testing.assert_close(rss(cplx), ref, rtol=1e-13, atol=0)
    assert rss(cplx).dtype == F64
    assert rss(cplx.to(C64)).dtype == torch.float32
    assert rss(cplx, dim=0, keepdim=True).shape == (1, 5, 9, 7)


def test_rss_gradient_finite_at_zero():
    x = torch.zeros(1, 3, 4, 4, dtype=C128, requires_grad=True)
    (grad,) = torch.autograd.grad(rss(x).sum(), x)
    assert torch.isfinite(torch.view_as_real(grad)).all()


@pytest.mark.parametrize(
    ("shape", "crop"),
    [((7, 5), (3, 2)), ((8, 6), (5, 5)), ((10, 14), (10, 14)), ((2, 640, 368), (320, 320)),
     ((3, 9, 11), (4, 7)), ((1, 2, 641, 372), (320, 320))],
)  # fmt: skip
def test_center_crop_matches_fastmri(shape, crop):
    x = torch.randn(*shape, dtype=F64, generator=_gen(28))
    assert torch.equal(center_crop(x, crop), fm_transforms.center_crop(x, crop))
    z = _randc(*shape, seed=29)  # complex input is cropped the same way
    assert torch.equal(center_crop(z, crop).real, fm_transforms.center_crop(z.real, crop))
    assert torch.equal(center_crop(z, crop).imag, fm_transforms.center_crop(z.imag, crop))


def test_center_crop_to_smallest_matches_fastmri():
    a = torch.randn(2, 11, 8, dtype=F64, generator=_gen(30))
    b = torch.randn(2, 7, 13, dtype=F64, generator=_gen(31))
    ours = center_crop_to_smallest(a, b)
    ref = fm_transforms.center_crop_to_smallest(a, b)
    assert ours[0].shape == ours[1].shape == (2, 7, 8)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


def test_center_crop_errors():
    x = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="larger than"):
        center_crop(x, (5, 5))
    with pytest.raises(ValueError, match="pair"):
        center_crop(x, (3,))
    with pytest.raises(TypeError, match="int"):
        center_crop(x, (2.5, 2))


# =============================================================================================
# Padding
# =============================================================================================


@pytest.mark.parametrize(("width", "target"), [(368, 384), (372, 384), (17, 24), (17, 17)])
def test_pad_width_round_trip(width, target):
    k = _randc(2, 3, 16, width, dtype=C64, seed=32)
    padded, info = pad_width(k, target)
    left = target // 2 - width // 2  # DC column W // 2 lands on target // 2
    assert padded.shape == (2, 3, 16, target)
    assert info == PadInfo(original_size=(16, width), pad_w=(left, target - width - left))
    assert info.padded_size == (16, target)
    assert torch.equal(padded[..., left : left + width], k)
    assert not padded[..., :left].any() and not padded[..., left + width :].any()
    assert torch.equal(unpad_width(padded, info), k)  # exact, not approximately equal
    assert torch.equal(unpad(padded, info), k)
    if width % 2 == 0:  # even fastMRI widths: the DC column stays centred
        assert left + width // 2 == target // 2


@pytest.mark.parametrize(
    ("size", "multiples", "padded_size"),
    [((640, 368), (16, 16), (640, 368)), ((640, 372), (16, 16), (640, 384)),
     ((640, 372), (1, 32), (640, 384)), ((17, 17), (4, 8), (20, 24)),
     ((21, 372), (8, 32), (24, 384)), ((5, 3), (1, 1), (5, 3))],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [C64, torch.float32])
def test_pad_to_multiple_round_trip(size, multiples, padded_size, dtype):
    x = torch.randn(2, *size, generator=_gen(33)).to(dtype)
    padded, info = pad_to_multiple(x, *multiples)
    assert padded.shape == (2, *padded_size)
    assert info.original_size == size and info.padded_size == padded_size
    # The centre sample (DC of centred k-space) stays centred: index n // 2 -> padded n // 2.
    assert info.pad_h[0] == padded_size[0] // 2 - size[0] // 2
    assert info.pad_w[0] == padded_size[1] // 2 - size[1] // 2
    assert torch.equal(unpad(padded, info), x)
    outside = padded.clone()
    outside[
        ..., info.pad_h[0] : info.pad_h[0] + size[0], info.pad_w[0] : info.pad_w[0] + size[1]
    ] = 0
    assert not outside.any()  # everything outside the original window is zero


def test_pad_unpad_gradient_passes_through():
    x = _randc(1, 9, 13, seed=34).requires_grad_(True)
    padded, info = pad_to_multiple(x, 4, 8)
    (grad,) = torch.autograd.grad(unpad(padded * 3, info).real.sum(), x)
    torch.testing.assert_close(grad, torch.full_like(x, 3), rtol=0, atol=0)


def test_padding_errors():
    k = _randc(1, 8, 20, seed=35)
    with pytest.raises(ValueError, match="smaller than the k-space width"):
        pad_width(k, 16)
    with pytest.raises(InputError, match="multiple_w"):
        pad_to_multiple(k, 2, 0)
    padded, info = pad_width(k, 24)
    with pytest.raises(ValueError, match="do not match the padded size"):
        unpad(padded[..., 1:], info)
    with pytest.raises(TypeError, match="PadInfo"):
        unpad(padded, (8, 20))
    with pytest.raises(ValueError):
        PadInfo(original_size=(8, 20), pad_w=(-1, 2))
    with pytest.raises(AttributeError):  # frozen
        info.pad_w = (0, 0)


def _bar_kspace(height: int, width: int, offset: int) -> torch.Tensor:
    """k-space of a smooth vertical bar (Gaussian profile) centred ``offset`` columns right of
    the image centre, on a faint disc so the image is not trivially sparse."""
    y, x = _grid(height, width)
    cols = torch.arange(width, dtype=F64)[None, :] - width // 2
    image = torch.exp(-((cols - offset) ** 2) / (2 * 1.5**2)) * (y.abs() < 0.8)
    image = image + 0.1 * ((y**2 + x**2) < 0.8)
    return fft2c(image.to(C128))


def test_unpadding_removes_reference_zoom_bug():
    offset = 100
    k = _bar_kspace(320, 368, offset)  # a fastMRI knee width
    padded, info = pad_width(k, 384)  # what the reference fed its autoencoder

    # Fixed: unpad, then form the image -> identical to the original, bit for bit.
    restored = kspace_to_image(unpad_width(padded, info), crop=(320, 320))
    assert torch.equal(restored, kspace_to_image(k, crop=(320, 320)))

    # The bug is real: imaging the padded k-space magnifies the width by 384/368 and scales the
    # intensity by sqrt(368/384), so the bar moves from 100 to ~104.3 columns off centre.
    full = kspace_to_image(k, crop=None)
    zoomed = kspace_to_image(padded, crop=None)
    profile, zoomed_profile = full[160], zoomed[160]
    assert profile.argmax().item() - 368 // 2 == offset
    moved = zoomed_profile.argmax().item() - 384 // 2
    assert abs(moved - offset * 384 / 368) <= 1 and moved - offset >= 3
    # Exact consequence of the orthonormal FFT: the complex image sum scales by sqrt(384/368).
    ratio = (ifft2c(padded).sum() / ifft2c(k).sum()).item()
    assert abs(ratio - math.sqrt(384 / 368)) < 1e-12  # measured < 1e-15
    # The 320x320 crops differ grossly. Measured relative L2 difference 0.87.
    a = kspace_to_image(padded, crop=(320, 320))
    b = kspace_to_image(k, crop=(320, 320))
    assert ((a - b).norm() / b.norm()).item() > 0.3


# =============================================================================================
# Image formation
# =============================================================================================


def test_kspace_to_image_single_coil_matches_fastmri():
    k = _randc(2, 40, 36, dtype=C64, seed=36)
    ref = fm_transforms.center_crop(
        fastmri.complex_abs(fastmri.ifft2c(torch.view_as_real(k))), (32, 30)
    )
    ours = kspace_to_image(k, crop=(32, 30))
    assert ours.shape == (2, 32, 30) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)  # measured max abs diff 2.4e-7


def test_kspace_to_image_multi_coil_matches_fastmri():
    k = _randc(2, 5, 40, 36, seed=37)
    coil_images = fastmri.complex_abs(fastmri.ifft2c(torch.view_as_real(k)))
    ref = fm_transforms.center_crop(fastmri.rss(coil_images, dim=1), (32, 30))
    for coil_dim in (1, -3):
        ours = kspace_to_image(k, crop=(32, 30), coil_dim=coil_dim)
        assert ours.shape == (2, 32, 30)
        torch.testing.assert_close(ours, ref, rtol=1e-13, atol=0)  # measured 2.2e-16 relative
    assert kspace_to_image(k, crop=None, coil_dim=1).shape == (2, 40, 36)


def test_zero_filled_is_image_of_masked_kspace():
    k = _randc(2, 5, 40, 36, seed=38)
    cols = torch.zeros(36, dtype=torch.bool)
    cols[14:22] = True
    cols[::4] = True
    masked = k * cols
    zf = zero_filled(masked, crop=(32, 32), coil_dim=1)
    assert torch.equal(zf, kspace_to_image(masked, crop=(32, 32), coil_dim=1))
    assert not torch.allclose(zf, kspace_to_image(k, crop=(32, 32), coil_dim=1))


def test_kspace_to_image_errors():
    k = _randc(2, 5, 40, 36, seed=39)
    with pytest.raises(TypeError, match="complex"):
        kspace_to_image(k.real)
    with pytest.raises(ValueError, match="coil dim"):
        kspace_to_image(k, crop=None, coil_dim=2)
    with pytest.raises(ValueError, match="larger than"):
        kspace_to_image(k, crop=(320, 320))


# =============================================================================================
# Complex <-> channels
# =============================================================================================


@pytest.mark.parametrize("dtype", [C64, C128])
def test_complex_to_channels_layout_and_round_trip(dtype):
    x = _randc(2, 3, 5, 4, dtype=dtype, seed=40)
    ch = complex_to_channels(x)
    assert ch.shape == (2, 6, 5, 4) and ch.dtype == x.real.dtype and ch.is_contiguous()
    for c in range(3):  # [re0, im0, re1, im1, re2, im2]
        assert torch.equal(ch[:, 2 * c], x[:, c].real)
        assert torch.equal(ch[:, 2 * c + 1], x[:, c].imag)
    back = channels_to_complex(ch)
    assert back.dtype == dtype and torch.equal(back, x)
    # Single coil: (B, 2, H, W) with channel 0 real, 1 imaginary, as the reference used.
    single = complex_to_channels(x[:, :1])
    assert torch.equal(single, torch.stack([x[:, 0].real, x[:, 0].imag], dim=1))


def test_channels_round_trip_other_direction_and_gradient():
    ch = torch.randn(2, 8, 6, 5, dtype=F64, generator=_gen(41), requires_grad=True)
    assert torch.equal(complex_to_channels(channels_to_complex(ch)), ch)
    (grad,) = torch.autograd.grad(channels_to_complex(ch).imag.sum(), ch)
    assert torch.equal(grad[:, 1::2], torch.ones_like(grad[:, 1::2]))
    assert not grad[:, 0::2].any()


def test_channels_errors():
    with pytest.raises(TypeError, match="complex"):
        complex_to_channels(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="shape"):
        complex_to_channels(torch.zeros(3, 3, dtype=C64))
    with pytest.raises(ValueError, match="even"):
        channels_to_complex(torch.zeros(1, 3, 4, 4))
    with pytest.raises(TypeError, match="float32"):
        channels_to_complex(torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16))
    with pytest.raises(TypeError):
        channels_to_complex(torch.zeros(1, 2, 4, 4, dtype=C64))


# =============================================================================================
# Sensitivity estimation
# =============================================================================================

SB, SC, SH, SW, ACS = 2, 8, 96, 80, 24


@pytest.fixture(scope="module")
def synthetic():
    """Fully sampled multi-coil k-space of the phantom with known normalised maps."""
    maps = _true_maps(SB, SC, SH, SW, seed=42)
    image = _phantom(SH, SW)
    kspace = fft2c(maps * image)
    return maps, image, kspace, _interior(image)


def _acs_plus_equispaced(width: int, acs: int, step: int) -> torch.Tensor:
    """Column mask: ``acs`` centre columns (fastMRI placement) + every ``step``-th column,
    keeping one empty column on each side of the ACS so it stays a separate block."""
    lo = (width - acs + 1) // 2
    mask = torch.zeros(width, dtype=torch.bool)
    mask[1::step] = True
    mask[lo - 1] = mask[lo + acs] = False
    mask[lo : lo + acs] = True
    return mask


def test_estimate_matches_true_maps_up_to_common_phase(synthetic):
    maps, image, kspace, inside = synthetic
    est = estimate_sensitivities(kspace, num_low_frequencies=ACS)
    assert est.shape == maps.shape and est.dtype == maps.dtype

    # Real positive phantom: the common phase is one constant per sample.
    common = (maps.conj() * est)[:, :, inside].sum(dim=(1, 2))
    aligned = est * (common.conj() / common.abs())[:, None, None, None]
    worst, rms = _map_error(aligned, maps, inside)
    # Coil-vector error per pixel inside the object (eroded by 3 px), sum_c |S_c|^2 = 1.
    # Measured: max 0.055, rms 0.0098.
    assert worst < 0.07 and rms < 0.015

    # sum_c |S_c|^2 = 1 where there is signal (measured max deviation 1.1e-11; eps = 1e-6).
    energy = est.abs().pow(2).sum(dim=1)[:, inside]
    assert (energy - 1).abs().max().item() < 1e-9

    # SENSE combination of the coil images reproduces the phantom.
    combined = coil_combine(ifft2c(kspace), est)[:, 0]
    rel = (combined.abs() - image.abs())[:, inside].norm() / image.abs()[inside].expand(
        SB, -1
    ).norm()
    assert rel.item() < 1e-3  # measured 3.1e-5 (the map error enters only at second order)
    # ... and its phase is ~0: the maps absorb the (here zero) image phase.
    assert combined[:, inside].angle().abs().max().item() < 0.1  # measured 0.049


def test_estimate_with_phase_phantom_per_pixel_phase(synthetic):
    maps, _, _, inside = synthetic
    image = _phantom(SH, SW, phase=True)
    kspace = fft2c(maps * image)
    est = estimate_sensitivities(kspace, num_low_frequencies=ACS)
    # The maps carry the low-resolution image phase, common to all coils, removed per pixel.
    worst, rms = _map_error(_align_per_pixel(est, maps), maps, inside)
    assert worst < 0.04 and rms < 0.01  # measured max 0.025, rms 0.0066
    combined = coil_combine(ifft2c(kspace), est)[:, 0]
    rel = (combined.abs() - image.abs())[:, inside].norm() / image.abs()[inside].expand(
        SB, -1
    ).norm()
    assert rel.item() < 1e-3  # measured 3.1e-5


def test_estimate_uses_only_the_calibration_region(synthetic):
    _, _, kspace, _ = synthetic
    under = kspace * _acs_plus_equispaced(SW, ACS, 4)
    from_full = estimate_sensitivities(kspace, num_low_frequencies=ACS)
    from_under = estimate_sensitivities(under, num_low_frequencies=ACS)
    assert torch.equal(from_full, from_under)


def test_estimate_calibration_sources_agree(synthetic):
    _, _, kspace, _ = synthetic
    mask = _acs_plus_equispaced(SW, ACS, 4)
    under = kspace * mask
    explicit = estimate_sensitivities(under, num_low_frequencies=ACS)
    lo = (SW - ACS + 1) // 2
    calib = torch.zeros(SW, dtype=torch.bool)
    calib[lo : lo + ACS] = True
    # The same region and window however it is specified: bit-identical maps.
    assert torch.equal(estimate_sensitivities(under), explicit)  # auto-detect
    assert torch.equal(estimate_sensitivities(under, calib_mask=calib), explicit)  # [W] bool
    assert torch.equal(estimate_sensitivities(under, calib_mask=calib.double()[None, :]), explicit)
    assert torch.equal(
        estimate_sensitivities(under, num_low_frequencies=torch.tensor(ACS)), explicit
    )


def test_estimate_per_sample_calibration_sizes(synthetic):
    _, _, kspace, _ = synthetic
    sizes = torch.tensor([16, 27])
    per_sample = estimate_sensitivities(kspace, num_low_frequencies=sizes)
    calib = torch.zeros(SB, 1, 1, SW)
    for b, n in enumerate(sizes.tolist()):
        lo = (SW - n + 1) // 2
        calib[b, ..., lo : lo + n] = 1
        single = estimate_sensitivities(kspace[b : b + 1], num_low_frequencies=n)
        assert torch.equal(per_sample[b : b + 1], single)
    assert torch.equal(estimate_sensitivities(kspace, calib_mask=calib), per_sample)
    assert torch.equal(estimate_sensitivities(kspace * calib), per_sample)  # auto-detect


def test_estimate_2d_calibration_box(synthetic):
    maps, _, kspace, inside = synthetic
    box = torch.zeros(SH, SW, dtype=torch.bool)
    box[SH // 2 - 12 : SH // 2 + 12, (SW - ACS + 1) // 2 : (SW - ACS + 1) // 2 + ACS] = True
    est = estimate_sensitivities(kspace * box, calib_mask=box)
    # Windowed along both dims now. Measured max 0.025, rms 0.0072.
    worst, rms = _map_error(_align_per_pixel(est, maps), maps, inside)
    assert worst < 0.04 and rms < 0.012
    # Without a window the estimate is exactly "low-res coil images / their RSS".
    plain = estimate_sensitivities(kspace, calib_mask=box, window_alpha=0.0, eps=0.0)
    low_res = ifft2c(kspace * box)
    expected = low_res / rss(low_res, dim=1, keepdim=True)
    torch.testing.assert_close(plain, expected, rtol=0, atol=1e-13)  # measured 0.0


def test_estimate_fully_sampled_auto_detect_is_exact(synthetic):
    # All columns sampled -> no truncation -> no window -> maps = x / rss(x) = S * phase(m).
    maps, _, kspace, _ = synthetic
    est = estimate_sensitivities(kspace)
    support = _interior(_phantom(SH, SW), erode=0)
    worst, _ = _map_error(est, maps, support)
    assert worst < 1e-9  # measured 3.6e-12 (the eps = 1e-6 regulariser at the object edge)


def test_estimate_window_matters_and_default_beats_none(synthetic):
    maps, _, kspace, inside = synthetic
    errors = {}
    for alpha in (0.0, 0.5, 1.0):
        est = estimate_sensitivities(kspace, num_low_frequencies=ACS, window_alpha=alpha)
        errors[alpha] = _map_error(_align_per_pixel(est, maps), maps, inside)[1]
    # Measured rms: rectangular 0.0159, Tukey-0.5 (default) 0.0065, Hann 0.0116.
    assert errors[0.5] < errors[1.0] < errors[0.0]
    assert torch.equal(
        estimate_sensitivities(kspace, num_low_frequencies=ACS),
        estimate_sensitivities(kspace, num_low_frequencies=ACS, window_alpha=0.5),
    )


def test_estimate_scale_invariance_and_zero_input(synthetic):
    _, image, kspace, _ = synthetic
    support = _interior(image, erode=0)
    est = estimate_sensitivities(kspace, num_low_frequencies=ACS)
    phase = complex(math.cos(0.7), math.sin(0.7))
    for scale, expected in ((1e-5, est), (3.7, est), (phase, phase * est)):
        out = estimate_sensitivities(scale * kspace, num_low_frequencies=ACS)
        # On the object: rounding only, measured max abs diff 5.9e-16.
        torch.testing.assert_close(out[:, :, support], expected[:, :, support], rtol=0, atol=1e-12)
        # In the background the maps are the direction of a tiny low-res vector (rss down to
        # ~1e-6 of the peak), which amplifies rounding: measured max abs diff 2.9e-10.
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-8)
    # An all-zero sample gives zero maps, not NaN, and leaves the other sample untouched.
    mixed = kspace.clone()
    mixed[1] = 0
    out = estimate_sensitivities(mixed.to(C64), num_low_frequencies=ACS)
    assert out.dtype == C64 and torch.isfinite(torch.view_as_real(out)).all()
    assert not out[1].any()


def test_estimate_threshold_zeroes_background(synthetic):
    _, image, kspace, inside = synthetic
    est = estimate_sensitivities(kspace, num_low_frequencies=ACS, threshold=0.05)
    far = _interior((image.abs() == 0).to(C128), erode=8)  # background 8 px away from object
    assert not est[:, :, far].any()
    assert (est.abs().pow(2).sum(1)[:, inside] - 1).abs().max() < 1e-9


def test_estimate_is_differentiable(synthetic):
    _, _, kspace, _ = synthetic
    k = kspace[:1, :, ::4, ::4].clone().requires_grad_(True)  # 24 x 20, small for speed
    est = estimate_sensitivities(k, num_low_frequencies=6)
    (grad,) = torch.autograd.grad(est.real.sum(), k)
    assert torch.isfinite(torch.view_as_real(grad)).all() and grad.abs().sum() > 0


def test_estimate_errors(synthetic):
    _, _, kspace, _ = synthetic
    lo = (SW - ACS + 1) // 2
    calib = torch.zeros(SW)
    calib[lo : lo + ACS] = 1
    with pytest.raises(ValueError, match="not both"):
        estimate_sensitivities(kspace, num_low_frequencies=ACS, calib_mask=calib)
    for bad in (0, SW + 1, torch.tensor([ACS, 0])):
        with pytest.raises(InputValueError, match=r"\[1, 80\]"):
            estimate_sensitivities(kspace, num_low_frequencies=bad)
    with pytest.raises(TypeError, match="integer"):
        estimate_sensitivities(kspace, num_low_frequencies=torch.tensor(24.0))
    with pytest.raises(ValueError, match="contiguous"):
        estimate_sensitivities(kspace, calib_mask=_acs_plus_equispaced(SW, ACS, 4))
    with pytest.raises(ValueError, match="selects no"):
        estimate_sensitivities(kspace, calib_mask=torch.zeros(SW))
    no_centre = kspace.clone()
    no_centre[..., SW // 2] = 0
    with pytest.raises(InputError, match="centre column 40 is all zero"):
        estimate_sensitivities(no_centre)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        estimate_sensitivities(kspace[0])
    with pytest.raises(TypeError, match="complex"):
        estimate_sensitivities(kspace.real)
    with pytest.raises(ValueError, match="window_alpha"):
        estimate_sensitivities(kspace, window_alpha=1.5)


# =============================================================================================
# Errors of the SENSE functions
# =============================================================================================


def test_sense_errors_are_clear():
    maps = _randc(B, C, H, W, seed=43)
    x = _randc(B, H, W, seed=44)
    y = _randc(B, C, H, W, seed=45)

    with pytest.raises(TypeError, match=r"sense_forward\(image\): must be complex"):
        sense_forward(x.real, maps)
    with pytest.raises(InputError):  # the same error is also an InputError for the CLI
        sense_forward(x.real, maps)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        sense_forward(x.numpy(), maps)
    with pytest.raises(ValueError, match=r"sense_forward\(maps\): must have shape"):
        sense_forward(x, maps[0])
    with pytest.raises(ValueError, match="does not match maps"):
        sense_forward(x[..., 1:], maps)
    with pytest.raises(ValueError, match="does not match maps"):
        sense_forward(x[:, None].expand(B, 2, H, W), maps)
    with pytest.raises(ValueError, match="maps batch must be 1"):
        sense_forward(x[:1], maps)  # image batch 1 cannot broadcast over maps batch 2
    with pytest.raises(TypeError, match="differs from maps dtype"):
        sense_forward(x.to(C64), maps)
    with pytest.raises(ValueError, match="does not match maps"):
        sense_adjoint(y[:, 1:], maps)
    with pytest.raises(ValueError, match="does not match maps"):
        coil_combine(y, maps[:, 1:])
    with pytest.raises(ValueError, match="does not broadcast"):
        sense_forward(x, maps, torch.ones(W + 1))
    with pytest.raises(ValueError, match=r"\[B, 1, 1, W\]"):
        sense_adjoint(y, maps, torch.ones(B, H, W))  # 3-D masks are ambiguous
    with pytest.raises(ValueError, match="does not broadcast"):
        sense_adjoint(y, maps, torch.ones(B, W))  # [B, W] is not [H, W]
    with pytest.raises(TypeError, match="real"):
        sense_adjoint(y, maps, torch.ones(W, dtype=C64))
    with pytest.raises(ValueError, match="dim"):
        rss(y, dim=4)
    with pytest.raises(TypeError):
        rss(torch.ones(3, 3, dtype=torch.int64))
    assert issubclass(InputTypeError, TypeError) and issubclass(InputValueError, ValueError)
