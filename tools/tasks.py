"""Lesson 09's applications: one recipe (lesson 06's course model) trained on each task made from the facades
photos, scored against the task's trivial baseline.

    python tools/tasks.py run [--only TASK ...] [--commit]
        trains every pending task, one at a time (about 5 minutes each on a 2-core CPU without bf16), and
        writes experiments/tasks/TASK/ (result.json, outputs.png) as soon as it finishes; with --commit,
        commits those files at once. Run it again after an interruption: finished tasks are skipped.
    python tools/tasks.py list
        prints every task and whether it is done.
    python tools/tasks.py table
        writes experiments/tasks/README.md: per task, the model against its trivial baselines, from the results.

Every task trains lesson 06's course model (unet_128, ngf/ndf 32, 143 -> 128 px jitter, batch 1, L1 + cGAN with
lambda 100) for 2 + 2 epochs (1,600 steps), float32 pinned, on pairs made by lesson 09's transforms from the
400 facades training photos (the left half of each file); it is scored on the 100 validation photos in the
paper's test mode. The pairs are written by `p2p make-pairs` code into .cache/tasks/ (not committed);
colorize_lab reads the photos directly (lesson 09's ColorizationDataset: 1 input, 2 output channels).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python tools/tasks.py` from a checkout
sys.path.insert(0, str(ROOT / "tools"))

from ablate import code_version, commit, curves  # noqa: E402
from p2p_lib.data import PairedImageDataset  # noqa: E402
from p2p_lib.makepairs import make_pairs  # noqa: E402
from p2p_lib.metrics import detail_ratio, to_unit_range  # noqa: E402
from p2p_lib.paths import dataset_dir  # noqa: E402
from p2p_lib.tasks import ColorizationDataset, lab_batch_to_rgb, paste_known, rectangle_mask  # noqa: E402
from p2p_lib.train import COURSE_CONFIG, image_grid, train_course_model, translate_batch  # noqa: E402
from reference_model import machine, png_bytes, scores, write_file  # noqa: E402

RESULTS = ROOT / "experiments" / "tasks"   # committed: small files per task
DATA = ROOT / ".cache" / "tasks"           # not committed: the A|B pairs made from the facades photos
BASE = {**COURSE_CONFIG, "direction": "AtoB", "n_epochs": 2, "n_epochs_decay": 2, "snapshots": 0,
        "snapshot_steps": []}
# name: (what it is, the make-pairs task or None for the on-the-fly L*a*b* set, options that differ from BASE)
TASK_RUNS = {
    "colorize_gray": ("colorization, gray -> RGB", "colorize", {}),
    "colorize_lab":  ("colorization, L* -> a*b* (official colorization mode)", None, {"input_nc": 1, "output_nc": 2}),
    "inpaint":       ("inpainting, hidden rectangles -> photo", "inpaint", {}),
    "edges":         ("edges -> photo (Canny, not the paper's HED)", "edges", {}),
    "stylize":       ("photo -> posterised style", "stylize", {"direction": "BtoA"}),
    "superres":      ("4x super-resolution, bicubic -> photo", "superres", {}),
}
SHOWN = (0, 1, 2, 3)   # the val photos whose outputs each task keeps (outputs.png)
CODE_VERSION = code_version("tools/tasks.py")  # read once, when the run starts


def task_data(name: str, facades: Path, data: Path = DATA, size: int = 128, count: int | None = None) -> dict:
    """Task `name`'s data: {"train": the training set, "val": (inputs, targets) at the official test settings
    (no crop, no flip), "keys": the val files' stems (inpainting's masks), "train_mean": the mean training
    target at test settings (1 x C x H x W)}. A|B tasks are written once into data/NAME by make-pairs' code;
    colorize_lab reads the facades photos (lesson 09's ColorizationDataset)."""
    config = {**BASE, **TASK_RUNS[name][2]}
    make = TASK_RUNS[name][1]
    if make is None:
        sets = {phase: ColorizationDataset(facades, phase, half="left", load_size=size, crop_size=size, no_flip=True)
                for phase in ("train", "val")}
        train = ColorizationDataset(facades, "train", half="left", load_size=config["load_size"],
                                    crop_size=config["crop_size"])
        keys = [Path(p).stem for p in sets["val"].images]
    else:
        if not (data / name / "val").is_dir():
            make_pairs(make, facades, data / name, half="left", overwrite=True)
        sets = {phase: PairedImageDataset(data / name, phase, direction=config["direction"], load_size=size,
                                          crop_size=size, no_flip=True) for phase in ("train", "val")}
        train = PairedImageDataset(data / name, "train", direction=config["direction"],
                                   load_size=config["load_size"], crop_size=config["crop_size"])
        keys = [Path(a).stem for a, _ in sets["val"].pairs]
    count = len(keys) if count is None else min(count, len(keys))
    with torch.random.fork_rng(devices=[]):  # the test-settings sets draw a (trivial) crop from torch's RNG
        val = [sets["val"][i] for i in range(count)]
        train_B = torch.stack([sets["train"][i]["B"] for i in range(len(sets["train"]))])
    return {"train": train, "val": (torch.stack([v["A"] for v in val]), torch.stack([v["B"] for v in val])),
            "keys": keys[:count], "train_mean": train_B.mean(0, keepdim=True)}


def as_rgb(name: str, inputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    "The task's outputs (or targets) as photos, N x 3 x H x W in [-1, 1]: L*a*b* is put back together."
    return lab_batch_to_rgb(inputs, images) if TASK_RUNS[name][1] is None else images


def val_masks(keys: list[str], size: int) -> torch.Tensor:
    "Inpainting's hidden rectangles of the val files (N x H x W bool), drawn again from their names."
    return torch.stack([torch.from_numpy(rectangle_mask((size, size), key=key)) for key in keys])


def baselines(name: str, inputs: torch.Tensor, train_mean: torch.Tensor, keys: list[str]) -> dict:
    """The trivial answers the task's model must beat, as the network would output them (before as_rgb)."""
    n, size = len(inputs), inputs.shape[-1]
    if name == "colorize_lab":  # the input's lightness with no colour, and with the mean training colour
        mean_colour = train_mean.mean((2, 3), keepdim=True).expand(n, -1, size, size)
        return {"gray (a*b* = 0)": torch.zeros_like(mean_colour), "mean training colour": mean_colour}
    if name == "edges":
        return {"mean training photo": train_mean.expand(n, -1, -1, -1)}
    if name == "inpaint":  # the input as it is (gray rectangles), and the rectangles filled with the image's mean
        masks = val_masks(keys, size)[:, None]
        means = torch.stack([image[:, ~mask[0]].mean(1) for image, mask in zip(inputs, masks)])[:, :, None, None]
        return {"input (gray rectangles)": inputs, "rectangles filled with the image's mean":
                torch.where(masks, means.expand_as(inputs), inputs)}
    return {{"colorize_gray": "gray input", "stylize": "the photo itself", "superres": "bicubic (the input)"}[name]:
            inputs}


def score(name: str, inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
    "scores() of tools/reference_model.py on the images as photos, plus lesson 07's sharpness after 2x2 pooling."
    fake, real = as_rgb(name, inputs, outputs), as_rgb(name, inputs, targets)
    result = scores(fake, real)
    result["sharpness_pooled"] = detail_ratio(to_unit_range(fake), to_unit_range(real), pool=2).item()
    # JSON has no inf or NaN: a perfect copy's PSNR, or a ratio of photos without any 2-px energy, is null
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in result.items()}


def evaluate(name: str, G, task: dict) -> tuple[dict, torch.Tensor]:
    "({method: scores}, the model's outputs as photos) on the val split: the model, the baselines, for inpainting the model + paste_known."
    inputs, targets = task["val"]
    outputs = translate_batch(G, inputs, seed=0)
    methods = {"pix2pix (L1 + cGAN)": outputs, **baselines(name, inputs, task["train_mean"], task["keys"])}
    if name == "inpaint":
        methods["pix2pix + paste_known"] = paste_known(outputs, inputs, val_masks(task["keys"], inputs.shape[-1])[:, None])
    return {method: score(name, inputs, images, targets) for method, images in methods.items()}, as_rgb(name, inputs, outputs)


def write_results(name: str, config: dict, trained: dict, task: dict, out: Path) -> dict:
    "TASK/result.json and TASK/outputs.png (input | output | target of the SHOWN val photos, 128 px)."
    metrics, outputs = evaluate(name, trained["G"], task)
    inputs, targets = task["val"]
    shown = list(SHOWN)
    grid = image_grid(inputs[shown], outputs[shown], as_rgb(name, inputs[shown], targets[shown]))
    write_file(out / "outputs.png", png_bytes(Image.fromarray(grid.numpy())))
    result = {"task": name, "what": TASK_RUNS[name][0], "options": config, "steps": trained["steps"],
              "metrics": metrics, "pixel_scale": "[0, 1]", "val_photos": len(inputs), "shown_val_photos": shown,
              "curves": curves(trained["history"]), "train_seconds": round(trained["seconds"], 1),
              "command": f"python tools/tasks.py run --only {name}", "code_version": CODE_VERSION, "machine": machine()}
    write_file(out / "result.json", (json.dumps(result, indent=1, allow_nan=False) + "\n").encode())
    return result


def run_tasks(args) -> int:
    base = {**BASE, **json.loads(args.base)} if args.base else BASE
    facades = Path(args.dataroot) if args.dataroot else dataset_dir("facades")
    for name in args.only or TASK_RUNS:
        out = Path(args.results) / name
        if (out / "result.json").is_file():
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {TASK_RUNS[name][0]}", flush=True)
        config = {**base, **TASK_RUNS[name][2]}
        task = task_data(name, facades, Path(args.data), config["crop_size"], config.get("num_val"))
        trained = train_course_model(config, device="cpu", verbose=False, train_data=task["train"], val=task["val"])
        result = write_results(name, config, trained, task, out)
        line = ", ".join(f"{m} L1 {s['L1']:.4f}" for m, s in result["metrics"].items())
        print(f"  {trained['seconds']:.0f} s; {line}", flush=True)
        if args.commit:
            commit([out / "result.json", out / "outputs.png"], f"tasks: {name} ({TASK_RUNS[name][0]}), "
                   f"{trained['seconds']:.0f} s on {result['machine']['cores']} cores; {line}")
    return 0


def run_list(args) -> int:
    for name, (what, _, _) in TASK_RUNS.items():
        done = (Path(args.results) / name / "result.json").is_file()
        print(f"{'done' if done else '    '}  {name:<14} {what}")
    return 0


TABLE_HEADER = """# Lesson 09's tasks: one recipe against each task's trivial baseline

Written by `python tools/tasks.py table` from `TASK/result.json` (each holds the exact command, code version,
machine and wall time of its run); a test fails if this file falls behind them. Every task: lesson 06's course
model, 1,600 steps, float32, scored on the 100 validation photos (pixels on [0, 1]). *sharp*: lesson 07's
detail ratio after 2x2 pooling (1 = the photo's); *a\\*b\\* hist*: colour-histogram overlap with the photos.
Lesson 09 reads these results and says what they mean.

| task | method | L1 | PSNR | SSIM | sharp | a\\*b\\* hist | training |
|---|---|---|---|---|---|---|---|
"""


def results_table(results: dict) -> str:
    "The Markdown table of `results` ({name: result.json}), the model first, then its baselines."
    rows = []
    for name, result in results.items():
        machine = result["machine"]
        for method, s in result["metrics"].items():
            hist = s["color_histogram_intersection"]
            cells = [name, method.replace("*", "\\*"), f"{s['L1']:.4f}", f"{s['PSNR']:.2f}" if s["PSNR"] is not None else "inf",
                     f"{s['SSIM']:.3f}", f"{s['sharpness_pooled']:.2f}" if s["sharpness_pooled"] is not None else "n/a",
                     f"{(hist['a'] + hist['b']) / 2:.2f}"]
            trained = (f"{result['steps']} steps, {result['train_seconds']:.0f} s, {machine['cores']} cores "
                       f"{machine['isa']}, {result['code_version']['commit'][:7]}") if method.startswith("pix2pix (") else ""
            rows.append("| " + " | ".join(cells + [trained]) + " |")
    return TABLE_HEADER + "\n".join(rows) + "\n"


def load_results(folder: Path) -> dict:
    "Every finished task's result.json under `folder`, in TASK_RUNS order."
    return {name: json.loads((folder / name / "result.json").read_text()) for name in TASK_RUNS
            if (folder / name / "result.json").is_file()}


def run_table(args) -> int:
    results = load_results(Path(args.results))
    if not results:
        print(f"no results in {args.results}: run `python tools/tasks.py run` first", file=sys.stderr)
        return 1
    write_file(Path(args.results) / "README.md", results_table(results).encode())
    print(f"wrote {Path(args.results) / 'README.md'} ({len(results)} tasks)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and score every pending task")
    run.add_argument("--only", nargs="+", choices=list(TASK_RUNS), help="just these tasks")
    run.add_argument("--commit", action="store_true", help="git-commit each task's result files as it lands")
    run.add_argument("--base", help="JSON options over BASE (tests: a tiny network, a few steps)")
    run.add_argument("--dataroot", help="the facades folder (default: the course's)")
    run.add_argument("--data", default=str(DATA), help="where the A|B pairs are written (not committed)")
    run.add_argument("--results", default=str(RESULTS))
    run.set_defaults(func=run_tasks)
    listing = commands.add_parser("list", help="which tasks are done")
    listing.add_argument("--results", default=str(RESULTS))
    listing.set_defaults(func=run_list)
    table = commands.add_parser("table", help="write the results table (RESULTS/README.md)")
    table.add_argument("--results", default=str(RESULTS))
    table.set_defaults(func=run_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
