"""diffusers' DDPM and DDIM schedulers with the step fused into one native kernel.

:class:`FusedDDPMScheduler` and :class:`FusedDDIMScheduler` subclass diffusers' schedulers: same
config, ``set_timesteps``, ``add_noise``, ``previous_timestep``, ... Only ``step`` changes: it
computes the per-step coefficients on the host, mirroring diffusers' arithmetic on its float32
``alphas_cumprod`` (the same 0-dim tensor expressions, memoised per timestep, so the coefficients
are bit-identical), and runs :func:`kspace_ldm.ops.ddpm_step` /
:func:`kspace_ldm.ops.ddim_step`, which does the element-wise remainder in one pass. Noise is drawn
with diffusers' ``randn_tensor`` exactly when and how diffusers draws it, so
``Fused*.step(..., generator=g)`` equals ``*.step(..., generator=g)`` and leaves ``g`` in the same
state; ``noise=`` passes it explicitly instead.

Supported: prediction types epsilon / sample / v_prediction, clip_sample with clip_sample_range,
dynamic thresholding (``thresholding=True``: the per-sample quantile is taken on the host, the clamp
and division fused), DDPM variance types fixed_small, fixed_small_log and fixed_large, DDIM eta and
use_clipped_model_output, set_alpha_to_one. Not supported (``NotImplementedError``): DDPM
variance types learned / learned_range (they split a 2C-channel model output) and fixed_large_log
(diffusers' step takes the square root of log(beta_t) < 0 there and returns NaN for every t > 0).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from kspace_ldm import ops

_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
_DDPM_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")


def _coefficient_cache(scheduler) -> dict:
    """Per-scheduler memo of step coefficients, keyed by (t, prev_t, ...).

    The coefficients depend only on ``alphas_cumprod`` (and the scheduler's fixed config), so a
    sampling loop run for many slices pays the host arithmetic once per timestep. The memo is
    dropped when the scheduler replaces the tensor (``add_noise`` moves it to the sample's device:
    the values stay, but diffusers' arithmetic then runs on that device, see
    ``_step_coefficients``). Kept in ``__dict__`` directly: a missing attribute would go through
    diffusers' ``ConfigMixin.__getattr__`` (config lookup and deprecation warning).
    """
    source, memo = scheduler.__dict__.get("_kldm_coefficients", (None, None))
    if source is not scheduler.alphas_cumprod:
        memo = {}
        scheduler.__dict__["_kldm_coefficients"] = (scheduler.alphas_cumprod, memo)
    return memo


def _check_prediction_type(scheduler, name: str) -> str:
    p = scheduler.config.prediction_type
    if p not in _PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type given as {p} must be one of `epsilon`, `sample`, or `v_prediction` "
            f"for the {name}."
        )
    return p


def _threshold_limits(scheduler, x0: torch.Tensor) -> torch.Tensor:
    """Per-sample limits ``s_b`` of diffusers' ``_threshold_sample``, as a ``[B]`` tensor.

    The same ops as diffusers (quantile of ``|x0|`` over each sample in float32, or float64 for
    float64, clamped to ``[1, sample_max_value]``); the clamp and division happen in the kernel.
    """
    if x0.dim() < 2:
        raise ValueError(
            f"dynamic thresholding needs a [B, C, ...] sample, got shape {tuple(x0.shape)}"
        )
    if x0.dtype not in (torch.float32, torch.float64):
        x0 = x0.float()
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat, scheduler.config.dynamic_thresholding_ratio, dim=1)
    return torch.clamp(s, min=1, max=scheduler.config.sample_max_value)


def _unclipped_x0(model_output, sample, prediction_type, sa, sb) -> torch.Tensor:
    """The raw predicted x0 (first pass for dynamic thresholding), from the fused kernel itself."""
    _, x0 = ops.ddpm_step(
        model_output,
        sample,
        sqrt_alpha_prod_t=sa,
        sqrt_beta_prod_t=sb,
        pred_original_sample_coeff=0.0,
        current_sample_coeff=0.0,
        prediction_type=prediction_type,
    )
    return x0


def _resolve_noise(noise, generator, shape, device, dtype) -> torch.Tensor:
    if noise is not None:
        if generator is not None:
            raise ValueError(
                "Cannot pass both generator and noise. Please make sure that either `generator` "
                "or `noise` stays `None`."
            )
        return noise
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def _clip_or_threshold(scheduler, model_output, sample, prediction_type: str, k: dict):
    """(clip_sample, threshold) for the fused kernel, from the scheduler's config.

    Dynamic thresholding replaces clipping: its per-sample limits ``[B]`` come from the unclipped
    x0 estimate, computed on the host with diffusers' own ops so the quantiles match exactly.
    """
    if not scheduler.config.thresholding:
        return bool(scheduler.config.clip_sample), None
    x0 = _unclipped_x0(
        model_output, sample, prediction_type, k["sqrt_alpha_prod_t"], k["sqrt_beta_prod_t"]
    )
    return False, _threshold_limits(scheduler, x0)


class FusedDDPMScheduler(DDPMScheduler):
    """``DDPMScheduler`` whose :meth:`step` runs the fused ``kldm::ddpm_step`` kernel.

    Results equal ``DDPMScheduler.step`` bit for bit for float32/float64 on the CPU (same noise);
    bfloat16 is computed in float32 inside the kernel (more accurate than diffusers' bfloat16 op
    chain; see tests/test_ops_scheduler.py for the measured differences).
    """

    def step_coefficients(self, timestep: int | torch.Tensor) -> dict[str, float]:
        """The host coefficients of ``step`` at ``timestep``, as diffusers computes them.

        Returns a dict with the ``kldm::ddpm_step`` coefficient arguments ``sqrt_alpha_prod_t``,
        ``sqrt_beta_prod_t``, ``pred_original_sample_coeff``, ``current_sample_coeff`` and
        ``noise_std`` (0 at t == 0, where diffusers adds no noise), as Python floats.
        """
        variance_type = self.variance_type
        if variance_type in ("learned", "learned_range"):
            raise NotImplementedError(
                f"FusedDDPMScheduler: variance_type {variance_type!r} (a model-predicted variance) "
                f"is not supported; use one of {_DDPM_VARIANCE_TYPES} or diffusers' DDPMScheduler"
            )
        if variance_type not in _DDPM_VARIANCE_TYPES:
            raise NotImplementedError(
                f"FusedDDPMScheduler: variance_type {variance_type!r} is not supported (for "
                "fixed_large_log diffusers' step takes sqrt(log(beta_t)) of a negative number and "
                f"returns NaN for every t > 0); use one of {_DDPM_VARIANCE_TYPES}"
            )
        prev_t = self.previous_timestep(timestep)
        key = (int(timestep), int(prev_t), variance_type)
        memo = _coefficient_cache(self)
        if key not in memo:
            memo[key] = self._step_coefficients(timestep, prev_t)
        return dict(memo[key])

    def _step_coefficients(self, t, prev_t) -> dict[str, float]:
        # diffusers' DDPMScheduler.step, expression for expression, on the same 0-dim tensors of
        # alphas_cumprod's dtype and device: not only + - * / but also ** 0.5 must round as there
        # (torch's CPU float32 sqrt is not correctly rounded: ~20% of results differ from
        # NumPy's by 1 ulp), so the arithmetic is torch's own rather than a re-implementation.
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
        current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
        noise_std = 0.0
        if t > 0:
            if self.variance_type == "fixed_small_log":
                noise_std = self._get_variance(t)  # already exp(0.5 * log(variance))
            else:
                noise_std = self._get_variance(t) ** 0.5
        return {
            "sqrt_alpha_prod_t": float(alpha_prod_t**0.5),
            "sqrt_beta_prod_t": float(beta_prod_t**0.5),
            "pred_original_sample_coeff": float(pred_original_sample_coeff),
            "current_sample_coeff": float(current_sample_coeff),
            "noise_std": float(noise_std),
        }

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        *,
        noise: torch.Tensor | None = None,
    ) -> DDPMSchedulerOutput | tuple:
        """``DDPMScheduler.step`` in one fused kernel.

        Args:
            model_output: ``[B, C, ...]`` model prediction (float32/float64/bfloat16).
            timestep: current timestep ``t`` (int or 0-dim tensor).
            sample: ``x_t``, like ``model_output``.
            generator: draws the noise for t > 0 exactly like diffusers (``randn_tensor``).
            return_dict: return a ``DDPMSchedulerOutput`` (else a tuple).
            noise: ``N(0, 1)`` noise like ``sample`` instead of drawing it (used for t > 0 only);
                exclusive with ``generator``.

        Returns:
            ``DDPMSchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        prediction_type = _check_prediction_type(self, "DDPMScheduler")
        k = self.step_coefficients(timestep)
        step_noise = None
        if int(timestep) > 0:
            step_noise = _resolve_noise(
                noise, generator, model_output.shape, model_output.device, model_output.dtype
            )
        else:
            k["noise_std"] = 0.0
        clip_sample, threshold = _clip_or_threshold(self, model_output, sample, prediction_type, k)
        prev_sample, pred_original_sample = ops.ddpm_step(
            model_output,
            sample,
            step_noise,
            **k,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            clip_sample_range=float(self.config.clip_sample_range),
            threshold=threshold,
        )
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDPMSchedulerOutput(
            prev_sample=prev_sample, pred_original_sample=pred_original_sample
        )


class FusedDDIMScheduler(DDIMScheduler):
    """``DDIMScheduler`` whose :meth:`step` runs the fused ``kldm::ddim_step`` kernel.

    Results equal ``DDIMScheduler.step`` bit for bit for float32/float64 on the CPU (same noise).
    """

    def step_coefficients(self, timestep: int | torch.Tensor, eta: float = 0.0) -> dict[str, float]:
        """The host coefficients of ``step`` at ``timestep``, as diffusers computes them.

        Returns a dict with the ``kldm::ddim_step`` coefficient arguments ``sqrt_alpha_prod_t``,
        ``sqrt_beta_prod_t``, ``sqrt_alpha_prod_t_prev``, ``direction_coeff`` and ``noise_std``
        (``std_dev_t = eta * sqrt(variance)``), as Python floats.
        """
        if self.num_inference_steps is None:
            raise ValueError(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after "
                "creating the scheduler"
            )
        prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
        key = (int(timestep), int(prev_timestep), float(eta))
        memo = _coefficient_cache(self)
        if key not in memo:
            memo[key] = self._step_coefficients(timestep, prev_timestep, eta)
        return dict(memo[key])

    def _step_coefficients(self, timestep, prev_timestep, eta) -> dict[str, float]:
        # diffusers' DDIMScheduler.step, expression for expression, on the same 0-dim tensors (see
        # FusedDDPMScheduler._step_coefficients for why torch does the arithmetic).
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (
            self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        )
        beta_prod_t = 1 - alpha_prod_t
        variance = self._get_variance(timestep, prev_timestep)
        std_dev_t = eta * variance ** (0.5)
        direction_coeff = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5)
        return {
            "sqrt_alpha_prod_t": float(alpha_prod_t**0.5),
            "sqrt_beta_prod_t": float(beta_prod_t**0.5),
            "sqrt_alpha_prod_t_prev": float(alpha_prod_t_prev**0.5),
            "direction_coeff": float(direction_coeff),
            "noise_std": float(std_dev_t),
        }

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
        *,
        noise: torch.Tensor | None = None,
    ) -> DDIMSchedulerOutput | tuple:
        """``DDIMScheduler.step`` in one fused kernel.

        Args:
            model_output: ``[B, C, ...]`` model prediction (float32/float64/bfloat16).
            timestep: current timestep ``t`` (int or 0-dim tensor).
            sample: ``x_t``, like ``model_output``.
            eta: noise weight; 0 is deterministic DDIM, and noise is drawn/used only when eta > 0.
            use_clipped_model_output: re-derive the noise prediction from the clipped x0.
            generator: draws the noise exactly like diffusers (``randn_tensor``).
            variance_noise: ``N(0, 1)`` noise like ``sample`` instead of drawing it.
            return_dict: return a ``DDIMSchedulerOutput`` (else a tuple).
            noise: alias of ``variance_noise`` (the name :class:`FusedDDPMScheduler` uses).

        Returns:
            ``DDIMSchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        if noise is not None:
            if variance_noise is not None:
                raise ValueError("pass the noise as `variance_noise` or `noise`, not both")
            variance_noise = noise
        k = self.step_coefficients(timestep, eta)
        prediction_type = _check_prediction_type(self, "DDIMScheduler")
        step_noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError(
                    "Cannot pass both generator and variance_noise. Please make sure that either "
                    "`generator` or `variance_noise` stays `None`."
                )
            step_noise = _resolve_noise(
                variance_noise,
                generator,
                model_output.shape,
                model_output.device,
                model_output.dtype,
            )
        else:
            k["noise_std"] = 0.0
        clip_sample, threshold = _clip_or_threshold(self, model_output, sample, prediction_type, k)
        prev_sample, pred_original_sample = ops.ddim_step(
            model_output,
            sample,
            step_noise,
            **k,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            clip_sample_range=float(self.config.clip_sample_range),
            use_clipped_model_output=bool(use_clipped_model_output),
            threshold=threshold,
        )
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDIMSchedulerOutput(
            prev_sample=prev_sample, pred_original_sample=pred_original_sample
        )
