"""Lesson 10's experiments, where pix2pix stops: the data it needs. One recipe (lesson 06's course model), the same
number of steps, on less, unjittered, wrongly paired or misaligned facades data.

    python tools/data_limits.py run [--only RUN ...] [--commit]
        trains every pending run, one at a time (about 5 minutes each on a 2-core CPU without bf16), and
        writes experiments/data_limits/RUN/ (result.json, outputs.png) as soon as it finishes; with --commit,
        commits those files at once. Run it again after an interruption: finished runs are skipped.
    python tools/data_limits.py list
        prints every run and whether it is done.
    python tools/data_limits.py table
        writes experiments/data_limits/README.md: per run, val and train scores and their gap, from the results.

Every run trains lesson 06's course model (COURSE_CONFIG: facades labels -> photo, BtoA, unet_128, ngf/ndf 32,
143 -> 128 px jitter, batch 1, L1 + cGAN with lambda 100), float32 pinned, for the same 1,600 steps, on:
  pairs_25, pairs_100, pairs_400  the first N training pairs in the order PairedImageDataset lists them (sorted by
                                  file name: 1, 10, 100, 101, ...), its own max_dataset_size option;
  pairs_25_no_jitter              those 25 pairs without the random crop and flip (load_size = crop_size = 128);
  shuffled_pairs                  all 400, file i's label map with file p[i]'s photo, p a fixed derangement
                                  (no file keeps its own photo) drawn by numpy's default_rng(0);
  shifted_8px                     all 400, the photo moved 8 px to the right of its label map at 128 px (16 px of
                                  the 256-px file, about 8.9 px in the 143 -> 128 training crops) by crop + pad:
                                  its 8 left columns repeat its left edge (np.roll would wrap the right edge round).
                                  The shift is made in the file, before the shared crop and flip: a flipped crop
                                  sees the photo 8 px to the left, so, as with real misalignment, its direction is
                                  not something the label map tells.
Each is scored in the paper's test mode (resize to 128, no crop, no flip, dropout on) on the 100 val pairs (the
true, aligned photos) and on the first (up to) 100 training pairs it trained on, as it trained on them (shuffled
or shifted photos included): val minus train L1 is the overfitting. L1_to_mean_photo: the val outputs' L1 to the
mean of the 400 aligned training photos (at test settings), the answer L1 alone teaches when the photo cannot be
told from the label map.

The schedule. With max_steps, train_course_model stops at step 1,600; the epochs set the official linear lr policy,
stepped once per epoch (p2p_lib.train.fit, lr_factor). Each run gets n_epochs = n_epochs_decay = 1600 / (2 x pairs)
(steps_per_epoch = pairs at batch 1): 400 pairs 2 + 2 epochs, 100 pairs 8 + 8, 25 pairs 32 + 32. So in every run
the rate is the full 2e-4 for steps 1-800 and the decay's last epoch ends exactly at step 1,600, and the mean rate
over steps 801-1600 is the same half of the full rate (the mean of k / (n + 1), k = 1..n). The stairs of the decay
differ, since the policy cannot step inside an epoch: with 400 pairs x2/3 then x1/3 (400 steps each), with 100
pairs x8/9 ... x1/9 (100 steps each), with 25 pairs x32/33 ... x1/33 (25 steps each). Where the steps are not a
whole number of epochs (tests' tiny runs), the epochs are rounded up and split full rate first: 1 epoch is 1 + 0.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python tools/data_limits.py` from a checkout
sys.path.insert(0, str(ROOT / "tools"))

from ablate import code_version, commit, curves  # noqa: E402
from p2p_lib.data import PairedImageDataset  # noqa: E402
from p2p_lib.metrics import detail_ratio, l1_distance, to_unit_range  # noqa: E402
from p2p_lib.paths import dataset_dir  # noqa: E402
from p2p_lib.train import (COURSE_CONFIG, image_grid, steps_per_epoch, train_course_model,  # noqa: E402
                           translate_batch, val_tensors)
from reference_model import machine, png_bytes, scores, write_file  # noqa: E402

RESULTS = ROOT / "experiments" / "data_limits"   # committed: small files per run
BASE = {**COURSE_CONFIG, "snapshots": 0, "snapshot_steps": []}
STEPS = 1600          # every run, whatever its data
TRAIN_SCORED = 100    # training pairs scored in test mode (the first ones)
SHUFFLE_SEED = 0      # numpy's default_rng seed of shuffled_pairs' derangement
SHOWN = (0, 1, 2, 3)  # the val photos whose outputs each run keeps (outputs.png)
DATA = {"pairs": 400, "jitter": True, "shuffled": False, "shift": 0}   # lesson 06's data
# name: (what changes, the data options that differ from DATA)
DATA_RUNS = {
    "pairs_25":           ("the first 25 training pairs", {"pairs": 25}),
    "pairs_100":          ("the first 100 training pairs", {"pairs": 100}),
    "pairs_400":          ("all 400 training pairs (lesson 06's data)", {}),
    "pairs_25_no_jitter": ("25 pairs, no random crop or flip", {"pairs": 25, "jitter": False}),
    "shuffled_pairs":     ("400 pairs, each label map with another file's photo", {"shuffled": True}),
    "shifted_8px":        ("400 pairs, the photo 8 px right of its label map", {"shift": 8}),
}
CODE_VERSION = code_version("tools/data_limits.py")  # read once, when the run starts


def derangement(n: int, seed: int = SHUFFLE_SEED) -> list[int]:
    "A permutation p of range(n) with p[i] != i for every i: the first one default_rng(seed) draws (uniform)."
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p.tolist()


class ShuffledPairs(PairedImageDataset):
    """PairedImageDataset whose pair i is file i's input (after `direction`) with file partner[i]'s target,
    partner = derangement(len, seed); the pair's crop and flip are shared by both sides as usual."""

    def __init__(self, root, phase="train", seed: int = SHUFFLE_SEED, **options):
        super().__init__(root, phase, **options)
        self.partner = derangement(len(self.pairs), seed)

    def load_sides(self, index):
        a_img, _, a_path, _ = super().load_sides(index)
        _, b_img, _, b_path = super().load_sides(self.partner[index])
        return a_img, b_img, a_path, b_path


