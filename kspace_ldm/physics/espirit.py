"""ESPIRiT coil sensitivities (Uecker et al., MRM 71:990, 2014), vectorised PyTorch.

The semantics follow BART's ``ecalib`` with one set of maps (``ecalib -m1``); the defaults are
BART's (kernel 6x6, calibration region at most 24x24, null-space threshold 0.001, phase rotated to
the first principal component of the calibration data) except the eigenvalue crop: 0.6, not 0.8.
With narrow calibration regions (the 4 / 8 ACS columns of fastMRI's 8x / 4x masks on the 96-wide
synthetic scans) the top eigenvalue falls below 0.8 inside the object, and maps cropped there cut
tissue out of every SENSE reconstruction: on the 8-coil validation volumes (docs/results.md,
"Multi-coil: the ESPIRiT crop and the kept first-stage error"; scripts/sense_ceiling.py),
the SENSE model of the *fully sampled* data, ``S S^H`` applied to the coil images, scores
24.0 dB PSNR against the RSS target with crop 0.8, 29.7 with 0.6, 30.4 with none; 0.6 keeps the
background noise outside the object cropped. Steps, per sample:

1. Calibration region: the centred fully sampled block of k-space (auto-detected from the non-zero
   pattern, or given), limited to ``calib_size`` around the centre ``(H // 2, W // 2)``.
2. Calibration matrix ``A [P, C*kh*kw]``: one row per ``kh x kw`` patch of the region (all coils),
   i.e. the block-Hankel matrix of the region. Its right singular vectors with
   ``sigma_i > threshold * sigma_0`` span the signal space (the rest is the null space).
3. The k-space operator ``W = 1/K sum_p R_p^H P R_p`` (``P`` the projection onto the signal
   space, ``R_p`` the patch extraction, ``K = kh*kw``) is a multi-channel convolution whose
   kernel ``h[c, c', delta]`` has ``(2kh-1) x (2kw-1)`` taps. In the image it becomes a Hermitian
   ``C x C`` matrix per pixel, ``G(x) = sum_delta h(delta) exp(+2 pi i delta x / N)``, whose
   eigenvalues lie in ``[0, 1]``; coil sensitivities are its eigenvectors of eigenvalue ~1.
4. Per pixel, the top eigenvector of ``G(x)`` (batched ``torch.linalg.eigh`` over pixel chunks,
   no per-pixel Python loop); zero where its eigenvalue is below ``crop`` (``ecalib -c``).
5. Phase: each eigenvector is rotated so that its projection on a reference vector is real and
   positive: by default the first principal component of the calibration data across coils
   (BART's default; ``ecalib -P`` switches it off), or one coil (``phase_ref=c``).

Image coordinates follow :mod:`kspace_ldm.physics.fft` (``ifft2c``: centred, orthonormal), so the
maps multiply ``ifft2c(kspace)`` directly. Maps have ``sum_c |S_c|^2 = 1`` inside the support
and 0 outside.
"""

from __future__ import annotations

import math

import torch

from .transforms import InputValueError, _src

__all__ = ["ESPIRIT_DEFAULTS", "calibration_region", "espirit_maps"]

ESPIRIT_DEFAULTS = {
    "kernel": 6,
    "calib_size": 24,
    "threshold": 0.001,
    "crop": 0.6,  # BART's 0.8 cuts tissue with narrow calibration regions (module docstring)
}
# Pixels per batched eigh call: bounds the [n, C, C] working set (15 coils: ~30 MB per chunk).
_CHUNK = 16384


def _centre_run(flags: torch.Tensor, centre: int) -> tuple[int, int]:
    """``[lo, hi)`` of the run of True around ``centre`` in the 1-D bool ``flags``."""
    if not bool(flags[centre]):
        return centre, centre
    right = int(flags[centre:].long().cumprod(0).sum())
    left = int(flags[: centre + 1].flip(0).long().cumprod(0).sum())
    return centre - left + 1, centre + right


