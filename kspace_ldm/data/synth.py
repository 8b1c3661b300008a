"""Synthetic fastMRI-format data: random anatomical phantoms (library side of ``kldm data synth``).

Two object families (``phantom=``, ``kldm data synth --phantom``): ``ellipses`` (the default,
described below; the bundled demo model was trained on it) and ``anatomy`` (knee-like tissue
classes with realistic PD contrast, fine structure, smooth random deformations and B0-like
phase: :mod:`kspace_ldm.data.anatomy`). Both share everything below except the image model.

Each volume is ``slices`` consecutive cross-sections of one random object, written exactly like a
fastMRI knee file (see :mod:`kspace_ldm.data.fastmri`), so every loader, transform and metric can
be exercised without the real data.

Image model (per slice, on the ``[H, W]`` grid, object centre at ``(H // 2, W // 2)``):

* magnitude: a soft-edged body ellipse with a bright subcutaneous "fat" shell around "muscle",
  2-3 "bones" (dark cortical rim around marrow), 3-6 smooth Gaussian blobs, and multiplicative
  band-limited noise texture (feature size ~3-12 px) inside the tissue. Fat and marrow are bright
  for ``CORPD_FBK`` and suppressed for ``CORPDFS_FBK``, whose overall signal is also lower.
* through-slice continuity: the shapes are smooth functions of the slice position ``z`` (the body
  narrows towards the volume ends, the bones drift and change size) and the texture rotates
  slowly between two fixed noise fields, so adjacent slices are similar but never identical.
* phase: a smooth random polynomial of degree 2 over the object (plus a slow drift with ``z``).
* readout oversampling as in fastMRI: the object spans at most the central half of ``H`` (and of
  ``W``, and fits the ``recon_size`` crop), so the centre crop of ``|ifft2c(kspace)|`` holds it.
* multi-coil: ``coils`` Gaussian-falloff sensitivities ``exp(-d^2 / 2 sigma^2)`` with a smooth
  distance-dependent phase, centred on an ellipse 1.3x the object size around it, normalised so
  ``sum_c |S_c|^2 = 1`` at every pixel (so the RSS of the noiseless coil images is the object
  magnitude). Sensitivities do not vary between slices (fixed coil array).
* coil geometry ``varied`` (``coil_geometry="varied"``, ``kldm data synth --coil-geometry
  varied``): per volume, the ring becomes an ellipse with random aspect (1.15-1.6x the object
  half-axes), its centre is shifted by up to 10 % of the object size, the angular jitter is
  +-0.3 of the coil spacing, each coil's size (Gaussian width) is scaled by U(0.6, 1.4), its
  phase wavelength by U(0.5, 2) and it gets a random linear phase across the object; the default
  ``ring`` geometry is the original one (byte-identical files). ``coils`` may also be a list, one
  count drawn per volume (seeded): ``--coils 4,8``.
* noise: white circular complex Gaussian noise added in k-space, ``E|n|^2 = sigma^2`` per sample
  and coil, with ``sigma = noise_level * BASE_SCALE * U(0.8, 1.2)`` (not tied to the volume's
  signal scale, so the darker fat-suppressed volumes have lower SNR, as in the real data); the
  orthonormal FFT makes this the image-domain noise level too.

Intensity scale (documented choice): the magnitude image is built with fat ~ 1.0 and then scaled
by ``scale = 3e-4 * U(0.7, 1.3)`` (x 0.6 for the fat-suppressed contrast), so the targets' maxima
are ~1e-4 .. 5e-4, like fastMRI single-coil knee ``reconstruction_esc``. With the orthonormal FFT,
Parseval fixes the k-space magnitudes from that: the largest (DC-region) values are ~1e-2 and most
of k-space lies at 1e-6 .. 1e-4.

Targets are computed from the NOISY k-space as stored (complex64), as fastMRI's come from the
acquired data: single-coil ``reconstruction_esc = reconstruction_rss = crop(|ifft2c(kspace)|)``
(the RSS of a single coil is its magnitude), multi-coil
``reconstruction_rss = crop(sqrt(sum_c |ifft2c(kspace_c)|^2))``.

Determinism: all randomness comes from ``numpy.random.Generator`` streams derived from
``(seed, split, volume index)`` and the FFTs use numpy's pocketfft (single-threaded, so results do
not depend on the thread count); with :func:`~kspace_ldm.data.fastmri.write_fastmri_file`'s fixed
HDF5 settings, the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kspace_ldm.data.anatomy import AnatomyPhantom, ObjectBox
from kspace_ldm.data.fastmri import (
    FastMRIFile,
    make_ismrmrd_header,
    write_fastmri_file,
)
from kspace_ldm.errors import InputError

SPLITS = ("train", "val", "test")
ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK")
# Peak image magnitude before the per-volume jitter; see the module docstring.
BASE_SCALE = 3e-4
DEFAULT_NOISE_LEVEL = 0.015


@dataclass
class SynthVolume:
    """A generated volume, ready for :func:`write_fastmri_file`.

    Attributes:
        kspace: complex64 ``[S, H, W]`` (``coils == 1``) or ``[S, C, H, W]``.
        reconstruction_esc: float32 ``[S, R, R]`` (single-coil only, else ``None``).
        reconstruction_rss: float32 ``[S, R, R]``.
        header: ISMRMRD XML.
        attrs: ``acquisition``, ``patient_id`` (``max``/``norm`` are added by the writer).
    """

    kspace: np.ndarray
    reconstruction_esc: np.ndarray | None
    reconstruction_rss: np.ndarray
    header: str
    attrs: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Phantom pieces
# --------------------------------------------------------------------------------------------


def _soft_ellipse(
    yy: np.ndarray,
    xx: np.ndarray,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
) -> np.ndarray:
    """Anti-aliased ellipse indicator, float32 on the grid ``yy, xx`` (pixels).

    The edge ramps linearly from 0 to 1 over ~1.5 px, which avoids the unrealistically sharp
    (and aliased) edges of a binary phantom.
    """
    # Clamp so tiny objects (e.g. W = 17) still give a valid, if pixel-sized, ellipse.
    axes = (max(axes[0], 0.5), max(axes[1], 0.5))
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - center[0], xx - center[1]
    u = (c * dy + s * dx) / axes[0]
    v = (-s * dy + c * dx) / axes[1]
    r = np.sqrt(u * u + v * v)
    # Distance to the boundary in pixels, approximated with the smaller semi-axis.
    dist = (1.0 - r) * min(axes)
    return np.clip(0.5 + dist / 1.5, 0.0, 1.0).astype(np.float32)


def _bandlimited_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit-variance float32 noise with spatial wavelengths of ~3-12 px (a band-pass in k)."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    band = np.exp(-0.5 * ((f - 0.15) / 0.07) ** 2)
    out = np.fft.irfft2(np.fft.rfft2(white) * band, s=shape)
    out /= out.std() + 1e-12
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Volume generation
# --------------------------------------------------------------------------------------------


def _object_box(height: int, width: int, recon: int) -> tuple[float, float]:
    """Object half-extent (rows, cols) in pixels: inside the central half of H (2x readout
    oversampling), inside W, and inside the recon crop, with a 10 % margin."""
    half_h = 0.9 * min(height / 4.0, recon / 2.0)
    half_w = 0.9 * min(width / 2.0, recon / 2.0)
    return max(half_h, 1.0), max(half_w, 1.0)


def _coil_maps(
    rng: np.random.Generator,
    coils: int,
    yy: np.ndarray,
    xx: np.ndarray,
    half: tuple[float, float],
) -> np.ndarray:
    """complex64 ``[coils, h, w]`` sensitivities on the object box, ``sum |S|^2 = 1``."""
    rot = rng.uniform(0, 2 * np.pi)
    angles = rot + 2 * np.pi * (np.arange(coils) + rng.uniform(-0.15, 0.15, coils)) / coils
    cy = 1.3 * half[0] * np.sin(angles)
    cx = 1.3 * half[1] * np.cos(angles)
    sigma = 0.8 * (half[0] + half[1]) / 2
    wavelength = 4.0 * (half[0] + half[1])
    phase0 = rng.uniform(-np.pi, np.pi, coils)
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    mag = np.exp(-d2 / (2 * sigma * sigma))
    phase = phase0[:, None, None] + 2 * np.pi * np.sqrt(d2) / wavelength
    maps = mag * np.exp(1j * phase)
    # Gaussians never vanish, so the normalisation is well defined everywhere; the floor only
    # guards against underflow far from every coil on very large grids.
    norm = np.sqrt(np.maximum((mag * mag).sum(axis=0), 1e-30))
    return (maps / norm).astype(np.complex64)


COIL_GEOMETRIES = ("ring", "varied")
#: Object families: ``ellipses`` (the original phantoms, default; the bundled demo model was
#: trained on them) and ``anatomy`` (:mod:`kspace_ldm.data.anatomy`).
PHANTOMS = ("ellipses", "anatomy")


def _check_phantom(phantom: str) -> None:
    if phantom not in PHANTOMS:
        raise InputError("synth", f"unknown phantom family {phantom!r} ({', '.join(PHANTOMS)})")


def _coil_maps_varied(
    rng: np.random.Generator,
    coils: int,
    yy: np.ndarray,
    xx: np.ndarray,
    half: tuple[float, float],
) -> np.ndarray:
    """complex64 ``[coils, h, w]``: the ``varied`` geometry (module docstring), sum |S|^2 = 1."""
    mean_half = (half[0] + half[1]) / 2
    rot = rng.uniform(0, 2 * np.pi)
    angles = rot + 2 * np.pi * (np.arange(coils) + rng.uniform(-0.3, 0.3, coils)) / coils
    ry, rx = rng.uniform(1.15, 1.6, 2) * np.asarray(half)
    oy, ox = rng.uniform(-0.1, 0.1, 2) * np.asarray(half)
    cy, cx = oy + ry * np.sin(angles), ox + rx * np.cos(angles)
    sigma = 0.8 * mean_half * rng.uniform(0.6, 1.4, coils)
    wavelength = 4.0 * 2 * mean_half * rng.uniform(0.5, 2.0, coils)
    phase0 = rng.uniform(-np.pi, np.pi, coils)
    grad = rng.uniform(-1, 1, (coils, 2)) * np.pi / (2 * mean_half)  # <= pi/2 per half-axis
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    mag = np.exp(-d2 / (2 * sigma[:, None, None] ** 2))
    phase = phase0[:, None, None] + 2 * np.pi * np.sqrt(d2) / wavelength[:, None, None]
    phase = phase + grad[:, 0, None, None] * yy[None] + grad[:, 1, None, None] * xx[None]
    norm = np.sqrt(np.maximum((mag * mag).sum(axis=0), 1e-30))
    return (mag * np.exp(1j * phase) / norm).astype(np.complex64)


def synth_volume(
    seed: int | np.random.SeedSequence,
    *,
    coils: int = 1,
    shape: tuple[int, int] = (640, 368),
    recon_size: int = 320,
    slices: int = 8,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    patient_id: str | None = None,
    coil_geometry: str = "ring",
    phantom: str = "ellipses",
) -> SynthVolume:
    """Generate one random phantom volume in fastMRI layout (see the module docstring).

    Args:
        seed: an int or a ``SeedSequence``; equal seeds give equal volumes.
        coils: 1 for single-coil (``kspace [S, H, W]``), else ``kspace [S, coils, H, W]``.
        shape: k-space/image grid ``(H, W)``; ``H`` is the 2x-oversampled readout.
        recon_size: target crop ``R`` (``R <= min(H, W)``).
        slices: number of slices ``S``.
        noise_level: k-space noise std per complex sample and coil, relative to ``BASE_SCALE``.
        patient_id: stored as attribute; default a sha256 hex digest of the seed.
        coil_geometry: ``ring`` (default) or ``varied`` (module docstring).
        phantom: the object family, ``ellipses`` (default; the module docstring) or ``anatomy``
            (knee-like tissue classes, :mod:`kspace_ldm.data.anatomy`).
    """
    _check_phantom(phantom)
    if coil_geometry not in COIL_GEOMETRIES:
        raise InputError(
            "synth", f"unknown coil geometry {coil_geometry!r} ({', '.join(COIL_GEOMETRIES)})"
        )
    height, width = (int(shape[0]), int(shape[1]))
    _check_args(coils, (height, width), recon_size, slices, noise_level)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    # Separate streams: the anatomy does not depend on the coil count, the noise on neither.
    anat_rng, coil_rng, noise_rng = (np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(3))

    half_h, half_w = _object_box(height, width, recon_size)
    # Box of the grid the object can occupy (plus a 2 px border for the soft edges).
    bh = min(height, 2 * int(np.ceil(half_h)) + 4)
    bw = min(width, 2 * int(np.ceil(half_w)) + 4)
    top, left = height // 2 - bh // 2, width // 2 - bw // 2
    yy = (np.arange(bh, dtype=np.float32) + top - height // 2)[:, None]
    xx = (np.arange(bw, dtype=np.float32) + left - width // 2)[None, :]

    acquisition = ACQUISITIONS[int(anat_rng.integers(2))]
    fat_sat = acquisition == "CORPDFS_FBK"
    scale = BASE_SCALE * anat_rng.uniform(0.7, 1.3) * (0.6 if fat_sat else 1.0)
    sigma = noise_level * BASE_SCALE * anat_rng.uniform(0.8, 1.2)
    family = _Phantom if phantom == "ellipses" else AnatomyPhantom
    obj_model = family(anat_rng, fat_sat, yy, xx, half_h, half_w)
    # Slice positions: a fixed random spacing (so adjacent-slice similarity does not depend on
    # the slice count) around a random offset (volumes are cut at different places).
    dz = anat_rng.uniform(0.04, 0.07)
    zs = anat_rng.uniform(-0.2, 0.2) + dz * (np.arange(slices) - (slices - 1) / 2)

    coil_fn = _coil_maps if coil_geometry == "ring" else _coil_maps_varied
    sens = coil_fn(coil_rng, coils, yy, xx, (half_h, half_w)) if coils > 1 else None

    # FFT bookkeeping without fftshift copies of the big arrays: with n // 2 shifts,
    # ifftshift(x)[j] = x[(j + n // 2) % n], so image row i sits at row (i - H // 2) % H of the
    # ifftshifted image (likewise columns), and fftshift(y)[i] = y[(i - n // 2) % n].
    rows_sh = (np.arange(top, top + bh) - height // 2) % height
    cols_sh = (np.arange(left, left + bw) - width // 2) % width
    crop_top, crop_left = (height - recon_size) // 2, (width - recon_size) // 2
    crop_rows = (np.arange(crop_top, crop_top + recon_size) - height // 2) % height
    crop_cols = (np.arange(crop_left, crop_left + recon_size) - width // 2) % width
    fwd_rows = (np.arange(height) - height // 2) % height  # fftshift as a gather
    fwd_cols = (np.arange(width) - width // 2) % width
    noise_std = np.float32(sigma / np.sqrt(2.0))  # per real/imaginary part: E|n|^2 = sigma^2

    kspace = np.empty((slices, coils, height, width), np.complex64)
    target = np.empty((slices, recon_size, recon_size), np.float32)
    for s, z in enumerate(zs):
        obj = (scale * obj_model.slice(s, float(z))).astype(np.complex64)  # [bh, bw]
        coil_imgs = obj[None] if sens is None else sens * obj[None]  # [C, bh, bw]

        # FFT along W only over the rows the object occupies (the rest is zero), then along H.
        rows = np.zeros((coils, bh, width), np.complex64)
        rows[:, :, cols_sh] = coil_imgs
        rows = np.fft.fft(rows, axis=-1, norm="ortho")
        k = np.zeros((coils, height, width), np.complex64)
        k[:, rows_sh] = rows
        k = np.fft.fft(k, axis=-2, norm="ortho")  # = fft2(ifftshift(image)), unshifted
        noise = noise_rng.standard_normal((coils, height, width, 2), dtype=np.float32)
        noise *= noise_std
        k += noise.view(np.complex64)[..., 0]
        kspace[s] = k[:, fwd_rows][:, :, fwd_cols]

        # Target from the noisy k-space as stored: ifft2c(kspace[s]) = fftshift(ifft2(k))
        # exactly, so only the crop's rows/columns of ifft2(k) are computed and kept.
        img = np.fft.ifft(k, axis=-2, norm="ortho")[:, crop_rows]
        img = np.fft.ifft(img, axis=-1, norm="ortho")[:, :, crop_cols]  # [C, R, R]
        power = img.real * img.real + img.imag * img.imag
        target[s] = np.sqrt(power.sum(axis=0))  # RSS over coils; |.| for a single coil

    if patient_id is None:
        key = repr(("kldm-synth", ss.entropy, ss.spawn_key)).encode()
        patient_id = hashlib.sha256(key).hexdigest()
    header = make_ismrmrd_header(
        (height, width, 1), (recon_size, recon_size, 1), width // 2, width - 1
    )
    return SynthVolume(
        kspace=kspace[:, 0] if coils == 1 else kspace,
        reconstruction_esc=target if coils == 1 else None,
        reconstruction_rss=target,
        header=header,
        attrs={"acquisition": acquisition, "patient_id": patient_id},
    )


class _Phantom(ObjectBox):
    """Random anatomy of one volume; :meth:`slice` evaluates it at slice position ``z``.

    Shapes are in pixels on the object box grid ``yy [bh, 1]``, ``xx [1, bw]``; parameters are
    drawn in units of the object half-extent ``(half_h, half_w)`` and vary smoothly with ``z``.
    """

    def _draw(self, rng: np.random.Generator, fat_sat: bool) -> None:
        self.body_ax = rng.uniform([0.88, 0.8], [0.98, 0.98])
        self.body_c = rng.uniform(-0.03, 0.03, 2)
        self.body_angle = rng.uniform(-0.3, 0.3)
        self.fat_frac = rng.uniform(0.82, 0.92)  # muscle ellipse relative to the body
        self.i_fat = 0.35 if fat_sat else 1.0
        self.i_muscle = rng.uniform(0.4, 0.55)
        n_bones = int(rng.integers(2, 4))
        self.bone_c = rng.uniform(-0.45, 0.45, (n_bones, 2))
        self.bone_v = rng.uniform(-0.25, 0.25, (n_bones, 2))  # centre drift per unit z
        self.bone_ax = rng.uniform(0.12, 0.3, (n_bones, 2))
        self.bone_grow = rng.uniform(-0.5, 0.5, n_bones)
        self.bone_angle = rng.uniform(-np.pi, np.pi, n_bones)
        self.i_marrow = rng.uniform(0.2, 0.3) if fat_sat else rng.uniform(0.75, 0.9)
        n_blobs = int(rng.integers(3, 7))
        self.blob_c = rng.uniform(-0.6, 0.6, (n_blobs, 2))
        self.blob_v = rng.uniform(-0.2, 0.2, (n_blobs, 2))
        self.blob_s = rng.uniform(0.05, 0.2, n_blobs)
        self.blob_a = rng.uniform(-0.15, 0.15, n_blobs)
        shape = self.shape
        self.tex_a, self.tex_b = _bandlimited_noise(rng, shape), _bandlimited_noise(rng, shape)
        self.tex_amp = rng.uniform(0.08, 0.15)
        self.tex_theta0, self.tex_dtheta = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.2)
        self.phase_c = rng.uniform(-1, 1, 6) * np.array([np.pi, 1.0, 1.0, 0.5, 0.5, 0.5])

    def slice(self, index: int, z: float) -> np.ndarray:
        """complex64 ``[bh, bw]`` image of slice ``index`` at position ``z``, peak ~1."""
        yy, xx, (half_h, half_w) = self.yy, self.xx, self.half
        # The body narrows away from the volume centre, like a limb cross-section.
        shrink = 1.0 / np.sqrt(1.0 + 0.8 * z * z)
        b_axes = (self.body_ax[0] * shrink * half_h, self.body_ax[1] * shrink * half_w)
        b_cent = (self.body_c[0] * half_h, self.body_c[1] * half_w)
        body = _soft_ellipse(yy, xx, b_cent, b_axes, self.body_angle)
        m_axes = (b_axes[0] * self.fat_frac, b_axes[1] * self.fat_frac)
        muscle = _soft_ellipse(yy, xx, b_cent, m_axes, self.body_angle)
        mag = self.i_fat * body + (self.i_muscle - self.i_fat) * muscle
        for b in range(len(self.bone_c)):
            cen = (
                (self.bone_c[b, 0] + self.bone_v[b, 0] * z) * half_h,
                (self.bone_c[b, 1] + self.bone_v[b, 1] * z) * half_w,
            )
            grow = shrink * (1.0 + self.bone_grow[b] * z) * self.px
            ax = (self.bone_ax[b, 0] * grow, self.bone_ax[b, 1] * grow)
            cortex = _soft_ellipse(yy, xx, cen, ax, self.bone_angle[b]) * muscle
            rim = max(2.0, 0.15 * min(ax))
            inner = (ax[0] - rim, ax[1] - rim)
            marrow = _soft_ellipse(yy, xx, cen, inner, self.bone_angle[b]) * muscle
            # Replace tissue by the dark cortex, then fill the inside with marrow.
            mag = mag * (1 - cortex) + 0.08 * cortex + (self.i_marrow - 0.08) * marrow
        ny, nx = self.ny, self.nx
        for b in range(len(self.blob_c)):
            cy = self.blob_c[b, 0] + self.blob_v[b, 0] * z
            cx = self.blob_c[b, 1] + self.blob_v[b, 1] * z
            r2 = (ny - cy) ** 2 + (nx - cx) ** 2
            mag = mag + self.blob_a[b] * np.exp(-r2 / (2 * self.blob_s[b] ** 2)) * muscle
        theta = self.tex_theta0 + self.tex_dtheta * index
        # Rotating between two fixed fields keeps the texture variance and makes it change
        # slowly from slice to slice (correlation cos(dtheta) > 0.98).
        texture = np.cos(theta) * self.tex_a + np.sin(theta) * self.tex_b
        mag = np.maximum(mag * (1.0 + self.tex_amp * texture) * body, 0.0)
        p = self.phase_c
        phase = p[0] + 0.3 * z + p[1] * ny + p[2] * nx + p[3] * ny * nx
        phase = phase + p[4] * ny * ny + p[5] * nx * nx
        return (mag * np.exp(1j * phase)).astype(np.complex64)


def _check_args(
    coils: int, shape: tuple[int, int], recon_size: int, slices: int, noise_level: float
) -> None:
    if int(coils) < 1:
        raise InputError("synth", f"coils must be >= 1, got {coils}")
    if int(slices) < 1:
        raise InputError("synth", f"slices must be >= 1, got {slices}")
    if min(shape) < 4:
        raise InputError("synth", f"shape must be at least 4 x 4, got {tuple(shape)}")
    if not 1 <= int(recon_size) <= min(shape):
        raise InputError(
            "synth", f"recon_size must be in [1, min(H, W)] = [1, {min(shape)}], got {recon_size}"
        )
    if not (np.isfinite(noise_level) and noise_level >= 0):
        raise InputError("synth", f"noise_level must be finite and >= 0, got {noise_level}")


#: Peak memory of :func:`synth_volume` per byte of the volume's complex64 k-space: the image,
#: coil images and FFT work arrays live at the same time (a stated upper bound, not measured
#: to the byte; the point is to refuse sizes that cannot fit at all, before any work).
_MEMORY_PER_KSPACE_BYTE = 4


def estimate_bytes(
    coils: int, shape: tuple[int, int], recon_size: int, slices: int, volumes: int = 1
) -> tuple[int, int]:
    """``(peak memory of one volume, bytes on disk of all volumes)``, estimated.

    The k-space is ``slices x coils x H x W`` complex64 (8 bytes); each file also holds the
    float32 targets ``slices x R x R`` (two for multi-coil files).
    """
    h, w = int(shape[0]), int(shape[1])
    kspace = int(slices) * int(coils) * h * w * 8
    targets = int(slices) * int(recon_size) ** 2 * 4 * (2 if int(coils) > 1 else 1)
    return _MEMORY_PER_KSPACE_BYTE * kspace, int(volumes) * (kspace + targets)


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _free_disk(path: Path) -> int | None:
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


def check_size(
    out_dir: str | Path,
    coils: int,
    shape: tuple[int, int],
    recon_size: int,
    slices: int,
    volumes: int,
) -> None:
    """Refuse, before any work, a dataset whose volume cannot fit in memory or whose files
    cannot fit on the disk, with the estimated sizes (:func:`estimate_bytes`)."""
    memory, disk = estimate_bytes(coils, shape, recon_size, slices, volumes)
    what = f"{slices} slices x {coils} coils x {shape[0]}x{shape[1]} k-space"
    available = _available_memory()
    if available is not None and memory > available:
        raise InputError(
            "synth",
            f"one volume ({what}) needs about {_gb(memory)} of memory, {_gb(available)} is "
            "available; use fewer --slices/--coils or a smaller --shape",
        )
    free = _free_disk(Path(out_dir))
    if free is not None and disk > free:
        raise InputError(
            out_dir,
            f"{volumes} volume(s) of {what} need about {_gb(disk)} on disk, {_gb(free)} is free",
        )


def _file_numbers(seed: int, count: int) -> list[int]:
    """``count`` distinct fastMRI-like 7-digit file numbers, deterministic from ``seed``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0xF11E])))
    seen: dict[int, None] = {}
    while len(seen) < count:
        for n in rng.integers(1_000_000, 2_000_000, size=count - len(seen) + 8).tolist():
            if len(seen) < count:
                seen.setdefault(int(n), None)
    return list(seen)


