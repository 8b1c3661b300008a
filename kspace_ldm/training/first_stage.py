"""The first stage (``kldm train --stage ae``): the k-space autoencoder's part of the training loop.

The loop itself (distributed set-up, optimiser, run directory, checkpoints and resume, logging,
progress bar) is :func:`kspace_ldm.training.loop.run_training`; :class:`FirstStage` adds the data
(:class:`~kspace_ldm.training.data.FirstStageDataset`: fully sampled k-space + target), the model
and loss, the discriminator step of GAN runs and the validation. The U-Net baseline
(:class:`~kspace_ldm.training.unet_stage.UNetStage`) is a :class:`FirstStage` with its own model,
loss and reconstruction.

Per step: the global torch RNG (posterior sampling, dropout) is seeded from ``(seed, step, rank)``
-> normalise k-space -> forward (bf16 autocast on CUDA) -> loss (images in float32); after the
model's optimiser step, GAN runs (after ``disc_start``) take a discriminator step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import InputError
from ..models import FirstStageLoss, FirstStageModel, build_model, build_normalizer
from ..models.kspace_norm import KspaceNormalizer
from ..viz import panel
from . import checkpoint as ckpt
from .data import FirstStageDataset, check_same_coils, collate
from .loop import Stage, average_grads_and_buffers, make_optimizer
from .validation import score_slices

__all__ = ["FirstStage", "evaluate_model"]


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


def _resolved_loss_cfg(cfg: TrainConfig, model: FirstStageModel):
    loss_cfg = dataclasses.replace(cfg.loss)
    if loss_cfg.ssim_weight is None:
        loss_cfg.ssim_weight = type(model).default_ssim_weight
    return loss_cfg


class FirstStage(Stage):
    """The autoencoder stage (``stage: ae``) of :func:`~kspace_ldm.training.loop.run_training`:
    fastMRI-format slices, the first-stage model with its loss (and PatchGAN discriminator in GAN
    runs), validation by PSNR/SSIM/NMSE of the decoded images; the best SSIM selects ``best``."""

    panel_label = "decoded"  # the reconstruction's column in the validation panels

    def __init__(self, cfg: TrainConfig, device="cpu", bf16: bool = False, dist_info=None):
        super().__init__(cfg, device, bf16, dist_info)
        self.disc: nn.Module | None = None
        self.disc_opt: torch.optim.Optimizer | None = None

    # ---- build
    def build_data(self) -> tuple[FirstStageDataset, FirstStageDataset | None]:
        cfg, tc = self.cfg, self.cfg.train
        self.train_ds = FirstStageDataset(
            cfg.data.train,
            challenge=cfg.data.challenge,
            crop=cfg.data.crop,
            flip=cfg.data.flip,
            seed=tc.seed,
            max_slices=cfg.data.max_train_slices,
            train=True,
            coil_phase=cfg.data.coil_phase,
        )
        self.val_ds = None
        if cfg.data.val:
            self.val_ds = FirstStageDataset(
                cfg.data.val,
                challenge=cfg.data.challenge,
                max_slices=cfg.data.max_val_slices,
                train=False,
            )
        # one coil count, or an error naming the file
        self.coils = check_same_coils(self.train_ds, self.val_ds)
        return self.train_ds, self.val_ds

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        if cfg.model.in_channels and cfg.model.in_channels != 2 * self.coils:
            raise InputError(
                "model.in_channels",
                f"{cfg.model.in_channels} does not match the data's {self.coils} coil(s) "
                f"(= {2 * self.coils})",
            )
        cfg.model.in_channels = 2 * self.coils
        self.model = build_model(cfg.model).to(self.device)
        self.normalizer = build_normalizer(cfg.normalization)
        self.loss_cfg = _resolved_loss_cfg(cfg, self.model)
        self.loss_fn = FirstStageLoss(self.loss_cfg, self.normalizer).to(self.device)
        self.disc = self.loss_fn.discriminator
        return self.model

    def build_optimizers(self) -> None:
        if self.disc is not None:
            self.disc_opt = make_optimizer(self.disc.parameters(), self.cfg, self.loss_cfg.disc_lr)

    def loader_options(self) -> dict:
        return {
            "num_workers": self.cfg.data.num_workers,
            "collate_fn": collate,
            "pin_memory": self.device.type == "cuda",
            "persistent_workers": False,
        }

    def batch_samples(self, batch: dict) -> int:
        return batch["kspace"].shape[0]

    # ---- step
    def loss(self, forward, batch: dict, step: int, seed: int):
        # Per-step seeding: posterior samples / dropout depend only on (seed, step, rank).
        torch.manual_seed(seed)
        k = batch["kspace"].to(self.device, non_blocking=True)
        loss, logs, self._images = self.loss_fn.model_loss(
            self.model, k, batch["crop"], step, forward=forward, bf16=self.bf16
        )
        return loss, logs

    def after_optimizer_step(self, step: int, logs: dict) -> None:
        if self.disc is None or step < self.loss_cfg.disc_start:
            return
        d_loss = self.loss_fn.discriminator_loss(*self._images)
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        if self.dist.enabled:
            average_grads_and_buffers(self.disc, self.dist.world_size)
        self.disc_opt.step()
        logs["d_loss"] = d_loss.detach()

    # ---- validation
    def evaluate(
        self, model: nn.Module, dataset: FirstStageDataset, batch_size: int = 4, panels: int = 0
    ) -> tuple[dict[str, float], list[tuple[np.ndarray, np.ndarray]]]:
        """Score ``model`` on every slice of ``dataset`` (:func:`evaluate_model`)."""
        return evaluate_model(model, self.normalizer, dataset, self.device, batch_size, panels)

    def validate(self, val_ds: FirstStageDataset, step: int):
        metrics, pairs = self.evaluate(
            self.model, val_ds, self.cfg.data.val_batch_size, self.cfg.train.val_panels
        )
        return metrics, _panel_image(pairs, self.panel_label) if pairs else None

    def val_line(self, m: dict[str, float]) -> str:
        return f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, NMSE {m['nmse']:.4g}"

    # ---- checkpoint state
    def extra_optim_state(self) -> dict:
        return {} if self.disc_opt is None else {"disc_optimizer": self.disc_opt.state_dict()}

    def disc_state(self):
        return None if self.disc is None else self.disc.state_dict()

    def load_extra(self, path, c: ckpt.Checkpoint) -> None:
        if self.disc is None:
            return
        if c.discriminator is None:
            raise InputError(path, "has no discriminator weights but the config uses one")
        self.disc.load_state_dict(c.discriminator)
        self.disc_opt.load_state_dict(c.optim["disc_optimizer"])
