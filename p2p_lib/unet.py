# DRAFT (will be regenerated from lessons/02_unet_generator.ipynb)
import torch
import torch.nn.functional as F
from torch import nn

from p2p_lib.blocks import conv_block, init_weights, up_block


def unet_channels(num_downs: int, ngf: int = 64) -> list[int]:
    "Encoder widths: ngf, 2ngf, 4ngf, then 8ngf for every further level (C64-C128-C256-C512-C512-...)."
    return [ngf * min(2 ** i, 8) for i in range(num_downs)]


class UNetGenerator(nn.Module):
    """The pix2pix U-Net: `num_downs` C_k blocks down, CD_k blocks up, and a skip from every
    encoder level to its mirror in the decoder (concatenation)."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = True, skips: bool = True):
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"num_downs must be at least 2, got {num_downs}")
        self.num_downs, self.skips = num_downs, skips
        ch = unet_channels(num_downs, ngf)
        innermost = num_downs - 1
        # Encoder: C64 without norm, then C_k with norm, and the innermost C512 again without norm.
        self.down = nn.ModuleList(
            conv_block(input_nc if i == 0 else ch[i - 1], ch[i], norm=norm, use_norm=0 < i < innermost)
            for i in range(num_downs))
        # Decoder, indexed by the level it brings back up: up[i] maps level i's size to level i-1's.
        widen = 2 if skips else 1
        self.up = nn.ModuleList()
        for i in range(num_downs):
            in_ch = ch[i] if i == innermost else widen * ch[i]
            if i == 0:
                self.up.append(nn.Sequential(nn.ConvTranspose2d(in_ch, output_nc, 4, 2, 1), nn.Tanh()))
            else:
                self.up.append(up_block(in_ch, ch[i - 1], norm=norm,
                                        dropout=use_dropout and 4 <= i < innermost))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2 ** self.num_downs
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(f"UNetGenerator with num_downs={self.num_downs} needs height and width that are "
                             f"multiples of {multiple}; got {tuple(x.shape[-2:])}")
        feats = []
        for down in self.down:
            x = down(x)
            feats.append(x)
        # The decoder's ReLUs are not leaky, so what crosses from the encoder goes through ReLU too.
        y = self.up[-1](F.relu(feats[-1]))
        for i in range(self.num_downs - 2, -1, -1):
            y = self.up[i](torch.cat([F.relu(feats[i]), y], 1) if self.skips else y)
        return y
