"""The one training loop behind ``kldm train``, for every stage (``ae``, ``unet``, ``ldm``).

:func:`run_training` owns what all stages share: the distributed set-up, the optimiser and LR
schedule, the run directory, logging and the progress bar, the validation and checkpoint cadence,
checkpoints with ``--resume`` / ``--resume-from`` (and the intact-checkpoint hint when the latest
is corrupt), best-model selection and the fault injection the tests use. A :class:`Stage` is the
small per-stage part: its data and model, the loss of one batch, what follows the optimiser step
(discriminator, EMA), its validation and the state it adds to a checkpoint
(:mod:`~kspace_ldm.training.first_stage`, :mod:`~kspace_ldm.training.unet_stage`,
:mod:`~kspace_ldm.training.ldm_stage`).

One process per device; under ``torchrun`` it joins a process group (NCCL on GPUs, gloo on the
CPU), wraps the model in ``DistributedDataParallel`` and shards every batch list with
:class:`~kspace_ldm.training.data.StepBatchSampler`. Rank 0 validates, logs and checkpoints.

Per step: the stage's loss (seeded from ``(seed, step, rank)``) -> backward -> gradient clipping ->
optimiser and LR-scheduler step -> the stage's after-step (discriminator step, EMA update).

Exact resume: the batch order (and each sample's augmentation) is a function of ``(seed, step)``
(see :mod:`kspace_ldm.training.data`), and every random number a step draws comes from a seed of
``(seed, step, rank)`` (:func:`step_seed`). A checkpoint therefore needs no RNG state: weights +
optimiser + scheduler + step (+ the stage's extra state) determine the rest of the run, and
``--resume`` continues bit-for-bit like an uninterrupted run (on the same hardware and thread
count).

Fault injection for tests: ``KLDM_FAULT_KILL_AT_STEP=N`` makes the process SIGKILL itself right
after step ``N`` (after any checkpoint due at ``N``), the way a preempted job dies.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import RunConfig, TrainConfig, config_to_dict, config_to_yaml, load_config
from ..errors import InputError
from ..io import atomic_write_text
from ..viz import save_png
from . import checkpoint as ckpt
from .data import StepBatchSampler

__all__ = [
    "DistInfo",
    "LRSchedule",
    "Stage",
    "TrainResult",
    "average_grads_and_buffers",
    "load_run_config",
    "make_optimizer",
    "run_training",
    "step_seed",
]


@dataclass
class TrainResult:
    """What :func:`run_training` returns (on every rank; metrics are rank 0's)."""

    run_dir: Path
    step: int
    best_ssim: float
    last_val: dict[str, float]
    seconds: float


# ---------------------------------------------------------------------------------------------
# Distributed set-up
# ---------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    """This process's place in the process group (``enabled`` only under ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device", "cuda requested but no CUDA device is available")
    if world <= 1:
        return DistInfo(), torch.device("cuda" if want_cuda else "cpu")
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
    return DistInfo(rank, world, local_rank, True), device


def _barrier(d: DistInfo) -> None:
    if d.enabled:
        dist.barrier()


def _wrap_ddp(model: nn.Module, d: DistInfo, device: torch.device) -> nn.Module:
    if not d.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(names, t.tolist(), strict=True))


