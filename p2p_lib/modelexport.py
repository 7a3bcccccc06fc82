"""`p2p export`: a trained generator in the files other tools read (hand-written plumbing: no lesson
teaches it; lesson 07 runs the generator in the two test-time modes these files must carry).

    p2p export --name facades --format official    --output ckpts/facades/latest_net_G.pth
    p2p export --name facades --format safetensors --output facades.safetensors
    p2p export --name facades --format pt2         --output facades.pt2   [--eval | --no_dropout_at_test]
    p2p export --checkpoint latest_net_G.pt --format onnx --output facades.onnx

Formats:

    official     the state dict of the official pytorch-CycleGAN-and-pix2pix generator, saved with
                 torch.save, for its test.py (the command line it needs is printed). Weights only.
    safetensors  the reference model file (p2p_lib.modelfile): G under "G.", D under "D." when the
                 source is a training state, the architecture as metadata. Weights only.
    pt2          a torch.export program (torch.export.save), with the weights and the graph of one
                 test-time mode; height and width are dynamic (multiples of 2**num_downs).
    onnx         the same program through torch.onnx's dynamo exporter, for onnxruntime and others.

Why torch.export and not TorchScript: TorchScript is deprecated upstream (maintenance only, with
torch.export named as its replacement); torch.export captures the same graph torch.onnx's exporter starts
from (one tracing path serves both formats), and its dynamic shapes keep the size rule (multiples of
2**num_downs) in the file instead of freezing the one size torch.jit.trace saw.

Test-time mode. The official test.py keeps the generator in train mode unless --eval: BatchNorm
normalises with the statistics of the batch it is given (at batch size 1, each image's own: instance
normalisation) and dropout stays on. A graph is traced in eval mode (so nothing can update BatchNorm's
running statistics) after every BatchNorm2d is replaced by `BatchStatisticsNorm` (what train-mode BN
computes, without the update) and every Dropout by `RandomDropout` (a fresh random mask on every call,
in the graph: torch.rand_like, ONNX RandomUniformLike) or, with --no_dropout_at_test, by nothing.
--eval traces eval mode as it is (running statistics, no dropout). The weights-only formats leave the
mode to whoever loads them; the command printed asks for the mode chosen here.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from p2p_lib.checkpoint import (CheckpointError, check_architecture, generator_candidates, jsonable_options,
                                load_checkpoint, load_generator, read_model_file, require_finite, state_path,
                                write_atomically)
from p2p_lib.modelfile import save_model_file
from p2p_lib.networks import DISCRIMINATOR_OPTIONS, NETG_NUM_DOWNS, RESNET_BLOCKS, define_D, size_multiple_of
from p2p_lib.official import our_state_dict_to_official
from p2p_lib.rundir import describe_write_error

__all__ = ["FORMATS", "MODES", "ExportError", "BatchStatisticsNorm", "RandomDropout", "describe_mode",
           "prepare_for_export", "export_program", "save_pt2", "load_pt2", "save_onnx", "save_official",
           "official_test_command", "save_safetensors", "register_cli", "run_export"]

FORMATS = ("official", "safetensors", "pt2", "onnx")
SUFFIXES = {"official": ".pth", "safetensors": ".safetensors", "pt2": ".pt2", "onnx": ".onnx"}
# train: the official test.py default; train_no_dropout: the same with dropout off (official: --no_dropout);
# eval: the official --eval.
MODES = ("train", "train_no_dropout", "eval")
EXPORT_FORMAT, EXPORT_VERSION = "p2p_lib-export", "1"
METADATA_FILE = "p2p_lib.json"  # the pt2 archive's extra file that describes the program
MAX_SIDE = 16384  # the dynamic height/width allowed, far beyond what a pix2pix generator is run at
ONNX_MISSING = "--format onnx needs the onnx and onnxscript packages: pip install 'p2p_lib[export]'"


class ExportError(Exception):
    """What `p2p export` reports as one 'error:' line; `status` is the exit status (2: usage, 1: the rest)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class BatchStatisticsNorm(nn.Module):
    """What BatchNorm2d computes in train mode (the batch's mean and biased variance per channel, then
    the learned scale and shift), as plain operations that update nothing: a graph traced from it
    normalises every batch with its own statistics, whatever mode the graph is run in."""

    def __init__(self, batchnorm: nn.BatchNorm2d):
        super().__init__()
        if not batchnorm.affine:
            raise ExportError("a BatchNorm2d without a learned scale and shift: not a layer this library builds")
        self.weight, self.bias, self.eps = batchnorm.weight, batchnorm.bias, batchnorm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        variance = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)  # train-mode BN divides by N, not N - 1
        scale = self.weight[None, :, None, None] * torch.rsqrt(variance + self.eps)
        return (x - mean) * scale + self.bias[None, :, None, None]