def synth_dataset(
    out_dir: str | Path,
    n_train: int,
    n_val: int,
    n_test: int,
    *,
    coils: int | tuple[int, ...] = 1,
    shape: tuple[int, int] = (640, 368),
    recon_size: int = 320,
    slices: int = 8,
    seed: int = 0,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    progress: bool = False,
    coil_geometry: str = "ring",
    phantom: str = "ellipses",
) -> dict[str, list[Path]]:
    """Write a synthetic fastMRI-format dataset.

    Files go to ``out_dir/{singlecoil|multicoil}_{train,val,test}/fileNNNNNNN.h5`` (distinct
    7-digit numbers drawn from ``seed``; sorted within each split). Test files are fully sampled
    WITH targets (a held-out evaluation set); make challenge-style test files from them with
    :func:`write_challenge_test_file`.

    Args:
        out_dir: root folder (created).
        n_train, n_val, n_test: number of volumes per split (>= 0).
        coils, shape, recon_size, slices, noise_level: as for :func:`synth_volume`.
        seed: equal arguments give byte-identical files.
        progress: print one line per file to stderr.
        coils: an int, or a list of counts: one drawn per volume from
            ``SeedSequence([seed, split, volume, 0xC0])`` (all > 1: multi-coil files).
        coil_geometry: ``ring`` or ``varied`` (see :func:`synth_volume`).
        phantom: ``ellipses`` (default) or ``anatomy`` (see :func:`synth_volume`).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` lists of written paths.
    """
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if min(counts.values()) < 0:
        raise InputError("synth", f"volume counts must be >= 0, got {counts}")
    shape = (int(shape[0]), int(shape[1]))
    _check_phantom(phantom)
    choices = (int(coils),) if isinstance(coils, (int, np.integer)) else tuple(map(int, coils))
    if not choices or (len(choices) > 1 and min(choices) < 2):
        raise InputError("synth", f"a list of coil counts must hold counts >= 2, got {coils}")
    for c in choices:
        _check_args(c, shape, recon_size, slices, noise_level)
    # the largest count bounds one volume's memory and every volume's disk size
    check_size(out_dir, max(choices), shape, recon_size, slices, sum(counts.values()))
    prefix = "singlecoil" if choices == (1,) else "multicoil"
    numbers = iter(_file_numbers(seed, sum(counts.values())))
    out = Path(out_dir)
    written: dict[str, list[Path]] = {}
    total, done = sum(counts.values()), 0
    for split_idx, split in enumerate(SPLITS):
        names = sorted(next(numbers) for _ in range(counts[split]))
        paths = []
        for vol_idx, number in enumerate(names):
            path = out / f"{prefix}_{split}" / f"file{number}.h5"
            n_coils = choices[0]
            if len(choices) > 1:
                pick = np.random.SeedSequence([int(seed), split_idx, vol_idx, 0xC0])
                n_coils = choices[
                    int(np.random.Generator(np.random.PCG64(pick)).integers(len(choices)))
                ]
            vol = synth_volume(
                np.random.SeedSequence([int(seed), split_idx, vol_idx]),
                coils=n_coils,
                shape=shape,
                recon_size=recon_size,
                slices=slices,
                noise_level=noise_level,
                coil_geometry=coil_geometry,
                phantom=phantom,
            )
            write_fastmri_file(
                path,
                vol.kspace,
                reconstruction_esc=vol.reconstruction_esc,
                reconstruction_rss=vol.reconstruction_rss,
                header=vol.header,
                attrs=vol.attrs,
            )
            paths.append(path)
            done += 1
            if progress:
                print(f"[synth] {done}/{total} {path}", file=sys.stderr, flush=True)
        written[split] = paths
    return written


