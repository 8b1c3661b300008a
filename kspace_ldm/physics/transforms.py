"""Layout, cropping, padding and image-formation helpers for k-space tensors.

Conventions (shared with :mod:`kspace_ldm.physics.coils`):

* k-space and images are complex tensors whose **last two dims are ``[H, W]``**: ``H`` is the
  readout (frequency-encode) direction, ``W`` the phase-encode direction that masks undersample
  (fastMRI knee: ``H = 640``, ``W = 368..372``). The DC sample sits at ``(H // 2, W // 2)``.
* Multi-coil data is ``[B, C, H, W]``; single-coil data is ``[B, H, W]`` (or ``[H, W]``).
* Everything is pure PyTorch: differentiable, batched and device-agnostic.

Padding is the reason this module exists: the reference kLD-MRI code zero-padded k-space from ``W``
to 384 columns and never removed the padding before the inverse FFT, which magnifies the image by
``384 / W`` and misaligns it with the target. :func:`pad_width` / :func:`pad_to_multiple` therefore
return a :class:`PadInfo` that :func:`unpad` uses to remove the padding *exactly*; always unpad
before :func:`kspace_to_image`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from .fft import ifft2c

__all__ = [
    "InputTypeError",
    "InputValueError",
    "PadInfo",
    "center_crop",
    "center_crop_to_smallest",
    "channels_to_complex",
    "complex_to_channels",
    "kspace_to_image",
    "pad_to_multiple",
    "pad_width",
    "unpad",
    "unpad_width",
    "zero_filled",
]


class InputTypeError(InputError, TypeError):
    """A tensor argument has the wrong type or dtype.

    It is an :class:`~kspace_ldm.errors.InputError` (so the CLI prints one line) *and* a
    :class:`TypeError` (so ordinary Python code can catch it idiomatically).
    """


class InputValueError(InputError, ValueError):
    """A tensor argument has the wrong shape or an argument has a bad value.

    Both an :class:`~kspace_ldm.errors.InputError` and a :class:`ValueError`.
    """


# ---------------------------------------------------------------------------------------------
# Validation helpers (also used by coils.py). ``where`` names the public function, ``name`` the
# argument, so messages read e.g. "sense_forward(maps): must be complex [B, C, H, W], got ...".
# ---------------------------------------------------------------------------------------------


def _src(where: str, name: str) -> str:
    return f"{where}({name})"


def _require_tensor(x: object, where: str, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(_src(where, name), f"must be a torch.Tensor, got {type(x).__name__}")
    return x


def _require_complex(x: object, where: str, name: str, layout: str) -> torch.Tensor:
    x = _require_tensor(x, where, name)
    if not x.is_complex():
        raise InputTypeError(
            _src(where, name), f"must be complex {layout} (complex64/complex128), got {x.dtype}"
        )
    return x


def _require_ndim(x: torch.Tensor, ndims: Sequence[int], where: str, name: str, layout: str):
    if x.dim() not in ndims:
        raise InputValueError(
            _src(where, name), f"must have shape {layout}, got shape {tuple(x.shape)}"
        )


def _require_min_ndim(x: torch.Tensor, ndim: int, where: str, name: str, layout: str):
    if x.dim() < ndim:
        raise InputValueError(
            _src(where, name), f"must have shape {layout}, got shape {tuple(x.shape)}"
        )


def _require_int(value: object, where: str, name: str, minimum: int) -> int:
    # operator.index accepts numpy/0-d tensor integers (e.g. sizes read from HDF5 attributes);
    # bool is an int subclass, but True as a size is almost certainly a bug.
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise InputTypeError(
            _src(where, name), f"must be an int, got {type(value).__name__}"
        ) from None
    if value < minimum:
        raise InputValueError(_src(where, name), f"must be >= {minimum}, got {value}")
    return value


def _require_hw(shape: object, where: str, name: str) -> tuple[int, int]:
    if not isinstance(shape, Sequence) or len(shape) != 2:
        raise InputValueError(_src(where, name), f"must be a pair (h, w), got {shape!r}")
    return (_require_int(shape[0], where, name, 1), _require_int(shape[1], where, name, 1))


# ---------------------------------------------------------------------------------------------
# Complex <-> real channels
# ---------------------------------------------------------------------------------------------


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Split complex coils into interleaved real channels for a real-valued network.

    Layout: coil ``c`` becomes channels ``2c`` (real part) and ``2c + 1`` (imaginary part), i.e.
    ``[re0, im0, re1, im1, ...]``. For single-coil input (``C = 1``) this is the reference's
    ``(B, 2, H, W)`` layout with channel 0 = real, channel 1 = imaginary.

    Args:
        x: ``[..., C, H, W]`` complex64/complex128 (at least 3 dims), typically ``[B, C, H, W]``.

    Returns:
        ``[..., 2C, H, W]`` real tensor (float32 for complex64, float64 for complex128),
        contiguous. Differentiable; :func:`channels_to_complex` is its exact inverse.
    """
    where = "complex_to_channels"
    x = _require_complex(x, where, "x", "[B, C, H, W]")
    _require_min_ndim(x, 3, where, "x", "[..., C, H, W]")
    # view_as_real: [..., C, H, W, 2]; moving the re/im axis next to C and merging gives the
    # interleaved order (C-major, re/im minor).
    parts = torch.view_as_real(x).movedim(-1, -3)  # [..., C, 2, H, W]
    return parts.flatten(-4, -3).contiguous()


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`: interleaved ``[re0, im0, re1, im1, ...]`` -> coils.

    Args:
        x: ``[..., 2C, H, W]`` real float32/float64 (at least 3 dims, even channel count).

    Returns:
        ``[..., C, H, W]`` complex64 (from float32) or complex128 (from float64).
    """
    where = "channels_to_complex"
    x = _require_tensor(x, where, "x")
    if x.is_complex() or x.dtype not in (torch.float32, torch.float64):
        raise InputTypeError(
            _src(where, "x"),
            f"must be real float32/float64 [B, 2C, H, W], got {x.dtype}"
            + (" (cast half precision to float32 first)" if x.is_floating_point() else ""),
        )
    _require_min_ndim(x, 3, where, "x", "[..., 2C, H, W]")
    if x.shape[-3] % 2:
        raise InputValueError(
            _src(where, "x"),
            f"channel dim must be even (interleaved re/im pairs), got {x.shape[-3]} channels",
        )
    pairs = x.unflatten(-3, (x.shape[-3] // 2, 2)).movedim(-3, -1)  # [..., C, H, W, 2]
    # view_as_complex needs the re/im pair to be adjacent in memory.
    return torch.view_as_complex(pairs.contiguous())


# ---------------------------------------------------------------------------------------------
# Cropping
# ---------------------------------------------------------------------------------------------


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Centre-crop the last two dims to ``shape = (h, w)`` (fastMRI semantics).

    The crop starts at ``((H - h) // 2, (W - w) // 2)``, so for odd leftovers the extra row/column
    is dropped at the end, exactly like ``fastmri.data.transforms.center_crop``.

    Args:
        x: ``[..., H, W]`` tensor of any dtype (real images or complex k-space/images).
        shape: ``(h, w)`` with ``1 <= h <= H`` and ``1 <= w <= W``.

    Returns:
        ``[..., h, w]`` view of ``x`` (no copy).
    """
    where = "center_crop"
    x = _require_tensor(x, where, "x")
    _require_min_ndim(x, 2, where, "x", "[..., H, W]")
    h, w = _require_hw(shape, where, "shape")
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise InputValueError(
            _src(where, "shape"), f"crop {(h, w)} is larger than the input's last dims {(H, W)}"
        )
    top = (H - h) // 2
    left = (W - w) // 2
    return x[..., top : top + h, left : left + w]


def center_crop_to_smallest(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop ``a`` and ``b`` to their common smallest ``(h, w)`` over the last two dims.

    Args:
        a: ``[..., Ha, Wa]`` tensor.
        b: ``[..., Hb, Wb]`` tensor.

    Returns:
        ``(a_cropped, b_cropped)``, both ``[..., min(Ha, Hb), min(Wa, Wb)]`` views.
    """
    where = "center_crop_to_smallest"
    for name, t in (("a", a), ("b", b)):
        _require_min_ndim(_require_tensor(t, where, name), 2, where, name, "[..., H, W]")
    shape = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return center_crop(a, shape), center_crop(b, shape)


# ---------------------------------------------------------------------------------------------
# Padding that can be undone exactly
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PadInfo:
    """Record of a zero-padding of the last two dims, so :func:`unpad` can undo it exactly.

    Attributes:
        original_size: ``(H, W)`` before padding.
        pad_h: ``(top, bottom)`` rows added.
        pad_w: ``(left, right)`` columns added.
    """

    original_size: tuple[int, int]
    pad_h: tuple[int, int] = (0, 0)
    pad_w: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        for field in ("original_size", "pad_h", "pad_w"):
            value = getattr(self, field)
            ok = (
                isinstance(value, tuple)
                and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            )
            minimum = 1 if field == "original_size" else 0
            if not ok or min(value) < minimum:
                raise InputValueError(
                    _src("PadInfo", field), f"must be a pair of ints >= {minimum}, got {value!r}"
                )

    @property
    def padded_size(self) -> tuple[int, int]:
        """``(H, W)`` after padding."""
        return (
            self.original_size[0] + self.pad_h[0] + self.pad_h[1],
            self.original_size[1] + self.pad_w[0] + self.pad_w[1],
        )


def _split(total: int, size: int) -> tuple[int, int]:
    # Keep the centre sample (the DC of centred k-space, at size // 2) at the centre of the padded
    # axis, (size + total) // 2. For even sizes and even totals this is the reference's symmetric
    # split; for odd sizes it puts the extra column where DC stays centred (no phase ramp).
    left = (size + total) // 2 - size // 2
    return left, total - left


def _zero_pad(x: torch.Tensor, info: PadInfo) -> torch.Tensor:
    # F.pad's constant mode supports complex tensors and is differentiable; the pad tuple runs
    # from the last dim backwards: (left, right, top, bottom).
    return F.pad(x, (*info.pad_w, *info.pad_h))


def pad_width(kspace: torch.Tensor, target_width: int) -> tuple[torch.Tensor, PadInfo]:
    """Zero-pad the last dim symmetrically to ``target_width``; undo with :func:`unpad_width`.

    ``left = target_width // 2 - W // 2`` columns go before and the rest after, so the DC column
    moves from ``W // 2`` to ``target_width // 2``: it stays centred for every parity (for even
    ``W`` and ``target_width``, all fastMRI knee widths, this is the reference's ``pad_center``).

    Unlike the reference, a ``target_width`` smaller than ``W`` is an error instead of a silent
    crop of the outer k-space columns.

    Note: do **not** form an image from the padded k-space; that reproduces the reference's
    zoom bug. Call :func:`unpad_width` first.

    Args:
        kspace: ``[..., H, W]`` tensor (complex k-space or any real tensor).
        target_width: width after padding, ``>= W``.

    Returns:
        ``(padded [..., H, target_width], info)``.
    """
    where = "pad_width"
    kspace = _require_tensor(kspace, where, "kspace")
    _require_min_ndim(kspace, 2, where, "kspace", "[..., H, W]")
    target_width = _require_int(target_width, where, "target_width", 1)
    H, W = kspace.shape[-2:]
    if target_width < W:
        raise InputValueError(
            _src(where, "target_width"),
            f"{target_width} is smaller than the k-space width {W}; refusing to crop k-space "
            "columns (that would discard acquired high frequencies)",
        )
    info = PadInfo(original_size=(H, W), pad_w=_split(target_width - W, W))
    return _zero_pad(kspace, info), info


def pad_to_multiple(
    x: torch.Tensor, multiple_h: int, multiple_w: int
) -> tuple[torch.Tensor, PadInfo]:
    """Zero-pad the last two dims up to the next multiples of ``multiple_h`` / ``multiple_w``.

    For networks whose down-sampling needs divisible sizes (e.g. a factor-16 encoder on a
    640x372 slice pads to 640x384). Padding is split like :func:`pad_width` (the centre
    sample stays centred). :func:`unpad` restores the input exactly.

    Args:
        x: ``[..., H, W]`` tensor (complex or real).
        multiple_h: positive int; ``1`` leaves ``H`` unchanged.
        multiple_w: positive int; ``1`` leaves ``W`` unchanged.

    Returns:
        ``(padded [..., ceil(H / mh) * mh, ceil(W / mw) * mw], info)``.
    """
    where = "pad_to_multiple"
    x = _require_tensor(x, where, "x")
    _require_min_ndim(x, 2, where, "x", "[..., H, W]")
    mh = _require_int(multiple_h, where, "multiple_h", 1)
    mw = _require_int(multiple_w, where, "multiple_w", 1)
    H, W = x.shape[-2:]
    info = PadInfo(original_size=(H, W), pad_h=_split(-H % mh, H), pad_w=_split(-W % mw, W))
    return _zero_pad(x, info), info


def unpad(x: torch.Tensor, info: PadInfo) -> torch.Tensor:
    """Remove the padding recorded in ``info`` from the last two dims (exact inverse of padding).

    Args:
        x: ``[..., *info.padded_size]`` tensor (the padded tensor, or a network output of the
            same size).
        info: the :class:`PadInfo` returned by :func:`pad_width` or :func:`pad_to_multiple`.

    Returns:
        ``[..., *info.original_size]`` view of ``x``.
    """
    where = "unpad"
    x = _require_tensor(x, where, "x")
    if not isinstance(info, PadInfo):
        raise InputTypeError(_src(where, "info"), f"must be a PadInfo, got {type(info).__name__}")
    _require_min_ndim(x, 2, where, "x", "[..., H, W]")
    if tuple(x.shape[-2:]) != info.padded_size:
        raise InputValueError(
            _src(where, "x"),
            f"last dims {tuple(x.shape[-2:])} do not match the padded size {info.padded_size} "
            "recorded in info",
        )
    (top, _), (left, _) = info.pad_h, info.pad_w
    h, w = info.original_size
    return x[..., top : top + h, left : left + w]


def unpad_width(padded: torch.Tensor, info: PadInfo) -> torch.Tensor:
    """Undo :func:`pad_width` exactly: ``[..., H, target_width]`` -> ``[..., H, W]`` (a view).

    Same operation as :func:`unpad`; named for symmetry with :func:`pad_width`.
    """
    return unpad(padded, info)


# ---------------------------------------------------------------------------------------------
# Image formation (fastMRI targets)
# ---------------------------------------------------------------------------------------------


def kspace_to_image(
    kspace: torch.Tensor,
    crop: tuple[int, int] | None = (320, 320),
    coil_dim: int | None = None,
) -> torch.Tensor:
    """fastMRI image formation: ``ifft2c`` -> magnitude (RSS over coils) -> centre crop.

    * Single-coil (``coil_dim=None``): ``|ifft2c(k)|`` cropped, which is how fastMRI's
      ``reconstruction_esc`` target is formed from the ESC k-space.
    * Multi-coil (``coil_dim`` given, e.g. ``1`` for ``[B, C, H, W]``): ``rss(ifft2c(k))`` over
      that dim, cropped; the ``reconstruction_rss`` target. The coil dim is removed.

    The crop is taken before the magnitude (both are per-pixel, so the result is identical and
    cheaper). k-space must be at its acquired width: unpad first if it was padded.

    Args:
        kspace: ``[..., H, W]`` complex64/complex128; ``[B, H, W]`` single-coil or
            ``[B, C, H, W]`` multi-coil.
        crop: ``(h, w)`` output size, or ``None`` for no crop.
        coil_dim: the coil dim for RSS, or ``None`` for single-coil magnitude. Must not be one
            of the last two dims.

    Returns:
        Real tensor (float32 for complex64 input), the input shape with the coil dim removed
        and the last two dims ``crop``: e.g. ``[B, 320, 320]``.
    """
    where = "kspace_to_image"
    kspace = _require_complex(kspace, where, "kspace", "[..., H, W]")
    _require_min_ndim(kspace, 2, where, "kspace", "[..., H, W]")
    if coil_dim is not None:
        if isinstance(coil_dim, bool) or not isinstance(coil_dim, int):
            raise InputTypeError(
                _src(where, "coil_dim"), f"must be an int or None, got {type(coil_dim).__name__}"
            )
        nd = kspace.dim()
        if not -nd <= coil_dim < nd or coil_dim % nd >= nd - 2:
            raise InputValueError(
                _src(where, "coil_dim"),
                f"{coil_dim} is not a coil dim of a tensor with shape {tuple(kspace.shape)} "
                "(it must be a dim before the last two [H, W])",
            )
    image = ifft2c(kspace)
    if crop is not None:
        image = center_crop(image, crop)
    if coil_dim is None:
        return image.abs()
    # Root-sum-of-squares over coils (same computation as coils.rss, which imports this module).
    return torch.linalg.vector_norm(image, dim=coil_dim)


def zero_filled(
    masked_kspace: torch.Tensor,
    crop: tuple[int, int] | None = (320, 320),
    coil_dim: int | None = None,
) -> torch.Tensor:
    """Zero-filled reconstruction of undersampled k-space (unsampled entries already zero).

    Identical to :func:`kspace_to_image` applied to the masked k-space; the separate name makes
    baselines read clearly.

    Args:
        masked_kspace: ``[B, H, W]`` single-coil or ``[B, C, H, W]`` multi-coil complex.
        crop: ``(h, w)`` or ``None``.
        coil_dim: coil dim for RSS (``1`` for ``[B, C, H, W]``) or ``None`` for single-coil.

    Returns:
        Real ``[B, h, w]`` magnitude image.
    """
    return kspace_to_image(masked_kspace, crop=crop, coil_dim=coil_dim)
