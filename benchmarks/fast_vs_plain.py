"""Does the fast default keep quality? The course model's recipe trained with the plain step and with the
default fast step of this machine, two seeds each, scored on the whole facades val split (not part of the
tests; about 4 x 4 minutes on a 2-core CPU without bf16).

    .venv/bin/python benchmarks/fast_vs_plain.py                 # seeds 0 1
    .venv/bin/python benchmarks/fast_vs_plain.py --seeds 0 1 2

plain = p2p_lib.device.pick_speed(device, plain=True): float32, NCHW, plain Adam (the official arithmetic);
fast = pick_speed(device): what `p2p train` uses here (bf16 autocast + channels_last + fused Adam on CPUs with
AMX/AVX-512-BF16, float32 + fused Adam on other CPUs). The training is lesson 06's own: build_training + fit on
SeededPairs, the COURSE_CONFIG settings. Pixel metrics on [0, 1]. The question is whether the gap between the
variants is within the spread between seeds of one variant; it writes benchmarks/results/fast_vs_plain_ISA.json,
one file per CPU class (avx2, avx-512-bf16, amx, ...), since the answer depends on what the fast default is there.
"""
from __future__ import annotations

import argparse
import json
import time

from course_vs_official import code_version, machine  # same folder: python benchmarks/fast_vs_plain.py
from p2p_lib import facades_dir
from p2p_lib.data import PairedImageDataset
from p2p_lib.device import pick_device, pick_speed
from p2p_lib.train import (COURSE_CONFIG, RESULTS_DIR, SeededPairs, build_training, fit, l1_and_psnr,
                           translate_batch, val_tensors)


def train_and_score(speed, seed: int) -> dict:
    config = {**COURSE_CONFIG, "seed": seed}
    train = PairedImageDataset(facades_dir(), "train", direction=config["direction"], load_size=config["load_size"],
                               crop_size=config["crop_size"])
    run = build_training(config, speed.device, speed)
    start = time.perf_counter()
    fit(run, SeededPairs(train, seed), config["n_epochs"], config["n_epochs_decay"], config["batch_size"])
    seconds = time.perf_counter() - start
    val_A, val_B = val_tensors(facades_dir(), config["direction"], config["crop_size"], config["num_val"])
    return {"seed": seed, "steps": run.step, "seconds": round(seconds, 1),
            "val": l1_and_psnr(translate_batch(run.G, val_A), val_B)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    variants = {"plain": pick_speed(device, plain=True), "fast": pick_speed(device)}
    rows = []
    for name, speed in variants.items():
        print(f"{name}: {speed.describe()}", flush=True)
    for seed in args.seeds:
        for name, speed in variants.items():  # interleaved: a busy moment hits both variants of a seed
            row = {"variant": name, **train_and_score(speed, seed)}
            rows.append(row)
            print(f"{name:<6} seed {seed}: L1 {row['val']['L1']:.4f}  PSNR {row['val']['PSNR']:.2f} dB  "
                  f"({row['steps']} steps, {row['seconds']:.0f} s)", flush=True)
    result = {"command": "python benchmarks/fast_vs_plain.py" + "".join(f" {a}" for a in (argv or [])),
              "code_version": code_version(), "machine": machine(), "pixel_scale": "[0, 1]",
              "variants": {name: speed.describe() for name, speed in variants.items()}, "runs": rows}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    isa = result["machine"].get("isa", device.type) if device.type == "cpu" else device.type
    (RESULTS_DIR / f"fast_vs_plain_{isa.lower()}.json").write_text(json.dumps(result, indent=1) + "\n")
    for name in variants:
        l1 = [r["val"]["L1"] for r in rows if r["variant"] == name]
        print(f"{name:<6} L1 over seeds: {', '.join(f'{v:.4f}' for v in l1)} (spread {max(l1) - min(l1):.4f})")


if __name__ == "__main__":
    main()
