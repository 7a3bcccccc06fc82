"""`p2p test` and `p2p translate` (hand-written CLI plumbing around p2p_lib.inference, lesson 07).

p2p test       a split with targets: per sample the input, output and target images under
               RESULTS_DIR/NAME/PHASE_EPOCH/images/, an index.html that shows them, and L1/PSNR/SSIM
               printed and saved to metrics.json. Options as in the official test.py.
p2p translate  files or folders of inputs, no targets: one output image per input, at the input's size.

The generator comes from CHECKPOINTS_DIR/NAME/EPOCH_net_G.pt (or EPOCH_state.pt, or the official
EPOCH_net_G.pth), or from --checkpoint FILE (any of those, or a .safetensors model file), through
p2p_lib.checkpoint.load_generator. Its architecture and data options come from the
checkpoint (for an official .pth that `p2p download-model` placed, also from the pretrained.json
beside it: the direction and crop size); flags given explicitly override them, with a warning
when they disagree.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
import urllib.parse
from pathlib import Path

import torch

from p2p_lib.checkpoint import CheckpointError, generator_candidates, load_generator
from p2p_lib.data import PairedDataError, PairedImageDataset
from p2p_lib.device import pick_device
from p2p_lib.optiontypes import number
from p2p_lib.rundir import RunFolderError, describe_write_error, make_folder
from p2p_lib.inference import evaluate_generator, image_files, to_pil, translate
from p2p_lib.networks import GENERATOR_OPTIONS, NETG_CHOICES

__all__ = ["register_cli", "checkpoint_file", "run_test", "run_translate"]

DATA_OPTIONS = ("direction", "crop_size", "preprocess")
# Official test.py options that change nothing here: accepted, with a one-line notice.
OFFICIAL_VALUED = ("display_winsize", "aspect_ratio", "num_threads", "batch_size", "suffix",
                   "dataset_mode", "ndf", "netD", "n_layers_D", "init_type", "init_gain", "load_iter",
                   "wandb_project_name", "display_id", "display_port", "display_server", "display_env")
OFFICIAL_FLAGS = ("serial_batches", "no_flip", "verbose", "use_wandb")


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def checkpoint_file(checkpoints_dir, name: str, epoch="latest") -> Path:
    """CHECKPOINTS_DIR/NAME/EPOCH_net_G.pt, else EPOCH_state.pt, else the official EPOCH_net_G.pth."""
    folder = Path(checkpoints_dir) / name
    candidates = generator_candidates(folder, epoch)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = "\n  ".join(str(c) for c in candidates)
    hint = ""
    if folder.is_dir():
        epochs = sorted({p.name.split("_")[0] for p in folder.glob("*_net_G.pt*")} |
                        {p.name.split("_")[0] for p in folder.glob("*_state.pt")})
        hint = f"\nepochs saved in {folder}: {', '.join(epochs) or 'none'}"
    elif Path(checkpoints_dir).is_dir():
        runs = sorted(p.name for p in Path(checkpoints_dir).iterdir() if p.is_dir())
        hint = f"\nruns in {checkpoints_dir}: {', '.join(runs) or 'none'} (choose one with --name)"
    raise CheckpointError(f"no generator checkpoint for --name {name} --epoch {epoch}; looked for:\n  {looked}{hint}\n"
                          "(or give a file with --checkpoint)")


def _device(args) -> torch.device:
    wanted = args.device
    if wanted in (None, "auto") and getattr(args, "gpu_ids", None) is not None:
        first = str(args.gpu_ids).split(",")[0].strip()
        wanted = "cpu" if first == "-1" else f"cuda:{first}"
    if wanted in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return pick_device(wanted)
    except ValueError as err:
        raise CheckpointError(f"--device: {err}") from None


def _model_source(args) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    return checkpoint_file(args.checkpoints_dir, args.name or "experiment_name", args.epoch)


def _architecture_overrides(args) -> dict:
    overrides = {key: getattr(args, key) for key in GENERATOR_OPTIONS}
    overrides["no_dropout"] = True if args.no_dropout else None  # a flag: only "given" counts
    return overrides


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the model (from CHECKPOINTS_DIR/NAME/EPOCH_net_G.pt, or --checkpoint)")
    group.add_argument("--name", default=None,
                       help="the run's name: its folder under --checkpoints_dir (official default: experiment_name)")
    group.add_argument("--checkpoints_dir", default="./checkpoints", help="where runs are saved (default: %(default)s)")
    group.add_argument("--epoch", default="latest", help="which epoch to load: latest or a number (default: %(default)s)")
    group.add_argument("--checkpoint", metavar="FILE", default=None,
                       help="load this file instead: a p2p_lib .pt (generator or training state), a p2p_lib "
                            ".safetensors model file, or an official latest_net_G.pth")
    group.add_argument("--eval", action="store_true",
                       help="eval mode: dropout off, BatchNorm running statistics. Default: the paper's and the "
                            "official test.py's train mode (dropout on, each image's own statistics)")
    group.add_argument("--seed", type=number(int, 0, maximum=2**63 - 1), default=0,
                       help="seed for train mode's dropout: the same seed gives the same outputs (default: %(default)s)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    arch = parser.add_argument_group("architecture (read from the checkpoint; give them only to override)")
    arch.add_argument("--netG", default=None, choices=NETG_CHOICES, help="generator")
    arch.add_argument("--ngf", type=number(int, 1), default=None, help="generator filters in the first layer")
    arch.add_argument("--norm", default=None, choices=["batch", "instance", "none"], help="normalisation layer")
    arch.add_argument("--no_dropout", action="store_true", help="the generator has no dropout")
    arch.add_argument("--input_nc", type=int, default=None, choices=[1, 3], help="input channels")
    arch.add_argument("--output_nc", type=int, default=None, choices=[1, 3], help="output channels")


def _add_official_extras(parser: argparse.ArgumentParser) -> None:
    for name in OFFICIAL_VALUED:
        parser.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    for name in OFFICIAL_FLAGS:
        parser.add_argument(f"--{name}", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gpu_ids", default=None, help=argparse.SUPPRESS)  # mapped to --device


def _official_notices(args, command: str) -> None:
    for name in OFFICIAL_VALUED + OFFICIAL_FLAGS:
        if getattr(args, name, None) not in (None, False):
            _note(f"--{name} is an option of the official code that `p2p {command}` does not use; ignored")


def _json_number(value):
    return value if not isinstance(value, float) or math.isfinite(value) else str(value)  # inf -> "inf"


def _write_index(path: Path, title: str, rows: list[dict], summary: str) -> None:
    def img(name):
        return f'<img src="images/{urllib.parse.quote(name)}" alt="{html.escape(name)}" width="256">'

    lines = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif} td{padding:4px;vertical-align:top;text-align:center}</style>",
             "</head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>",
             "<table><tr><th>sample</th><th>input (real_A)</th><th>output (fake_B)</th><th>target (real_B)</th></tr>"]
    for row in rows:
        scores = (f"L1 {row['L1']:.4f}<br>PSNR {row['PSNR']:.2f} dB<br>SSIM {row['SSIM']:.4f}"
                  f"<br>detail {row['detail']:.3f}")
        lines.append(f"<tr><td>{html.escape(row['name'])}<br>{scores}</td><td>{img(row['files'][0])}</td>"
                     f"<td>{img(row['files'][1])}</td><td>{img(row['files'][2])}</td></tr>")
    lines += ["</table>", "</body></html>"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_test(args) -> int:
    """`p2p test`: translate --num_test samples of --phase, save images + index.html + metrics.json."""
    _official_notices(args, "test")
    if args.model not in ("pix2pix", "test"):
        print(f"error: --model {args.model}: p2p runs pix2pix generators only (pix2pix or test)", file=sys.stderr)
        return 2
    try:
        device = _device(args)
        source = _model_source(args)
        overrides = _architecture_overrides(args)
        overrides.update({"direction": args.direction, "crop_size": args.crop_size, "preprocess": args.preprocess})
        G, options = load_generator(source, overrides=overrides, map_location=device, warn=_warn)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    crop_size = int(options.get("crop_size") or 256)
    # The official TestOptions set load_size = crop_size: the whole image is resized, nothing is cropped.
    load_size = args.load_size if args.load_size is not None else crop_size
    dataroot = args.dataroot or options.get("dataroot")
    if not dataroot:
        print("error: give --dataroot (the dataset folder with the PHASE split); the checkpoint does not name one",
              file=sys.stderr)
        return 2
    try:
        dataset = PairedImageDataset(dataroot, phase=args.phase, direction=options.get("direction") or "AtoB",
                                     load_size=load_size, crop_size=crop_size,
                                     preprocess=options.get("preprocess") or "resize_and_crop", no_flip=True,
                                     input_nc=int(options.get("input_nc", 3)), output_nc=int(options.get("output_nc", 3)),
                                     max_dataset_size=float("inf") if args.max_dataset_size is None else args.max_dataset_size)
    except (PairedDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    name = args.name or (Path(args.checkpoint).stem if args.checkpoint else "experiment_name")
    web_dir = Path(args.results_dir) / name / f"{args.phase}_{args.epoch}"
    image_dir = web_dir / "images"
    try:
        make_folder(image_dir, "results folder")
    except RunFolderError as err:
        print(f"error: {err} (--results_dir)", file=sys.stderr)
        return 1
    used, files = set(), {}

    def save(index, item, fake, scores):
        stem = Path(item["A_paths"]).stem
        if stem in used:
            stem = f"{stem}_{index}"
        used.add(stem)
        names = [f"{stem}_real_A.png", f"{stem}_fake_B.png", f"{stem}_real_B.png"]
        for tensor, filename in zip((item["A"], fake, item["B"]), names):
            to_pil(tensor).save(image_dir / filename)
        files[index] = names

    mode = "eval mode (--eval)" if args.eval else "train mode (the paper's test time; --eval for eval mode)"
    print(f"p2p test: {source} on {dataset.folder} ({options.get('direction') or 'AtoB'}, {load_size}->{crop_size}), "
          f"{mode}, seed {args.seed}")
    try:
        result = evaluate_generator(G, dataset, eval_mode=args.eval, seed=None if args.eval else args.seed,
                                    num_images=args.num_test, on_image=save)
    except PairedDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # writing the images
        print(f"error: cannot write the results in {image_dir}: {describe_write_error(err, web_dir)}", file=sys.stderr)
        return 1
    try:
        about = {"name": name, "checkpoint": str(source), "dataroot": str(dataroot), "phase": args.phase,
                 "epoch": args.epoch, "eval_mode": args.eval, "seed": None if args.eval else args.seed,
                 "direction": options.get("direction") or "AtoB", "load_size": load_size, "crop_size": crop_size}
        return _write_results(args, web_dir, about, files, result, mode)
    except OSError as err:
        print(f"error: cannot write the results in {web_dir}: {describe_write_error(err, web_dir)}", file=sys.stderr)
        return 1


def _write_results(args, web_dir: Path, about: dict, files: dict, result: dict, mode: str) -> int:
    "index.html and metrics.json (`about` the run, then the scores) of `p2p test`, and its summary lines."
    rows = [{**row, "files": files[row["index"]]} for row in result["per_image"]]
    color = result["color"]
    colour_text = "" if color is None else (f", colour histogram intersection L {color['L']:.3f} a {color['a']:.3f} "
                                            f"b {color['b']:.3f}")
    summary = (f"{result['count']} images: L1 {result['L1']:.4f}, PSNR {result['PSNR']:.2f} dB, "
               f"SSIM {result['SSIM']:.4f}, detail ratio {result['detail']:.3f}{colour_text} (images on [0, 1]); {mode}")
    if not args.no_html:
        _write_index(web_dir / "index.html", f"{about['name']}: {args.phase} split, epoch {args.epoch}", rows, summary)
    metrics = {**about, "scale": "images on [0, 1]; PSNR in dB", "count": result["count"],
               "L1": _json_number(result["L1"]), "PSNR": _json_number(result["PSNR"]),
               "SSIM": _json_number(result["SSIM"]), "detail": _json_number(result["detail"]),
               "color": None if color is None else {k: _json_number(v) for k, v in color.items()},
               "per_image": [{k: _json_number(v) for k, v in row.items()} for row in rows]}
    (web_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(summary)
    print(f"images{'' if args.no_html else ' and index.html'}: {web_dir}; metrics: {web_dir / 'metrics.json'}")
    return 0


def _translate_jobs(inputs: list[str], output: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input file, output file) pairs and the problems found while listing them."""
    problems, files = [], []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = image_files(path)
            if not found:
                problems.append(f"{path}: a folder without image files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    single = len(inputs) == 1 and len(files) == 1 and Path(inputs[0]).is_file() and \
        output.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
    jobs, claimed = [], {}
    for source in files:
        target = output if single else output / f"{source.stem}.png"
        if target in claimed:
            problems.append(f"{source}: its output {target} would also be the output of {claimed[target]}; "
                            "translate one of them separately")
            continue
        claimed[target] = source
        jobs.append((source, target))
    return jobs, problems


def run_translate(args) -> int:
    """`p2p translate`: every input file (or image in an input folder) to one output image of its size."""
    try:
        device = _device(args)
        source = _model_source(args)
        G, options = load_generator(source, overrides=_architecture_overrides(args), map_location=device, warn=_warn)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    output = Path(args.output)
    jobs, problems = _translate_jobs(args.inputs, output)
    try:  # every output folder first: a file in the way is one line, before any work
        for folder in sorted({dst.parent for _, dst in jobs}):
            make_folder(folder, "output folder")
    except RunFolderError as err:
        print(f"error: {err} (--output)", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    size = args.size or int(options.get("crop_size") or 0) or None
    written = 0
    for k, (src, dst) in enumerate(jobs):
        if dst.exists() and not args.overwrite:
            print(f"error: {dst} exists already; not overwritten (use --overwrite, or another --output)",
                  file=sys.stderr)
            problems.append(str(dst))
            continue
        try:
            result = translate(G, src, eval_mode=args.eval, seed=None if args.eval else args.seed + k,
                               size=size, fit=args.fit)
        except (PairedDataError, OSError, ValueError) as err:
            print(f"error: {src}: cannot translate it: {err}", file=sys.stderr)
            problems.append(str(src))
            continue
        extra = {"quality": 95} if dst.suffix.lower() in (".jpg", ".jpeg") else {}
        try:
            result.save(dst, **extra)
        except OSError as err:
            print(f"error: cannot write {dst}: {describe_write_error(err, dst.parent)}", file=sys.stderr)
            return 1
        written += 1
        print(f"{src} -> {dst} ({result.width}x{result.height})")
    mode = "eval mode" if args.eval else f"train mode, seed {args.seed}"
    print(f"p2p translate: {written} image(s) written ({mode}, fit={args.fit}); {len(problems)} problem(s)")
    return 1 if problems or not jobs else 0


def register_cli(subparsers) -> None:
    test = subparsers.add_parser(
        "test", help="translate a split with targets: images, index.html and L1/PSNR/SSIM",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Translate the first --num_test pairs of DATAROOT/PHASE with a trained generator and write,\n"
                    "per sample, the input, output and target under RESULTS_DIR/NAME/PHASE_EPOCH/images/\n"
                    "(SAMPLE_real_A.png, SAMPLE_fake_B.png, SAMPLE_real_B.png), an index.html showing them, and the\n"
                    "L1, PSNR, SSIM and detail ratio (lesson 07) and, for colour outputs, the Lab colour histogram\n"
                    "intersection over the split (printed, and saved to metrics.json; images on [0, 1]).\n"
                    "Options as in the official test.py; the architecture, direction and crop size are read from\n"
                    "the checkpoint. Preprocessing: resize to --load_size (default: the crop size, as the official\n"
                    "test), a centre crop only if --load_size is larger, never a flip. Results of an earlier run\n"
                    "with the same NAME, PHASE and EPOCH are replaced.",
        epilog="example:\n  p2p test --dataroot datasets/facades --name facades_pix2pix --phase val\n"
               "  p2p test --dataroot datasets/facades --direction BtoA --checkpoint latest_net_G.pth --eval")
    test.add_argument("--dataroot", default=None,
                      help="dataset folder holding the PHASE split (default: the one saved with the checkpoint)")
    test.add_argument("--results_dir", default="./results/", help="where results go (default: %(default)s)")
    test.add_argument("--phase", default="test", help="split to translate: train, val, test (default: %(default)s)")
    test.add_argument("--num_test", type=number(int, 1), default=50,
                      help="translate at most this many pairs (default: %(default)s, as the official test.py)")
    test.add_argument("--model", default="pix2pix", help="pix2pix (or the official 'test'); nothing else")
    test.add_argument("--no_html", action="store_true", help="do not write index.html")
    test.add_argument("--max_dataset_size", type=number(int, 1), default=None, help="use at most this many pairs of the split")
    data = test.add_argument_group("data (read from the checkpoint; give them only to override)")
    data.add_argument("--direction", default=None, choices=["AtoB", "BtoA"], help="which side is the input")
    data.add_argument("--load_size", type=number(int, 1), default=None, help="resize to this size (default: the crop size)")
    data.add_argument("--crop_size", type=number(int, 1), default=None, help="the size the network sees")
    data.add_argument("--preprocess", default=None, choices=["resize_and_crop", "crop", "scale_width",
                                                               "scale_width_and_crop", "none"],
                      help="resize/crop rule, as the official --preprocess")
    _add_model_options(test)
    _add_official_extras(test)
    test.set_defaults(func=run_test)

    trans = subparsers.add_parser(
        "translate", help="translate image files or folders with a trained generator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Translate each INPUT (an image file, or a folder: every image directly in it) and write\n"
                    "one output image of the input's size per input. With one input file and an --output that\n"
                    "ends in an image extension, that is the output file; otherwise --output is a folder and\n"
                    "each output is OUTPUT/NAME.png. Existing outputs are never overwritten unless --overwrite.\n"
                    "An unreadable input is reported by name and skipped; the exit status is then 1.\n"
                    "Size: --fit resize (default) resizes to the training crop size and back, the scale the\n"
                    "network learned; --fit pad reflect-pads to the network's multiple and crops back (full\n"
                    "resolution, for inputs already at the training scale).",
        epilog="examples:\n  p2p translate labels.png --output photo.png --name facades_pix2pix\n"
               "  p2p translate inputs/ more.jpg --output outputs/ --checkpoint latest_net_G.pth --eval")
    trans.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    trans.add_argument("--output", "-o", required=True, help="output file (one input) or folder")
    trans.add_argument("--fit", default="resize", choices=["resize", "pad"],
                       help="how to reach the network's size (default: %(default)s)")
    trans.add_argument("--size", type=number(int, 1), default=None,
                       help="with --fit resize: the size to translate at (default: the checkpoint's crop_size)")
    trans.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    _add_model_options(trans)
    trans.set_defaults(func=run_translate)
