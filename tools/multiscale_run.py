"""Lesson 11's comparison: pix2pix with one PatchGAN against pix2pix with pix2pixHD's three-scale discriminator, at
the same budget, at 256 and at 512 px on facades; then each 256-px model run fully convolutionally on 512-px inputs.

    python tools/multiscale_run.py run [--only RUN ...] [--commit]
        trains every pending run, one at a time, and writes experiments/multiscale/RUN/ (result.json, outputs.png and,
        for the 256-px runs, outputs_at_512.png) as soon as it finishes; with --commit, commits them at once. Run it
        again after an interruption: finished runs are skipped.
    python tools/multiscale_run.py list
        prints every run and whether it is done.
    python tools/multiscale_run.py table
        writes experiments/multiscale/README.md from the results.

Every run is lesson 06's loop (p2p_lib.train.train_course_model: build_training + fit) with lesson 11's step
(p2p_lib.multiscale.multiscale_step): facades labels -> photo (BtoA), the official unet_256 with ngf 32, a
MultiscaleDiscriminator of 70x70 PatchGANs with ndf 32 (--netD multiscale), batch norm, dropout, the paper's
cross-entropy GAN loss, lambda_L1 100 and pix2pixHD's feature matching, lambda_FM 10, Adam 2e-4 / 0.5, batch 1,
seed 0, float32. The runs differ in the number of scales only (num_D 1 = one PatchGAN, with feature matching
over its layers; num_D 3 = pix2pixHD's) and in the size:
  single_256, multi_256  286 -> 256 px random crops and flips (the paper's jitter), 2,000 steps (5 epochs)
  single_512, multi_512  572 -> 512 px, the same jitter at twice the size, 1,200 steps (3 epochs). The facades
                         files are 256 px per half: at 512 px every image is upsampled (bicubic), so a 512-px run
                         can show what the discriminator does for global structure, not for real fine texture.
The official linear lr policy, stepped per epoch: 256 px 3 + 2 epochs, 512 px 2 + 1 (data_limits.schedule).
Scoring: the 100 facades val pairs in the paper's test mode (resize to the run's size, no crop, no flip, dropout
on), ten images at a time (chunked_score): tools/reference_model.py's scores (L1, PSNR, SSIM on [0, 1], colour histogram intersection, checkerboard
ratio), lesson 07's sharpness after 2x2 pooling, and coarse_L1: the L1 after average pooling both images to 8 x 8
(the layout: where the walls, windows and sky are, not their texture). The 256-px runs are also scored on the
val pairs resized to 512 px: the same network, run fully convolutionally on inputs twice the size it trained on.

How long, measured on a 2-core AMD EPYC (Zen 4) in float32: about 0.22 s (1 scale) and 0.27 s (3 scales) per
step at 256 px, about 1.0 s per step at 512 px with 3 scales: about 45 minutes for the four runs.
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
sys.path.insert(0, str(ROOT))  # run as `python tools/multiscale_run.py` from a checkout
sys.path.insert(0, str(ROOT / "tools"))

from ablate import code_version, commit, curves  # noqa: E402
from data_limits import schedule  # noqa: E402
from p2p_lib.data import PairedImageDataset  # noqa: E402
from p2p_lib.metrics import (color_histogram_intersection, detail_ratio, l1_distance, lab_histograms, psnr,  # noqa: E402
                             ssim, to_unit_range)
from reference_model import nyquist_energy_fraction  # noqa: E402
from p2p_lib.multiscale import coarse_l1, multiscale_step  # noqa: E402
from p2p_lib.paths import dataset_dir  # noqa: E402
from p2p_lib.train import COURSE_CONFIG, image_grid, train_course_model, translate_batch, val_tensors  # noqa: E402
from reference_model import machine, png_bytes, write_file  # noqa: E402

BASE = {**COURSE_CONFIG,
        "netG": "unet_256",     # the official 8-level U-Net (1 x 1 at the bottleneck at 256 px, 2 x 2 at 512)
        "ngf": 32,              # DEVIATION: 32 generator filters instead of 64 (CPU-sized)
        "netD": "multiscale",   # lesson 11's MultiscaleDiscriminator of lesson 03's PatchGANs
        "n_layers_D": 3,        # each scale a 70 x 70 PatchGAN
        "ndf": 32,              # DEVIATION: 32 discriminator filters instead of 64
        "lambda_FM": 10.0,      # pix2pixHD's feature-matching weight, in both set-ups
        "snapshots": 0, "snapshot_steps": []}
RUNS = {  # name: (what, num_D, size, steps)
    "single_256": ("one 70x70 PatchGAN, 256 px", 1, 256, 2000),
    "multi_256": ("three scales (pix2pixHD), 256 px", 3, 256, 2000),
    "single_512": ("one 70x70 PatchGAN, 512 px (upsampled facades)", 1, 512, 1200),
    "multi_512": ("three scales (pix2pixHD), 512 px (upsampled facades)", 3, 512, 1200),
}
LARGER = 512          # the size of the fully convolutional test of the 256-px runs
COARSE = 8            # coarse_L1: both images average-pooled to COARSE x COARSE
SHOWN = (0, 1)        # the val pairs each run's outputs.png shows (the first only at 512 px: a smaller file)
RESULTS = ROOT / "experiments" / "multiscale"
CODE_VERSION = code_version("tools/multiscale_run.py")  # read once, when the run starts


def run_config(name: str, base: dict = BASE, steps: int | None = None) -> dict:
    "Run `name`'s options: the base with its num_D, size (load_size 286/256 of it) and schedule."
    _, num_D, size, default_steps = RUNS[name]
    steps = steps or default_steps
    pairs = len(PairedImageDataset(dataset_dir(base["dataset"]), "train", direction=base["direction"]))
    return {**base, "num_D": num_D, "crop_size": size, "load_size": round(size * 286 / 256), "steps": steps,
            **schedule(pairs, steps, base["batch_size"])}


def chunked_score(outputs: torch.Tensor, targets: torch.Tensor, chunk: int = 10) -> dict:
    """data_limits.score() of the whole set (the same keys and values, to rounding), `chunk` images at a time: its
    float64 colour and SSIM arithmetic on 100 images of 512 px at once would need many GB. Every measure is a mean
    over images, but the colour histograms (counts, summed) and the checkerboard ratio (a ratio of two means)."""
    per_image = {name: [] for name in ("L1", "PSNR", "SSIM", "sharpness_pooled", "nyquist_fake", "nyquist_real")}
    histograms = {"fake": None, "real": None}
    for start in range(0, len(outputs), chunk):
        fake, real = to_unit_range(outputs[start:start + chunk]), to_unit_range(targets[start:start + chunk])
        for name, values in (("L1", l1_distance(fake, real, reduction="none")), ("PSNR", psnr(fake, real, reduction="none")),
                             ("SSIM", ssim(fake, real, reduction="none")),
                             ("sharpness_pooled", detail_ratio(fake, real, reduction="none", pool=2)),
                             ("nyquist_fake", nyquist_energy_fraction(fake)), ("nyquist_real", nyquist_energy_fraction(real))):
            per_image[name].append(values.double())
        for side, images in (("fake", fake), ("real", real)):
            counts = lab_histograms(images)
            histograms[side] = counts if histograms[side] is None else {k: histograms[side][k] + counts[k] for k in counts}
    mean = {name: torch.cat(values).mean().item() for name, values in per_image.items()}
    result = {"L1": mean["L1"], "PSNR": mean["PSNR"], "SSIM": mean["SSIM"],
              "color_histogram_intersection": color_histogram_intersection(histograms["fake"], histograms["real"]),
              "checkerboard_ratio": mean["nyquist_fake"] / mean["nyquist_real"], "sharpness_pooled": mean["sharpness_pooled"]}
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in result.items()}


def evaluate(G, val: tuple) -> tuple[dict, torch.Tensor]:
    "(chunked_score() + coarse_L1 of G's outputs on val in test mode, the outputs)."
    val_A, val_B = val
    outputs = translate_batch(G, val_A, seed=0)
    return {**chunked_score(outputs, val_B), "coarse_L1": coarse_l1(outputs, val_B, COARSE)}, outputs


def grid_png(val: tuple, outputs: torch.Tensor) -> bytes:
    "input | output | target of the SHOWN val pairs (the first only at 512 px), at the run's size, 256-colour PNG."
    val_A, val_B = val
    shown = list(SHOWN) if val_A.shape[-1] < LARGER else list(SHOWN[:1])
    return png_bytes(Image.fromarray(image_grid(val_A[shown], outputs[shown], val_B[shown]).numpy()))


def train_and_write(name: str, root: Path, base: dict, steps: int | None, out: Path) -> dict:
    "Train run `name`, score it (and a 256-px run at LARGER px too), write RUN/result.json and its pictures."
    config = run_config(name, base, steps)
    val = val_tensors(root, config["direction"], config["crop_size"], config["num_val"])
    trained = train_course_model(config, device="cpu", verbose=False, max_steps=config["steps"], val=val,
                                 step=multiscale_step(config["lambda_FM"]))
    metrics, outputs = evaluate(trained["G"], val)
    write_file(out / "outputs.png", grid_png(val, outputs))
    result = {"run": name, "what": RUNS[name][0], "options": config, "steps": trained["steps"],
              "metrics": metrics, "pixel_scale": "[0, 1]", "val_pairs": len(val[0]), "shown_val_pairs": list(SHOWN),
              "D_parameters": sum(p.numel() for p in trained["D"].parameters()),
              "curves": curves(trained["history"]), "train_seconds": round(trained["seconds"], 1),
              "seconds_per_step": round(trained["seconds"] / max(trained["steps"], 1), 3),
              "command": f"python tools/multiscale_run.py run --only {name}", "code_version": CODE_VERSION,
              "machine": machine()}
    if config["crop_size"] < LARGER:
        larger = val_tensors(root, config["direction"], LARGER, config["num_val"])
        result["metrics_at_512"], outputs_larger = evaluate(trained["G"], larger)
        write_file(out / "outputs_at_512.png", grid_png(larger, outputs_larger))
    write_file(out / "result.json", (json.dumps(result, indent=1, allow_nan=False) + "\n").encode())
    return result


def summary(result: dict) -> str:
    m = result["metrics"]
    return (f"val L1 {m['L1']:.4f}, coarse L1 {m['coarse_L1']:.4f}, SSIM {m['SSIM']:.3f}, "
            f"sharpness {m['sharpness_pooled']:.2f}, {result['seconds_per_step']:.2f} s/step")


def run_all(args) -> int:
    base = {**BASE, **json.loads(args.base)} if args.base else BASE
    root = Path(args.dataroot) if args.dataroot else dataset_dir("facades")
    for name in args.only or RUNS:
        out = Path(args.results) / name
        if (out / "result.json").is_file():
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {RUNS[name][0]}", flush=True)
        result = train_and_write(name, root, base, args.steps, out)
        print(f"  {result['train_seconds']:.0f} s; {summary(result)}", flush=True)
        if args.commit:
            files = [out / f for f in ("result.json", "outputs.png", "outputs_at_512.png") if (out / f).is_file()]
            commit(files, f"multiscale: {name} ({RUNS[name][0]}), {result['train_seconds']:.0f} s on "
                          f"{result['machine']['cores']} cores; {summary(result)}")
    return 0


def run_list(args) -> int:
    for name, (what, *_) in RUNS.items():
        done = (Path(args.results) / name / "result.json").is_file()
        print(f"{'done' if done else '    '}  {name:<12} {what}")
    return 0


TABLE_HEADER = """# Lesson 11's comparison: one PatchGAN against three scales, at the same budget

