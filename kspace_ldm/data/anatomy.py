"""The ``anatomy`` phantom family of ``kldm data synth --phantom anatomy``: knee-like PD images.

:func:`kspace_ldm.data.synth.synth_volume` does the k-space side (FFT, coils, k-space noise,
targets) for every family; this module only draws the object of one volume and evaluates it slice
by slice, like ``synth._Phantom`` (the ``ellipses`` family, still the default).

Image model (per slice, on the object box grid, normalised coordinates ``ny, nx`` in about
``[-1, 1]``), a cross-section through a knee-like limb:

* tissue classes (:data:`TISSUES`) with relative proton-density contrast taken from knee PD /
  PD fat-saturated images (:data:`CONTRAST`): subcutaneous fat (brightest in PD), bone marrow
  (fatty, bright in PD, suppressed with fat saturation), joint fluid (moderately bright in PD,
  brightest with fat saturation), cartilage (intermediate), muscle (dark-intermediate), and the
  near-signal-free tendons/ligaments and cortical bone;
* geometry: a body outline with random low-order harmonic wobble, a fat layer of varying
  thickness, muscle with dark fascia lines (zero crossings of a smooth random field) and faint fat
  streaks, one large bone (femur/tibia-like, dark cortex 1-6 px, marrow with a trabecular network:
  dark zero-crossing lines of band-limited noise) and 0-2 small ones (fibula/patella-like), a
  cartilage layer over a sector of the large bone with a thin fluid film on it, 1-3 fluid pockets
  (effusion/cysts), 2-4 dark tendons, 3-7 vessels in cross-section (dark flow void or bright) and
  1-2 in-plane vessels (thin bright curves);
* texture: multiplicative band-limited noise inside every tissue (anisotropic "fibre" texture in
  muscle, feature size ~3-12 px), and a smooth receive-bias field (+-10 %);
* between subjects: all sizes/positions are random, and the whole object is warped by a random
  smooth (low-order Fourier) deformation field of a few percent of the object size;
* through-slice: the body narrows and the bones drift and change size with the slice position
  ``z``, the deformation and texture fields rotate slowly between two fixed fields, so adjacent
  slices are similar but never identical (as for ``ellipses``);
* phase: a random degree-2 polynomial (background) plus 2-4 Gaussian B0-like phase bumps of up to
  ~0.8 rad (susceptibility near the bones), drifting slowly with ``z``.

The intensity scale, readout oversampling, coil maps, k-space noise and targets are those of the
``ellipses`` family (see :mod:`kspace_ldm.data.synth`): the magnitude is built with PD fat ~1.0
and scaled by ``BASE_SCALE * U(0.7, 1.3)`` (x 0.6 with fat saturation).

Everything is drawn from the ``numpy.random.Generator`` it is given, so it is deterministic from
the volume's seed.
"""

from __future__ import annotations

import numpy as np

#: Tissue class labels of :meth:`AnatomyPhantom.slice_labelled` (``labels``), 0 = air.
TISSUES = ("air", "fat", "muscle", "marrow", "cortex", "cartilage", "fluid", "tendon", "vessel")

