"""The second stage: a diffusers ``UNet2DModel`` denoising first-stage latents, its noise schedule,
an EMA of its weights, and loading a trained LDM run for sampling.

Latents are multiplied by one fixed ``scale_factor`` (``1 / std`` of the training latents,
computed once from the extraction statistics and stored with the checkpoint) before diffusion, as
Stable Diffusion does with 0.18215; the reference recomputed it per batch and per GPU during
training and from one masked latent at test time (its ``rescale_latents`` option), so train and
test disagreed.

Latent geometry (one rule, here): the UNet needs latents whose size is a multiple of
:func:`unet_multiple` (2 per down-sampling level), but a first stage's latents of fastMRI k-space
often are not (``configs/ae_kl_4.yaml``: 640 x 368 -> 80 x 46; the UNet of
``configs/ldm_ref.yaml`` needs multiples of 8). :func:`unet_predict` zero-pads the latent to that
multiple (:func:`pad_latent_for_unet`), runs the UNet and removes the padding exactly; training
(loss on the valid region only), the Python sampler and the exported denoiser package (so the C++
sampler) all call it. The alternative, a first stage that pads k-space until its *latent* is
divisible, was rejected: it would tie every autoencoder (and its extracted latents) to the
particular LDM trained on it afterwards, and make the diffusion model spend capacity on latents
of zero k-space; padding at the UNet keeps the first stage and the latents unchanged and the
padded rows never leave the denoiser.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from ..errors import InputError
from ..physics.transforms import PadInfo, pad_to_multiple, unpad

__all__ = [
    "EMA",
    "LatentDiffusion",
    "build_noise_scheduler",
    "build_unet",
    "check_unet_serves",
    "load_ldm",
    "pad_latent_for_unet",
    "unet_multiple",
    "unet_predict",
]

LDM_META = "ldm.json"


def build_unet(cfg, latent_channels: int) -> UNet2DModel:
    """``UNet2DModel`` from an :class:`~kspace_ldm.config.LDMConfig` (in = out = latent channels).

    The reference's configuration is the default of ``LDMConfig``: (128, 256, 512, 512),
    DownBlock2D + 3 AttnDownBlock2D, head dim 8, GroupNorm 32; ``sample_size`` stays None.
    """
    try:
        return UNet2DModel(
            in_channels=latent_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
        )
    except (ValueError, KeyError, AttributeError) as err:
        raise InputError("ldm", f"invalid UNet2DModel configuration ({err})") from None


def unet_multiple(block_out_channels) -> int:
    """Spatial multiple a ``UNet2DModel`` with these levels needs: every down block but the last
    halves the size (``block_out_channels``: the config list, or a UNet whose config has it)."""
    if hasattr(block_out_channels, "config"):
        block_out_channels = block_out_channels.config.block_out_channels
    return 2 ** (len(block_out_channels) - 1)


def pad_latent_for_unet(z: torch.Tensor, multiple: int) -> tuple[torch.Tensor, PadInfo]:
    """Zero-pad latents ``z [B, Cz, h, w]`` to the next multiple of ``multiple`` in ``h`` and
    ``w`` (split as :func:`~kspace_ldm.physics.pad_to_multiple`); undo with ``unpad``."""
    return pad_to_multiple(z, multiple, multiple)


def unet_predict(unet: nn.Module, z: torch.Tensor, t: torch.Tensor, multiple: int) -> torch.Tensor:
    """The UNet's output for latents of any size: ``z [B, Cz, h, w]``, ``t [B]`` long ->
    ``[B, Cz, h, w]`` (the padded border is cut off, so a loss on it sees the valid region only).

    ``unet`` may be wrapped (DDP): ``multiple`` is passed, see :func:`unet_multiple`.
    """
    zp, info = pad_latent_for_unet(z, multiple)
    return unpad(unet(zp, t).sample, info)


def check_unet_serves(cfg, latent_channels: int, size: tuple[int, int], where) -> None:
    """One-line :class:`InputError` naming ``where`` (the config) and the latent size unless the
    UNet of ``cfg`` (an ``LDMConfig``) runs on ``[1, latent_channels, *size]`` latents.

    Runs the padded forward pass on the meta device: shapes only, no memory, ~0.1 s even for the
    reference UNet, so training, export and sampling can check before any real work.
    """
    h, w = (int(v) for v in size)
    m = unet_multiple(cfg.block_out_channels)
    padded = f"{-(-h // m) * m}x{-(-w // m) * m}"
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-size tensors of a broken config: reported below
        unet = build_unet(cfg, latent_channels)
        z = torch.empty(1, latent_channels, h, w)
        t = torch.zeros(1, dtype=torch.long)
        try:
            unet_predict(unet, z, t, m)
        except (RuntimeError, ValueError, IndexError, TypeError, ZeroDivisionError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                where,
                f"the UNet cannot serve {latent_channels}x{h}x{w} latents (padded to {padded}, "
                f"multiple {m}): {first}",
            ) from None


def build_noise_scheduler(cfg) -> DDPMScheduler:
    """The reference's training scheduler: cosine (``squaredcos_cap_v2``) 1000 steps,
    ``fixed_small`` variance, no clipping, ``trailing`` spacing; ``prediction_type`` from cfg."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        variance_type="fixed_small",
        clip_sample=False,
        timestep_spacing="trailing",
        prediction_type=cfg.prediction_type,
    )


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers.

    ``decay_at(n) = min(decay, (1 + n) / (10 + n))`` with warm-up (diffusers' ``EMAModel``
    formula), else ``decay``. The reference used decay 0.9999 without warm-up, which at its short
    synthetic budgets would leave the EMA at the initial weights.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = float(decay), bool(warmup)
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.updates = 0

    def decay_at(self, n: int) -> float:
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.decay_at(self.updates)
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.updates = int(updates)