def average_grads_and_buffers(module: nn.Module, world: int) -> None:
    """Average a module's gradients and floating buffers (BatchNorm) over ranks, for a module
    that is not wrapped in DDP (the discriminator: the generator's loss also runs through it)."""
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


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of everything random in training step ``step`` on ``rank`` (exact resume)."""
    return (seed * 1_000_003 + step) * 8191 + rank


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


def make_optimizer(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optim`` names over ``params`` (``lr`` overrides ``optim.lr``)."""
    o = cfg.optim
    if o.optimizer == "rmsprop":  # fastMRI's U-Net recipe (betas do not apply)
        return torch.optim.RMSprop(params, lr=lr or o.lr, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr or o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


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


# ---------------------------------------------------------------------------------------------
# The per-stage part
# ---------------------------------------------------------------------------------------------


class Stage:
    """The per-stage part of :func:`run_training`; one object per run, made by the loop as
    ``stage_cls(cfg, device, bf16, dist)`` once the process group and device are known.

    The loop calls, in this order: :meth:`build_data`, then (after ``torch.manual_seed(seed)``)
    :meth:`build_model` and :meth:`build_optimizers`; on ``--resume`` :meth:`load_extra`; per
    step :meth:`loss` and :meth:`after_optimizer_step`; on rank 0 at the validation cadence
    :meth:`validate`; at every save :meth:`extra_optim_state`, :meth:`extra_state`,
    :meth:`disc_state`, :meth:`extra_weights` and :meth:`write_meta`.

    Class attributes: ``bar_desc`` (the progress bar's label), ``best_key`` (the ``state.json``
    key of the best validation score) with ``higher_is_better``, ``log_grad_norm`` (log the
    clipped gradient norm as ``grad_norm``) and ``best_without_validation`` (without validation
    data every checkpoint's weights also become ``RUN_DIR/best``).
    """

    bar_desc = "train"
    best_key = "best_ssim"
    higher_is_better = True
    log_grad_norm = True
    best_without_validation = False

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device | str = "cpu",
        bf16: bool = False,
        dist_info: DistInfo | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.bf16 = bool(bf16)
        self.dist = dist_info or DistInfo()
        self.model: nn.Module | None = None

    # ---- build
    def build_data(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """``(training set, validation set or None)``; errors in the data stop here."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The trained model, on ``self.device``; also kept as ``self.model``."""
        raise NotImplementedError

    def build_optimizers(self) -> None:
        """Further optimisers (the model's own is the loop's)."""

    def loader_options(self) -> dict[str, Any]:
        """Keyword arguments of the training ``DataLoader`` besides its batch sampler."""
        return {"num_workers": 0}

    def batch_samples(self, batch) -> int:
        """How many samples ``batch`` holds (for the throughput)."""
        return len(batch)

    # ---- step
    def loss(
        self, forward: nn.Module, batch, step: int, seed: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, logged terms)`` of one batch; ``forward`` is the model or its DDP wrapper,
        ``seed`` (:func:`step_seed`) seeds everything random in the step."""
        raise NotImplementedError

    def after_optimizer_step(self, step: int, logs: dict[str, torch.Tensor]) -> None:
        """What follows the model's optimiser step (may add terms to ``logs``)."""

    def throughput(self, samples: int, steps: int, seconds: float) -> dict[str, float]:
        """The throughput column(s) of ``train.csv`` over a logging interval."""
        return {"samples_per_s": samples / seconds}

    # ---- validation (rank 0)
    def validate(self, val_ds, step: int) -> tuple[dict[str, float], np.ndarray | None]:
        """``(metrics, panel image or None)`` of the current weights on ``val_ds``."""
        raise NotImplementedError

    def score(self, metrics: dict[str, float]) -> float:
        """The number the best checkpoint is selected by."""
        return metrics["ssim"]

    def val_line(self, metrics: dict[str, float]) -> str:
        """The progress bar's validation line (after ``[val] step N: ``)."""
        return ", ".join(f"{k} {v:.5f}" for k, v in metrics.items())

    # ---- checkpoint state
    def extra_optim_state(self) -> dict[str, Any]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Entries of ``state.json`` besides the loop's own."""
        return {}

    def disc_state(self) -> dict[str, torch.Tensor] | None:
        return None

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]] | None:
        """Further weight sets of a checkpoint and of ``best`` (e.g. ``{"ema": ...}``)."""
        return None

    def load_extra(self, path: Path, c: ckpt.Checkpoint) -> None:
        """Restore the stage's own state from checkpoint ``c`` (read from ``path``)."""

    def write_meta(self, folder: Path) -> None:
        """Write the stage's own files into the run directory, a checkpoint or ``best``."""


# ---------------------------------------------------------------------------------------------
# Run directory and resume
# ---------------------------------------------------------------------------------------------


