"""Human-readable summaries and PNG previews of fastMRI-format files (``kldm data inspect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from PIL import Image

from kspace_ldm.data.fastmri import FastMRIFile, _one_line, _open_h5, read_reconstruction
from kspace_ldm.errors import InputError
from kspace_ldm.io import atomic_path
from kspace_ldm.physics.fft import ifft2c

# Gap between the two panels of a preview, pixels.
_GAP = 8


def _describe_datasets(path: Path) -> tuple[list[str], bool, bool]:
    """(one line per dataset/group, has ``kspace``, has ``reconstruction``)."""
    lines: list[str] = []
    with _open_h5(path) as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                lines.append(f"  {name:<20} {list(obj.shape)} {obj.dtype}")
            else:
                lines.append(f"  {name + '/':<20} (group)")

        try:
            f.visititems(visit)
        except (OSError, RuntimeError) as err:
            raise InputError(path, f"not a readable HDF5 file ({_one_line(err)})") from None
        has_kspace = "kspace" in f
        has_recon = "reconstruction" in f
    return lines, has_kspace, has_recon


def _fmt_attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def inspect_file(path: str | Path) -> str:
    """Return a multi-line text summary of a fastMRI volume or submission file.

    Lists every dataset (shape, dtype), the root attributes, the header sizes and paddings, the
    coil layout, and for test-set files the mask: sampled columns, the effective acceleration
    ``W / sampled`` and the nominal ``acceleration`` / ``num_low_frequency``.

    Raises:
        InputError: the file cannot be read or is not a valid fastMRI file.
    """
    path = Path(path)
    datasets, has_kspace, has_recon = _describe_datasets(path)
    out = [f"file: {path}"]
    if not has_kspace and has_recon:
        recon = read_reconstruction(path)
        out += [
            "kind: reconstruction (submission) file",
            "datasets:",
            *datasets,
            f"reconstruction: {recon.shape[0]} slices, max {float(recon.max()):.6g}",
        ]
        return "\n".join(out)

    with FastMRIFile(path) as f:
        coil = f"multi-coil ({f.num_coils} coils)" if f.is_multicoil else "single-coil"
        kind = "test-set file (undersampled, no target)" if f.has_mask else "fully sampled volume"
        if f.has_mask and f.has_target:
            kind = "masked volume with target"
        h = f.header
        out += [
            f"kind: {coil} {kind}",
            f"slices: {f.num_slices}",
            "datasets:",
            *datasets,
            "attrs:",
            *(f"  {k} = {_fmt_attr(v)}" for k, v in sorted(f.attrs.items())),
            f"header{' (inferred: no ismrmrd_header)' if h.inferred else ''}:",
            f"  encoding_size {h.encoding_size}, recon_size {h.recon_size}",
            f"  padding_left {h.padding_left}, padding_right {h.padding_right}",
            f"target: {f.target_key or 'none'}",
        ]
        mask = f.mask
        if mask is not None:
            width = mask.shape[0]
            sampled = int(mask.sum())
            eff = f"{width / sampled:.2f}x" if sampled else "inf (no column sampled)"
            out.append(
                f"mask: {sampled}/{width} columns sampled, effective acceleration {eff}"
                f" (nominal {f.acceleration}, num_low_frequency {f.num_low_frequency})"
            )
    return "\n".join(out)


def _to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (img - lo) / max(hi - lo, 1e-30)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    size = (min(size[0], h), min(size[1], w))
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def preview_png(path: str | Path, out_png: str | Path, slice_idx: int | None = None) -> Path:
    """Write a PNG preview of one slice (middle slice by default), atomically.

    Left panel: the target if present, else the RSS of ``|ifft2c(kspace)|`` centre-cropped to the
    header's recon size; scaled to [0, its max]. Right panel: log-magnitude k-space (RSS over
    coils), scaled between its 1st percentile and maximum. Submission files show the
    reconstruction only.

    Returns:
        ``Path(out_png)``.

    Raises:
        InputError: unreadable/invalid file or ``slice_idx`` out of range.
    """
    path, out_png = Path(path), Path(out_png)
    _, has_kspace, has_recon = _describe_datasets(path)
    panels: list[np.ndarray] = []
    if not has_kspace and has_recon:
        recon = read_reconstruction(path)
        idx = _pick_slice(path, slice_idx, recon.shape[0])
        panels.append(_to_uint8(recon[idx], 0.0, float(recon[idx].max())))
    else:
        with FastMRIFile(path) as f:
            idx = _pick_slice(path, slice_idx, f.num_slices)
            kspace = torch.from_numpy(f.read_kspace(idx))
            target = f.read_target(idx)
            recon = f.header.recon_size
        if target is None:
            coils = ifft2c(kspace).abs()
            image = coils.square().sum(0).sqrt() if kspace.dim() == 3 else coils
            target = _center_crop(image, (recon[0], recon[1])).numpy()
        panels.append(_to_uint8(target, 0.0, float(target.max())))
        kmag = kspace.abs()
        if kmag.dim() == 3:
            kmag = kmag.square().sum(0).sqrt()
        logk = np.log(kmag.numpy().astype(np.float64) + 1e-12)
        # Zero (unsampled) columns would pin the lower end; the 1st percentile of the sampled
        # values keeps the contrast of the acquired data.
        sampled = logk[kmag.numpy() > 0]
        lo = float(np.percentile(sampled, 1)) if sampled.size else 0.0
        panels.append(_to_uint8(logk, lo, float(logk.max())))

    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + _GAP * (len(panels) - 1)
    canvas = np.zeros((height, width), np.uint8)
    x = 0
    for p in panels:
        top = (height - p.shape[0]) // 2
        canvas[top : top + p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + _GAP
    with atomic_path(out_png) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return out_png


def _pick_slice(path: Path, slice_idx: int | None, num_slices: int) -> int:
    if slice_idx is None:
        return num_slices // 2
    if not 0 <= slice_idx < num_slices:
        raise InputError(path, f"slice {slice_idx} out of range (volume has {num_slices} slices)")
    return int(slice_idx)