class RandomDropout(nn.Module):
    """Dropout that is on in any mode: zero each value with probability p, scale the rest by 1/(1-p),
    a new mask on every call (torch.rand_like: torch's generator in a pt2 program, ONNX RandomUniformLike)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


def _layers(G: nn.Module) -> tuple[bool, bool]:
    "(has BatchNorm, has dropout): what the test-time mode changes in this generator."
    modules = list(G.modules())
    return (any(isinstance(m, nn.BatchNorm2d) for m in modules),
            any(isinstance(m, nn.Dropout) and m.p > 0 for m in modules))


def describe_mode(mode: str, G: nn.Module) -> str:
    "One sentence on what the exported graph does at test time, for --help, the output and the metadata."
    has_batchnorm, has_dropout = _layers(G)
    if mode == "eval":
        norm = "BatchNorm with its running statistics" if has_batchnorm else "no BatchNorm"
        return f"eval mode (--eval, as the official test.py --eval): {norm}, dropout off; deterministic"
    norm = ("BatchNorm with the statistics of the batch it is given (at batch size 1 each image's own, "
            "i.e. instance normalisation), not the running statistics") if has_batchnorm else "no BatchNorm"
    if not has_dropout:
        dropout = "no dropout layers"
    elif mode == "train_no_dropout":
        dropout = "dropout off (--no_dropout_at_test, as the official test.py --no_dropout); deterministic"
    else:
        dropout = "random dropout (p=0.5, a new mask on every call, so two runs differ)"
    return f"train mode (the official test.py default): {norm}; {dropout}"


def _swap_layers(module: nn.Module, dropout: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, BatchStatisticsNorm(child))
        elif isinstance(child, nn.Dropout):
            setattr(module, name, RandomDropout(child.p) if dropout and child.p > 0 else nn.Identity())
        else:
            _swap_layers(child, dropout)


def prepare_for_export(G: nn.Module, mode: str) -> nn.Module:
    """A copy of G, in eval mode, that computes test-time mode `mode` (see MODES) whatever mode it is run
    in: eval is G.eval(); the train modes swap BatchNorm for BatchStatisticsNorm and Dropout for
    RandomDropout (train) or nothing (train_no_dropout). G itself is left as it is."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    prepared = copy.deepcopy(getattr(G, "module", G)).cpu()
    if mode != "eval":
        _swap_layers(prepared, dropout=mode == "train")
    return prepared.eval()


