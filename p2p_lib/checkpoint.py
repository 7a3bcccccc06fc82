"""Checkpoints: save, load and rebuild networks (hand-written plumbing behind `p2p train`, `p2p test`
and `p2p translate`; lesson 06 teaches the training they store).

Files, under CHECKPOINTS_DIR/NAME/ (the official code's folder layout; our own file names):

    {epoch}_state.pt   the full training state; epoch is an int (end of that epoch) or "latest"
    {epoch}_net_G.pt   the generator alone, for inference (a fraction of the state's size)
    opt.json           the options of the run (JSON; an unlimited max_dataset_size is written as null)

Every .pt file is a dict:

    "format": "p2p_lib", "version": 1, "kind": "train_state" or "generator",
    "options": {...}   JSON-able; holds at least netG, ngf, norm, no_dropout, input_nc, output_nc,
                       direction, load_size, crop_size, preprocess (the `p2p train` options)
    "G": the generator's state_dict
    train_state only:  "D", "optimizer_G", "optimizer_D", "scheduler_G", "scheduler_D",
                       "epoch" (the epoch of the last step), "epoch_iter" (iterations done in it),
                       "epoch_complete" (its end-of-epoch work is done), "step" (iterations in all),
                       "rng" (Python, NumPy, torch and CUDA generator states), "scaler" (or None)

Files are written atomically (a temporary file in the same folder, then os.replace) and read with
`torch.load(weights_only=True)`: a file that would need to unpickle arbitrary Python objects is
refused (CheckpointError), so loading a checkpoint from the internet cannot run code.

Public API: CheckpointError, save_checkpoint, load_checkpoint, build_generator, load_generator,
generator_checkpoint, load_state_dict_strict, NETG_NUM_DOWNS, state_path, generator_path.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p_lib.unet import UNetGenerator

FORMAT = "p2p_lib"
VERSION = 1
KINDS = ("train_state", "generator")
# The official generator names, and the number of stride-2 levels each has (2**n = the smallest input size).
NETG_NUM_DOWNS = {"unet_128": 7, "unet_256": 8}
# The options that decide the generator's shape: a checkpoint must carry them.
GENERATOR_OPTIONS = ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc")

__all__ = ["CheckpointError", "FORMAT", "VERSION", "NETG_NUM_DOWNS", "GENERATOR_OPTIONS", "save_checkpoint",
           "load_checkpoint", "build_generator", "load_generator", "generator_checkpoint",
           "load_state_dict_strict", "state_path", "generator_path", "jsonable_options"]


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, truncated, unsafe, or not for this network."""


def state_path(run_dir: str | os.PathLike, epoch: int | str = "latest") -> Path:
    "CHECKPOINTS_DIR/NAME/{epoch}_state.pt"
    return Path(run_dir) / f"{epoch}_state.pt"


def generator_path(run_dir: str | os.PathLike, epoch: int | str = "latest") -> Path:
    "CHECKPOINTS_DIR/NAME/{epoch}_net_G.pt"
    return Path(run_dir) / f"{epoch}_net_G.pt"


def jsonable_options(options: dict) -> dict:
    """A copy of `options` that json.dumps accepts strictly (inf -> None); raises CheckpointError otherwise."""
    out = {}
    for key, value in options.items():
        if isinstance(value, float) and math.isinf(value):
            value = None
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint options must be plain JSON values: {err}") from None
    return out


def save_checkpoint(path: str | os.PathLike, obj: dict) -> Path:
    """Write `obj` with torch.save, atomically: a reader (or a crash) never sees half a file.

    The data goes to a temporary file in the same folder, is flushed to disk, and then replaces
    `path` in one step (os.replace), so an interrupted save leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _unpickler_reason(text: str) -> str:
    "The one useful line of torch.load's weights_only error."
    for marker in ("WeightsUnpickler error:",):
        if marker in text:
            rest = text.split(marker, 1)[1].strip()
            return "weights_only: " + rest.split("\n")[0].split(". Please use")[0].strip()
    return text.strip().splitlines()[0] if text.strip() else "weights_only refused it"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", kind: str | None = None) -> dict:
    """Read a checkpoint with torch.load(weights_only=True) and check what it is.

    Returns the dict as stored: a p2p_lib checkpoint (see the module docstring), or a plain state
    dict such as the official `latest_net_G.pth`. `kind` ("train_state" or "generator") demands a
    p2p_lib checkpoint of that kind. Raises CheckpointError with a message that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        if "Unsupported global" in reason:
            raise CheckpointError(
                f"refusing to load {path}: it holds pickled Python objects other than tensors and plain "
                f"containers, and unpickling those can run arbitrary code ({reason}). Only checkpoints written "
                f"by p2p_lib and plain state dicts are accepted.") from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint: not a PyTorch file, or a pickle that only full "
            f"unpickling could read, which can run arbitrary code, so it is refused ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable checkpoint: truncated or corrupt? "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    if obj.get("format") == FORMAT:
        if obj.get("version") != VERSION:
            raise CheckpointError(f"{path} is a p2p_lib checkpoint of version {obj.get('version')!r}; "
                                  f"this p2p_lib reads version {VERSION}")
        if obj.get("kind") not in KINDS:
            raise CheckpointError(f"{path}: unknown checkpoint kind {obj.get('kind')!r} (expected one of {KINDS})")
        wanted = ("options", "G") + (("D", "optimizer_G", "optimizer_D", "scheduler_G", "scheduler_D",
                                      "epoch", "step", "rng") if obj["kind"] == "train_state" else ())
        missing = [k for k in wanted if k not in obj]
        if missing:
            raise CheckpointError(f"{path} is an incomplete {obj['kind']} checkpoint: missing {missing}")
    if kind is not None and (obj.get("format") != FORMAT or obj.get("kind") != kind):
        found = f"a p2p_lib {obj['kind']} checkpoint" if obj.get("format") == FORMAT else "not a p2p_lib checkpoint"
        raise CheckpointError(f"{path} must be a p2p_lib {kind} checkpoint, but it is {found}")
    return obj


