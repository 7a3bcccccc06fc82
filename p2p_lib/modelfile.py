"""The model file to share: one .safetensors file per trained model (hand-written plumbing; lesson 06
trains the networks it holds, lesson 07 uses them).

    save_model_file("models/facades/model.safetensors", G, options, D=D, metadata={"command": ...})
    model = load_model_file("models/facades/model.safetensors")      # {"G", "D", "options", "card"}

Layout (p2p_lib.checkpoint.read_model_file reads it, so `p2p translate --checkpoint FILE.safetensors`
and `p2p test` take it too):

    tensors   "G.<name>": the generator's state dict; "D.<name>": the discriminator's (optional).
              Floating tensors in half precision by default (a 128-px facades model is ~20 MB instead
              of ~40); integer buffers (BatchNorm's num_batches_tracked) as they are.
    metadata  "format": "p2p_lib-model", "version": "1",
              "options": JSON of the architecture (networks.GENERATOR_OPTIONS, and DISCRIMINATOR_OPTIONS
                         when D is stored) and the data options found (direction, load_size, crop_size,
                         preprocess): enough to rebuild the networks with networks.define_G / define_D,
              "card": JSON of the free-form `metadata` (command, code version, metrics, ...).

Unlike a .pt checkpoint, a safetensors file cannot hold pickled objects, so reading one never runs
code, and other tools (the `safetensors` package in any language) can read the tensors and metadata.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from p2p_lib.checkpoint import (MODEL_FORMAT, MODEL_VERSION, CheckpointError, build_generator, jsonable_options,
                                load_state_dict_strict, read_model_file, require_options, write_atomically)
from p2p_lib.networks import DISCRIMINATOR_OPTIONS, GENERATOR_OPTIONS, NetworkOptionError, define_D

__all__ = ["DATA_OPTIONS", "save_model_file", "load_model_file"]

# Data options kept with the architecture when present: how the training images were sized and which side was the input.
DATA_OPTIONS = ("direction", "load_size", "crop_size", "preprocess")


def _stored_options(path: Path, options: dict, with_discriminator: bool) -> dict:
    "The options the file keeps: the architecture (all of it, so the file describes itself) and the data options."
    required = GENERATOR_OPTIONS + (DISCRIMINATOR_OPTIONS if with_discriminator else ())
    require_options(path, options, required, "the networks (a model file must describe them fully)")
    keys = dict.fromkeys(required + tuple(k for k in DATA_OPTIONS if k in options))
    return jsonable_options({k: options[k] for k in keys})


def _tensors(prefix: str, net: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    "`net`'s state dict under `prefix`, floating tensors cast to `dtype`; CheckpointError for values it cannot hold."
    out = {}
    for name, tensor in net.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
            if not torch.isfinite(tensor).all():  # a diverged network, or a value beyond float16's 65504
                raise CheckpointError(f"{prefix}{name} has values that are not finite in {dtype}: not saving it")
        # contiguous: channels_last weights (p2p train --channels_last) are strided, and safetensors stores dense data.
        out[prefix + name] = tensor.contiguous()
    return out


def _check_fits(path: Path, net: nn.Module, build, options: dict, what: str) -> None:
    "A file whose options do not rebuild its networks could never be loaded: refuse to write it."
    try:
        fresh = build(options)
    except ValueError as err:  # NetworkOptionError, CheckpointError, or a layer refusing its arguments
        raise CheckpointError(f"not saving {path}: {err}") from None
    load_state_dict_strict(fresh, net.state_dict(), what=f"{what} to save in {path.name}")


def save_model_file(path: str | os.PathLike, G: nn.Module, options: dict, D: nn.Module | None = None,
                    metadata: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write G (and D, if given) with their options and a free-form card to one .safetensors file,
    atomically (a failed save leaves the previous file intact). Returns the path.

    `options` must hold networks.GENERATOR_OPTIONS (and DISCRIMINATOR_OPTIONS with D), e.g. a
    training state's options; `metadata` must be JSON-able; `dtype` is the storage precision of the
    floating tensors (float16 by default: half the size, differences of ~1e-3 in the outputs)."""
    path = Path(path)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    G, D = getattr(G, "module", G), getattr(D, "module", D)  # a DistributedDataParallel wrapper keeps it in .module
    stored = _stored_options(path, options, with_discriminator=D is not None)
    _check_fits(path, G, build_generator, stored, "generator")
    tensors = _tensors("G.", G, dtype)
    if D is not None:
        _check_fits(path, D, lambda o: define_D(o, init=False), stored, "discriminator")
        tensors.update(_tensors("D.", D, dtype))
    try:
        card = json.dumps(metadata or {}, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"not saving {path}: the metadata must be plain JSON values ({err})") from None
    header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "options": json.dumps(stored, sort_keys=True),
              "card": card}
    data = safetensors.torch.save(tensors, metadata=header)
    return write_atomically(path, lambda fh: fh.write(data))


def _discriminator(path: Path, model: dict) -> nn.Module:
    if model["D"] is None:
        raise CheckpointError(f"{path} holds no discriminator (no 'D.' tensors): it was saved for inference only")
    options = model["options"]
    require_options(path, options, DISCRIMINATOR_OPTIONS, "the discriminator")
    try:
        D = define_D(options, init=False)
    except NetworkOptionError as err:
        raise CheckpointError(f"{path}: {err}") from None
    load_state_dict_strict(D, model["D"], what=f"discriminator (D in {path.name})")
    return D


def load_model_file(path: str | os.PathLike, with_discriminator: bool = False, map_location: Any = "cpu") -> dict:
    """Read a model file written by save_model_file: {"G": the generator, "D": the discriminator (only
    with with_discriminator=True, else None), "options": dict, "card": dict}. The networks are rebuilt
    from the options with networks.define_G / define_D, in float32, train mode (as built), on
    `map_location`. CheckpointError, naming the file, for anything that does not fit."""
    path = Path(path)
    model = read_model_file(path)
    G = build_generator(model["options"])
    load_state_dict_strict(G, model["G"], what=f"generator (G in {path.name})")
    D = _discriminator(path, model) if with_discriminator else None
    return {"G": G.to(map_location), "D": None if D is None else D.to(map_location),
            "options": model["options"], "card": model["card"]}
