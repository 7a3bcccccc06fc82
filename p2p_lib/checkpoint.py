"""Checkpoints: save, load and rebuild networks (hand-written plumbing behind `p2p train`, `p2p test`
and `p2p translate`; lesson 06 teaches the training they store).

Files, under CHECKPOINTS_DIR/NAME/ (the official code's folder layout; our own file names):

    {epoch}_state.pt   the full training state; epoch is an int (end of that epoch) or "latest"
    {epoch}_net_G.pt   the generator alone, for inference (a fraction of the state's size)
    opt.json           the options of the run (JSON; an unlimited max_dataset_size is written as null)
    pretrained.json    beside an official {epoch}_net_G.pth that `p2p download-model` placed (p2p_lib.pretrained):
                       where it came from, and the options its tensors cannot tell (direction, crop size,
                       dropout); `load_generator` completes the official file's options from it (JSON only)

Every .pt file is a dict:

    "format": "p2p_lib", "version": 1, "kind": "train_state" or "generator",
    "options": {...}   JSON-able; holds at least netG, ngf, norm, no_dropout, input_nc, output_nc,
                       direction, load_size, crop_size, preprocess (the `p2p train` options)
    "G": the generator's state_dict
    train_state only:  "D", "optimizer_G", "optimizer_D", "scheduler_G", "scheduler_D",
                       "epoch" (the epoch in progress: once an epoch ends, already the next one),
                       "epoch_iter" (iterations done in it), "step" (iterations in all),
                       "rng" (Python, NumPy, torch and CUDA generator states), "scaler" (or None);
                       files of older versions also hold "epoch_complete", and their "epoch" is
                       the epoch of the last step (complete once its end-of-epoch work is done)

The model file to share (written by p2p_lib.modelfile.save_model_file) is one .safetensors file:
tensors only (the format cannot hold code), the generator's state dict under "G.", the
discriminator's under "D." (optional), and str -> str metadata: "format": "p2p_lib-model",
"version": "1", "options" (JSON: the architecture and data options) and "card" (JSON, free-form).
`read_model_file` below reads it, so that `load_generator` takes all three kinds of file.

Files are written atomically (a temporary file in the same folder, then os.replace) and read with
`torch.load(weights_only=True)` or safetensors: a file that would need to unpickle arbitrary Python
objects is refused (CheckpointError), so loading a checkpoint from the internet cannot run code.

Public API: CheckpointError, save_checkpoint, load_checkpoint, build_generator, load_generator,
generator_checkpoint, load_state_dict_strict, read_model_file, is_model_file, require_options, write_atomically,
generator_candidates, NETG_NUM_DOWNS, state_path, generator_path, pretrained_options, PRETRAINED_SIDECAR.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors import safe_open
from torch import nn

# One-way imports: networks and official depend on neither this module nor p2p_lib.modelfile.
from p2p_lib.errors import CheckpointError
from p2p_lib.networks import GENERATOR_OPTIONS, NETG_NUM_DOWNS, NetworkOptionError, define_G
from p2p_lib.official import generator_from_official_state_dict, is_official_unet_state_dict
from p2p_lib.unet import UNetGenerator

FORMAT = "p2p_lib"
VERSION = 1
KINDS = ("train_state", "generator")
MODEL_FORMAT = "p2p_lib-model"  # the .safetensors model file; metadata values are strings
MODEL_VERSION = "1"
PRETRAINED_SIDECAR = "pretrained.json"  # beside an official .pth that `p2p download-model` placed
PRETRAINED_FORMAT = "p2p_lib-pretrained"
# NETG_NUM_DOWNS and GENERATOR_OPTIONS live in p2p_lib.networks; they stay importable from here for older callers.

__all__ = ["CheckpointError", "FORMAT", "VERSION", "MODEL_FORMAT", "MODEL_VERSION", "NETG_NUM_DOWNS",
           "GENERATOR_OPTIONS", "save_checkpoint", "load_checkpoint", "build_generator", "load_generator",
           "generator_checkpoint", "load_state_dict_strict", "read_model_file", "is_model_file", "write_atomically",
           "generator_candidates", "require_options", "state_path", "generator_path", "jsonable_options",
           "check_architecture", "require_finite", "WIDTH_LIMITS", "PRETRAINED_SIDECAR", "PRETRAINED_FORMAT",
           "pretrained_options"]


def state_path(run_dir: str | os.PathLike, epoch: int | str = "latest") -> Path:
    "CHECKPOINTS_DIR/NAME/{epoch}_state.pt"
    return Path(run_dir) / f"{epoch}_state.pt"


def generator_path(run_dir: str | os.PathLike, epoch: int | str = "latest") -> Path:
    "CHECKPOINTS_DIR/NAME/{epoch}_net_G.pt"
    return Path(run_dir) / f"{epoch}_net_G.pt"


def generator_candidates(run_dir: str | os.PathLike, epoch: int | str = "latest") -> list[Path]:
    "Where a run folder may keep epoch `epoch`'s generator, in the order they are tried."
    return [generator_path(run_dir, epoch), state_path(run_dir, epoch), Path(run_dir) / f"{epoch}_net_G.pth"]


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


class _WriteErrors:
    "A binary file that keeps the OSError its write raised: torch.save turns it into a RuntimeError without errno."

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self.fh, name)


def write_atomically(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Create `path` with write(binary file), atomically: a reader (or a crash) never sees half a file.

    The data goes to a temporary file in the same folder (os.replace is atomic only within one file
    system), is flushed to disk, and then replaces `path` in one step, so an interrupted save leaves
    the previous file intact and no temporary file behind. A failed write raises its OSError (errno
    ENOSPC for a full disk), whatever `write` wrapped it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            recording = _WriteErrors(fh)
            try:
                write(recording)
            except Exception as err:
                if recording.error is not None and recording.error is not err:
                    raise recording.error from None  # e.g. ENOSPC, which torch.save reports as a bare RuntimeError
                raise
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


def save_checkpoint(path: str | os.PathLike, obj: dict) -> Path:
    """Write `obj` with torch.save, atomically (see write_atomically): an interrupted save leaves the
    previous checkpoint intact."""
    return write_atomically(path, lambda fh: torch.save(obj, fh))


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
    if is_model_file(path):
        raise CheckpointError(f"{path} is a .safetensors model file, not a torch checkpoint: read it with "
                              "load_generator or p2p_lib.modelfile.load_model_file")
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


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether the file starts like a safetensors file: an 8-byte little-endian header length that fits
    the file, then the JSON header's '{'. Torch files start with a zip or pickle signature instead."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            start = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    if len(start) < 9:
        return False
    header_length = int.from_bytes(start[:8], "little")
    return 2 <= header_length <= size - 8 and start[8:9] == b"{"


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    "(metadata, tensors) of a safetensors file, or CheckpointError for a file that is not one (or is cut short)."
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (safetensors.SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} ({path.stat().st_size} bytes) is not a readable safetensors file: "
                              f"not one, or truncated? ({err})") from None
    return metadata, tensors


def _json_metadata(path: Path, metadata: dict[str, str], key: str) -> dict:
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the model file's {key!r} metadata is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: the model file's {key!r} metadata is a {type(value).__name__}, not a JSON object")
    return value


def require_options(path, options: dict, keys, what: str = "the generator") -> None:
    "CheckpointError naming the options a file lacks to rebuild `what`."
    missing = [k for k in keys if k not in options]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint's options lack {missing}, needed to rebuild {what}")


def _split_networks(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, dict | None]:
    "The state dicts stored under 'G.' and 'D.', as float32 (the file may hold half precision)."
    stray = [k for k in tensors if not k.startswith(("G.", "D."))]
    if stray:
        raise CheckpointError(f"{path}: tensors outside 'G.' and 'D.' in a p2p_lib model file: {stray[:5]}")
    nets = {}
    for prefix in ("G", "D"):
        # Networks compute in float32 here (the CPU has no fast float16); integer counters stay as stored.
        nets[prefix] = {k[2:]: v.float() if v.is_floating_point() else v
                        for k, v in tensors.items() if k.startswith(prefix + ".")} or None
    if nets["G"] is None:
        raise CheckpointError(f"{path}: the model file holds no generator (no 'G.' tensors)")
    return nets


def read_model_file(path: str | os.PathLike) -> dict:
    """Read a p2p_lib .safetensors model file: {"format": MODEL_FORMAT, "version", "options", "card",
    "G": state dict, "D": state dict or None}, float tensors as float32, on the CPU. Never runs code
    (safetensors holds tensors and strings only); CheckpointError says what is wrong with a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at {path}")
    metadata, tensors = _read_safetensors(path)
    if metadata.get("format") != MODEL_FORMAT:
        found = f"format={metadata['format']!r}" if "format" in metadata else "no 'format' metadata"
        raise CheckpointError(f"{path} is a safetensors file, but not a p2p_lib model file ({found}; "
                              f"expected format={MODEL_FORMAT!r})")
    if metadata.get("version") != MODEL_VERSION:
        raise CheckpointError(f"{path} is a p2p_lib model file of version {metadata.get('version')!r}; "
                              f"this p2p_lib reads version {MODEL_VERSION}")
    if "options" not in metadata:
        raise CheckpointError(f"{path}: the model file has no 'options' metadata: the architecture is unknown")
    options = _json_metadata(path, metadata, "options")
    require_options(path, options, GENERATOR_OPTIONS)
    card = _json_metadata(path, metadata, "card") if "card" in metadata else {}
    return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "options": options, "card": card,
            **_split_networks(path, tensors)}