#: Relative magnitude of each tissue, ``(PD, PD fat-saturated)``: an ordering that follows knee
#: PD / PD-FS images (fat > marrow > fluid > cartilage > muscle > tendon, cortex in PD; fluid >
#: cartilage > muscle > suppressed fat/marrow > tendon, cortex with fat saturation). The numbers
#: are a documented choice, each jittered by U(0.9, 1.1) per volume.
CONTRAST = {
    "fat": (1.0, 0.12),
    "marrow": (0.88, 0.10),
    "fluid": (0.72, 1.0),
    "cartilage": (0.55, 0.62),
    "muscle": (0.36, 0.40),
    "tendon": (0.05, 0.04),
    "cortex": (0.03, 0.03),
}


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    wavelength: float,
    *,
    rel_bandwidth: float = 0.5,
    anisotropy: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Unit-variance float32 noise ``[h, w]`` with spatial wavelength ~``wavelength`` px.

    A Gaussian band-pass around ``1 / wavelength`` cycles/px; ``anisotropy > 1`` stretches the
    features along direction ``angle`` (fibre-like texture).
    """
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    c, s = np.cos(angle), np.sin(angle)
    fu = c * fy + s * fx  # along the fibre: low frequencies only when anisotropic
    fv = -s * fy + c * fx
    f = np.sqrt((fu * anisotropy) ** 2 + fv * fv)
    f0 = 1.0 / max(wavelength, 2.0)
    band = np.exp(-0.5 * ((f - f0) / (rel_bandwidth * f0)) ** 2)
    out = np.fft.irfft2(np.fft.rfft2(white) * band, s=shape)
    out /= out.std() + 1e-12
    return out.astype(np.float32)


def _step(dist_px: np.ndarray) -> np.ndarray:
    """Soft indicator from a signed distance in pixels (positive inside), ~1.5 px edge ramp."""
    return np.clip(0.5 + dist_px / 1.5, 0.0, 1.0).astype(np.float32)


class _FieldPair:
    """Two fixed unit-variance noise fields ``a, b`` ``[h, w]``; a slice sees
    ``cos(theta) a + sin(theta) b``, which keeps the variance and changes slowly with ``theta``
    (adjacent slices: correlation ``cos(dtheta) > 0.98``)."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.a, self.b = a, b
        self.grad_a, self.grad_b = np.gradient(a), np.gradient(b)  # (d/dy, d/dx), per pixel

    def mix(self, theta: float) -> np.ndarray:
        return np.cos(theta) * self.a + np.sin(theta) * self.b

    def lines(self, theta: float, width: float) -> np.ndarray:
        """Thin lines along the zero crossings of :meth:`mix`: ``exp(-d^2 / 2 width^2)`` with
        ``d = f / |grad f|`` (the distance to the zero line in px), so ~``2 width`` px wide."""
        c, s = np.cos(theta), np.sin(theta)
        gy = c * self.grad_a[0] + s * self.grad_b[0]
        gx = c * self.grad_a[1] + s * self.grad_b[1]
        d = self.mix(theta) / (np.hypot(gy, gx) + 1e-6)
        return np.exp(-0.5 * (d / width) ** 2).astype(np.float32)


