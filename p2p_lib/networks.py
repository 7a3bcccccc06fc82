"""The one place every caller builds pix2pix networks (hand-written plumbing, in the spirit of the
official `models/networks.py` `define_G` / `define_D` / `init_net`).

The networks themselves are taught in lessons 01-03 (`blocks`, `unet`, `patchgan`), 10 (`cyclegan`: the ResNet
generator) and 11 (`multiscale`: pix2pixHD's multi-scale discriminator); this module only
maps the official option names onto them, so that `p2p train`, `p2p test` / `translate`, the lessons,
the benchmarks and the tests all build the same network from the same options:

    G = define_G({"netG": "unet_128", "ngf": 32})      # missing options take the official defaults
    D = define_D({"netD": "basic", "ndf": 32})
"""
from __future__ import annotations

from torch import nn

from p2p_lib.blocks import init_weights
from p2p_lib.patchgan import PatchDiscriminator, PixelDiscriminator
from p2p_lib.unet import UNetGenerator

__all__ = ["NETG_NUM_DOWNS", "RESNET_BLOCKS", "NETG_CHOICES", "ADVERSARIAL_CHOICES", "NETD_CHOICES", "INIT_TYPES", "GENERATOR_OPTIONS", "DISCRIMINATOR_OPTIONS",
           "ARCHITECTURE_OPTIONS", "NetworkOptionError", "define_G", "define_D", "init_net", "size_multiple_of"]

# The official generator names, and the number of stride-2 levels each has (2**n = the smallest input size);
# encoder_decoder_*: the same network without its skips, the paper's Table 2 ablation (not an official name).
NETG_NUM_DOWNS = {"unet_128": 7, "unet_256": 8, "encoder_decoder_128": 7, "encoder_decoder_256": 8}
# The official ResNet generators (lesson 10, CycleGAN's default), by their number of residual blocks: 2 stride-2 levels.
RESNET_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}
NETG_CHOICES = tuple(NETG_NUM_DOWNS) + tuple(RESNET_BLOCKS)
# What D judges (--adversarial, not an official option): cgan = (input, output) pairs, the paper's; gan = the
# output alone (an unconditional D, Table 1); none = no D at all, G learns from L1 alone.
ADVERSARIAL_CHOICES = ("cgan", "gan", "none")
NETD_CHOICES = ("basic", "n_layers", "pixel", "multiscale")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
# The options that decide each network's shape (a checkpoint must carry them; a resume must not change them).
GENERATOR_OPTIONS = ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc")
DISCRIMINATOR_OPTIONS = ("netD", "n_layers_D", "ndf", "norm", "input_nc", "output_nc")  # (num_D: multiscale only, default 3)
ARCHITECTURE_OPTIONS = tuple(dict.fromkeys(GENERATOR_OPTIONS + DISCRIMINATOR_OPTIONS))
DEFAULTS = {"netG": "unet_256", "netD": "basic", "n_layers_D": 3, "ngf": 64, "ndf": 64, "norm": "batch",
            "no_dropout": False, "input_nc": 3, "output_nc": 3, "init_type": "normal", "init_gain": 0.02,
            "adversarial": "cgan", "num_D": 3}


class NetworkOptionError(ValueError):
    """The options do not describe a network this library has."""


def _option(options: dict, key: str):
    value = options.get(key)
    return DEFAULTS[key] if value is None else value


def size_multiple_of(netG: str) -> int:
    "Input sizes the generator accepts are multiples of this (2 ** its number of stride-2 levels)."
    if netG in RESNET_BLOCKS:
        return 4
    if netG not in NETG_NUM_DOWNS:
        raise NetworkOptionError(f"unknown generator {netG!r}: this library has {', '.join(NETG_CHOICES)}")
    return 2 ** NETG_NUM_DOWNS[netG]


