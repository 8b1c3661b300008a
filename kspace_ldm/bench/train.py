"""``kldm bench train``: training throughput (samples/s) and peak memory per first-stage config.

Each config is measured in its own subprocess (``python -m kspace_ldm.bench.train``), so the
CPU peak resident memory (``ru_maxrss``) is that config's alone; on CUDA the peak is
``torch.cuda.max_memory_allocated``. A step is the full training step of the trainer: normalise,
forward (bf16 autocast on CUDA), every configured loss term, backward, optimiser step, and the
discriminator step when the config has one (it is measured as if past ``disc_start``). LPIPS is
switched off when its weights are not on disk (the table says so).

Input: smooth random objects transformed to k-space, ``[batch, coils, H, W]``, so the k-space has
a realistic dynamic range; timings do not depend on the values anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from kspace_ldm.tables import markdown_table

__all__ = ["bench_config", "format_table", "run_configs"]


def _kspace(batch: int, coils: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    from ..physics.fft import fft2c

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, coils, h // 8, w // 8, 2, generator=g)
    img = torch.nn.functional.interpolate(
        noise.permute(0, 1, 4, 2, 3).reshape(batch, coils * 2, h // 8, w // 8),
        size=(h, w),
        mode="bilinear",
    ).reshape(batch, coils, 2, h, w)
    return fft2c(torch.complex(img[:, :, 0], img[:, :, 1])).to(device)


def bench_config(
    config: str | Path,
    size: tuple[int, int, int] = (1, 160, 96),
    batch: int = 1,
    steps: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    overrides: tuple[str, ...] = (),
) -> dict:
    """Time ``steps`` training steps of ``config`` (after ``warmup``) on ``size = (coils, H, W)``.

    Returns:
        ``{"config", "family", "params_M", "size", "batch", "step_s", "samples_per_s",
        "peak_mem_MB", "device", "notes"}``.
    """
    from ..config import load_config
    from ..metrics import lpips_status
    from ..models import FirstStageLoss, build_model, build_normalizer

    cfg = load_config(config, overrides)
    notes = []
    loss_cfg = dataclasses.replace(cfg.loss)
    if loss_cfg.lpips_weight > 0 and not lpips_status(loss_cfg.lpips_net)[0]:
        loss_cfg.lpips_weight = 0.0
        notes.append("LPIPS off (no weights)")
    dev = torch.device(device)
    coils, h, w = size
    model = build_model(cfg.model, in_channels=2 * coils).to(dev)
    if loss_cfg.ssim_weight is None:
        loss_cfg.ssim_weight = type(model).default_ssim_weight
    normalizer = build_normalizer(cfg.normalization)
    loss_fn = FirstStageLoss(loss_cfg, normalizer).to(dev)
    disc = loss_fn.discriminator
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.optim.lr) if disc is not None else None
    k = _kspace(batch, coils, h, w, dev)
    crop = (min(h, w), min(h, w))
    use_bf16 = dev.type == "cuda" and cfg.train.precision in ("auto", "bf16")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step() -> None:
        loss, _, imgs = loss_fn.model_loss(model, k, crop, step=10**9, bf16=use_bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if disc is not None:
            d_loss = loss_fn.discriminator_loss(*imgs)
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    times.sort()
    step_s = times[len(times) // 2]
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        dev_name = torch.cuda.get_device_name(dev)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
        dev_name = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "config": Path(config).name,
        "family": cfg.model.family,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "size": f"{2 * coils}x{h}x{w}",
        "batch": batch,
        "step_s": step_s,
        "samples_per_s": batch / step_s,
        "peak_mem_MB": peak,
        "device": dev_name,
        "notes": "; ".join(notes),
    }


def run_configs(
    configs: list[Path],
    size: tuple[int, int, int],
    batch: int,
    steps: int,
    device: str,
    overrides: tuple[str, ...] = (),
    threads: int = 0,
) -> list[dict]:
    """:func:`bench_config` for each config, each in a fresh subprocess."""
    from ..errors import InputError

    rows = []
    for cfg in configs:
        cmd = [
            sys.executable,
            "-m",
            "kspace_ldm.bench.train",
            str(cfg),
            "--size",
            "x".join(map(str, size)),
            "--batch",
            str(batch),
            "--steps",
            str(steps),
            "--device",
            device,
            "--threads",
            str(threads),
        ]
        for o in overrides:
            cmd += ["--set", o]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise InputError(cfg, f"benchmark failed: {last}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`run_configs` rows."""
    header = [
        "config",
        "family",
        "params (M)",
        "input",
        "batch",
        "s/step",
        "samples/s",
        "peak MB",
        "notes",
    ]
    cells = [
        [
            r["config"],
            r["family"],
            f"{r['params_M']:.1f}",
            r["size"],
            r["batch"],
            f"{r['step_s']:.3f}",
            f"{r['samples_per_s']:.2f}",
            f"{r['peak_mem_MB']:.0f}",
            r["notes"],
        ]
        for r in rows
    ]
    return markdown_table(header, cells)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("config")
    ap.add_argument("--size", default="1x160x96")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    size = tuple(int(v) for v in a.size.split("x"))
    print(
        json.dumps(bench_config(a.config, size, a.batch, a.steps, 1, a.device, tuple(a.overrides)))
    )


if __name__ == "__main__":
    _main()
