"""Checkpoints: safetensors weights + optimiser/scheduler state + config + step, written atomically.

Layout of a run directory::

    RUN_DIR/config.yaml                          the config the run was started with
    RUN_DIR/checkpoints/step_00001000/           one checkpoint (the newest ``keep`` are kept)
        model.safetensors                        the trained network's weights
        discriminator.safetensors                PatchGAN weights (GAN runs only)
        ema.safetensors                          EMA weights (LDM runs; any ``extra`` set)
        optimizer.pt                             optimiser(s) + LR scheduler state (tensors and
                                                 plain containers only; read with weights_only)
        state.json                               step, best validation SSIM, config, metrics
    RUN_DIR/checkpoints/latest.json              {"step": N, "dir": "step_0000000N"}
    RUN_DIR/best/                                model.safetensors + config.yaml + metrics.json
                                                 of the best validation SSIM so far

A checkpoint directory is filled under a temporary name and renamed into place, then
``latest.json`` is replaced atomically, so a run killed at any moment leaves the previous
checkpoint intact and ``latest.json`` pointing at a complete one. Nothing is ever unpickled:
weights are safetensors and ``optimizer.pt`` is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import InputError
from ..io import atomic_path, atomic_write_text

# The reading side lives in kspace_ldm.models.loading (inference must not import training); these
# names stay importable from here.
from ..models.loading import (
    DISC_FILE,
    MODEL_FILE,
    OPTIM_FILE,
    STATE_FILE,
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
)

__all__ = [
    "Checkpoint",
    "checkpoint_of_step",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "save_best",
    "save_checkpoint",
]


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    # safetensors refuses shared or non-contiguous storage; a detached contiguous copy is exact.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    state: dict[str, Any],
    disc_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically, point ``latest.json`` at it, prune old ones.

    ``extra``: further weight sets, each written as ``<name>.safetensors`` (e.g. ``ema``).

    Returns:
        The checkpoint directory.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".{name}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _save_tensors(model_state, tmp / MODEL_FILE)
        if disc_state is not None:
            _save_tensors(disc_state, tmp / DISC_FILE)
        for name_x, tensors in (extra or {}).items():
            _save_tensors(tensors, tmp / f"{name_x}.safetensors")
        with atomic_path(tmp / OPTIM_FILE) as p:
            torch.save(optim_state, p)
        atomic_write_text(tmp / STATE_FILE, json.dumps({"step": step, **state}, indent=2))
        if final.exists():
            # A checkpoint of this step left by an earlier (killed) attempt: replace it.
            old = ckpt_root / f".{name}.{os.getpid()}.old"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except InputError as err:  # e.g. a full disk: name the checkpoint, not its temporary name
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(final, err.problem) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_root / "latest.json", json.dumps({"step": step, "dir": name}) + "\n")
    _prune(ckpt_root, keep, protect=name)
    return final


def _prune(ckpt_root: Path, keep: int, protect: str) -> None:
    dirs = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for p in dirs[:-keep] if keep > 0 else []:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoint directories of a run (``state.json`` present), oldest first."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())


def checkpoint_of_step(run_dir: str | Path, step: int) -> Path:
    """The kept checkpoint of ``step`` (``--resume-from``); one-line error listing the kept
    steps otherwise."""
    path = Path(run_dir) / "checkpoints" / f"step_{step:08d}"
    if not (path / STATE_FILE).is_file():
        kept = [int(p.name.split("_")[1]) for p in list_checkpoints(run_dir)]
        raise InputError(
            path, f"no complete checkpoint of step {step} (kept steps: {kept or 'none'})"
        )
    return path


def save_best(
    run_dir: Path,
    model_state: dict[str, torch.Tensor],
    config_yaml: str,
    metrics: dict,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Replace ``RUN_DIR/best`` (weights, ``extra`` weight sets, config, metrics), each file
    atomically."""
    best = Path(run_dir) / "best"
    best.mkdir(parents=True, exist_ok=True)
    _save_tensors(model_state, best / MODEL_FILE)
    for name, tensors in (extra or {}).items():
        _save_tensors(tensors, best / f"{name}.safetensors")
    atomic_write_text(best / "config.yaml", config_yaml)
    atomic_write_text(best / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return best
