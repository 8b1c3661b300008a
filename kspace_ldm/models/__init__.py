"""First-stage models, their k-space normalisation and losses; builders from configs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .autoencoders import (
    FAMILIES,
    Encoded,
    FirstStageModel,
    KspaceAutoencoder,
    KspaceAutoencoderKL,
    UNet,
    WeightedSSIMKspaceAutoencoder,
    WeightedSSIMKspaceAutoencoderKL,
    create_channels,
)
from .kspace_norm import KspaceNormalizer, NormStats
from .losses import FirstStageLoss, LossConfig

if TYPE_CHECKING:
    from ..config import ModelConfig, NormConfig

__all__ = [
    "FAMILIES",
    "Encoded",
    "FirstStageLoss",
    "FirstStageModel",
    "KspaceAutoencoder",
    "KspaceAutoencoderKL",
    "KspaceNormalizer",
    "LossConfig",
    "NormStats",
    "UNet",
    "WeightedSSIMKspaceAutoencoder",
    "WeightedSSIMKspaceAutoencoderKL",
    "build_model",
    "build_normalizer",
    "create_channels",
]


def build_model(cfg: ModelConfig, in_channels: int | None = None) -> FirstStageModel:
    """The network described by ``cfg`` (``in_channels`` overrides ``cfg.in_channels``)."""
    cls = FAMILIES[cfg.family]
    cin = int(in_channels or cfg.in_channels or 2)
    if cls is UNet:
        return UNet(
            in_channels=cin,
            chans=cfg.chans,
            num_pool_layers=cfg.num_pool_layers,
            latent_dim=cfg.latent_channels,
            drop_prob=cfg.drop_prob,
            with_residuals=cfg.with_residuals,
        )
    channels = cfg.block_out_channels or list(create_channels(cfg.n_mult, cfg.chans))
    kwargs = dict(
        in_channels=cin,
        block_out_channels=channels,
        latent_channels=cfg.latent_channels,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        mid_block_attention=cfg.mid_block_attention,
    )
    if cls.is_kl:
        kwargs["sample_posterior"] = cfg.sample_posterior
    return cls(**kwargs)


def build_normalizer(cfg: NormConfig) -> KspaceNormalizer:
    """The :class:`KspaceNormalizer` described by ``cfg``."""
    return KspaceNormalizer(
        mode=cfg.mode,
        acs_fraction=cfg.acs_fraction,
        weighting=cfg.weighting,
        weight_power=cfg.weight_power,
        weight_r0=cfg.weight_r0,
        log_c=cfg.log_c,
    )
