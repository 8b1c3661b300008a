"""First-stage models, k-space normalisation and losses (fast unit tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kspace_ldm.errors import InputError
from kspace_ldm.metrics import ssim as ssim_metric
from kspace_ldm.models import (
    FirstStageLoss,
    KspaceAutoencoder,
    KspaceAutoencoderKL,
    KspaceNormalizer,
    LossConfig,
    UNet,
    WeightedSSIMKspaceAutoencoder,
    WeightedSSIMKspaceAutoencoderKL,
    create_channels,
)
from kspace_ldm.models.discriminator import NLayerDiscriminator, hinge_d_loss
from kspace_ldm.models.losses import ssim_loss
from kspace_ldm.physics import fft2c, kspace_to_image


def _kspace(gen, b=2, c=1, h=40, w=36):
    img = torch.randn(b, c, h, w, generator=gen, dtype=torch.complex64)
    # a smooth, centred object so k-space has the real dynamic range
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = torch.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 6) ** 2))
    return fft2c(blob.to(torch.complex64) * (1 + 0.1 * img))


def test_create_channels_matches_reference():
    assert create_channels([2, 4]) == (128, 256, 512)
    assert create_channels([1, 2, 4]) == (128, 128, 256, 512)
    assert create_channels([1, 2, 2, 4]) == (128, 128, 256, 256, 512)


@pytest.mark.parametrize("levels,factor", [(2, 2), (3, 4), (4, 8)])
def test_autoencoder_latent_shape_and_exact_unpad(levels, factor, gen):
    chans = [8, 16, 16, 16][:levels]
    m = KspaceAutoencoder(2, chans, 4, 1, 4, False)
    assert m.downsample == factor
    x = torch.randn(2, 2, 37, 29, generator=gen)  # not multiples of the factor
    enc = m.encode(x)
    ph, pw = enc.pad.padded_size
    assert ph % factor == 0 and pw % factor == 0
    assert enc.z.shape == (2, 4, ph // factor, pw // factor)
    out = m.decode(enc)
    assert out.shape == x.shape


def test_decoder_channel_order_is_correct():
    """The widest level sits at the bottleneck and the narrowest at full resolution (the
    reference's pre-reversed list produced the opposite)."""
    m = KspaceAutoencoder(2, (8, 16, 32), 4, 1, 4, False)
    assert m.decoder.conv_in.out_channels == 32
    assert m.decoder.conv_out.in_channels == 8
    assert m.encoder.conv_in.out_channels == 8


def test_kl_posterior_sample_and_mode(gen):
    m = KspaceAutoencoderKL(2, (8, 16), 4, 1, 4, False, sample_posterior=True)
    x = torch.randn(1, 2, 16, 16, generator=gen)
    enc_s = m.encode(x, generator=torch.Generator().manual_seed(0))
    enc_m = m.encode(x, sample=False)
    assert enc_m.mean is not None and enc_m.logvar is not None
    assert enc_m.mean.shape == enc_m.z.shape == (1, 4, 8, 8)
    torch.testing.assert_close(enc_m.z, enc_m.mean)
    assert not torch.allclose(enc_s.z, enc_s.mean)
    assert m.decode(enc_m).shape == x.shape
    # the decoder's last layer is narrow (correct order in AutoencoderKL too)
    assert m.last_layer.shape[1] == 8


def test_weighted_ssim_families_default_weight():
    assert WeightedSSIMKspaceAutoencoder.default_ssim_weight == 0.7
    assert WeightedSSIMKspaceAutoencoderKL.default_ssim_weight == 0.7
    assert KspaceAutoencoder.default_ssim_weight == 0.0


@pytest.mark.parametrize("residuals", [True, False])
def test_unet_variants(residuals, gen):
    m = UNet(2, chans=4, num_pool_layers=2, latent_dim=3, with_residuals=residuals)
    x = torch.randn(2, 2, 21, 18, generator=gen)
    out, enc = m(x)
    assert out.shape == x.shape
    assert enc.z.shape == (2, 3, 24 // 4, 20 // 4)
    if residuals:
        with pytest.raises(InputError, match="skip connections"):
            m.decode(enc.z)
    else:
        assert m.decode(enc.z, enc.pad).shape == x.shape


def test_bad_input_channels():
    m = KspaceAutoencoder(2, (8, 16), 4, 1, 4, False)
    with pytest.raises(InputError, match=r"\[B, 2, H, W\]"):
        m.encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(InputError, match="norm_num_groups"):
        KspaceAutoencoder(2, (6, 16), 4, 1, 4, False)


@pytest.mark.parametrize("mode", ["rms", "standardize", "acs", "none"])
@pytest.mark.parametrize("weighting", ["none", "radial", "log"])
def test_normalizer_roundtrip(mode, weighting, gen):
    k = _kspace(gen, c=2)
    n = KspaceNormalizer(mode=mode, weighting=weighting)
    x, stats = n.normalize(k)
    assert x.shape == (2, 4, 40, 36) and x.dtype == torch.float32
    torch.testing.assert_close(n.denormalize(x, stats), k, rtol=1e-5, atol=1e-6 * k.abs().max())


def test_acs_scale_only_uses_calibration_columns(gen):
    """The ACS statistic must be computable from undersampled data: zeroing every
    non-calibration column leaves it unchanged."""
    k = _kspace(gen)
    n = KspaceNormalizer(mode="acs", acs_fraction=0.1)
    cols = n.acs_columns(k.shape[-1])
    masked = torch.zeros_like(k)
    masked[..., cols] = k[..., cols]
    _, s_full = n.normalize(k)
    _, s_masked = n.normalize(masked)
    torch.testing.assert_close(s_full.scale, s_masked.scale)
    assert cols.stop - cols.start == round(0.1 * 36)


def test_to_image_matches_physics(gen):
    k = _kspace(gen)
    n = KspaceNormalizer(mode="standardize")
    x, stats = n.normalize(k)
    img = n.to_image(x, stats, (20, 20))
    torch.testing.assert_close(img, kspace_to_image(k, (20, 20), coil_dim=1), rtol=1e-4, atol=1e-6)


def test_ssim_loss_matches_fastmri_metric(gen):
    a = torch.rand(3, 1, 30, 30, generator=gen, dtype=torch.float64)
    b = (a + 0.1 * torch.rand(3, 1, 30, 30, generator=gen, dtype=torch.float64)).clamp(0, 1)
    got = 1 - ssim_loss(b, a, 1.0).item()
    want = np.mean([ssim_metric(a[i].numpy(), b[i].numpy(), 1.0) for i in range(3)])
    assert got == pytest.approx(want, abs=1e-6)
    assert ssim_loss(a, a, 1.0).item() == pytest.approx(0.0, abs=1e-9)


def test_loss_terms_are_means_with_weights(gen):
    """Doubling the batch with copies leaves every term unchanged (means, not sums), and the
    SSIM term enters with exactly its weight."""
    k = _kspace(gen)
    n = KspaceNormalizer(mode="acs")
    x, stats = n.normalize(k)
    x_hat = x + 0.05 * torch.randn(x.shape, generator=gen)
    m = KspaceAutoencoder(2, (8, 16), 4, 1, 4, False)
    enc = m.encode(x)

    def loss_with(cfg, xs, xh, st):
        return FirstStageLoss(cfg, n).generator_loss(xs, xh, enc, st, (20, 20), 0)

    cfg0 = LossConfig(kspace="l1", ssim_weight=0.0, image_l1_weight=0.0, kl_weight=0)
    cfg1 = LossConfig(kspace="l1", ssim_weight=0.7, image_l1_weight=0.0, kl_weight=0)
    l0, _logs0, _ = loss_with(cfg0, x, x_hat, stats)
    l1, logs1, _ = loss_with(cfg1, x, x_hat, stats)
    assert l1.item() == pytest.approx(l0.item() + 0.7 * logs1["ssim_loss"].item(), rel=1e-6)
    assert 0 < logs1["ssim_loss"].item() < 1
    x2, st2 = n.normalize(torch.cat([k, k]))
    l2, _, _ = loss_with(cfg1, x2, torch.cat([x_hat, x_hat]), st2)
    assert l2.item() == pytest.approx(l1.item(), rel=1e-5)


def test_lpips_requested_without_weights_is_a_clear_error():
    from kspace_ldm.metrics import lpips_status

    if lpips_status("alex")[0]:
        pytest.skip("LPIPS is available here")
    with pytest.raises(InputError, match="LPIPS"):
        FirstStageLoss(LossConfig(lpips_weight=0.3, ssim_weight=0.0), KspaceNormalizer())


def test_discriminator_and_gan_terms(gen):
    d = NLayerDiscriminator(1, channels=8, n_layers=2)
    img = torch.rand(2, 1, 32, 32, generator=gen)
    logits = d(img)
    assert logits.dim() == 4 and logits.shape[:2] == (2, 1)
    assert hinge_d_loss(torch.full((2,), 2.0), torch.full((2,), -2.0)).item() == 0.0
    # the adaptive weight path: generator loss after disc_start has g_loss and d_weight
    k = _kspace(gen, h=32, w=32)
    n = KspaceNormalizer(mode="acs")
    x, stats = n.normalize(k)
    m = KspaceAutoencoder(2, (8, 16), 4, 1, 4, False)
    x_hat, enc = m(x)
    cfg = LossConfig(ssim_weight=0.0, disc_weight=0.5, disc_start=0, disc_channels=8, disc_layers=2)
    lf = FirstStageLoss(cfg, n)
    loss, logs, imgs = lf.generator_loss(x, x_hat, enc, stats, (32, 32), 0, m.last_layer)
    assert {"g_loss", "d_weight"} <= set(logs)
    loss.backward()
    assert lf.discriminator_loss(*imgs).item() >= 0
