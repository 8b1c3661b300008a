"""Undersampling masks with fastMRI's semantics, plus 2-D variable-density masks.

Column ("Cartesian 2-D") masks reproduce ``fastmri.data.subsample`` bit for bit: for the same
seed, centre fractions and accelerations, :class:`RandomMask`, :class:`EquispacedMask`,
:class:`EquispacedFractionMask`, :class:`MagicMask` and :class:`MagicFractionMask` select the
same columns and report the same ``num_low_frequencies`` as fastMRI's ``random``,
``equispaced``, ``equispaced_fraction``, ``magic`` and ``magic_fraction`` mask functions. That
requires drawing from a legacy ``np.random.RandomState`` in exactly fastMRI's order:

1. choose the (centre fraction, acceleration) pair: ``rng.randint(len(cfs))`` for paired lists,
   or ``rng.choice(cfs)`` then ``rng.choice(accs)`` when ``allow_any_combination`` is set;
2. draw what the mask type needs: ``rng.uniform(size=W)`` (random), or one
   ``rng.randint(0, high=...)`` offset (equispaced / magic types) unless an offset is given.

A call with a seed reseeds the generator for that call only and restores its previous state
afterwards (fastMRI's ``temp_seed``); a call without one continues the generator's own stream,
which the constructor's ``seed`` started.

Layout: the package's k-space is complex ``[..., H, W]`` with the phase-encoding direction along
W (the last axis), so a column mask is a 1-D bool array of length W. fastMRI works on a real view
``(..., H, W, 2)`` and returns a float32 tensor of shape ``[1, ..., 1, W, 1]``;
:meth:`ColumnMaskFunc.fastmri_call` and :func:`to_fastmri_layout` give that layout.

:class:`PoissonDiscMask` and :class:`GaussianMask` give ``[H, W]`` masks for 2-D phase encoding
(3-D acquisitions), with a fully sampled calibration square in the centre.

Seeding per volume follows fastMRI's transforms: :func:`seed_from_filename`.
"""

from __future__ import annotations

import abc
import math
import numbers
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kspace_ldm.errors import InputError

if TYPE_CHECKING:  # torch is imported lazily: numpy-only users should not pay for it
    import torch

__all__ = [
    "COLUMN_MASK_TYPES",
    "MASK_TYPES",
    "ColumnMaskFunc",
    "EquispacedFractionMask",
    "EquispacedMask",
    "GaussianMask",
    "MagicFractionMask",
    "MagicMask",
    "MaskFunc",
    "MaskResult",
    "PoissonDiscMask",
    "RandomMask",
    "apply_mask",
    "create_mask",
    "effective_acceleration",
    "seed_from_filename",
    "to_fastmri_layout",
]

Seed = int | tuple[int, ...]

# RandomState.seed accepts integers (or sequences of them) in [0, 2**32).
_SEED_LIMIT = 2**32


@dataclass(frozen=True)
class MaskResult:
    """One sampled mask and what it stands for.

    Attributes:
        mask: bool array, shape ``[W]`` for column masks (True = column acquired) or ``[H, W]``
            for 2-D masks (True = phase-encode point acquired).
        num_low_frequencies: column masks: number of fully sampled centre columns (fastMRI's
            value); 2-D masks: side length of the fully sampled calibration square.
        acceleration: the nominal acceleration chosen for this call.
        center_fraction: the centre fraction chosen for this call.
        effective_acceleration: ``mask.size / mask.sum()``, the acceleration actually achieved.
    """

    mask: np.ndarray
    num_low_frequencies: int
    acceleration: float
    center_fraction: float
    effective_acceleration: float


# --------------------------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------------------------


def seed_from_filename(name: str | os.PathLike[str]) -> tuple[int, ...]:
    """Seed of a volume as fastMRI's transforms compute it: ``tuple(map(ord, basename))``.

    fastMRI only ever sees the file's basename (e.g. ``"file1000001.h5"``), so any directory
    part of ``name`` is dropped; ``"data/val/file1000001.h5"`` gives the same seed.

    Returns:
        Tuple of code points, one int per character of the basename.
    """
    base = Path(os.fspath(name)).name
    if not base:
        raise InputError(None, f"cannot derive a mask seed from file name {os.fspath(name)!r}")
    return tuple(map(ord, base))


def _check_seed(seed: object) -> None:
    """Reject seeds RandomState would refuse, with an InputError instead of a ValueError."""
    if seed is None:
        return
    values = seed if isinstance(seed, tuple | list) else (seed,)
    ok = len(values) > 0 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v < _SEED_LIMIT
        for v in values
    )
    if not ok:
        raise InputError(
            None,
            f"invalid mask seed {seed!r}: need an int or a non-empty tuple of ints in [0, 2**32)",
        )