def build_generator(options: dict) -> UNetGenerator:
    """The generator the options describe (netG unet_256 | unet_128, ngf, norm, no_dropout, input_nc,
    output_nc), built by p2p_lib.networks.define_G without a second initialisation (weights come next)."""
    try:
        return define_G(options, init=False)
    except NetworkOptionError as err:
        raise CheckpointError(str(err)) from None
    except ValueError as err:  # a layer refusing its arguments, e.g. an unknown norm
        raise CheckpointError(f"cannot build the generator these options describe: {err}") from None


def _mismatch(own: dict, state_dict: dict) -> str:
    "What keeps `state_dict` from loading into a network whose state dict is `own` ('' if nothing)."
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"shape mismatch for {k!r}: checkpoint {tuple(state_dict[k].shape)} vs network {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]

    def some(keys):
        return ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    parts = ([f"{len(missing)} missing keys: {some(missing)}"] if missing else []) + \
            ([f"{len(unexpected)} unexpected keys: {some(unexpected)}"] if unexpected else []) + shapes[:5]
    return "; ".join(parts)


def _require_tensors(state_dict, what: str) -> None:
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"the checkpoint's {what} is not a state dict of tensors")


def load_state_dict_strict(module: nn.Module, state_dict: dict, what: str = "network") -> None:
    """module.load_state_dict(strict) with a message that names every key that does not match."""
    _require_tensors(state_dict, what)
    mismatch = _mismatch(module.state_dict(), state_dict)
    if mismatch:
        raise CheckpointError(f"the checkpoint's {what} does not fit the network built from its options "
                              f"({type(module).__name__}): {mismatch}")
    module.load_state_dict(state_dict, strict=True)


