"""kldm::kspace_normalize / kldm::kspace_denormalize against their pure-PyTorch twins: layout,
parity, statistics accuracy, exact round trip, constant channels, determinism, opcheck, gradients,
adjointness, export and errors."""

from __future__ import annotations

import pytest
import torch
from helpers import devices, seeded

import kspace_ldm.ops as ops
from kspace_ldm.ops import _reference as ref
from kspace_ldm.physics.transforms import channels_to_complex, complex_to_channels

SHAPES = [(1, 1, 4, 5), (2, 3, 7, 9), (3, 2, 8, 6), (2, 1, 33, 17), (1, 2, 130, 129)]
CDTYPES = [torch.complex64, torch.complex128]

# Normalised values vs the twin (which takes mean/std with torch.mean/torch.std in the data's own
# precision, while the kernel accumulates in float64): |got - want| <= ATOL + RTOL |want|.
# Measured worst |got - want| over the parity cases: 4.8e-7 (float32) and 2.0e-14 (float64).
Y_TOL = {
    torch.complex64: dict(rtol=2e-6, atol=2e-6),
    torch.complex128: dict(rtol=1e-13, atol=1e-13),
}
# Statistics vs a float64 evaluation of the twin, relative to max(|mean|, std) and std: the
# kernel's float32 statistics are within ~1 ulp of the exact value, float64 ones within the twin's
# own rounding. Measured worst: mean 4.6e-8, std 5.5e-8 (float32); mean 6.5e-16, std 5.4e-15
# (float64).
STAT_TOL = {torch.complex64: 1.2e-7, torch.complex128: 1e-13}


