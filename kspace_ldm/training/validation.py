"""Validation scoring shared by every training stage: fastMRI's per-slice metrics over a dataset,
batched by k-space shape; the stages differ only in how a batch is reconstructed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..metrics import nmse, psnr, ssim
from .data import FirstStageDataset

__all__ = ["score_slices"]


def score_slices(
    dataset: FirstStageDataset,
    reconstruct: Callable[[list], tuple[np.ndarray, dict]],
    batch_size: int = 4,
    panels: int = 0,
) -> tuple[dict[str, float], list[tuple[np.ndarray, np.ndarray]]]:
    """Score every slice of ``dataset`` with fastMRI's metrics; shared by the validations of
    every stage, which differ only in ``reconstruct``.

    ``reconstruct(items)`` gets up to ``batch_size`` items of one k-space shape and returns
    ``(images [b, R, R] float32, batch)``, ``batch`` the :func:`collate` of the items (targets and
    ``max`` values). PSNR/SSIM use the volume's ``max`` attribute as data range (fastMRI), per
    slice, averaged over slices; NMSE per slice, averaged.

    Returns:
        ``({"psnr", "ssim", "nmse", "slices"}, [(target, recon), ...])`` with up to ``panels``
        image pairs for figures.
    """
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "nmse": []}
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list = []

    def flush() -> None:
        if not pending:
            return
        images, b = reconstruct(list(pending))
        pending.clear()
        targets = b["target"].numpy()
        for i in range(images.shape[0]):
            gt, pred, mx = targets[i][None], images[i][None], float(b["max_value"][i])
            scores["psnr"].append(psnr(gt, pred, mx))
            scores["ssim"].append(ssim(gt, pred, mx))
            scores["nmse"].append(nmse(gt, pred))
            if len(pairs) < panels:
                pairs.append((targets[i], images[i]))

    for i in range(len(dataset)):
        item = dataset[i]
        if pending and (item.kspace.shape != pending[0].kspace.shape or len(pending) >= batch_size):
            flush()
        pending.append(item)
    flush()
    out = {k: float(np.mean(v)) for k, v in scores.items()}
    out["slices"] = len(scores["psnr"])
    return out, pairs
