"""The course model against the official settings, over seeds; writes the committed result that lessons 06
and 07 read (benchmarks/results/course_vs_official.json and .png). Not part of the tests.

    .venv/bin/python benchmarks/course_vs_official.py              # seed 0 (what the lessons show)
    .venv/bin/python benchmarks/course_vs_official.py --seeds 0 1  # the seed spread (twice as long)

Trains (or loads from the course-model cache) lesson 06's COURSE_CONFIG (unet_128 at half width, 2 epochs)
and OFFICIAL_CPU_CONFIG (the official full width for 1 epoch: 400 steps of 4 times the arithmetic, about
1.5 times the course model's time on a 2-core CPU)
with each seed, with lesson 06's own loop, float32 pinned, and scores both on the 100 facades validation
pairs with lesson 07's measures (all pixel metrics on [0, 1]): L1 and PSNR (which reward blur), SSIM, the
detail ratio (1 = as much fine detail as the real photos) and the paper's Lab colour histogram intersection.
One seed is not enough to compare GANs on pixel metrics: the spread between seeds of one recipe can exceed
the gap between the recipes, so this prints every seed and the mean.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from p2p_lib import facades_dir
from p2p_lib.data import PairedImageDataset
from p2p_lib.device import cpu_capabilities, cpu_model
from p2p_lib.inference import evaluate_generator
from p2p_lib.train import (COURSE_CONFIG, OFFICIAL_CPU_CONFIG, RESULTS_DIR, course_model, image_grid, translate_batch,
                           val_tensors)

KEYS = ("L1", "PSNR", "SSIM", "detail", "color_L", "color_a", "color_b")
RECIPES = {"official settings": OFFICIAL_CPU_CONFIG, "course model": COURSE_CONFIG}


def scores(trained: dict) -> dict:
    config = trained["config"]
    val = PairedImageDataset(facades_dir(), phase="val", direction=config["direction"], load_size=config["crop_size"],
                             crop_size=config["crop_size"], no_flip=True)
    result = evaluate_generator(trained["G"], val, eval_mode=False, seed=0)
    return {**{k: result[k] for k in KEYS[:4]}, **{f"color_{k}": v for k, v in result["color"].items()}}


def machine() -> dict:
    return {"cpu": cpu_model(), **cpu_capabilities(), "torch": torch.__version__, "python": platform.python_version()}


def code_version() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_grid(models: dict, path: Path, count: int = 4) -> list[str]:
    "input | official | course | target for the first `count` val facades, as a PNG; returns the column names."
    A, B = val_tensors(facades_dir(), COURSE_CONFIG["direction"], COURSE_CONFIG["crop_size"], count)
    columns = [A] + [translate_batch(model["G"], A) for model in models.values()] + [B]
    grid = Image.fromarray(image_grid(*columns).numpy())  # 256 colours: a third of the bytes, no visible change
    grid.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    return ["input"] + [f"{name}, {model['steps']} steps" for name, model in models.items()] + ["target"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    started, runs, seed0 = time.perf_counter(), [], {}
    print("facades val, 100 images at 128 px, train mode (the paper's test time); pixel metrics on [0, 1]")
    print(f"{'recipe':<18} {'seed':>4} {'steps':>5} {'train s':>7} " + " ".join(f"{k:>8}" for k in KEYS))
    for name, config in RECIPES.items():
        for seed in args.seeds:
            trained = course_model(config={**config, "seed": seed}, verbose=False)
            row = {"recipe": name, "seed": seed, "steps": trained["steps"], "seconds": trained["seconds"],
                   "val": trained["val"], "metrics": scores(trained)}
            runs.append(row)
            seed0.update({name: trained} if seed == args.seeds[0] else {})
            print(f"{name:<18} {seed:>4} {row['steps']:>5} {row['seconds']:>7.0f} "
                  + " ".join(f"{row['metrics'][k]:8.4f}" for k in KEYS), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    columns = save_grid(seed0, args.out / "course_vs_official.png")
    result = {"command": "python benchmarks/course_vs_official.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
              "code_version": code_version(), "date": datetime.date.today().isoformat(), "machine": machine(),
              "wall_seconds": round(time.perf_counter() - started), "pixel_scale": "[0, 1]",
              "configs": {name: config for name, config in RECIPES.items()}, "runs": runs,
              "grid": "course_vs_official.png", "grid_columns": columns}
    (args.out / "course_vs_official.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / 'course_vs_official.json'} and course_vs_official.png")


if __name__ == "__main__":
    main()
