"""Compressed-sensing baselines: L1-wavelet (FISTA) and total variation (Chambolle-Pock).

Both solve, per slice, ``min_x 0.5 ||A x - y||^2 + lam R(x)`` for a complex image ``x`` on the
k-space grid ``[H, W]``, with

* ``A x = M F x`` (single-coil) or ``A x = M F (S_c x)`` (multi-coil, ESPIRiT maps ``S`` from
  the fully sampled centre, :func:`kspace_ldm.physics.espirit.espirit_maps`: the maps of the
  coil-agnostic ``cgs`` path, :func:`kspace_ldm.recon.coil_maps`, so both solve against the same
  SENSE model);
  ``F`` is the centred orthonormal FFT (native :func:`kspace_ldm.ops.fft2c` /
  :func:`~kspace_ldm.ops.sense_forward`), so ``||A|| <= 1`` and unit gradient steps are safe;
* ``cs-wavelet``: ``R(x) = sum |W x|_detail``, the complex magnitudes of the detail coefficients
  of an orthonormal Daubechies transform (haar by default, chosen on the validation split;
  ``ptwt.MatrixWavedec2`` with QR-orthogonalised boundary filters; the approximation band is not
  penalised), with BART's random cycle spinning (:func:`fista_wavelet`). The image is embedded
  in a grid whose sides are multiples of ``2^level`` so the transform is exactly orthonormal and the
  proximal step ``W^T soft(W x)`` is exact;
* ``cs-tv``: isotropic total variation ``sum sqrt(|D_h x|^2 + |D_w x|^2)`` with forward
  differences (Neumann boundary).

The data are scaled by the 99th percentile of the zero-filled magnitude before solving (and the
result scaled back), so ``lam`` is relative to the image intensity and the defaults carry over
between datasets whose k-space units differ (fastMRI's are ~1e-5). Output: the fastMRI image,
``|x|`` centre-cropped to the recon size (for multi-coil ``|x|`` with maps normalised to
``sum_c |S_c|^2 = 1``, the least-squares counterpart of the RSS target).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..methods import CS_SAMPLERS  # the one list of the method names
from ..ops import fft2c, ifft2c, sense_adjoint, sense_forward

__all__ = ["CS_DEFAULTS", "CS_SAMPLERS", "CSOptions", "cs_reconstruct"]

_TV_STEP_RATIO = 10.0  # tau / (1 / L) of Chambolle-Pock, see chambolle_pock_tv
TAU = 1.0

# Defaults chosen on the VALIDATION split of the demo-size synthetic data (seed 0, 2 volumes x 8
# slices, 96x96 k-space, recon 48, fastMRI random masks 4x/cf 0.08 and 8x/cf 0.04), by
#   .venv/bin/python scripts/tune_cs.py --out docs/cs_tuning.md
# (table in docs/cs_tuning.md): the setting with the best mean PSNR over 4x and 8x. cs-wavelet:
# haar (the Daubechies-1 wavelet; db2/db4 were 2.6-3.9 dB lower at 4x), lam 0.001, 200 iterations:
# 25.37 dB / 0.841 at 4x, 17.67 dB / 0.484 at 8x. cs-tv: lam 0.01, 400 iterations: 24.93 dB at
# 4x, 18.31 dB at 8x.
CS_DEFAULTS = {
    "cs-wavelet": {
        "lam": 0.001,
        "iterations": 200,
        "wavelet": "haar",
        "level": 4,
        "cycle_spin": True,
    },
    "cs-tv": {"lam": 0.01, "iterations": 400},
}

# Multi-coil (C > 1, ESPIRiT maps, the SENSE model of cgs) overrides of the weight, chosen on the
# 8-coil varied-geometry validation volumes that chose the coil-agnostic cgs settings (2 volumes x
# 8 slices, `kldm data synth --val 2 --coils 8 --coil-geometry varied --seed 3001`) by
#   .venv/bin/python scripts/tune_cs.py --data VAL8/multicoil_val --methods cs-wavelet
#       --lams 0.003,0.005,0.01,0.02,0.03 --iters 200 --wavelets haar
#   (cs-tv: --lams 0.01,0.03,0.1)
# (docs/cs_tuning_multicoil.md), re-run 2026-12-03 for the ESPIRiT crop 0.6: cs-wavelet lam 0.005:
# 26.78 dB at 4x, 19.49 at 8x (0.01: 26.09 / 19.87; 0.02: 25.07 / 19.94); cs-tv lam 0.01: 25.75 /
# 19.77 (0.03: 23.91 / 20.00). With BART's crop 0.8 the choice was cs-wavelet 0.01 (23.90 / 20.40)
# and cs-tv 0.03 (23.74 / 20.74). The single-coil weights are far below (lam 0.001: 14.31 / 14.22
# for cs-wavelet): SENSE with little regularisation amplifies noise.
CS_DEFAULTS_MULTICOIL = {"cs-wavelet": {"lam": 0.005}, "cs-tv": {"lam": 0.01}}


def resolve_settings(method: str, options: CSOptions | None = None, coils: int = 1) -> dict:
    """The settings a solve uses: :data:`CS_DEFAULTS` (with the multi-coil overrides when
    ``coils > 1``) updated by the non-None fields of ``options``."""
    if method not in CS_SAMPLERS:
        raise InputError(None, f"unknown CS method {method!r} (available: {CS_SAMPLERS})")
    out = dict(CS_DEFAULTS[method])
    if coils > 1:
        out.update(CS_DEFAULTS_MULTICOIL[method])
    if options is not None:
        if options.lam is not None:
            out["lam"] = float(options.lam)
        if options.iterations is not None:
            out["iterations"] = int(options.iterations)
    return out


@dataclass(frozen=True)
class CSOptions:
    """Settings of a CS solve (None: the default of the method, :data:`CS_DEFAULTS`)."""

    lam: float | None = None
    iterations: int | None = None


def _require_ptwt():
    try:
        import ptwt
    except ImportError as err:  # a runtime dependency; only a broken install lacks it
        raise InputError(
            "--sampler cs-wavelet", f"needs the ptwt package (pip install ptwt): {err}"
        ) from None
    return ptwt


# ---- forward model ------------------------------------------------------------------------------


class _Forward:
    """``A x = M F (S x)`` on a padded image grid.

    The unknown ``z`` is ``[B, Hp, Wp]`` complex with ``Hp >= H, Wp >= W``; the image is its
    top-left ``[H, W]`` block (``Hp = H, Wp = W`` for TV), which the operator crops before the
    FFT, so ``A`` stays a (partial) isometry onto the measured samples.

    Args:
        kspace: ``[B, C, H, W]`` complex masked k-space (zeros where not sampled).
        mask: bool/real, broadcastable to ``kspace`` (``[W]``, ``[H, W]``, ``[B, 1, 1, W]``).
        maps: ``[B, C, H, W]`` SENSE maps, or None for single-coil (``C == 1``).
    """

    def __init__(self, kspace, mask, maps, padded: tuple[int, int]):
        self.y = kspace
        self.H, self.W = kspace.shape[-2:]
        self.Hp, self.Wp = padded
        real = torch.float64 if kspace.dtype == torch.complex128 else torch.float32
        m = torch.as_tensor(mask, device=kspace.device).to(real)
        self.mask = m.reshape(1, 1, 1, -1) if m.dim() == 1 else m
        self.maps = maps

    def _crop(self, z):
        return z[..., : self.H, : self.W]

    def _pad(self, x):
        return torch.nn.functional.pad(x, (0, self.Wp - self.W, 0, self.Hp - self.H))

    def forward(self, z):
        """``[B, Hp, Wp]`` -> ``[B, C, H, W]``."""
        x = self._crop(z)
        if self.maps is None:
            return fft2c(x[:, None]) * self.mask
        return sense_forward(x[:, None].contiguous(), self.maps, self.mask.expand(-1, 1, -1, -1))

    def adjoint(self, k):
        """``[B, C, H, W]`` -> ``[B, Hp, Wp]``."""
        if self.maps is None:
            x = ifft2c(k * self.mask)[:, 0]
        else:
            x = sense_adjoint(k.contiguous(), self.maps, self.mask.expand(-1, 1, -1, -1))[:, 0]
        return self._pad(x)

    def data_term(self, z):
        """``0.5 ||A z - y||^2`` per slice, ``[B]`` float64."""
        r = self.forward(z) - self.y
        return 0.5 * r.abs().double().square().sum(dim=(1, 2, 3))


# ---- L1-wavelet by FISTA ------------------------------------------------------------------------


_WAVELETS: dict = {}  # (wavelet, level, dtype, device) -> _Wavelet, see _Wavelet.get


class _Wavelet:
    """Orthonormal 2-D wavelet transform of complex ``[B, Hp, Wp]`` images (real and imaginary
    parts transformed as one real batch); ``Hp, Wp`` multiples of ``2**level``
    (:func:`wavelet_level`)."""

    @classmethod
    def get(
        cls, wavelet: str, level: int, dtype=torch.float32, device: str | torch.device = "cpu"
    ) -> _Wavelet:
        """A shared instance: ptwt builds its sparse matrices on the first call for a shape and
        reuses them while the shape stays, so one instance per setting saves that per slice.
        Keyed by the real ``dtype`` and ``device`` too: ptwt does not rebuild its matrices when
        only those change (a float64 batch after a float32 one fails in its sparse matmul)."""
        key = (wavelet, level, dtype, str(device))
        if key not in _WAVELETS:
            _WAVELETS[key] = cls(wavelet, level)
        return _WAVELETS[key]

    def __init__(self, wavelet: str, level: int):
        ptwt = _require_ptwt()
        self.level = level
        self.dec = ptwt.MatrixWavedec2(wavelet, level=level, orthogonalization="qr")
        self.rec = ptwt.MatrixWaverec2(wavelet, orthogonalization="qr")

    def analysis(self, z):
        """Complex ``[B, Hp, Wp]`` -> list of complex coefficient tensors (approximation first,
        then the detail bands coarse to fine)."""
        b = z.shape[0]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse", category=UserWarning)
            coeffs = self.dec(torch.cat([z.real, z.imag]).contiguous())
        flat = [coeffs[0], *[c for level in coeffs[1:] for c in level]]
        return [torch.complex(c[:b], c[b:]) for c in flat]

    def synthesis(self, flat):
        from ptwt.constants import WaveletDetailTuple2d

        real = [torch.cat([c.real, c.imag]) for c in flat]
        levels = (len(real) - 1) // 3
        coeffs = [real[0]] + [
            WaveletDetailTuple2d(*real[1 + 3 * i : 4 + 3 * i]) for i in range(levels)
        ]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse", category=UserWarning)
            out = self.rec(coeffs)
        b = out.shape[0] // 2
        return torch.complex(out[:b], out[b:])


def wavelet_level(shape: tuple[int, int], wavelet: str, max_level: int) -> int:
    """Levels such that the coarsest band is still at least one filter long (ptwt's limit)."""
    import pywt

    flen = pywt.Wavelet(wavelet).dec_len
    level = 1
    while level < max_level and min(shape) // 2 ** (level + 1) >= flen:
        level += 1
    return level


def _soft(c, t):
    """Complex soft-thresholding: the prox of ``t |c|``."""
    mag = c.abs()
    return c * (torch.clamp(mag - t, min=0) / mag.clamp_min(torch.finfo(mag.dtype).tiny))


def wavelet_objective(op: _Forward, wt: _Wavelet, z, lam: float) -> torch.Tensor:
    """``0.5 ||A z - y||^2 + lam * sum |W z|_detail`` per slice, ``[B]`` float64."""
    l1 = sum(c.abs().double().sum(dim=(-2, -1)) for c in wt.analysis(z)[1:])
    return op.data_term(z) + lam * l1


def wavelet_prox(wt: _Wavelet, z, t: float):
    """Exact prox of ``t * sum |W z|_detail`` (``W`` orthonormal)."""
    coeffs = wt.analysis(z)
    return wt.synthesis([coeffs[0]] + [_soft(c, t) for c in coeffs[1:]])


def fista_wavelet(
    op: _Forward,
    wt: _Wavelet,
    lam: float,
    iterations: int,
    history=None,
    cycle_spin: bool = True,
    seed: int = 0,
):
    """FISTA (Beck & Teboulle 2009) with unit step (``||A|| <= 1``).

    ``cycle_spin``: before each proximal step the image is circularly shifted by a random offset
    in ``[0, 2**level)`` per axis and shifted back after it (BART's default, "random wavelet
    cycle spinning"): the penalty is then, on average over the shifts, translation invariant,
    which removes the blocky artefacts of one fixed decimated basis (1.5-2.5 dB PSNR at 4x on
    the synthetic slices; without it the result matches ``bart pics -l1 -n``). The shifts come
    from a generator seeded with ``seed``, so results are reproducible.

    Returns ``z`` ``[B, Hp, Wp]``; appends the objective ``[B]`` of each iterate to ``history``
    when a list is given (for the tests; the objective of the unshifted basis)."""
    gen = torch.Generator().manual_seed(seed)
    span = 2**wt.level
    x = op.adjoint(op.y)
    v, t = x, 1.0
    for _ in range(iterations):
        g = v - op.adjoint(op.forward(v) - op.y)
        if cycle_spin:
            sh, sw = (int(i) for i in torch.randint(0, span, (2,), generator=gen))
            g = torch.roll(g, (sh, sw), dims=(-2, -1))
            x_new = torch.roll(wavelet_prox(wt, g, lam), (-sh, -sw), dims=(-2, -1))
        else:
            x_new = wavelet_prox(wt, g, lam)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if history is not None:
            history.append(wavelet_objective(op, wt, x, lam))
    return x


# ---- total variation by Chambolle-Pock ----------------------------------------------------------


def grad2(x):
    """Forward differences ``[B, H, W]`` -> ``[B, 2, H, W]`` (zero at the last row/column)."""
    dh = torch.zeros_like(x)
    dw = torch.zeros_like(x)
    dh[:, :-1] = x[:, 1:] - x[:, :-1]
    dw[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return torch.stack([dh, dw], dim=1)


def div2(p):
    """Negative adjoint of :func:`grad2`: ``<grad2(x), p> = -<x, div2(p)>``."""
    ph, pw = p[:, 0], p[:, 1]
    out = torch.zeros_like(ph)
    out[:, :-1] += ph[:, :-1]
    out[:, 1:] -= ph[:, :-1]
    out[:, :, :-1] += pw[:, :, :-1]
    out[:, :, 1:] -= pw[:, :, :-1]
    return out


def tv(x) -> torch.Tensor:
    """Isotropic TV per slice, ``[B]`` float64."""
    g = grad2(x)
    return g.abs().double().square().sum(dim=1).sqrt().sum(dim=(-2, -1))


def tv_objective(op: _Forward, z, lam: float) -> torch.Tensor:
    return op.data_term(z) + lam * tv(z)


def chambolle_pock_tv(op: _Forward, lam: float, iterations: int):
    """Primal-dual hybrid gradient (Chambolle & Pock 2011, algorithm 1, theta = 1).

    Single-coil: ``G(x) = 0.5 ||M F x - y||^2`` has the exact prox
    ``F^H ((F v + tau M y) / (1 + tau M))`` and ``K = grad`` (``||K||^2 <= 8``). Multi-coil:
    ``K = (A, grad)`` (``||K||^2 <= 9`` with normalised maps), the data term handled by its dual
    prox ``(q - sigma y) / (1 + sigma)``. The dual of the TV term is the projection onto the
    ``lam``-ball of pointwise gradient magnitudes."""
    x = op.adjoint(op.y)
    x_bar = x
    p = torch.zeros((x.shape[0], 2, *x.shape[1:]), dtype=x.dtype, device=x.device)
    single = op.maps is None
    L = math.sqrt(8.0) if single else 3.0
    # tau * sigma * L^2 = 0.99 < 1 (convergence); the primal step 10x the dual one: the image is
    # O(1) after scaling while the TV dual is bounded by lam << 1, and with tau = sigma the
    # solution was still moving after 400 iterations (docs/cs_tuning.md); with this ratio 100
    # iterations reach what 400 do (24.66 vs 24.65 dB at 4x on a synthetic slice).
    tau = 0.99 * _TV_STEP_RATIO / L
    sigma = 0.99 / (L * L * tau)
    q = torch.zeros_like(op.y) if not single else None
    for _ in range(iterations):
        p = p + sigma * grad2(x_bar)
        p = p / torch.clamp(p.abs().square().sum(dim=1, keepdim=True).sqrt() / lam, min=1.0)
        if single:
            v = x + tau * div2(p)
            k = fft2c(v[:, None])
            k = (k + tau * op.mask * op.y) / (1.0 + tau * op.mask)
            x_new = ifft2c(k)[:, 0]
        else:
            q = (q + sigma * (op.forward(x_bar) - op.y)) / (1.0 + sigma)
            x_new = x - tau * (op.adjoint(q) - div2(p))
        x_bar = 2 * x_new - x
        x = x_new
    return x


# ---- entry point --------------------------------------------------------------------------------


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _scale(image: torch.Tensor) -> torch.Tensor:
    """Per-slice intensity scale ``[B]``: 99th percentile of ``|image|`` (1 for an all-zero
    slice)."""
    mag = image.abs().flatten(1).float()
    s = torch.quantile(mag, 0.99, dim=1)
    return torch.where(s > 0, s, torch.ones_like(s)).to(image.real.dtype)


def cs_reconstruct(
    method: str,
    kspace: torch.Tensor,
    mask: torch.Tensor,
    options: CSOptions = CSOptions(),
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """CS reconstruction of masked k-space.

    Args:
        method: ``cs-wavelet`` or ``cs-tv``.
        kspace: ``[B, C, H, W]`` complex64/complex128 masked k-space (``C = 1`` single-coil).
        mask: bool/real, broadcastable to ``kspace`` (``[W]``, ``[H, W]``, ``[B, 1, 1, W]``).
        options: ``lam`` / ``iterations`` (None: :data:`CS_DEFAULTS`).
        maps: ``[B, C, H, W]`` SENSE maps for multi-coil; None: ESPIRiT maps of the data's
            fully sampled centre when ``C > 1`` (:func:`~kspace_ldm.physics.espirit.espirit_maps`
            at its defaults, as ``kldm recon`` computes them for ``cgs``).

    Returns:
        ``[B, H, W]`` complex image on the k-space grid (take ``abs`` and centre-crop for the
        fastMRI image).
    """
    if kspace.dim() != 4 or not kspace.is_complex():
        raise InputError(None, f"{method}: kspace must be complex [B, C, H, W]")
    defaults = resolve_settings(method, options, kspace.shape[1])
    lam, iterations = defaults["lam"], defaults["iterations"]
    if lam < 0 or iterations < 0:
        raise InputError(None, f"{method}: lam and iterations must be >= 0, got {lam} {iterations}")
    if kspace.shape[1] > 1 and maps is None:
        from ..physics.espirit import espirit_maps

        maps = espirit_maps(kspace, where=method)
    if maps is not None:
        from .sense_dc import check_maps

        check_maps(maps, kspace, f"{method} maps")
    H, W = kspace.shape[-2:]
    probe = _Forward(kspace, mask, maps, (H, W))
    s = _scale(probe.adjoint(kspace))  # [B]
    y = kspace / s[:, None, None, None]
    if method == "cs-wavelet":
        level = wavelet_level((H, W), defaults["wavelet"], defaults["level"])
        padded = (_padded(H, 2**level), _padded(W, 2**level))
        op = _Forward(y, mask, maps, padded)
        wt = _Wavelet.get(defaults["wavelet"], level, y.real.dtype, y.device)
        z = fista_wavelet(op, wt, lam, iterations, cycle_spin=defaults["cycle_spin"])
    else:
        op = _Forward(y, mask, maps, (H, W))
        z = chambolle_pock_tv(op, lam, iterations)
    return z[..., :H, :W] * s[:, None, None]