def _kspace(shape, dtype, gen, device="cpu"):
    # Per-channel offsets and scales, so centring and scaling both matter.
    B, C = shape[:2]
    k = torch.randn(shape, dtype=dtype, generator=gen)
    scale = torch.rand(B, C, 1, 1, generator=gen, dtype=torch.float64) * 5 + 0.1
    offset = torch.randn(B, C, 1, 1, generator=gen, dtype=torch.float64) * 3
    return (k * scale.to(dtype) + (offset * (1 - 2j)).to(dtype)).to(device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", CDTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_normalize_matches_reference(shape, dtype, device):
    k = _kspace(shape, dtype, seeded(shape, dtype), device)
    y, mean, std = ops.kspace_normalize(k)
    y_ref = ref.kspace_normalize(k)[0]
    B, C, H, W = shape
    real = dtype.to_real()
    assert y.shape == (B, 2 * C, H, W) and y.dtype == real and y.is_contiguous()
    assert mean.shape == std.shape == (B, 2 * C, 1, 1) and mean.dtype == std.dtype == real
    torch.testing.assert_close(y, y_ref, **Y_TOL[dtype])
    # Statistics against the twin evaluated in float64 (the kernel accumulates in float64).
    _, mean64, std64 = ref.kspace_normalize(k.to(torch.complex128))
    scale = torch.maximum(mean64.abs(), std64)
    assert ((mean.double() - mean64).abs() / scale).max() <= STAT_TOL[dtype]
    assert ((std.double() - std64).abs() / std64).max() <= STAT_TOL[dtype]
    # The output is exactly (channel - mean) / std with the statistics returned.
    assert torch.equal(y, ref.kspace_normalize(k, mean, std)[0])
    # The normalised channels have mean 0 and unbiased std 1.
    torch.testing.assert_close(y.mean(dim=(-2, -1)), torch.zeros_like(y[..., 0, 0]), **Y_TOL[dtype])
    ones = torch.ones_like(y[..., 0, 0])
    torch.testing.assert_close(y.std(dim=(-2, -1)), ones, rtol=1e-5, atol=1e-5)


def test_layout_matches_complex_to_channels(gen):
    k = torch.randn(2, 3, 5, 4, dtype=torch.complex64, generator=gen)
    zero = torch.zeros((), dtype=torch.float32)
    one = torch.ones((), dtype=torch.float32)
    y, mean, std = ops.kspace_normalize(k, zero, one)
    assert torch.equal(y, complex_to_channels(k))
    assert torch.equal(mean, torch.zeros(2, 6, 1, 1)) and torch.equal(std, torch.ones(2, 6, 1, 1))
    # Channel 2c is Re(coil c), 2c + 1 is Im(coil c).
    y, mean, std = ops.kspace_normalize(k)
    torch.testing.assert_close(y[:, 2] * std[:, 2] + mean[:, 2], k[:, 1].real)
    torch.testing.assert_close(y[:, 3] * std[:, 3] + mean[:, 3], k[:, 1].imag)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", CDTYPES)
def test_given_statistics(dtype, device):
    gen = seeded("given", dtype)
    B, C = 3, 2
    k = _kspace((B, C, 9, 7), dtype, gen, device)
    real = dtype.to_real()
    for shape in [(), (1,), (2 * C, 1, 1), (1, 2 * C, 1, 1), (B, 2 * C, 1, 1), (B, 1, 1, 1)]:
        mean = torch.randn(shape, dtype=real, generator=gen).to(device)
        std = (torch.rand(shape, dtype=real, generator=gen) + 0.5).to(device)
        y, m, s = ops.kspace_normalize(k, mean, std)
        y_ref, m_ref, s_ref = ref.kspace_normalize(k, mean, std)
        # Same formula, same operation order: bit-identical (CUDA's division is IEEE too).
        assert torch.equal(y, y_ref), shape
        # Given statistics come back unchanged, broadcast to [B, 2C, 1, 1] (fresh tensors).
        assert torch.equal(m, mean.expand(B, 2 * C, 1, 1)) and m.shape == (B, 2 * C, 1, 1)
        assert torch.equal(s, std.expand(B, 2 * C, 1, 1))
        assert m.data_ptr() != mean.data_ptr() and s.data_ptr() != std.data_ptr()
        assert torch.equal(s_ref, s) and torch.equal(m_ref, m)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", CDTYPES)
@pytest.mark.parametrize("shape", SHAPES[1:])
def test_round_trip(shape, dtype, device):
    k = _kspace(shape, dtype, seeded("rt", shape, dtype), device)
    y, mean, std = ops.kspace_normalize(k)
    back = ops.kspace_denormalize(y, mean, std)
    assert back.shape == k.shape and back.dtype == dtype and back.is_contiguous()
    # Exact to rounding: (x - m) / s * s + m differs from x by a few ulp of max(|x|, |m|).
    # Measured worst: 1.07 ulp (float32), 1.38 ulp (float64); bound 3 ulp.
    ulp = torch.finfo(dtype.to_real()).eps
    x, x_back = complex_to_channels(k), complex_to_channels(back)
    err = (x_back - x).abs() / (x.abs() + mean.abs())
    assert err.max() <= 3 * ulp, float(err.max() / ulp)
    # The twin inverts exactly the same way.
    want = ref.kspace_denormalize(y, mean, std)
    if device == "cpu":
        assert torch.equal(back, want)  # mul then add, no FMA on the CPU path: bit-identical
    else:
        # CUDA contracts y * s + m into one FMA: within one rounding of the twin.
        torch.testing.assert_close(back, want, rtol=2 * ulp, atol=2 * ulp * float(mean.abs().max()))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", CDTYPES)
def test_denormalize_matches_reference(dtype, device):
    gen = seeded("denorm", dtype)
    real = dtype.to_real()
    x = torch.randn(2, 6, 11, 13, dtype=real, generator=gen).to(device)
    for shape in [(), (6, 1, 1), (2, 6, 1, 1), (1, 6, 1, 1), (2, 1, 1, 1)]:
        mean = torch.randn(shape, dtype=real, generator=gen).to(device)
        std = torch.rand(shape, dtype=real, generator=gen).to(device) + 0.1
        got = ops.kspace_denormalize(x, mean, std)
        want = ref.kspace_denormalize(x, mean, std)
        assert got.shape == (2, 3, 11, 13) and got.dtype == dtype
        if device == "cpu":
            assert torch.equal(got, want), shape
        else:  # FMA on CUDA; measured 1 ulp
            ulp = torch.finfo(real).eps
            torch.testing.assert_close(got, want, rtol=2 * ulp, atol=2 * ulp * 5)
        # Given zero mean and unit std it is channels_to_complex.
    assert torch.equal(
        ops.kspace_denormalize(
            x, torch.zeros((), dtype=real, device=device), torch.ones((), dtype=real, device=device)
        ),
        channels_to_complex(x),
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", CDTYPES)
def test_constant_channels(dtype, device):
    # Real-valued k-space (zero imaginary part) and a constant non-zero coil: std 0, so those
    # channels are centred only (divisor 1), exactly 0, and the round trip is exact.
    gen = seeded("const", dtype)
    real = torch.randn(2, 2, 6, 5, generator=gen, dtype=torch.float64)
    k = torch.complex(real, torch.zeros_like(real)).to(dtype)
    k[:, 1] = 0.1 - 0.3j
    k = k.to(device)
    y, mean, std = ops.kspace_normalize(k)
    assert torch.equal(std[:, [1, 2, 3]], torch.ones_like(std[:, [1, 2, 3]]))
    assert torch.equal(y[:, [1, 2, 3]], torch.zeros_like(y[:, [1, 2, 3]]))
    assert torch.equal(mean[:, 1], torch.zeros_like(mean[:, 1]))
    assert torch.equal(mean[:, 2], torch.full_like(mean[:, 2], k[0, 1, 0, 0].real.item()))
    assert torch.equal(mean[:, 3], torch.full_like(mean[:, 3], k[0, 1, 0, 0].imag.item()))
    assert torch.equal(ops.kspace_denormalize(y, mean, std)[:, 1], k[:, 1])
    std_ref = ref.kspace_normalize(k)[2]
    assert torch.equal(std == 1, std_ref == 1)  # the twin guards the same channels
    assert torch.isfinite(y).all()
    # A given std below eps is guarded the same way.
    z = torch.zeros((), dtype=dtype.to_real(), device=device)
    y0, _, s0 = ops.kspace_normalize(k, z, z)
    assert torch.equal(s0, torch.ones_like(s0)) and torch.equal(y0, complex_to_channels(k))


def test_offset_data_statistics_are_stable(gen):
    # float32 channels with a large offset (1e4) and a small spread: the textbook formula
    # E[x^2] - E[x]^2 in float32 would lose the variance entirely; the shifted float64 sums keep it
    # to ~1 ulp of float32.
    k = torch.complex(
        torch.randn(2, 1, 256, 200, generator=gen) + 1e4,
        torch.randn(2, 1, 256, 200, generator=gen) * 1e-3 - 5e3,
    )
    _, mean, std = ops.kspace_normalize(k)
    _, mean64, std64 = ref.kspace_normalize(k.to(torch.complex128))
    assert ((std.double() - std64).abs() / std64).max() < 1.2e-7  # measured 5.6e-8
    assert ((mean.double() - mean64).abs() / mean64.abs()).max() < 1.2e-7


def test_deterministic_across_thread_counts(gen):
    k = torch.randn(2, 2, 300, 170, dtype=torch.complex64, generator=gen) + 3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.kspace_normalize(k)
        torch.set_num_threads(max(2, threads))
        many = ops.kspace_normalize(k)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, many, strict=True))