Made by `python tools/multiscale_run.py run`, then `python tools/multiscale_run.py table` (this file). Scores on
the 100 facades val pairs in test mode, pixels on [0, 1]; coarse L1: after pooling to 8 x 8 (the layout).
"At 512 px": a 256-px run's network applied to the val pairs resized to 512 px (fully convolutional). s/step: the
wall time per training step as each run measured it, on a machine that may have been running other work then.

| run | what | steps | s/step | L1 | coarse L1 | SSIM | PSNR | sharpness | at 512 px: L1 | coarse L1 | sharpness |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def results_table(results: dict) -> str:
    "The README table of the results ({name: result}), one row per run in RUNS order."
    rows = []
    for name in RUNS:
        if name not in results:
            continue
        r, m = results[name], results[name]["metrics"]
        big = r.get("metrics_at_512")
        larger = (f"{big['L1']:.4f} | {big['coarse_L1']:.4f} | {big['sharpness_pooled']:.2f}" if big else "| |")
        rows.append(f"| {name} | {r['what']} | {r['steps']} | {r['seconds_per_step']:.2f} | {m['L1']:.4f} | "
                    f"{m['coarse_L1']:.4f} | {m['SSIM']:.3f} | {m['PSNR']:.2f} | {m['sharpness_pooled']:.2f} | {larger} |")
    return TABLE_HEADER + "\n".join(rows) + "\n"


def load_results(folder: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(folder).glob("*/result.json"))}


def run_table(args) -> int:
    results = load_results(Path(args.results))
    if not results:
        print(f"no results in {args.results}: run `python tools/multiscale_run.py run` first", file=sys.stderr)
        return 1
    path = Path(args.results) / "README.md"
    path.write_text(results_table(results), encoding="utf-8")
    print(f"wrote {path} ({len(results)} runs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/multiscale_run.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and score the pending runs")
    run.add_argument("--only", nargs="+", choices=list(RUNS), help="these runs only")
    run.add_argument("--steps", type=int, help="steps per run instead of each run's own (tests)")
    run.add_argument("--base", help="JSON of options to change in the base config (tests)")
    run.add_argument("--dataroot", help="the facades folder (default: datasets/facades)")
    run.add_argument("--commit", action="store_true", help="git-commit each run's files when it finishes")
    run.set_defaults(func=run_all)
    for name, func in (("list", run_list), ("table", run_table)):
        commands.add_parser(name).set_defaults(func=func)
    for sub in commands.choices.values():
        sub.add_argument("--results", default=str(RESULTS), help="results folder (default: experiments/multiscale)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
