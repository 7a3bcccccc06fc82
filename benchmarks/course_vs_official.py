"""Five CPU minutes: the course model against the official settings, over several seeds (not part of the tests).

    .venv/bin/python benchmarks/course_vs_official.py              # seeds 0 and 1: four ~5-minute trainings
    .venv/bin/python benchmarks/course_vs_official.py --seeds 0 1 2

Trains (or loads from the course-model cache) lesson 06's COURSE_CONFIG and OFFICIAL_CPU_CONFIG (the
official unet_128 settings for the ~700 steps the official code takes in five minutes on a 2-core CPU)
with each seed, and scores both on the 100 facades validation pairs with lesson 07's measures: L1 and PSNR
(pixel metrics, which reward blur), SSIM, the detail ratio (1 = as much fine detail as the real photos) and
the paper's Lab colour histogram intersection. One seed is not enough to compare GANs on pixel metrics:
the spread between seeds of one recipe can exceed the gap between the recipes, so this prints every seed
and the mean. Seed 0 of each is the model the lessons use.
"""
from __future__ import annotations

import argparse

from p2p_lib import facades_dir
from p2p_lib.data import PairedImageDataset
from p2p_lib.inference import evaluate_generator
from p2p_lib.train import COURSE_CONFIG, OFFICIAL_CPU_CONFIG, course_model

KEYS = ("L1", "PSNR", "SSIM", "detail", "color_L", "color_a", "color_b")


def scores(config: dict, seed: int) -> dict:
    trained = course_model(config={**config, "seed": seed}, verbose=False)
    val = PairedImageDataset(facades_dir(), phase="val", direction=config["direction"], load_size=config["crop_size"],
                             crop_size=config["crop_size"], no_flip=True)
    result = evaluate_generator(trained["G"], val, eval_mode=False, seed=0)
    return {**{k: result[k] for k in KEYS[:4]}, **{f"color_{k}": v for k, v in result["color"].items()},
            "seconds": trained["seconds"], "steps": config["steps"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    recipes = {"official settings": OFFICIAL_CPU_CONFIG, "course model": COURSE_CONFIG}
    print("facades val, 100 images at 128 px, train mode (the paper's test time); L1 on [0, 1]")
    print(f"{'recipe':<18} {'seed':>4} {'steps':>5} {'train s':>7} " + " ".join(f"{k:>8}" for k in KEYS))
    means = {}
    for name, config in recipes.items():
        rows = []
        for seed in args.seeds:
            row = scores(config, seed)
            rows.append(row)
            print(f"{name:<18} {seed:>4} {row['steps']:>5} {row['seconds']:>7.0f} "
                  + " ".join(f"{row[k]:8.4f}" for k in KEYS), flush=True)
        means[name] = {k: sum(r[k] for r in rows) / len(rows) for k in KEYS}
    for name, mean in means.items():
        print(f"{name + ', mean':<37}" + " ".join(f"{mean[k]:8.4f}" for k in KEYS))
    course, official = means["course model"], means["official settings"]
    print("course / official: " + " ".join(f"{k} {course[k] / official[k]:.3f}x" for k in KEYS))


if __name__ == "__main__":
    main()