def test_non_contiguous_inputs(gen):
    k = torch.randn(2, 3, 12, 10, dtype=torch.complex64, generator=gen).transpose(-1, -2)
    assert not k.is_contiguous()
    want = ops.kspace_normalize(k.contiguous())
    for got, exp in zip(ops.kspace_normalize(k), want, strict=True):
        assert torch.equal(got, exp)
    y, mean, std = ops.kspace_normalize(k)
    x = y.transpose(0, 1).contiguous().transpose(0, 1)  # same values, channel-major strides
    mean_nc = mean.transpose(0, 1).contiguous().transpose(0, 1)
    assert not x.is_contiguous()
    got = ops.kspace_denormalize(x, mean_nc, std)
    assert torch.equal(got, ops.kspace_denormalize(y, mean, std))


def test_empty_tensors():
    k = torch.zeros(0, 2, 4, 5, dtype=torch.complex64)
    y, mean, std = ops.kspace_normalize(k)
    assert y.shape == (0, 4, 4, 5) and mean.shape == std.shape == (0, 4, 1, 1)
    x = torch.zeros(2, 4, 0, 5)
    z = ops.kspace_denormalize(x, torch.zeros(()), torch.ones(()))
    assert z.shape == (2, 2, 0, 5) and z.dtype == torch.complex64