def init_net(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """The official init_weights: conv/linear weights by init_type (scale gain), BatchNorm scales ~ N(1, gain),
    biases 0. 'normal' (the official default) is lesson 01's init_weights."""
    if init_type not in INIT_TYPES:
        raise NetworkOptionError(f"unknown init_type {init_type!r}; choose one of {', '.join(INIT_TYPES)}")
    draw = {"normal": None,  # lesson 01's N(0, gain^2)
            "xavier": lambda w: nn.init.xavier_normal_(w, gain=gain),
            "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
            "orthogonal": lambda w: nn.init.orthogonal_(w, gain=gain)}[init_type]
    return init_weights(net, gain, conv_init=draw)


def define_G(options: dict, init: bool = True) -> nn.Module:
    """The generator of --netG (unet_256 | unet_128, encoder_decoder_256 | _128: the U-Net without skips, or
    resnet_9blocks | resnet_6blocks: lesson 10's ResNet generator) with --ngf, --norm, --no_dropout, --input_nc,
    --output_nc; initialised with --init_type / --init_gain when `init` (the networks already init 'normal')."""
    netG = _option(options, "netG")
    size_multiple_of(netG)  # an unknown name: NetworkOptionError
    if netG in RESNET_BLOCKS:
        from p2p_lib.cyclegan import ResnetGenerator  # here, not at the top: lesson 10 imports lesson 06, which imports this
        net = ResnetGenerator(int(_option(options, "input_nc")), int(_option(options, "output_nc")),
                              int(_option(options, "ngf")), _option(options, "norm"),
                              use_dropout=not _option(options, "no_dropout"), n_blocks=RESNET_BLOCKS[netG])
        return _initialised(net, options) if init else net
    net = UNetGenerator(input_nc=int(_option(options, "input_nc")), output_nc=int(_option(options, "output_nc")),
                        num_downs=size_multiple_of(netG).bit_length() - 1, ngf=int(_option(options, "ngf")),
                        norm=_option(options, "norm"), use_dropout=not _option(options, "no_dropout"),
                        skips=not netG.startswith("encoder_decoder"))
    return _initialised(net, options) if init else net


def define_D(options: dict, init: bool = True) -> nn.Module:
    """The discriminator of --netD, judging (input, output) pairs stacked in channels (--adversarial gan: the
    output alone): basic (the 70x70 PatchGAN) | n_layers (PatchGAN with --n_layers_D) | pixel (the 1x1 PixelGAN) |
    multiscale (pix2pixHD's: --num_D PatchGANs with --n_layers_D on the image at 1, 1/2, 1/4, ...; lesson 11)."""
    adversarial = _option(options, "adversarial")
    if adversarial not in ADVERSARIAL_CHOICES:
        raise NetworkOptionError(f"unknown adversarial {adversarial!r}; choose one of {', '.join(ADVERSARIAL_CHOICES)}")
    condition = 0 if adversarial == "gan" else int(_option(options, "input_nc"))
    netD, channels = _option(options, "netD"), condition + int(_option(options, "output_nc"))
    ndf, norm = int(_option(options, "ndf")), _option(options, "norm")
    if netD == "basic":
        net = PatchDiscriminator(channels, ndf, n_layers=3, norm=norm)
    elif netD == "n_layers":
        net = PatchDiscriminator(channels, ndf, n_layers=int(_option(options, "n_layers_D")), norm=norm)
    elif netD == "pixel":
        net = PixelDiscriminator(channels, ndf, norm=norm)
    elif netD == "multiscale":
        from p2p_lib.multiscale import MultiscaleDiscriminator  # here: lesson 11 imports lesson 06, which imports this
        net = MultiscaleDiscriminator(channels, ndf, int(_option(options, "n_layers_D")), norm, int(_option(options, "num_D")))
    else:
        raise NetworkOptionError(f"unknown discriminator {netD!r}; choose one of {', '.join(NETD_CHOICES)}")
    return _initialised(net, options) if init else net


def _initialised(net: nn.Module, options: dict) -> nn.Module:
    init_type, gain = _option(options, "init_type"), float(_option(options, "init_gain"))
    if (init_type, gain) == ("normal", 0.02):
        return net  # lessons 02-03 already init exactly so when building: drawing again would change the RNG stream
    return init_net(net, init_type, gain)
