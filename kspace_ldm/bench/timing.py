"""Timing helpers: medians over repeated runs after warm-up, with device synchronisation."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    """Wait for queued kernels on ``device`` (no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(
    fn: Callable[[], object], device: str, repeats: int = 15, warmup: int = 3
) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: str, nbytes: int = 256 * 1024 * 1024, repeats: int = 10) -> float:
    """The machine's copy bandwidth in GB/s: a large tensor copy, bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), device, repeats=repeats, warmup=2)
    return 2 * nbytes / t / 1e9