@contextmanager
def _seeded(rng: np.random.RandomState, seed: Seed | None) -> Iterator[None]:
    """Reseed ``rng`` for the duration of the block and restore its state afterwards.

    Without a seed the generator's own stream continues, so a MaskFunc built with a seed and
    called without one yields a reproducible sequence of masks (fastMRI behaves the same).
    """
    if seed is None:
        yield
        return
    saved = rng.get_state()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.set_state(saved)


# --------------------------------------------------------------------------------------------
# parameter validation
# --------------------------------------------------------------------------------------------


def _as_number_list(values: object, what: str) -> list[float | int]:
    """A scalar or sequence of real numbers -> list, keeping ints as ints (fastMRI slices)."""
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise InputError(None, f"{what} must be a number or a sequence of numbers, got {values!r}")
    out: list[float | int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise InputError(None, f"{what} must be finite numbers, got {v!r}")
        # numpy scalars -> Python scalars, so results and messages do not carry numpy types
        out.append(int(v) if isinstance(v, numbers.Integral) else float(v))
    if not out:
        raise InputError(None, f"{what} must not be empty")
    return out


def _check_shape(shape: object, min_ndim: int) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise InputError(None, f"k-space shape must be a sequence of ints, got {shape!r}")
    dims = tuple(shape)
    if len(dims) < min_ndim or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims
    ):
        raise InputError(
            None,
            f"k-space shape must have at least {min_ndim} positive dimension(s) "
            f"(..., H, W), got {dims!r}",
        )
    return tuple(int(d) for d in dims)


# --------------------------------------------------------------------------------------------
# mask functions
# --------------------------------------------------------------------------------------------


