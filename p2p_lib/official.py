"""Generators trained with the official pix2pix code (hand-written: plumbing no lesson teaches).

The official repository (junyanz/pytorch-CycleGAN-and-pix2pix) saves `latest_net_G.pth`, the
state dict of its `UnetGenerator`: the same network as our `UNetGenerator`, but built as blocks nested
inside blocks, so its parameter names spell the nesting: level k of the U-Net (k = 0 outermost) is
a `UnetSkipConnectionBlock` whose `nn.Sequential` lives at `model.model.` (k = 0), `model.model.1.model.`
(k = 1), then `3.model.` more for every further level (the child block sits at index 3 of a middle
block), and its layers sit at fixed places of that Sequential:

    outermost (k = 0):  [downconv, submodule, uprelu, upconv, tanh]                       conv 0, convT 3
    middle levels:      [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm, (dropout)]
                                                                  conv 1, norm 2, convT 5, norm 6
    innermost:          [downrelu, downconv, uprelu, upconv, upnorm]                       conv 1, convT 3, norm 4

Ours (p2p_lib/unet.py) keeps level k's encoder block in `encoder.k` (`.0` conv, `.1` norm) and the
decoder block that brings level k back up in `decoder.j` with j = num_downs - 1 - k (the decoder is
listed in the order it runs, innermost first; `.0` transposed conv, `.1` norm). The name map below is
built from that structure, and every tensor's shape is checked against our network before anything
is loaded, so a checkpoint of another architecture fails with a clear message.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch

from p2p_lib.errors import CheckpointError
from p2p_lib.unet import UNetGenerator

__all__ = ["official_unet_name_map", "strip_module_prefix", "is_official_unet_state_dict",
           "infer_official_unet_options", "generator_from_official_state_dict", "our_state_dict_to_official",
           "load_official_generator"]

_NORM_TENSORS = {"batch": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
                 "instance": (), "none": ()}
# A norm layer's tensors the official file may lack: checkpoints from PyTorch < 0.4.1 have no counter.
_OPTIONAL = ("num_batches_tracked",)


def _error(message: str) -> Exception:
    return CheckpointError(message)


def _level_prefix(level: int) -> str:
    """Where level `level` (0 = outermost) of the official UnetGenerator keeps its Sequential: the
    outermost block holds level 1 at index 1 of its Sequential, every middle block its child at index 3."""
    if level == 0:
        return "model.model."
    return "model.model.1.model." + "3.model." * (level - 1)


def official_unet_name_map(num_downs: int, norm: str = "batch") -> OrderedDict[str, str]:
    """{official name: our name} for every tensor of a `UNetGenerator(num_downs=..., norm=...)`,
    in the order the official module lists them."""
    if norm not in _NORM_TENSORS:
        raise ValueError(f"norm must be 'batch', 'instance' or 'none', got {norm!r}")
    if num_downs < 2:
        raise ValueError(f"num_downs must be at least 2, got {num_downs}")
    innermost = num_downs - 1
    conv_bias = ("weight", "bias") if norm == "instance" else ("weight",)  # the official use_bias rule
    names: OrderedDict[str, str] = OrderedDict()

    def add(official: str, ours: str, tensors) -> None:
        for t in tensors:
            names[f"{official}.{t}"] = f"{ours}.{t}"

    def add_levels(level: int) -> None:
        # The official Sequential lists the encoder layers, then the submodule, then the decoder layers.
        p, down, up = _level_prefix(level), f"encoder.{level}", f"decoder.{innermost - level}"
        if level == 0:
            add(p + "0", f"{down}.0", conv_bias)
            add_levels(1)
            add(p + "3", f"{up}.0", ("weight", "bias"))  # the output layer always has a bias
        elif level == innermost:
            add(p + "1", f"{down}.0", conv_bias)
            add(p + "3", f"{up}.0", conv_bias)
            add(p + "4", f"{up}.1", _NORM_TENSORS[norm])
        else:
            add(p + "1", f"{down}.0", conv_bias)
            add(p + "2", f"{down}.1", _NORM_TENSORS[norm])
            add_levels(level + 1)
            add(p + "5", f"{up}.0", conv_bias)
            add(p + "6", f"{up}.1", _NORM_TENSORS[norm])

    add_levels(0)
    return names


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Drop the `module.` prefix that `nn.DataParallel` puts on every name (checkpoints saved on GPUs)."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def is_official_unet_state_dict(state_dict: Mapping) -> bool:
    """Does this look like the official UnetGenerator's state dict (after any `module.` prefix)?"""
    if not isinstance(state_dict, Mapping) or not state_dict:
        return False
    sd = strip_module_prefix(state_dict)
    return "model.model.0.weight" in sd and all(isinstance(k, str) and k.startswith("model.") for k in sd)


