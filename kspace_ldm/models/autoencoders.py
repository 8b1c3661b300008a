"""First-stage k-space autoencoders (the reference's K-AE families), re-created with bugs fixed.

Every model maps normalised real k-space ``x: [B, 2C, H, W]`` (see
:mod:`kspace_ldm.models.kspace_norm`) to a reconstruction of the same shape. ``H`` and ``W`` need
not be multiples of the down-sampling factor: :meth:`FirstStageModel.encode` zero-pads with
:func:`~kspace_ldm.physics.pad_to_multiple` (DC stays centred) and :meth:`FirstStageModel.decode`
removes the padding exactly with :func:`~kspace_ldm.physics.unpad`.

Families (``model.family`` in the configs):

=============  =======================================  ============================================
family         class                                    reference
=============  =======================================  ============================================
``ae``         :class:`KspaceAutoencoder`               AE_3/4/5 (``KspaceAutoencoder``)
``sae``        :class:`WeightedSSIMKspaceAutoencoder`   SAE_3/4/5
``ae_kl``      :class:`KspaceAutoencoderKL`             AE_KL_3/4/5 (``KspaceAutoencoderKL``, "VAE")
``sae_kl``     :class:`WeightedSSIMKspaceAutoencoderKL` SAE_KL_3/4/5 ("SVAE")
``unet``       :class:`UNet`                            UnetWN / UnetWON / UnetWONO
=============  =======================================  ============================================

Fixes against the reference implementation (kLD-MRI, sandrosage/kspace-diffusion; its bugs are
listed in docs/reproducing_kld_mri.md, "What differs from the reference"): the plain autoencoder's
decoder gets its channels in the right order (diffusers' ``Decoder`` reverses ``block_out_channels``
itself, so the reference's pre-reversed list built a decoder that is narrow at the bottleneck and
512 wide at full resolution); sizes are padded and unpadded exactly instead of zero-padding k-space
to 384 and forming images from the padded grid. The weighted-SSIM families differ from the plain
ones only in their loss (:mod:`kspace_ldm.models.losses`), where the SSIM term is now a properly
weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vae import Decoder, DiagonalGaussianDistribution, Encoder
from torch import nn

from ..errors import InputError
from ..physics.transforms import PadInfo, pad_to_multiple, unpad

__all__ = [
    "FAMILIES",
    "Encoded",
    "FirstStageModel",
    "KspaceAutoencoder",
    "KspaceAutoencoderKL",
    "UNet",
    "WeightedSSIMKspaceAutoencoder",
    "WeightedSSIMKspaceAutoencoderKL",
    "create_channels",
]


def create_channels(n_mult: Sequence[int], chans: int = 128) -> tuple[int, ...]:
    """The reference's ``create_channels``: ``(chans, n_mult[0] * chans, ...)``.

    ``[2, 4]`` -> ``(128, 256, 512)`` (3 levels, f = 4); ``[1, 2, 4]`` -> 4 levels (f = 8);
    ``[1, 2, 2, 4]`` -> 5 levels (f = 16).
    """
    return (int(chans), *(int(m) * int(chans) for m in n_mult))


@dataclass
class Encoded:
    """The result of :meth:`FirstStageModel.encode`.

    Attributes:
        z: ``[B, latent_channels, H'/f, W'/f]`` latent (``H', W'`` the padded size): the posterior
            sample or mode for KL models, the deterministic code otherwise.
        pad: the padding applied to the input; :meth:`FirstStageModel.decode` removes it.
        posterior: the diagonal Gaussian posterior (KL models), else ``None``.
        skips: U-Net skip features (``UNet`` with residuals only), else empty.
    """

    z: torch.Tensor
    pad: PadInfo
    posterior: DiagonalGaussianDistribution | None = None
    skips: list[torch.Tensor] = field(default_factory=list)

    @property
    def mean(self) -> torch.Tensor | None:
        """Posterior mean ``[B, latent_channels, h, w]`` (KL models) or ``None``."""
        return None if self.posterior is None else self.posterior.mean

    @property
    def logvar(self) -> torch.Tensor | None:
        """Posterior log-variance (KL models) or ``None``."""
        return None if self.posterior is None else self.posterior.logvar


class FirstStageModel(nn.Module):
    """Common interface: ``encode`` (pads), ``decode`` (unpads), ``forward`` = both.

    Subclasses implement ``_encode(x_padded) -> Encoded`` (with a dummy pad) and
    ``_decode(z, encoded) -> x_padded`` and set ``downsample`` (the spatial factor the padded size
    must be a multiple of) and ``in_channels``.
    """

    downsample: int = 1
    in_channels: int = 2
    #: default weight of the image-domain SSIM loss for this family (the SAE classes set 0.7).
    default_ssim_weight: float = 0.0
    #: whether the family has a KL-regularised latent.
    is_kl: bool = False

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                type(self).__name__,
                f"input must be real [B, {self.in_channels}, H, W], got {tuple(x.shape)}",
            )

    def encode(self, x: torch.Tensor) -> Encoded:
        """Encode normalised k-space ``[B, 2C, H, W]`` (any ``H, W``; padded internally)."""
        self._check_input(x)
        xp, pad = pad_to_multiple(x, self.downsample, self.downsample)
        enc = self._encode(xp)
        enc.pad = pad
        return enc

    def decode(self, z: torch.Tensor | Encoded, pad: PadInfo | None = None) -> torch.Tensor:
        """Decode a latent to ``[B, 2C, H, W]``; ``pad`` (or the :class:`Encoded`'s) is undone.

        Args:
            z: a latent ``[B, latent_channels, h, w]`` or the :class:`Encoded` from
                :meth:`encode` (needed by the U-Net with skip connections).
            pad: padding to remove; ``None`` returns the padded-size output for a bare latent.
        """
        enc = z if isinstance(z, Encoded) else None
        latent = enc.z if enc is not None else z
        out = self._decode(latent, enc)
        pad = pad if pad is not None else (enc.pad if enc is not None else None)
        return out if pad is None else unpad(out, pad)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Encoded]:
        """Reconstruct ``x``: returns ``(x_hat [B, 2C, H, W], Encoded)``."""
        enc = self.encode(x)
        return self.decode(enc), enc

    # to be implemented
    def _encode(self, x: torch.Tensor) -> Encoded:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, z: torch.Tensor, enc: Encoded | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


_DUMMY_PAD = PadInfo((1, 1))


def _check_groups(channels: Sequence[int], groups: int) -> None:
    bad = [c for c in channels if c % groups]
    if bad:
        raise InputError(
            "model.norm_num_groups",
            f"{groups} does not divide the channel counts {list(bad)} of {list(channels)}",
        )


def _set_levels(
    model: FirstStageModel,
    in_channels: int,
    block_out_channels: Sequence[int],
    latent_channels: int,
    norm_num_groups: int,
) -> tuple[tuple[int, ...], int]:
    """Check and store the sizes of a diffusers-style model; returns ``(channels, levels)``."""
    block_out_channels = tuple(int(c) for c in block_out_channels)
    _check_groups(block_out_channels, norm_num_groups)
    n = len(block_out_channels)
    model.in_channels = in_channels
    model.latent_channels = latent_channels
    model.downsample = 2 ** (n - 1)
    return block_out_channels, n


# ---------------------------------------------------------------------------------------------
# Plain autoencoder (AE / SAE)
# ---------------------------------------------------------------------------------------------


class KspaceAutoencoder(FirstStageModel):
    """diffusers ``Encoder``/``Decoder`` autoencoder with an unregularised continuous latent.

    Args:
        in_channels: ``2C`` (2 for single-coil).
        block_out_channels: channels per level, e.g. ``create_channels([1, 2, 4])`` =
            ``(128, 128, 256, 512)``; ``len`` levels down-sample by ``2 ** (len - 1)``.
        latent_channels: latent channels (reference: 16).
        layers_per_block: ResNet blocks per encoder level (decoder: one more, as diffusers).
        norm_num_groups: GroupNorm groups (must divide every channel count).
        mid_block_attention: single-head self-attention in the mid blocks (reference: yes).

    The decoder receives ``block_out_channels`` in the encoder's order; diffusers' ``Decoder``
    reverses it, giving the widest level at the bottleneck and the narrowest at full resolution.
    """

    def __init__(
        self,
        in_channels: int = 2,
        block_out_channels: Sequence[int] = (128, 128, 256, 512),
        latent_channels: int = 16,
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        mid_block_attention: bool = True,
    ):
        super().__init__()
        block_out_channels, n = _set_levels(
            self, in_channels, block_out_channels, latent_channels, norm_num_groups
        )
        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=("DownEncoderBlock2D",) * n,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            double_z=False,
            mid_block_add_attention=mid_block_attention,
        )
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=in_channels,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=block_out_channels,  # NOT reversed: Decoder reverses it itself
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            mid_block_add_attention=mid_block_attention,
        )

    def _encode(self, x: torch.Tensor) -> Encoded:
        return Encoded(z=self.encoder(x), pad=_DUMMY_PAD)

    def _decode(self, z: torch.Tensor, enc: Encoded | None) -> torch.Tensor:
        return self.decoder(z)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the adaptive GAN weight)."""
        return self.decoder.conv_out.weight


class WeightedSSIMKspaceAutoencoder(KspaceAutoencoder):
    """:class:`KspaceAutoencoder` trained with an added image-domain SSIM loss (reference SAE_*).

    The network is identical; the family sets the default ``loss.ssim_weight`` to 0.7.
    """

    default_ssim_weight = 0.7


# ---------------------------------------------------------------------------------------------
# KL autoencoder (VAE / SVAE)
# ---------------------------------------------------------------------------------------------


class KspaceAutoencoderKL(FirstStageModel):
    """diffusers ``AutoencoderKL`` on k-space with a diagonal-Gaussian latent.

    Args:
        in_channels, block_out_channels, latent_channels, layers_per_block, norm_num_groups,
        mid_block_attention: as for :class:`KspaceAutoencoder`.
        sample_posterior: ``encode`` returns a posterior sample (``True``, reference "_yes") or its
            mode (``False``, "_no"). :meth:`encode` takes an override per call.
    """

    is_kl = True

    def __init__(
        self,
        in_channels: int = 2,
        block_out_channels: Sequence[int] = (128, 128, 256, 512),
        latent_channels: int = 16,
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        mid_block_attention: bool = True,
        sample_posterior: bool = True,
    ):
        super().__init__()
        block_out_channels, n = _set_levels(
            self, in_channels, block_out_channels, latent_channels, norm_num_groups
        )
        self.sample_posterior = bool(sample_posterior)
        self.vae = AutoencoderKL(
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            mid_block_add_attention=mid_block_attention,
        )

    def encode(
        self,
        x: torch.Tensor,
        sample: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> Encoded:
        """Encode; ``z`` is a posterior sample if ``sample`` (default: ``sample_posterior``),
        else the posterior mode. The posterior (mean, log-variance) is in the result."""
        self._check_input(x)
        xp, pad = pad_to_multiple(x, self.downsample, self.downsample)
        posterior = self.vae.encode(xp).latent_dist
        use_sample = self.sample_posterior if sample is None else sample
        z = posterior.sample(generator=generator) if use_sample else posterior.mode()
        return Encoded(z=z, pad=pad, posterior=posterior)

    def _decode(self, z: torch.Tensor, enc: Encoded | None) -> torch.Tensor:
        return self.vae.decode(z).sample

    @property
    def last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight


class WeightedSSIMKspaceAutoencoderKL(KspaceAutoencoderKL):
    """:class:`KspaceAutoencoderKL` with the image-domain SSIM loss (reference SAE_KL_*, "SVAE");
    default ``loss.ssim_weight`` 0.7."""

    default_ssim_weight = 0.7


# ---------------------------------------------------------------------------------------------
# fastMRI-style U-Net (UnetWN / UnetWON / UnetWONO)
# ---------------------------------------------------------------------------------------------


class _ConvBlock(nn.Sequential):
    """2 x (3x3 conv without bias, InstanceNorm, LeakyReLU 0.2, Dropout2d), as fastMRI's U-Net."""

    def __init__(self, cin: int, cout: int, drop: float):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.InstanceNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout2d(drop),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.InstanceNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout2d(drop),
        )


class _UpConv(nn.Sequential):
    """2x2 transposed conv (stride 2) + InstanceNorm + LeakyReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False),
            nn.InstanceNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
        )


class UNet(FirstStageModel):
    """fastMRI-style U-Net with a ``latent_dim`` bottleneck (the reference's ``Unet_FastMRI``).

    Down path: ConvBlocks ``in -> chans -> 2 chans -> ...`` each followed by 2x2 average pooling
    (``num_pool_layers`` times); bottleneck ConvBlock to ``latent_dim`` channels (the latent ``z``),
    then ConvBlock ``latent_dim -> 2 * widest``; up path: transposed conv + ConvBlock per level
    (concatenating the skip features when ``with_residuals``), and a final 1x1 conv.

    Args:
        in_channels: ``2C``.
        chans: channels of the first level (reference 128).
        num_pool_layers: pooling levels (reference 3, latent at 1/8 resolution).
        latent_dim: bottleneck channels (reference 16).
        drop_prob: dropout probability (reference 0).
        with_residuals: concatenate skip connections (UnetWN) or not (UnetWON / UnetWONO; the
            input-normalisation switch is ``normalization.mode``). With skips the bottleneck can
            be bypassed, so its ``z`` is not a usable diffusion latent.
        latent_block: the bottleneck ConvBlock to ``latent_dim`` channels. ``False`` drops it
            (``z`` is then the pooled widest features and ``latent_dim`` is ignored): exactly
            fastMRI's U-Net, whose only bottleneck block is ``widest -> 2 * widest``
            (:class:`~kspace_ldm.models.image_unet.ImageUNet`).
    """

    def __init__(
        self,
        in_channels: int = 2,
        chans: int = 128,
        num_pool_layers: int = 3,
        latent_dim: int = 16,
        drop_prob: float = 0.0,
        with_residuals: bool = True,
        latent_block: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.downsample = 2**num_pool_layers
        self.with_residuals = bool(with_residuals)
        self.down = nn.ModuleList()
        ch = chans
        cin = in_channels
        for _ in range(num_pool_layers):
            self.down.append(_ConvBlock(cin, ch, drop_prob))
            cin, ch = ch, ch * 2
        widest = cin
        if not latent_block:
            latent_dim = widest
        self.latent_channels = latent_dim
        self.conv_in = _ConvBlock(widest, latent_dim, drop_prob) if latent_block else nn.Identity()
        self.conv_out = _ConvBlock(latent_dim, widest * 2, drop_prob)
        self.up_conv = nn.ModuleList()
        self.up_block = nn.ModuleList()
        ch = widest * 2
        for _ in range(num_pool_layers):
            skip_ch = ch // 2
            self.up_conv.append(_UpConv(ch, skip_ch))
            block_in = skip_ch * 2 if self.with_residuals else skip_ch
            self.up_block.append(_ConvBlock(block_in, skip_ch, drop_prob))
            ch = skip_ch
        self.final = nn.Conv2d(ch, in_channels, 1)

    def _encode(self, x: torch.Tensor) -> Encoded:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.avg_pool2d(x, 2)
        return Encoded(z=self.conv_in(x), pad=_DUMMY_PAD, skips=skips)

    def _decode(self, z: torch.Tensor, enc: Encoded | None) -> torch.Tensor:
        if self.with_residuals and (enc is None or not enc.skips):
            raise InputError(
                "UNet.decode",
                "this U-Net has skip connections: decode the Encoded from encode(), not a bare z",
            )
        x = self.conv_out(z)
        for i, (up, block) in enumerate(zip(self.up_conv, self.up_block, strict=True)):
            x = up(x)
            if self.with_residuals:
                x = torch.cat([x, enc.skips[-1 - i]], dim=1)
            x = block(x)
        return self.final(x)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.final.weight


FAMILIES: dict[str, type[FirstStageModel]] = {
    "ae": KspaceAutoencoder,
    "sae": WeightedSSIMKspaceAutoencoder,
    "ae_kl": KspaceAutoencoderKL,
    "sae_kl": WeightedSSIMKspaceAutoencoderKL,
    "unet": UNet,
}