def shift_right(img: Image.Image, px: int) -> Image.Image:
    "`img` moved px columns to the right by crop + pad: the first px columns repeat its left edge."
    if px <= 0:
        return img
    pixels = np.asarray(img)
    return Image.fromarray(np.concatenate([np.repeat(pixels[:, :1], px, axis=1), pixels[:, :-px]], axis=1))


class ShiftedPairs(PairedImageDataset):
    """PairedImageDataset whose target (after `direction`) is moved `shift` px to the right of its input at the
    crop_size scale: round(shift * width / crop_size) px of the file (shift_right), before the crop and flip."""

    def __init__(self, root, phase="train", shift: int = 8, **options):
        super().__init__(root, phase, **options)
        self.shift = shift

    def file_shift(self, width: int) -> int:
        return round(self.shift * width / self.crop_size)

    def load_sides(self, index):
        a_img, b_img, a_path, b_path = super().load_sides(index)
        return a_img, shift_right(b_img, self.file_shift(b_img.width)), a_path, b_path


def run_data(name: str) -> dict:
    return {**DATA, **DATA_RUNS[name][1]}


def train_set(name: str, root: Path, config: dict, test_mode: bool = False) -> PairedImageDataset:
    """Run `name`'s training pairs: with the config's jitter (143 -> 128 crop, flips) unless the run has none, or,
    with test_mode, at the test settings (resize to crop_size, no crop, no flip). At most DATA_RUNS' count of pairs."""
    data = run_data(name)
    jitter = data["jitter"] and not test_mode
    size = config["crop_size"]
    options = dict(direction=config["direction"], load_size=config["load_size"] if jitter else size, crop_size=size,
                   no_flip=not jitter, max_dataset_size=data["pairs"])
    if data["shuffled"]:
        return ShuffledPairs(root, "train", seed=SHUFFLE_SEED, **options)
    if data["shift"]:
        return ShiftedPairs(root, "train", shift=data["shift"], **options)
    return PairedImageDataset(root, "train", **options)


