"""Consistency-guided latent diffusion sampling in k-space (Python reference implementation).

Two samplers share one :class:`KspaceLDMSampler` (first stage + latent denoiser):

``cgs-ref`` (:meth:`KspaceLDMSampler.cgs_ref`) -- the reference algorithm (kLD-MRI's cgs.py),
faithfully, so that the comparison with the original method is honest: k-space normalised with the
statistics of the *undersampled* scan, per-input latent rescale ``1/std(z)``, SDEdit start at
``T0``, single-step ancestral DDPM from ``T0`` to 0; after the step of timestep ``t``: if
``t > 80`` and ``t % 20 == 0`` decode the *noisy* latent, replace the measured lines, recompute the
statistics, re-encode; elif ``t > 20`` a gradient step ``z -= lambda * dL/du`` with
``L = sum_M |unnorm(D(u)) - y|^2`` in raw k-space units (``u = z/s``, ``lambda = 100``); no final
data consistency. The only departure: every random draw comes from the seeded generator.

``cgs`` (:meth:`KspaceLDMSampler.cgs`) -- the corrected sampler:

1. Normalisation: the full-k-space statistics are estimated from the calibration RMS of the scan
   times training-set ratios (:func:`kspace_ldm.latents.estimate_norm_stats`), then refitted by
   least squares of the decoded estimate on the measured samples (the decoded k-space is affine in
   them), never taken from the undersampled data alone. The latent scale is the training
   constant stored with the LDM.
2. SDEdit start at ``t0`` from the encoded start estimate -- by default the L1-wavelet
   compressed-sensing image with the measured samples put back (``start="cs-wavelet"``,
   :func:`.cgs_refine.cs_start`), or the zero-filled k-space (``start="zero-filled"``) -- then a
   DDIM schedule of ``steps`` steps (``eta`` adds seeded noise).
3. At every step, on the Tweedie estimate ``x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``:
   optional gradient guidance on the residual normalised by the measurement energy
   ``||M(k(x0)) - y||^2 / ||y||^2`` (so ``guidance`` is scale free), then consistency: decode,
   replace the measured samples (``kldm::dc_project``), re-encode -- and only then re-noise to the
   next level with the DDIM update. Nothing clean is ever treated as noisy or vice versa.
4. A final hard data consistency in k-space: the output equals the measurement bit for bit on
   every measured sample.

k-space is complex ``[B, C, H, W]`` (``C`` coils; single-coil ``C = 1``); masks broadcast to it
(``[W]``, ``[H, W]``, ``[B, 1, 1, W]``). Any ``H, W`` work: the first stage pads and unpads, and
latents are padded to the UNet's multiple around each UNet call.

The physics and consistency primitives are imported once below; the fused ``fft2c``/``sense`` ops
of the native core replace them by changing these imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..latents import estimate_norm_stats, normalize_with
from ..methods import CGS_STARTS, LDM_SAMPLERS
from ..models.kspace_norm import KspaceNormalizer, NormStats
from ..models.ldm import LatentDiffusion, load_ldm, unet_predict
from ..ops import dc_project, dc_residual, ddim_step, fft2c  # fused kldm ops (CPU and CUDA)
from ..physics.transforms import complex_to_channels
from .schedulers import FusedDDPMScheduler

__all__ = ["CGS_STARTS", "SAMPLERS", "KspaceLDMSampler", "SamplerOptions", "check_sampler"]

SAMPLERS = LDM_SAMPLERS  # the one list: kspace_ldm/methods.py
# Defaults of each sampler (chosen on the synthetic validation split, docs/results.md); the export
# manifest carries them to the C++ sampler.
# cgs: from the cs-wavelet start, 2 DDIM steps from t0 50 (validation: 26.33 dB / 0.866 at 4x,
# 19.97 / 0.619 at 8x vs cs-wavelet 25.37 / 0.841 and cs-tv 18.31 / 0.526; from the zero-filled
# start the best was 5 steps from t0 150, 23.28 / 19.36): docs/results.md, "`cgs` from the
# compressed-sensing start".
CGS_DEFAULTS = {
    "steps": 2,
    "t0": 50,
    "guidance": 0.0,
    "eta": 0.0,
    "refit": True,
    "samples": 1,
    "start": "cs-wavelet",
}
CGS_REF_DEFAULTS = {"t0": 100, "guidance": 100.0}


def check_sampler(name: str) -> None:
    """One-line :class:`InputError` unless ``name`` is a diffusion sampler (:data:`SAMPLERS`):
    the one check of the name, run by :class:`SamplerOptions` for both backends (``kldm::Sampler``
    keeps its own for C++ callers)."""
    if name not in SAMPLERS:
        raise InputError("sampler", f"unknown sampler {name!r} (available: {', '.join(SAMPLERS)})")


@dataclass(frozen=True)
class SamplerOptions:
    """Sampler settings (``None`` = the sampler's default), for the Python
    (:meth:`KspaceLDMSampler.sample`) and the C++ sampler (:class:`~.cpp.CppSampler`) alike: the
    fields, names and defaults of ``kldm::SamplerOptions`` (csrc/include/kldm/sampler.h); the
    ``None`` defaults resolve to :data:`CGS_DEFAULTS` / :data:`CGS_REF_DEFAULTS`, which the export
    manifest carries to the C++ side.

    Attributes:
        sampler: ``"cgs"`` or ``"cgs-ref"`` (:data:`SAMPLERS`; checked on construction).
        steps: DDIM steps of ``cgs`` (default 5; ``cgs-ref`` always takes ``t0 + 1`` single
            steps).
        t0: SDEdit start timestep (``cgs`` default 150, ``cgs-ref`` 100). The ``cgs`` defaults
            were chosen on the synthetic *validation* split (docs/results.md): more steps
            mean more decode/encode round trips, whose errors accumulate.
        guidance: ``cgs``: scale-free gradient step on the normalised residual (default 0: the
            consistency projection alone); ``cgs-ref``: the reference's lambda (default 100).
        eta: DDIM stochasticity of ``cgs`` (0 = deterministic given the start noise).
        refit: ``cgs``: fit the normalisation statistics to the measured samples.
        samples: ``cgs``: average the k-space of this many samples (independent start noise
            from the same generator): a Monte-Carlo estimate of the posterior mean, the
            estimate that minimises the expected squared error. Measured samples stay exact.
        seed: seeds the CPU generator of every random draw (``torch.Generator().manual_seed``
            in Python, ``at::make_generator<CPUGeneratorImpl>`` in C++: the same stream).
        refine: ``cgs``: a final CS-regularised consistency around the (mean) estimate
            (:mod:`.cgs_refine`; ``"cs-wavelet"``, the cgs + L1-wavelet hybrid), or None / ``""``
            for none. Python backend only.
        refine_lam / refine_mu / refine_iterations: its sparsity weight, prior weight and FISTA
            iterations (None = :data:`.cgs_refine.REFINE_DEFAULTS`).
        start: ``cgs``: the estimate encoded first (:data:`CGS_STARTS`; None = the default,
            ``"cs-wavelet"``: the L1-wavelet CS image at its defaults with the measured samples
            put back; ``"zero-filled"``: the measured k-space). The per-coil-channel multi-coil
            path always starts zero-filled.
    """

    sampler: str = "cgs"
    steps: int | None = None
    t0: int | None = None
    guidance: float | None = None
    eta: float = 0.0
    refit: bool = True
    samples: int = 1
    seed: int = 0
    refine: str | None = None
    refine_lam: float | None = None
    refine_mu: float | None = None
    refine_iterations: int | None = None
    start: str | None = None

    def __post_init__(self):
        check_sampler(self.sampler)
        if self.start is not None and self.start not in CGS_STARTS:
            raise InputError(
                "sampler", f"unknown start {self.start!r} (available: {', '.join(CGS_STARTS)})"
            )
        if self.samples < 1:
            raise InputError("sampler", f"samples must be >= 1, got {self.samples}")


def resolve_start(options: SamplerOptions) -> str:
    """``options.start`` or the default (:data:`CGS_DEFAULTS`)."""
    return options.start if options.start is not None else CGS_DEFAULTS["start"]


def _as_mask(mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A bool mask ``[B|1, 1, H|1, W]`` from ``[W]``, ``[H, W]`` or 4-D input."""
    m = torch.as_tensor(mask, device=k.device).bool()
    if m.dim() == 1:
        m = m.reshape(1, 1, 1, -1)
    elif m.dim() == 2:
        m = m.reshape(1, 1, *m.shape)
    if m.dim() != 4 or m.shape[-1] != k.shape[-1] or m.shape[-2] not in (1, k.shape[-2]):
        raise InputError("mask", f"shape {tuple(mask.shape)} does not fit k-space {tuple(k.shape)}")
    return m


class KspaceLDMSampler:
    """First stage + latent denoiser, with the ``cgs`` and ``cgs-ref`` samplers.

    Args:
        ldm: the trained latent diffusion model (:func:`kspace_ldm.models.ldm.load_ldm`).
        autoencoder: the first stage the LDM was trained on (eval mode).
        normalizer: its k-space normaliser.
    """

    def __init__(self, ldm: LatentDiffusion, autoencoder, normalizer: KspaceNormalizer):
        self.ldm = ldm
        self.ae = autoencoder
        self.norm = normalizer
        self.unet = ldm.unet
        self.scheduler_config = dict(ldm.scheduler_config)
        self.alphas_cumprod = FusedDDPMScheduler.from_config(self.scheduler_config).alphas_cumprod
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self._served: set[tuple[int, int]] = set()

    @classmethod
    def from_run(cls, path: str | Path, device: str = "cpu") -> KspaceLDMSampler:
        """Load an LDM run (or its ``best``) and the first stage it names."""
        from ..models.loading import load_first_stage

        ldm = load_ldm(path, device)
        ae, normalizer, _ = load_first_stage(ldm.first_stage, device)
        for p in (*ae.parameters(), *ldm.unet.parameters()):
            p.requires_grad_(False)
        return cls(ldm, ae, normalizer)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ------------------------------------------------------------------------------------------
    # Building blocks
    # ------------------------------------------------------------------------------------------
    def _check(self, y: torch.Tensor) -> None:
        if not y.is_complex() or y.dim() != 4:
            raise InputError(
                "sampler", f"k-space must be complex [B, C, H, W], got {tuple(y.shape)}"
            )
        if 2 * y.shape[1] != self.ae.in_channels:
            raise InputError(
                "sampler",
                f"{y.shape[1]} coil(s) but the first stage takes {self.ae.in_channels // 2} "
                "(train the autoencoder on data with this coil count)",
            )
        self.check_size(tuple(y.shape[-2:]))

    def latent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the first stage's latent of ``size = (H, W)`` k-space (padded to its
        down-sampling factor, then divided by it)."""
        f = self.ae.downsample
        return (-(-int(size[0]) // f), -(-int(size[1]) // f))

    def check_size(self, size: tuple[int, int]) -> None:
        """One-line :class:`InputError` naming the LDM config and the size unless this model
        serves ``size = (H, W)`` k-space: the UNet must take the first stage's latent channels
        and run (padded) on its latent size. Checked once per size."""
        from ..models.ldm import check_unet_serves

        size = (int(size[0]), int(size[1]))
        if size in self._served:
            return
        cfg = self.ldm.config
        name = f"config {cfg.name}" if cfg is not None and cfg.name else "ldm config"
        cz = int(getattr(self.ae, "latent_channels", self.unet.config.in_channels))
        if cz != self.unet.config.in_channels:
            raise InputError(
                name,
                f"the UNet takes {self.unet.config.in_channels} latent channels but the first "
                f"stage {self.ldm.first_stage} makes {cz}",
            )
        if cfg is not None:
            h, w = self.latent_size(size)
            try:
                check_unet_serves(cfg.ldm, cz, (h, w), name)
            except InputError as err:
                raise InputError(None, f"{err} ({size[0]}x{size[1]} k-space)") from None
        self._served.add(size)

    def model_output(self, z: torch.Tensor, t: int) -> torch.Tensor:
        """UNet prediction at timestep ``t`` for latents of any size (padded to its multiple by
        :func:`~kspace_ldm.models.ldm.unet_predict`, the rule training and export use)."""
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        return unet_predict(self.unet, z, tt, self.ldm.down_factor)

    def eps_x0(self, z: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps, x0)``: the noise and Tweedie clean-latent estimates at ``t`` (eps or v model)."""
        a = self.alphas_cumprod[t].to(z.device, z.dtype)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        out = self.model_output(z, t)
        if self.prediction_type == "v_prediction":
            x0 = sa * z - sb * out
            eps = sa * out + sb * z
        else:
            eps = out
            x0 = (z - sb * eps) / sa
        return eps, x0

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Normalised k-space ``[B, 2C, H, W]`` -> (unscaled latent, padding record)."""
        if self.ae.is_kl:
            enc = self.ae.encode(x, sample=False)
        else:
            enc = self.ae.encode(x)
        return enc.z, enc.pad

    def decode(self, z: torch.Tensor, pad) -> torch.Tensor:
        """Unscaled latent -> normalised k-space ``[B, 2C, H, W]`` (padding removed)."""
        return self.ae.decode(z, pad=pad)

    def refit_stats(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, prior: NormStats
    ) -> NormStats:
        """Least-squares statistics mapping decoded ``x`` onto the measured samples of ``y``.

        ``denormalize(x, stats)`` is affine in ``(scale, shift)``: per statistic channel, fit
        ``y ~ scale * u + shift`` over the measured samples (``u`` the de-weighted network
        output). The scale is kept within a factor 4 of ``prior`` -- pass the calibration-based
        estimate, not the previous fit, so repeated fits cannot drift -- and a mode without a
        shift fits the scale alone.
        """
        if prior.scale is None:
            return prior
        u = complex_to_channels(self.norm.denormalize(x, NormStats(None, None)))  # [B, 2C, H, W]
        yr = complex_to_channels(y)
        m = mask.to(u.dtype).expand(u.shape[0], 1, *u.shape[-2:])
        k_per = prior.scale.shape[1]
        if k_per == 1:  # one scale for all channels (rms / acs)
            num = (m * u * yr).sum(dim=(1, 2, 3), keepdim=True)
            den = (m * u * u).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
            scale, shift = num / den, None
        else:
            n = m.sum(dim=(2, 3), keepdim=True).clamp_min(1)
            mu_u = (m * u).sum(dim=(2, 3), keepdim=True) / n
            mu_y = (m * yr).sum(dim=(2, 3), keepdim=True) / n
            cov = (m * (u - mu_u) * (yr - mu_y)).sum(dim=(2, 3), keepdim=True)
            var = (m * (u - mu_u) ** 2).sum(dim=(2, 3), keepdim=True).clamp_min(1e-30)
            scale = cov / var
            shift = mu_y - scale * mu_u if prior.shift is not None else None
        scale = torch.minimum(torch.maximum(scale, prior.scale * 0.25), prior.scale * 4.0)
        if shift is not None:
            shift = mu_y - scale * mu_u
        return NormStats(shift, scale)

    def _decoded(self, x0, y, mask, stats, pad, refit, anchor):
        """Decode the clean latent estimate to k-space (``y``'s dtype), first fitting the
        statistics (bounded around ``anchor``) if ``refit``. Returns ``(k, stats')``."""
        x = self.decode(x0 / self.ldm.scale_factor, pad)
        if refit:
            stats = self.refit_stats(x, y, mask, anchor)
        return self.norm.denormalize(x, stats).to(y.dtype), stats

    def _consistent_latent(self, k, y, mask, stats, project=None):
        """Replace the measured samples of ``k`` (or apply ``project``, e.g. the SENSE projection
        of :mod:`.sense_dc`) and re-encode: the scaled latent."""
        k = dc_project(k, y, mask, 1.0) if project is None else project(k)
        z, _ = self.encode(normalize_with(self.norm, k, stats))
        return self.ldm.scale_factor * z

    def _consistency(self, x0, y, mask, stats, pad, refit, anchor, project=None, bias=None):
        """Decode, refit, add ``bias`` (the kept first-stage error of :meth:`cgs`'s
        ``residual``), make consistent, re-encode. Returns ``(x0', stats')``."""
        k, stats = self._decoded(x0, y, mask, stats, pad, refit, anchor)
        if bias is not None:
            k = k + bias
        return self._consistent_latent(k, y, mask, stats, project), stats

    def _guide(self, x0, y, mask, stats, pad, scale):
        """One gradient step on ``||M(k(x0)) - y||^2 / ||M y||^2`` w.r.t. ``x0`` (scale free)."""
        s = self.ldm.scale_factor
        with torch.enable_grad():
            u = x0.detach().requires_grad_(True)
            k = self.norm.denormalize(self.decode(u / s, pad), stats).to(y.dtype)
            # kldm::dc_residual: r = M (k - y) and sum |r|^2 in one pass (autograd from Python)
            loss = dc_residual(k, y, mask)[1].sum()
            loss = loss / (y * mask).abs().square().sum().clamp_min(1e-30)
            (grad,) = torch.autograd.grad(loss, u)
        return (x0 - scale * grad).detach()

    def _ddim_update(self, x0, eps, a_t, a_p, eta, generator):
        """``z_prev = sqrt(a_p) x0 + sqrt(1 - a_p - sigma^2) eps [+ sigma noise]`` on the fused
        ``kldm::ddim_step`` (float32 coefficients, as diffusers' DDIMScheduler).

        The op derives ``x0`` from ``(model_output, sample)``; here ``x0`` is the *consistent*
        estimate, so the op gets the latent at level ``t`` whose Tweedie estimate it is, with the
        model's noise: ``sample = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` (epsilon parametrisation,
        whatever the model's), from which it recovers ``x0`` to float32 rounding.
        """
        sigma = eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).clamp_min(0).sqrt()
        sa, sb = a_t.sqrt(), (1 - a_t).sqrt()
        noise = torch.randn(x0.shape, generator=generator).to(x0) if eta > 0 else None
        return ddim_step(
            eps,
            sa * x0 + sb * eps,
            noise,
            sqrt_alpha_prod_t=float(sa),
            sqrt_beta_prod_t=float(sb),
            sqrt_alpha_prod_t_prev=float(a_p.sqrt()),
            direction_coeff=float((1 - a_p - sigma**2).clamp_min(0).sqrt()),
            noise_std=float(sigma),
        )[0]

    # ------------------------------------------------------------------------------------------
    # Samplers
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def cgs(
        self,
        masked: torch.Tensor,
        mask: torch.Tensor,
        options: SamplerOptions = SamplerOptions(),
        generator: torch.Generator | None = None,
        *,
        project=None,
        final=None,
        start: torch.Tensor | None = None,
        residual: float = 0.0,
    ) -> torch.Tensor:
        """The corrected consistency-guided sampler (module docstring).

        Args:
            masked: complex ``[B, C, H, W]`` measured k-space, zero where not sampled.
            mask: bool sampling mask broadcastable to it.
            generator: CPU generator for every random draw (start noise, DDIM eta noise).
            project / final / start: replace the sample replacement inside the loop, the final
                hard consistency and the encoded start (default ``masked``); the coil-agnostic
                multi-coil path (:mod:`.sense_dc`) passes its SENSE versions.
            residual: keep this fraction of the first stage's own error on the start, ``bias =
                residual * (start - D(E(start)))`` (k-space), added to every decoded estimate:
                with ``residual = 1`` and no diffusion change the output is the start itself,
                so detail the first stage cannot represent (the parallel-imaging detail of a
                SENSE/CS start for a single-coil model) is not projected away. 0: none (the
                single-coil default: there the projection of the CS start helps).

        Returns:
            Complex ``[B, C, H, W]`` k-space, equal to ``masked`` on every measured sample.
        """
        self._check(masked)
        steps = options.steps or CGS_DEFAULTS["steps"]
        t0 = options.t0 if options.t0 is not None else CGS_DEFAULTS["t0"]
        guidance = options.guidance if options.guidance is not None else CGS_DEFAULTS["guidance"]
        n_train = len(self.alphas_cumprod)
        if not 0 <= t0 < n_train or steps < 1:
            raise InputError("sampler", f"need 0 <= t0 < {n_train} and steps >= 1")
        y = masked
        m = _as_mask(mask, y)
        ac = self.alphas_cumprod.to(y.device, torch.float32)
        stats = anchor = estimate_norm_stats(y, m, self.norm, self.ldm.norm_ratio)
        z, pad = self.encode(normalize_with(self.norm, y if start is None else start, stats))
        s = self.ldm.scale_factor
        x0 = s * z
        # A first projection of the zero-filled estimate, so the start is data consistent.
        # The statistics are fitted once, on this first projection, then held fixed: refitting at
        # every step feeds back through the re-encoding and drifts (measured: the scale of one
        # channel fell to 0.4x its estimate over 20 steps while PSNR dropped 6 dB).
        k, stats = self._decoded(x0, y, m, stats, pad, options.refit, anchor)
        bias = None
        if residual > 0:  # the first stage's error on the start, k-space
            bias = residual * ((y if start is None else start) - k)
            k = k + bias
        x0 = self._consistent_latent(k, y, m, stats, project)
        ts = torch.linspace(t0, 0, steps + 1).round().long().unique_consecutive().tolist()
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        zt = ac[ts[0]].sqrt() * x0 + (1 - ac[ts[0]]).sqrt() * noise
        for i, t in enumerate(ts):
            eps, x0 = self.eps_x0(zt, t)
            if guidance > 0:
                x0 = self._guide(x0, y, m, stats, pad, guidance)
            if i + 1 == len(ts):
                break  # the last estimate goes straight to the final k-space consistency
            x0, _ = self._consistency(x0, y, m, stats, pad, False, anchor, project, bias)
            zt = self._ddim_update(x0, eps, ac[t], ac[ts[i + 1]], options.eta, generator)
        k, _ = self._decoded(x0, y, m, stats, pad, False, anchor)
        if bias is not None:
            k = k + bias
        if final is not None:
            return final(k)
        return dc_project(k, y, m, 1.0)  # final hard data consistency: measured samples exact

    @torch.no_grad()
    def cgs_ref(
        self,
        masked: torch.Tensor,
        mask: torch.Tensor,
        options: SamplerOptions = SamplerOptions(),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The reference's consistency-guidance sampler, faithfully (module docstring).

        ``options.t0`` (default 100) is the SDEdit start, ``options.guidance`` the lambda
        (default 100); ``steps`` is ignored (the reference always steps one timestep at a time).

        Returns:
            Complex ``[B, C, H, W]`` k-space (no final data consistency, as the reference).
        """
        self._check(masked)
        t0 = options.t0 if options.t0 is not None else CGS_REF_DEFAULTS["t0"]
        lam = options.guidance if options.guidance is not None else CGS_REF_DEFAULTS["guidance"]
        y = masked
        m = _as_mask(mask, y)
        sched = FusedDDPMScheduler.from_config(self.scheduler_config)
        sched.set_timesteps(len(self.alphas_cumprod))  # trailing: 999, 998, ..., 0
        ac = self.alphas_cumprod.to(y.device, torch.float32)
        x, stats = self.norm.normalize(y)  # statistics of the undersampled k-space (ref bug)
        z, pad = self._ref_encode(x, generator)
        # Per-input rescale from the masked latent (the reference, batch 1: one scan per input).
        s = 1.0 / z.flatten(1).std(dim=1).reshape(-1, 1, 1, 1)
        z = s * z
        noise = torch.randn(z.shape, generator=generator).to(z)
        z = ac[t0].sqrt() * z + (1 - ac[t0]).sqrt() * noise
        for t in range(t0, -1, -1):
            eps = self.model_output(z, t)
            z = sched.step(eps, t, z, generator=generator).prev_sample
            if t > 80:  # "hard DC" on the noisy latent every 20 steps, statistics recomputed
                if t % 20:
                    continue
                k = self.norm.denormalize(self.decode(z / s, pad), stats).to(y.dtype)
                k = torch.where(m, y, k)
                x, stats = self.norm.normalize(k)
                z, _ = self._ref_encode(x, generator)
                z = s * z
            elif t > 20:  # gradient guidance on z_{t-1} at 21 <= t <= 80, raw k-space units
                with torch.enable_grad():
                    u = (z / s).detach().requires_grad_(True)
                    k = self.norm.denormalize(self.decode(u, pad), stats).to(y.dtype)
                    loss = dc_residual(k, y, m)[1].sum()  # sum |M (k - y)|^2, kldm::dc_residual
                    (grad,) = torch.autograd.grad(loss, u)
                z = z - lam * grad
        return self.norm.denormalize(self.decode(z / s, pad), stats).to(y.dtype)

    def _ref_encode(self, x, generator):
        # The reference's encode(...)[0]: the posterior sample when the first stage samples.
        if self.ae.is_kl:
            enc = self.ae.encode(x, generator=generator)
        else:
            enc = self.ae.encode(x)
        return enc.z, enc.pad

    def start_kspace(self, masked, mask, options: SamplerOptions) -> torch.Tensor | None:
        """The k-space ``cgs`` encodes first on the single-coil path ``[B, 1, H, W]`` (None: the
        zero-filled ``masked``): for ``start="cs-wavelet"`` the CS image of
        :func:`.cgs_refine.cs_start` at the cs-wavelet defaults, to k-space, measured samples
        put back. A C-coil first stage (the per-coil-channel path) starts zero-filled."""
        if resolve_start(options) != "cs-wavelet" or masked.shape[1] != 1:
            return None
        from .cgs_refine import cs_start
        from .cs import resolve_settings

        cs = resolve_settings("cs-wavelet")
        x = cs_start(masked, mask, cs["lam"], cs["iterations"])  # [B, 1, H, W]
        k = fft2c(x).to(masked.dtype)
        return dc_project(k, masked, _as_mask(mask, masked), 1.0)

    def sample(
        self,
        masked: torch.Tensor,
        mask: torch.Tensor,
        options: SamplerOptions = SamplerOptions(),
        generator: torch.Generator | None = None,
        maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the sampler ``options.sampler`` (``cgs`` or ``cgs-ref``) seeded with
        ``options.seed`` (the interface of :meth:`.cpp.CppSampler.sample`).

        ``generator``: draw from this generator instead of a fresh one seeded with
        ``options.seed`` (a caller that chains several runs on one stream).
        ``maps [B|1, C, H, W]``: coil sensitivities for the coil-agnostic multi-coil path
        (a single-coil model on ``C``-coil data, :mod:`.sense_dc`; ``cgs`` only, with
        ``options.refine`` the SENSE refinement of :mod:`.cgs_refine`).
        """
        name = options.sampler
        if generator is None:
            generator = torch.Generator().manual_seed(options.seed)
        if maps is not None:
            if name != "cgs":
                raise InputError("sampler", f"coil-agnostic multi-coil needs cgs, not {name!r}")
            from .sense_dc import coil_agnostic_sample

            out = coil_agnostic_sample(self, masked, mask, maps, options, generator)
            if options.refine:  # the SENSE version of the CS-regularised final consistency
                from .cgs_refine import refine

                out = refine(out, masked, mask, options, maps=maps)
            return out
        if name == "cgs-ref":
            return self.cgs_ref(masked, mask, options, generator)
        start = self.start_kspace(masked, mask, options)
        out = self.cgs(masked, mask, options, generator, start=start)
        for _ in range(options.samples - 1):
            out = out + self.cgs(masked, mask, options, generator, start=start)
        # every sample equals the data on the measured samples, so their mean does too
        out = dc_project(out / options.samples, masked, _as_mask(mask, masked), 1.0)
        if options.refine:
            from .cgs_refine import refine

            out = refine(out, masked, mask, options)
        return out
