"""MRI physics in pure PyTorch: centred FFTs, the SENSE operator, coil sensitivities, and the
layout/crop/pad/image-formation helpers used by the data pipeline and the models.

Conventions: k-space and images are complex ``[..., H, W]`` (``W`` = phase encode, DC at
``(H // 2, W // 2)``); multi-coil data is ``[B, C, H, W]``. Everything is differentiable, batched
and device-agnostic.
"""

from .coils import coil_combine, estimate_sensitivities, rss, sense_adjoint, sense_forward
from .fft import fft2c, ifft2c
from .transforms import (
    InputTypeError,
    InputValueError,
    PadInfo,
    center_crop,
    center_crop_to_smallest,
    channels_to_complex,
    complex_to_channels,
    kspace_to_image,
    pad_to_multiple,
    pad_width,
    unpad,
    unpad_width,
    zero_filled,
)

__all__ = [
    "InputTypeError",
    "InputValueError",
    "PadInfo",
    "center_crop",
    "center_crop_to_smallest",
    "channels_to_complex",
    "coil_combine",
    "complex_to_channels",
    "estimate_sensitivities",
    "fft2c",
    "ifft2c",
    "kspace_to_image",
    "pad_to_multiple",
    "pad_width",
    "rss",
    "sense_adjoint",
    "sense_forward",
    "unpad",
    "unpad_width",
    "zero_filled",
]