def write_challenge_test_file(
    src_path: str | Path,
    dst_path: str | Path,
    mask: np.ndarray,
    acceleration: int | float,
    num_low_frequency: int,
) -> Path:
    """Write a fastMRI test-set style file from a fully sampled one.

    The output holds ``kspace * mask`` (mask along W, same for every slice and coil), the
    ``mask`` dataset, the source's header, its ``acquisition``/``patient_id`` (and other
    attributes except the target statistics ``max``/``norm``), plus ``acceleration`` and
    ``num_low_frequency``; no target.

    Args:
        src_path: fully sampled fastMRI-format file.
        dst_path: output path (written atomically).
        mask: bool ``[W]`` column mask with at least one sampled column.
        acceleration: nominal acceleration (e.g. 4 or 8).
        num_low_frequency: number of fully sampled centre columns.
    """
    src_path = Path(src_path)
    mask_arr = np.asarray(mask)
    with FastMRIFile(src_path) as src:
        width = src.kspace_shape[-1]
        if mask_arr.ndim != 1 or mask_arr.shape[0] != width:
            raise InputError(
                dst_path, f"mask has shape {list(mask_arr.shape)}, expected [{width}] (kspace W)"
            )
        mask_bool = mask_arr != 0
        if not mask_bool.any():
            raise InputError(dst_path, "mask samples no column")
        if not (np.isfinite(acceleration) and acceleration > 0):
            raise InputError(dst_path, f"acceleration must be > 0, got {acceleration}")
        if int(num_low_frequency) < 0:
            raise InputError(dst_path, f"num_low_frequency must be >= 0, got {num_low_frequency}")
        kspace = src.read_volume_kspace() * mask_bool.astype(np.complex64)
        header = src.header_xml  # kept verbatim; None -> the writer makes one from the shapes
        attrs = {k: v for k, v in src.attrs.items() if k not in ("max", "norm")}
    attrs["acceleration"] = acceleration
    attrs["num_low_frequency"] = int(num_low_frequency)
    return write_fastmri_file(dst_path, kspace, header=header, attrs=attrs, mask=mask_bool)
