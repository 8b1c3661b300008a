"""Held-out evaluation of a trained first stage: encode and decode fully sampled k-space.

``kldm eval-ae RUN_DIR/best DATA_FOLDER`` (library: :func:`evaluate_first_stage`) reconstructs every
slice of every volume from its fully sampled k-space, writes fastMRI submission files, and scores
them with :func:`kspace_ldm.evaluate.evaluate_folders`: the fastMRI protocol (NMSE and PSNR per
volume, SSIM per slice averaged per volume, the volume maximum as data range).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.fastmri import FastMRIFile, list_h5_files, write_reconstruction
from ..errors import InputError
from ..models.loading import load_first_stage  # moved there; re-exported for old imports

__all__ = ["evaluate_first_stage", "load_first_stage"]


@torch.no_grad()
def evaluate_first_stage(
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    device: str = "cpu",
    batch_size: int = 8,
):
    """Reconstruct every volume in ``data`` through the autoencoder and evaluate it.

    Args:
        model_dir: ``RUN_DIR/best`` or a checkpoint directory.
        data: fastMRI-format folder with targets (e.g. a synthetic ``singlecoil_test`` split).
        out_dir: where the submission files (``reconstruction [slices, h, w]``) go.

    Returns:
        The :class:`kspace_ldm.evaluate.EvaluationResult`.
    """
    from ..evaluate import evaluate_folders
    from ..physics.transforms import kspace_to_image
    from ..recon import check_outputs

    out_dir = Path(out_dir)
    files = list_h5_files(data)
    check_outputs(data, files, out_dir, overwrite=False)  # never over the inputs
    model, normalizer, _ = load_first_stage(model_dir, device)
    for path in files:
        with FastMRIFile(path) as f:
            kspace = torch.from_numpy(f.read_volume_kspace())
            target = f.read_volume_target()
        if target is None:
            raise InputError(path, "has no target to evaluate against")
        if kspace.dim() == 3:
            kspace = kspace[:, None]
        crop = tuple(target.shape[-2:])
        recons = []
        for s in range(0, kspace.shape[0], batch_size):
            k = kspace[s : s + batch_size].to(device)
            x, stats = normalizer.normalize(k)
            enc = model.encode(x, sample=False) if model.is_kl else model.encode(x)
            k_hat = normalizer.denormalize(model.decode(enc), stats)
            recons.append(kspace_to_image(k_hat, crop=crop, coil_dim=1).cpu().numpy())
        write_reconstruction(out_dir / path.name, np.concatenate(recons).astype(np.float32))
    return evaluate_folders(out_dir, data)
