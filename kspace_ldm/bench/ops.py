"""``kldm bench ops``: each fused ``kldm`` op against its eager PyTorch twin at fastMRI sizes.

Sizes: single-coil k-space ``[8, 1, 640, 368]``, multi-coil ``[4, 15, 640, 368]`` (complex64),
latents ``[8, 16, 80, 48]`` (float32) for the scheduler steps. Bytes per op = every input read once
plus every output written once; ``fraction_of_copy`` compares the fused op's effective bandwidth
with a plain tensor copy measured in the same run.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kspace_ldm.bench.timing import copy_bandwidth, median_seconds
from kspace_ldm.tables import markdown_table

SINGLE_COIL = (8, 1, 640, 368)
MULTI_COIL = (4, 15, 640, 368)
LATENTS = (8, 16, 80, 48)


@dataclass(frozen=True)
class OpCase:
    """One benchmark: inputs, the fused op, its eager twin, and the bytes it must move."""

    name: str
    shape: tuple[int, ...]
    make_inputs: Callable[[str, torch.Generator], tuple]
    fused: Callable[..., object]
    eager: Callable[..., object]
    nbytes: Callable[[tuple], int]
    eager_label: str = "eager twin"


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _complex(shape, device, gen):
    return torch.randn(shape, dtype=torch.complex64, generator=gen).to(device)


def _dc_inputs(device, gen):
    x = _complex(SINGLE_COIL, device, gen)
    y = _complex(SINGLE_COIL, device, gen)
    mask = (torch.rand(SINGLE_COIL[-1], generator=gen) > 0.7).to(device)
    return x, y, mask


def _latents(device, gen):
    x = torch.randn(LATENTS, generator=gen).to(device)
    eps = torch.randn(LATENTS, generator=gen).to(device)
    return eps, x


def _scheduler_cases() -> list[OpCase]:
    """DDPM/DDIM steps: our fused schedulers against diffusers' own ``step`` (same config).

    Both draw their noise from a seeded generator the same way (diffusers' randn_tensor), so the
    comparison is like for like: the reference scheduler config (1000 steps, cosine schedule,
    epsilon prediction, clipping as diffusers' default).
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    from kspace_ldm.sampling.schedulers import FusedDDIMScheduler, FusedDDPMScheduler

    cfg = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    ddpm, fddpm = DDPMScheduler(**cfg), FusedDDPMScheduler(**cfg)
    ddim, fddim = DDIMScheduler(**cfg), FusedDDIMScheduler(**cfg)
    ddim.set_timesteps(50)
    fddim.set_timesteps(50)
    t_ddpm, t_ddim = 500, int(ddim.timesteps[25])

    def step(sched, t, **kw):
        def fn(eps, x):
            g = torch.Generator(device=x.device).manual_seed(0)
            return sched.step(eps, t, x, generator=g, **kw).prev_sample

        return fn

    latent_bytes = lambda a: 3 * _nbytes(a[0]) + _nbytes(a[0])  # noqa: E731  eps, x, noise in; x out
    return [
        OpCase("ddpm_step", LATENTS, _latents, step(fddpm, t_ddpm), step(ddpm, t_ddpm),
               latent_bytes, eager_label="diffusers DDPMScheduler.step"),
        OpCase("ddim_step", LATENTS, _latents, step(fddim, t_ddim), step(ddim, t_ddim),
               lambda a: 3 * _nbytes(a[0]), eager_label="diffusers DDIMScheduler.step (eta 0)"),
    ]  # fmt: skip


def cases() -> list[OpCase]:
    """Every benchmarked op (the fused ops of :mod:`kspace_ldm.ops`)."""
    import kspace_ldm.ops as ops
    from kspace_ldm.ops import _reference as ref

    def kspace(shape):
        return lambda d, g: (_complex(shape, d, g),)

    return [
        OpCase(
            "dc_project",
            SINGLE_COIL,
            _dc_inputs,
            lambda x, y, m: ops.dc_project(x, y, m),
            lambda x, y, m: torch.where(m, y, x),
            lambda a: _nbytes(*a) + _nbytes(a[0]),
            eager_label="torch.where",
        ),
        OpCase(
            "dc_project_soft",
            SINGLE_COIL,
            lambda d, g: (*_dc_inputs(d, g)[:2], torch.rand(SINGLE_COIL[-1], generator=g).to(d)),
            lambda x, y, m: ops.dc_project(x, y, m, 0.5),
            lambda x, y, m: ref.dc_project(x, y, m, 0.5),
            lambda a: _nbytes(*a) + _nbytes(a[0]),
        ),
        OpCase(
            "dc_residual",
            SINGLE_COIL,
            _dc_inputs,
            lambda x, y, m: ops.dc_residual(x, y, m),
            ref.dc_residual,
            # inputs read once, residual written once (the [B] norms are negligible)
            lambda a: _nbytes(*a) + _nbytes(a[0]),
        ),
        OpCase(
            "kspace_normalize",
            SINGLE_COIL,
            kspace(SINGLE_COIL),
            ops.kspace_normalize,
            ref.kspace_normalize,
            lambda a: 2 * _nbytes(a[0]),
        ),
        OpCase(
            "kspace_denormalize",
            SINGLE_COIL,
            lambda d, g: ops.kspace_normalize(_complex(SINGLE_COIL, d, g)),
            ops.kspace_denormalize,
            ref.kspace_denormalize,
            lambda a: 2 * _nbytes(a[0]),
        ),
        *_fft_cases(ops, ref),
        *_scheduler_cases(),
    ]


def _fft_cases(ops, ref) -> list[OpCase]:
    """Centred FFTs (against the shift-based twin, and against a plain unshifted FFT, the bound of
    the fftmod design) and the coil ops at multi-coil size."""

    def kspace(shape):
        return lambda d, g: (_complex(shape, d, g),)

    def sense_inputs(d, g):
        B, _, H, W = MULTI_COIL
        image = _complex((B, 1, H, W), d, g)
        maps = _complex(MULTI_COIL, d, g)
        mask = (torch.rand(W, generator=g) > 0.7).to(d)
        return image, maps, mask

    def adjoint_inputs(d, g):
        _, maps, mask = sense_inputs(d, g)
        return _complex(MULTI_COIL, d, g), maps, mask

    plain = lambda x: torch.fft.fft2(x, norm="ortho")  # noqa: E731
    io = lambda a: 2 * _nbytes(a[0])  # noqa: E731
    return [
        OpCase("fft2c", SINGLE_COIL, kspace(SINGLE_COIL), ops.fft2c, ref.fft2c, io,
               eager_label="shift-based twin"),
        OpCase("fft2c_vs_plain_fft2", SINGLE_COIL, kspace(SINGLE_COIL), ops.fft2c, plain, io,
               eager_label="plain torch.fft.fft2 (bound: >= 0.8x)"),
        OpCase("ifft2c", SINGLE_COIL, kspace(SINGLE_COIL), ops.ifft2c, ref.ifft2c, io,
               eager_label="shift-based twin"),
        OpCase("sense_forward", MULTI_COIL, sense_inputs, ops.sense_forward, ref.sense_forward,
               lambda a: _nbytes(*a) + _nbytes(a[1])),
        OpCase("sense_adjoint", MULTI_COIL, adjoint_inputs, ops.sense_adjoint, ref.sense_adjoint,
               lambda a: _nbytes(*a) + _nbytes(a[0]) // MULTI_COIL[1]),
        OpCase("rss", MULTI_COIL, kspace(MULTI_COIL), ops.rss, ref.rss,
               lambda a: _nbytes(a[0]) + _nbytes(a[0]) // (2 * MULTI_COIL[1])),
    ]  # fmt: skip


def run(
    device: str = "cpu", repeats: int = 15, warmup: int = 3, only: list[str] | None = None
) -> dict:
    """Time every case; returns the ``--json`` document.

    Returns:
        ``{"device", "torch", "threads", "copy_GBps", "ops": [{"name", "shape", "fused_ms",
        "eager_ms", "speedup", "GBps", "fraction_of_copy", "eager"}]}``.
    """
    gen = torch.Generator().manual_seed(0)
    bw = copy_bandwidth(device)
    rows = []
    for case in cases():
        if only and case.name not in only:
            continue
        args = case.make_inputs(device, gen)
        t_fused = median_seconds(lambda a=args, f=case.fused: f(*a), device, repeats, warmup)
        t_eager = median_seconds(lambda a=args, f=case.eager: f(*a), device, repeats, warmup)
        gbps = case.nbytes(args) / t_fused / 1e9
        rows.append(
            {
                "name": case.name,
                "shape": list(case.shape),
                "fused_ms": t_fused * 1e3,
                "eager_ms": t_eager * 1e3,
                "speedup": t_eager / t_fused,
                "GBps": gbps,
                "fraction_of_copy": gbps / bw,
                "eager": case.eager_label,
            }
        )
    return {
        "device": describe_device(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "copy_GBps": bw,
        "ops": rows,
    }


def describe_device(device: str) -> str:
    """Human-readable device name for the results table."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_table(result: dict) -> str:
    """Markdown table of a :func:`run` result."""
    header = ["op", "shape", "fused ms", "eager ms", "speedup", "GB/s", "of copy", "eager is"]
    rows = [
        [
            r["name"],
            "x".join(map(str, r["shape"])),
            f"{r['fused_ms']:.2f}",
            f"{r['eager_ms']:.2f}",
            f"{r['speedup']:.2f}x",
            f"{r['GBps']:.1f}",
            f"{r['fraction_of_copy']:.0%}",
            r["eager"],
        ]
        for r in result["ops"]
    ]
    return (
        f"device: {result['device']}, torch {result['torch']}, "
        f"copy bandwidth {result['copy_GBps']:.1f} GB/s\n\n" + markdown_table(header, rows)
    )
