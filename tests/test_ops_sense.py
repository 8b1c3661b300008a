"""kldm::sense_forward / sense_adjoint / rss against their pure-PyTorch twins
(kspace_ldm.physics.coils): parity on every mask form, adjointness, opcheck, gradients (image,
k-space and maps), export and errors."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import devices, randn, rel_err, seeded

import kspace_ldm.ops as ops
from kspace_ldm.ops import _reference as ref

# (B, C, H, W): odd, even, 2 mod 4 and mixed sizes.
SHAPES = [(2, 3, 7, 5), (1, 4, 8, 6), (3, 2, 10, 14), (2, 3, 9, 12), (2, 1, 6, 10)]

# Relative error bounds (max |kernel - twin| / max |twin|): the FFTs see modulated instead of
# rolled inputs, and the coil sum is accumulated in another order than torch.sum. Measured worst
# case over SHAPES x masks on CPU (three seeds): complex64 3.3e-7, complex128 8.6e-16.
RTOL = {torch.complex64: 1e-6, torch.complex128: 1e-14}


def _masks(shape, gen):
    """Every mask form the twin accepts: [W], [H, W], 4-D per sample / per coil, bool/int/real."""
    B, C, H, W = shape
    col = torch.rand(W, generator=gen) > 0.5
    return {
        "none": None,
        "column_bool": col,
        "column_float": col.float(),
        "column_double": col.double(),
        "column_int": col.to(torch.int32),
        "soft_column": torch.rand(W, generator=gen),
        "2d_bool": torch.rand(H, W, generator=gen) > 0.6,
        "2d_rows": (torch.rand(H, 1, generator=gen) > 0.5).float(),
        "per_sample": torch.rand(B, 1, 1, W, generator=gen) > 0.5,
        "per_coil": torch.rand(1, C, H, W, generator=gen),
        "full_bool": torch.rand(B, C, H, W, generator=gen) > 0.5,
        "4d_rows": torch.rand(1, 1, H, 1, generator=gen) > 0.3,
    }


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sense_matches_twin(shape, dtype, device):
    gen = seeded("sense", shape, dtype)
    B, C, H, W = shape
    for shared_maps in (False, True):
        maps = randn((1 if shared_maps else B, C, H, W), dtype, gen, device)
        image = randn((B, 1, H, W), dtype, gen, device)
        kspace = randn((B, C, H, W), dtype, gen, device)
        for name, mask in _masks(shape, gen).items():
            mask = None if mask is None else mask.to(device)
            fwd = ops.sense_forward(image, maps, mask)
            want = ref.sense_forward(image, maps, mask)
            assert fwd.shape == (B, C, H, W) and fwd.dtype == dtype and fwd.is_contiguous()
            assert rel_err(fwd, want) < RTOL[dtype], (name, shared_maps)
            if mask is not None and mask.dtype == torch.bool:
                # masked samples are exact zeros, as in the twin
                assert bool((fwd[(want == 0).expand_as(fwd)] == 0).all()), name
            adj = ops.sense_adjoint(kspace, maps, mask)
            want = ref.sense_adjoint(kspace, maps, mask)
            assert adj.shape == (B, 1, H, W) and adj.dtype == dtype and adj.is_contiguous()
            assert rel_err(adj, want) < RTOL[dtype], (name, shared_maps)
        # [B, H, W] images are accepted, as by the twin.
        got = ops.sense_forward(image[:, 0], maps)
        assert torch.equal(got, ops.sense_forward(image, maps))


@pytest.mark.parametrize("device", devices())
def test_large_fastmri_size(device):
    # One fastMRI-sized case (640 x 372: W % 4 == 0; 640 x 370 would flip the global sign).
    gen = seeded("large")
    for W in (372, 370):
        maps = randn((1, 2, 640, W), torch.complex64, gen, device)
        image = randn((1, 1, 640, W), torch.complex64, gen, device)
        mask = (torch.rand(W, generator=gen) > 0.7).to(device)
        fwd = ops.sense_forward(image, maps, mask)
        assert rel_err(fwd, ref.sense_forward(image, maps, mask)) < RTOL[torch.complex64]
        adj = ops.sense_adjoint(fwd, maps, mask)
        assert rel_err(adj, ref.sense_adjoint(fwd, maps, mask)) < RTOL[torch.complex64]


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_inputs(device):
    gen = seeded("nc")
    B, C, H, W = 2, 3, 9, 8
    maps = randn((B, C, W, H), torch.complex64, gen, device).transpose(-1, -2)
    image = randn((B, 2, H, W), torch.complex64, gen, device)[:, 1:]
    kspace = randn((C, B, H, 2 * W), torch.complex64, gen, device).transpose(0, 1)[..., ::2]
    mask = (torch.rand(2 * W, generator=gen) > 0.5).to(device)[::2]  # strided on the device
    for t in (maps, image, kspace, mask):
        assert not t.is_contiguous()
    for m in (mask, None):
        want = ref.sense_forward(image.contiguous(), maps.contiguous(), m)
        assert rel_err(ops.sense_forward(image, maps, m), want) < RTOL[torch.complex64]
        want = ref.sense_adjoint(kspace.contiguous(), maps.contiguous(), m)
        assert rel_err(ops.sense_adjoint(kspace, maps, m), want) < RTOL[torch.complex64]
    # maps expanded over the batch (stride 0)
    shared = maps[:1].expand(B, C, H, W)
    want = ref.sense_adjoint(kspace.contiguous(), shared.contiguous(), mask)
    assert rel_err(ops.sense_adjoint(kspace, shared, mask), want) < RTOL[torch.complex64]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (2, 4, 8, 6)])
def test_adjoint_and_linearity(shape, device):
    gen = seeded("adj", shape)
    B, C, H, W = shape
    dt = torch.complex128
    maps = randn((1, C, H, W), dt, gen, device)
    x = randn((B, 1, H, W), dt, gen, device)
    y = randn((B, C, H, W), dt, gen, device)
    for mask in [None, torch.rand(W, generator=gen).to(device), torch.rand(B, 1, 1, W) > 0.5]:
        mask = None if mask is None else mask.to(device)
        lhs = torch.vdot(ops.sense_forward(x, maps, mask).flatten(), y.flatten())
        rhs = torch.vdot(x.flatten(), ops.sense_adjoint(y, maps, mask).flatten())
        # complex128: measured |lhs - rhs| / |lhs| ~ 2e-16
        assert abs(lhs - rhs) / abs(lhs) < 1e-12
        a, b = 0.3 - 1.2j, -2.5 + 0.1j
        x2 = randn((B, 1, H, W), dt, gen, device)
        y2 = randn((B, C, H, W), dt, gen, device)
        torch.testing.assert_close(
            ops.sense_forward(a * x + b * x2, maps, mask),
            a * ops.sense_forward(x, maps, mask) + b * ops.sense_forward(x2, maps, mask),
            rtol=1e-12,
            atol=1e-12,
        )
        torch.testing.assert_close(
            ops.sense_adjoint(a * y + b * y2, maps, mask),
            a * ops.sense_adjoint(y, maps, mask) + b * ops.sense_adjoint(y2, maps, mask),
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.float32, torch.float64])
def test_rss_matches_twin(dtype, device):
    gen = seeded("rss", dtype)
    for shape in [(2, 3, 7, 5), (1, 15, 8, 6), (4, 3, 5), (2, 1, 2, 3, 4, 3), (2, 1, 4, 4)]:
        x = randn(shape, dtype, gen, device)
        x[..., 0, 0] = 0  # all coils zero at one pixel
        got = ops.rss(x)
        want = ref.rss(x)
        assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous()
        # Accumulation order and |x|^2 vs hypot differ from torch.linalg.vector_norm: measured
        # worst relative error 1.2e-7 (complex64), 1.9e-16 (complex128), 0 (real inputs).
        tol = 1e-6 if dtype in (torch.complex64, torch.float32) else 1e-14
        assert rel_err(got, want) < tol, shape
        assert bool((got[..., 0, 0] == 0).all())
    nc = randn((3, 4, 6, 10), dtype, gen, device).transpose(0, 1)[..., ::2]
    assert rel_err(ops.rss(nc), ref.rss(nc.contiguous())) < 1e-6


def test_opcheck(one_thread):
    gen = seeded("opcheck")
    dt = torch.complex64
    maps = torch.randn(1, 3, 5, 4, dtype=dt, generator=gen)
    image = torch.randn(2, 1, 5, 4, dtype=dt, generator=gen)
    kspace = torch.randn(2, 3, 5, 4, dtype=dt, generator=gen)
    mask = torch.rand(4, generator=gen) > 0.5
    fwd, adj = torch.ops.kldm.sense_forward.default, torch.ops.kldm.sense_adjoint.default
    for m in (None, mask, torch.rand(2, 1, 1, 4, generator=gen)):
        torch.library.opcheck(fwd, (image, maps, m))
        torch.library.opcheck(adj, (kspace, maps, m))

    def leaf(t):
        return t.clone().requires_grad_()

    torch.library.opcheck(fwd, (leaf(image), leaf(maps), mask))
    torch.library.opcheck(fwd, (leaf(image[:, 0]), maps, None))
    torch.library.opcheck(adj, (leaf(kspace), leaf(maps), mask))
    torch.library.opcheck(adj, (kspace, leaf(maps.expand(2, 3, 5, 4)), None))
    x = torch.randn(2, 3, 5, 4, dtype=dt, generator=gen)
    torch.library.opcheck(torch.ops.kldm.rss.default, (x,))
    torch.library.opcheck(torch.ops.kldm.rss.default, (x.clone().requires_grad_(),))
    torch.library.opcheck(torch.ops.kldm.rss.default, (torch.randn(3, 2, 4, requires_grad=True),))


def test_gradcheck_complex128(one_thread):
    gen = seeded("gradcheck")
    dt = torch.complex128
    image = torch.randn(2, 1, 3, 4, dtype=dt, generator=gen, requires_grad=True)
    maps = torch.randn(1, 2, 3, 4, dtype=dt, generator=gen, requires_grad=True)
    kspace = torch.randn(2, 2, 3, 4, dtype=dt, generator=gen, requires_grad=True)
    for mask in (None, torch.tensor([True, False, True, True]), torch.rand(2, 1, 3, 4)):
        fwd = functools.partial(ops.sense_forward, mask=mask)
        adj = functools.partial(ops.sense_adjoint, mask=mask)
        assert torch.autograd.gradcheck(fwd, (image, maps))
        assert torch.autograd.gradcheck(adj, (kspace, maps))
    # double backward (once, without mask) and the [B, H, W] image form
    assert torch.autograd.gradgradcheck(ops.sense_forward, (image, maps))
    assert torch.autograd.gradgradcheck(ops.sense_adjoint, (kspace, maps))
    img3 = image.detach()[:, 0].requires_grad_()
    assert torch.autograd.gradcheck(ops.sense_forward, (img3, maps.detach().expand(2, 2, 3, 4)))
    x = torch.randn(2, 3, 2, 3, dtype=dt, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(ops.rss, (x,))
    assert torch.autograd.gradgradcheck(ops.rss, (x,))
    xr = torch.randn(3, 2, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(ops.rss, (xr,))


def test_gradients_match_twin(gen):
    dt = torch.complex128
    B, C, H, W = 2, 3, 7, 6
    mask = torch.rand(W, generator=gen) > 0.4
    for maps_batch in (1, B):
        args = {
            "image": torch.randn(B, 1, H, W, dtype=dt, generator=gen),
            "kspace": torch.randn(B, C, H, W, dtype=dt, generator=gen),
            "maps": torch.randn(maps_batch, C, H, W, dtype=dt, generator=gen),
        }
        for first, fn, twin in [
            ("image", ops.sense_forward, ref.sense_forward),
            ("kspace", ops.sense_adjoint, ref.sense_adjoint),
        ]:
            x = args[first].clone().requires_grad_()
            s = args["maps"].clone().requires_grad_()
            out = fn(x, s, mask)
            g = torch.randn(out.shape, dtype=dt, generator=gen)
            got = torch.autograd.grad(out, (x, s), g)
            want = torch.autograd.grad(twin(x, s, mask), (x, s), g)
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # rss: the gradient is 0 where all coils are 0, as the twin's.
    x = torch.randn(2, 3, 4, 5, dtype=dt, generator=gen)
    x[:, :, 1, 2] = 0
    x.requires_grad_()
    g = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen)
    (got,) = torch.autograd.grad(ops.rss(x), x, g)
    (want,) = torch.autograd.grad(ref.rss(x), x, g)
    assert torch.isfinite(got).all() and bool((got[:, :, 1, 2] == 0).all())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_export_keeps_ops_in_graph(gen):
    class Model(torch.nn.Module):
        def forward(self, image, maps, mask):
            k = ops.sense_forward(image, maps, mask)
            return ops.rss(ops.ifft2c(k)), ops.sense_adjoint(k, maps, mask)

    image = torch.randn(1, 1, 8, 6, dtype=torch.complex64, generator=gen)
    maps = torch.randn(1, 2, 8, 6, dtype=torch.complex64, generator=gen)
    mask = torch.rand(6, generator=gen) > 0.5
    ep = torch.export.export(Model(), (image, maps, mask))
    graph = str(ep.graph)
    for name in ("kldm.sense_forward", "kldm.sense_adjoint", "kldm.rss"):
        assert name in graph
    for a, b in zip(ep.module()(image, maps, mask), Model()(image, maps, mask), strict=True):
        torch.testing.assert_close(a, b)


def test_empty():
    z = torch.zeros
    c64 = torch.complex64
    maps = z(1, 3, 4, 5, dtype=c64)
    assert ops.sense_forward(z(0, 1, 4, 5, dtype=c64), maps).shape == (0, 3, 4, 5)
    assert ops.sense_adjoint(z(0, 3, 4, 5, dtype=c64), maps).shape == (0, 1, 4, 5)
    # no coils: the adjoint is an empty sum (zeros), as in the twin
    out = ops.sense_adjoint(z(2, 0, 4, 5, dtype=c64), z(1, 0, 4, 5, dtype=c64))
    assert out.shape == (2, 1, 4, 5) and bool((out == 0).all())
    assert ops.rss(z(2, 0, 4, 5)).shape == (2, 4, 5)


C64 = torch.complex64


@pytest.mark.parametrize(
    ("image", "maps", "mask", "exc", "msg"),
    [
        (((2, 1, 4, 5), torch.float32), ((1, 3, 4, 5), C64), None, TypeError, "image must be"),
        (((2, 1, 4, 5), C64), ((1, 3, 4, 5), torch.float32), None, TypeError, "maps must be"),
        (((2, 1, 4, 5), torch.complex128), ((1, 3, 4, 5), C64), None, TypeError, "differs"),
        (((2, 1, 4, 5), C64), ((3, 4, 5), C64), None, ValueError, r"maps must be 4-D"),
        (((4, 5), C64), ((1, 3, 4, 5), C64), None, ValueError, r"image must be \[B, 1, H, W\]"),
        (((2, 1, 4, 6), C64), ((1, 3, 4, 5), C64), None, ValueError, "does not match maps"),
        (((2, 2, 4, 5), C64), ((1, 3, 4, 5), C64), None, ValueError, "does not match maps"),
        (((2, 1, 4, 5), C64), ((3, 3, 4, 5), C64), None, ValueError, "batch 2 does not match"),
        (((2, 1, 4, 5), C64), ((1, 3, 4, 5), C64), ((6,), torch.bool), ValueError, "broadcast"),
        (((2, 1, 4, 5), C64), ((1, 3, 4, 5), C64), ((3, 4, 5), torch.bool), ValueError, "or 4-D"),
        (((2, 1, 4, 5), C64), ((1, 3, 4, 5), C64), ((5,), C64), TypeError, "mask must be bool"),
        (((2, 1, 4, 5), C64), ((1, 3, 4, 5), C64), ((4, 1, 1, 5), torch.int8), ValueError, "-4"),
    ],
)
def test_sense_forward_errors(image, maps, mask, exc, msg):
    x = torch.zeros(image[0], dtype=image[1])
    s = torch.zeros(maps[0], dtype=maps[1])
    m = None if mask is None else torch.zeros(mask[0], dtype=mask[1])
    with pytest.raises(exc, match=msg):
        ops.sense_forward(x, s, m)


@pytest.mark.parametrize(
    ("kspace", "maps", "mask", "exc", "msg"),
    [
        (((2, 3, 4, 5), torch.float64), ((1, 3, 4, 5), C64), None, TypeError, "kspace must be"),
        (((2, 3, 4, 5), C64), ((1, 3, 4, 5), torch.complex128), None, TypeError, "differs"),
        (((3, 4, 5), C64), ((1, 3, 4, 5), C64), None, ValueError, "kspace must be 4-D"),
        (((2, 2, 4, 5), C64), ((1, 3, 4, 5), C64), None, ValueError, "does not match maps"),
        (((2, 3, 5, 5), C64), ((1, 3, 4, 5), C64), None, ValueError, "does not match maps"),
        (((2, 3, 4, 5), C64), ((4, 3, 4, 5), C64), None, ValueError, "batch 2 does not match"),
        (((2, 3, 4, 5), C64), ((1, 3, 4, 5), C64), ((4, 4),), ValueError, "does not broadcast"),
        (((2, 3, 4, 5), C64), ((1, 3, 4, 5), C64), ((1, 2, 4, 5),), ValueError, "broadcast"),
    ],
)
def test_sense_adjoint_errors(kspace, maps, mask, exc, msg):
    y = torch.zeros(kspace[0], dtype=kspace[1])
    s = torch.zeros(maps[0], dtype=maps[1])
    m = None if mask is None else torch.zeros(mask[0])
    with pytest.raises(exc, match=msg):
        ops.sense_adjoint(y, s, m)


def test_rss_errors():
    with pytest.raises(TypeError, match="coil_images must be a real or complex"):
        ops.rss(torch.zeros(2, 3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="float32, float64, complex64 or complex128"):
        ops.rss(torch.zeros(2, 3, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\] with 3 to"):
        ops.rss(torch.zeros(3, 4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_errors():
    s = torch.zeros(1, 3, 4, 5, dtype=C64)
    x = torch.zeros(2, 1, 4, 5, dtype=C64)
    y = torch.zeros(2, 3, 4, 5, dtype=C64)
    with pytest.raises(ValueError, match="is on"):
        ops.sense_forward(x.cuda(), s)
    with pytest.raises(ValueError, match="is on"):
        ops.sense_adjoint(y, s.cuda())
    with pytest.raises(ValueError, match="mask is on"):
        ops.sense_forward(x.cuda(), s.cuda(), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask is on"):
        ops.sense_adjoint(y.cuda(), s.cuda(), torch.ones(5, dtype=torch.bool))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    gen = seeded("cuda")
    for shape in [(2, 3, 7, 5), (2, 4, 64, 48)]:
        B, C, H, W = shape
        maps = torch.randn(1, C, H, W, dtype=C64, generator=gen)
        image = torch.randn(B, 1, H, W, dtype=C64, generator=gen)
        mask = torch.rand(B, 1, 1, W, generator=gen) > 0.5
        k_cpu = ops.sense_forward(image, maps, mask)
        k_gpu = ops.sense_forward(image.cuda(), maps.cuda(), mask.cuda())
        # cuFFT vs MKL: measured relative difference ~3e-7
        assert rel_err(k_gpu.cpu(), k_cpu) < 1e-6
        a_gpu = ops.sense_adjoint(k_gpu, maps.cuda(), mask.cuda())
        assert rel_err(a_gpu.cpu(), ops.sense_adjoint(k_cpu, maps, mask)) < 1e-6
        assert rel_err(ops.rss(k_gpu).cpu(), ops.rss(k_cpu)) < 1e-6


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_opcheck_and_gradcheck():
    gen = seeded("cuda-opcheck")
    dt = torch.complex128
    image = torch.randn(2, 1, 3, 4, dtype=dt, generator=gen).cuda().requires_grad_()
    maps = torch.randn(1, 2, 3, 4, dtype=dt, generator=gen).cuda().requires_grad_()
    kspace = torch.randn(2, 2, 3, 4, dtype=dt, generator=gen).cuda().requires_grad_()
    mask = torch.tensor([True, False, True, True], device="cuda")
    torch.library.opcheck(torch.ops.kldm.sense_forward.default, (image, maps, mask))
    torch.library.opcheck(torch.ops.kldm.sense_adjoint.default, (kspace, maps, None))
    torch.library.opcheck(torch.ops.kldm.rss.default, (kspace,))
    fwd = functools.partial(ops.sense_forward, mask=mask)
    assert torch.autograd.gradcheck(fwd, (image, maps))
    assert torch.autograd.gradcheck(ops.sense_adjoint, (kspace, maps))
    assert torch.autograd.gradcheck(ops.rss, (kspace,))
