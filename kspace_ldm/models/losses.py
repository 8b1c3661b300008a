"""First-stage losses: k-space reconstruction, image-domain L1/SSIM/LPIPS, KL, and the GAN terms.

Every term is a *mean* and enters with an explicit weight, fixing the reference's loss scaling
(kLD-MRI, sandrosage/kspace-diffusion; docs/reproducing_kld_mri.md): there the SSIM and LPIPS values
were broadcast-added to each of the 491,520 k-space elements before a sum, an implicit weight of
~5e5 relative to the L1 term.

Terms (weights in :class:`LossConfig`):

* ``kspace``: L1 (reference) or L2 between input and reconstruction in the network domain
  (normalised, optionally spectrum-weighted k-space), mean over all elements.
* ``image_l1``: L1 between the magnitude/RSS images formed from the input and from the
  reconstruction (un-normalised, un-padded, inverse FFT, centre crop), both divided by the
  per-sample maximum of the input's image, so the term is in [0, 1] units regardless of the scan's
  intensity scale.
* ``ssim``: ``1 - SSIM`` of the same images (7x7 uniform window, K1 0.01, K2 0.03, sample
  covariance, data range 1 after the scaling above), mean over the batch -- fastMRI's ``SSIMLoss``
  but batched (the reference only worked with batch 1).
* ``lpips``: LPIPS of the same images mapped with a fixed ``2 v - 1`` to [-1, 1] (no per-image
  min-max), only where the lpips package and its backbone weights are on disk.
* ``kl``: the posterior's KL divergence summed over the latent and divided by the number of input
  elements ``2C * H * W`` (and averaged over the batch), so ``kl_weight`` keeps the reference's
  ratio to the per-element reconstruction term (the reference's KL and NLL were both sums / B).
* GAN (optional): PatchGAN on the images, hinge loss, generator term ``-mean D(x_hat)`` scaled by
  the taming-style adaptive weight ``|grad rec| / (|grad g| + 1e-4)`` on the decoder's last
  layer (clamped to [0, 1e4]) times ``disc_weight``, active from training step ``disc_start``
  (counted in training steps, not optimiser steps as in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .autoencoders import Encoded, FirstStageModel
from .discriminator import NLayerDiscriminator, hinge_d_loss, hinge_g_loss
from .kspace_norm import KspaceNormalizer, NormStats

__all__ = ["FirstStageLoss", "LossConfig", "ssim_loss"]


@dataclass
class LossConfig:
    """Weights and switches of :class:`FirstStageLoss` (``loss:`` in the YAML configs).

    ``ssim_weight = None`` takes the family's default (0.7 for the weighted-SSIM families, else 0).
    """

    kspace: str = "l1"
    kspace_weight: float = 1.0
    image_l1_weight: float = 0.0
    ssim_weight: float | None = None
    lpips_weight: float = 0.0
    lpips_net: str = "alex"
    kl_weight: float = 1e-6
    disc_weight: float = 0.0
    disc_start: int = 5000
    disc_channels: int = 64
    disc_layers: int = 3
    disc_lr: float | None = None


def ssim_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: torch.Tensor | float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """``1 - mean SSIM`` of image batches ``[B, 1, H, W]`` (fastMRI ``SSIMLoss``, batched).

    Args:
        x: reconstruction ``[B, 1, H, W]``.
        y: target ``[B, 1, H, W]``.
        data_range: scalar or ``[B]`` tensor.

    Returns:
        scalar tensor: ``1 - mean`` over the batch and the valid (un-padded) SSIM map.
    """
    w = torch.ones(1, 1, win_size, win_size, dtype=x.dtype, device=x.device) / win_size**2
    n = win_size**2
    cov_norm = n / (n - 1)
    if isinstance(data_range, torch.Tensor):
        data_range = data_range.reshape(-1, 1, 1, 1).to(x.dtype)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ux, uy = F.conv2d(x, w), F.conv2d(y, w)
    uxx, uyy, uxy = F.conv2d(x * x, w), F.conv2d(y * y, w), F.conv2d(x * y, w)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return 1.0 - s.mean()


class FirstStageLoss(nn.Module):
    """All first-stage loss terms; see the module docstring.

    Args:
        cfg: the weights. ``cfg.ssim_weight`` must be resolved (not ``None``).
        normalizer: maps network-domain k-space back to images.
        in_channels: ``2C``; only used to size the KL normalisation.
    """

    def __init__(self, cfg: LossConfig, normalizer: KspaceNormalizer):
        super().__init__()
        if cfg.kspace not in ("l1", "l2"):
            raise InputError("loss.kspace", f"must be 'l1' or 'l2', got {cfg.kspace!r}")
        if cfg.ssim_weight is None:
            raise ValueError("resolve cfg.ssim_weight from the model family first")
        for name in ("kspace_weight", "image_l1_weight", "ssim_weight", "lpips_weight"):
            if getattr(cfg, name) < 0:
                raise InputError(f"loss.{name}", f"must be >= 0, got {getattr(cfg, name)}")
        self.cfg = cfg
        self.normalizer = normalizer
        self.lpips = None
        if cfg.lpips_weight > 0:
            self.lpips = _load_lpips(cfg.lpips_net)
        self.discriminator: NLayerDiscriminator | None = None
        if cfg.disc_weight > 0:
            self.discriminator = NLayerDiscriminator(
                in_channels=1, channels=cfg.disc_channels, n_layers=cfg.disc_layers
            )

    @property
    def needs_images(self) -> bool:
        c = self.cfg
        return (
            c.image_l1_weight > 0
            or c.ssim_weight > 0
            or c.lpips_weight > 0
            or self.discriminator is not None
        )

    def images(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        stats: NormStats,
        crop: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target and reconstructed images ``[B, 1, h, w]`` in units of the target's per-sample
        maximum (float32, outside autocast: the FFT needs full precision)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            img = self.normalizer.to_image(x.float(), stats, crop)
            img_hat = self.normalizer.to_image(x_hat.float(), stats, crop)
            peak = img.detach().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            return (img / peak).unsqueeze(1), (img_hat / peak).unsqueeze(1)

    def generator_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        enc: Encoded,
        stats: NormStats,
        crop: tuple[int, int] | None,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """The autoencoder's loss.

        Args:
            x: network input ``[B, 2C, H, W]``.
            x_hat: reconstruction, same shape.
            enc: the encoder output (its posterior gives the KL term).
            stats: normalisation stats of ``x``.
            crop: image crop ``(h, w)`` for the image-domain terms.
            step: training step (for ``disc_start``).
            last_layer: decoder's last weight, for the adaptive GAN weight.

        Returns:
            ``(loss, logs, images)``: the scalar loss, detached per-term values, and the
            ``(target, recon)`` images when image terms were computed (else ``None``).
        """
        c = self.cfg
        diff = (x_hat.float() - x.float()).abs()
        rec = diff.mean() if c.kspace == "l1" else diff.square().mean()
        loss = c.kspace_weight * rec
        logs = {"kspace": rec.detach()}
        imgs = None
        if self.needs_images:
            img, img_hat = self.images(x, x_hat, stats, crop)
            imgs = (img, img_hat)
            if c.image_l1_weight > 0:
                l1 = (img_hat - img).abs().mean()
                loss = loss + c.image_l1_weight * l1
                logs["image_l1"] = l1.detach()
            if c.ssim_weight > 0:
                s = ssim_loss(img_hat, img, 1.0)
                loss = loss + c.ssim_weight * s
                logs["ssim_loss"] = s.detach()
            if self.lpips is not None:
                lp = self.lpips(
                    (2 * img_hat - 1).expand(-1, 3, -1, -1), (2 * img - 1).expand(-1, 3, -1, -1)
                ).mean()
                loss = loss + c.lpips_weight * lp
                logs["lpips"] = lp.detach()
        if enc.posterior is not None and c.kl_weight > 0:
            # In float32 even under bf16 autocast: a sum over the whole latent.
            mean, logvar = enc.posterior.mean.float(), enc.posterior.logvar.float()
            kl_per_sample = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))
            kl = kl_per_sample.mean() / x[0].numel()
            loss = loss + c.kl_weight * kl
            logs["kl"] = kl.detach()
        if self.discriminator is not None and step >= c.disc_start:
            _, img_hat = imgs
            g = hinge_g_loss(self.discriminator(2 * img_hat - 1))
            d_weight = self._adaptive_weight(loss, g, last_layer)
            loss = loss + d_weight * g
            logs["g_loss"] = g.detach()
            logs["d_weight"] = d_weight.detach()
        logs["loss"] = loss.detach()
        return loss, logs, imgs

    def model_loss(
        self,
        model: FirstStageModel,
        kspace: torch.Tensor,
        crop: tuple[int, int] | None,
        step: int,
        *,
        forward: nn.Module | None = None,
        bf16: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """The generator half of a training step: normalise complex ``kspace``, reconstruct it
        with ``forward`` (default ``model``, e.g. its DDP wrapper) under bf16 autocast when
        ``bf16``, and return :meth:`generator_loss` of the result (the adaptive GAN weight taken
        at ``model.last_layer``)."""
        x, stats = self.normalizer.normalize(kspace)
        net = model if forward is None else forward
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
            x_hat, enc = net(x)
        return self.generator_loss(
            x,
            x_hat.float(),
            enc,
            stats,
            crop,
            step,
            last_layer=model.last_layer if self.discriminator is not None else None,
        )

    def _adaptive_weight(
        self, rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor | None
    ) -> torch.Tensor:
        """taming's ``calculate_adaptive_weight`` times ``disc_weight``."""
        if last_layer is None or not torch.is_grad_enabled():
            return torch.tensor(self.cfg.disc_weight, device=g_loss.device)
        rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        w = rec_grad.norm() / (g_grad.norm() + 1e-4)
        return w.clamp(0.0, 1e4).detach() * self.cfg.disc_weight

    def discriminator_loss(self, img: torch.Tensor, img_hat: torch.Tensor) -> torch.Tensor:
        """Hinge loss of the discriminator on target vs (detached) reconstructed images."""
        assert self.discriminator is not None
        return hinge_d_loss(
            self.discriminator(2 * img.detach() - 1), self.discriminator(2 * img_hat.detach() - 1)
        )


def _load_lpips(net: str) -> nn.Module:
    """The LPIPS network, frozen; an InputError saying what is missing when it cannot run here
    (nothing is ever downloaded)."""
    from ..metrics import _lpips_model, lpips_status

    ok, why = lpips_status(net)
    if not ok:
        raise InputError("loss.lpips_weight", f"> 0 needs LPIPS, which is unavailable: {why}")
    model = _lpips_model(net, "cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    return model
