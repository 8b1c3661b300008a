"""kldm::fft2c / kldm::ifft2c against the shift-based twin: exactness on every size class, the
modulation formulas, unitarity, adjointness, opcheck, gradients, export and errors."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from helpers import devices, randn, rel_err, seeded

import kspace_ldm.ops as ops
from kspace_ldm.ops import _reference as ref

# Odd, even (N % 4 == 0), 2 mod 4 in one dim only (global sign -1), 2 mod 4 in both dims (signs
# cancel), fastMRI knee sizes, and degenerate 1-sized dims.
SIZES = [
    (7, 5),
    (8, 6),
    (6, 8),
    (10, 14),
    (6, 10),
    (9, 12),
    (12, 9),
    (640, 368),
    (640, 372),
    (1, 1),
    (1, 6),
    (5, 1),
    (3, 3),
]
LEADING = [(), (3,), (2, 3), (2, 1, 2)]

# Relative error bounds (max |kernel - twin| / max |twin|). The kernels and the twin run the same
# ATen FFT on differently arranged (modulated vs rolled) inputs, and the odd-size phases are rounded
# once to the data type. Measured worst case over SIZES x LEADING x {fft2c, ifft2c} on CPU:
# complex64 2.7e-7, complex128 1.5e-15 (three seeds).
# On the GPU image's CPU FFT (torch 2.11) complex128 reached 1.16e-14 (640x372), hence 2e-14.
RTOL = {torch.complex64: 1e-6, torch.complex128: 2e-14}

OPS = [(ops.fft2c, ref.fft2c), (ops.ifft2c, ref.ifft2c)]


def _leading_for(size):
    # The large fastMRI planes get one small batch only, to keep the file fast.
    return [(2,)] if size[0] * size[1] > 10_000 else LEADING


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_twin(size, dtype, device):
    for lead in _leading_for(size):
        x = randn((*lead, *size), dtype, seeded(size, dtype, lead), device)
        for op, twin in OPS:
            got = op(x)
            want = twin(x)
            assert got.shape == x.shape and got.dtype == dtype and got.is_contiguous()
            assert got.device == x.device
            err = rel_err(got, want)
            assert err < RTOL[dtype], (op.__name__, size, lead, err)


def _phases(N: int, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre and post factors a, b of docs/fft_centering.md, in complex128."""
    c = N // 2
    k = torch.arange(N, dtype=torch.int64)
    r_pre = (c * k) % N
    r_post = (c * k - c * c) % N
    sign = -1.0 if inverse else 1.0

    def phase(r):
        return torch.polar(torch.ones(N, dtype=torch.float64), sign * 2 * math.pi * r.double() / N)

    return phase(r_pre), phase(r_post)