def first_items(dataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    "(A, B) of the dataset's first `count` items (all if fewer), stacked; the caller's RNG is left as it was."
    with torch.random.fork_rng(devices=[]):  # the dataset draws its (at test settings trivial) crop from torch's RNG
        items = [dataset[i] for i in range(min(count, len(dataset)))]
    return torch.stack([item["A"] for item in items]), torch.stack([item["B"] for item in items])


def schedule(pairs: int, steps: int = STEPS, batch_size: int = 1) -> dict:
    """n_epochs and n_epochs_decay for `steps` steps on `pairs` pairs: the epochs that hold the steps (rounded up),
    half at the full rate, half decaying (the odd one at the full rate). See the module's docstring."""
    epochs = max(1, math.ceil(steps / steps_per_epoch(range(pairs), batch_size)))
    return {"n_epochs": epochs - epochs // 2, "n_epochs_decay": epochs // 2}


def shared_data(root: Path, base: dict) -> dict:
    """What every run is scored with: "val" (A, B) of the val split at test settings, and "mean_photo" (1 x C x H x W),
    the mean of every aligned training target at test settings."""
    val = val_tensors(root, base["direction"], base["crop_size"], base["num_val"])
    train_B = val_tensors(root, base["direction"], base["crop_size"], phase="train")[1]
    return {"val": val, "mean_photo": train_B.double().mean(0, keepdim=True).float()}


def score(outputs: torch.Tensor, targets: torch.Tensor) -> dict:
    "scores() of tools/reference_model.py, plus lesson 07's sharpness after 2x2 pooling (as tools/tasks.py)."
    result = scores(outputs, targets)
    result["sharpness_pooled"] = detail_ratio(to_unit_range(outputs), to_unit_range(targets), pool=2).item()
    # JSON has no inf or NaN: a perfect copy's PSNR, or a ratio of photos without any 2-px energy, is null
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in result.items()}


def evaluate(G, shared: dict, train_scored: tuple) -> tuple[dict, torch.Tensor]:
    """({"val", "train": scores(), "val_minus_train_L1", "L1_to_mean_photo", "mean_photo_val_L1"}, the val outputs):
    the val split against its true photos, the scored training pairs against the photos the run trained on."""
    (val_A, val_B), (train_A, train_B) = shared["val"], train_scored
    outputs = translate_batch(G, val_A, seed=0)
    metrics = {"val": score(outputs, val_B), "train": score(translate_batch(G, train_A, seed=0), train_B)}
    mean = to_unit_range(shared["mean_photo"].expand_as(outputs))
    metrics["val_minus_train_L1"] = metrics["val"]["L1"] - metrics["train"]["L1"]
    metrics["L1_to_mean_photo"] = l1_distance(to_unit_range(outputs), mean).item()
    metrics["mean_photo_val_L1"] = l1_distance(mean, to_unit_range(val_B)).item()  # the mean photo as the answer
    return metrics, outputs


def pairs_used(name: str, train) -> dict:
    "The run's data options, the pairs actually used, their files' stems, and for shuffled_pairs whose photo each got."
    used = {**run_data(name), "pairs": len(train), "train_files": [Path(a).stem for a, _ in train.pairs]}
    if isinstance(train, ShuffledPairs):
        used["photo_of"] = [Path(train.pairs[j][0]).stem for j in train.partner]
    return used


def write_results(name: str, config: dict, trained: dict, shared: dict, train, train_scored, out: Path) -> dict:
    "RUN/result.json and RUN/outputs.png (input | output | target of the SHOWN val photos, 128 px)."
    metrics, outputs = evaluate(trained["G"], shared, train_scored)
    val_A, val_B = shared["val"]
    shown = list(SHOWN)
    grid = image_grid(val_A[shown], outputs[shown], val_B[shown])
    write_file(out / "outputs.png", png_bytes(Image.fromarray(grid.numpy())))
    per_epoch, epochs = steps_per_epoch(train, config["batch_size"]), (config["n_epochs"], config["n_epochs_decay"])
    plan = {"steps_per_epoch": per_epoch, "n_epochs": epochs[0], "n_epochs_decay": epochs[1],
            "decay_ends_at_step": per_epoch * sum(epochs)}
    result = {"run": name, "what": DATA_RUNS[name][0], "options": config, "data": pairs_used(name, train),
              "steps": trained["steps"], "schedule": plan, "metrics": metrics, "pixel_scale": "[0, 1]",
              "val_pairs": len(val_A), "train_pairs_scored": len(train_scored[0]), "shown_val_pairs": shown,
              "curves": curves(trained["history"]), "train_seconds": round(trained["seconds"], 1),
              "command": f"python tools/data_limits.py run --only {name}", "code_version": CODE_VERSION,
              "machine": machine()}
    write_file(out / "result.json", (json.dumps(result, indent=1, allow_nan=False) + "\n").encode())
    return result


def train_and_write(name: str, root: Path, base: dict, steps: int, shared: dict, out: Path) -> dict:
    "Train run `name` for `steps` steps on its data and write its results (write_results)."
    train = train_set(name, root, base)
    config = {**base, **schedule(len(train), steps, base["batch_size"])}
    train_scored = first_items(train_set(name, root, base, test_mode=True), TRAIN_SCORED)
    trained = train_course_model(config, device="cpu", verbose=False, max_steps=steps, train_data=train,
                                 val=shared["val"])
    return write_results(name, config, trained, shared, train, train_scored, out)


def run_all(args) -> int:
    base = {**BASE, **json.loads(args.base)} if args.base else BASE
    root = Path(args.dataroot) if args.dataroot else dataset_dir("facades")
    shared = None
    for name in args.only or DATA_RUNS:
        out = Path(args.results) / name
        if (out / "result.json").is_file():
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {DATA_RUNS[name][0]}", flush=True)
        shared = shared or shared_data(root, base)   # read once, and only when something is to train
        result = train_and_write(name, root, base, args.steps, shared, out)
        m = result["metrics"]
        line = (f"val L1 {m['val']['L1']:.4f}, train L1 {m['train']['L1']:.4f}, "
                f"L1 to mean photo {m['L1_to_mean_photo']:.4f}")
        print(f"  {result['train_seconds']:.0f} s; {line}", flush=True)
        if args.commit:
            commit([out / "result.json", out / "outputs.png"], f"data_limits: {name} ({DATA_RUNS[name][0]}), "
                   f"{result['train_seconds']:.0f} s on {result['machine']['cores']} cores; {line}")
    return 0


def run_list(args) -> int:
    for name, (what, _) in DATA_RUNS.items():
        done = (Path(args.results) / name / "result.json").is_file()
        print(f"{'done' if done else '    '}  {name:<20} {what}")
    return 0


TABLE_HEADER = """# Lesson 10's data limits: one recipe on less, unjittered, wrongly paired or misaligned data

Written by `python tools/data_limits.py table` from `RUN/result.json` (each holds the exact command, code version,
machine and wall time of its run, and the pairs it used). Every run: lesson 06's course model, the same number of
steps, float32, scored in the paper's test mode (pixels on [0, 1]) on the 100 validation photos (*val*) and on the
first (up to) 100 training pairs it trained on (*train*); *gap*: val L1 - train L1 (overfitting); *to mean photo*:
L1 of the val outputs to the mean training photo; *sharp*: lesson 07's val detail ratio after 2x2 pooling (1 = the
photos'). Lesson 10 reads these results and says what they mean.

| run | what | pairs | val L1 | val PSNR | train L1 | gap | to mean photo | sharp | training |
|---|---|---|---|---|---|---|---|---|---|
"""


def _number(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def results_table(results: dict) -> str:
    "The Markdown table of `results` ({name: result.json}), one row per run."
    rows = []
    for name, result in results.items():
        m, machine = result["metrics"], result["machine"]
        cells = [name, result["what"], str(result["data"]["pairs"]), f"{m['val']['L1']:.4f}",
                 _number(m["val"]["PSNR"], ".2f", "inf"), f"{m['train']['L1']:.4f}", f"{m['val_minus_train_L1']:+.4f}",
                 f"{m['L1_to_mean_photo']:.4f}", _number(m["val"]["sharpness_pooled"], ".2f"),
                 f"{result['steps']} steps, {result['train_seconds']:.0f} s, {machine['cores']} cores {machine['isa']}, "
                 f"{result['code_version']['commit'][:7]}"]
        rows.append("| " + " | ".join(cells) + " |")
    return TABLE_HEADER + "\n".join(rows) + "\n"


def load_results(folder: Path) -> dict:
    "Every finished run's result.json under `folder`, in DATA_RUNS order."
    return {name: json.loads((folder / name / "result.json").read_text()) for name in DATA_RUNS
            if (folder / name / "result.json").is_file()}


def run_table(args) -> int:
    results = load_results(Path(args.results))
    if not results:
        print(f"no results in {args.results}: run `python tools/data_limits.py run` first", file=sys.stderr)
        return 1
    write_file(Path(args.results) / "README.md", results_table(results).encode())
    print(f"wrote {Path(args.results) / 'README.md'} ({len(results)} runs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and score every pending run")
    run.add_argument("--only", nargs="+", choices=list(DATA_RUNS), help="just these runs")
    run.add_argument("--commit", action="store_true", help="git-commit each run's result files as it lands")
    run.add_argument("--base", help="JSON options over BASE (tests: a tiny network)")
    run.add_argument("--steps", type=int, default=STEPS, help="training steps of every run (default: %(default)s)")
    run.add_argument("--dataroot", help="the facades folder (default: the course's)")
    run.add_argument("--results", default=str(RESULTS))
    run.set_defaults(func=run_all)
    listing = commands.add_parser("list", help="which runs are done")
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
