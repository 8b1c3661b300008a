"""PatchGAN discriminator (pix2pix / taming ``NLayerDiscriminator``) and the hinge losses.

The reference applied it to normalised 2-channel k-space; here it sees *images* (magnitude/RSS,
scaled to about [-1, 1]), which is where adversarial realism is meaningful (spec bug 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NLayerDiscriminator", "hinge_d_loss", "hinge_g_loss"]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs, BatchNorm, LeakyReLU 0.2; outputs a map of patch logits.

    Args:
        in_channels: image channels (1 for magnitude images).
        channels: width of the first layer (reference 64), doubled per layer up to 8x.
        n_layers: strided layers (reference 3; the receptive field is 70x70 px for 3).

    Input ``[B, in_channels, H, W]`` -> logits ``[B, 1, H', W']`` (``H' ~ H / 2**n_layers - 2``).
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(
                    channels * prev, channels * mult, 4, stride=stride, padding=1, bias=False
                ),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def _init_weights(m: nn.Module) -> None:
    # The pix2pix initialisation the reference's taming discriminator used.
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss ``-mean D(x_hat)``."""
    return -logits_fake.mean()