@pytest.mark.parametrize("device", devices())
def test_opcheck(gen, device):
    k = torch.randn(2, 2, 5, 4, dtype=torch.complex64, generator=gen).to(device)
    mean = torch.randn(1, 4, 1, 1, generator=gen).to(device)
    std = (torch.rand(4, 1, 1, generator=gen) + 0.5).to(device)
    x = torch.randn(2, 4, 5, 4, generator=gen).to(device)
    cases = [
        (torch.ops.kldm.kspace_normalize.default, (k,)),
        (torch.ops.kldm.kspace_normalize.default, (k.clone().requires_grad_(),)),
        (
            torch.ops.kldm.kspace_normalize.default,
            (k.clone().requires_grad_(), mean.clone().requires_grad_(), std, 1e-6),
        ),
        (torch.ops.kldm.kspace_denormalize.default, (x, mean, std)),
        (
            torch.ops.kldm.kspace_denormalize.default,
            (x.clone().requires_grad_(), mean, std.clone().requires_grad_()),
        ),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", devices())
def test_gradcheck_computed_statistics(gen, device):
    k = torch.randn(2, 2, 3, 4, dtype=torch.complex128, generator=gen).to(device).requires_grad_()
    assert torch.autograd.gradcheck(ops.kspace_normalize, (k,))
    assert torch.autograd.gradgradcheck(ops.kspace_normalize, (k,))


@pytest.mark.parametrize("device", devices())
def test_gradcheck_given_statistics(gen, device):
    k = torch.randn(2, 2, 3, 4, dtype=torch.complex128, generator=gen).to(device).requires_grad_()
    mean = torch.randn(1, 4, 1, 1, dtype=torch.float64, generator=gen).to(device).requires_grad_()
    std = (torch.rand(4, 1, 1, dtype=torch.float64, generator=gen) + 0.5).to(device)
    std.requires_grad_()
    assert torch.autograd.gradcheck(ops.kspace_normalize, (k, mean, std))
    assert torch.autograd.gradgradcheck(ops.kspace_normalize, (k, mean, std))
    scalar_std = torch.tensor(0.7, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.kspace_normalize, (k, mean, scalar_std))


@pytest.mark.parametrize("device", devices())
def test_gradcheck_denormalize(gen, device):
    def rand(*shape):
        return torch.randn(shape, dtype=torch.float64, generator=gen).to(device).requires_grad_()

    x, mean = rand(2, 4, 3, 4), rand(4, 1, 1)
    std = (torch.rand(2, 4, 1, 1, dtype=torch.float64, generator=gen) + 0.5).to(device)
    std.requires_grad_()
    assert torch.autograd.gradcheck(ops.kspace_denormalize, (x, mean, std))
    assert torch.autograd.gradgradcheck(ops.kspace_denormalize, (x, mean, std))
    scalar_mean = torch.tensor(0.3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.kspace_denormalize, (x, scalar_mean, std))


def test_gradients_match_twin_including_constant_channels(gen):
    # Autograd through the twin (torch.mean / torch.std / torch.where) gives the same gradients,
    # also for a channel whose std is guarded (zero imaginary part: divisor 1, no std term).
    re = torch.randn(2, 2, 6, 5, dtype=torch.float64, generator=gen)
    im = torch.randn(2, 2, 6, 5, dtype=torch.float64, generator=gen)
    im[:, 1] = 0
    k = torch.complex(re, im).requires_grad_()
    w = [torch.randn(s, dtype=torch.float64, generator=gen) for s in [(2, 4, 6, 5), (2, 4, 1, 1)]]

    def loss(fn):
        y, mean, std = fn(k)
        return (y * w[0]).sum() + (mean * w[1]).sum() + (std * w[1].flip(0)).sum()

    (g,) = torch.autograd.grad(loss(ops.kspace_normalize), k)
    (g_ref,) = torch.autograd.grad(loss(ref.kspace_normalize), k)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)  # measured 4.0e-15


def test_adjoint_of_the_linear_parts(gen):
    # With mean = 0 and a given std, normalize is linear (complex -> real, real inner product) and
    # denormalize is linear (real -> complex): <A x, y> == <x, A^H y>, and each is the other's
    # inverse: A^H here is denormalize with 1/std.
    k = torch.randn(2, 3, 7, 6, dtype=torch.complex128, generator=gen)
    y = torch.randn(2, 6, 7, 6, dtype=torch.float64, generator=gen)
    zero = torch.zeros((), dtype=torch.float64)
    std = torch.rand(2, 6, 1, 1, dtype=torch.float64, generator=gen) + 0.5
    Ak = ops.kspace_normalize(k, zero, std)[0]
    AHy = ops.kspace_denormalize(y, zero, 1 / std)
    lhs = (Ak * y).sum()
    rhs = torch.vdot(k.flatten(), AHy.flatten()).real
    assert abs(lhs - rhs) / abs(lhs) < 1e-12  # measured 1.2e-14 (and 9e-15 below)
    Dy = ops.kspace_denormalize(y, zero, std)
    DHk = ops.kspace_normalize(k, zero, 1 / std)[0]
    assert abs(torch.vdot(Dy.flatten(), k.flatten()).real - (y * DHk).sum()) < 1e-12 * abs(lhs)
    # Linearity of denormalize's data part: D(a x + b x2) = a D x + b D x2 (mean 0).
    y2 = torch.randn_like(y)
    torch.testing.assert_close(
        ops.kspace_denormalize(0.3 * y - 2.0 * y2, zero, std),
        0.3 * Dy - 2.0 * ops.kspace_denormalize(y2, zero, std),
        rtol=1e-13,
        atol=1e-13,
    )