def _dynamic_shapes(multiple: int) -> tuple[dict, torch.Tensor]:
    """torch.export's dynamic shapes (any batch; height and width any multiple of `multiple` up to
    MAX_SIDE) and the example input to trace with: two multiples per side, because a size-1 example
    (the innermost 1x1 map at the training size) would be specialised to a constant."""
    blocks = max(1, MAX_SIDE // multiple)
    height = torch.export.Dim("height_blocks", min=1, max=blocks)
    width = torch.export.Dim("width_blocks", min=1, max=blocks)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return {"x": {0: batch, 2: multiple * height, 3: multiple * width}}, torch.zeros(2, 1, 2 * multiple, 2 * multiple)


@contextlib.contextmanager
def _quiet_tracing():
    "Tracing's FutureWarnings and notices about absent packages (torchvision) say nothing about this model."
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_program(G: nn.Module, options: dict, mode: str) -> torch.export.ExportedProgram:
    """torch.export of G's test-time mode `mode`: input x (N, input_nc, H, W) in [-1, 1], H and W multiples
    of 2**num_downs (any batch; with batch statistics, the whole batch is normalised together)."""
    prepared = prepare_for_export(G, mode)
    multiple = size_multiple_of(options["netG"])
    dynamic_shapes, example = _dynamic_shapes(multiple)
    example = example.expand(-1, int(options["input_nc"]), -1, -1).contiguous()
    try:
        # Size-oblivious (torch.onnx's exporter retraces the same way): the trace's contiguity checks must not
        # assume every side > 1, or the training size (a 1x1 innermost map) would fail the program's guards.
        with _quiet_tracing(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return torch.export.export(prepared, (example,), dynamic_shapes=dynamic_shapes)
    except Exception as err:  # torch.export raises many types; one line is what the user can act on
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch.export could not trace the {options['netG']} generator: {first}") from err


def _about(options: dict, mode: str, G: nn.Module, source) -> dict:
    "The description every graph export carries: options, test-time mode, input/output and where it came from."
    multiple = size_multiple_of(options["netG"])
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "test_time_mode": mode,
            "test_time": describe_mode(mode, G), "options": jsonable_options(options), "source": str(source),
            "input": f"float32 N x {options['input_nc']} x H x W in [-1, 1]; H and W multiples of {multiple}",
            "output": f"float32 N x {options['output_nc']} x H x W in [-1, 1] (tanh)"}


def save_pt2(program: torch.export.ExportedProgram, path, about: dict) -> Path:
    "torch.export.save with `about` as the archive's p2p_lib.json, written atomically."
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(about, sort_keys=True)})
    return write_atomically(path, lambda fh: fh.write(buffer.getvalue()))


def load_pt2(path) -> tuple[torch.export.ExportedProgram, dict]:
    "(program, about) of a file save_pt2 wrote; run it with program.module()(x)."
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program, json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}


def _require_onnx() -> None:
    "Before any tracing: the exporter imports onnx and onnxscript lazily, and fails late without them."
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportError(ONNX_MISSING) from None


def save_onnx(program: torch.export.ExportedProgram, path, about: dict) -> Path:
    """The program through torch.onnx's dynamo exporter (input "input", output "output", dynamic batch,
    height and width), `about` in the model's metadata_props, written atomically."""
    _require_onnx()
    import onnx
    with _quiet_tracing(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=["input"], output_names=["output"],
                                         verbose=False)
    model = onnx_program.model_proto
    onnx.helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                                        for k, v in about.items()})
    model.doc_string = about.get("test_time", "")
    data = model.SerializeToString()
    return write_atomically(path, lambda fh: fh.write(data))


def save_official(G: nn.Module, options: dict, path) -> Path:
    """The official generator's state dict (a U-Net under the official nested names; a ResNet generator has
    the official names already), torch.save'd atomically. Weights only: the loader picks the mode."""
    state = {k: v.detach().cpu().contiguous() for k, v in getattr(G, "module", G).state_dict().items()}
    netG = options["netG"]
    if netG in RESNET_BLOCKS:
        official = state  # lesson 10 builds the official ResnetGenerator layer for layer
    elif netG in NETG_NUM_DOWNS and not netG.startswith("encoder_decoder"):
        official = our_state_dict_to_official(state, options["norm"])
    else:
        raise ExportError(f"--format official: the official code has no {netG} generator (the U-Net without "
                          "skips is this course's ablation); export it as safetensors, pt2 or onnx")
    return write_atomically(path, lambda fh: torch.save(official, fh))