# Widths a checkpoint may ask for: far above any real pix2pix (ngf 64), far below what would exhaust memory.
WIDTH_LIMITS = {"ngf": 4096, "ndf": 4096, "input_nc": 64, "output_nc": 64, "n_layers_D": 16}


def check_architecture(options: dict, state_dict: dict, what: str, build: Callable[[dict], nn.Module]) -> None:
    """Refuse options that do not describe the stored tensors, before any real network is built: the widths
    must be integers within WIDTH_LIMITS, and the network `build(options)` makes on the meta device (shapes
    only, no memory) must have exactly the stored tensors' names and shapes. CheckpointError otherwise."""
    _require_tensors(state_dict, what)
    for key, limit in WIDTH_LIMITS.items():
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit):
            raise CheckpointError(f"the checkpoint's option {key}={value!r} is not a width this library builds "
                                  f"(an integer from 1 to {limit}): the file is damaged or was edited")
    try:
        with torch.device("meta"):
            shell = build(options)
    except (CheckpointError, ValueError, TypeError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"the checkpoint's options do not describe a {what} this library builds: {err}") from None
    mismatch = _mismatch(shell.state_dict(), state_dict)
    if mismatch:
        raise CheckpointError(f"the checkpoint's {what} does not fit the network its options describe (an "
                              f"option given that the weights do not have, or a damaged or edited file): {mismatch}")


