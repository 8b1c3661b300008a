"""The first-stage trainer behind ``kldm train --stage ae`` (and ``--stage unet``).

``stage: unet`` (the supervised U-Net baseline) runs through the same loop; its loss and
validation are the per-stage part in :mod:`kspace_ldm.training.unet_stage`.

One process per device; under ``torchrun`` it joins a process group (NCCL on GPUs, gloo on the
CPU), wraps the autoencoder in ``DistributedDataParallel`` and shards every batch list with
:class:`~kspace_ldm.training.data.StepBatchSampler`. Rank 0 validates, logs and checkpoints.

Per step: normalise k-space -> forward (bf16 autocast on CUDA) -> loss (images in float32) ->
backward -> gradient clipping -> optimiser and LR-scheduler step -> (GAN runs, after
``disc_start``) discriminator step.

Exact resume: the batch order and each sample's augmentation are functions of ``(seed, step)``
(see :mod:`kspace_ldm.training.data`), and the global torch RNG (posterior sampling, dropout) is
re-seeded at every step from ``(seed, step, rank)``. A checkpoint therefore needs no RNG state:
weights + optimiser + scheduler + step determine the rest of the run, and ``--resume`` continues
bit-for-bit like an uninterrupted run (on the same hardware and thread count).

Fault injection for tests: ``KLDM_FAULT_KILL_AT_STEP=N`` makes the process SIGKILL itself right
after step ``N`` (after any checkpoint due at ``N``), the way a preempted job dies.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import (
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
)
from ..errors import InputError
from ..io import atomic_write_text
from ..models import FirstStageLoss, FirstStageModel, build_model, build_normalizer
from ..models.kspace_norm import KspaceNormalizer
from ..viz import panel, save_png
from . import checkpoint as ckpt
from .data import FirstStageDataset, StepBatchSampler, check_same_coils, collate
from .validation import score_slices

__all__ = ["LRSchedule", "TrainResult", "evaluate_model", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; metrics are rank 0's)."""

    run_dir: Path
    step: int
    best_ssim: float
    last_val: dict[str, float]
    seconds: float


# ---------------------------------------------------------------------------------------------
# Distributed set-up
# ---------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device", "cuda requested but no CUDA device is available")
    if world <= 1:
        return _Dist(), torch.device("cuda" if want_cuda else "cpu")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return _Dist(rank, world, local_rank, True), device


def _barrier(d: _Dist) -> None:
    if d.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Optimisation pieces
# ---------------------------------------------------------------------------------------------