def infer_official_unet_options(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Read the architecture off the tensors: depth, ngf, input/output channels and the norm.

    BatchNorm leaves weight/bias/running statistics; the official InstanceNorm (affine=False, no
    running statistics) leaves nothing, but then the convolutions carry biases (the official
    `use_bias = norm is InstanceNorm` rule); 'none' leaves neither. Dropout has no tensors, so
    `no_dropout` cannot be read off a file: it stays False (the pix2pix default) unless given.
    """
    sd = strip_module_prefix(state_dict)
    if "model.model.0.weight" not in sd:
        raise _error("not an official UnetGenerator state dict: it has no 'model.model.0.weight' "
                     "(the first convolution); is it a ResnetGenerator or a discriminator?")
    first = sd["model.model.0.weight"]
    if first.dim() != 4:
        raise _error(f"'model.model.0.weight' has shape {tuple(first.shape)}, not that of a convolution")
    num_downs = 1
    while _level_prefix(num_downs) + "1.weight" in sd:
        num_downs += 1
    if num_downs < 2:
        raise _error("the official UnetGenerator state dict has only one level; it is incomplete")
    inner = _level_prefix(num_downs - 1)
    if inner + "4.weight" in sd:  # BatchNorm2d(affine=True); an InstanceNorm never has a weight here
        norm = "batch"
    elif _level_prefix(1) + "1.bias" in sd:
        norm = "instance"
    else:
        norm = "none"
    ngf, input_nc = int(first.shape[0]), int(first.shape[1])
    last = sd.get("model.model.3.weight")
    if last is None or last.dim() != 4:
        raise _error("the official UnetGenerator state dict has no last layer 'model.model.3.weight'")
    return {"netG": f"unet_{2 ** num_downs}", "num_downs": num_downs, "ngf": ngf, "norm": norm,
            "input_nc": input_nc, "output_nc": int(last.shape[1]), "no_dropout": False}


def _num_downs(options: Mapping) -> int:
    if options.get("num_downs"):
        return int(options["num_downs"])
    match = re.fullmatch(r"unet_(\d+)", str(options.get("netG", "")))
    if not match or int(match.group(1)) & (int(match.group(1)) - 1):
        raise _error(f"netG {options.get('netG')!r} is not a U-Net this loader knows (unet_128, unet_256, ...)")
    return int(match.group(1)).bit_length() - 1


def generator_from_official_state_dict(state_dict: Mapping[str, torch.Tensor], options: Mapping | None = None
                                       ) -> tuple[UNetGenerator, dict]:
    """Our `UNetGenerator` with the weights of an official `UnetGenerator` state dict, and its options.

    `options` (netG, ngf, norm, input_nc, output_nc, no_dropout) override what is read off the
    tensors; a mismatch then shows up as a clear shape error. Returns the network in train mode (as
    a fresh module is); `p2p_lib.inference` chooses the test-time mode.
    """
    sd = strip_module_prefix(state_dict)
    found = infer_official_unet_options(sd)
    given = {k: v for k, v in dict(options or {}).items() if v is not None}
    if "netG" in given and "num_downs" not in given:
        given["num_downs"] = _num_downs(given)
    merged = {**found, **given}
    num_downs = _num_downs(merged)
    merged["num_downs"], merged["netG"] = num_downs, f"unet_{2 ** num_downs}"
    try:
        net = UNetGenerator(int(merged["input_nc"]), int(merged["output_nc"]), num_downs, int(merged["ngf"]),
                            norm=merged["norm"], use_dropout=not merged.get("no_dropout", False))
    except ValueError as err:
        raise _error(f"cannot build the generator these options describe: {err}") from err
    if merged["norm"] == "instance":
        # Files from before PyTorch 0.4 kept running statistics in InstanceNorm; the official loader drops them too.
        sd = OrderedDict((k, v) for k, v in sd.items()
                         if k.rsplit(".", 1)[-1] not in ("running_mean", "running_var", "num_batches_tracked"))
    ours = net.state_dict()
    name_map = official_unet_name_map(num_downs, merged["norm"])
    expected = {k for k in name_map if k.rsplit(".", 1)[-1] not in _OPTIONAL}
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - set(name_map))
    if missing or unexpected:
        raise _error(
            f"the official state dict does not fit a {merged['netG']} (ngf={merged['ngf']}, norm={merged['norm']}): "
            f"{len(missing)} missing tensors (first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]})")
    converted = OrderedDict()
    for official_name, our_name in name_map.items():
        if official_name not in sd:  # an old file without num_batches_tracked: keep our counter
            converted[our_name] = ours[our_name]
            continue
        tensor = sd[official_name]
        if tuple(tensor.shape) != tuple(ours[our_name].shape):
            raise _error(f"shape mismatch: official {official_name} is {tuple(tensor.shape)}, but our {our_name} "
                         f"is {tuple(ours[our_name].shape)} for {merged['netG']} with ngf={merged['ngf']}, "
                         f"input_nc={merged['input_nc']}, output_nc={merged['output_nc']}")
        converted[our_name] = tensor
    net.load_state_dict(converted)
    return net, merged


def our_state_dict_to_official(state_dict: Mapping[str, torch.Tensor], norm: str | None = None
                               ) -> OrderedDict[str, torch.Tensor]:
    """The reverse map: our `UNetGenerator.state_dict()` under the official names, ready for
    `torch.save(..., 'latest_net_G.pth')` and the official test.py (with the same --netG/--ngf/--norm)."""
    sd = strip_module_prefix(state_dict)
    num_downs = 0
    while f"encoder.{num_downs}.0.weight" in sd:
        num_downs += 1
    if num_downs < 2:
        raise ValueError("not a UNetGenerator state dict: no 'encoder.0.0.weight', 'encoder.1.0.weight', ...")
    if norm is None:
        norm = "batch" if "decoder.0.1.weight" in sd else "instance" if "encoder.1.0.bias" in sd else "none"
    reverse = {ours: official for official, ours in official_unet_name_map(num_downs, norm).items()}
    unknown = sorted(set(sd) - set(reverse))
    if unknown:
        raise ValueError(f"tensors with no official counterpart (is norm={norm!r} right?): {unknown[:5]}")
    return OrderedDict((reverse[k], v) for k, v in sd.items())


def load_official_generator(path, options: Mapping | None = None, map_location="cpu") -> tuple[UNetGenerator, dict]:
    """Load an official `*_net_G.pth` file (a plain state dict) into our `UNetGenerator`."""
    try:
        state_dict = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise _error(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if not is_official_unet_state_dict(state_dict):
        raise _error(f"{path}: not the state dict of an official UnetGenerator (no 'model.model.0.weight')")
    return generator_from_official_state_dict(state_dict, options)
