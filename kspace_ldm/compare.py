"""``kldm compare``: every reconstruction method on the same data, masks and metrics.

For each acceleration and method the volumes of ``DATA`` (fastMRI files with targets, e.g. a
``kldm data synth`` test split) are reconstructed by :func:`kspace_ldm.recon.reconstruct` (one
fastMRI mask per volume, seeded by file name, so every method sees the same lines) and evaluated
by :func:`kspace_ldm.evaluate.evaluate_folders`. Written into ``OUT``:

* ``compare.md``: one row per method and acceleration, fastMRI metrics as mean ± std over
  volumes, seconds per slice;
* ``per_volume.csv``: method, acceleration, file, NMSE, PSNR, SSIM;
* ``compare.json``: the summary, the per-volume rows and the settings;
* ``panel.png``: middle slice of the first volume: target and every method per acceleration,
  with the mask and ``|error|`` maps below;
* ``recon/<method>_<R>x/``: the reconstructions (fastMRI submission files).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files, read_reconstruction
from kspace_ldm.errors import InputError
from kspace_ldm.evaluate import evaluate_folders
from kspace_ldm.io import atomic_write_text
from kspace_ldm.recon import SAMPLERS, ReconOptions, reconstruct, volume_mask
from kspace_ldm.tables import markdown_table, write_csv
from kspace_ldm.viz import panel, save_png

__all__ = ["KNOWN_METHODS", "CompareSummary", "run_compare"]

# Every method the comparison knows; one that this build's ``kldm recon`` lacks is refused.
KNOWN_METHODS = ("zero-filled", "cs-wavelet", "cs-tv", "unet", "cgs-ref", "cgs", "cgs-cs")
# fastMRI's pairing of acceleration and centre fraction (paper protocol).
CENTER_FRACTION = {4: 0.08, 8: 0.04}
METRICS = ("nmse", "psnr", "ssim")
_CELL = 160  # displayed pixels per image side in the panel


@dataclass
class CompareSummary:
    out_dir: Path
    markdown: Path
    csv: Path
    json: Path
    panel: Path
    table: str
    doc: dict


def check_methods(methods: list[str], model: str | None, unet_model: str | None) -> None:
    """One-line :class:`InputError` for a method that is unknown or cannot run here."""
    if not methods:
        raise InputError("--methods", "no method given")
    for m in methods:
        if m not in KNOWN_METHODS:
            raise InputError(
                "--methods", f"unknown method {m!r} (known: {', '.join(KNOWN_METHODS)})"
            )
        if m not in SAMPLERS:
            raise InputError(
                "--methods", f"method {m!r} is not available in this build of kldm recon"
            )
        if m == "unet" and unet_model is None:
            raise InputError("--methods", "method 'unet' needs --unet-model RUN")
        if m in ("cgs", "cgs-ref", "cgs-cs") and model is None:
            raise InputError("--methods", f"method {m!r} needs --model RUN")


def _model_for(method: str, model: str | None, unet_model: str | None) -> str | None:
    if method == "unet":
        return unet_model
    if method in ("cgs", "cgs-ref", "cgs-cs"):
        return model
    return None


def run_compare(
    data: str | Path,
    out_dir: str | Path,
    methods: list[str],
    accelerations: list[int],
    model: str | Path | None = None,
    unet_model: str | Path | None = None,
    mask_type: str = "random",
    device: str = "cpu",
    batch_size: int = 8,
    progress: bool = True,
) -> CompareSummary:
    """Reconstruct and evaluate ``data`` with every method at every acceleration.

    Args:
        data: a fastMRI file or folder with targets (``reconstruction_esc`` / ``_rss``).
        methods: names from :data:`KNOWN_METHODS`.
        accelerations: nominal accelerations; centre fraction from :data:`CENTER_FRACTION`
            (0.08 for others).
        model: LDM run for ``cgs`` / ``cgs-ref``; None: the bundled demo model.
        unet_model: U-Net run for ``unet``.
    """
    if model is None:
        from kspace_ldm.pretrained import demo_model

        model = demo_model()[0]
    model = str(model)
    unet_model = None if unet_model is None else str(unet_model)
    check_methods(methods, model, unet_model)
    files = list_h5_files(data)
    target_dir = files[0].parent if Path(data).is_file() else Path(data)
    out = Path(out_dir)
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    recon_dirs: dict[tuple[str, int], Path] = {}
    options: dict[int, ReconOptions] = {}
    for accel in accelerations:
        cf = CENTER_FRACTION.get(int(accel), 0.08)
        for method in methods:
            rdir = out / "recon" / f"{method}_{accel}x"
            opts = ReconOptions(
                sampler=method,
                mask_type=mask_type,
                accelerations=(accel,),
                center_fractions=(cf,),
                model=_model_for(method, model, unet_model),
                device=device,
                batch_size=batch_size,
            )
            options[accel] = opts
            t = time.perf_counter()
            reports = reconstruct(data, rdir, opts, progress=progress)
            wall = time.perf_counter() - t
            slices = sum(r.slices for r in reports)
            result = evaluate_folders(rdir, target_dir)
            names = {f.name for f in files}
            vol_rows = [r for r in result.rows if r.file in names]
            summ = {}
            for k in METRICS:
                v = np.array([getattr(r, k) for r in vol_rows], dtype=np.float64)
                std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
                summ[k] = {"mean": float(v.mean()), "std": std}
            summ["seconds_per_slice"] = sum(r.seconds for r in reports) / max(slices, 1)
            summ["wall_seconds"] = wall
            summ["volumes"] = len(vol_rows)
            summ["effective_acceleration"] = float(
                np.mean([r.effective_acceleration for r in reports])
            )
            summary.setdefault(method, {})[f"{accel}x"] = summ
            for r in vol_rows:
                rows.append(
                    {"method": method, "acceleration": accel, "file": r.file}
                    | {k: float(getattr(r, k)) for k in METRICS}
                )
            recon_dirs[(method, accel)] = rdir

    doc = {
        "data": str(data),
        "files": [f.name for f in files],
        "methods": methods,
        "accelerations": list(accelerations),
        "mask": mask_type,
        "center_fractions": {f"{a}x": CENTER_FRACTION.get(int(a), 0.08) for a in accelerations},
        "model": model if any(m in ("cgs", "cgs-ref", "cgs-cs") for m in methods) else None,
        "unet_model": unet_model,
        "device": device,
        "summary": summary,
        "per_volume": rows,
    }
    table = format_table(doc)
    md = out / "compare.md"
    atomic_write_text(md, table + "\n")
    js = out / "compare.json"
    atomic_write_text(js, json.dumps(doc, indent=2) + "\n")
    csv_path = out / "per_volume.csv"
    write_csv(
        csv_path,
        ["method", "acceleration", "file", *METRICS],
        ([r["method"], r["acceleration"], r["file"], *(repr(r[k]) for k in METRICS)] for r in rows),
    )
    png = _write_panel(out / "panel.png", files[0], methods, accelerations, recon_dirs, options)
    return CompareSummary(out, md, csv_path, js, png, table, doc)


def format_table(doc: dict) -> str:
    """Markdown: one row per method and acceleration (mean ± std over volumes)."""
    n = len(doc["files"])
    lines = [
        f"{n} volumes of `{doc['data']}`, fastMRI {doc['mask']} masks (centre fractions "
        + ", ".join(f"{k} {v}" for k, v in doc["center_fractions"].items())
        + "), metrics per volume then mean ± std over volumes",
        "",
    ]
    rows = []
    for accel in doc["accelerations"]:
        for method in doc["methods"]:
            s = doc["summary"][method][f"{accel}x"]
            rows.append(
                [
                    method,
                    f"{accel}x",
                    f"{s['nmse']['mean']:.4f} ± {s['nmse']['std']:.4f}",
                    f"{s['psnr']['mean']:.2f} ± {s['psnr']['std']:.2f}",
                    f"{s['ssim']['mean']:.4f} ± {s['ssim']['std']:.4f}",
                    f"{s['seconds_per_slice']:.3f}",
                ]
            )
    header = ["method", "R", "NMSE", "PSNR (dB)", "SSIM", "s/slice"]
    return "\n".join([*lines, markdown_table(header, rows)])


def _zoom(image: np.ndarray) -> np.ndarray:
    k = max(1, _CELL // max(image.shape))
    return np.kron(image, np.ones((k, k), dtype=image.dtype))


def _write_panel(path, file, methods, accelerations, recon_dirs, options) -> Path:
    rows, labels, vmaxes = [], [], []
    with FastMRIFile(file) as fh:
        target = fh.read_volume_target()
        mid = target.shape[0] // 2
        tgt, vmax = target[mid], float(target.max())
        for accel in accelerations:
            mask, _ = volume_mask(fh, options[accel])
            mask = np.asarray(mask)
            if mask.ndim == 1:
                mask_image = np.broadcast_to(mask.astype(np.float32), (mask.size, mask.size))
            else:
                mask_image = mask.astype(np.float32)
            top, bottom = [_zoom(tgt)], [_zoom(np.ascontiguousarray(mask_image))]
            top_lab, bot_lab = [f"target {file.stem}"], [f"mask {accel}x"]
            for method in methods:
                rec = read_reconstruction(recon_dirs[(method, accel)] / file.name)[mid]
                err = rec - tgt
                psnr = 20 * np.log10(vmax) - 10 * np.log10(max(float(np.mean(err**2)), 1e-30))
                top.append(_zoom(rec))
                top_lab.append(f"{method} {accel}x: {psnr:.1f} dB (slice)")
                bottom.append(_zoom(np.abs(err)))
                bot_lab.append("|error| x5")
            rows += [top, bottom]
            labels += [top_lab, bot_lab]
            vmaxes += [[vmax] * len(top), [1.0] + [vmax / 5] * (len(bottom) - 1)]
    return save_png(panel(rows, labels, vmax=vmaxes), path)
