"""kldm::dc_residual against its pure-PyTorch twin: parity, norm accuracy, determinism, opcheck,
gradients, linearity/adjointness, export and errors."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import devices, seeded

import kspace_ldm.ops as ops
from kspace_ldm.ops import _reference as ref

SHAPES = [(7, 5), (8, 6), (2, 10, 14), (2, 3, 9, 11), (1, 4, 16, 17), (3, 1, 3, 5, 6)]

# sq_norm is accumulated in float64 by both the kernel and the twin, in different orders, and
# rounded once to the real dtype. Measured worst relative difference over this file's cases:
# 0.0 for float32 (the double sums round to the same float) and 4.4e-16 for float64.
NORM_RTOL = {torch.complex64: 1e-6, torch.complex128: 1e-13}


def _masks(shape, gen):
    """Every supported mask form: column, 2-D, per-sample, full, soft, row-broadcast."""
    H, W = shape[-2:]
    col = torch.rand(W, generator=gen) > 0.5
    out = {
        "column_bool": col,
        "column_float": col.float(),
        "column_double": col.double(),
        "2d_bool": torch.rand(H, W, generator=gen) > 0.6,
        "full_bool": torch.rand(shape, generator=gen) > 0.5,
        "soft_float": torch.rand(W, generator=gen),
        "rows_float": torch.rand(H, 1, generator=gen),  # stride 0 along W
    }
    if len(shape) >= 4:
        per_sample = [shape[0]] + [1] * (len(shape) - 2) + [W]
        out["per_sample"] = torch.rand(per_sample, generator=gen) > 0.5
    return out


def _check_norm(got, want, dtype):
    assert got.dtype == want.dtype and got.shape == want.shape
    err = ((got - want).abs() / want.abs().clamp_min(1e-30)).max()
    assert err <= NORM_RTOL[dtype], float(err)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype, device):
    gen = seeded(shape, dtype)
    pred = torch.randn(shape, dtype=dtype, generator=gen).to(device)
    meas = torch.randn(shape, dtype=dtype, generator=gen).to(device)
    for name, mask in _masks(shape, gen).items():
        mask = mask.to(device)
        r, sq = ops.dc_residual(pred, meas, mask)
        r_ref, sq_ref = ref.dc_residual(pred, meas, mask)
        # r = m * (p - q) is one subtraction and one product per part on both paths (no FMA can
        # form): bit-identical on CPU and CUDA.
        assert torch.equal(r, r_ref), name
        assert r.shape == pred.shape and r.dtype == dtype and r.is_contiguous()
        _check_norm(sq, sq_ref, dtype)
        assert sq.shape == ((shape[0],) if len(shape) >= 3 else ())


def test_norm_is_the_squared_norm_of_r(gen):
    pred = torch.randn(3, 2, 12, 7, dtype=torch.complex128, generator=gen)
    meas = torch.randn(3, 2, 12, 7, dtype=torch.complex128, generator=gen)
    mask = torch.rand(12, 7, generator=gen)
    r, sq = ops.dc_residual(pred, meas, mask)
    want = torch.stack([torch.vdot(v.flatten(), v.flatten()).real for v in r])
    torch.testing.assert_close(sq, want, rtol=1e-14, atol=0)  # measured 3.4e-16


def test_float32_norm_is_accumulated_in_double(gen):
    # A large sample with a wide dynamic range (bright centre lines): the double accumulation
    # leaves only the final rounding to float32 (measured 4.9e-8 relative, < 1 ulp).
    pred = torch.randn(2, 1, 384, 320, dtype=torch.complex64, generator=gen)
    pred[:, :, 190:194] *= 1e3  # a bright k-space centre
    meas = torch.zeros_like(pred)
    mask = torch.ones(320, dtype=torch.bool)
    _, sq = ops.dc_residual(pred, meas, mask)
    exact = torch.view_as_real(pred).double().square().sum(dim=(1, 2, 3, 4))
    assert ((sq.double() - exact).abs() / exact).max() < 6e-8


def test_deterministic_across_thread_counts(gen):
    pred = torch.randn(2, 3, 200, 150, dtype=torch.complex64, generator=gen)
    meas = torch.randn(2, 3, 200, 150, dtype=torch.complex64, generator=gen)
    mask = torch.rand(150, generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.dc_residual(pred, meas, mask)
        torch.set_num_threads(max(2, threads))
        many = ops.dc_residual(pred, meas, mask)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_non_contiguous_inputs(gen):
    pred = torch.randn(2, 4, 20, 18, dtype=torch.complex64, generator=gen).transpose(-1, -2)
    meas = torch.randn(2, 4, 40, 18, dtype=torch.complex64, generator=gen)[:, :, ::2]
    meas = meas.transpose(-1, -2)
    mask = (torch.rand(40, generator=gen) > 0.5)[::2]
    assert not pred.is_contiguous() and not meas.is_contiguous() and not mask.is_contiguous()
    r, sq = ops.dc_residual(pred, meas, mask)
    r_ref, sq_ref = ref.dc_residual(pred.contiguous(), meas.contiguous(), mask.contiguous())
    assert torch.equal(r, r_ref)
    _check_norm(sq, sq_ref, torch.complex64)


def test_empty_tensors():
    x = torch.zeros(0, 4, 5, dtype=torch.complex64)
    r, sq = ops.dc_residual(x, x, torch.ones(5, dtype=torch.bool))
    assert r.shape == (0, 4, 5) and sq.shape == (0,)
    x = torch.zeros(2, 0, 5, dtype=torch.complex128)
    r, sq = ops.dc_residual(x, x, torch.ones(5))
    assert r.shape == (2, 0, 5) and torch.equal(sq, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("device", devices())
def test_opcheck(gen, device):
    pred = torch.randn(2, 3, 6, 5, dtype=torch.complex64, generator=gen).to(device)
    meas = torch.randn(2, 3, 6, 5, dtype=torch.complex64, generator=gen).to(device)
    mask = (torch.rand(5, generator=gen) > 0.5).to(device)
    soft = torch.rand(6, 5, generator=gen).to(device)
    for args in [
        (pred, meas, mask),
        (pred[0, 0], meas[0, 0], mask.float()),
        (pred.clone().requires_grad_(), meas.clone().requires_grad_(), soft),
    ]:
        torch.library.opcheck(torch.ops.kldm.dc_residual.default, args)


def _res(p, q, mask):
    return ops.dc_residual(p, q, mask)


@pytest.mark.parametrize("device", devices())
def test_gradcheck_complex128(gen, device):
    def rand(*shape):
        return torch.randn(shape, dtype=torch.complex128, generator=gen).to(device)

    pred, meas = rand(2, 4, 3).requires_grad_(), rand(2, 4, 3).requires_grad_()
    for mask in [
        torch.tensor([True, False, True]),
        torch.rand(4, 3, generator=gen, dtype=torch.float64),
        torch.rand(2, 1, 3, generator=gen, dtype=torch.float64),
    ]:
        fn = functools.partial(_res, mask=mask.to(device))
        assert torch.autograd.gradcheck(fn, (pred, meas))
        assert torch.autograd.gradgradcheck(fn, (pred, meas))
    p2, q2 = rand(4, 3).requires_grad_(), rand(4, 3)  # 2-D input: [] norm
    fn = functools.partial(_res, mask=torch.rand(3, generator=gen).to(device))
    assert torch.autograd.gradcheck(fn, (p2, q2))


def test_norm_gradient_is_two_mask_r(gen):
    # PyTorch's gradient of a real loss w.r.t. a complex input is dL/dRe + i dL/dIm; for
    # sum |m (p - q)|^2 with a real mask that is 2 m r for pred and -2 m r for measured.
    pred = torch.randn(2, 3, 8, 5, dtype=torch.complex128, generator=gen, requires_grad=True)
    meas = torch.randn(2, 3, 8, 5, dtype=torch.complex128, generator=gen, requires_grad=True)
    mask = torch.rand(5, generator=gen, dtype=torch.float64)
    r, sq = ops.dc_residual(pred, meas, mask)
    gp, gq = torch.autograd.grad(sq.sum(), (pred, meas))
    torch.testing.assert_close(gp, 2 * mask * r.detach(), rtol=1e-15, atol=0)
    torch.testing.assert_close(gq, -2 * mask * r.detach(), rtol=1e-15, atol=0)
    # ... and the same as autograd through the twin.
    sq2 = ref.dc_residual(pred, meas, mask)[1]
    gp2, gq2 = torch.autograd.grad(sq2.sum(), (pred, meas))
    torch.testing.assert_close(gp, gp2, rtol=1e-14, atol=0)
    torch.testing.assert_close(gq, gq2, rtol=1e-14, atol=0)


def test_adjoint_and_linearity(gen):
    # As an operator on pred (measured = 0) the residual is diag(mask): self-adjoint and linear.
    shape = (2, 3, 10, 9)
    mask = torch.rand(10, 9, generator=gen)
    zeros = torch.zeros(shape, dtype=torch.complex128)
    x = torch.randn(shape, dtype=torch.complex128, generator=gen)
    y = torch.randn(shape, dtype=torch.complex128, generator=gen)
    A = lambda v: ops.dc_residual(v, zeros, mask)[0]  # noqa: E731
    lhs = torch.vdot(A(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), A(y).flatten())
    # complex128: measured |lhs - rhs| / |lhs| = 2.1e-16
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    # Joint linearity of r in (pred, measured), complex coefficients.
    a, b = 0.3 - 1.2j, 2.5 + 0.1j
    x2 = torch.randn(shape, dtype=torch.complex128, generator=gen)
    y2 = torch.randn(shape, dtype=torch.complex128, generator=gen)
    lin = ops.dc_residual(a * x + b * x2, a * y + b * y2, mask)[0]
    sep = a * ops.dc_residual(x, y, mask)[0] + b * ops.dc_residual(x2, y2, mask)[0]
    torch.testing.assert_close(lin, sep, rtol=1e-12, atol=1e-12)  # measured 1.8e-15
    # The norm is 2-homogeneous: sq(a p, a q) = |a|^2 sq(p, q).
    torch.testing.assert_close(
        ops.dc_residual(a * x, a * y, mask)[1],
        abs(a) ** 2 * ops.dc_residual(x, y, mask)[1],
        rtol=1e-13,  # measured 2.2e-16
        atol=0,
    )


def test_export_keeps_op_in_graph(gen):
    class Guidance(torch.nn.Module):
        def forward(self, k, k0, m):
            r, sq = ops.dc_residual(k, k0, m)
            return r, sq.sum()

    k = torch.randn(2, 1, 8, 6, dtype=torch.complex64, generator=gen)
    k0 = torch.randn(2, 1, 8, 6, dtype=torch.complex64, generator=gen)
    m = torch.rand(6, generator=gen) > 0.5
    ep = torch.export.export(Guidance(), (k, k0, m))
    assert "kldm.dc_residual" in str(ep.graph)
    r, loss = ep.module()(k, k0, m)
    r_ref, sq_ref = ref.dc_residual(k, k0, m)
    assert torch.equal(r, r_ref)
    torch.testing.assert_close(loss, sq_ref.sum())


@pytest.mark.parametrize(
    ("pred", "meas", "mask", "exc", "msg"),
    [
        ((4, 5), (4, 5), (5,), TypeError, "pred must be complex"),
        ((4, 5), (4, 6), (5,), ValueError, "does not match pred shape"),
        ((4, 5), (4, 5), (6,), ValueError, "does not broadcast"),
        ((2, 4, 5), (2, 4, 5), (3, 1, 5), ValueError, "does not broadcast"),
        ((4, 5), (4, 5), (2, 4, 5), ValueError, "mask must have 1 to 2 dims"),
        ((5,), (5,), (5,), ValueError, "with 2 to"),
    ],
)
def test_errors(pred, meas, mask, exc, msg):
    dt = torch.float32 if msg == "pred must be complex" else torch.complex64
    with pytest.raises(exc, match=msg):
        ops.dc_residual(torch.zeros(pred, dtype=dt), torch.zeros(meas, dtype=dt), torch.ones(mask))


def test_dtype_mismatch_errors():
    p = torch.zeros(4, 5, dtype=torch.complex64)
    with pytest.raises(TypeError, match="measured must have pred's dtype"):
        ops.dc_residual(p, p.to(torch.complex128), torch.ones(5))
    with pytest.raises(TypeError, match="mask must be bool or real"):
        ops.dc_residual(p, p, torch.ones(5, dtype=torch.complex64))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_is_deterministic(gen):
    pred = torch.randn(3, 4, 130, 97, dtype=torch.complex64, generator=gen)
    meas = torch.randn(3, 4, 130, 97, dtype=torch.complex64, generator=gen)
    mask = torch.rand(3, 1, 1, 97, generator=gen) > 0.5
    r_cpu, sq_cpu = ops.dc_residual(pred, meas, mask)
    runs = [ops.dc_residual(pred.cuda(), meas.cuda(), mask.cuda()) for _ in range(3)]
    for r, sq in runs:
        assert torch.equal(r.cpu(), r_cpu)
        assert torch.equal(sq, runs[0][1])  # fixed reduction order: the same bits every run
        _check_norm(sq.cpu(), sq_cpu, torch.complex64)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_error():
    p = torch.zeros(4, 5, dtype=torch.complex64)
    with pytest.raises(ValueError, match="is on"):
        ops.dc_residual(p.cuda(), p, torch.ones(5, device="cuda"))
    with pytest.raises(ValueError, match="mask is on"):
        ops.dc_residual(p.cuda(), p.cuda(), torch.ones(5))