def _official_location(path: Path) -> tuple[str, str, str, str]:
    "(checkpoints_dir, name, epoch, note): where the official test.py must find the file."
    match = re.fullmatch(r"(.+)_net_G\.pth", path.name)
    if match and not path.parent.name:  # a bare file name: its folder is the current one
        path = path.resolve()
    if match:
        return str(path.parent.parent), path.parent.name, match.group(1), ""
    return ("CHECKPOINTS_DIR", "NAME", "latest",
            f"the official code loads CHECKPOINTS_DIR/NAME/EPOCH_net_G.pth: move {path} to e.g. "
            "./checkpoints/NAME/latest_net_G.pth first\n")


def official_test_command(options: dict, path, mode: str) -> str:
    "The official test.py command lines that load `path` with this architecture, in test-time mode `mode`."
    checkpoints_dir, name, epoch, note = _official_location(Path(path))
    architecture = (f"--netG {options['netG']} --ngf {options['ngf']} --norm {options['norm']} "
                    f"--input_nc {options['input_nc']} --output_nc {options['output_nc']}")
    if options.get("no_dropout") or mode == "train_no_dropout":
        architecture += " --no_dropout"  # dropout has no weights: leaving it out at test time is the loader's call
    if options.get("crop_size"):
        architecture += f" --load_size {options['crop_size']} --crop_size {options['crop_size']}"
    if mode == "eval":
        architecture += " --eval"
    where = f"--name {name} --checkpoints_dir {checkpoints_dir} --epoch {epoch}"
    direction = f" --direction {options['direction']}" if options.get("direction") else ""
    paired = f"python test.py --dataroot DATAROOT --model pix2pix{direction} {where} {architecture}"
    single = f"python test.py --dataroot IMAGES --model test --dataset_mode single {where} {architecture}"
    return (f"{note}official test.py (junyanz/pytorch-CycleGAN-and-pix2pix), test-time mode {mode}:\n"
            f"  a paired split:  {paired}\n  single images:   {single}")


def _storable_discriminator(path: Path, options: dict, state_dict: dict) -> nn.Module:
    """D rebuilt from the options the model file keeps (networks.DISCRIMINATOR_OPTIONS) and loaded with
    `state_dict`; ExportError when those options do not describe it (--adversarial gan, --num_D)."""
    kept = {k: options[k] for k in DISCRIMINATOR_OPTIONS if k in options}
    what = f"discriminator (D in {path.name})"
    try:
        check_architecture(kept, state_dict, what, lambda o: define_D(o, init=False))
        require_finite(state_dict, what)
    except CheckpointError as err:
        raise ExportError(f"{err}. The model file keeps {', '.join(DISCRIMINATOR_OPTIONS)} only, which do not "
                          "rebuild this discriminator: give --generator_only to store the generator alone") from None
    D = define_D(kept, init=False)
    D.load_state_dict(state_dict, strict=True)
    return D


def _source_discriminator(path: Path, options: dict) -> tuple[nn.Module | None, str]:
    "(D or None, why not): the discriminator a training state or a model file holds."
    if path.suffix.lower() == ".safetensors":
        state_dict = read_model_file(path)["D"]
    else:
        obj = load_checkpoint(path)
        state_dict = obj.get("D") if obj.get("kind") == "train_state" else None
    if state_dict is None:
        return None, f"{path.name} holds no discriminator (only a training state or a model file with D does)"
    if options.get("adversarial") == "none":
        return None, "the run trained without a discriminator (--adversarial none): its D is untrained"
    return _storable_discriminator(path, options, state_dict), ""


def save_safetensors(G: nn.Module, options: dict, path, D: nn.Module | None = None, half: bool = False,
                     card: dict | None = None) -> Path:
    "The reference model file (p2p_lib.modelfile.save_model_file), float32 unless `half`."
    dtype = torch.float16 if half else torch.float32
    try:
        return save_model_file(path, G, options, D=D, metadata=card, dtype=dtype)
    except CheckpointError as err:
        raise ExportError(str(err)) from None