class MaskFunc(abc.ABC):
    """Base of all mask functions: holds the parameter lists and the random generator.

    Args:
        center_fractions: fraction(s) of the k-space centre that is always acquired, each in
            (0, 1). A scalar counts as a one-element list.
        accelerations: nominal acceleration(s), each > 1. With several values one pair
            (center_fractions[i], accelerations[i]) is chosen uniformly per call.
        allow_any_combination: choose the centre fraction and the acceleration independently
            (the lists may then differ in length), as fastMRI's flag of the same name does.
        seed: seed of the generator used by calls that pass no seed of their own.
    """

    mask_type: ClassVar[str] = ""
    # Equispaced and magic masks use the acceleration as a slice step, so it must be an integer.
    _integer_accelerations: ClassVar[bool] = False

    def __init__(
        self,
        center_fractions: float | Sequence[float],
        accelerations: float | Sequence[float],
        allow_any_combination: bool = False,
        seed: Seed | None = None,
    ):
        cfs = _as_number_list(center_fractions, "center fractions")
        accs = _as_number_list(accelerations, "accelerations")
        for cf in cfs:
            if not 0.0 < cf < 1.0:
                raise InputError(None, f"center fraction {cf} is outside (0, 1)")
        for acc in accs:
            if not acc > 1:
                raise InputError(None, f"acceleration {acc} must be greater than 1")
            if self._integer_accelerations and acc != int(acc):
                raise InputError(
                    None,
                    f"{self.mask_type} masks need integer accelerations "
                    f"(the acceleration is the line spacing), got {acc}",
                )
        if self._integer_accelerations:
            accs = [int(a) for a in accs]
        if len(cfs) != len(accs) and not allow_any_combination:
            raise InputError(
                None,
                f"{len(cfs)} center fraction(s) but {len(accs)} acceleration(s): they are used "
                "in pairs, so give one center fraction per acceleration (e.g. accelerations "
                "4,8 with center fractions 0.08,0.04)",
            )
        _check_seed(seed)
        self.center_fractions: tuple[float | int, ...] = tuple(cfs)
        self.accelerations: tuple[float | int, ...] = tuple(accs)
        self.allow_any_combination = bool(allow_any_combination)
        self.rng = np.random.RandomState(seed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(center_fractions={list(self.center_fractions)}, "
            f"accelerations={list(self.accelerations)}, "
            f"allow_any_combination={self.allow_any_combination})"
        )

    def _choose(self) -> tuple[float | int, float | int]:
        """Pick (centre fraction, acceleration); the draws are fastMRI's, in fastMRI's order."""
        if self.allow_any_combination:
            # rng.choice(n) consumes the same draw as rng.choice(list of length n) and keeps
            # the caller's original Python values (no float64 conversion of mixed lists).
            cf = self.center_fractions[int(self.rng.choice(len(self.center_fractions)))]
            acc = self.accelerations[int(self.rng.choice(len(self.accelerations)))]
            return cf, acc
        i = int(self.rng.randint(len(self.center_fractions)))
        return self.center_fractions[i], self.accelerations[i]

    @abc.abstractmethod
    def __call__(
        self, shape: int | Sequence[int], seed: Seed | None = None, *, offset: int | None = None
    ) -> MaskResult:
        """Sample a mask for complex k-space of shape ``(..., H, W)``."""


class ColumnMaskFunc(MaskFunc):
    """fastMRI-style mask that acquires whole columns (the W axis of complex ``[..., H, W]``).

    The mask is the union of ``num_low_frequencies`` contiguous centre columns and the columns
    chosen by :meth:`_outer_columns`. The centre block starts at ``(W - n_low + 1) // 2``, so it
    contains the DC column ``W // 2`` of centred k-space.
    """

    def __call__(
        self, shape: int | Sequence[int], seed: Seed | None = None, *, offset: int | None = None
    ) -> MaskResult:
        """Sample a column mask.

        Args:
            shape: complex k-space shape ``(..., H, W)`` (or just ``W``); only W is used.
            seed: per-call seed (int or tuple, e.g. :func:`seed_from_filename`); None continues
                the generator's own stream.
            offset: first column of the equispaced pattern (equispaced / magic types); None
                draws it at random as fastMRI does. Ignored by ``random`` masks, like fastMRI.
                Keyword-only because fastMRI's positional order is (shape, offset, seed).

        Returns:
            MaskResult with ``mask`` bool ``[W]``.
        """
        dims = _check_shape(shape, 1)
        if len(dims) >= 3 and dims[-1] == 2:
            # A width of 2 is never real k-space: this is fastMRI's real view (..., H, W, 2).
            raise InputError(
                None,
                f"k-space shape {dims} looks like a real view (..., H, W, 2); pass the complex "
                "shape (..., H, W), or use fastmri_call() for fastMRI's layout",
            )
        if offset is not None and (
            not isinstance(offset, numbers.Integral) or isinstance(offset, bool) or offset < 0
        ):
            raise InputError(None, f"offset must be a non-negative int, got {offset!r}")
        _check_seed(seed)
        num_cols = dims[-1]
        with _seeded(self.rng, seed):
            cf, acc = self._choose()
            num_low = self._num_low_frequencies(num_cols, cf, acc)
            outer = self._outer_columns(num_cols, cf, acc, num_low, offset)
        mask = outer.astype(bool, copy=True)
        start = (num_cols - num_low + 1) // 2
        mask[start : start + num_low] = True
        if not mask.any():
            raise InputError(
                None,
                f"k-space width {num_cols} is too narrow for center fraction {cf} and "
                f"acceleration {acc}: the mask acquires no column",
            )
        return MaskResult(
            mask=mask,
            num_low_frequencies=num_low,
            acceleration=float(acc),
            center_fraction=float(cf),
            effective_acceleration=num_cols / int(mask.sum()),
        )

    def fastmri_call(
        self,
        shape: Sequence[int],
        offset: int | None = None,
        seed: Seed | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Drop-in for fastMRI's ``MaskFunc.__call__(shape, offset, seed)``.

        Args:
            shape: fastMRI's real-view k-space shape ``(..., H, W, 2)`` (at least 3 dims);
                the columns are ``shape[-2]``.

        Returns:
            (mask, num_low_frequencies): mask is float32 torch of shape ``[1, ..., 1, W, 1]``
            (ones except at ``-2``), exactly what fastMRI returns.
        """
        dims = _check_shape(shape, 3)
        res = self(dims[:-1], seed, offset=offset)
        return to_fastmri_layout(res.mask, dims), res.num_low_frequencies

    def _num_low_frequencies(self, num_cols: int, cf: float, acc: float) -> int:
        # Python's round (half to even), as fastMRI uses; the product is the same float there.
        num_low = round(num_cols * cf)
        if num_low == 0:
            # fastMRI would acquire no centre column at all (not even DC); on narrow k-space
            # (width 1..6 at fraction 0.08) that used to end in a ZeroDivisionError.
            raise InputError(
                None,
                f"k-space width {num_cols} is too narrow: center fraction {cf} keeps no centre "
                f"column (round({num_cols} x {cf}) = 0)",
            )
        if num_low >= num_cols:
            raise InputError(
                None,
                f"center fraction {cf} keeps all {num_cols} columns; nothing left to undersample",
            )
        return num_low

    @abc.abstractmethod
    def _outer_columns(
        self, num_cols: int, cf: float, acc: float, num_low: int, offset: int | None
    ) -> np.ndarray:
        """Columns acquired besides the centre block: array of length ``num_cols`` (0/1)."""


class RandomMask(ColumnMaskFunc):
    """fastMRI ``random``: centre block plus i.i.d. columns, expected total W / acceleration.

    Each column is kept with ``p = (W/R - n_low) / (W - n_low)`` (one uniform draw per column,
    centre columns included, to keep fastMRI's draw sequence). If the centre alone exceeds
    W/R, ``p <= 0`` and only the centre is acquired, as in fastMRI.
    """

    mask_type = "random"

    def _outer_columns(self, num_cols, cf, acc, num_low, offset):
        keep_prob = (num_cols / acc - num_low) / (num_cols - num_low)
        return self.rng.uniform(size=num_cols) < keep_prob


def _spaced_columns(num_cols: int, start: int, step: int) -> np.ndarray:
    """0/1 mask over ``num_cols`` with ones at ``start, start + step, ...``."""
    cols = np.arange(num_cols)
    return (cols >= start) & ((cols - start) % step == 0)


class EquispacedMask(ColumnMaskFunc):
    """fastMRI ``equispaced``: centre block plus every R-th column from a random offset.

    The spaced lines come on top of the centre, so the effective acceleration is below R
    (368 columns, R=4, cf=0.08: about 3.24). The offset is drawn from ``[0, R)``.
    """

    mask_type = "equispaced"
    _integer_accelerations = True

    def _outer_columns(self, num_cols, cf, acc, num_low, offset):
        if offset is None:
            offset = int(self.rng.randint(0, high=round(acc)))
        return _spaced_columns(num_cols, offset, int(acc))


class EquispacedFractionMask(ColumnMaskFunc):
    """fastMRI ``equispaced_fraction``: spacing shrunk so the total is about W / R.

    The spacing is ``a = R (W - n_low) / (W - n_low R)`` (fractional); columns
    ``rint(offset + k a)`` for ``offset + k a < W - 1`` are acquired (NumPy's half-to-even
    rounding, so lines are only approximately equispaced: issue 54 of
    github.com/facebookresearch/fastMRI). The offset is drawn from ``[0, round(a))``. Needs
    ``n_low * R < W``.
    """

    mask_type = "equispaced_fraction"

    def _outer_columns(self, num_cols, cf, acc, num_low, offset):
        if num_low * acc >= num_cols:
            raise InputError(
                None,
                f"equispaced_fraction: the {num_low} centre columns (fraction {cf}) already "
                f"reach acceleration {acc} on {num_cols} columns; use a smaller center fraction",
            )
        spacing = (acc * (num_low - num_cols)) / (num_low * acc - num_cols)
        if offset is None:
            offset = int(self.rng.randint(0, high=round(spacing)))
        # np.arange's float stepping decides which positions exist; it must be kept as is to
        # match fastMRI's columns exactly (start + k*step accumulates differently otherwise).
        positions = np.rint(np.arange(offset, num_cols - 1, spacing)).astype(np.intp)
        out = np.zeros(num_cols, dtype=bool)
        out[positions] = True
        return out


def _magic_columns(num_cols: int, offset: int, step: int) -> np.ndarray:
    """Offset sampling of Defazio (2019): different phases for +k and -k frequencies.

    With centred k-space, column ``c`` holds frequency ``k = c - W // 2``. Positive-side
    frequencies ``k = 0 .. ceil(W/2) - 1`` are acquired from ``k = p`` in steps of ``step``;
    negative ones ``k = -f, f = 1 .. W // 2`` from ``f - 1 = q`` in steps of ``step``, where
    (p, q) = (offset + 1, offset + 2) for even offsets and (offset + 2, offset - 1) for odd
    ones. The two sides thus interleave, so conjugate symmetry fills the gaps.
    """
    pos_start, neg_start = (offset + 1, offset + 2) if offset % 2 == 0 else (offset + 2, offset - 1)
    k = np.arange(num_cols) - num_cols // 2
    f_minus_1 = -k - 1  # for k < 0: f - 1 with k = -f
    pos = (k >= pos_start) & ((k - pos_start) % step == 0)
    neg = (k < 0) & (f_minus_1 >= neg_start) & ((f_minus_1 - neg_start) % step == 0)
    return pos | neg


class MagicMask(ColumnMaskFunc):
    """fastMRI ``magic``: equispaced offset sampling exploiting conjugate symmetry.

    Spacing R on each half of k-space with interleaved phases (see :func:`_magic_columns`);
    offset drawn from ``[0, R)``. Like ``equispaced``, it undershoots the nominal acceleration.
    """

    mask_type = "magic"
    _integer_accelerations = True

    def _outer_columns(self, num_cols, cf, acc, num_low, offset):
        if offset is None:
            offset = int(self.rng.randint(0, high=acc))
        return _magic_columns(num_cols, offset, int(acc))


class MagicFractionMask(ColumnMaskFunc):
    """fastMRI ``magic_fraction``: magic sampling with the spacing set to hit W / R columns.

    ``n_low = round(W cf)`` is clamped to ``[1, round(W / R)]``; the outer spacing is
    ``round(W / (round(W / R) - n_low))`` and the offset is drawn from ``[0, spacing)``. Needs
    ``round(W cf) < round(W / R)`` (fastMRI fails otherwise). Accelerations may be fractional.
    """

    mask_type = "magic_fraction"

    def _num_low_frequencies(self, num_cols, cf, acc):
        target = round(num_cols / acc)
        num_low = max(min(round(num_cols * cf), target), 1)
        if target - num_low <= 0:
            raise InputError(
                None,
                f"magic_fraction: the {num_low} centre columns (fraction {cf}) leave no columns "
                f"for acceleration {acc} on {num_cols} columns (target {target} columns)",
            )
        return num_low

    def _outer_columns(self, num_cols, cf, acc, num_low, offset):
        spacing = round(num_cols / (round(num_cols / acc) - num_low))
        if offset is None:
            offset = int(self.rng.randint(0, high=spacing))
        return _magic_columns(num_cols, offset, spacing)


# --------------------------------------------------------------------------------------------
# 2-D variable-density masks
# --------------------------------------------------------------------------------------------


class _PlaneMaskFunc(MaskFunc):
    """2-D mask over the last two axes ``[H, W]``, with a fully sampled calibration square.

    The calibration square has side ``round(cf * min(H, W))`` and starts at
    ``((H - c + 1) // 2, (W - c + 1) // 2)``, so it holds the DC point ``(H // 2, W // 2)``.
    The number of acquired points aims at ``round(H W / R)`` (calibration included).
    """

    def __call__(
        self, shape: int | Sequence[int], seed: Seed | None = None, *, offset: int | None = None
    ) -> MaskResult:
        """Sample a 2-D mask.

        Args:
            shape: complex k-space shape ``(..., H, W)``; H and W are the phase-encode axes.
            seed: per-call seed; None continues the generator's own stream.
            offset: accepted for a uniform call signature and ignored (no equispaced pattern).

        Returns:
            MaskResult with ``mask`` bool ``[H, W]``; ``num_low_frequencies`` is the side of the
            calibration square.
        """
        dims = _check_shape(shape, 2)
        _check_seed(seed)
        h, w = dims[-2:]
        with _seeded(self.rng, seed):
            cf, acc = self._choose()
            calib = round(cf * min(h, w))
            target = round(h * w / acc)
            if calib * calib > target:
                raise InputError(
                    None,
                    f"{self.mask_type}: the {calib}x{calib} calibration square has more points "
                    f"than the {target} allowed by acceleration {acc} on a {h}x{w} grid",
                )
            if target < 1:
                raise InputError(None, f"acceleration {acc} leaves no samples on a {h}x{w} grid")
            calib_mask = np.zeros((h, w), dtype=bool)
            y0, x0 = (h - calib + 1) // 2, (w - calib + 1) // 2
            calib_mask[y0 : y0 + calib, x0 : x0 + calib] = True
            mask = self._sample_plane(h, w, calib_mask, target)
        mask |= calib_mask
        return MaskResult(
            mask=mask,
            num_low_frequencies=calib,
            acceleration=float(acc),
            center_fraction=float(cf),
            effective_acceleration=h * w / int(mask.sum()),
        )

    @staticmethod
    def _normalised_radius(h: int, w: int) -> np.ndarray:
        """float64 ``[H, W]``: elliptical distance from the DC point, 1 at the edge midpoints."""
        ky = (np.arange(h) - h // 2) / (h / 2)
        kx = (np.arange(w) - w // 2) / (w / 2)
        return np.hypot(ky[:, None], kx[None, :])

    @abc.abstractmethod
    def _sample_plane(self, h: int, w: int, calib: np.ndarray, target: int) -> np.ndarray:
        """bool ``[H, W]`` mask with about ``target`` points including ``calib``."""


class GaussianMask(_PlaneMaskFunc):
    """2-D variable-density Gaussian random sampling with a calibration square.

    Outside the calibration square exactly ``round(H W / R) - c^2`` distinct points are drawn
    without replacement with weights ``exp(-rho^2 / (2 sigma^2))``, rho being the normalised
    elliptical radius (1 at the edge midpoints). The effective acceleration therefore equals
    ``H W / round(H W / R)``.

    Args:
        sigma: width of the density in units of the half-extent (default 0.35; larger is
            closer to uniform).
    """

    mask_type = "gaussian"

    def __init__(
        self,
        center_fractions: float | Sequence[float],
        accelerations: float | Sequence[float],
        allow_any_combination: bool = False,
        seed: Seed | None = None,
        *,
        sigma: float = 0.35,
    ):
        super().__init__(center_fractions, accelerations, allow_any_combination, seed)
        if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
            raise InputError(None, f"gaussian mask sigma must be a positive number, got {sigma!r}")
        self.sigma = float(sigma)

    def _sample_plane(self, h, w, calib, target):
        log_weight = -(self._normalised_radius(h, w) ** 2) / (2.0 * self.sigma**2)
        uniform = self.rng.uniform(size=h * w)
        # Gumbel top-k: the k largest log(w_i) + Gumbel_i are a weighted sample without
        # replacement (Efraimidis-Spirakis); log space avoids underflow of tiny weights.
        with np.errstate(divide="ignore"):
            keys = log_weight.ravel() - np.log(-np.log(uniform))
        keys[calib.ravel()] = -np.inf  # calibration points are added separately
        n_draw = target - int(calib.sum())
        chosen = np.argsort(-keys, kind="stable")[:n_draw]
        out = np.zeros(h * w, dtype=bool)
        out[chosen] = True
        return out.reshape(h, w)


class PoissonDiscMask(_PlaneMaskFunc):
    """2-D variable-density Poisson-disc sampling with a calibration square.

    Points are visited in a random order and kept unless a kept point closer than its own
    exclusion radius already exists (random sequential adsorption on the grid, which ends
    in a maximal Poisson-disc set). The radius grows with the normalised elliptical radius
    rho: ``r = s (1 + variable_density * rho)``. Because grid discs come in discrete sizes,
    each point's disc is dithered between the two lattice distances around its ``r`` (see
    :func:`_disc_thresholds`), so any density can be reached. The scale ``s`` is adjusted
    (same visiting order and dither, so deterministic for a seed) until the point count is
    within ``tolerance`` of ``round(H W / R)`` or ``max_iterations`` is spent, keeping the
    closest. Calibration points are placed first and exclude their neighbourhoods too.

    Args:
        variable_density: radius growth from the centre to the edge midpoints (0 = uniform).
        tolerance: relative tolerance on the number of samples (default 1%).
        max_iterations: maximum number of radius adjustments (default 20).
    """

    mask_type = "poisson_disc"

    # Random sequential adsorption of discs of diameter r jams at area coverage ~0.547, i.e.
    # ~0.697 / r^2 points per unit area: the initial guess of the radius scale.
    _RSA_DENSITY = 0.547 * 4.0 / math.pi

    def __init__(
        self,
        center_fractions: float | Sequence[float],
        accelerations: float | Sequence[float],
        allow_any_combination: bool = False,
        seed: Seed | None = None,
        *,
        variable_density: float = 2.0,
        tolerance: float = 0.01,
        max_iterations: int = 20,
    ):
        super().__init__(center_fractions, accelerations, allow_any_combination, seed)
        if not (
            isinstance(variable_density, numbers.Real)
            and math.isfinite(variable_density)
            and variable_density >= 0
        ):
            raise InputError(
                None, f"variable_density must be a number >= 0, got {variable_density!r}"
            )
        if not (isinstance(tolerance, numbers.Real) and 0 < tolerance < 1):
            raise InputError(None, f"tolerance must be in (0, 1), got {tolerance!r}")
        if not (isinstance(max_iterations, numbers.Integral) and max_iterations >= 1):
            raise InputError(None, f"max_iterations must be an int >= 1, got {max_iterations!r}")
        self.variable_density = float(variable_density)
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)

    def _sample_plane(self, h, w, calib, target):
        growth = 1.0 + self.variable_density * self._normalised_radius(h, w)
        order = self.rng.permutation(h * w)
        dither = self.rng.uniform(size=h * w)  # fixed per call: count is monotone-ish in s
        calib_flat = np.flatnonzero(calib)
        order = order[~calib.ravel()[order]]
        n_calib = calib_flat.size
        if target == n_calib:
            return np.zeros((h, w), dtype=bool)
        # points ~ sum_i density / (s g_i)^2  =>  s ~ sqrt(density * sum(1/g^2) / points)
        scale = math.sqrt(self._RSA_DENSITY * float(np.sum(growth**-2)) / (target - n_calib))
        best: tuple[int, np.ndarray] | None = None
        tried: dict[float, int] = {}
        for _ in range(self.max_iterations):
            threshold = _disc_thresholds((growth * scale).ravel(), dither)
            mask = _sequential_poisson(h, w, threshold, calib_flat, order)
            count = int(mask.sum())
            tried[scale] = count
            if best is None or abs(count - target) < abs(best[0] - target):
                best = (count, mask)
            if abs(count - target) <= self.tolerance * target:
                break
            # The count scales like 1/s^2; on a grid it is a step function of s, so the update
            # falls back to bisection between the closest scales bracketing the target.
            new_scale = scale * math.sqrt(count / target) if count > 0 else scale / 2
            above = [s for s, c in tried.items() if c > target]  # too many points: s too small
            below = [s for s, c in tried.items() if c < target]
            lo = max(above) if above else 0.0
            hi = min(below) if below else math.inf
            if not lo < new_scale < hi:
                new_scale = 0.5 * (lo + hi) if math.isfinite(hi) else 2 * scale
            if new_scale in tried:
                break
            scale = new_scale
        assert best is not None
        return best[1]


def _disc_thresholds(radius: np.ndarray, dither: np.ndarray) -> np.ndarray:
    """Per-point squared exclusion distance, dithered between adjacent lattice distances.

    On the integer grid a disc ``{(dy, dx): dy^2 + dx^2 <= v}`` only changes when ``v`` crosses
    a sum of two squares (0, 1, 2, 4, 5, 8, ...), so a single radius can only reach a few
    densities (a uniform disc jumps from 2.7x to 5.2x). Each point instead takes the largest
    such value ``v_a < r^2`` or the next one ``v_b`` with probability
    ``(r^2 - v_a) / (v_b - v_a)``, using its own fixed uniform ``dither``: the sample count
    then varies smoothly with the radius scale and the mean disc follows ``r^2``.

    Args:
        radius: float64 ``[N]`` exclusion radii (pixels), > 0.
        dither: float64 ``[N]`` uniforms in [0, 1).

    Returns:
        int64 ``[N]``: threshold ``v`` per point; the point excludes offsets with d <= v.
    """
    r2 = radius**2
    reach = math.ceil(float(radius.max())) + 1
    sq = np.arange(reach + 1) ** 2
    lattice = np.unique(sq[:, None] + sq[None, :])  # sums of two squares, sorted, from 0
    below = np.searchsorted(lattice, r2, side="left") - 1  # lattice[below] < r2 (r2 > 0)
    v_a, v_b = lattice[below], lattice[below + 1]
    take_b = dither < (r2 - v_a) / (v_b - v_a)
    return np.where(take_b, v_b, v_a).astype(np.int64)


def _sequential_poisson(
    h: int, w: int, threshold: np.ndarray, seeds_flat: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """Random sequential adsorption on an ``h x w`` grid with per-point exclusion discs.

    Args:
        threshold: int64 ``[H W]`` (flat): point i, once kept, excludes every grid point at
            squared distance ``<= threshold[i]`` (see :func:`_disc_thresholds`).
        seeds_flat: flat indices placed first, unconditionally (calibration points).
        order: flat indices visited afterwards, in this order.

    Returns:
        bool ``[H, W]``: the kept points (``seeds_flat`` included).
    """
    # Work on a grid padded by the largest disc so that a disc stamped around any point stays
    # inside the array: no bounds checks in the hot loop.
    pad = math.isqrt(int(threshold.max())) + 1
    wp = w + 2 * pad
    ys, xs = np.divmod(np.arange(h * w), w)
    padded_index = (ys + pad) * wp + (xs + pad)
    discs: dict[int, np.ndarray] = {}
    for v in np.unique(threshold).tolist():
        reach = math.isqrt(v)
        dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        inside = dy**2 + dx**2 <= v
        discs[v] = (dy[inside] * wp + dx[inside]).astype(np.intp)

    excluded = bytearray((h + 2 * pad) * wp)  # bytearray indexing is the fast scalar test
    excluded_np = np.frombuffer(excluded, dtype=np.uint8)  # shared memory: numpy stamping
    keys = threshold.tolist()
    pidx = padded_index.tolist()
    kept: list[int] = []
    for i in seeds_flat.tolist():
        kept.append(i)
        excluded_np[pidx[i] + discs[keys[i]]] = 1
    for i in order.tolist():
        p = pidx[i]
        if excluded[p]:
            continue
        kept.append(i)
        excluded_np[p + discs[keys[i]]] = 1
    out = np.zeros(h * w, dtype=bool)
    out[np.asarray(kept, dtype=np.intp)] = True
    return out.reshape(h, w)


# --------------------------------------------------------------------------------------------
# factory, application, statistics
# --------------------------------------------------------------------------------------------

_MASK_CLASSES: dict[str, type[MaskFunc]] = {
    cls.mask_type: cls
    for cls in (
        RandomMask,
        EquispacedMask,
        EquispacedFractionMask,
        MagicMask,
        MagicFractionMask,
        PoissonDiscMask,
        GaussianMask,
    )
}
MASK_TYPES: tuple[str, ...] = tuple(_MASK_CLASSES)
#: The column masks (fastMRI's 1-D Cartesian masks) of :data:`MASK_TYPES`.
COLUMN_MASK_TYPES: tuple[str, ...] = tuple(
    t for t, cls in _MASK_CLASSES.items() if issubclass(cls, ColumnMaskFunc)
)


def create_mask(
    mask_type: str,
    center_fractions: float | Sequence[float],
    accelerations: float | Sequence[float],
    **kwargs: Any,
) -> MaskFunc:
    """Mask function by name; the first five names are fastMRI's ``create_mask_for_mask_type``.

    Args:
        mask_type: one of :data:`MASK_TYPES` (``random``, ``equispaced``,
            ``equispaced_fraction``, ``magic``, ``magic_fraction``, ``poisson_disc``,
            ``gaussian``).
        kwargs: passed to the class (``allow_any_combination``, ``seed``, and the 2-D options).
    """
    cls = _MASK_CLASSES.get(mask_type) if isinstance(mask_type, str) else None
    if cls is None:
        raise InputError(
            None, f"unknown mask type {mask_type!r} (choose from: {', '.join(MASK_TYPES)})"
        )
    return cls(center_fractions, accelerations, **kwargs)


def to_fastmri_layout(mask: np.ndarray | MaskResult, shape: Sequence[int]) -> torch.Tensor:
    """A column mask in fastMRI's layout for a real-view k-space shape ``(..., H, W, 2)``.

    Args:
        mask: bool/0-1 array ``[W]`` or a MaskResult of a column mask.
        shape: fastMRI's k-space shape, at least 3 dims, columns at ``shape[-2]``.

    Returns:
        float32 torch tensor of shape ``[1, ..., 1, W, 1]`` (``len(shape)`` dims).
    """
    import torch

    dims = _check_shape(shape, 3)
    m = _as_binary_mask(mask, None)
    if m.ndim != 1 or m.shape[0] != dims[-2]:
        raise InputError(
            None, f"column mask of shape {m.shape} does not fit fastMRI k-space shape {dims}"
        )
    layout = [1] * len(dims)
    layout[-2] = dims[-2]
    return torch.from_numpy(m.astype(np.float32).reshape(layout))


def _as_binary_mask(mask: object, source: str | os.PathLike[str] | None) -> np.ndarray:
    """Any array-like of 0/1 (or bool) values -> numpy bool array of the same shape."""
    m = mask.mask if isinstance(mask, MaskResult) else mask
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(m, torch.Tensor):
        m = m.detach().cpu().numpy()
    arr = np.asarray(m)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(source, f"mask must be bool or real 0/1 values, got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        raise InputError(source, "mask values must be 0 or 1")
    return arr != 0


def apply_mask(
    kspace: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | MaskResult,
    padding: Sequence[int] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Zero the k-space samples a mask does not acquire (fastMRI's ``apply_mask`` semantics).

    Args:
        kspace: complex ``[..., H, W]``, numpy array or torch tensor (any device).
        mask: bool or 0/1 ``[W]`` column mask (broadcast over H and leading axes) or ``[H, W]``
            2-D mask, or a MaskResult.
        padding: ``(padding_left, padding_right)`` of the acquired window from the ISMRMRD
            header: columns ``< padding_left`` and ``>= padding_right`` are removed from the
            mask (as fastMRI's ``mask[..., :left, :] = 0; mask[..., right:, :] = 0``).
        source: file name used in error messages.

    Returns:
        (masked_kspace, mask_used): masked k-space with the input's type, dtype, shape and
        device, unacquired entries exactly +0 (fastMRI's ``+ 0.0`` also clears -0 signs);
        mask_used is the bool mask after padding, ``[W]`` or ``[H, W]``, numpy for numpy
        input and a torch tensor on the k-space's device for torch input.
    """
    torch_mod = sys.modules.get("torch")
    is_torch = torch_mod is not None and isinstance(kspace, torch_mod.Tensor)
    if is_torch:
        dtype_ok, shape, dtype = kspace.is_complex(), tuple(kspace.shape), kspace.dtype
    else:
        if not isinstance(kspace, np.ndarray):
            raise InputError(
                source, f"k-space must be a numpy array or torch tensor, got {type(kspace)}"
            )
        dtype_ok, shape, dtype = np.iscomplexobj(kspace), kspace.shape, kspace.dtype
    if not dtype_ok or len(shape) < 2:
        raise InputError(
            source, f"k-space must be complex [..., H, W], got dtype {dtype} with shape {shape}"
        )
    m = _as_binary_mask(mask, source).copy()
    h, w = shape[-2:]
    if m.ndim == 1:
        if m.shape[0] != w:
            raise InputError(source, f"mask of length {m.shape[0]} does not fit k-space width {w}")
    elif m.ndim == 2:
        if m.shape != (h, w):
            raise InputError(
                source, f"mask of shape {m.shape} does not fit k-space shape {tuple(shape)}"
            )
    else:
        raise InputError(source, f"mask must be [W] or [H, W], got shape {m.shape}")

    if padding is not None:
        if (
            len(padding) != 2
            or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in padding)
            or min(padding) < 0
        ):
            raise InputError(source, f"padding must be two non-negative ints, got {padding!r}")
        left, right = int(padding[0]), int(padding[1])
        if left >= min(right, w):
            raise InputError(
                source, f"padding {(left, right)} leaves no acquired columns of width {w}"
            )
        m[..., :left] = False
        m[..., right:] = False  # slice semantics: right > W keeps everything up to W

    # where() instead of a product: identical for finite data, and the result dtype is always
    # the k-space's. "+ 0.0" turns -0 into +0 like fastMRI does.
    if is_torch:
        m_t = torch_mod.from_numpy(m).to(kspace.device)
        zero = torch_mod.zeros((), dtype=kspace.dtype, device=kspace.device)
        return torch_mod.where(m_t, kspace, zero) + 0.0, m_t
    return np.where(m, kspace, np.zeros((), dtype=kspace.dtype)) + 0.0, m


def effective_acceleration(mask: np.ndarray | torch.Tensor | MaskResult) -> float:
    """Entries per acquired entry: ``mask.size / mask.sum()`` of a bool or 0/1 mask.

    For a column mask ``[W]`` that is W / acquired columns; for ``[H, W]`` it is
    H W / acquired points. fastMRI's ``[1, ..., W, 1]`` layout gives the same value.
    """
    m = _as_binary_mask(mask, None)
    n = int(m.sum())
    if n == 0:
        raise InputError(None, "mask acquires nothing; effective acceleration is undefined")
    return m.size / n