def build_generator(options: dict) -> UNetGenerator:
    """The generator the options describe: netG (unet_256 | unet_128), ngf, norm, no_dropout, input_nc, output_nc."""
    net = options.get("netG", "unet_256")
    if net not in NETG_NUM_DOWNS:
        raise CheckpointError(f"unknown generator {net!r}: this library has {sorted(NETG_NUM_DOWNS)} "
                              f"(the official resnet_* generators are not part of pix2pix)")
    return UNetGenerator(input_nc=int(options.get("input_nc", 3)), output_nc=int(options.get("output_nc", 3)),
                         num_downs=NETG_NUM_DOWNS[net], ngf=int(options.get("ngf", 64)),
                         norm=options.get("norm", "batch"), use_dropout=not options.get("no_dropout", False))


def load_state_dict_strict(module: nn.Module, state_dict: dict, what: str = "network") -> None:
    """module.load_state_dict(strict) with a message that names every key that does not match."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"the checkpoint's {what} is not a state dict of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"shape mismatch for {k!r}: checkpoint {tuple(state_dict[k].shape)} vs network {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or shapes:
        def some(keys):
            return ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        parts = ([f"{len(missing)} missing keys: {some(missing)}"] if missing else []) + \
                ([f"{len(unexpected)} unexpected keys: {some(unexpected)}"] if unexpected else []) + shapes[:5]
        raise CheckpointError(f"the checkpoint's {what} does not fit the network built from its options "
                              f"({type(module).__name__}): " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)


def generator_checkpoint(G: nn.Module, options: dict) -> dict:
    """The small generator-only checkpoint ({epoch}_net_G.pt) for inference."""
    G = getattr(G, "module", G)  # a DistributedDataParallel wrapper keeps the network in .module
    return {"format": FORMAT, "version": VERSION, "kind": "generator", "options": jsonable_options(options),
            "G": {k: v.detach().cpu() for k, v in G.state_dict().items()}}


def _to(G: nn.Module, map_location: Any) -> nn.Module:
    return G.to(map_location) if isinstance(map_location, (str, torch.device)) else G


def _looks_official(state_dict: dict) -> bool:
    return bool(state_dict) and all(isinstance(v, torch.Tensor) for v in state_dict.values()) and \
        any(k.startswith(("model.", "module.model.")) for k in state_dict)


def _find_file(source: Path, epoch: int | str, name: str | None) -> Path:
    folder = source / name if name else source
    candidates = [generator_path(folder, epoch), state_path(folder, epoch), folder / f"{epoch}_net_G.pth"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    listed = "\n  ".join(str(c) for c in candidates)
    hint = "" if name or not any(p.is_dir() for p in source.iterdir()) else \
        " (is this a checkpoints dir? then also give the run's name)"
    raise CheckpointError(f"no generator checkpoint for epoch {epoch!r} in {folder}{hint}; looked for:\n  {listed}")


def load_generator(source: str | os.PathLike, epoch: int | str = "latest", name: str | None = None,
                   map_location: Any = "cpu") -> tuple[UNetGenerator, dict]:
    """Rebuild a trained generator from a checkpoint; returns (G, options).

    `source` is a checkpoint file (.pt of p2p_lib, or an official .pth state dict), or a folder:
    CHECKPOINTS_DIR with `name`, or the run folder itself. In a folder it looks for
    {epoch}_net_G.pt, then {epoch}_state.pt, then the official {epoch}_net_G.pth.
    G comes back as built (train mode) on `map_location`."""
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"no checkpoint file or folder at {source}")
    path = _find_file(source, epoch, name) if source.is_dir() else source
    obj = load_checkpoint(path, map_location=map_location)
    if obj.get("format") == FORMAT:
        options = dict(obj["options"])
        missing = [k for k in GENERATOR_OPTIONS if k not in options]
        if missing:
            raise CheckpointError(f"{path}: the checkpoint's options lack {missing}, needed to rebuild the generator")
        G = build_generator(options)
        load_state_dict_strict(G, obj["G"], what=f"generator (G in {path.name})")
        return _to(G, map_location), options
    if _looks_official(obj):
        from p2p_lib.official import generator_from_official_state_dict  # written alongside lesson 07
        G, options = generator_from_official_state_dict(obj, options=None)
        return _to(G, map_location), options
    keys = list(obj)[:5]
    raise CheckpointError(f"{path} is neither a p2p_lib checkpoint nor an official pix2pix generator "
                          f"state dict (first keys: {keys})")