def _saved_epochs(folder: Path) -> str:
    epochs = {p.name.split("_")[0] for pattern in ("*_net_G.pt*", "*_state.pt") for p in folder.glob(pattern)}
    return ", ".join(sorted(epochs)) or "none"


def _run_folder(args) -> Path:
    folder = Path(args.checkpoints_dir) / args.name
    if folder.is_dir():
        return folder
    parent = Path(args.checkpoints_dir)
    runs = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    where = f"runs in {parent}: {', '.join(runs) or 'none'}" if parent.is_dir() else f"{parent} is not a folder"
    raise ExportError(f"no run {args.name!r}: {folder} is not a folder ({where}; --checkpoints_dir, --name)")


def _source_file(args, want_discriminator: bool) -> Path:
    """The file to export: --checkpoint, or in CHECKPOINTS_DIR/NAME the epoch's generator, its training
    state first when the discriminator is wanted (only the state holds it)."""
    if args.checkpoint:
        path = Path(args.checkpoint)
        if not path.is_file():
            raise ExportError(f"--checkpoint {path}: no such file")
        return path
    folder, epoch = _run_folder(args), args.epoch or "latest"
    if (folder / f"{epoch}_net_G_A.pt").is_file():
        raise ExportError(f"{folder} is a cycle_gan run: it has two generators; export one with --checkpoint "
                          f"{folder / f'{epoch}_net_G_A.pt'} (A -> B) or {folder / f'{epoch}_net_G_B.pt'} (B -> A)")
    candidates = ([state_path(folder, epoch)] if want_discriminator else []) + generator_candidates(folder, epoch)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ExportError(f"no checkpoint for --epoch {epoch} in {folder} (epochs saved there: {_saved_epochs(folder)})")


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _load(path: Path) -> tuple[nn.Module, dict]:
    "(G, options) by checkpoint.load_generator, with a clear word for a cycle_gan training state."
    try:
        return load_generator(path, map_location="cpu", warn=_print_warning)
    except CheckpointError as err:
        if path.suffix.lower() == ".pt":
            with contextlib.suppress(CheckpointError):
                if load_checkpoint(path).get("options", {}).get("model") == "cycle_gan":
                    raise ExportError(f"{path} is the training state of a cycle_gan run (two generators): export "
                                      f"{path.parent}/EPOCH_net_G_A.pt or EPOCH_net_G_B.pt instead") from None
        raise ExportError(str(err)) from None


def _output_path(args) -> Path:
    "--output, or a file in it when it is a folder (ends with a slash, or exists)."
    output = Path(args.output)
    if args.output.endswith(("/", os.sep)) or output.is_dir():
        epoch = args.epoch or "latest"
        name = f"{epoch}_net_G.pth" if args.format == "official" else f"model{SUFFIXES[args.format]}"
        output = output / name
    return output


def _check_output(path: Path, force: bool) -> None:
    "Before any work: the output must be new (or --force) and its folder makeable and writable."
    if path.is_dir():
        raise ExportError(f"--output {path} is a folder")
    if path.exists() and not force:
        raise ExportError(f"{path} exists already; not overwritten (give --force, or another --output)")
    folder = next(p for p in path.parents if p.exists() or p == p.parent)
    if not folder.is_dir():
        raise ExportError(f"cannot write {path}: {folder} is a file, not a folder (--output)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {path}: the folder {folder} is not writable (--output)")


WEIGHTS_ONLY = ("weights only: the test-time mode is the loader's choice (the official test.py and p2p test / "
                "translate: train mode unless --eval)")


