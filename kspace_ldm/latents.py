"""``kldm extract-latents``: first-stage latents of a fastMRI-format folder, as safetensors shards.

One shard per volume, ``OUT/<partition>/<file stem>.safetensors``, holding (``S`` slices,
``Cz`` latent channels, ``h x w`` the latent size of the padded k-space):

=============  =====================  =========================================================
key            shape                  meaning
=============  =====================  =========================================================
``full``       ``[S, Cz, h, w]``      latent of the fully sampled k-space (posterior mode)
``masked``     ``[S, Cz, h, w]``      latent of the undersampled k-space (analysis only: seeded
                                      4x/0.08 random mask, normalised with the test-time
                                      estimate of :func:`estimate_norm_stats` once a
                                      ``stats.json`` exists, else with the exact statistics)
``scale``      ``[S, K, 1, 1]``       the normaliser's scale of the full k-space (absent: none)
``shift``      ``[S, K, 1, 1]``       its shift (``standardize`` only)
``acs_rms``    ``[S]``                RMS of the calibration columns (available at test time)
=============  =====================  =========================================================

Each shard is written atomically, so an interrupted extraction is resumed by running the same
command again: complete shards are skipped. ``OUT/stats.json`` is recomputed from all shards at
the end: per-channel latent mean/std of the training partition (the LDM's latent scale comes from
it, once, not per batch) and the *normalisation ratios* ``scale / acs_rms`` and
``shift / acs_rms``, the dataset constants with which the sampler turns the calibration-region
RMS of an undersampled scan into an estimate of the full-k-space statistics (the reference used
the statistics of the undersampled k-space itself, which the autoencoder never saw).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from .data.fastmri import FastMRIFile, list_h5_files
from .data.masks import apply_mask, create_mask, seed_from_filename
from .errors import InputError
from .io import atomic_path, atomic_write_text
from .models.kspace_norm import KspaceNormalizer, NormStats

__all__ = [
    "ExtractReport",
    "acs_rms",
    "estimate_norm_stats",
    "extract_latents",
    "latent_statistics",
    "load_latent_stats",
    "normalize_with",
]

STATS_FILE = "stats.json"


def acs_rms(
    kspace: torch.Tensor, normalizer: KspaceNormalizer, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """RMS magnitude of the calibration columns of complex ``[B, C, H, W]`` k-space -> ``[B]``.

    The columns are :meth:`KspaceNormalizer.acs_columns` (``acs_fraction * W`` around ``W // 2``,
    inside every fastMRI mask's fully sampled centre for centre fractions >= ``acs_fraction``).
    With a ``mask`` (bool/0-1, broadcastable to ``[B, 1, H, W]``: ``[W]``, ``[H, W]``,
    ``[B, 1, 1, W]``) only measured samples count, so the statistic of an undersampled scan equals
    that of its fully sampled version whenever the calibration block is measured.
    """
    cols = normalizer.acs_columns(kspace.shape[-1])
    power = kspace[..., cols].abs().square()  # [B, C, H, n]
    if mask is None:
        return power.mean(dim=(1, 2, 3)).sqrt()
    m = torch.as_tensor(mask, device=kspace.device)
    m = m.reshape((1,) * (4 - m.dim()) + tuple(m.shape)) if m.dim() < 4 else m
    m = m[..., cols].to(power.dtype).expand(power.shape[0], 1, power.shape[2], power.shape[3])
    count = m.sum(dim=(1, 2, 3))
    if bool((count == 0).any()):
        raise InputError("mask", "no calibration sample is measured; cannot normalise the scan")
    return ((power * m).sum(dim=(1, 2, 3)) / (count * power.shape[1])).sqrt()


def estimate_norm_stats(
    masked: torch.Tensor,
    mask: torch.Tensor,
    normalizer: KspaceNormalizer,
    ratios: dict,
) -> NormStats:
    """Test-time estimate of the full-k-space normalisation statistics of undersampled k-space.

    ``scale = ratios["scale"] * acs_rms(masked)``, ``shift = ratios["shift"] * acs_rms(masked)``:
    the calibration RMS is exact for the undersampled scan, the ratios are medians over the
    training set (``stats.json``). For the ``acs`` mode this is the normaliser's own statistic.

    Args:
        masked: complex ``[B, C, H, W]`` undersampled k-space.
        mask: bool column mask broadcastable to ``[B, 1, 1, W]``.
        ratios: ``{"scale": [K], "shift": [K] or None}``, ``K = 2C`` (standardize) or 1.

    Returns:
        :class:`NormStats` with ``[B, K, 1, 1]`` tensors (``None`` where the mode has none).
    """
    if normalizer.mode == "none":
        return NormStats(None, None)
    a = acs_rms(masked, normalizer, mask).to(torch.float32)[:, None, None, None]
    if normalizer.mode == "acs":
        return NormStats(None, a.clamp_min(normalizer.eps))
    scale_r = torch.tensor(ratios["scale"], dtype=torch.float32, device=a.device)
    if normalizer.mode == "standardize" and scale_r.numel() != 2 * masked.shape[1]:
        raise InputError(
            "norm_ratio", f"{scale_r.numel()} channel ratios for {masked.shape[1]} coil(s)"
        )
    scale = (a * scale_r[None, :, None, None]).clamp_min(normalizer.eps)
    shift = None
    if ratios.get("shift") is not None:
        shift_r = torch.tensor(ratios["shift"], dtype=torch.float32, device=a.device)
        shift = a * shift_r[None, :, None, None]
    return NormStats(shift, scale)


@dataclass
class ExtractReport:
    """What :func:`extract_latents` did."""

    out_dir: Path
    written: int
    skipped: int
    slices: int
    stats: dict


def _analysis_mask(f: FastMRIFile, device) -> torch.Tensor:
    """The seeded 4x/0.08 random mask of a volume (``[1, 1, 1, W]`` bool) for ``masked``."""
    func = create_mask("random", (0.08,), (4,))
    res = func(f.kspace_shape, seed=seed_from_filename(f.path.name))
    hdr = f.header
    k = torch.zeros(f.kspace_shape[-2:], dtype=torch.complex64)
    _, used = apply_mask(k, res.mask, (hdr.padding_left, hdr.padding_right), source=f.path)
    return used.to(device).reshape(1, 1, 1, -1).bool()


@torch.no_grad()
def _encode(model, x: torch.Tensor) -> torch.Tensor:
    enc = model.encode(x, sample=False) if model.is_kl else model.encode(x)
    return enc.z.float()


@torch.no_grad()
def extract_latents(
    ckpt: str | Path,
    data: str | Path,
    out: str | Path,
    partition: str = "train",
    device: str = "cpu",
    batch_size: int = 8,
    progress: bool = True,
) -> ExtractReport:
    """Encode every volume in ``data`` with the first stage ``ckpt`` into ``out/partition``.

    Resumable (complete shards are skipped); recomputes ``out/stats.json`` at the end.
    """
    from .models.loading import load_first_stage

    model, normalizer, _ = load_first_stage(ckpt, device)
    out = Path(out)
    dest = out / partition
    dest.mkdir(parents=True, exist_ok=True)
    files = list_h5_files(data)
    written = skipped = slices = 0
    ratios = None
    if (out / STATS_FILE).is_file():
        ratios = json.loads((out / STATS_FILE).read_text()).get("norm_ratio")
    meta = {"first_stage": str(Path(ckpt).resolve()), "norm_mode": normalizer.mode}
    for path in tqdm(files, desc=f"extract {partition}", unit="vol", disable=not progress):
        shard = dest / f"{path.stem}.safetensors"
        if shard.is_file():
            skipped += 1
            continue
        with FastMRIFile(path) as f:
            kspace = torch.from_numpy(f.read_volume_kspace())
            mask = _analysis_mask(f, device)
        if kspace.dim() == 3:
            kspace = kspace[:, None]
        if 2 * kspace.shape[1] != model.in_channels:
            raise InputError(
                path,
                f"{kspace.shape[1]} coil(s) but the first stage {ckpt} takes "
                f"{model.in_channels // 2} (train it on data with this coil count)",
            )
        fulls, maskeds, scales, shifts, acs = [], [], [], [], []
        for s in range(0, kspace.shape[0], batch_size):
            k = kspace[s : s + batch_size].to(device)
            x, stats = normalizer.normalize(k)
            fulls.append(_encode(model, x).cpu())
            a = acs_rms(k, normalizer)
            acs.append(a.float().cpu())
            if stats.scale is not None:
                scales.append(stats.scale.float().cpu())
            if stats.shift is not None:
                shifts.append(stats.shift.float().cpu())
            km = k * mask
            if ratios is not None or normalizer.mode in ("acs", "none"):
                est = estimate_norm_stats(km, mask, normalizer, ratios or {})
            else:  # first partition, ratios not known yet: the exact statistics
                est = stats
            xm_in = normalize_with(normalizer, km, est)
            maskeds.append(_encode(model, xm_in).cpu())
        tensors = {
            "full": torch.cat(fulls),
            "masked": torch.cat(maskeds),
            "acs_rms": torch.cat(acs),
        }
        if scales:
            tensors["scale"] = torch.cat(scales)
        if shifts:
            tensors["shift"] = torch.cat(shifts)
        with atomic_path(shard) as tmp:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()},
                str(tmp),
                # the k-space size: 640 x 372 and 640 x 376 both give 80 x 47 latents at f = 8
                # (the first stage pads), so export needs it to rebuild the exact geometry
                metadata={
                    **meta,
                    "source": path.name,
                    "kspace_size": f"{kspace.shape[-2]}x{kspace.shape[-1]}",
                },
            )
        written += 1
        slices += kspace.shape[0]
    stats = latent_statistics(out)
    return ExtractReport(dest, written, skipped, slices, stats)


def normalize_with(normalizer: KspaceNormalizer, k: torch.Tensor, stats: NormStats) -> torch.Tensor:
    """:meth:`KspaceNormalizer.normalize` with given statistics: complex ``[B, C, H, W]`` ->
    real ``[B, 2C, H, W]`` (the spectrum weighting / companding is applied too). The sampler uses
    it because an undersampled scan's own statistics are not those the autoencoder saw."""
    from .models.kspace_norm import channels_with  # kldm::kspace_normalize, given statistics

    x = channels_with(k, stats)
    if normalizer.weighting == "radial":
        x = x * normalizer.weight(*x.shape[-2:], device=x.device, dtype=x.dtype)
    elif normalizer.weighting == "log":
        x = torch.sign(x) * torch.log1p(x.abs() / normalizer.log_c)
    return x


def _read_shard(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in keys if k in f.keys()}


def latent_statistics(out: str | Path) -> dict:
    """Compute and write ``out/stats.json`` from the shards (training partition preferred).

    Returns the mapping: ``latent`` (per-channel mean/std, global std, slices, shape of the
    training latents) and ``norm_ratio`` (median ``scale/acs_rms`` and ``shift/acs_rms`` per
    statistic channel, and the std of ``log(scale/acs_rms)``: the spread of the estimate).
    """
    out = Path(out)
    part = out / "train"
    if not part.is_dir() or not any(part.glob("*.safetensors")):
        parts = sorted(p for p in out.iterdir() if p.is_dir() and any(p.glob("*.safetensors")))
        if not parts:
            raise InputError(out, "no latent shards found")
        part = parts[0]
    zs, scales, shifts, acs = [], [], [], []
    meta = {}
    for shard in sorted(part.glob("*.safetensors")):
        t = _read_shard(shard, ("full", "scale", "shift", "acs_rms"))
        zs.append(t["full"])
        acs.append(t["acs_rms"])
        if "scale" in t:
            scales.append(t["scale"])
        if "shift" in t:
            shifts.append(t["shift"])
        if not meta:
            with safe_open(str(shard), framework="pt") as f:
                meta = dict(f.metadata() or {})
    shapes = {tuple(z.shape[1:]) for z in zs}
    z = torch.cat([z.flatten(2) for z in zs], dim=2) if len(shapes) > 1 else torch.cat(zs)
    z = z.double()
    dims = (0, 2) if z.dim() == 3 else (0, 2, 3)
    a = torch.cat(acs).double().clamp_min(1e-30)
    ratio: dict = {"scale": None, "shift": None, "scale_log_std": None}
    if scales:
        r = torch.cat(scales).double().flatten(1) / a[:, None]
        ratio["scale"] = r.median(dim=0).values.tolist()
        ratio["scale_log_std"] = r.log().std(dim=0).tolist()
    if shifts:
        r = torch.cat(shifts).double().flatten(1) / a[:, None]
        ratio["shift"] = r.median(dim=0).values.tolist()
    stats = {
        "partition": part.name,
        "first_stage": meta.get("first_stage"),
        "norm_mode": meta.get("norm_mode"),
        "kspace_size": (
            [int(v) for v in meta["kspace_size"].split("x")] if "kspace_size" in meta else None
        ),
        "latent": {
            "slices": int(sum(zz.shape[0] for zz in zs)),
            "shape": list(zs[0].shape[1:]),
            "mean": z.mean(dim=dims).tolist(),
            "std": z.std(dim=dims).tolist(),
            "global_std": float(z.std()),
        },
        "norm_ratio": ratio,
    }
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=2) + "\n")
    return stats


def load_latent_stats(latent_root: str | Path) -> dict:
    """Read ``stats.json`` of an extraction (the folder holding ``train/``, or ``train/``)."""
    p = Path(latent_root)
    for cand in (p / STATS_FILE, p.parent / STATS_FILE):
        if cand.is_file():
            return json.loads(cand.read_text())
    raise InputError(p, f"no {STATS_FILE} (run kldm extract-latents first)")


def load_latents(folder: str | Path) -> tuple[torch.Tensor, list[str]]:
    """All ``full`` latents of a partition folder: ``([N, Cz, h, w], [source names])``."""
    folder = Path(folder)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise InputError(folder, "no latent shards (*.safetensors)")
    zs, names = [], []
    for s in shards:
        z = _read_shard(s, ("full",))["full"]
        zs.append(z)
        names += [f"{s.stem}:{i}" for i in range(z.shape[0])]
    shapes = {tuple(z.shape[1:]) for z in zs}
    if len(shapes) > 1:
        raise InputError(folder, f"latents of different sizes {sorted(shapes)} cannot be batched")
    return torch.cat(zs), names


__all__ += ["load_latents"]