def calibration_region(
    sampled: torch.Tensor, calib_size: int | tuple[int, int] = 24
) -> tuple[int, int, int, int]:
    """The centred fully sampled block of a sampling pattern, limited to ``calib_size``.

    Args:
        sampled: bool ``[H, W]`` (True where k-space was acquired, any coil).
        calib_size: the largest region per dim (``ecalib -r``).

    Returns:
        ``(r0, r1, c0, c1)``: rows ``[r0, r1)`` and columns ``[c0, c1)``, both containing the
        centre ``(H // 2, W // 2)``; empty (``r0 == r1`` or ``c0 == c1``) when the centre is not
        sampled. Each extent is cut symmetrically around the centre to at most ``calib_size``.
    """
    H, W = sampled.shape
    ch, cw = H // 2, W // 2
    size = (calib_size, calib_size) if isinstance(calib_size, int) else tuple(calib_size)
    c0, c1 = _centre_run(sampled[ch], cw)
    r0, r1 = _centre_run(sampled[:, c0:c1].all(dim=1) if c1 > c0 else sampled[:, cw], ch)
    if r1 > r0:  # rows limit columns too (2-D masks): keep the columns sampled in every row
        c0, c1 = _centre_run(sampled[r0:r1].all(dim=0), cw)
    r0, r1 = max(r0, ch - size[0] // 2), min(r1, ch - size[0] // 2 + size[0])
    c0, c1 = max(c0, cw - size[1] // 2), min(c1, cw - size[1] // 2 + size[1])
    return r0, r1, c0, c1


def _patches(calib: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Calibration matrix ``[P, C*kh*kw]`` of ``calib [C, h, w]`` (all ``kh x kw`` windows)."""
    C = calib.shape[0]
    win = calib.unfold(1, kh, 1).unfold(2, kw, 1)  # [C, h-kh+1, w-kw+1, kh, kw]
    return win.permute(1, 2, 0, 3, 4).reshape(-1, C * kh * kw)


def _conv_kernel(vh: torch.Tensor, C: int, kh: int, kw: int) -> torch.Tensor:
    """Kernel ``h [C, C, 2kh-1, 2kw-1]`` of the k-space operator ``W`` (module docstring).

    ``vh [n, C*kh*kw]``: orthonormal rows spanning the signal space of the calibration patches.
    ``P = vh^T conj(vh)`` projects a patch onto that span; ``h[c, c', d - d'] = 1/K sum
    P[(c, d), (c', d')]`` over kernel positions ``d, d'``.
    """
    P = vh.transpose(0, 1) @ vh.conj()  # [N, N], N = C*kh*kw, index (c, dh, dw)
    P = P.reshape(C, kh, kw, C, kh, kw).permute(0, 3, 1, 2, 4, 5)  # [C, C', dh, dw, dh', dw']
    dh = torch.arange(kh, device=vh.device)
    dw = torch.arange(kw, device=vh.device)
    # target index of delta = d - d' (shifted by k-1 to be >= 0), for every (dh, dw, dh', dw')
    ih = (dh[:, None, None, None] - dh[None, None, :, None] + kh - 1).expand(kh, kw, kh, kw)
    iw = (dw[None, :, None, None] - dw[None, None, None, :] + kw - 1).expand(kh, kw, kh, kw)
    idx = (ih * (2 * kw - 1) + iw).reshape(-1)
    h = torch.zeros(C, C, (2 * kh - 1) * (2 * kw - 1), dtype=vh.dtype, device=vh.device)
    h.index_add_(2, idx, P.reshape(C, C, -1))
    return h.reshape(C, C, 2 * kh - 1, 2 * kw - 1) / (kh * kw)


def _dft_rows(n: int, taps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``E[i, j] = exp(+2 pi i (j - (taps-1)/2) x_i / n)`` with ``x_i = i - n // 2`` (centred
    image coordinates of ``ifft2c``), float64 phase for accuracy."""
    x = torch.arange(n, device=device, dtype=torch.float64) - n // 2
    delta = torch.arange(taps, device=device, dtype=torch.float64) - (taps - 1) // 2
    ph = 2 * math.pi * x[:, None] * delta[None, :] / n
    return torch.polar(torch.ones_like(ph), ph).to(dtype)


def espirit_maps(
    kspace: torch.Tensor,
    *,
    region: tuple[int, int, int, int] | None = None,
    kernel: int | tuple[int, int] = ESPIRIT_DEFAULTS["kernel"],
    calib_size: int | tuple[int, int] = ESPIRIT_DEFAULTS["calib_size"],
    threshold: float = ESPIRIT_DEFAULTS["threshold"],
    crop: float = ESPIRIT_DEFAULTS["crop"],
    phase_ref: str | int = "pca",
    return_eigenvalues: bool = False,
    where: str = "espirit",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """ESPIRiT maps of one or more slices (one set of maps, ``ecalib -m1``).

    Args:
        kspace: ``[B, C, H, W]`` complex64/complex128, fully sampled or undersampled (zeros where
            not acquired); only the calibration region is used.
        region: ``(r0, r1, c0, c1)`` calibration block for every sample; default: detected per
            sample by :func:`calibration_region` from the non-zero pattern.
        kernel: kernel size (``ecalib -k``); clamped to the calibration extent minus 1 per
            dim, so a narrow region (e.g. 4 ACS columns at 8x) still gives maps, from a smaller
            kernel (BART refuses such regions).
        calib_size: the largest calibration region per dim (``ecalib -r``).
        threshold: keep singular vectors with ``sigma_i^2 > threshold * sigma_0^2``
            (``ecalib -t``).
        crop: zero the maps where the top eigenvalue is below this (``ecalib -c``); 0 keeps all.
        phase_ref: ``"pca"`` (rotate to the first principal component of the calibration data,
            BART's default), a coil index, or ``"none"`` (eigh's arbitrary per-pixel phase).
        return_eigenvalues: also return the top eigenvalue map ``[B, 1, H, W]`` (real).

    Returns:
        ``[B, C, H, W]`` maps of ``kspace``'s dtype and device (and the eigenvalues).

    Raises:
        InputValueError: no calibration region (centre not sampled), or one smaller than 2x2.
    """
    B, C, H, W = kspace.shape
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    if not (0 <= threshold < 1 and 0 <= crop < 1 and kh >= 1 and kw >= 1):
        raise InputValueError(
            _src(where, "options"), "need kernel >= 1, 0 <= threshold < 1, 0 <= crop < 1"
        )
    if not (phase_ref in ("pca", "none") or (isinstance(phase_ref, int) and 0 <= phase_ref < C)):
        raise InputValueError(
            _src(where, "phase_ref"), f"must be 'pca', 'none' or a coil index, got {phase_ref!r}"
        )
    sampled = (kspace != 0).any(dim=1)  # [B, H, W]
    maps = torch.zeros_like(kspace)
    evals = torch.zeros(B, 1, H, W, dtype=kspace.real.dtype, device=kspace.device)
    for b in range(B):  # per slice: calibration regions can differ
        r0, r1, c0, c1 = (
            region if region is not None else calibration_region(sampled[b], calib_size)
        )
        if r1 - r0 < 2 or c1 - c0 < 2:
            raise InputValueError(
                _src(where, "kspace"),
                f"no calibration region: the fully sampled k-space centre of sample {b} is "
                f"{r1 - r0}x{c1 - c0} (need at least 2x2; use a mask with ACS lines)",
            )
        calib = kspace[b, :, r0:r1, c0:c1]
        # At least 2 patch positions per dim: a kernel as wide as the region leaves one patch
        # column, too few to separate signal from null space (validation, 8x with 4 ACS columns,
        # 8 coils: CG-SENSE 11.6 dB with kernel 6x4, 18.9 dB with 3x3).
        k_h, k_w = max(1, min(kh, r1 - r0 - 1)), max(1, min(kw, c1 - c0 - 1))
        maps[b], evals[b, 0] = _espirit_one(calib, H, W, k_h, k_w, threshold, crop, phase_ref)
    return (maps, evals) if return_eigenvalues else maps


def _espirit_one(calib, H, W, kh, kw, threshold, crop, phase_ref):
    """Maps ``[C, H, W]`` and top eigenvalues ``[H, W]`` from one calibration block."""
    C = calib.shape[0]
    A = _patches(calib, kh, kw)
    _, sv, vh = torch.linalg.svd(A, full_matrices=False)
    n = int((sv > math.sqrt(threshold) * sv[0]).sum()) if bool(sv[0] > 0) else 0
    if n == 0:
        raise InputValueError("espirit(kspace)", "the calibration region is all zero")
    h = _conv_kernel(vh[:n], C, kh, kw)  # [C, C, 2kh-1, 2kw-1]
    Eh = _dft_rows(H, 2 * kh - 1, calib.dtype, calib.device)  # [H, taps_h]
    Ew = _dft_rows(W, 2 * kw - 1, calib.dtype, calib.device)  # [W, taps_w]
    T = torch.einsum("abij,wj->wabi", h, Ew)  # [W, C, C, taps_h]: transform along W first

    if phase_ref == "pca":
        # First principal component across coils of the calibration samples (a virtual coil).
        flat = calib.reshape(C, -1)
        _, vecs = torch.linalg.eigh(flat @ flat.conj().T)
        ref = vecs[:, -1]
    elif isinstance(phase_ref, int):
        ref = torch.zeros(C, dtype=calib.dtype, device=calib.device)
        ref[phase_ref] = 1
    else:
        ref = None

    maps = torch.empty(H * W, C, dtype=calib.dtype, device=calib.device)
    lam = torch.empty(H * W, dtype=calib.real.dtype, device=calib.device)
    rows = max(1, _CHUNK // W)
    for r in range(0, H, rows):  # row chunks bound memory; each chunk is one batched eigh
        G = torch.einsum("wabi,ri->rwab", T, Eh[r : r + rows]).reshape(-1, C, C)
        G = 0.5 * (G + G.conj().transpose(-1, -2))  # exactly Hermitian for eigh
        w, v = torch.linalg.eigh(G)
        s, lam_c = v[..., -1], w[..., -1]
        if ref is not None:
            proj = s @ ref.conj()  # [n]
            s = s * torch.sgn(proj).conj()[:, None]
        sl = slice(r * W, min(r + rows, H) * W)
        maps[sl], lam[sl] = s, lam_c
    maps = maps.T.reshape(C, H, W)
    lam = lam.reshape(H, W)
    if crop > 0:
        maps = maps * (lam >= crop)
    return maps, lam
