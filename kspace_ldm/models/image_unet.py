"""The supervised baseline: fastMRI's U-Net recipe on zero-filled magnitude images.

Input: the zero-filled magnitude (multi-coil: RSS) image of the undersampled k-space, centre-cropped
to the target size (320x320 for fastMRI), ``[B, 1, h, w]``. The image is standardised per slice
("instance normalisation" of the input, as fastMRI's ``normalize_instance``: ``(x - mean) / std``
over the slice, clamped to ``[-clamp, clamp]``); the network predicts the standardised target; the
output is de-standardised with the same ``mean`` / ``std``. The loss is L1 between the prediction
and the target standardised with the input's statistics (fastMRI's ``UnetModule``).

The network is the project's :class:`~kspace_ldm.models.autoencoders.UNet` block with
``latent_block=False``: ConvBlocks of ``chans, 2 chans, ...`` with 2x2 average pooling
(``num_pool_layers`` times), one bottleneck ConvBlock ``widest -> 2 widest``, transposed-conv
up-sampling with skip concatenation and a final 1x1 convolution, i.e. fastMRI's ``Unet`` layer for
layer (fastMRI reference size: ``chans=32``, ``num_pool_layers=4``, 7.76 M parameters). Sizes that
are not multiples of ``2 ** num_pool_layers`` are zero-padded (centred) before the network and the
padding is removed after it, where fastMRI reflect-pads inside the up path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig, load_config
from ..errors import InputError
from .autoencoders import UNet
from .loading import load_model_weights

__all__ = [
    "ImageUNet",
    "build_image_unet",
    "denormalize_instance",
    "load_unet",
    "normalize_instance",
]

# fastMRI's normalize_instance eps: keeps an all-zero slice finite.
_EPS = 1e-11


def normalize_instance(
    x: torch.Tensor, eps: float = _EPS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardise each image: ``(x - mean) / (std + eps)`` over its last two dims.

    Args:
        x: ``[B, C, h, w]`` real.

    Returns:
        ``(normalised [B, C, h, w], mean [B, C, 1, 1], std [B, C, 1, 1])``; ``std`` is the
        unbiased standard deviation (``torch.std``, as fastMRI).
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + eps), mean, std


def denormalize_instance(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = _EPS
) -> torch.Tensor:
    """Inverse of :func:`normalize_instance`: ``x * (std + eps) + mean``."""
    return x * (std + eps) + mean


class ImageUNet(nn.Module):
    """fastMRI's U-Net with its input standardisation (see the module docstring).

    Args:
        chans: channels of the first level (fastMRI 32).
        num_pool_layers: pooling levels (fastMRI 4).
        drop_prob: dropout probability (fastMRI 0).
        clamp: the standardised input (and training target) is clamped to ``[-clamp, clamp]``
            (fastMRI 6); 0 disables it.
    """

    def __init__(
        self,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        clamp: float = 6.0,
    ):
        super().__init__()
        self.clamp = float(clamp)
        self.net = UNet(
            in_channels=1,
            chans=chans,
            num_pool_layers=num_pool_layers,
            drop_prob=drop_prob,
            with_residuals=True,
            latent_block=False,
        )

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-self.clamp, self.clamp) if self.clamp > 0 else x

    def forward_normalized(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(prediction in standardised units [B, 1, h, w], mean, std)`` of zero-filled images.

        Args:
            image: ``[B, 1, h, w]`` real zero-filled magnitude images.
        """
        if image.dim() != 4 or image.shape[1] != 1 or image.is_complex():
            raise InputError(
                "ImageUNet", f"input must be real [B, 1, h, w] images, got {tuple(image.shape)}"
            )
        x, mean, std = normalize_instance(image)
        out, _ = self.net(self._clamp(x))
        return out, mean, std

    def normalize_target(
        self, target: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> torch.Tensor:
        """The training target in the input's standardised units (clamped like the input)."""
        return self._clamp((target - mean) / (std + _EPS))

    def forward(self, image: torch.Tensor, normalized: bool = False):
        """Reconstruct ``[B, 1, h, w]`` zero-filled images.

        Returns:
            ``[B, 1, h, w]`` images in the input's intensity scale, or with ``normalized`` the
            tuple of :meth:`forward_normalized` (what training needs; through ``forward`` so that
            a DDP wrapper sees the call).
        """
        out, mean, std = self.forward_normalized(image)
        if normalized:
            return out, mean, std
        return denormalize_instance(out, mean, std)


def build_image_unet(cfg: TrainConfig) -> ImageUNet:
    """The :class:`ImageUNet` described by ``cfg.unet``."""
    u = cfg.unet
    return ImageUNet(
        chans=u.chans, num_pool_layers=u.num_pool_layers, drop_prob=u.drop_prob, clamp=u.clamp
    )


def load_unet(path: str | Path, device: str = "cpu") -> ImageUNet:
    """A trained U-Net from a ``kldm train --stage unet`` run directory (its ``best``), a
    ``best`` or a checkpoint directory; one-line :class:`InputError` for any other folder."""
    path = Path(path)
    if (path / "best" / "config.yaml").is_file():
        path = path / "best"
    for cfg_path in (path / "config.yaml", path.parent.parent / "config.yaml"):
        if cfg_path.is_file():
            break
    else:
        raise InputError(path, "not a U-Net run, best or checkpoint directory (no config.yaml)")
    cfg = load_config(cfg_path)
    if cfg.stage != "unet":
        raise InputError(
            path,
            f"is a {cfg.stage!r} model, not a U-Net (train one with kldm train --stage unet)",
        )
    model = build_image_unet(cfg)
    try:
        model.load_state_dict(load_model_weights(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(path, f"weights do not fit the config's U-Net ({first})") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()
