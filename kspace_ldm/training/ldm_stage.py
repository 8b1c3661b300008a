"""The second stage (``kldm train --stage ldm``): diffusion on extracted latents.

The loop (distributed set-up, LR schedules, the resumable step sampler, checkpoints with
``latest.json`` and resume, the CSV/TensorBoard logger and the progress bar) is every stage's
(:func:`kspace_ldm.training.loop.run_training`); :class:`LDMStage` is the step:

``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``z_t = sqrt(abar_t) * s * z + sqrt(1 - abar_t) * eps``,
loss ``MSE(UNet(z_t, t), target)`` with ``target = eps`` (epsilon) or
``v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * s * z`` (v-prediction); timesteps and noise come
from a generator seeded by ``(seed, step, rank)`` (exact resume); the EMA follows every step.

``s`` is the latent scale factor: ``ldm.scale_factor`` or, when 0, ``1 / global std`` of the
training latents from the extraction's ``stats.json``; it is fixed for the run and written to
``ldm.json`` beside every exported model. Validation computes the same loss on the validation
latents with fixed timesteps and noise (a deterministic number), for the raw and the EMA weights;
the best EMA loss selects ``RUN_DIR/best`` (``model``, ``ema``, ``config.yaml``, ``ldm.json``).
Without validation latents every checkpoint's weights become ``best``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import InputError
from ..io import atomic_write_text
from ..latents import load_latent_stats, load_latents
from ..models.ldm import (
    EMA,
    LDM_META,
    build_noise_scheduler,
    build_unet,
    check_unet_serves,
    unet_multiple,
    unet_predict,
)
from . import checkpoint as ckpt
from .loop import Stage

__all__ = ["LDMStage", "LatentDataset", "diffusion_loss"]


class LatentDataset(torch.utils.data.Dataset):
    """All latents of an extraction partition, in memory (they are small), times ``scale``.

    Index ``i`` may exceed ``len`` (``StepBatchSampler`` keys): ``i % len`` is the latent.
    """

    def __init__(self, folder: str | Path, scale: float):
        if not folder:
            raise InputError("data", "no latent folder given (data.train / data.val)")
        z, self.names = load_latents(folder)
        self.z = z.float() * float(scale)

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, key: int) -> torch.Tensor:
        return self.z[key % self.z.shape[0]]


def _collate(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


def diffusion_loss(
    unet: nn.Module,
    scheduler,
    z0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    multiple: int,
) -> torch.Tensor:
    """Mean squared error of the UNet's prediction (epsilon or v) at timesteps ``t``.

    The noisy latent is padded to the UNet's ``multiple`` exactly as the sampler pads it
    (:func:`~kspace_ldm.models.ldm.unet_predict`) and the prediction unpadded, so the loss covers
    the valid latent region only.

    Args:
        z0: scaled clean latents ``[B, Cz, h, w]``; ``t``: ``[B]`` long; ``noise``: like ``z0``.
        multiple: :func:`~kspace_ldm.models.ldm.unet_multiple` of the UNet.
    """
    zt = scheduler.add_noise(z0, noise, t)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(z0, noise, t)
    else:
        target = noise
    pred = unet_predict(unet, zt, t, multiple)
    return torch.nn.functional.mse_loss(pred.float(), target.float())


@torch.no_grad()
def _val_loss(unet: nn.Module, scheduler, val: LatentDataset, device, batch: int, seed: int):
    """Loss over the validation latents at fixed (seeded) timesteps and noise."""
    g = torch.Generator().manual_seed(seed + 12345)
    n = len(val)
    t_all = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=g)
    noise_all = torch.randn(val.z.shape, generator=g)
    total = 0.0
    was = unet.training
    unet.eval()
    for s in range(0, n, batch):
        z0 = val.z[s : s + batch].to(device)
        loss = diffusion_loss(
            unet,
            scheduler,
            z0,
            t_all[s : s + batch].to(device),
            noise_all[s : s + batch].to(device),
            unet_multiple(unet),
        )
        total += float(loss) * z0.shape[0]
    unet.train(was)
    return total / n


def _scale_factor(cfg: TrainConfig, stats: dict) -> float:
    if cfg.ldm.scale_factor > 0:
        return float(cfg.ldm.scale_factor)
    std = float(stats["latent"]["global_std"])
    if not math.isfinite(std) or std <= 0:
        raise InputError("stats.json", f"latent std {std} cannot define a scale factor")
    return 1.0 / std


class LDMStage(Stage):
    """The latent denoiser's part of :func:`~kspace_ldm.training.loop.run_training` (see the
    module docstring); the lowest validation loss (of the EMA weights, if any) selects ``best``."""

    bar_desc = "train ldm"
    best_key = "best_val_loss"
    higher_is_better = False
    log_grad_norm = False
    best_without_validation = True  # no validation: the latest weights are the export

    # ---- build
    def build_data(self) -> tuple[LatentDataset, LatentDataset | None]:
        cfg, lc = self.cfg, self.cfg.ldm
        stats = load_latent_stats(Path(cfg.data.train).parent)
        first_stage = lc.first_stage or stats.get("first_stage") or ""
        if not first_stage:
            raise InputError("ldm.first_stage", "unknown: set it or extract latents with kldm")
        self.scale = _scale_factor(cfg, stats)
        train_ds = LatentDataset(cfg.data.train, self.scale)
        val_ds = LatentDataset(cfg.data.val, self.scale) if cfg.data.val else None
        self.latent_channels = latent_channels = int(train_ds.z.shape[1])
        meta = {
            "scale_factor": self.scale,
            "latent_channels": latent_channels,
            "latent_shape": list(train_ds.z.shape[1:]),
            "kspace_size": stats.get("kspace_size"),
            "first_stage": str(Path(first_stage).resolve()),
            "norm_ratio": stats.get("norm_ratio"),
            "latent_stats": stats.get("latent"),
        }
        self.meta_text = json.dumps(meta, indent=2) + "\n"

        # A config that cannot serve these latents stops here in one line, not at the first step.
        where = f"config {cfg.name or 'ldm'}"
        check_unet_serves(lc, latent_channels, train_ds.z.shape[-2:], where)
        if val_ds is not None and val_ds.z.shape[1] != latent_channels:
            raise InputError(
                cfg.data.val,
                f"{val_ds.z.shape[1]} latent channels but the training latents have "
                f"{latent_channels}",
            )
        if val_ds is not None and val_ds.z.shape[-2:] != train_ds.z.shape[-2:]:
            check_unet_serves(lc, latent_channels, val_ds.z.shape[-2:], where)
        self.multiple = unet_multiple(lc.block_out_channels)
        return train_ds, val_ds

    def build_model(self) -> nn.Module:
        lc = self.cfg.ldm
        self.model = build_unet(lc, self.latent_channels).to(self.device)
        self.scheduler = build_noise_scheduler(lc)
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        self.ema = EMA(self.model, lc.ema_decay, lc.ema_warmup) if lc.ema_decay > 0 else None
        return self.model

    def loader_options(self) -> dict:
        return {"num_workers": 0, "collate_fn": _collate}

    # ---- step
    def loss(self, forward, z0: torch.Tensor, step: int, seed: int):
        # Timesteps and noise depend only on (seed, step, rank): exact resume.
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.cfg.ldm.num_train_timesteps, (z0.shape[0],), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        z0, t, noise = z0.to(self.device), t.to(self.device), noise.to(self.device)
        loss = diffusion_loss(forward, self.scheduler, z0, t, noise, self.multiple)
        return loss, {"loss": loss.detach()}

    def after_optimizer_step(self, step: int, logs: dict) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def throughput(self, samples: int, steps: int, seconds: float) -> dict[str, float]:
        return {"steps_per_s": steps / seconds}

    # ---- validation
    def validate(self, val_ds: LatentDataset, step: int):
        seed = self.cfg.train.seed
        metrics = {"loss": _val_loss(self.model, self.scheduler, val_ds, self.device, 16, seed)}
        if self.ema is not None:
            shadow = build_unet(self.cfg.ldm, self.latent_channels).to(self.device)
            shadow.load_state_dict(self.ema.state_dict())
            metrics["ema_loss"] = _val_loss(shadow, self.scheduler, val_ds, self.device, 16, seed)
        return metrics, None

    def score(self, metrics: dict[str, float]) -> float:
        return metrics.get("ema_loss", metrics["loss"])

    # ---- checkpoint state
    def extra_state(self) -> dict:
        return {
            "scale_factor": self.scale,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
        }

    def extra_weights(self):
        return {"ema": self.ema.state_dict()} if self.ema is not None else None

    def load_extra(self, path: Path, c: ckpt.Checkpoint) -> None:
        if self.ema is not None:
            if "ema" not in c.extra:
                raise InputError(path, "has no EMA weights but the config uses EMA")
            self.ema.load_state_dict(c.extra["ema"], c.state.get("ema_updates", c.step))
        if abs(c.state.get("scale_factor", self.scale) - self.scale) > 1e-12 * self.scale:
            raise InputError(path, "the latent scale factor changed since the run started")

    def write_meta(self, folder: Path) -> None:
        atomic_write_text(folder / LDM_META, self.meta_text)
