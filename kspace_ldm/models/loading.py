"""Loading trained weights for inference: the first stage (beside :func:`~kspace_ldm.models.ldm.
load_ldm`) and the reading side of the checkpoint layout that :mod:`kspace_ldm.training.checkpoint`
writes (layout documented there). Kept under ``models`` so that inference (sampling, recon, export)
never imports the training package; :mod:`kspace_ldm.training` re-exports these names.

Nothing is unpickled: weights are safetensors, and ``optimizer.pt`` is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import InputError

__all__ = [
    "Checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "load_first_stage",
    "load_model_weights",
]

MODEL_FILE = "model.safetensors"
DISC_FILE = "discriminator.safetensors"
OPTIM_FILE = "optimizer.pt"
STATE_FILE = "state.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the CPU)."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor] | None
    optim: dict[str, Any]
    state: dict[str, Any]
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``latest.json`` names, or ``None`` if the run has none yet."""
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (ValueError, KeyError) as err:
        raise InputError(pointer, f"unreadable checkpoint pointer ({err})") from None
    path = pointer.parent / name
    if not (path / STATE_FILE).is_file():
        raise InputError(pointer, f"names {name}, which is missing or incomplete")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory (weights via safetensors, optimiser with weights_only)."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
        model = load_file(str(path / MODEL_FILE))
        disc = load_file(str(path / DISC_FILE)) if (path / DISC_FILE).is_file() else None
        optim = torch.load(path / OPTIM_FILE, map_location="cpu", weights_only=True)
        extra = {
            p.stem: load_file(str(p))
            for p in sorted(path.glob("*.safetensors"))
            if p.name not in (MODEL_FILE, DISC_FILE)
        }
    except FileNotFoundError as err:
        raise InputError(
            path, f"incomplete checkpoint: {Path(err.filename).name} missing"
        ) from None
    except Exception as err:  # a corrupt file: one line naming it
        raise InputError(path, f"cannot read checkpoint ({type(err).__name__}: {err})") from None
    return Checkpoint(path, int(state["step"]), model, disc, optim, state, extra)


def load_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Autoencoder weights from a checkpoint or ``best`` directory (or a .safetensors file)."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(path, f"no {MODEL_FILE} found")
    return load_file(str(file))


def load_first_stage(model_dir: str | Path, device: str = "cpu"):
    """Load ``(model, normalizer, config)`` from a ``best`` or checkpoint directory (its
    ``config.yaml`` or the run's, one level up). A first stage inside a bundle
    (:mod:`kspace_ldm.pretrained`) is checked against the bundle's sha256 manifest first."""
    from ..config import load_config
    from ..pretrained import verify_if_bundled
    from . import build_model, build_normalizer

    model_dir = Path(model_dir)
    verify_if_bundled(model_dir)
    for cfg_path in (model_dir / "config.yaml", model_dir.parent.parent / "config.yaml"):
        if cfg_path.is_file():
            break
    else:
        raise InputError(model_dir, "no config.yaml beside the weights or in the run directory")
    cfg = load_config(cfg_path)
    model = build_model(cfg.model)
    state = load_model_weights(model_dir)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(model_dir, f"weights do not fit the config's model ({err})") from None
    return model.to(device).eval(), build_normalizer(cfg.normalization), cfg