def test_export_keeps_ops_in_graph(gen):
    class Codec(torch.nn.Module):
        def forward(self, k):
            y, mean, std = ops.kspace_normalize(k)
            return ops.kspace_denormalize(y * 0.5, mean, std)

    k = torch.randn(2, 1, 8, 6, dtype=torch.complex64, generator=gen)
    ep = torch.export.export(Codec(), (k,))
    graph = str(ep.graph)
    assert "kldm.kspace_normalize" in graph and "kldm.kspace_denormalize" in graph
    torch.testing.assert_close(ep.module()(k), Codec()(k))


@pytest.mark.parametrize(
    ("kshape", "kdtype", "mean", "std", "exc", "msg"),
    [
        ((1, 1, 4, 5), torch.float32, None, None, TypeError, "kspace must be complex"),
        ((1, 4, 5), torch.complex64, None, None, ValueError, r"must be \[B, C, H, W\]"),
        ((1, 1, 1, 1), torch.complex64, None, None, ValueError, "H \\* W >= 2"),
        ((1, 1, 4, 5), torch.complex64, (), None, ValueError, "given together"),
        ((1, 1, 4, 5), torch.complex64, (3, 1, 1), (), ValueError, "mean shape"),
        ((2, 1, 4, 5), torch.complex64, (), (1, 2, 4, 5), ValueError, "does not broadcast"),
        ((1, 1, 4, 5), torch.complex64, (2,), (2,), ValueError, "does not broadcast"),
    ],
)
def test_normalize_errors(kshape, kdtype, mean, std, exc, msg):
    k = torch.ones(kshape, dtype=kdtype)
    m = None if mean is None else torch.zeros(mean)
    s = None if std is None else torch.ones(std)
    with pytest.raises(exc, match=msg):
        ops.kspace_normalize(k, m, s)


def test_normalize_dtype_and_eps_errors():
    k = torch.ones(1, 1, 4, 5, dtype=torch.complex64)
    with pytest.raises(TypeError, match="mean must be Float"):
        ops.kspace_normalize(k, torch.zeros((), dtype=torch.float64), torch.ones(()))
    with pytest.raises(TypeError, match="std must be Double"):
        ops.kspace_normalize(
            k.to(torch.complex128), torch.zeros((), dtype=torch.float64), torch.ones(())
        )
    with pytest.raises(ValueError, match="eps must be finite"):
        ops.kspace_normalize(k, eps=-1.0)


@pytest.mark.parametrize(
    ("xshape", "xdtype", "mshape", "sdtype", "exc", "msg"),
    [
        ((1, 2, 4, 5), torch.complex64, (), torch.float32, TypeError, "x must be float32"),
        ((1, 3, 4, 5), torch.float32, (), torch.float32, ValueError, "even channel count"),
        ((2, 4, 5), torch.float32, (), torch.float32, ValueError, r"\[B, 2C, H, W\]"),
        ((1, 2, 4, 5), torch.float32, (1, 2, 4, 5), torch.float32, ValueError, "mean shape"),
        ((1, 2, 4, 5), torch.float32, (), torch.float64, TypeError, "std must be Float"),
    ],
)
def test_denormalize_errors(xshape, xdtype, mshape, sdtype, exc, msg):
    with pytest.raises(exc, match=msg):
        ops.kspace_denormalize(
            torch.zeros(xshape, dtype=xdtype), torch.zeros(mshape), torch.ones((), dtype=sdtype)
        )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_is_deterministic(gen):
    k = _kspace((3, 2, 200, 97), torch.complex64, gen)
    y_cpu, m_cpu, s_cpu = ops.kspace_normalize(k)
    runs = [ops.kspace_normalize(k.cuda()) for _ in range(3)]
    for y, m, s in runs:
        assert all(torch.equal(a, b) for a, b in zip((y, m, s), runs[0], strict=True))
        torch.testing.assert_close(m.cpu(), m_cpu, rtol=2e-7, atol=1e-7)  # ~1 ulp apart
        torch.testing.assert_close(s.cpu(), s_cpu, rtol=2e-7, atol=0)
        torch.testing.assert_close(y.cpu(), y_cpu, **Y_TOL[torch.complex64])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_errors():
    k = torch.ones(1, 1, 4, 5, dtype=torch.complex64, device="cuda")
    with pytest.raises(ValueError, match="mean is on"):
        ops.kspace_normalize(k, torch.zeros(()), torch.ones((), device="cuda"))
    with pytest.raises(ValueError, match="std is on"):
        ops.kspace_denormalize(
            torch.zeros(1, 2, 4, 5, device="cuda"), torch.zeros((), device="cuda"), torch.ones(())
        )
