"""``kldm export``: a trained K-AE + LDenoiser as AOTInductor packages for the C++ sampler.

Only the real-valued networks are compiled; complex k-space crosses them as ``2C`` real channels
and every k-space operation (normalisation, data consistency, FFTs, scheduler steps) stays in the
``kldm`` ops and the sampler. An export directory holds (``B`` batch, ``C`` coils, ``H x W`` the
k-space size the export was made for, ``Cz x h x w`` the first stage's latent of the padded
k-space):

=================== ========================================= =================================
package             inputs -> outputs                         what
=================== ========================================= =================================
``encoder.pt2``     ``x [B, 2C, H, W]`` -> ``mean, std``        padding + encoder: posterior mean
                    ``[B, Cz, h, w]``                         and std (std 0: deterministic AE)
``decoder.pt2``     ``z [B, Cz, h, w]`` -> ``x [B, 2C, H, W]``  decoder + unpadding
``decoder_vjp.pt2`` ``z, g`` -> ``dz [B, Cz, h, w]``            ``(d decoder(z) / dz)^T g``, for
                                                              gradient guidance
``denoiser.pt2``    ``z [B, Cz, h, w]`` (scaled), ``t [B]``     UNet (latent padded to its
                    int64 -> ``out [B, Cz, h, w]``            multiple and back)
=================== ========================================= =================================

``manifest.json`` records the shapes and dtypes, the normaliser, the latent scale factor, the
normalisation ratios, the scheduler (config, ``alphas_cumprod`` and the DDPM step coefficients of
every timestep, computed by the same code as the Python sampler), the sampler defaults, the torch
and package versions and the sha256 of every package. :func:`load_manifest` (and the C++
``kldm::Sampler``) verify the hashes and the torch version before anything is loaded.

The decoder's vector-Jacobian product is traced to a plain graph of ATen ops with ``make_fx``
first: ``torch.export`` cannot trace ``torch.autograd.grad`` inside a module's forward.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .errors import InputError
from .io import atomic_write_text, sha256_file
from .physics.transforms import pad_to_multiple

__all__ = [
    "EXPORT_FORMAT",
    "FORMAT_VERSION",
    "PACKAGES",
    "ExportReport",
    "export_run",
    "load_manifest",
    "sha256_file",
]

EXPORT_FORMAT = "kspace-ldm-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PACKAGES = ("encoder", "decoder", "decoder_vjp", "denoiser")
# Exported outputs must equal eager PyTorch to this relative error (the export's acceptance
# criterion: < 1e-5 in float32).
EXPORT_RTOL = 1e-5


class _Encoder(torch.nn.Module):
    """``x [B, 2C, H, W]`` -> posterior ``(mean, std)`` of the padded k-space's latent."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae

    def forward(self, x):
        xp, _ = pad_to_multiple(x, self.ae.downsample, self.ae.downsample)
        if self.ae.is_kl:
            post = self.ae.vae.encode(xp).latent_dist
            return post.mean, post.std
        z = self.ae.encode(x).z
        return z, torch.zeros_like(z)


class _Decoder(torch.nn.Module):
    """``z [B, Cz, h, w]`` -> ``x [B, 2C, H, W]`` (padding removed)."""

    def __init__(self, ae, pad):
        super().__init__()
        self.ae = ae
        self.pad = pad

    def forward(self, z):
        return self.ae.decode(z, pad=self.pad)


class _Denoiser(torch.nn.Module):
    """``(z [B, Cz, h, w], t [B] int64)`` -> UNet output of the same shape."""

    def __init__(self, unet, multiple: int):
        super().__init__()
        self.unet = unet
        self.multiple = multiple

    def forward(self, z, t):
        # The padding rule of training and the Python sampler, traced into the package: the C++
        # sampler passes latents of the first stage's (possibly odd) size and needs no rule itself.
        from .models.ldm import unet_predict  # here: importing export must not load diffusers

        return unet_predict(self.unet, z, t, self.multiple)


def channels_last_inputs(args: tuple) -> tuple:
    """Every 4-D tensor of ``args`` in channels-last layout (others as they are)."""
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else a for a in args
    )