@dataclass
class LatentDiffusion:
    """A trained LDM ready for sampling.

    Attributes:
        unet: the denoiser (EMA weights when the run has them), in eval mode.
        scheduler_config: kwargs of the training ``DDPMScheduler`` (build samplers from them).
        scale_factor: latents are multiplied by it before diffusion.
        first_stage: path of the autoencoder (``best`` or checkpoint directory).
        norm_ratio: test-time normalisation ratios (see :mod:`kspace_ldm.latents`).
        used_ema: whether ``unet`` holds EMA weights.
    """

    unet: UNet2DModel
    scheduler_config: dict
    scale_factor: float
    first_stage: str
    norm_ratio: dict
    used_ema: bool
    config: object = None

    @property
    def down_factor(self) -> int:
        """Spatial size multiple the UNet needs (2 per down-sampling level)."""
        return unet_multiple(self.unet)


def load_ldm(path: str | Path, device: str = "cpu", use_ema: bool = True) -> LatentDiffusion:
    """Load a trained LDM from a run directory (its ``best``), ``best`` or a checkpoint directory.

    Reads ``model.safetensors`` / ``ema.safetensors``, ``config.yaml`` and ``ldm.json`` (scale
    factor, first stage, normalisation ratios), all stored by the LDM trainer. A relative
    ``first_stage`` in ``ldm.json`` is resolved against the folder holding ``ldm.json`` (bundles
    name theirs ``../first_stage``), not against the working directory. A model inside a
    bundle (:mod:`kspace_ldm.pretrained`) is checked against the bundle's sha256 manifest first.
    """
    from safetensors.torch import load_file

    from ..config import load_config
    from ..pretrained import verify_if_bundled

    path = Path(path)
    if (path / "best" / LDM_META).is_file():
        path = path / "best"
    meta_file = path / LDM_META
    if not meta_file.is_file():
        raise InputError(path, f"not an LDM run, best or checkpoint directory (no {LDM_META})")
    verify_if_bundled(path)
    meta = json.loads(meta_file.read_text())
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        cfg_path = path.parent.parent / "config.yaml"
    cfg = load_config(cfg_path)
    unet = build_unet(cfg.ldm, int(meta["latent_channels"]))
    weights = path / ("ema.safetensors" if use_ema else "model.safetensors")
    used_ema = use_ema and weights.is_file()
    if not weights.is_file():
        weights = path / "model.safetensors"
    try:
        unet.load_state_dict(load_file(str(weights)))
    except (RuntimeError, FileNotFoundError) as err:
        raise InputError(weights, f"cannot load the denoiser ({err})") from None
    first_stage = Path(meta["first_stage"])
    if not first_stage.is_absolute():
        first_stage = (path / first_stage).resolve()
    return LatentDiffusion(
        unet=unet.to(device).eval(),
        scheduler_config=dict(build_noise_scheduler(cfg.ldm).config),
        scale_factor=float(meta["scale_factor"]),
        first_stage=str(first_stage),
        norm_ratio=meta.get("norm_ratio") or {},
        used_ema=used_ema,
        config=cfg,
    )
