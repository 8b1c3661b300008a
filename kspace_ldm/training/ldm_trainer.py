"""The second-stage trainer behind ``kldm train --stage ldm``: diffusion on extracted latents.

It shares the first stage's framework (:mod:`kspace_ldm.training.trainer`): the distributed set-up
(torchrun, DDP, gloo/NCCL), the LR schedules, :class:`~kspace_ldm.training.data.StepBatchSampler`
(batch order a pure function of ``(seed, step)``, so ``--resume`` is exact), per-step RNG seeding,
atomic safetensors checkpoints with ``latest.json``, the CSV/TensorBoard logger and the progress
bar. What differs is the step:

``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``z_t = sqrt(abar_t) * s * z + sqrt(1 - abar_t) * eps``,
loss ``MSE(UNet(z_t, t), target)`` with ``target = eps`` (epsilon) or
``v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * s * z`` (v-prediction).

``s`` is the latent scale factor: ``ldm.scale_factor`` or, when 0, ``1 / global std`` of the
training latents from the extraction's ``stats.json``; it is fixed for the run and written to
``ldm.json`` beside every exported model. Validation computes the same loss on the validation
latents with fixed timesteps and noise (a deterministic number), for the raw and the EMA weights;
the best EMA loss selects ``RUN_DIR/best`` (``model``, ``ema``, ``config.yaml``, ``ldm.json``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig, config_to_dict, config_to_yaml
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
from .data import StepBatchSampler
from .trainer import (
    TrainResult,
    _after_step,
    _barrier,
    _check_replicas,
    _close_outputs,
    _load_latest,
    _lr_scheduler,
    _mean_across_ranks,
    _open_outputs,
    _optimizer,
    _scheduler_state,
    _start_run,
    _wrap_ddp,
)

__all__ = ["LatentDataset", "diffusion_loss", "train_ldm"]


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


def train_ldm(
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    resume_step: int | None = None,
) -> TrainResult:
    """Train the latent denoiser; see the module docstring. Call once per process."""
    t_start = time.perf_counter()
    run_dir, d, device = _start_run(cfg, out, resume)
    tc, lc = cfg.train, cfg.ldm

    stats = load_latent_stats(Path(cfg.data.train).parent)
    first_stage = lc.first_stage or stats.get("first_stage") or ""
    if not first_stage:
        raise InputError("ldm.first_stage", "unknown: set it or extract latents with kldm")
    scale = _scale_factor(cfg, stats)
    train_ds = LatentDataset(cfg.data.train, scale)
    val_ds = LatentDataset(cfg.data.val, scale) if cfg.data.val else None
    latent_channels = int(train_ds.z.shape[1])
    meta = {
        "scale_factor": scale,
        "latent_channels": latent_channels,
        "latent_shape": list(train_ds.z.shape[1:]),
        "kspace_size": stats.get("kspace_size"),
        "first_stage": str(Path(first_stage).resolve()),
        "norm_ratio": stats.get("norm_ratio"),
        "latent_stats": stats.get("latent"),
    }
    meta_text = json.dumps(meta, indent=2) + "\n"

    # A config that cannot serve these latents stops here in one line, not at the first step.
    where = f"config {cfg.name or 'ldm'}"
    check_unet_serves(lc, latent_channels, train_ds.z.shape[-2:], where)
    if val_ds is not None and val_ds.z.shape[1] != latent_channels:
        raise InputError(
            cfg.data.val,
            f"{val_ds.z.shape[1]} latent channels but the training latents have {latent_channels}",
        )
    if val_ds is not None and val_ds.z.shape[-2:] != train_ds.z.shape[-2:]:
        check_unet_serves(lc, latent_channels, val_ds.z.shape[-2:], where)
    multiple = unet_multiple(lc.block_out_channels)

    torch.manual_seed(tc.seed)
    unet = build_unet(lc, latent_channels).to(device)
    scheduler = build_noise_scheduler(lc)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    ema = EMA(unet, lc.ema_decay, lc.ema_warmup) if lc.ema_decay > 0 else None
    opt = _optimizer(unet.parameters(), cfg)
    o = cfg.optim
    sched = _lr_scheduler(opt, cfg)

    start_step, best, best_step = 0, math.inf, -1
    loaded = (
        _load_latest(run_dir, unet, opt, sched, cfg, resume_step) if resume is not None else None
    )
    if loaded is not None:
        latest, c = loaded
        if ema is not None:
            if "ema" not in c.extra:
                raise InputError(latest, "has no EMA weights but the config uses EMA")
            ema.load_state_dict(c.extra["ema"], c.state.get("ema_updates", c.step))
        start_step = c.step
        best = c.state.get("best_val_loss") or math.inf
        best_step = c.state.get("best_step", -1)
        if abs(c.state.get("scale_factor", scale) - scale) > 1e-12 * scale:
            raise InputError(latest, "the latent scale factor changed since the run started")
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        atomic_write_text(run_dir / LDM_META, meta_text)
    _barrier(d)

    ddp = _wrap_ddp(unet, d, device)
    sampler = StepBatchSampler(
        len(train_ds), cfg.data.batch_size, tc.seed, start_step, tc.max_steps, d.rank, d.world_size
    )
    loader = torch.utils.data.DataLoader(
        train_ds, batch_sampler=sampler, num_workers=0, collate_fn=_collate
    )

    logger, bar = _open_outputs(run_dir, cfg, d, start_step, resume is not None, desc="train ldm")

    last_val: dict[str, float] = {}
    fault_step = int(os.environ.get("KLDM_FAULT_KILL_AT_STEP", "-1"))
    sums, n_logged, t_log = 0.0, 0, time.perf_counter()
    step = start_step
    unet.train()

    def save_best(metrics: dict[str, float]) -> None:
        ckpt.save_best(
            run_dir,
            unet.state_dict(),
            config_to_yaml(cfg),
            metrics,
            extra={"ema": ema.state_dict()} if ema is not None else None,
        )
        atomic_write_text(run_dir / "best" / LDM_META, meta_text)

    def save(step_done: int) -> None:
        state = {
            "best_val_loss": None if best == math.inf else best,
            "best_step": best_step,
            "world_size": d.world_size,
            "last_val": last_val,
            "scale_factor": scale,
            "ema_updates": ema.updates if ema is not None else 0,
            "config": config_to_dict(cfg),
        }
        path = ckpt.save_checkpoint(
            run_dir,
            step_done,
            unet.state_dict(),
            {"optimizer": opt.state_dict(), "scheduler": _scheduler_state(sched)},
            state,
            keep=tc.keep_checkpoints,
            extra={"ema": ema.state_dict()} if ema is not None else None,
        )
        atomic_write_text(path / LDM_META, meta_text)
        if val_ds is None:  # no validation: the latest weights are the export
            save_best({"step": step_done})

    def validate(step_done: int) -> None:
        nonlocal last_val, best, best_step
        if d.enabled and tc.check_replicas:
            _check_replicas(unet, device, step_done)
        if d.is_main:
            last_val = {"loss": _val_loss(unet, scheduler, val_ds, device, 16, tc.seed)}
            if ema is not None:
                shadow = build_unet(lc, latent_channels).to(device)
                shadow.load_state_dict(ema.state_dict())
                last_val["ema_loss"] = _val_loss(shadow, scheduler, val_ds, device, 16, tc.seed)
            logger.log_val(step_done, last_val, None)
            key = last_val.get("ema_loss", last_val["loss"])
            if step_done > 0 and key < best:
                best, best_step = key, step_done
                save_best({"step": step_done, **last_val})
            if bar is not None:
                bar.write(f"[val] step {step_done}: " + ", ".join(
                    f"{k} {v:.5f}" for k, v in last_val.items()))  # fmt: skip
        _barrier(d)

    try:
        if val_ds is not None and tc.val_at_start and start_step == 0:
            validate(0)
        for z0 in loader:
            # Timesteps and noise depend only on (seed, step, rank): exact resume.
            g = torch.Generator().manual_seed((tc.seed * 1_000_003 + step) * 8191 + d.rank)
            t = torch.randint(0, lc.num_train_timesteps, (z0.shape[0],), generator=g)
            noise = torch.randn(z0.shape, generator=g)
            z0, t, noise = z0.to(device), t.to(device), noise.to(device)
            loss = diffusion_loss(ddp, scheduler, z0, t, noise, multiple)
            if not torch.isfinite(loss):
                raise InputError("train", f"loss is {loss.item()} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(unet)
            step += 1
            sums += float(loss.detach())
            n_logged += 1
            if step % tc.log_every == 0 or step == tc.max_steps:
                values = {"loss": sums / n_logged}
                if d.enabled:
                    values = _mean_across_ranks(values, device)
                values["steps_per_s"] = n_logged / max(time.perf_counter() - t_log, 1e-9)
                values["lr"] = sched.get_last_lr()[0]
                if logger is not None:
                    logger.log_train(step, values)
                if bar is not None:
                    bar.set_postfix(loss=f"{values['loss']:.4g}")
                sums, n_logged, t_log = 0.0, 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            _after_step(step, tc, d, validate if val_ds is not None else None, save, fault_step)
    finally:
        _close_outputs(logger, bar)
    return TrainResult(
        run_dir=run_dir,
        step=step,
        best_ssim=-math.inf,  # not applicable: the LDM selects by validation loss
        last_val=last_val,
        seconds=time.perf_counter() - t_start,
    )
