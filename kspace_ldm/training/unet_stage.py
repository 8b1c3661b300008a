"""The per-stage part of ``kldm train --stage unet``: fastMRI's supervised U-Net recipe.

The training loop, run directory, checkpoints, resume, logging and progress bar are the one loop
of every stage (:func:`kspace_ldm.training.loop.run_training`); :class:`UNetStage` is a
:class:`~kspace_ldm.training.first_stage.FirstStage` with its own model, loss and validation
reconstruction: the data are the same fastMRI-format slices
(:class:`~kspace_ldm.training.data.FirstStageDataset`, fully sampled k-space + target).

Per training sample: draw a mask with the configured fastMRI mask function (a new one per sample
and step, seeded by ``(train.seed, step, rank, sample)``: reproducible, and an exact resume sees
the masks an uninterrupted run sees), zero the unacquired k-space, form the zero-filled magnitude
(RSS) image at the target size, and regress the target with L1 in the input's standardised units
(:class:`~kspace_ldm.models.image_unet.ImageUNet`).

Validation undersamples every volume with one mask seeded by its file name (fastMRI's protocol,
and the mask ``kldm recon`` draws for that file at the same mask settings) and scores the
reconstructions like the first stage's validation (PSNR/SSIM with the volume's ``max``, NMSE, per
slice, averaged over slices).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..data.masks import apply_mask, create_mask, seed_from_filename
from ..models.image_unet import ImageUNet, build_image_unet, load_unet
from ..physics.transforms import zero_filled
from .data import FirstStageDataset, collate
from .first_stage import FirstStage
from .validation import score_slices

__all__ = ["UNetStage", "build_image_unet", "load_unet"]

_SEED_MOD = 2**32  # fastMRI mask seeds are ints (or tuples of ints) in [0, 2**32)


class UNetStage(FirstStage):
    """Model, loss and validation of the U-Net stage (the data, step and state are the first
    stage's; no discriminator).

    Args:
        cfg: the run's config (``stage: unet``).
        device: where the batches go.
        bf16: bf16 autocast of the forward pass (CUDA); the loss is float32.
        dist_info: the process's rank (seeds the training masks).
    """

    panel_label = "U-Net"

    def __init__(self, cfg: TrainConfig, device="cpu", bf16: bool = False, dist_info=None):
        super().__init__(cfg, device, bf16, dist_info)
        u = cfg.unet
        self.mask_func = create_mask(u.mask_type, u.center_fractions, u.accelerations)

    def build_model(self) -> ImageUNet:
        """fastMRI's U-Net on zero-filled images, any coil count (RSS in)."""
        self.model = build_image_unet(self.cfg).to(self.device)
        return self.model

    def training_masks(self, shape: tuple[int, ...], step: int, rank: int, n: int) -> np.ndarray:
        """``n`` masks for k-space ``shape`` ``(..., H, W)`` at ``step``: bool ``[n, W]`` (column
        masks) or ``[n, H, W]``, each seeded by ``(train.seed, step, rank, sample)``."""
        base = (self.cfg.train.seed % _SEED_MOD, step % _SEED_MOD, rank % _SEED_MOD)
        return np.stack([self.mask_func(shape, seed=(*base, i)).mask for i in range(n)])

    def zero_filled_batch(
        self, kspace: torch.Tensor, masks: np.ndarray, crop: tuple[int, int]
    ) -> torch.Tensor:
        """Zero-filled magnitude/RSS images ``[B, 1, h, w]`` of ``kspace`` ``[B, C, H, W]`` under
        ``masks`` (one per slice)."""
        masked = torch.stack([apply_mask(kspace[i], masks[i])[0] for i in range(kspace.shape[0])])
        return zero_filled(masked, crop=crop, coil_dim=1)[:, None].float()

    def loss(
        self, forward: torch.nn.Module, batch: dict, step: int, seed: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 loss of one batch (``forward``: the model, or its DDP wrapper); the masks are
        seeded by ``(train.seed, step, rank)``, the global torch RNG by ``seed``."""
        torch.manual_seed(seed)
        k = batch["kspace"].to(self.device, non_blocking=True)
        masks = self.training_masks(tuple(k.shape[1:]), step, self.dist.rank, k.shape[0])
        image = self.zero_filled_batch(k, masks, batch["crop"])
        target = batch["target"].to(self.device)[:, None].float()
        model = forward.module if hasattr(forward, "module") else forward
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pred, mean, std = forward(image, normalized=True)
        loss = torch.nn.functional.l1_loss(pred.float(), model.normalize_target(target, mean, std))
        accel = float(np.mean([m.size / max(int(m.sum()), 1) for m in masks]))
        return loss, {"loss": loss.detach(), "effective_acceleration": torch.tensor(accel)}

    @torch.no_grad()
    def evaluate(
        self,
        model: ImageUNet,
        dataset: FirstStageDataset,
        batch_size: int = 4,
        panels: int = 0,
    ) -> tuple[dict[str, float], list[tuple[np.ndarray, np.ndarray]]]:
        """Reconstruct every validation slice from its per-volume masked k-space and score it.

        Returns:
            ``({"psnr", "ssim", "nmse", "slices"}, [(target, recon), ...])`` (up to ``panels``).
        """
        was_training = model.training
        model.eval()
        masks: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

        def volume_mask(item) -> np.ndarray:
            key = (item.fname, tuple(item.kspace.shape))
            if key not in masks:
                seed = seed_from_filename(item.fname)
                masks[key] = self.mask_func(tuple(item.kspace.shape), seed=seed).mask
            return masks[key]

        def reconstruct(items: list) -> tuple[np.ndarray, dict]:
            b = collate(items)
            m = np.stack([volume_mask(it) for it in items])
            image = self.zero_filled_batch(b["kspace"].to(self.device), m, b["crop"])
            return model(image)[:, 0].float().cpu().numpy(), b

        try:
            return score_slices(dataset, reconstruct, batch_size, panels)
        finally:
            model.train(was_training)
