"""Untrained runs of any configuration, for timing (``kldm bench untrained-run``).

Speed does not depend on the weights, so the reference-size networks (``configs/ae_kl_4.yaml`` +
``configs/ldm_ref.yaml``) can be exported and benchmarked at fastMRI size without training them.
The run has the layout the trainers write (``ae/`` a first-stage ``best``, ``ldm/`` an LDM
``best`` whose ``ldm.json`` names ``../ae``) with randomly initialised weights, scale factor 1 and
normalisation ratios of 1: its reconstructions are meaningless, its timings are not.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import config_to_yaml, load_config
from ..io import atomic_write_text
from ..models import build_model
from ..models.ldm import LDM_META, build_unet

__all__ = ["write_untrained_run"]


def write_untrained_run(
    ae_config: str | Path,
    ldm_config: str | Path,
    out: str | Path,
    coils: int = 1,
    size: tuple[int, int] = (320, 320),
    seed: int = 0,
) -> Path:
    """Write an untrained first stage + LDM under ``out``; returns the LDM directory."""
    torch.manual_seed(seed)
    out = Path(out)
    ae_cfg = load_config(ae_config)
    ae_cfg.model.in_channels = 2 * coils
    ae = build_model(ae_cfg.model)
    (out / "ae").mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in ae.state_dict().items()}, out / "ae" / "model.safetensors"
    )
    atomic_write_text(out / "ae" / "config.yaml", config_to_yaml(ae_cfg))

    ldm_cfg = load_config(ldm_config)
    ldm_cfg.model = ae_cfg.model
    ldm_cfg.normalization = ae_cfg.normalization
    with torch.no_grad():
        z = ae.encode(torch.zeros(1, 2 * coils, *size)).z
    unet = build_unet(ldm_cfg.ldm, z.shape[1])
    (out / "ldm").mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in unet.state_dict().items()}, out / "ldm" / "model.safetensors"
    )
    atomic_write_text(out / "ldm" / "config.yaml", config_to_yaml(ldm_cfg))
    k = 2 * coils if ae_cfg.normalization.mode == "standardize" else 1
    meta = {
        "scale_factor": 1.0,
        "latent_channels": int(z.shape[1]),
        "latent_shape": list(z.shape[1:]),
        "first_stage": "../ae",
        "norm_ratio": {"scale": [1.0] * k, "shift": [0.0] * k if k > 1 else None},
        "untrained": True,
    }
    atomic_write_text(out / "ldm" / LDM_META, json.dumps(meta, indent=2) + "\n")
    return out / "ldm"