def require_finite(state_dict: dict, what: str) -> None:
    "CheckpointError if any floating-point tensor holds NaN or Inf (a run that diverged before it was saved)."
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"the checkpoint's {what} holds NaN or Inf in {len(bad)} tensors (first: {bad[0]!r}): "
                              "it diverged before it was saved, and would turn every image into garbage. Use an "
                              "earlier checkpoint")


def generator_checkpoint(G: nn.Module, options: dict) -> dict:
    """The small generator-only checkpoint ({epoch}_net_G.pt) for inference."""
    G = getattr(G, "module", G)  # a DistributedDataParallel wrapper keeps the network in .module
    return {"format": FORMAT, "version": VERSION, "kind": "generator", "options": jsonable_options(options),
            "G": {k: v.detach().cpu() for k, v in G.state_dict().items()}}


def _to(G: nn.Module, map_location: Any) -> nn.Module:
    return G.to(map_location) if isinstance(map_location, (str, torch.device)) else G


def _find_file(source: Path, epoch: int | str, name: str | None) -> Path:
    folder = source / name if name else source
    candidates = generator_candidates(folder, epoch)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    listed = "\n  ".join(str(c) for c in candidates)
    hint = "" if name or not any(p.is_dir() for p in source.iterdir()) else \
        " (is this a checkpoints dir? then also give the run's name)"
    raise CheckpointError(f"no generator checkpoint for epoch {epoch!r} in {folder}{hint}; looked for:\n  {listed}")


def _read_generator_file(path: Path, map_location: Any) -> dict:
    "A .safetensors model file (by extension or by its header) or a torch file, read safely."
    if path.suffix.lower() == ".safetensors" or is_model_file(path):
        return read_model_file(path)
    return load_checkpoint(path, map_location=map_location)


def _from_our_checkpoint(obj: dict, path: Path, overrides: dict, warn: Callable[[str], None]):
    "(G, options) from a p2p_lib .pt or .safetensors file, the overrides replacing its options."
    saved = dict(obj["options"])
    for key, value in overrides.items():
        # Test time resizes to the crop size (the official TestOptions): a load_size unlike training's is no news.
        if key in saved and saved[key] != value and key != "load_size":
            warn(f"--{key} {value} overrides the checkpoint's {key}={saved[key]!r}")
    options = {**saved, **overrides}
    require_options(path, options, GENERATOR_OPTIONS)
    what = f"generator (G in {path.name})"
    check_architecture(options, obj["G"], what, build_generator)
    require_finite(obj["G"], what)
    G = build_generator(options)
    load_state_dict_strict(G, obj["G"], what=what)
    return G, options


def _pretrained_record(sidecar: Path) -> dict:
    "The JSON object of a pretrained.json, or CheckpointError naming it and the way out."
    redo = "delete it, or run `p2p download-model NAME --force` again"
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{sidecar} is not readable JSON ({err}); {redo}") from None
    if not (isinstance(record, dict) and record.get("format") == PRETRAINED_FORMAT
            and isinstance(record.get("options"), dict)):
        raise CheckpointError(f"{sidecar} is not a record of p2p download-model (a JSON object with "
                              f"format={PRETRAINED_FORMAT!r} and 'options'); {redo}")
    options = record["options"]
    crop_size = options.get("crop_size", 256)
    if options.get("direction", "AtoB") not in ("AtoB", "BtoA") or type(crop_size) is not int or crop_size < 1:
        raise CheckpointError(f"{sidecar}: direction {options.get('direction')!r} or crop_size "
                              f"{options.get('crop_size')!r} is not valid (AtoB or BtoA; a positive integer); {redo}")
    return record


def pretrained_options(path: str | os.PathLike, warn: Callable[[str], None] | None = None) -> dict:
    """The options that the PRETRAINED_SIDECAR beside the official file `path` records for it: the direction, crop
    size and dropout that its tensors cannot tell. {} when there is none, when it describes another file of the
    folder, or (with a warning) when `path` no longer has the size it recorded. Plain JSON: reading runs no code."""
    path = Path(path)
    sidecar = path.parent / PRETRAINED_SIDECAR
    if not sidecar.is_file():
        return {}
    record = _pretrained_record(sidecar)
    if record.get("file") != path.name:
        return {}
    size = path.stat().st_size
    if record.get("bytes") != size:
        (warn or _warn_caller)(f"{sidecar} describes a {path.name} of {record.get('bytes')} bytes, but {path} has "
                               f"{size}: the file was replaced since, so the options recorded there (direction, crop "
                               f"size) are not used; give them on the command line, or download the model again")
        return {}
    return dict(record["options"])


