"""The official pretrained pix2pix generators, checked and put in place (hand-written plumbing: no lesson teaches it).

`p2p download-model NAME` fetches one of the generators that the official
`scripts/download_pix2pix_model.sh` of junyanz/pytorch-CycleGAN-and-pix2pix names (the table `MODELS`
below) into CHECKPOINTS_DIR/NAME_pretrained/latest_net_G.pth, where that script puts it, so that
`p2p test --name NAME_pretrained` and `p2p translate --name NAME_pretrained` load it. In this order:

1. An existing latest_net_G.pth is left alone unless --force. A run folder that holds a p2p_lib
   latest_net_G.pt or latest_state.pt is refused: `p2p test` would load that one instead.
2. The file is streamed to a temporary file inside the run folder (p2p_lib.download.fetch: progress
   bar, SHA-256 on the way, a body shorter than its Content-Length refused) and compared with --sha256
   when given. No published hash exists for these files, so the table knows none (None): the SHA-256
   is printed, and recorded beside the model, so that you can pin it with --sha256 next time.
3. Before anything is placed, the file must load safely (torch.load(weights_only=True), through
   p2p_lib.checkpoint.load_checkpoint: no code runs), be an official U-Net generator state dict that
   fits our UNetGenerator tensor by tensor, and hold finite values only.
4. pretrained.json (p2p_lib.checkpoint.PRETRAINED_SIDECAR) is written beside it: the source URL, the
   SHA-256 and size, the dataset, and the options the tensors cannot tell (the direction, the crop
   size, dropout), which `load_generator` adds to what it reads off the tensors. The record is moved
   into place first and the model last, so a model in place always has its record; a download that
   fails in any way places nothing, removes its temporary files and leaves an existing model as it was.

--url (a whole file URL) or $P2P_MODELS_URL (a base URL: BASE/NAME.pth) point at a mirror.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from p2p_lib.checkpoint import (PRETRAINED_FORMAT, PRETRAINED_SIDECAR, CheckpointError, generator_candidates,
                                load_checkpoint, require_finite)
from p2p_lib.download import DEADLINE_S, TIMEOUT_S, DownloadError, Workspace, fetch, run_download
from p2p_lib.networks import GENERATOR_OPTIONS
from p2p_lib.official import generator_from_official_state_dict, is_official_unet_state_dict
from p2p_lib.optiontypes import number

__all__ = ["MODELS", "MODELS_URL", "MODELS_URL_VARIABLE", "OFFICIAL_ARCHITECTURE", "OFFICIAL_DATA_OPTIONS",
           "PretrainedModel", "model_spec", "model_url", "download_model", "list_models", "p2p_test_command",
           "check_generator_file", "register_cli"]

# The URL pattern of the official scripts/download_pix2pix_model.sh:
#   URL=http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch/$FILE.pth
#   MODEL_FILE=./checkpoints/${FILE}_pretrained/latest_net_G.pth
MODELS_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch"
MODELS_URL_VARIABLE = "P2P_MODELS_URL"  # a mirror's base URL: $P2P_MODELS_URL/NAME.pth
MODEL_FILE = "latest_net_G.pth"

# The generator every official pix2pix model is: models/pix2pix_model.py sets
# `parser.set_defaults(norm='batch', netG='unet_256', dataset_mode='aligned')`; options/base_options.py gives
# --ngf 64, --input_nc 3, --output_nc 3, dropout on unless --no_dropout, --crop_size 256 (the size the network
# sees; the test options resize to it). The README's test command for facades_label2photo_pretrained gives none of
# these flags, so the file loads, strictly, into exactly these defaults. We still read the architecture off the
# tensors and record what the file holds; a file unlike this (a mirror's other model) is reported, not refused.
OFFICIAL_ARCHITECTURE = {"netG": "unet_256", "ngf": 64, "norm": "batch", "no_dropout": False,
                         "input_nc": 3, "output_nc": 3}
OFFICIAL_DATA_OPTIONS = {"crop_size": 256, "preprocess": "resize_and_crop"}

_README = ("the official README, 'Apply a pre-trained model (pix2pix)': `python test.py --dataroot ./datasets/facades/ "
           "--direction BtoA --model pix2pix --name facades_label2photo_pretrained`, 'as Facades dataset's A to B "
           "direction is photos to labels'")
_TORCH_README = "the Torch pix2pix README (phillipi/pix2pix, 'Models')"


@dataclass(frozen=True)
class PretrainedModel:
    """One official generator, and how `p2p test` runs it on its dataset."""
    name: str
    dataset: str          # the official dataset it goes with (`p2p download DATASET`)
    direction: str        # which half of the dataset's A|B files is the input
    translates: str       # input -> output, in words
    phase: str            # the split `p2p test` translates: test where the dataset has one, else val
    direction_from: str   # "documented: ..." or "inferred: ..." (where the direction comes from)
    sha256: str | None = None  # None: not known to this project (nothing published; no download could be checked here)

    @property
    def url(self) -> str:
        return f"{MODELS_URL}/{self.name}.pth"

    @property
    def run_name(self) -> str:
        return f"{self.name}_pretrained"


# The names and their order are those of the official script's "Note: available models are edges2shoes, sat2map,
# map2sat, facades_label2photo, and day2night" (map2sat was added after the first four). Only facades' direction is
# written in the PyTorch docs; the others follow from the model's name and the halves of its dataset's files
# (datasets/README.md: maps A aerial photo | B map; night2day A night | B day; edges2shoes A edges | B photo).
# Phases: maps and edges2shoes have no test split (p2p_lib.download.DATASETS), so they are tested on val.
MODELS: dict[str, PretrainedModel] = {m.name: m for m in (
    PretrainedModel("edges2shoes", "edges2shoes", "AtoB", "edges -> shoe photo", "val",
                    f"inferred: {_TORCH_README} lists `edges2shoes (edge -> photo)`; edges are the A half"),
    PretrainedModel("sat2map", "maps", "AtoB", "aerial photo -> map", "val",
                    "inferred: from the name; the aerial photo is the A half of the maps files"),
    PretrainedModel("map2sat", "maps", "BtoA", "map -> aerial photo", "val",
                    "inferred: from the name; the map is the B half of the maps files"),
    PretrainedModel("facades_label2photo", "facades", "BtoA", "facade label map -> photo", "test",
                    f"documented: {_README}"),
    PretrainedModel("day2night", "night2day", "BtoA", "daytime scene -> nighttime scene", "test",
                    f"inferred: {_TORCH_README} lists `day2night (daytime scene -> nighttime scene)`; "
                    "the day is the B half of the night2day files"),
)}


def model_spec(name: str) -> PretrainedModel:
    if name not in MODELS:
        raise DownloadError(f"unknown model {name!r}; the official pix2pix models are: {', '.join(MODELS)} "
                            "(p2p download-model --list describes them)")
    return MODELS[name]


def model_url(spec: PretrainedModel, url: str | None = None) -> str:
    "--url as given, else $P2P_MODELS_URL/NAME.pth, else the official URL."
    if url:
        return url
    base = os.environ.get(MODELS_URL_VARIABLE, "").strip()
    return f"{base.rstrip('/')}/{spec.name}.pth" if base else spec.url


def _pinned(sha256: str | None) -> str | None:
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise DownloadError(f"--sha256 wants 64 hexadecimal digits, got {sha256!r}")
    return sha256.lower() if sha256 else None


def _refuse_shadowing_files(run_dir: Path) -> None:
    "A p2p_lib generator in the run folder would be loaded before the .pth (generator_candidates' order)."
    shadowing = [p for p in generator_candidates(run_dir) if p.name != MODEL_FILE and p.exists()]
    if shadowing:
        raise DownloadError(f"{run_dir} holds {shadowing[0].name}, which `p2p test --name {run_dir.name}` would load "
                            f"instead of the downloaded {MODEL_FILE}; nothing was changed. Move it away, or give "
                            f"another --checkpoints_dir")


def check_generator_file(path: Path, url: str, size: int) -> dict:
    """The architecture options of the downloaded official generator at `path`; DownloadError if it does not load
    safely, is not an official U-Net generator state dict that fits our network, or holds NaN or Inf."""
    try:
        state_dict = load_checkpoint(path)
        if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
            raise CheckpointError("it holds values other than tensors, so it is no state dict")
        if not is_official_unet_state_dict(state_dict):
            raise CheckpointError("not an official pix2pix U-Net generator state dict "
                                  f"(first keys: {list(state_dict)[:3]})")
        require_finite(state_dict, "generator")
        _, found = generator_from_official_state_dict(state_dict)
    except CheckpointError as err:
        reason = str(err).replace(str(path), "the download")  # the temporary file's name would mean nothing
        raise DownloadError(f"{url}: the downloaded file ({size:,} bytes) is not a usable pix2pix generator: {reason}. "
                            f"Nothing was placed; is the URL right?") from None
    return {key: found[key] for key in GENERATOR_OPTIONS}


def _record(spec: PretrainedModel, url: str, digest: str, size: int, architecture: dict, pinned_by: str | None) -> dict:
    "The pretrained.json written beside the model (read back by p2p_lib.checkpoint.pretrained_options)."
    checked = f"matched {pinned_by}" if pinned_by else "not checked: no published SHA-256 is known to this project"
    return {"format": PRETRAINED_FORMAT, "version": 1, "model": spec.name, "file": MODEL_FILE, "url": url,
            "sha256": digest, "bytes": size, "sha256_checked": checked, "dataset": spec.dataset, "phase": spec.phase,
            "translates": spec.translates, "direction_from": spec.direction_from,
            "options": {**architecture, "direction": spec.direction, **OFFICIAL_DATA_OPTIONS}}


def _note_architecture(spec: PretrainedModel, architecture: dict) -> None:
    differs = {k: v for k, v in architecture.items() if OFFICIAL_ARCHITECTURE[k] != v}
    if differs:
        official = ", ".join(f"{k}={OFFICIAL_ARCHITECTURE[k]!r}" for k in differs)
        print(f"{spec.name}: note: the file has {', '.join(f'{k}={v!r}' for k, v in differs.items())}, not the "
              f"official model's {official} (a mirror serving another model?); its own architecture is recorded")


def download_model(name: str, checkpoints_dir: str | os.PathLike = "checkpoints", url: str | None = None,
                   sha256: str | None = None, force: bool = False, timeout: float = TIMEOUT_S,
                   deadline: float | None = DEADLINE_S) -> Path:
    """Put official model `name` at CHECKPOINTS_DIR/NAME_pretrained/latest_net_G.pth, checked, with its
    pretrained.json; returns the model's path. DownloadError (nothing placed) when anything is wrong."""
    spec = model_spec(name)
    pinned = _pinned(sha256) or spec.sha256
    pinned_by = None if pinned is None else "--sha256" if sha256 else "the SHA-256 in p2p_lib.pretrained.MODELS"
    run_dir = Path(checkpoints_dir) / spec.run_name
    model = run_dir / MODEL_FILE
    _refuse_shadowing_files(run_dir)
    if model.exists() and not force:
        print(f"{name}: {model} exists already; left alone (--force downloads it again)")
        return model
    source = model_url(spec, url)
    with Workspace(model) as work:
        download = work.path("download", ".pth")
        print(f"{name}: downloading {source}")
        digest, size = fetch(source, download, timeout=timeout, desc=f"{name}.pth", deadline=deadline)
        if pinned is not None and digest != pinned:
            raise DownloadError(f"{source}: SHA-256 {digest} does not match the expected {pinned}; nothing was placed")
        architecture = check_generator_file(download, source, size)
        _note_architecture(spec, architecture)
        record = work.path("record", ".json")
        record.write_text(json.dumps(_record(spec, source, digest, size, architecture, pinned_by), indent=2) + "\n",
                          encoding="utf-8")
        os.replace(record, run_dir / PRETRAINED_SIDECAR)  # the record first: a model in place always has its own
        os.replace(download, model)
        work.placed = True
    print(f"{name}: {model} is ready ({architecture['netG']}, ngf {architecture['ngf']}, {architecture['norm']} norm; "
          f"{spec.direction} on {spec.dataset}, recorded in {run_dir / PRETRAINED_SIDECAR})")
    how = f"matched {pinned_by}" if pinned_by else f"no published hash to check it against; pin it with --sha256 {digest}"
    print(f"{name}: SHA-256 {digest} ({size:,} bytes): {how}")
    print(f"{name}: try it: {p2p_test_command(spec, checkpoints_dir)}")
    return model