def _prepare_run_dir(out: Path | None, resume: Path | None) -> Path:
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
) -> tuple[Path, DistInfo, torch.device]:
    """The run directory (checked), the process group and device, and torch's thread count."""
    run_dir = _prepare_run_dir(
        None if out is None else Path(out), None if resume is None else Path(resume)
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
    checkpoint)`` for the stage's own state, or ``None`` if there is none yet.

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


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The config a run was started with, plus ``overrides`` (for ``--resume``)."""
    return load_config(run_dir / "config.yaml", overrides)


# ---------------------------------------------------------------------------------------------
# Logging, progress bar, cadence
# ---------------------------------------------------------------------------------------------


def _open_outputs(
    run_dir: Path, cfg: TrainConfig, d: DistInfo, start_step: int, resumed: bool, desc: str
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

        bar = tqdm(
            total=tc.max_steps, initial=start_step, unit="step", desc=desc, dynamic_ncols=True
        )
    return logger, bar


def _after_step(step: int, tc: RunConfig, d: DistInfo, validate, save, fault_step: int) -> None:
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


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def run_training(
    stage_cls: type[Stage],
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    resume_step: int | None = None,
) -> TrainResult:
    """Train the stage ``stage_cls`` with ``cfg`` into ``out`` (or continue the run ``resume``,
    from its latest checkpoint or the kept one of ``resume_step``); see the module docstring.
    Call once per process."""
    t_start = time.perf_counter()
    run_dir, d, device = _start_run(cfg, out, resume)
    tc, o = cfg.train, cfg.optim
    use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    stage = stage_cls(cfg, device, use_bf16, d)

    # ---- data, then model and optimisers (same seed on every rank; DDP also broadcasts rank 0's)
    train_ds, val_ds = stage.build_data()
    torch.manual_seed(tc.seed)
    model = stage.build_model()
    opt = make_optimizer(model.parameters(), cfg)
    sched = _lr_scheduler(opt, cfg)
    stage.build_optimizers()

    # The best validation score so far: the higher (SSIM) or lower (loss) the better.
    worst = -math.inf if stage.higher_is_better else math.inf
    start_step, best, best_step = 0, worst, -1
    loaded = (
        _load_latest(run_dir, model, opt, sched, cfg, resume_step) if resume is not None else None
    )
    if loaded is not None:
        latest, c = loaded
        stage.load_extra(latest, c)
        start_step = c.step
        best = c.state.get(stage.best_key) or worst
        best_step = c.state.get("best_step", -1)
    if start_step >= tc.max_steps and d.is_main:
        print(f"[train] {run_dir}: already at step {start_step} >= max_steps {tc.max_steps}")
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        stage.write_meta(run_dir)
    _barrier(d)

    forward = _wrap_ddp(model, d, device)
    sampler = StepBatchSampler(
        len(train_ds), cfg.data.batch_size, tc.seed, start_step, tc.max_steps, d.rank, d.world_size
    )
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, **stage.loader_options())
    logger, bar = _open_outputs(run_dir, cfg, d, start_step, resume is not None, stage.bar_desc)

    fault_step = int(os.environ.get("KLDM_FAULT_KILL_AT_STEP", "-1"))
    last_val: dict[str, float] = {}
    sums: dict[str, float] = {}
    n_logged, t_log, samples_log = 0, time.perf_counter(), 0
    step = start_step
    model.train()

    def save_best(metrics: dict[str, float]) -> None:
        path = ckpt.save_best(
            run_dir, model.state_dict(), config_to_yaml(cfg), metrics, extra=stage.extra_weights()
        )
        stage.write_meta(path)

    def save(step_done: int) -> None:
        optim_state = {
            "optimizer": opt.state_dict(),
            "scheduler": _scheduler_state(sched),
            **stage.extra_optim_state(),
        }
        state = {
            stage.best_key: None if best == worst else best,
            "best_step": best_step,
            "world_size": d.world_size,
            "last_val": last_val,
            **stage.extra_state(),
            "config": config_to_dict(cfg),
        }
        path = ckpt.save_checkpoint(
            run_dir,
            step_done,
            model.state_dict(),
            optim_state,
            state,
            disc_state=stage.disc_state(),
            keep=tc.keep_checkpoints,
            extra=stage.extra_weights(),
        )
        stage.write_meta(path)
        if val_ds is None and stage.best_without_validation:
            save_best({"step": step_done})

    def validate(step_done: int) -> None:
        nonlocal last_val, best, best_step
        if d.enabled and tc.check_replicas:
            _check_replicas(model, device, step_done)
        if d.is_main:
            last_val, img = stage.validate(val_ds, step_done)
            if img is not None:
                save_png(img, run_dir / "panels" / f"step_{step_done:08d}.png")
            logger.log_val(step_done, last_val, img)
            score = stage.score(last_val)
            better = score > best if stage.higher_is_better else score < best
            # The untrained model (step 0) is a baseline, never "best".
            if step_done > 0 and better:
                best, best_step = score, step_done
                save_best({"step": step_done, **last_val})
            if bar is not None:
                bar.write(f"[val] step {step_done}: {stage.val_line(last_val)}")
        _barrier(d)

    try:
        if val_ds is not None and tc.val_at_start and start_step == 0:
            validate(0)
        for batch in loader:
            loss, logs = stage.loss(forward, batch, step, step_seed(tc.seed, step, d.rank))
            if not torch.isfinite(loss):
                raise InputError("train", f"loss is {loss.item()} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
                if stage.log_grad_norm:
                    logs["grad_norm"] = grad_norm
            opt.step()
            sched.step()
            stage.after_optimizer_step(step, logs)
            step += 1
            samples_log += stage.batch_samples(batch) * d.world_size

            for name, v in logs.items():
                sums[name] = sums.get(name, 0.0) + float(v)
            n_logged += 1
            if step % tc.log_every == 0 or step == tc.max_steps:
                values = {name: v / n_logged for name, v in sums.items()}
                if d.enabled:
                    values = _mean_across_ranks(values, device)
                elapsed = max(time.perf_counter() - t_log, 1e-9)
                values.update(stage.throughput(samples_log, n_logged, elapsed))
                values["lr"] = sched.get_last_lr()[0]
                if logger is not None:
                    logger.log_train(step, values)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{values['loss']:.4g}", sps=f"{samples_log / elapsed:.2f}"
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
        # TrainResult.best_ssim belongs to the stages that select by SSIM (the LDM: by loss).
        best_ssim=best if stage.best_key == "best_ssim" else -math.inf,
        last_val=last_val,
        seconds=time.perf_counter() - t_start,
    )