def test_modulation_formulas():
    # The derivation, checked independently of the kernels: for every N, fftshift(F(ifftshift(x)))
    # == b * F(a * x), and for even N the factors are (-1)^m and (-1)^k (-1)^(N/2).
    gen = torch.Generator().manual_seed(7)
    for N in range(1, 41):
        x = torch.randn(N, dtype=torch.complex128, generator=gen)
        for inverse, F in [(False, torch.fft.fft), (True, torch.fft.ifft)]:
            a, b = _phases(N, inverse)
            want = torch.fft.fftshift(F(torch.fft.ifftshift(x), norm="ortho"))
            got = b * F(a * x, norm="ortho")
            # complex128 DFT of length <= 40: measured max abs error 9e-16
            torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
        if N % 2 == 0:
            alt = (-1.0) ** torch.arange(N, dtype=torch.float64)
            a, b = _phases(N, False)
            torch.testing.assert_close(a.real, alt, rtol=0, atol=1e-15)
            torch.testing.assert_close(b.real, alt * (-1.0) ** (N // 2), rtol=0, atol=1e-15)


@pytest.mark.parametrize("size", [(8, 6), (6, 8), (10, 14), (640, 368), (4, 2)])
def test_even_sizes_are_exact_signs(size):
    # For even sizes every phase is +-1, applied as a sign flip: the op is bit-identical to the
    # modulated definition run through the same ATen FFT.
    H, W = size
    gen = seeded("exact", size)
    x = torch.randn(2, H, W, dtype=torch.complex64, generator=gen)
    sh = (-1.0) ** torch.arange(H, dtype=torch.float32)
    sw = (-1.0) ** torch.arange(W, dtype=torch.float32)
    pre = sh[:, None] * sw[None, :]
    post = pre * (-1.0) ** (H // 2 + W // 2)
    assert torch.equal(ops.fft2c(x), post * torch.fft.fft2(pre * x, norm="ortho"))
    assert torch.equal(ops.ifft2c(x), post * torch.fft.ifft2(pre * x, norm="ortho"))


@pytest.mark.parametrize("device", devices())
def test_non_contiguous_and_leading_dims(device):
    gen = seeded("nc")
    base = randn((3, 2, 14, 9), torch.complex64, gen, device)
    views = {
        "transposed": base.transpose(-1, -2),  # [3, 2, 9, 14]
        "strided": base[:, :, ::2, :],  # [3, 2, 7, 9]
        "permuted_lead": base.permute(1, 0, 2, 3),
        "expanded": base[:1, :1].expand(4, 2, 14, 9),
        "sliced_w": base[..., 1:8],
        "conj_view": base.conj(),
        "six_dims": randn((2, 1, 2, 3, 6, 5), torch.complex64, gen, device)[..., ::1, :],
    }
    for name, x in views.items():
        for op, twin in OPS:
            want = twin(x.contiguous())
            got = op(x)
            assert rel_err(got, want) < RTOL[torch.complex64], name
            assert torch.equal(got, op(x.contiguous())), name


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("size", [(7, 5), (8, 6), (9, 12), (640, 372)])
def test_round_trip_and_parseval(size, device):
    x = randn((2, *size), torch.complex128, seeded("rt", size), device)
    k = ops.fft2c(x)
    # complex128: measured round-trip max abs error 2.4e-15, |norm ratio - 1| 1.3e-14 (640 x 372)
    torch.testing.assert_close(ops.ifft2c(k), x, rtol=0, atol=1e-13)
    torch.testing.assert_close(ops.fft2c(ops.ifft2c(x)), x, rtol=0, atol=1e-13)
    assert abs(float(k.norm() / x.norm()) - 1) < 1e-13
    xf = x.to(torch.complex64)
    # complex64: measured round-trip relative error 3.1e-7, |norm ratio - 1| 4e-7 (norms taken
    # in float64, so that only the transform's rounding is measured)
    assert rel_err(ops.ifft2c(ops.fft2c(xf)), xf) < 2e-6
    ratio = ops.fft2c(xf).to(torch.complex128).norm() / xf.to(torch.complex128).norm()
    assert abs(float(ratio) - 1) < 2e-6


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("size", [(7, 5), (8, 6), (6, 10)])
def test_adjoint_and_linearity(size, device):
    gen = seeded("adj", size)
    x = randn((2, 3, *size), torch.complex128, gen, device)
    y = randn((2, 3, *size), torch.complex128, gen, device)
    for op, op_h in [(ops.fft2c, ops.ifft2c), (ops.ifft2c, ops.fft2c)]:
        lhs = torch.vdot(op(x).flatten(), y.flatten())
        rhs = torch.vdot(x.flatten(), op_h(y).flatten())
        # complex128: measured |lhs - rhs| / |lhs| ~ 3e-16
        assert abs(lhs - rhs) / abs(lhs) < 1e-12
        a, b = 0.3 - 1.2j, -2.5 + 0.1j
        torch.testing.assert_close(op(a * x + b * y), a * op(x) + b * op(y), rtol=1e-12, atol=1e-12)


def test_centre_conventions():
    # A delta at the image centre (H // 2, W // 2) has a flat spectrum (value 1 / sqrt(HW), no
    # phase), and a constant image has all its energy at the DC sample (H // 2, W // 2).
    for H, W in [(7, 5), (8, 6), (6, 10), (9, 12)]:
        d = torch.zeros(H, W, dtype=torch.complex128)
        d[H // 2, W // 2] = 1
        torch.testing.assert_close(
            ops.fft2c(d), torch.full_like(d, 1 / math.sqrt(H * W)), rtol=0, atol=1e-15
        )
        k = ops.fft2c(torch.ones(H, W, dtype=torch.complex128))
        assert abs(k[H // 2, W // 2] - math.sqrt(H * W)) < 1e-12
        k[H // 2, W // 2] = 0
        assert float(k.abs().max()) < 1e-12


def test_empty_and_device_of_output():
    for shape in [(0, 4, 5), (2, 0, 5), (3, 4, 0)]:
        x = torch.zeros(shape, dtype=torch.complex64)
        assert ops.fft2c(x).shape == shape and ops.ifft2c(x).shape == shape


def test_reused_input_buffer_never_leaks():
    # The CPU ops reuse a per-thread FFT input buffer between calls: earlier results must stay
    # intact, in one thread and with several threads calling at once.
    gen = seeded("reuse")
    x, y = (torch.randn(2, 8, 6, dtype=torch.complex64, generator=gen) for _ in range(2))
    a = ops.fft2c(x)
    a0 = a.clone()
    ops.fft2c(y)
    ops.ifft2c(y[:1])
    assert torch.equal(a, a0)

    inputs = [torch.randn(3, 32, 24, dtype=torch.complex64, generator=gen) for _ in range(4)]
    want = [ops.fft2c(t) for t in inputs]
    ok = [False] * len(inputs)

    def worker(i):
        ok[i] = all(torch.equal(ops.fft2c(inputs[i]), want[i]) for _ in range(20))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(ok)


def test_opcheck(one_thread):
    gen = seeded("opcheck")
    x = torch.randn(2, 3, 5, 4, dtype=torch.complex64, generator=gen)
    for op in [torch.ops.kldm.fft2c.default, torch.ops.kldm.ifft2c.default]:
        torch.library.opcheck(op, (x,))
        torch.library.opcheck(op, (x.clone().requires_grad_(),))
        torch.library.opcheck(op, (x[0, 0].to(torch.complex128).requires_grad_(),))


def test_gradcheck_complex128(one_thread):
    gen = seeded("gradcheck")
    for shape in [(2, 3, 5), (4, 2)]:
        x = torch.randn(shape, dtype=torch.complex128, generator=gen, requires_grad=True)
        for op in [ops.fft2c, ops.ifft2c]:
            assert torch.autograd.gradcheck(op, (x,))
            assert torch.autograd.gradgradcheck(op, (x,))


def test_gradients_match_twin(gen):
    x = torch.randn(2, 9, 6, dtype=torch.complex128, generator=gen, requires_grad=True)
    g = torch.randn(2, 9, 6, dtype=torch.complex128, generator=gen)
    for op, twin in OPS:
        (got,) = torch.autograd.grad(op(x), x, g)
        (want,) = torch.autograd.grad(twin(x), x, g)
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_export_keeps_op_in_graph(gen):
    class Recon(torch.nn.Module):
        def forward(self, k):
            return ops.ifft2c(ops.fft2c(k) * 2)

    k = torch.randn(1, 2, 8, 6, dtype=torch.complex64, generator=gen)
    ep = torch.export.export(Recon(), (k,))
    graph = str(ep.graph)
    assert "kldm.fft2c" in graph and "kldm.ifft2c" in graph
    torch.testing.assert_close(ep.module()(k), k * 2, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("op", ["fft2c", "ifft2c"])
@pytest.mark.parametrize(
    ("shape", "dtype", "exc", "msg"),
    [
        ((4, 5), torch.float32, TypeError, "x must be complex64 or complex128"),
        ((4, 5), torch.complex32, TypeError, "x must be complex64 or complex128"),
        ((5,), torch.complex64, ValueError, r"x must be \[\.\.\., H, W\] with 2 to 10 dims"),
        ((1,) * 11, torch.complex64, ValueError, "got shape"),
    ],
)
def test_errors(op, shape, dtype, exc, msg):
    fn = getattr(ops, op)
    with pytest.raises(exc, match=msg):
        fn(torch.zeros(shape, dtype=dtype))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_opcheck_gradcheck_and_cpu_agreement():
    gen = seeded("cuda")
    x = torch.randn(2, 3, 7, 6, dtype=torch.complex64, generator=gen)
    xc = x.cuda()
    pairs = [(torch.ops.kldm.fft2c.default, ops.fft2c), (torch.ops.kldm.ifft2c.default, ops.ifft2c)]
    for op, fn in pairs:
        torch.library.opcheck(op, (xc,))
        # cuFFT vs MKL: relative difference of a few float32 ulps (bound as for the twin)
        assert rel_err(fn(xc).cpu(), fn(x)) < RTOL[torch.complex64]
    t = torch.randn(2, 5, 4, dtype=torch.complex128, generator=gen).cuda().requires_grad_()
    torch.library.opcheck(torch.ops.kldm.fft2c.default, (t,))
    assert torch.autograd.gradcheck(ops.fft2c, (t,))
    assert torch.autograd.gradgradcheck(ops.ifft2c, (t,))