def p2p_test_command(spec: PretrainedModel, checkpoints_dir: str | os.PathLike = "checkpoints") -> str:
    "The `p2p test` command line for `spec` on its official dataset (the direction comes from pretrained.json)."
    folder = "" if Path(checkpoints_dir) == Path("checkpoints") else f" --checkpoints_dir {checkpoints_dir}"
    phase = "" if spec.phase == "test" else f" --phase {spec.phase}"
    return f"p2p test --dataroot datasets/{spec.dataset} --name {spec.run_name}{folder}{phase}"


def list_models(checkpoints_dir: str | os.PathLike = "checkpoints") -> str:
    "The table of official models as text, with the commands that fetch and test each."
    lines = [f"The official pix2pix generators (p2p download-model NAME puts one at "
             f"{Path(checkpoints_dir) / 'NAME_pretrained' / MODEL_FILE}):", ""]
    for spec in MODELS.values():
        kind = spec.direction_from.split(":", 1)[0]
        folder = "" if Path(checkpoints_dir) == Path("checkpoints") else f" --checkpoints_dir {checkpoints_dir}"
        lines += [f"{spec.name}: {spec.translates}; dataset {spec.dataset}, {spec.direction} ({kind})",
                  f"    p2p download {spec.dataset} && p2p download-model {spec.name}{folder}",
                  f"    {p2p_test_command(spec, checkpoints_dir)}",
                  f"    p2p translate IMAGES --output OUT --name {spec.run_name}{folder}   "
                  f"(IMAGES: inputs of the kind '{spec.translates.split(' -> ')[0]}')", ""]
    lines += ["Directions marked 'inferred' follow from the model's name and the halves of its dataset's files;",
              "only facades' is written in the official PyTorch docs. No SHA-256 is published for these files:",
              "each download prints its own, to pin with --sha256."]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        print(list_models(args.checkpoints_dir))
        return 0
    try:
        _pinned(args.sha256)
        model_spec(args.name)
    except DownloadError as err:  # a usage error, found before any network access
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_download(lambda: download_model(args.name, args.checkpoints_dir, url=args.url, sha256=args.sha256,
                                               force=args.force, deadline=args.timeout), "error")


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "download-model", help="put an official pretrained pix2pix generator in place, checked",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download an official pix2pix generator (as the official scripts/download_pix2pix_model.sh names\n"
                    "them) into CHECKPOINTS_DIR/NAME_pretrained/latest_net_G.pth, with a pretrained.json beside it\n"
                    "(source, SHA-256, direction, architecture), so that `p2p test --name NAME_pretrained` and\n"
                    "`p2p translate --name NAME_pretrained` run it with the right direction. The file must load\n"
                    "safely (weights only) as an official U-Net generator before it is placed; a failed download\n"
                    "places nothing and leaves an existing model untouched. No SHA-256 is published for these\n"
                    "files: each download prints its own, to pin with --sha256.",
        epilog="examples:\n  p2p download-model --list\n  p2p download facades && p2p download-model facades_label2photo\n"
               "  p2p test --dataroot datasets/facades --name facades_label2photo_pretrained\n"
               f"mirrors: --url FILE_URL, or ${MODELS_URL_VARIABLE}=BASE_URL (BASE_URL/NAME.pth)")
    parser.add_argument("name", nargs="?", help=f"model name: {', '.join(MODELS)} (none: list them)")
    parser.add_argument("--list", action="store_true", help="list the models, their datasets, directions and test commands")
    parser.add_argument("--checkpoints_dir", default="./checkpoints", help="where runs are saved (default: %(default)s)")
    parser.add_argument("--url", help="download the .pth from this URL instead (a mirror)")
    parser.add_argument("--sha256", help="expected SHA-256 of the .pth; a mismatch places nothing")
    parser.add_argument("--force", action="store_true", help="download again over an existing model (replaced only once "
                                                             "the new file has passed every check)")
    parser.add_argument("--timeout", type=number(float, above=0), default=DEADLINE_S,
                        help="give up a download that has not finished after this many seconds (default: %(default)g; "
                             f"a connection that sends nothing for {TIMEOUT_S:g} s is given up sooner)")
    parser.set_defaults(func=_run)
