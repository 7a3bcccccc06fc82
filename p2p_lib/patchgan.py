# DRAFT (will be regenerated from lessons/03_patchgan_discriminator.ipynb)
import torch
from torch import nn

from p2p_lib.blocks import conv_block, conv_uses_bias, init_weights, norm_layer


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: sees cat(input, output) and returns a grid of logits, one per patch.
    `n_layers` stride-2 C_k blocks, then a stride-1 C_k and a stride-1 conv to one channel."""

    def __init__(self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        layers = [conv_block(input_nc, ndf, stride=2, norm=norm, use_norm=False, bias=True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers.append(conv_block(ndf * prev, ndf * mult, stride=2, norm=norm))
        prev, mult = mult, min(2 ** n_layers, 8)
        layers.append(conv_block(ndf * prev, ndf * mult, stride=1, norm=norm))
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def receptive_field(n_layers: int) -> int:
    "Receptive field of one output unit of PatchDiscriminator(n_layers): walk back r <- (r-1)*stride + kernel."
    r = 1
    for stride in [1, 1] + [2] * n_layers:  # the last two convs first, then the stride-2 ones
        r = (r - 1) * stride + 4
    return r


class PixelDiscriminator(nn.Module):
    "The 1x1 PixelGAN: judges each pixel's colour on its own (receptive field 1)."

    def __init__(self, input_nc: int = 6, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        bias = conv_uses_bias(norm)
        self.model = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(norm, ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 1, bias=bias))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
