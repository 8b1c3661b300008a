"""kldm::ddpm_step / kldm::ddim_step and the Fused diffusers schedulers.

Parity with diffusers' DDPMScheduler.step / DDIMScheduler.step (same noise, same generator state),
with the pure-PyTorch twins, bfloat16 behaviour, opcheck, export and errors.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import devices, seed_of

import kspace_ldm.ops as ops
from kspace_ldm.ops import _reference as ref

# diffusers is a dependency of kspace-ldm, but the CUDA compile check's venv
# (ci/requirements-cuda.txt) has only torch: there the op tests run and the diffusers parity
# tests skip.
HAVE_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
needs_diffusers = pytest.mark.skipif(not HAVE_DIFFUSERS, reason="needs diffusers")
if HAVE_DIFFUSERS:
    from diffusers import DDIMScheduler, DDPMScheduler

    from kspace_ldm.sampling import FusedDDIMScheduler, FusedDDPMScheduler

SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]
PREDICTIONS = ["epsilon", "sample", "v_prediction"]
DDPM_VARIANCES = ["fixed_small", "fixed_small_log", "fixed_large"]
SHAPE = (2, 3, 5, 4)  # [B, C, H, W], odd and even spatial sizes


def _inputs(shape, dtype, device, seed, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    m = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)
    s = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)
    return m, s


def _assert_matches(got, want, device, what):
    """Fused step vs diffusers' step.

    CPU: bit-identical (measured worst case over every parametrisation of this file: 0 ulp for
    float32 and float64; the host coefficients are diffusers' own 0-dim expressions and the kernel
    performs diffusers' ops in diffusers' order, each rounded once).
    CUDA: diffusers' eager CUDA ops turn a division by a CPU 0-dim tensor into a multiplication by
    its reciprocal, which the kernel does not copy (it divides, like diffusers on the CPU): a few
    ulps of the largest term, bounded here by 8 ulps of max |want|.
    """
    for name in ("prev_sample", "pred_original_sample"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, (what, name)
        if device == "cpu":
            assert torch.equal(a, b), (what, name, float((a - b).abs().max()))
        else:
            tol = 8 * torch.finfo(b.dtype).eps * max(float(b.abs().max()), 1.0)
            assert float((a - b).abs().max()) <= tol, (what, name)


def _ddpm_pair(**config):
    return DDPMScheduler(**config), FusedDDPMScheduler(**config)


def _ddim_pair(steps, **config):
    a, b = DDIMScheduler(**config), FusedDDIMScheduler(**config)
    a.set_timesteps(steps)
    b.set_timesteps(steps)
    return a, b


# ---- parity with diffusers -----------------------------------------------------------------------


@needs_diffusers
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("variance_type", DDPM_VARIANCES)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_ddpm_matches_diffusers(beta_schedule, prediction_type, variance_type, clip, device):
    config = dict(
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        variance_type=variance_type,
        clip_sample=clip,
        clip_sample_range=1.5 if clip else 1.0,
    )
    # The default 1000 training steps (prev_t = t - 1) and set_timesteps(50) (prev_t from the
    # table; its last step has prev_t = -1): first, middle and last timesteps of each.
    for steps in (None, 50):
        a, b = _ddpm_pair(**config)
        if steps is None:
            timesteps = [999, 500, 1, 0]
        else:
            a.set_timesteps(steps)
            b.set_timesteps(steps)
            timesteps = [a.timesteps[0], a.timesteps[24], a.timesteps[-1]]
        for dtype in (torch.float32, torch.float64):
            for t in timesteps:
                key = (
                    beta_schedule,
                    prediction_type,
                    variance_type,
                    clip,
                    steps,
                    str(dtype),
                    int(t),
                )
                m, s = _inputs(SHAPE, dtype, device, seed_of(*key))
                ga = torch.Generator().manual_seed(seed_of("g", *key))
                gb = torch.Generator().manual_seed(seed_of("g", *key))
                want = a.step(m, t, s, generator=ga)
                got = b.step(m, t, s, generator=gb)
                _assert_matches(got, want, device, key)
                # The noise is drawn exactly when and as diffusers draws it.
                assert torch.equal(ga.get_state(), gb.get_state()), key


@needs_diffusers
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_ddim_matches_diffusers(beta_schedule, prediction_type, clip, device):
    for set_alpha_to_one in (True, False):
        config = dict(
            beta_schedule=beta_schedule,
            prediction_type=prediction_type,
            clip_sample=clip,
            set_alpha_to_one=set_alpha_to_one,
        )
        for steps in (50, 1000):
            a, b = _ddim_pair(steps, **config)
            for dtype in (torch.float32, torch.float64):
                for t in (a.timesteps[0], a.timesteps[steps // 2], a.timesteps[-1]):
                    for eta in (0.0, 0.5):
                        for use_clipped in (False, True):
                            key = (*config.values(), steps, str(dtype), int(t), eta, use_clipped)
                            m, s = _inputs(SHAPE, dtype, device, seed_of(*key))
                            ga = torch.Generator().manual_seed(7)
                            gb = torch.Generator().manual_seed(7)
                            kw = dict(eta=eta, use_clipped_model_output=use_clipped)
                            want = a.step(m, t, s, generator=ga, **kw)
                            got = b.step(m, t, s, generator=gb, **kw)
                            _assert_matches(got, want, device, key)
                            assert torch.equal(ga.get_state(), gb.get_state()), key


@needs_diffusers
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_dynamic_thresholding_matches_diffusers(prediction_type, device):
    # Per-sample quantile on the host (diffusers' own ops), clamp and division in the kernel.
    config = dict(
        prediction_type=prediction_type,
        thresholding=True,
        dynamic_thresholding_ratio=0.9,
        sample_max_value=2.5,
    )
    for cls_a, cls_b, kw in (
        (DDPMScheduler, FusedDDPMScheduler, {}),
        (DDIMScheduler, FusedDDIMScheduler, {"eta": 0.7, "use_clipped_model_output": True}),
    ):
        a, b = cls_a(**config), cls_b(**config)
        a.set_timesteps(50)
        b.set_timesteps(50)
        for dtype in (torch.float32, torch.float64):
            for t in (a.timesteps[0], a.timesteps[30], a.timesteps[-1]):
                key = (cls_a.__name__, prediction_type, str(dtype), int(t))
                m, s = _inputs((3, 2, 7, 6), dtype, device, seed_of(*key), scale=2.0)
                want = a.step(m, t, s, generator=torch.Generator().manual_seed(3), **kw)
                got = b.step(m, t, s, generator=torch.Generator().manual_seed(3), **kw)
                _assert_matches(got, want, device, key)


@needs_diffusers
@pytest.mark.parametrize("device", devices())
def test_ddpm_spacings_custom_timesteps_and_explicit_noise(device):
    # trailing spacing ends at t = 19 > 0 with prev_t = -1 (noise with variance clamped to 1e-20);
    # custom timesteps; rescaled zero-terminal-SNR betas; explicit noise= instead of a generator.
    for config, setup in (
        (dict(timestep_spacing="trailing"), lambda s: s.set_timesteps(50)),
        (dict(timestep_spacing="linspace", steps_offset=1), lambda s: s.set_timesteps(7)),
        ({}, lambda s: s.set_timesteps(timesteps=[900, 640, 333, 50, 3])),
        (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"), lambda s: None),
    ):
        a, b = _ddpm_pair(**config)
        setup(a)
        setup(b)
        for t in list(a.timesteps[:2]) + list(a.timesteps[-2:]):
            m, s = _inputs(SHAPE, torch.float32, device, seed_of(str(config), int(t)))
            noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(int(t))).to(device)
            want = a.step(m, t, s, generator=torch.Generator().manual_seed(int(t)))
            got = b.step(m, t, s, noise=noise)
            _assert_matches(got, want, device, (config, int(t)))


@needs_diffusers
@pytest.mark.parametrize("device", devices())
def test_ddim_variance_noise_and_alias(device):
    a, b = _ddim_pair(20, prediction_type="v_prediction", clip_sample=True)
    m, s = _inputs(SHAPE, torch.float32, device, 11)
    n = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)).to(device)
    t = a.timesteps[5]
    want = a.step(m, t, s, eta=1.0, variance_noise=n)
    _assert_matches(b.step(m, t, s, eta=1.0, variance_noise=n), want, device, "variance_noise")
    _assert_matches(b.step(m, t, s, eta=1.0, noise=n), want, device, "noise")
    # eta == 0: no noise term, the noise argument is ignored (as in diffusers).
    want0 = a.step(m, t, s, eta=0.0, variance_noise=n)
    _assert_matches(b.step(m, t, s, eta=0.0, variance_noise=n), want0, device, "eta 0")


@needs_diffusers
@pytest.mark.parametrize("device", devices())
def test_sampling_loops_match_diffusers(device):
    # Whole sampling loops with a fixed fake "model": the step errors would compound.
    def model(x, t):
        return torch.tanh(0.7 * x) + 1e-3 * float(t)

    for cls_a, cls_b, kw in (
        (DDPMScheduler, FusedDDPMScheduler, {}),
        (DDIMScheduler, FusedDDIMScheduler, {"eta": 0.3}),
    ):
        a, b = cls_a(beta_schedule="scaled_linear"), cls_b(beta_schedule="scaled_linear")
        a.set_timesteps(25)
        b.set_timesteps(25)
        x0 = torch.randn(2, 4, 12, 10, generator=torch.Generator().manual_seed(1)).to(device)
        xa, xb = x0.clone(), x0.clone()
        ga, gb = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
        for t in a.timesteps:
            xa = a.step(model(xa, t), t, xa, generator=ga, **kw).prev_sample
            xb = b.step(model(xb, t), t, xb, generator=gb, **kw).prev_sample
        if device == "cpu":
            assert torch.equal(xa, xb), cls_a.__name__
        else:
            torch.testing.assert_close(xb, xa, rtol=1e-5, atol=1e-5)


@needs_diffusers
def test_coefficients_follow_alphas_cumprod_moves_and_return_tuple():
    # add_noise replaces alphas_cumprod (moved to the sample's device): the memo is refreshed.
    a, b = _ddpm_pair()
    m, s = _inputs(SHAPE, torch.float32, "cpu", 3)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    b.step(m, 10, s, noise=noise)
    b.add_noise(s.double(), noise.double(), torch.tensor([10]))
    a.add_noise(s.double(), noise.double(), torch.tensor([10]))
    got = b.step(m, torch.tensor(10), s, noise=noise, return_dict=False)
    want = a.step(m, torch.tensor(10), s, generator=torch.Generator().manual_seed(1))
    assert isinstance(got, tuple) and len(got) == 2
    assert torch.equal(got[0], want.prev_sample) and torch.equal(got[1], want.pred_original_sample)


# ---- bfloat16 ------------------------------------------------------------------------------------


@needs_diffusers
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_bfloat16(prediction_type, device):
    # diffusers' bf16 step is a chain of eager bf16 ops, each rounding to bf16 (the 0-dim float32
    # coefficients are applied at float32 precision on the CPU): several bf16 roundings. The kernel
    # computes in float32 and rounds once, so it equals the float32 step on the upcast inputs,
    # rounded to bf16, exactly.
    # The two differ by diffusers' extra roundings, which scale with its largest intermediate:
    # max |.| over inputs, outputs and the unclipped x0 (clipping hides how large the rounded terms
    # were), divided by sqrt(a_t) for epsilon prediction. Measured worst |fused - diffusers_bf16|
    # over the cases below: 6.9e-3 of that scale (0.9 bf16 ulp); bound: 2 bf16 ulps (2^-6).
    for cls_a, cls_b, kw in (
        (DDPMScheduler, FusedDDPMScheduler, {}),
        (DDIMScheduler, FusedDDIMScheduler, {"eta": 0.5}),
    ):
        for clip in (False, True):
            config = dict(prediction_type=prediction_type, clip_sample=clip)
            a, b = cls_a(**config), cls_b(**config)
            raw = cls_b(prediction_type=prediction_type)  # unclipped: the scale of intermediates
            for x in (a, b, raw):
                x.set_timesteps(50)
            for t in (a.timesteps[0], a.timesteps[25], a.timesteps[-1]):
                key = (cls_a.__name__, prediction_type, clip, int(t))
                m, s = _inputs(SHAPE, torch.bfloat16, device, seed_of(*key))
                noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)).to(device)
                noise = noise.bfloat16()
                nkw = {"variance_noise": noise} if cls_a is DDIMScheduler else {}
                if cls_a is DDIMScheduler:
                    want = a.step(m, t, s, **kw, **nkw)
                else:
                    want = a.step(m, t, s, generator=torch.Generator().manual_seed(1))
                    noise = torch.randn(
                        SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.bfloat16
                    ).to(device)
                got = b.step(m, t, s, noise=noise, **kw)
                f32 = b.step(m.float(), t, s.float(), noise=noise.float(), **kw)
                unclipped = raw.step(m.float(), t, s.float(), noise=noise.float(), **kw)
                # epsilon: x0 = (s - sqrt(1-a_t) m) / sqrt(a_t) divides a rounded difference of
                # input-sized terms by sqrt(a_t).
                inputs = max(float(m.abs().max()), float(s.abs().max()))
                amplify = 1.0
                if prediction_type == "epsilon":
                    amplify = b.step_coefficients(t)["sqrt_alpha_prod_t"]
                for name in ("prev_sample", "pred_original_sample"):
                    g, w, x, u = (getattr(r, name) for r in (got, want, f32, unclipped))
                    assert g.dtype == torch.bfloat16
                    assert torch.equal(g, x.bfloat16()), (key, name)
                    scale = max(float(x.abs().max()), float(u.abs().max()), inputs) / amplify
                    err = float((g.float() - w.float()).abs().max()) / scale
                    assert err <= 2.0**-6, (key, name, err)


# ---- the ops against their twins ---------------------------------------------------------------


def _coeffs(kind, gen):
    r = torch.rand(5, generator=gen, dtype=torch.float64).tolist()
    names = (
        ("pred_original_sample_coeff", "current_sample_coeff")
        if kind == "ddpm"
        else ("sqrt_alpha_prod_t_prev", "direction_coeff")
    )
    return {
        "sqrt_alpha_prod_t": 0.05 + r[0],
        "sqrt_beta_prod_t": 0.05 + r[1],
        names[0]: r[2],
        names[1]: r[3],
        "noise_std": r[4],
    }


OP_SHAPES = [(7,), (4, 9), (2, 3, 5, 6), (3, 2, 4, 7, 5)]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", OP_SHAPES)
@pytest.mark.parametrize("kind", ["ddpm", "ddim", "ddim_clipped"])
def test_ops_match_reference(kind, shape, dtype, device):
    gen = torch.Generator().manual_seed(seed_of(kind, shape, str(dtype)))
    op, twin = (ops.ddpm_step, ref.ddpm_step) if kind == "ddpm" else (ops.ddim_step, ref.ddim_step)
    extra = {} if kind == "ddpm" else {"use_clipped_model_output": kind == "ddim_clipped"}
    for pred in PREDICTIONS:
        for with_noise in (False, True):
            for limit in ("none", "clip", "threshold"):
                if limit == "threshold" and len(shape) < 2:
                    continue
                k = _coeffs(kind, gen)
                m = (2 * torch.randn(shape, generator=gen)).to(dtype).to(device)
                s = (2 * torch.randn(shape, generator=gen)).to(dtype).to(device)
                n = torch.randn(shape, generator=gen).to(dtype).to(device) if with_noise else None
                if not with_noise:
                    k["noise_std"] = 0.0
                th = None
                if limit == "threshold":
                    th = (1 + torch.rand(shape[0], generator=gen)).to(device)
                kw = dict(
                    prediction_type=pred,
                    clip_sample=limit == "clip",
                    clip_sample_range=0.8,
                    threshold=th,
                    **extra,
                )
                got = op(m, s, n, **k, **kw)
                want = twin(m, s, n, **k, **kw)
                for g, w in zip(got, want, strict=True):
                    assert g.shape == s.shape and g.dtype == dtype and g.is_contiguous()
                    # CPU: same ops in the same order, each rounded once: exact (measured max
                    # difference 0 for every dtype). CUDA: the kernel rounds each op too
                    # (__*_rn), so it is exact up to how eager CUDA ops round; 4 ulps of max|w|.
                    if device == "cpu":
                        assert torch.equal(g, w), (pred, with_noise, limit)
                    else:
                        eps = torch.finfo(dtype).eps
                        tol = 4 * eps * max(float(w.abs().max()), 1.0)
                        assert float((g.float() - w.float()).abs().max()) <= tol


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(5)
    base_m = torch.randn(4, 3, 11, 8, generator=gen)
    base_s = torch.randn(4, 3, 8, 22, generator=gen)
    m = base_m.transpose(-1, -2)  # [4, 3, 8, 11], transposed
    s = base_s[..., ::2]  # [4, 3, 8, 11], strided
    n = torch.randn(3, 4, 8, 11, generator=gen).transpose(0, 1)
    assert not (m.is_contiguous() or s.is_contiguous() or n.is_contiguous())
    th = (1 + torch.rand(8, generator=gen))[::2]
    k = _coeffs("ddim", gen)
    for kw in ({"clip_sample": True}, {"threshold": th}):
        got = ops.ddim_step(m, s, n, **k, prediction_type="v_prediction", **kw)
        mc, sc, nc = m.contiguous(), s.contiguous(), n.contiguous()
        want = ref.ddim_step(mc, sc, nc, **k, prediction_type="v_prediction", **kw)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_linearity_without_clipping():
    # Without clipping the step is linear in (model_output, sample, noise).
    gen = torch.Generator().manual_seed(9)
    k = _coeffs("ddpm", gen)
    x = [torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64) for _ in range(6)]
    a, c = 0.7, -1.3
    for pred in PREDICTIONS:
        lhs = ops.ddpm_step(
            a * x[0] + c * x[3], a * x[1] + c * x[4], a * x[2] + c * x[5], **k, prediction_type=pred
        )
        r1 = ops.ddpm_step(x[0], x[1], x[2], **k, prediction_type=pred)
        r2 = ops.ddpm_step(x[3], x[4], x[5], **k, prediction_type=pred)
        for lo, p, q in zip(lhs, r1, r2, strict=True):
            # float64, O(1) values: measured max deviation 3.6e-15.
            torch.testing.assert_close(lo, a * p + c * q, rtol=1e-12, atol=1e-12)


def test_empty_and_scalar_shapes():
    k = _coeffs("ddpm", torch.Generator().manual_seed(0))
    e = torch.zeros(0, 3, 4)
    prev, x0 = ops.ddpm_step(e, e, e, **k)
    assert prev.shape == x0.shape == (0, 3, 4)
    z = torch.tensor(0.25)
    prev, x0 = ops.ddpm_step(z, z, z, **k, clip_sample=True)
    want = ref.ddpm_step(z, z, z, **k, clip_sample=True)
    assert prev.shape == () and torch.equal(prev, want[0]) and torch.equal(x0, want[1])


def test_nan_propagates_through_clip():
    # torch.clamp keeps NaN; so do the kernel's clip and its "no clip" (clamp to +-inf).
    k = _coeffs("ddpm", torch.Generator().manual_seed(0))
    m = torch.tensor([float("nan"), 3.0, -3.0, float("inf")])
    s = torch.zeros(4)
    for clip in (False, True):
        got = ops.ddpm_step(
            m, s, **dict(k, noise_std=0.0), prediction_type="sample", clip_sample=clip
        )
        want = ref.ddpm_step(
            m, s, None, **dict(k, noise_std=0.0), prediction_type="sample", clip_sample=clip
        )
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


# ---- opcheck / export ----------------------------------------------------------------------------


def test_opcheck():
    # The steps are sampling updates with no autograd formula (see kspace_ldm/ops/_meta.py), so
    # opcheck runs on inputs that do not require grad.
    gen = torch.Generator().manual_seed(2)
    m, s, n = (torch.randn(2, 3, 5, 4, generator=gen) for _ in range(3))
    th = 1 + torch.rand(2, generator=gen)
    kp, ki = _coeffs("ddpm", gen), _coeffs("ddim", gen)
    ddpm, ddim = torch.ops.kldm.ddpm_step.default, torch.ops.kldm.ddim_step.default
    kp, ki = list(kp.values()), list(ki.values())
    cases = [
        (ddpm, (m, s, n, *kp, "epsilon", True, 1.0, None)),
        (ddpm, (m.double(), s.double(), None, *kp[:4], 0.0, "v_prediction", False, 1.0, th)),
        (ddim, (m, s, n, *ki, "sample", True, 1.5, True, None)),
        (ddim, (m.bfloat16(), s.bfloat16(), n.bfloat16(), *ki, "epsilon", False, 1.0, False, th)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_export_keeps_ops_in_graph():
    class Step(torch.nn.Module):
        def forward(self, m, s, n):
            prev, _ = ops.ddim_step(
                m,
                s,
                n,
                sqrt_alpha_prod_t=0.8,
                sqrt_beta_prod_t=0.6,
                sqrt_alpha_prod_t_prev=0.9,
                direction_coeff=0.4,
                noise_std=0.1,
                prediction_type="v_prediction",
            )
            return ops.ddpm_step(
                prev,
                s,
                None,
                sqrt_alpha_prod_t=0.7,
                sqrt_beta_prod_t=0.71,
                pred_original_sample_coeff=0.3,
                current_sample_coeff=0.6,
                clip_sample=True,
            )

    gen = torch.Generator().manual_seed(4)
    m, s, n = (torch.randn(1, 2, 6, 5, generator=gen) for _ in range(3))
    ep = torch.export.export(Step(), (m, s, n))
    graph = str(ep.graph)
    assert "kldm.ddim_step" in graph and "kldm.ddpm_step" in graph
    got = ep.module()(m, s, n)
    want = Step()(m, s, n)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


# ---- errors --------------------------------------------------------------------------------------


def _k():
    return dict(
        sqrt_alpha_prod_t=0.5,
        sqrt_beta_prod_t=0.8,
        pred_original_sample_coeff=0.3,
        current_sample_coeff=0.9,
    )


@pytest.mark.parametrize(
    ("mutate", "exc", "msg"),
    [
        (lambda a: a.update(sample=a["sample"].half()), TypeError, "sample must be float32"),
        (lambda a: a.update(sample=a["sample"].int()), TypeError, "sample must be float32"),
        (
            lambda a: a.update(model_output=a["model_output"].double()),
            TypeError,
            "model_output must have sample's dtype",
        ),
        (
            lambda a: a.update(model_output=a["model_output"][:, :1]),
            ValueError,
            r"model_output shape \[2, 1, 5, 4\] does not match sample shape \[2, 3, 5, 4\]",
        ),
        (lambda a: a.update(noise=torch.zeros(2, 3, 4, 5)), ValueError, "noise shape"),
        (lambda a: a.update(noise=torch.zeros(2, 3, 5, 4).double()), TypeError, "noise must have"),
        (lambda a: a.update(noise=None), ValueError, "no noise tensor was given"),
        (lambda a: a.update(prediction_type="flow"), ValueError, "prediction_type must be"),
        (
            lambda a: a.update(clip_sample=True, clip_sample_range=-1.0),
            ValueError,
            "clip_sample_range must be >= 0",
        ),
        (
            lambda a: a.update(threshold=torch.ones(3)),
            ValueError,
            r"threshold must have shape \[B\]",
        ),
        (lambda a: a.update(threshold=torch.ones(2, 1)), ValueError, "threshold must have shape"),
        (
            lambda a: a.update(threshold=torch.ones(2, dtype=torch.int32)),
            TypeError,
            "threshold must be floating point",
        ),
        (
            lambda a: a.update(threshold=torch.ones(2), clip_sample=True),
            ValueError,
            "clip_sample and threshold are exclusive",
        ),
    ],
)
def test_op_errors(mutate, exc, msg):
    args = dict(
        model_output=torch.zeros(2, 3, 5, 4),
        sample=torch.zeros(2, 3, 5, 4),
        noise=torch.zeros(2, 3, 5, 4),
        noise_std=0.5,
        **_k(),
    )
    mutate(args)
    with pytest.raises(exc, match=msg):
        ops.ddpm_step(**args)
    k = dict(args)
    k["sqrt_alpha_prod_t_prev"] = k.pop("pred_original_sample_coeff")
    k["direction_coeff"] = k.pop("current_sample_coeff")
    with pytest.raises(exc, match=msg.replace("ddpm", "ddim")):
        ops.ddim_step(**k)


@needs_diffusers
def test_scheduler_errors():
    m = torch.zeros(1, 2, 3, 3)
    for variance_type in ("learned", "learned_range", "fixed_large_log"):
        with pytest.raises(NotImplementedError, match=variance_type):
            FusedDDPMScheduler(variance_type=variance_type).step(m, 5, m)
    with pytest.raises(ValueError, match="must be one of"):
        FusedDDPMScheduler(prediction_type="flow").step(m, 5, m)
    with pytest.raises(ValueError, match="either `generator` or `noise`"):
        FusedDDPMScheduler().step(m, 5, m, generator=torch.Generator(), noise=m)
    with pytest.raises(ValueError, match="set_timesteps"):
        FusedDDIMScheduler().step(m, 5, m)
    d = FusedDDIMScheduler()
    d.set_timesteps(10)
    with pytest.raises(ValueError, match="either `generator` or `variance_noise`"):
        d.step(m, 901, m, eta=0.5, generator=torch.Generator(), variance_noise=m)
    with pytest.raises(ValueError, match="not both"):
        d.step(m, 901, m, eta=0.5, variance_noise=m, noise=m)
    with pytest.raises(TypeError, match="sample must be float32"):
        d.step(m.half(), 901, m.half())
    with pytest.raises(ValueError, match=r"\[B, C, \.\.\.\] sample"):
        FusedDDPMScheduler(thresholding=True).step(m[0, 0, 0], 5, m[0, 0, 0], noise=m[0, 0, 0])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_error():
    m = torch.zeros(2, 3, 5, 4)
    with pytest.raises(ValueError, match="is on"):
        ops.ddpm_step(m, m.cuda(), None, **_k())
    with pytest.raises(ValueError, match="threshold is on"):
        ops.ddim_step(
            m.cuda(),
            m.cuda(),
            None,
            sqrt_alpha_prod_t=0.5,
            sqrt_beta_prod_t=0.8,
            sqrt_alpha_prod_t_prev=0.3,
            direction_coeff=0.9,
            threshold=torch.ones(2),
        )