class LRSchedule:
    """LR multiplier per step: linear warm-up, then constant, cosine (to ``min_lr_ratio``) or step
    decay (``gamma`` every ``step_size`` steps). Built from the config on every (re)start; the
    checkpoint stores only the scheduler's position."""

    def __init__(
        self,
        scheduler: str,
        max_steps: int,
        warmup: int,
        min_ratio: float,
        step_size: int,
        gamma: float,
    ):
        self.scheduler, self.max_steps, self.warmup = scheduler, max_steps, warmup
        self.min_ratio, self.step_size, self.gamma = min_ratio, step_size, gamma

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.scheduler == "cosine":
            span = max(1, self.max_steps - self.warmup)
            t = min(1.0, (step - self.warmup) / span)
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if self.scheduler == "step":
            return self.gamma ** ((step - self.warmup) // self.step_size)
        return 1.0


def _optimizer(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "rmsprop":  # fastMRI's U-Net recipe (betas do not apply)
        return torch.optim.RMSprop(params, lr=lr or o.lr, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr or o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def _resolved_loss_cfg(cfg: TrainConfig, model: FirstStageModel):
    loss_cfg = dataclasses.replace(cfg.loss)
    if loss_cfg.ssim_weight is None:
        loss_cfg.ssim_weight = type(model).default_ssim_weight
    return loss_cfg


def _unwrap(model: nn.Module) -> FirstStageModel:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _lr_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    o = cfg.optim
    return torch.optim.lr_scheduler.LambdaLR(
        opt,
        LRSchedule(
            o.scheduler, cfg.train.max_steps, o.warmup_steps, o.min_lr_ratio, o.step_size, o.gamma
        ),
    )


def _scheduler_state(sched: torch.optim.lr_scheduler.LambdaLR) -> dict:
    # The schedule's shape comes from the config (so --resume --set train.max_steps=... takes
    # effect); only the scheduler's position is state.
    return {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}


def _wrap_ddp(model: nn.Module, d: _Dist, device: torch.device) -> nn.Module:
    if not d.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_model(
    model: FirstStageModel,
    normalizer: KspaceNormalizer,
    dataset: FirstStageDataset,
    device: torch.device,
    batch_size: int = 4,
    panels: int = 0,
) -> tuple[dict[str, float], list[tuple[np.ndarray, np.ndarray]]]:
    """Encode/decode every slice of ``dataset`` (posterior mode for KL models) and score the
    images formed from the decoded k-space against the targets (:func:`score_slices`)."""
    was_training = model.training
    model.eval()

    def reconstruct(items: list) -> tuple[np.ndarray, dict]:
        b = collate(items)
        k = b["kspace"].to(device)
        x, stats = normalizer.normalize(k)
        enc = model.encode(x, sample=False) if model.is_kl else model.encode(x)
        x_hat = model.decode(enc).float()
        return normalizer.to_image(x_hat, stats, b["crop"]).cpu().numpy(), b

    try:
        return score_slices(dataset, reconstruct, batch_size, panels)
    finally:
        model.train(was_training)


def _panel_image(pairs: list[tuple[np.ndarray, np.ndarray]], label: str = "decoded") -> np.ndarray:
    rows, labels, vmax = [], [], []
    for target, recon in pairs:
        err = np.abs(recon - target)
        rows.append([target, recon, err * 5])
        labels.append(["target", label, "|error| x5"])
        m = float(target.max())
        vmax.append([m, m, m])
    return np.asarray(panel(rows, labels, vmax))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _prepare_run_dir(cfg: TrainConfig, out: Path | None, resume: Path | None) -> Path:
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise InputError(resume, "not a run directory (no config.yaml)")
        return resume
    if out is None:
        raise InputError("train", "give --out RUN_DIR (or --resume RUN_DIR)")
    if (out / "checkpoints" / "latest.json").exists():
        raise InputError(out, "already holds a run with checkpoints; use --resume to continue it")
    return out


def _start_run(
    cfg: TrainConfig, out: str | Path | None, resume: str | Path | None
) -> tuple[Path, _Dist, torch.device]:
    """The run directory (checked), the process group and device, and torch's thread count."""
    run_dir = _prepare_run_dir(
        cfg, None if out is None else Path(out), None if resume is None else Path(resume)
    )
    d, device = _init_distributed(cfg.train.device)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    return run_dir, d, device


def _load_latest(
    run_dir: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched,
    cfg: TrainConfig | None = None,
    step: int | None = None,
) -> tuple[Path, ckpt.Checkpoint] | None:
    """Restore the weights, optimiser and LR-scheduler position of the run's latest checkpoint
    (or of the kept checkpoint of ``step``, ``--resume-from``); returns ``(its path, the
    checkpoint)`` for the caller's own state, or ``None`` if there is none yet.

    A corrupt checkpoint names the intact earlier ones; weights whose shapes do not fit the
    model (a ``--set`` that changed the architecture) name the changed config keys.
    """
    latest = ckpt.checkpoint_of_step(run_dir, step) if step is not None else None
    if latest is None:
        try:
            latest = ckpt.latest_checkpoint(run_dir)
        except InputError as err:
            raise _with_intact_hint(err, run_dir, None) from None
    if latest is None:
        return None
    try:
        c = ckpt.load_checkpoint(latest)
    except InputError as err:
        raise _with_intact_hint(err, run_dir, latest) from None
    _check_shapes(latest, model, c, cfg)
    model.load_state_dict(c.model)
    opt.load_state_dict(c.optim["optimizer"])
    sched.load_state_dict({**c.optim["scheduler"], "lr_lambdas": [None]})
    if _is_main_process():
        print(f"[train] {run_dir}: resuming from step {c.step} ({latest.name})")
    return latest, c


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _with_intact_hint(err: InputError, run_dir: Path, bad: Path | None) -> InputError:
    """``err`` plus the newest earlier checkpoint that loads, and how to resume from it."""
    for path in reversed(ckpt.list_checkpoints(run_dir)):
        if bad is not None and path == bad:
            continue
        try:
            step = ckpt.load_checkpoint(path).step
        except InputError:
            continue
        return InputError(
            err.source,
            f"{err.problem}; the earlier checkpoint {path.name} is intact: resume from it "
            f"with --resume {run_dir} --resume-from {step}",
        )
    return err


def _check_shapes(path: Path, model: nn.Module, c: ckpt.Checkpoint, cfg) -> None:
    """Refuse weights that do not fit ``model``, naming the config keys that changed since the
    checkpoint was written (instead of load_state_dict's traceback)."""
    own = model.state_dict()
    bad = [
        k
        for k in sorted(set(own) | set(c.model))
        if k not in own or k not in c.model or tuple(own[k].shape) != tuple(c.model[k].shape)
    ]
    if not bad:
        return
    changed = []
    saved = c.state.get("config") if isinstance(c.state.get("config"), dict) else None
    if saved is not None and cfg is not None:
        changed = _changed_keys(saved, config_to_dict(cfg))
    k = bad[0]
    detail = (
        f"tensor {k!r} is {list(c.model[k].shape)} in the checkpoint, "
        f"{list(own[k].shape)} in the model"
        if k in own and k in c.model
        else f"tensor {k!r} is only in the {'model' if k in own else 'checkpoint'}"
    )
    keys = ", ".join(changed) if changed else "the model configuration"
    raise InputError(
        path,
        f"the weights do not fit the model: {keys} changed since this checkpoint ({detail}); "
        "resume without that --set, or start a new run",
    )


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys of ``model``/``ldm`` whose values differ between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if not prefix and key not in ("model", "ldm"):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name} ({a!r} -> {b!r})")
    return out


def _open_outputs(
    run_dir: Path, cfg: TrainConfig, d: _Dist, start_step: int, resumed: bool, **bar_args
):
    """Rank 0's run logger and (``train.progress``) tqdm bar, ``(None, None)`` elsewhere."""
    if not d.is_main:
        return None, None
    from .logging import RunLogger

    tc = cfg.train
    logger = RunLogger(
        run_dir,
        resume_step=start_step if resumed else None,
        config=config_to_dict(cfg),
        wandb=tc.wandb,
        wandb_project=tc.wandb_project,
    )
    bar = None
    if tc.progress:
        from tqdm import tqdm

        bar = tqdm(total=tc.max_steps, initial=start_step, unit="step", **bar_args)
    return logger, bar


def _after_step(step: int, tc: RunConfig, d: _Dist, validate, save, fault_step: int) -> None:
    """What follows training step ``step``: ``validate(step)`` (``None`` without validation data)
    and rank 0's ``save(step)`` when due, then the fault injection (``KLDM_FAULT_KILL_AT_STEP``)."""
    if validate is not None and (step % tc.val_every == 0 or step == tc.max_steps):
        validate(step)
    if step % tc.ckpt_every == 0 or step == tc.max_steps:
        if d.is_main:
            save(step)
        _barrier(d)
    if step == fault_step:
        os.kill(os.getpid(), signal.SIGKILL)


def _close_outputs(logger, bar) -> None:
    if bar is not None:
        bar.close()
    if logger is not None:
        logger.close()


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The config a run was started with, plus ``overrides`` (for ``--resume``)."""
    return load_config(run_dir / "config.yaml", overrides)


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    resume_step: int | None = None,
) -> TrainResult:
    """Train a first-stage model; see the module docstring. Call once per process.
    ``resume_step``: resume from the kept checkpoint of this step instead of the latest."""
    t_start = time.perf_counter()
    run_dir, d, device = _start_run(cfg, out, resume)
    tc = cfg.train
    use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")

    # ---- data
    train_ds = FirstStageDataset(
        cfg.data.train,
        challenge=cfg.data.challenge,
        crop=cfg.data.crop,
        flip=cfg.data.flip,
        seed=tc.seed,
        max_slices=cfg.data.max_train_slices,
        train=True,
        coil_phase=cfg.data.coil_phase,
    )
    val_ds = None
    if cfg.data.val:
        val_ds = FirstStageDataset(
            cfg.data.val,
            challenge=cfg.data.challenge,
            max_slices=cfg.data.max_val_slices,
            train=False,
        )
    coils = check_same_coils(train_ds, val_ds)  # one coil count, or an error naming the file
    # ---- model, loss, optimisers (same seed on every rank; DDP also broadcasts rank 0's)
    torch.manual_seed(tc.seed)
    unet_stage = None
    if cfg.stage == "unet":
        # The per-stage part: fastMRI's U-Net on zero-filled images, any coil count (RSS in).
        from .unet_stage import UNetStage

        unet_stage = UNetStage(cfg, device, use_bf16)
        model = unet_stage.model.to(device)
        disc = None
    else:
        if cfg.model.in_channels and cfg.model.in_channels != 2 * coils:
            raise InputError(
                "model.in_channels",
                f"{cfg.model.in_channels} does not match the data's {coils} coil(s) "
                f"(= {2 * coils})",
            )
        cfg.model.in_channels = 2 * coils
        model = build_model(cfg.model).to(device)
        normalizer = build_normalizer(cfg.normalization)
        loss_cfg = _resolved_loss_cfg(cfg, model)
        loss_fn = FirstStageLoss(loss_cfg, normalizer).to(device)
        disc = loss_fn.discriminator
    opt = _optimizer(model.parameters(), cfg)
    o = cfg.optim
    sched = _lr_scheduler(opt, cfg)
    disc_opt = _optimizer(disc.parameters(), cfg, loss_cfg.disc_lr) if disc is not None else None

    start_step, best_ssim, best_step = 0, -math.inf, -1
    loaded = (
        _load_latest(run_dir, model, opt, sched, cfg, resume_step) if resume is not None else None
    )
    if loaded is not None:
        latest, c = loaded
        if disc is not None:
            if c.discriminator is None:
                raise InputError(latest, "has no discriminator weights but the config uses one")
            disc.load_state_dict(c.discriminator)
            disc_opt.load_state_dict(c.optim["disc_optimizer"])
        start_step = c.step
        best_ssim = c.state.get("best_ssim", -math.inf) or -math.inf
        best_step = c.state.get("best_step", -1)
    if start_step >= tc.max_steps and d.is_main:
        print(f"[train] {run_dir}: already at step {start_step} >= max_steps {tc.max_steps}")
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    _barrier(d)

    ddp_model = _wrap_ddp(model, d, device)

    sampler = StepBatchSampler(
        len(train_ds), cfg.data.batch_size, tc.seed, start_step, tc.max_steps, d.rank, d.world_size
    )
    loader = torch.utils.data.DataLoader(
        train_ds,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    logger, bar = _open_outputs(
        run_dir, cfg, d, start_step, resume is not None, desc="train", dynamic_ncols=True
    )

    fault_step = int(os.environ.get("KLDM_FAULT_KILL_AT_STEP", "-1"))
    last_val: dict[str, float] = {}
    sums: dict[str, float] = {}
    n_logged, t_log, samples_log = 0, time.perf_counter(), 0
    step = start_step
    model.train()

    def save(step_done: int) -> None:
        optim_state = {"optimizer": opt.state_dict(), "scheduler": _scheduler_state(sched)}
        if disc_opt is not None:
            optim_state["disc_optimizer"] = disc_opt.state_dict()
        state = {
            "best_ssim": None if best_ssim == -math.inf else best_ssim,
            "best_step": best_step,
            "world_size": d.world_size,
            "last_val": last_val,
            "config": config_to_dict(cfg),
        }
        ckpt.save_checkpoint(
            run_dir,
            step_done,
            model.state_dict(),
            optim_state,
            state,
            disc_state=None if disc is None else disc.state_dict(),
            keep=tc.keep_checkpoints,
        )

    def validate(step_done: int) -> None:
        nonlocal last_val, best_ssim, best_step
        if d.enabled and tc.check_replicas:
            _check_replicas(model, device, step_done)
        if d.is_main:
            if unet_stage is not None:
                last_val, pairs = unet_stage.evaluate(
                    model, val_ds, cfg.data.val_batch_size, tc.val_panels
                )
            else:
                last_val, pairs = evaluate_model(
                    model, normalizer, val_ds, device, cfg.data.val_batch_size, tc.val_panels
                )
            label = "U-Net" if unet_stage is not None else "decoded"
            img = _panel_image(pairs, label) if pairs else None
            if img is not None:
                save_png(img, run_dir / "panels" / f"step_{step_done:08d}.png")
            logger.log_val(step_done, last_val, img)
            # The untrained model (step 0) is a baseline, never "best".
            if step_done > 0 and last_val["ssim"] > best_ssim:
                best_ssim, best_step = last_val["ssim"], step_done
                ckpt.save_best(
                    run_dir,
                    model.state_dict(),
                    config_to_yaml(cfg),
                    {"step": step_done, **last_val},
                )
            if bar is not None:
                bar.write(
                    f"[val] step {step_done}: PSNR {last_val['psnr']:.2f} dB, "
                    f"SSIM {last_val['ssim']:.4f}, NMSE {last_val['nmse']:.4g}"
                )
        _barrier(d)

    try:
        if val_ds is not None and tc.val_at_start and start_step == 0:
            validate(0)
        for batch in loader:
            # Per-step seeding: posterior samples / dropout depend only on (seed, step, rank).
            torch.manual_seed((tc.seed * 1_000_003 + step) * 8191 + d.rank)
            k = batch["kspace"]
            if unet_stage is not None:
                loss, logs = unet_stage.loss(ddp_model, batch, step, d.rank)
            else:
                k = k.to(device, non_blocking=True)
                loss, logs, imgs = loss_fn.model_loss(
                    model, k, batch["crop"], step, forward=ddp_model, bf16=use_bf16
                )
            if not torch.isfinite(loss):
                raise InputError("train", f"loss is {loss.item()} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            if disc is not None and step >= loss_cfg.disc_start:
                d_loss = loss_fn.discriminator_loss(*imgs)
                disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                if d.enabled:
                    _average_grads_and_buffers(disc, d.world_size)
                disc_opt.step()
                logs["d_loss"] = d_loss.detach()
            step += 1
            samples_log += k.shape[0] * d.world_size

            for name, v in logs.items():
                sums[name] = sums.get(name, 0.0) + float(v)
            n_logged += 1
            if step % tc.log_every == 0 or step == tc.max_steps:
                values = {name: v / n_logged for name, v in sums.items()}
                if d.enabled:
                    values = _mean_across_ranks(values, device)
                elapsed = time.perf_counter() - t_log
                values["samples_per_s"] = samples_log / max(elapsed, 1e-9)
                values["lr"] = sched.get_last_lr()[0]
                if logger is not None:
                    logger.log_train(step, values)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{values['loss']:.4g}", sps=f"{values['samples_per_s']:.2f}"
                    )
                sums, n_logged, t_log, samples_log = {}, 0, time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
            _after_step(step, tc, d, validate if val_ds is not None else None, save, fault_step)
    finally:
        _close_outputs(logger, bar)

    if d.enabled and tc.check_replicas:
        diff = _check_replicas(model, device, step)
        if d.is_main:
            atomic_write_text(
                run_dir / "replicas.json",
                json.dumps({"step": step, "world_size": d.world_size, "max_abs_diff": diff}) + "\n",
            )
    return TrainResult(
        run_dir=run_dir,
        step=step,
        best_ssim=best_ssim,
        last_val=last_val,
        seconds=time.perf_counter() - t_start,
    )


def _mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(names, t.tolist(), strict=True))


def _average_grads_and_buffers(module: nn.Module, world: int) -> None:
    """Average the discriminator's gradients and BatchNorm buffers over ranks (it is not wrapped
    in DDP because the generator's loss also runs through it)."""
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


def _check_replicas(model: nn.Module, device: torch.device, step: int) -> float:
    """Max |param - rank-0 param| over all ranks; raises if the replicas diverged."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    value = float(diff)
    if value > 1e-6:
        raise RuntimeError(f"DDP replicas diverged at step {step}: max |diff| = {value:.3g}")
    return value


def run_from_cli(
    config: Path | None,
    out: Path | None,
    resume: Path | None,
    overrides: list[str],
    stage: str | None = None,
    resume_step: int | None = None,
) -> TrainResult:
    """``kldm train --stage ae|ldm|unet``: resolve the config (a resumed run reloads its own)
    and train the stage it names (``stage``, when given, must agree with the config's)."""
    if resume is not None:
        if config is not None:
            raise InputError(
                "--config",
                "not allowed with --resume (the run's config.yaml is used; "
                "change values with --set)",
            )
        if not (resume / "config.yaml").is_file():
            raise InputError(resume, "not a run directory (no config.yaml)")
        cfg = load_run_config(resume, overrides)
    else:
        if config is None:
            raise InputError("train", "give --config FILE (or --resume RUN_DIR)")
        cfg = load_config(config, overrides)
    if stage is not None and cfg.stage != stage:
        raise InputError(
            "--stage", f"{stage} given but the config is for stage {cfg.stage!r} (key 'stage')"
        )
    if cfg.stage == "ldm":
        from .ldm_trainer import train_ldm

        return train_ldm(cfg, out=out, resume=resume, resume_step=resume_step)
    return train(cfg, out=out, resume=resume, resume_step=resume_step)


__all__ += ["config_from_dict", "load_run_config", "run_from_cli"]
