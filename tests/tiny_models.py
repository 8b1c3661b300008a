"""Untrained tiny first stage (f = 2) + tiny UNet for sampler tests: the mechanics, not quality."""

from __future__ import annotations

import torch

from kspace_ldm.config import LDMConfig
from kspace_ldm.models import KspaceAutoencoderKL, KspaceNormalizer
from kspace_ldm.models.ldm import LatentDiffusion, build_noise_scheduler, build_unet
from kspace_ldm.sampling.cgs import KspaceLDMSampler


def tiny_sampler(
    coils: int = 1,
    seed: int = 0,
    mode: str = "standardize",
    weighting: str = "none",
    sample_posterior: bool = False,
    shift: float = 0.0,
) -> KspaceLDMSampler:
    torch.manual_seed(seed)
    ae = KspaceAutoencoderKL(
        in_channels=2 * coils,
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        mid_block_attention=False,
        sample_posterior=sample_posterior,
    ).eval()
    cfg = LDMConfig(
        block_out_channels=[8, 16],
        down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=1,
        norm_num_groups=4,
    )
    k = 2 * coils if mode == "standardize" else 1
    ldm = LatentDiffusion(
        unet=build_unet(cfg, 4).eval(),
        scheduler_config=dict(build_noise_scheduler(cfg).config),
        scale_factor=0.8,
        first_stage="",
        norm_ratio={"scale": [3.0] * k, "shift": [shift] * k if mode == "standardize" else None},
        used_ema=False,
    )
    for p in (*ae.parameters(), *ldm.unet.parameters()):
        p.requires_grad_(False)
    return KspaceLDMSampler(ldm, ae, KspaceNormalizer(mode, weighting=weighting, log_c=0.05))
