# DRAFT (will be regenerated from lessons/01_conv_blocks.ipynb)
import torch
from torch import nn


def norm_layer(norm: str, channels: int) -> nn.Module:
    "The normalisation the official code calls `--norm`: 'batch', 'instance' or 'none'."
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)  # official: affine=False, no running stats
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {norm!r}")


def conv_uses_bias(norm: str) -> bool:
    "A bias right before BatchNorm is cancelled by its mean subtraction; the official code keeps it only for InstanceNorm."
    return norm == "instance"


def conv_block(in_channels: int, out_channels: int, stride: int = 2, norm: str = "batch",
               use_norm: bool = True, bias: bool | None = None) -> nn.Sequential:
    "The paper's C_k: 4x4 conv -> norm -> LeakyReLU(0.2). `bias=None` follows the official rule."
    if bias is None:
        bias = conv_uses_bias(norm)
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride, padding=1, bias=bias)]
    if use_norm:
        layers.append(norm_layer(norm, out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def up_block(in_channels: int, out_channels: int, norm: str = "batch", dropout: bool = True) -> nn.Sequential:
    "The paper's CD_k (C_k with dropout=False): 4x4 transposed conv, stride 2 -> norm -> Dropout(0.5) -> ReLU."
    layers = [nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                                 bias=conv_uses_bias(norm)),
              norm_layer(norm, out_channels)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    "The official init: conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), all biases 0."
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net