class _ChannelsLast(torch.nn.Module):
    """Runs ``inner`` in channels-last layout behind the plain (NCHW-contiguous) interface of
    the package: every 4-D input is converted on entry, every output made contiguous on exit.

    Why: oneDNN's CPU convolutions run faster on channels-last activations and weights, and
    inductor does not change a CPU graph's layout by itself (demo model at 320 x 320, packages
    timed side by side: encoder 49.6 -> 40.8 ms, decoder 129.3 -> 116.1 ms, the attention-bound
    denoiser unchanged; scripts/bench_network_layout.py, docs/benchmarks.md). The caller
    (``kldm::Sampler``) keeps passing contiguous tensors. ``inner`` must be a copy: its
    parameters are converted in place.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner.to(memory_format=torch.channels_last)

    def forward(self, *args):
        out = self.inner(*channels_last_inputs(args))
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return tuple(o.contiguous() for o in out)


@torch.no_grad()
def sampler_networks(sampler, size: tuple[int, int], batch: int = 1) -> dict:
    """The sampler's networks as the packages see them, with seeded example inputs:
    ``{"encoder": (module, (x,)), "decoder": (module, (z,)), "denoiser": (module, (z, t))}``
    (eager, NCHW; ``x [batch, 2C, H, W]``, ``z [batch, Cz, h, w]``, ``t [batch]`` int64)."""
    ae, ldm, device = sampler.ae, sampler.ldm, sampler.device
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2 * (ae.in_channels // 2), *size, generator=gen).to(device)
    enc = _Encoder(ae).eval()
    mean, _ = enc(x)
    _, pad = pad_to_multiple(x, ae.downsample, ae.downsample)
    z = torch.randn(mean.shape, generator=gen).to(device)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    return {
        "encoder": (enc, (x,)),
        "decoder": (_Decoder(ae, pad).eval(), (z,)),
        "denoiser": (_Denoiser(ldm.unet, ldm.down_factor).eval(), (z, t)),
    }


def compiled_layout(module: torch.nn.Module, device: str) -> torch.nn.Module:
    """What is compiled for ``module``: a channels-last copy on the CPU (see
    :class:`_ChannelsLast`); on CUDA the module itself (inductor picks convolution layouts for
    CUDA graphs on its own)."""
    return _ChannelsLast(copy.deepcopy(module)).eval() if device == "cpu" else module


def _spec(t: torch.Tensor, name: str, dynamic_batch: bool) -> dict:
    shape = list(t.shape)
    if dynamic_batch:
        shape[0] = -1
    return {"name": name, "shape": shape, "dtype": str(t.dtype).removeprefix("torch.")}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _vjp_eager(decoder: torch.nn.Module):
    """``(z, g) -> (d decoder(z) / dz)^T g`` by autograd."""

    def vjp(z, g):
        with torch.enable_grad():
            u = z.detach().requires_grad_(True)
            (dz,) = torch.autograd.grad(decoder(u), u, g)
        return dz

    return vjp


def _vjp_graph(decoder: torch.nn.Module, z: torch.Tensor, g: torch.Tensor):
    """The decoder's VJP traced to a plain graph of ATen ops (exportable)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(_vjp_eager(decoder))(z, g)


