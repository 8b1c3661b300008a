"""kldm::dc_project against its pure-PyTorch twin: parity, exactness, opcheck, gradients, errors."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import devices, randn, seeded

import kspace_ldm.ops as ops
from kspace_ldm.ops import _reference as ref

SHAPES = [(7, 5), (8, 6), (2, 10, 14), (2, 3, 9, 11), (1, 4, 16, 17), (2, 1, 3, 5, 6)]


def _masks(shape, gen):
    """Every supported mask form for a k-space shape: column, 2-D, per-sample, full, soft."""
    H, W = shape[-2:]
    col = torch.rand(W, generator=gen) > 0.5
    out = {
        "column_bool": col,
        "column_float": col.float(),
        "2d_bool": torch.rand(H, W, generator=gen) > 0.6,
        "full_bool": torch.rand(shape, generator=gen) > 0.5,
        "soft_float": torch.rand(W, generator=gen),
        "column_double": col.double(),
    }
    if len(shape) >= 4:
        per_sample = [shape[0]] + [1] * (len(shape) - 2) + [W]
        out["per_sample"] = torch.rand(per_sample, generator=gen) > 0.5
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight", [1.0, 0.7, 0.0])
def test_matches_reference(shape, dtype, weight, device):
    gen = seeded(shape, dtype, weight)
    pred = randn(shape, dtype, gen, device)
    meas = randn(shape, dtype, gen, device)
    for name, mask in _masks(shape, gen).items():
        mask = mask.to(device)
        got = ops.dc_project(pred, meas, mask, weight)
        want = ref.dc_project(pred, meas, mask, weight)
        # Same formula, same operation order: the kernel matches the twin exactly on the CPU
        # (measured max difference 0.0 for complex64 and complex128). On CUDA, FMA contraction may
        # change the last bit of blended samples: rel. error < 1e-6 (BART's parity criterion).
        if device == "cpu":
            assert torch.equal(got, want), name
        else:
            err = (got - want).abs().max() / want.abs().max()
            assert err < 1e-6, (name, float(err))
        assert got.shape == pred.shape and got.dtype == dtype and got.is_contiguous()


def test_hard_replacement_keeps_measured_lines_exactly(gen):
    pred = torch.randn(3, 2, 32, 27, dtype=torch.complex64, generator=gen)
    meas = torch.randn(3, 2, 32, 27, dtype=torch.complex64, generator=gen) * 1e-4
    mask = torch.rand(27, generator=gen) > 0.7
    out = ops.dc_project(pred, meas, mask)
    assert torch.equal(out[..., mask], meas[..., mask])
    assert torch.equal(out[..., ~mask], pred[..., ~mask])
    assert torch.equal(out, torch.where(mask, meas, pred))


def test_non_contiguous_inputs(gen):
    base = torch.randn(4, 20, 18, dtype=torch.complex64, generator=gen)
    pred = base.transpose(-1, -2)  # [4, 18, 20], non-contiguous
    meas = torch.randn(4, 40, 18, dtype=torch.complex64, generator=gen)[:, ::2].transpose(-1, -2)
    mask = (torch.rand(40, generator=gen) > 0.5)[::2]  # strided mask view
    assert not pred.is_contiguous() and not meas.is_contiguous() and not mask.is_contiguous()
    got = ops.dc_project(pred, meas, mask, 0.5)
    want = ref.dc_project(pred.contiguous(), meas.contiguous(), mask.contiguous(), 0.5)
    assert torch.equal(got, want)


def test_empty_tensor():
    x = torch.zeros(0, 4, 5, dtype=torch.complex64)
    assert ops.dc_project(x, x, torch.ones(5, dtype=torch.bool)).shape == (0, 4, 5)


def test_opcheck(gen):
    pred = torch.randn(2, 3, 6, 5, dtype=torch.complex64, generator=gen)
    meas = torch.randn(2, 3, 6, 5, dtype=torch.complex64, generator=gen)
    mask = torch.rand(5, generator=gen) > 0.5
    for args in [
        (pred, meas, mask, 1.0),
        (pred.clone().requires_grad_(), meas.clone().requires_grad_(), mask.float(), 0.3),
    ]:
        torch.library.opcheck(torch.ops.kldm.dc_project.default, args)


def _dc_pq(p, q, mask, weight):
    return ops.dc_project(p, q, mask, weight)


def test_gradcheck_complex128(gen):
    pred = torch.randn(2, 4, 3, dtype=torch.complex128, generator=gen, requires_grad=True)
    meas = torch.randn(2, 4, 3, dtype=torch.complex128, generator=gen, requires_grad=True)
    for mask, w in [
        (torch.tensor([True, False, True]), 1.0),
        (torch.rand(4, 3, generator=gen), 0.6),
    ]:
        fn = functools.partial(_dc_pq, mask=mask, weight=w)
        assert torch.autograd.gradcheck(fn, (pred, meas))
        assert torch.autograd.gradgradcheck(fn, (pred, meas))


def test_adjoint_and_linearity(gen):
    # As an operator on pred (measured = 0) dc_project is diag(1 - a): self-adjoint and linear.
    shape = (2, 3, 10, 9)
    mask = torch.rand(9, generator=gen)
    zeros = torch.zeros(shape, dtype=torch.complex128)
    x = torch.randn(shape, dtype=torch.complex128, generator=gen)
    y = torch.randn(shape, dtype=torch.complex128, generator=gen)
    A = lambda v: ops.dc_project(v, zeros, mask, 0.8)  # noqa: E731
    lhs = torch.vdot(A(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), A(y).flatten())
    # complex128: measured |lhs - rhs| / |lhs| ~ 1e-16
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    a, b = 0.3 - 1.2j, 2.5 + 0.1j
    # Joint linearity in (pred, measured).
    x2 = torch.randn(shape, dtype=torch.complex128, generator=gen)
    y2 = torch.randn(shape, dtype=torch.complex128, generator=gen)
    lin = ops.dc_project(a * x + b * x2, a * y + b * y2, mask, 0.8)
    sep = a * ops.dc_project(x, y, mask, 0.8) + b * ops.dc_project(x2, y2, mask, 0.8)
    torch.testing.assert_close(lin, sep, rtol=1e-12, atol=1e-12)


def test_export_keeps_op_in_graph(gen):
    class DC(torch.nn.Module):
        def forward(self, k, k0, m):
            return ops.dc_project(k, k0, m)

    k = torch.randn(1, 1, 8, 6, dtype=torch.complex64, generator=gen)
    m = torch.ones(6, dtype=torch.bool)
    ep = torch.export.export(DC(), (k, k, m))
    assert "kldm.dc_project" in str(ep.graph)
    torch.testing.assert_close(ep.module()(k, k * 2, m), k * 2)


@pytest.mark.parametrize(
    ("pred", "meas", "mask", "weight", "exc", "msg"),
    [
        ((4, 5), (4, 5), (5,), 1.0, TypeError, "pred must be complex"),
        ((4, 5), (4, 6), (5,), 1.0, ValueError, "does not match pred shape"),
        ((4, 5), (4, 5), (6,), 1.0, ValueError, "does not broadcast"),
        ((4, 5), (4, 5), (2, 4, 5), 1.0, ValueError, "mask must have 1 to 2 dims"),
        ((5,), (5,), (5,), 1.0, ValueError, "with 2 to"),
        ((4, 5), (4, 5), (5,), 1.5, ValueError, "weight must be in"),
    ],
)
def test_errors(pred, meas, mask, weight, exc, msg):
    dt = torch.float32 if msg == "pred must be complex" else torch.complex64
    with pytest.raises(exc, match=msg):
        ops.dc_project(
            torch.zeros(pred, dtype=dt), torch.zeros(meas, dtype=dt), torch.ones(mask), weight
        )


def test_dtype_mismatch_errors():
    p = torch.zeros(4, 5, dtype=torch.complex64)
    with pytest.raises(TypeError, match="measured must have pred's dtype"):
        ops.dc_project(p, p.to(torch.complex128), torch.ones(5))
    with pytest.raises(TypeError, match="mask must be bool or real"):
        ops.dc_project(p, p, torch.ones(5, dtype=torch.complex64))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_error():
    p = torch.zeros(4, 5, dtype=torch.complex64)
    with pytest.raises(ValueError, match="is on"):
        ops.dc_project(p.cuda(), p, torch.ones(5, device="cuda"))