def _from_official_state_dict(obj: dict, overrides: dict, warn: Callable[[str], None], recorded: dict | None = None):
    """(G, options) from an official latest_net_G.pth; `recorded`: the options of its pretrained.json (they must agree
    with the tensors). Overrides replace both, with a warning; architecture overrides rebuild G (or fail clearly)."""
    recorded = recorded or {}
    G, found = generator_from_official_state_dict(obj)
    clash = [f"{k}={recorded[k]!r} (the tensors: {found[k]!r})" for k in GENERATOR_OPTIONS
             if k in recorded and k != "no_dropout" and recorded[k] != found.get(k)]
    if clash:  # checked before any rebuild: an edited record must not make us build a network of its choosing
        raise CheckpointError(f"the {PRETRAINED_SIDECAR} beside the official file records {', '.join(clash)}: the file "
                              f"or its record was changed; delete {PRETRAINED_SIDECAR} or download the model again")
    for key, value in overrides.items():
        if key in recorded and recorded[key] != value and key != "load_size":
            warn(f"--{key} {value} overrides the checkpoint's {key}={recorded[key]!r} (from {PRETRAINED_SIDECAR})")
        elif key in GENERATOR_OPTIONS and key in found and found[key] != value:
            warn(f"--{key} {value} overrides {key}={found[key]!r} (what the official checkpoint implies)")
    architecture = {k: v for k, v in {**recorded, **overrides}.items() if k in GENERATOR_OPTIONS}
    if any(found.get(k) != v for k, v in architecture.items()):
        G, found = generator_from_official_state_dict(obj, architecture)
    return G, {**recorded, **found, **overrides}


def _warn_caller(message: str) -> None:
    # stacklevel 4: past this function, the _from_* helper and load_generator, to the line that called it.
    warnings.warn(message, stacklevel=4)


def _not_a_generator(path: Path, obj: dict) -> CheckpointError:
    keys = list(obj)[:5]
    official_like = any(isinstance(k, str) and k.startswith(("model.", "module.model.")) for k in obj)
    hint = " (official-style names, but no U-Net generator: a discriminator or a ResnetGenerator?)" if official_like else ""
    return CheckpointError(f"{path} is neither a p2p_lib checkpoint nor an official pix2pix generator "
                           f"state dict{hint} (first keys: {keys})")


def load_generator(source: str | os.PathLike, epoch: int | str = "latest", name: str | None = None,
                   map_location: Any = "cpu", overrides: dict | None = None,
                   warn: Callable[[str], None] | None = None) -> tuple[UNetGenerator, dict]:
    """Rebuild a trained generator from a checkpoint; returns (G, options).

    `source` is a file: a p2p_lib .pt (generator or training state), a p2p_lib .safetensors model file
    (recognised by extension or header) or an official .pth state dict; or a folder: CHECKPOINTS_DIR
    with `name`, or the run folder itself, where it looks for {epoch}_net_G.pt, then {epoch}_state.pt,
    then the official {epoch}_net_G.pth (its options completed from a pretrained.json beside it, if any).
    `overrides` (e.g. options given on a command line; None values are ignored) replace the file's
    options, and each disagreement is reported with `warn` (default: warnings.warn); architecture
    overrides that do not fit the weights fail with a CheckpointError naming the mismatch.
    G comes back as built (train mode) on `map_location`, in float32."""
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"no checkpoint file or folder at {source}")
    path = _find_file(source, epoch, name) if source.is_dir() else source
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    warn = warn or _warn_caller
    obj = _read_generator_file(path, map_location)
    if obj.get("format") in (FORMAT, MODEL_FORMAT):
        G, options = _from_our_checkpoint(obj, path, given, warn)
    elif is_official_unet_state_dict(obj):
        _require_tensors(obj, f"generator ({path.name})")  # an official-looking dict of non-tensors: a clear error
        require_finite(obj, f"generator ({path.name})")
        G, options = _from_official_state_dict(obj, given, warn, pretrained_options(path, warn))
    else:
        raise _not_a_generator(path, obj)
    return _to(G, map_location), options