def _scheduler_tables(scheduler_config: dict) -> dict:
    """``alphas_cumprod`` and the per-timestep DDPM step coefficients (``cgs-ref``), float32 values
    computed by the Python sampler's own scheduler code."""
    from .sampling.schedulers import FusedDDPMScheduler

    sched = FusedDDPMScheduler.from_config(scheduler_config)
    n = len(sched.alphas_cumprod)
    sched.set_timesteps(n)
    if sched.config.thresholding:
        raise InputError(
            "scheduler", "dynamic thresholding is not supported by the exported C++ sampler"
        )
    keys = (
        "sqrt_alpha_prod_t",
        "sqrt_beta_prod_t",
        "pred_original_sample_coeff",
        "current_sample_coeff",
        "noise_std",
    )
    coeffs = {k: [] for k in keys}
    for t in range(n):
        c = sched.step_coefficients(t)
        for k in keys:
            coeffs[k].append(c[k])
    return {
        "config": {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")},
        "num_train_timesteps": n,
        "prediction_type": sched.config.prediction_type,
        "clip_sample": bool(sched.config.clip_sample),
        "clip_sample_range": float(sched.config.clip_sample_range),
        "alphas_cumprod": [float(a) for a in sched.alphas_cumprod.to(torch.float32)],
        "ddpm_step": coeffs,
    }


def _recorded_meta(run: Path) -> dict:
    from .models.ldm import LDM_META

    for d in (run / "best", run):
        if (d / LDM_META).is_file():
            return json.loads((d / LDM_META).read_text())
    return {}


@dataclass
class ExportReport:
    """What :func:`export_run` wrote and how close the packages are to eager PyTorch."""

    out_dir: Path
    manifest: dict
    seconds: float


def _compile(module, args, path: Path, dynamic_batch: bool) -> tuple[int, int]:
    """Export and AOT-compile ``module``; returns the batch range ``(min, max)`` it accepts."""
    b = args[0].shape[0]
    dyn = None
    if dynamic_batch:
        # Dim.AUTO: export derives the range from the model's guards (it excludes batch 1 --
        # 0/1 are specialised -- and the UNet bounds it above); the sampler pads or chunks a
        # batch into that range, which is exact because every network is per-sample.
        dyn = tuple({0: torch.export.Dim.AUTO} for _ in args)
        if any(
            p.kind is inspect.Parameter.VAR_POSITIONAL
            for p in inspect.signature(module.forward).parameters.values()
        ):
            dyn = (dyn,)  # export matches dynamic_shapes to the signature: (*args,) is one input
    ep = torch.export.export(module, args, dynamic_shapes=dyn, strict=False)
    lo, hi = b, b
    if dynamic_batch:
        val = next(
            n
            for n in ep.graph.nodes
            if n.op == "placeholder"
            and n.name not in ep.graph_signature.inputs_to_parameters
            and n.name not in ep.graph_signature.inputs_to_buffers
            and n.name not in ep.graph_signature.inputs_to_lifted_tensor_constants
        ).meta["val"]
        sym = val.shape[0]
        if isinstance(sym, torch.SymInt):
            r = ep.range_constraints[sym.node.expr]
            lo = int(r.lower)
            try:
                hi = min(int(r.upper), 1 << 30)
            except (TypeError, AttributeError, ValueError, OverflowError):  # unbounded (int_oo)
                hi = 1 << 30
    torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
    return lo, hi


@torch.no_grad()
def export_run(
    run: str | Path,
    out: str | Path,
    device: str = "cpu",
    size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    log=print,
    rtol: float = EXPORT_RTOL,
    guidance: bool = True,
) -> ExportReport:
    """Export the LDM run ``run`` (and the first stage it names) to ``out``.

    Args:
        run: LDM run directory (or its ``best``).
        out: export directory (replaced atomically: written beside it, then renamed).
        device: ``cpu`` or ``cuda`` -- the packages run on this device only.
        size: ``(H, W)`` k-space size; default: the training k-space size recorded in
            ``ldm.json`` (older runs: the training latent size times the first stage's
            down-sampling factor).
        batch: example batch size (the only batch size unless ``dynamic_batch``).
        dynamic_batch: export with a symbolic batch dimension.
        rtol: largest accepted relative error of a package against eager PyTorch.
        guidance: also export the decoder's vector-Jacobian product (needed by gradient
            guidance: ``cgs --guidance > 0`` and ``cgs-ref``); without it the export is smaller
            and faster to make, and the C++ sampler refuses guidance with a clear error.
    """
    from .sampling.cgs import KspaceLDMSampler

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda requested but no CUDA device is available")
    sampler = KspaceLDMSampler.from_run(run, device=device)
    if size is None:
        meta = _recorded_meta(Path(run))
        latent_shape = meta.get("latent_shape")
        if meta.get("kspace_size"):  # the training k-space size (recorded by newer runs)
            size = tuple(meta["kspace_size"])
        elif latent_shape is None:
            raise InputError("--size", "the LDM run records no latent size; pass --size HxW")
        else:  # older runs: exact only when the k-space size is a multiple of the factor
            f = sampler.ae.downsample
            size = (latent_shape[1] * f, latent_shape[2] * f)
    return export_sampler(
        sampler, out, size, batch, dynamic_batch, Path(run).resolve(), log, rtol, guidance
    )


@contextmanager
def _full_float32():
    # TF32 would make eager and compiled CUDA convolutions/matmuls differ by ~1e-3; the packages are
    # compiled and checked in full float32 (the flags are restored afterwards).
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@torch.no_grad()
def export_sampler(
    sampler,
    out: str | Path,
    size: tuple[int, int],
    batch: int = 1,
    dynamic_batch: bool = False,
    source_run: str | Path | None = None,
    log=print,
    rtol: float = EXPORT_RTOL,
    guidance: bool = True,
) -> ExportReport:
    """Export a loaded :class:`~kspace_ldm.sampling.cgs.KspaceLDMSampler` (on its device) for
    k-space of ``size = (H, W)``; see :func:`export_run`. Every package is run once and compared
    with eager PyTorch: a relative error ``>= rtol`` is an error."""
    with _full_float32():
        return _export_sampler(
            sampler, out, size, batch, dynamic_batch, source_run, log, rtol, guidance
        )


def _export_sampler(sampler, out, size, batch, dynamic_batch, source_run, log, rtol, guidance):
    from .physics.espirit import ESPIRIT_DEFAULTS
    from .sampling.cgs import CGS_DEFAULTS, CGS_REF_DEFAULTS
    from .sampling.cgs_refine import cs_start_settings as _cs_start_settings
    from .sampling.sense_dc import SENSE_DEFAULTS
    from .toolchain import check_aoti_compiler

    problem = check_aoti_compiler()  # ~1 s, before minutes of compiling packages that would crash
    if problem:
        raise InputError(None, problem)

    t_start = time.perf_counter()
    ae, ldm, norm = sampler.ae, sampler.ldm, sampler.norm
    device = sampler.device.type
    coils = ae.in_channels // 2
    H, W = (int(v) for v in size)
    # A symbolic batch cannot be traced from an example of size 1 (export specialises 0 and 1).
    batch = max(batch, 2) if dynamic_batch else batch
    sampler.check_size((H, W))  # a size the model cannot serve: one line, before any tracing
    nets = sampler_networks(sampler, (H, W), batch)
    (x,), (z,), (_, t) = nets["encoder"][1], nets["decoder"][1], nets["denoiser"][1]
    mean, std = nets["encoder"][0](x)
    dec_m = nets["decoder"][0]
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(device)
    # The traced VJP has its sizes baked in (make_fx cannot trace the parameters symbolically):
    # it is exported for batch 1 and the sampler runs it slice by slice.
    zv, gv = z[:1].contiguous(), g[:1].contiguous()
    vjp_eager = _vjp_eager(dec_m)
    compiled = {k: compiled_layout(m, device) for k, (m, _) in nets.items()}
    vjp_gm = _vjp_graph(compiled["decoder"], zv, gv)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        cases = {
            "encoder": (compiled["encoder"], (x,), ("x",), ("mean", "std")),
            "decoder": (compiled["decoder"], (z,), ("z",), ("x",)),
            "decoder_vjp": (vjp_gm, (zv, gv), ("z", "g"), ("dz",)),
            "denoiser": (compiled["denoiser"], (z, t), ("z", "t"), ("out",)),
        }
        eager = {
            "encoder": (mean, std),
            "decoder": (dec_m(z),),
            "decoder_vjp": (vjp_eager(zv, gv),),
            "denoiser": (nets["denoiser"][0](z, t),),
        }
        if not guidance:
            del cases["decoder_vjp"]
        packages = {}
        for name, (module, args, in_names, out_names) in cases.items():
            t0 = time.perf_counter()
            path = tmp / f"{name}.pt2"
            dynamic = dynamic_batch and name != "decoder_vjp"
            lo, hi = _compile(module, args, path, dynamic)
            loaded = torch._inductor.aoti_load_package(str(path))
            got = loaded(*args)
            got = (got,) if isinstance(got, torch.Tensor) else tuple(got)
            errs = [_rel_err(a.float(), b.float()) for a, b in zip(got, eager[name], strict=True)]
            if max(errs) >= rtol:
                raise RuntimeError(
                    f"exported {name} differs from eager PyTorch: relative error {max(errs):.2e}"
                )
            packages[name] = {
                "file": path.name,
                "sha256": sha256_file(path),
                "batch_range": [lo, hi],
                "inputs": [_spec(a, n, dynamic) for a, n in zip(args, in_names, strict=True)],
                "outputs": [
                    _spec(o, n, dynamic) for o, n in zip(eager[name], out_names, strict=True)
                ],
                "max_rel_err_vs_eager": max(errs),
            }
            log(f"exported {name:12s} rel. err {max(errs):.1e} ({time.perf_counter() - t0:.1f} s)")

        ratio = ldm.norm_ratio or {}
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "kspace_ldm_version": __version__,
            "torch_version": torch.__version__.split("+")[0],
            "device": device,
            "dynamic_batch": dynamic_batch,
            "batch": batch,
            "coils": coils,
            "height": H,
            "width": W,
            "latent_shape": list(mean.shape[1:]),
            "first_stage": {
                "family": type(ae).__name__,
                "is_kl": bool(ae.is_kl),
                "sample_posterior": bool(getattr(ae, "sample_posterior", False)),
                "downsample": ae.downsample,
            },
            "normalization": {
                "mode": norm.mode,
                "acs_fraction": norm.acs_fraction,
                "weighting": norm.weighting,
                "weight_power": norm.weight_power,
                "weight_r0": norm.weight_r0,
                "log_c": norm.log_c,
                "log_clamp": norm.log_clamp,
                "eps": norm.eps,
            },
            "norm_ratio": {"scale": ratio.get("scale"), "shift": ratio.get("shift")},
            "scale_factor": float(ldm.scale_factor),
            "scheduler": _scheduler_tables(sampler.scheduler_config),
            "sampler_defaults": {
                "cgs": dict(CGS_DEFAULTS),
                "cgs-ref": dict(CGS_REF_DEFAULTS),
                # the cs-wavelet settings of cgs's CS start (sampling/cgs_refine.cs_start)
                "cs_start": _cs_start_settings(),
                # the coil-agnostic multi-coil path of a single-coil export (sampling/sense_dc.py)
                "sense": dict(SENSE_DEFAULTS),
                "espirit": dict(ESPIRIT_DEFAULTS),
            },
            "source_run": None if source_run is None else str(source_run),
            "packages": packages,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(out, manifest, time.perf_counter() - t_start)


def load_manifest(
    export_dir: str | Path, verify: bool = True, expect_sha256: str | None = None
) -> dict:
    """Read ``export_dir/manifest.json``; with ``verify`` check the format, the torch version and
    every package's sha256 (``InputError`` naming the file and the problem otherwise).

    ``expect_sha256``: the sha256 of ``manifest.json`` itself, pinned by the caller
    (``--expect-sha256``); checked on the bytes that are parsed, before anything else is read.
    """
    import hashlib

    d = Path(export_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise InputError(d, f"not an export directory (no {MANIFEST}); make one with kldm export")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(path, f"cannot read the manifest ({err.strerror})") from None
    if expect_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expect_sha256.strip().lower():
            raise InputError(
                path,
                f"sha256 {digest} differs from the pinned --expect-sha256 "
                f"{expect_sha256.strip()}; refusing to load the packages",
            )
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise InputError(path, f"invalid JSON ({err})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != EXPORT_FORMAT
        or manifest.get("format_version") != FORMAT_VERSION
    ):
        raise InputError(path, f"not a {EXPORT_FORMAT} v{FORMAT_VERSION} manifest")
    packages = manifest.get("packages")
    if not isinstance(packages, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
        for e in packages.values()
    ):
        raise InputError(path, "manifest has no valid 'packages' mapping {name: {file, sha256}}")
    if not verify:
        return manifest
    here = torch.__version__.split("+")[0]
    if manifest.get("torch_version") != here:
        raise InputError(
            path,
            f"packages were made by torch {manifest.get('torch_version')} but this is torch "
            f"{here}; re-export with this torch",
        )
    for name in PACKAGES:
        entry = manifest["packages"].get(name)
        if entry is None and name == "decoder_vjp":
            continue  # exported with guidance=False
        if entry is None:
            raise InputError(path, f"package {name!r} missing from the manifest")
        f = d / entry["file"]
        if Path(entry["file"]).is_absolute() or ".." in Path(entry["file"]).parts:
            raise InputError(path, f"package file {entry['file']!r} lies outside the export")
        if not f.is_file():
            raise InputError(f, "package file missing")
        if sha256_file(f) != entry["sha256"]:
            raise InputError(f, "sha256 does not match the manifest (file modified or corrupt)")
    return manifest