class _Outline:
    """A closed, star-shaped outline: ellipse with axes ``ax`` (normalised units), rotated by
    ``angle``, its radius modulated by random harmonics 2..4 of relative amplitude ``wobble``."""

    def __init__(self, rng: np.random.Generator | None, ax, angle: float, wobble: float = 0.0):
        self.ax = np.asarray(ax, dtype=np.float64)
        self.angle = angle
        if rng is None:  # a plain ellipse
            self.amp, self.ph = np.zeros(3), np.zeros(3)
        else:
            self.amp = rng.uniform(-wobble, wobble, 3)
            self.ph = rng.uniform(0, 2 * np.pi, 3)

    def rho(self, y: np.ndarray, x: np.ndarray, cy: float, cx: float, grow: float = 1.0):
        """``(rho, theta)``: radius relative to the outline (1 on it) and polar angle."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        dy, dx = y - cy, x - cx
        u = (c * dy + s * dx) / (self.ax[0] * grow)
        v = (-s * dy + c * dx) / (self.ax[1] * grow)
        theta = np.arctan2(u, v)
        wob = 1.0
        for m in range(3):
            wob = wob + self.amp[m] * np.cos((m + 2) * theta + self.ph[m])
        return np.sqrt(u * u + v * v) / wob, theta


class ObjectBox:
    """The object box grid of one volume, shared by both phantom families: pixel coordinates
    ``yy [bh, 1]``, ``xx [1, bw]``, the object half-extent ``half = (half_h, half_w)`` in pixels,
    normalised coordinates ``ny, nx`` (the object within about ``[-1, 1]``), ``px`` pixels per
    normalised unit and ``shape = (bh, bw)``. A family draws its random object in :meth:`_draw`
    (from ``rng`` only, so a volume is deterministic from its seed) and evaluates it in
    ``slice(index, z)``."""

    def __init__(
        self,
        rng: np.random.Generator,
        fat_sat: bool,
        yy: np.ndarray,
        xx: np.ndarray,
        half_h: float,
        half_w: float,
    ):
        self.yy, self.xx, self.half = yy, xx, (half_h, half_w)
        self.ny, self.nx = yy / half_h, xx / half_w
        self.px = (half_h + half_w) / 2
        self.shape = (yy.shape[0], xx.shape[1])
        self._draw(rng, fat_sat)

    def _draw(self, rng: np.random.Generator, fat_sat: bool) -> None:
        raise NotImplementedError


class AnatomyPhantom(ObjectBox):
    """Random knee-like anatomy of one volume; :meth:`slice` evaluates it at slice position ``z``.

    ``yy [bh, 1]``, ``xx [1, bw]``: pixel coordinates of the object box; ``half_h, half_w``: the
    object half-extent in pixels (see ``synth._object_box``).
    """

    def _draw(self, rng: np.random.Generator, fat_sat: bool) -> None:
        shape = self.shape
        col = 1 if fat_sat else 0
        self.i = {k: v[col] * rng.uniform(0.9, 1.1) for k, v in CONTRAST.items()}
        self.i["vessel_bright"] = rng.uniform(0.6, 0.9)

        # Smooth deformation: displacement = sum of low-order Fourier modes (normalised units),
        # two fields mixed by the slice angle.
        self.warp_k = rng.uniform(0.6, 2.0, (2, 2, 3, 2)) * np.pi  # [field, comp, mode, (ky,kx)]
        self.warp_ph = rng.uniform(0, 2 * np.pi, (2, 2, 3))
        self.warp_amp = rng.uniform(0.015, 0.04)

        # Body, fat layer.
        self.body = _Outline(rng, tuple(rng.uniform([0.86, 0.82], [0.97, 0.97])), 0.0, 0.03)
        self.body.angle = rng.uniform(-0.3, 0.3)
        self.body_c = rng.uniform(-0.03, 0.03, 2)
        self.fat_t = rng.uniform(0.05, 0.13)  # fat thickness relative to the body radius
        self.fat_mod = (rng.uniform(-0.5, 0.5, 2), rng.uniform(0, 2 * np.pi, 2))

        # Main bone (+ small ones); centre, drift with z, size.
        self.bones = []
        n_small = int(rng.integers(0, 3))
        specs = [(rng.uniform(-0.15, 0.15, 2), rng.uniform(0.28, 0.42))]
        for _ in range(n_small):
            r = rng.uniform(0.5, 0.62)
            a = rng.uniform(0, 2 * np.pi)
            specs.append((np.array([r * np.sin(a), r * np.cos(a)]), rng.uniform(0.08, 0.14)))
        for b, (cen, size) in enumerate(specs):
            ax = (size * rng.uniform(0.75, 1.0), size * rng.uniform(0.9, 1.2))
            self.bones.append(
                {
                    "c": cen,
                    "v": rng.uniform(-0.15, 0.15, 2),
                    "grow": rng.uniform(-0.4, 0.4),
                    "outline": _Outline(rng, ax, rng.uniform(-np.pi, np.pi), 0.06 if b else 0.08),
                    "cortex_px": max(1.2, rng.uniform(0.025, 0.045) * self.px * (1 if b else 1.3)),
                }
            )
        # Cartilage over a sector of the main bone, fluid film and pockets.
        self.cart_t = rng.uniform(0.03, 0.055)  # thickness, normalised units
        self.cart_dir = rng.uniform(-np.pi, np.pi)
        self.cart_width = rng.uniform(0.6, 1.2)  # half-width of the sector, radians
        self.film_t = rng.uniform(0.008, 0.02)
        n_pock = int(rng.integers(1, 4))
        self.pockets = [
            (
                rng.uniform(-0.55, 0.55, 2),
                rng.uniform([0.03, 0.06], [0.08, 0.18]),
                rng.uniform(-np.pi, np.pi),
            )
            for _ in range(n_pock)
        ]
        self.tendons = [
            (rng.uniform(-0.6, 0.6, 2), rng.uniform([0.02, 0.05], [0.04, 0.12]), rng.uniform(-3, 3))
            for _ in range(int(rng.integers(2, 5)))
        ]
        n_ves = int(rng.integers(3, 8))
        self.vessels = [
            (
                rng.uniform(-0.7, 0.7, 2),
                rng.uniform(0.012, 0.035),
                bool(rng.integers(2)),
            )
            for _ in range(n_ves)
        ]
        # In-plane vessels: the zero line of a smooth field, windowed to a Gaussian patch.
        self.inplane = [
            (
                _FieldPair(
                    _smooth_noise(rng, shape, 0.8 * self.px, rel_bandwidth=0.3),
                    _smooth_noise(rng, shape, 0.8 * self.px, rel_bandwidth=0.3),
                ),
                rng.uniform(-0.5, 0.5, 2),
                rng.uniform(0.12, 0.25),
            )
            for _ in range(int(rng.integers(1, 3)))
        ]

        # Textures (pairs rotated through the volume), fascia and fat streaks.
        def pair(**kw):
            return _FieldPair(_smooth_noise(rng, shape, **kw), _smooth_noise(rng, shape, **kw))

        fibre = rng.uniform(-np.pi, np.pi)
        self.tex_muscle = pair(wavelength=6.0, anisotropy=4.0, angle=fibre)
        self.tex_fat = pair(wavelength=12.0)
        self.tex_trab = pair(wavelength=max(3.0, 0.035 * self.px), rel_bandwidth=0.6)
        self.fascia = pair(wavelength=0.6 * self.px, rel_bandwidth=0.4)
        self.streak = pair(wavelength=0.15 * self.px, anisotropy=3.0, angle=fibre)
        self.tex_amp = rng.uniform(0.06, 0.12)
        self.theta0, self.dtheta = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.2)
        self.bias = (rng.uniform(-0.1, 0.1, 2), rng.uniform(-0.05, 0.05, 3))

        # Phase: degree-2 polynomial background + Gaussian B0-like bumps near the bones.
        self.phase_c = rng.uniform(-1, 1, 6) * np.array([np.pi, 1.0, 1.0, 0.5, 0.5, 0.5])
        n_b0 = int(rng.integers(2, 5))
        self.b0 = [
            (rng.uniform(-0.5, 0.5, 2), rng.uniform(0.08, 0.25), rng.uniform(-0.8, 0.8))
            for _ in range(n_b0)
        ]

    def slice(self, index: int, z: float) -> np.ndarray:
        """Image complex64 ``[bh, bw]`` (PD fat ~1) of slice ``index`` at position ``z``."""
        return self.slice_labelled(index, z)[0]

    def slice_labelled(self, index: int, z: float) -> tuple[np.ndarray, np.ndarray]:
        """``(image complex64 [bh, bw] with PD fat ~1, labels uint8 [bh, bw])`` of slice
        ``index`` at position ``z``; ``labels`` indexes :data:`TISSUES` (dominant tissue)."""
        theta = self.theta0 + self.dtheta * index
        ct, st = np.cos(theta), np.sin(theta)
        # Warped coordinates (normalised units): the deformation is smooth and small.
        ny, nx = self.ny, self.nx
        wy, wx = ny.astype(np.float64) + 0 * nx, nx.astype(np.float64) + 0 * ny
        for comp, tgt in ((0, "y"), (1, "x")):
            disp = 0.0
            for f, w in ((0, ct), (1, st)):
                for m in range(3):
                    ky, kx = self.warp_k[f, comp, m]
                    disp = disp + w * np.sin(ky * ny + kx * nx + self.warp_ph[f, comp, m])
            if tgt == "y":
                wy = wy + self.warp_amp * disp
            else:
                wx = wx + self.warp_amp * disp
        px = self.px
        i = self.i
        shrink = 1.0 / np.sqrt(1.0 + 0.8 * z * z)  # the limb narrows away from the centre

        rho_b, th_b = self.body.rho(wy, wx, self.body_c[0], self.body_c[1], shrink)
        r_body = min(self.body.ax) * shrink
        body = _step((1.0 - rho_b) * r_body * px)
        (a1, a2), (p1, p2) = self.fat_mod
        fat_t = self.fat_t * (1.0 + a1 * np.cos(th_b + p1) + a2 * np.cos(2 * th_b + p2))
        inner = _step((1.0 - fat_t - rho_b) * r_body * px)  # muscle compartment
        labels = np.where(body > 0.5, 1, 0).astype(np.uint8)
        labels[inner > 0.5] = 2

        tex_m = self.tex_muscle.mix(theta)
        tex_f = self.tex_fat.mix(theta)
        amp = self.tex_amp
        fat_img = i["fat"] * (1.0 + 0.5 * amp * tex_f)
        muscle_img = i["muscle"] * (1.0 + amp * tex_m)
        # Fascia: dark thin lines where a smooth field crosses zero (1-2 px wide).
        fascia = self.fascia.lines(theta, 0.9)
        muscle_img = muscle_img * (1.0 - 0.45 * fascia)
        # Faint intramuscular fat streaks.
        streak = np.clip(self.streak.mix(theta) - 1.6, 0.0, 1.0)
        muscle_img = muscle_img + (i["fat"] - i["muscle"]) * 0.5 * streak
        mag = fat_img * body * (1.0 - inner) + muscle_img * inner

        def put(mask: np.ndarray, value, label: int):
            nonlocal mag
            mag = mag * (1.0 - mask) + value * mask
            labels[mask > 0.5] = label

        # Tendons (dark ellipses inside the muscle).
        for cen, ax, ang in self.tendons:
            o = _Outline(None, tuple(ax * shrink), ang)
            r, _ = o.rho(wy, wx, cen[0] * shrink, cen[1] * shrink)
            put(_step((1.0 - r) * min(ax) * shrink * px) * inner, i["tendon"], 7)
        # Fluid pockets.
        for cen, ax, ang in self.pockets:
            o = _Outline(None, tuple(ax * shrink), ang)
            r, _ = o.rho(wy, wx, cen[0] * shrink, cen[1] * shrink)
            put(_step((1.0 - r) * min(ax) * shrink * px) * inner, i["fluid"], 6)

        network = self.tex_trab.lines(theta, 0.5)  # dark trabecular lines
        for b, bone in enumerate(self.bones):
            grow = shrink * (1.0 + bone["grow"] * z)
            cy = (bone["c"][0] + bone["v"][0] * z) * shrink
            cx = (bone["c"][1] + bone["v"][1] * z) * shrink
            o = bone["outline"]
            r, th = o.rho(wy, wx, cy, cx, grow)
            rad_px = min(o.ax) * grow * px
            if b == 0:
                # cartilage shell over a sector, a fluid film on top of it
                dth = np.angle(np.exp(1j * (th - self.cart_dir - 0.3 * z)))
                sector = np.clip(1.5 - np.abs(dth) / self.cart_width, 0.0, 1.0)
                cart_px = self.cart_t * px * sector
                film_px = self.film_t * px * sector
                out_d = (r - 1.0) * rad_px  # pixels outside the bone surface
                film = _step(cart_px + film_px - out_d) * _step(out_d - cart_px + 0.75)
                put(film * (sector > 0) * inner, i["fluid"], 6)
                cart = _step(cart_px - out_d) * (cart_px > 0.5)
                put(cart * inner, i["cartilage"], 5)
            bone_mask = _step((1.0 - r) * rad_px) * body
            put(bone_mask, i["cortex"], 4)
            marrow = _step((1.0 - r) * rad_px - bone["cortex_px"]) * body
            marrow_img = i["marrow"] * (1.0 - 0.35 * network) * (1.0 + 0.5 * amp * tex_f)
            put(marrow, marrow_img, 3)

        # Vessels in cross-section (flow void or bright) and in-plane vessels.
        for cen, rad, bright in self.vessels:
            d = np.hypot(wy - cen[0] * shrink, wx - cen[1] * shrink)
            m = _step((rad - d) * px) * body * (labels <= 2)
            put(m, i["vessel_bright"] if bright else i["tendon"], 8)
        for field, cen, extent in self.inplane:
            line = field.lines(theta, 1.0)
            window = np.exp(-((wy - cen[0]) ** 2 + (wx - cen[1]) ** 2) / (2 * extent**2))
            m = line * (window > 0.3) * np.clip((window - 0.3) / 0.2, 0, 1)
            m = m * body * (labels <= 2)
            put(m, i["vessel_bright"], 8)

        (by, bx), (bq0, bq1, bq2) = self.bias
        bias = 1.0 + by * ny + bx * nx + bq0 * ny * ny + bq1 * nx * nx + bq2 * ny * nx
        mag = np.maximum(mag * bias * body, 0.0)
        labels[body <= 0.5] = 0

        p = self.phase_c
        phase = p[0] + 0.3 * z + p[1] * ny + p[2] * nx + p[3] * ny * nx
        phase = phase + p[4] * ny * ny + p[5] * nx * nx
        for cen, width, a in self.b0:
            r2 = (ny - cen[0] - 0.1 * z) ** 2 + (nx - cen[1]) ** 2
            phase = phase + a * np.exp(-r2 / (2 * width * width))
        return (mag * np.exp(1j * phase)).astype(np.complex64), labels