def _export_weights(args, G: nn.Module, options: dict, source: Path, output: Path, mode: str) -> None:
    "--format official or safetensors: the file, then how to load it in `mode`."
    if args.format == "official":
        save_official(G, options, output)
        print(f"{WEIGHTS_ONLY}; the commands below ask for {mode}: {describe_mode(mode, G)}")
        print(official_test_command(options, output, mode))
        return
    D, why_not = (None, "--generator_only") if args.generator_only else _source_discriminator(source, options)
    card = {"exported_by": "p2p export", "source": str(source), "test_time": WEIGHTS_ONLY}
    save_safetensors(G, options, output, D=D, half=args.half, card=card)
    print(f"stored: G{' and D' if D is not None else f' only ({why_not})'}, "
          f"{'float16' if args.half else 'float32'}; {WEIGHTS_ONLY}")
    flags = {"train": "", "train_no_dropout": " --no_dropout", "eval": " --eval"}[mode]
    print(f"load it ({mode}: {describe_mode(mode, G)}):\n  p2p translate INPUT --output OUTPUT "
          f"--checkpoint {output}{flags}\n  p2p test --dataroot DATAROOT --checkpoint {output}{flags}\n"
          "  or in Python: p2p_lib.checkpoint.load_generator(path) -> (G, options); p2p_lib.modelfile.load_model_file")


def _export_graph(args, G: nn.Module, options: dict, source: Path, output: Path, mode: str) -> None:
    "--format pt2 or onnx: the traced graph of `mode`, described in its metadata."
    about = _about(options, mode, G, source)
    program = export_program(G, options, mode)
    if args.format == "pt2":
        save_pt2(program, output, about)
        usage = (f"  program = torch.export.load({str(output)!r}); y = program.module()(x)\n"
                 f"  (p2p_lib.modelexport.load_pt2 also returns the metadata; PyTorch {torch.__version__.split('+')[0]}"
                 " or newer)")
    else:
        save_onnx(program, output, about)
        usage = (f"  session = onnxruntime.InferenceSession({str(output)!r})\n"
                 "  y = session.run(['output'], {'input': x})[0]")
    print(f"test-time mode {mode}: {about['test_time']}")
    print(f"input {about['input']}; output {about['output']}\nrun it:\n{usage}")


def _mode(args) -> str:
    return "eval" if args.eval else "train_no_dropout" if args.no_dropout_at_test else "train"


def run_export(args) -> int:
    """`p2p export`: the checkpoint's generator (and D, for safetensors) in --format, at --output."""
    try:
        if args.checkpoint and (args.epoch is not None or args.checkpoints_dir is not None):
            raise ExportError("--epoch and --checkpoints_dir go with --name, not with --checkpoint", status=2)
        args.checkpoints_dir = args.checkpoints_dir or "./checkpoints"
        if args.format != "safetensors" and (args.generator_only or args.half):
            raise ExportError("--generator_only and --half are options of --format safetensors", status=2)
        mode, output = _mode(args), _output_path(args)
        _check_output(output, args.force)
        if output.suffix.lower() != SUFFIXES[args.format]:
            _print_warning(f"--output {output} does not end in {SUFFIXES[args.format]}, the usual name for --format "
                           f"{args.format}; writing it anyway")
        if args.format == "onnx":
            _require_onnx()
        source = _source_file(args, want_discriminator=args.format == "safetensors" and not args.generator_only)
        G, options = _load(source)
        print(f"p2p export: {source} ({options['netG']}, ngf {options['ngf']}, norm {options['norm']}) -> "
              f"{output} ({args.format})")
        export = _export_weights if args.format in ("official", "safetensors") else _export_graph
        try:
            export(args, G, options, source, output, mode)
        except OSError as err:  # the write itself (reads raise CheckpointError): a full disk, a folder gone
            raise ExportError(f"cannot write {output}: {describe_write_error(err, output.parent)}") from None
    except (ExportError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "status", 1)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")
    return 0


DESCRIPTION = """\
Write a trained generator in a format other tools read, from CHECKPOINTS_DIR/NAME/EPOCH_net_G.pt
(or EPOCH_state.pt, or the official EPOCH_net_G.pth) or --checkpoint FILE (any of those, or a
.safetensors model file). The output is written atomically and never replaces a file unless --force.
Everything runs on the CPU.

formats, and the test-time mode each carries:
  official     the official pytorch-CycleGAN-and-pix2pix generator state dict (torch.save), for its
               test.py: the command line it needs is printed. Weights only: the mode is the loader's
               (official test.py: train mode unless --eval; --eval / --no_dropout_at_test here only
               change the printed command: --eval, --no_dropout).
  safetensors  the reference model file (p2p_lib.modelfile): G under "G.", and D under "D." when the
               source is a training state (EPOCH_state.pt) or a model file with D; the architecture as
               metadata; float32 (--half: float16). Weights only, like official.
  pt2          a torch.export program (torch.export.save; load with torch.export.load). Chosen over
               TorchScript, which is deprecated upstream (maintenance only, torch.export named as its
               replacement): it traces the graph the ONNX exporter also starts from, and keeps height
               and width dynamic (any multiple of 2**num_downs: 256 for unet_256, 4 for the ResNets)
               instead of freezing one size.
  onnx         the same program through torch.onnx's dynamo exporter (input "input", output "output",
               dynamic batch, height and width), for onnxruntime; needs pip install 'p2p_lib[export]'.

pt2 and onnx fix the test-time mode in the graph, and state it in their metadata (pt2: the archive's
p2p_lib.json; onnx: metadata_props):
  default               train mode, the official test.py default: BatchNorm normalises with the statistics
                        of the batch it is given (at batch size 1, each image's own: instance
                        normalisation), never updating running statistics; dropout random on every call
                        (in the graph: torch.rand_like / ONNX RandomUniformLike), so two runs differ.
  --no_dropout_at_test  batch statistics as above, dropout off: deterministic (official: --no_dropout).
  --eval                eval mode: running statistics, dropout off: deterministic (official: --eval).
Feed one image per call to match the official test (batch statistics cover the whole batch)."""


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a trained generator as official .pth, safetensors, "
                                   "torch.export .pt2 or ONNX", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="examples:\n  p2p export --name facades --format official --output "
                                          "ckpts/facades/latest_net_G.pth\n  p2p export --checkpoint latest_net_G.pt "
                                          "--format onnx --output facades.onnx --eval")
    source = parser.add_argument_group("the model (CHECKPOINTS_DIR/NAME/EPOCH_..., or --checkpoint)")
    which = source.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="the run's name: its folder under --checkpoints_dir")
    which.add_argument("--checkpoint", metavar="FILE", help="export this file instead: a p2p_lib .pt, a "
                       ".safetensors model file or an official latest_net_G.pth")
    source.add_argument("--checkpoints_dir", default=None, help="where runs are saved (default: ./checkpoints)")
    source.add_argument("--epoch", default=None, help="which epoch: latest or a number (default: latest)")
    out = parser.add_argument_group("the export")
    out.add_argument("--format", required=True, choices=FORMATS, help="see above")
    out.add_argument("--output", "-o", required=True, metavar="PATH",
                     help="the file to write (a folder: DIR/EPOCH_net_G.pth for official, DIR/model.FORMAT otherwise)")
    out.add_argument("--force", action="store_true", help="replace --output if it exists")
    mode = out.add_mutually_exclusive_group()
    mode.add_argument("--eval", action="store_true", help="eval mode: running statistics, dropout off")
    mode.add_argument("--no_dropout_at_test", action="store_true", help="train mode's batch statistics, dropout off")
    out.add_argument("--generator_only", action="store_true", help="safetensors: leave the discriminator out")
    out.add_argument("--half", action="store_true", help="safetensors: float16 tensors (half the size, ~1e-3 "
                     "output differences)")
    parser.set_defaults(func=run_export)
