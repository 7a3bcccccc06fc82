"""Lesson 10's CycleGAN, the meaningful run: facades label maps <-> photos learnt from two unpaired sets, trained
from a script in resumable slices and scored on the val split.

    python tools/cyclegan_run.py run [--steps N] [--minutes M] [--commit]
        writes the unpaired set once into .cache/cyclegan/facades_unpaired/ (not committed), then trains from
        .cache/cyclegan/state.pt if it is there (else from scratch) until step N (default: all of CONFIG["steps"])
        or for M wall minutes, whichever comes first, saving the state every --save_every steps and when it stops.
        Run it again to go on: a resumed run ends with the very weights of an uninterrupted one (tested). Once
        every step is done it writes experiments/cyclegan/ (result.json, outputs.png); with --commit, commits them.
    python tools/cyclegan_run.py status
        prints the steps done out of the total, and whether the result exists.

What is trained: lesson 10's CycleGAN (p2p_lib.cyclegan: two ResNet generators with 6 residual blocks, ngf 32; two
unconditional 70x70 PatchGANs with instance norm, ndf 32; LSGAN, cycle lambda 10 both ways, identity 0.5; 50-image
pools; Adam 2e-4, beta1 0.5; batch 1; seed 0), float32, at 128 px (143 -> 128 random crops and flips) for 4,000
steps = 20 epochs of the 200 label maps (the official facades run: 200 epochs of 400 images at 256 px, 80,000
steps). Domain A: the label maps (right halves) of the first 200 facades training files sorted by number; domain B:
the photos (left halves) of the other 200: no label map has its photo in the set. The learning rate is the official
linear policy, stepped once per STEP (a LambdaLR over p2p_lib.train.lr_factor): the full rate for the first 2,000
steps, then falling linearly to 1/2,001 of it at the last step. Each epoch visits the label maps in an order drawn
by a torch.Generator seeded with the seed; each label map's photo partner, crops and flips come from torch's global
RNG (seeded; its state is in the checkpoint).

How long, measured with OMP_NUM_THREADS=2 and nothing else running: 0.83 s/step on a 2-core AMD EPYC (Zen 4;
2,762 steps), 1.2 s/step on a 2-core Intel Xeon (40 steps, start-up included): 55 to 80 minutes for the 4,000
steps, plus a minute of scoring. The state lives in .cache/, which a fresh checkout lacks: start the run early in a
session and let it finish there (an earlier 12,000-step setting, about 3 to 4 hours, could not). The slices still
help when a run must stop: `--minutes M`, then run it again. state.pt is about 70 MB (4 networks, 2 Adams, 2 pools of 50 images).

Scoring, once every step is done: the first 100 facades val files (the whole split) at 128 px in test mode (resize,
no crop, no flip): G_A(label map) against the real photo (tools/reference_model.py's scores), the cycle
reconstruction L1 of the label maps (G_B(G_A(x)) vs x) and of the photos (G_A(G_B(y)) vs y), G_B(photo)'s L1 to the
label map, the mean training photo (of domain B) as a trivial answer, and, for comparison, the course's paired
pix2pix reference model (models/facades_label2photo, committed: it is loaded, not trained) on the same files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python tools/cyclegan_run.py` from a checkout
sys.path.insert(0, str(ROOT / "tools"))

from ablate import code_version, commit, curves  # noqa: E402
from p2p_lib.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from p2p_lib.cyclegan import CycleGAN, UnpairedImageDataset, build_cyclegan, cyclegan_step  # noqa: E402
from p2p_lib.errors import CheckpointError  # noqa: E402
from p2p_lib.imagefiles import PairedDataError, list_images, open_image  # noqa: E402
from p2p_lib.losses import GANLoss  # noqa: E402
from p2p_lib.metrics import l1_distance, to_unit_range  # noqa: E402
from p2p_lib.paths import DatasetNotFoundError, dataset_dir  # noqa: E402
from p2p_lib.tasks import photo_half  # noqa: E402
from p2p_lib.train import (REFERENCE_MODEL, image_grid, lr_factor, reference_model,  # noqa: E402
                           translate_batch, val_tensors)
from reference_model import machine, png_bytes, scores, write_file  # noqa: E402

CONFIG = {
    "unpaired_files": 200,   # trainA: the label maps of training files 1-200 (by number); trainB: the photos of 201-400
    "load_size": 143,        # resize to 143 px, then a random 128 crop: the official 286 -> 256 jitter at half size
    "crop_size": 128,        # DEVIATION: 128 px instead of 256 (and the test-mode size of the scoring)
    "ngf": 32,               # DEVIATION: generator width 32 instead of 64
    "ndf": 32,               # DEVIATION: discriminator width 32 instead of 64
    "n_blocks": 6,           # residual blocks: the official resnet_6blocks, its advice for 128 px (9 at 256)
    "norm": "instance",      # instance norm in all four networks, as official
    "gan_mode": "lsgan",     # least-squares GAN loss, as official
    "lambda_A": 10.0,        # cycle weight A -> B -> A (label maps)
    "lambda_B": 10.0,        # cycle weight B -> A -> B (photos)
    "lambda_identity": 0.5,  # identity loss, as a share of lambda
    "pool_size": 50,         # the history of fakes each D trains on
    "lr": 2e-4,              # Adam's rate, both optimizers
    "beta1": 0.5,            # Adam's beta1 (beta2 0.999)
    "batch_size": 1,         # the official CycleGAN batch (the only one this script trains)
    "steps": 4000,           # DEVIATION: 20 epochs of 200 label maps instead of 200 epochs of 400 (80,000 steps)
    "lr_policy": "linear",   # official: full rate for steps - steps // 2 steps, then linear decay; stepped per step
    "seed": 0,               # init, pools, data order, partners, crops and flips: the run repeats on one machine
    "num_val": 100,          # val files scored (the whole facades val split)
}
WORK = ROOT / ".cache" / "cyclegan"                # not committed: the unpaired set and the training state
RESULTS = ROOT / "experiments" / "cyclegan"        # committed: result.json and outputs.png
SHOWN = (0, 1, 2, 3)   # the val files whose translations outputs.png shows
LOSS_NAMES = ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B")
COMMAND = "python tools/cyclegan_run.py run"
CODE_VERSION = code_version("tools/cyclegan_run.py")  # read once, when the run starts


class RunError(Exception):
    "A run that cannot go on as asked (a changed config, an unusable dataset): said plainly, no traceback."


# ---------------------------------------------------------------- data

def numbered_files(facades: Path, count: int) -> list[Path]:
    "The first 2 * count images of facades/train, sorted by their integer stems (1, 2, ..., not 1, 10, 100)."
    images, problems, _ = list_images(facades / "train")
    if problems:
        raise problems[0]
    unnumbered = [p.name for p in images if not p.stem.isdigit()]
    if unnumbered:
        raise RunError(f"{facades / 'train'}: the split needs files named by number; not {unnumbered[:3]}")
    if len(images) < 2 * count:
        raise RunError(f"{facades / 'train'} has {len(images)} files; the split needs 2 x {count}")
    return sorted(images, key=lambda p: int(p.stem))[:2 * count]


def write_unpaired(facades: Path, root: Path, count: int) -> Path:
    """root/trainA: the label maps (right halves) of the first `count` numbered training files, root/trainB: the
    photos (left halves) of the next `count`, as PNG. Written once, into a temporary folder renamed at the end."""
    if all(len(list((root / f"train{side}").glob("*.png"))) == count for side in "AB"):
        return root
    files = numbered_files(facades, count)
    temporary = root.with_name(root.name + ".partial")
    shutil.rmtree(temporary, ignore_errors=True)
    for side, chosen, half in (("A", files[:count], "right"), ("B", files[count:], "left")):
        (temporary / f"train{side}").mkdir(parents=True)
        for path in chosen:
            photo_half(open_image(path), half).save(temporary / f"train{side}" / f"{path.stem}.png")
    shutil.rmtree(root, ignore_errors=True)
    temporary.rename(root)
    return root


def stem_ranges(paths: list) -> str:
    "The integer stems of `paths` as ranges, e.g. '1-200' or '1-3, 7'."
    stems, ranges = sorted(int(Path(p).stem) for p in paths), []
    for stem in stems:
        if ranges and stem == ranges[-1][1] + 1:
            ranges[-1][1] = stem
        else:
            ranges.append([stem, stem])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges)


# ---------------------------------------------------------------- the run and its state

class Run:
    """Everything a training slice changes, and so everything the state file keeps: the config, the CycleGAN, the
    [G's, D's] LambdaLR schedulers (stepped once per step), the generator of each epoch's order of the A images
    and this epoch's order, the step, the loss history, the training wall time summed over slices, the slices.
    (A plain class: a dataclass needs its module in sys.modules, which a test's spec_from_file_location skips.)"""

    def __init__(self, config: dict, model: CycleGAN, schedulers: list, order_rng: torch.Generator):
        self.config, self.model, self.schedulers, self.order_rng = config, model, schedulers, order_rng
        self.order: torch.Tensor | None = None   # this epoch's order: a permutation of the dataset's indices
        self.step, self.seconds, self.slices = 0, 0.0, []
        self.history = {name: [] for name in LOSS_NAMES}


def step_schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The official linear policy with steps for epochs: lr_factor(k, steps - steps // 2, steps // 2) during step k
    (from 1): the full rate, then linear decay to 1 / (steps // 2 + 1) at the last step. Step it after every step."""
    constant, decay = steps - steps // 2, steps // 2
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: lr_factor(1 + done, constant, decay, "linear"))


def new_run(config: dict) -> Run:
    "A fresh run: the networks as build_cyclegan initialises them, torch's global RNG and the order RNG seeded."
    if config["batch_size"] != 1 or config["lr_policy"] != "linear":
        raise RunError("this script trains batch_size 1 with the linear lr_policy only")
    model = build_cyclegan(ngf=config["ngf"], ndf=config["ndf"], n_blocks=config["n_blocks"], norm=config["norm"],
                           lr=config["lr"], beta1=config["beta1"], pool_size=config["pool_size"], seed=config["seed"])
    torch.manual_seed(config["seed"])  # the data's RNG: B partners, crops, flips
    schedulers = [step_schedule(model.opt_G, config["steps"]), step_schedule(model.opt_D, config["steps"])]
    return Run(config, model, schedulers, torch.Generator().manual_seed(config["seed"]))


NETWORKS = ("G_A", "G_B", "D_A", "D_B")


def run_state(run: Run) -> dict:
    "The run as a weights-only checkpoint: tensors, numbers, strings, lists, tuples and dicts only."
    m = run.model
    return {"kind": "cyclegan_run", "version": 1, "config": run.config, "step": run.step,
            **{name: getattr(m, name).state_dict() for name in NETWORKS},
            "opt_G": m.opt_G.state_dict(), "opt_D": m.opt_D.state_dict(),
            "sched_G": run.schedulers[0].state_dict(), "sched_D": run.schedulers[1].state_dict(),
            "pool_fake_A": m.pool_fake_A.state_dict(), "pool_fake_B": m.pool_fake_B.state_dict(),
            "torch_rng": torch.get_rng_state(), "order_rng": run.order_rng.get_state(), "order": run.order,
            "history": run.history, "seconds": run.seconds, "slices": run.slices}


def config_differences(saved: dict, config: dict) -> list[str]:
    return [f"{key}: saved {saved.get(key)!r}, now {config.get(key)!r}"
            for key in sorted(set(saved) | set(config)) if saved.get(key) != config.get(key)]


def load_run(path: Path, config: dict) -> Run:
    "The run saved at `path`, which must have been started with `config` (RunError naming what differs)."
    saved = load_checkpoint(path)  # weights only: loading runs no code
    if saved.get("kind") != "cyclegan_run":
        raise CheckpointError(f"{path} is not a cyclegan_run state")
    differences = config_differences(saved["config"], config)
    if differences:
        raise RunError(f"{path} was trained with another config ({'; '.join(differences)}): rerun with that config "
                       f"(--base), or delete the state (or pass another --work) to start again")
    run = new_run(config)
    m = run.model
    for name in NETWORKS:
        getattr(m, name).load_state_dict(saved[name])
    m.opt_G.load_state_dict(saved["opt_G"]), m.opt_D.load_state_dict(saved["opt_D"])
    run.schedulers[0].load_state_dict(saved["sched_G"]), run.schedulers[1].load_state_dict(saved["sched_D"])
    m.pool_fake_A.load_state_dict(saved["pool_fake_A"]), m.pool_fake_B.load_state_dict(saved["pool_fake_B"])
    torch.set_rng_state(saved["torch_rng"])
    run.order_rng.set_state(saved["order_rng"])
    run.order, run.step, run.history = saved["order"], saved["step"], saved["history"]
    run.seconds, run.slices = saved["seconds"], saved["slices"]
    return run


def train_slice(run: Run, data: UnpairedImageDataset, stop: int, deadline: float, save_every: int, path: Path) -> None:
    """Steps until step `stop`, or until time.monotonic() passes `deadline` (checked after each step); the state
    is saved every `save_every` steps and when the slice ends."""
    c, n, gan_loss = run.config, len(data), GANLoss(run.config["gan_mode"])
    start, seconds_before = time.monotonic(), run.seconds
    run.slices.append({"from_step": run.step, "to_step": run.step, "seconds": 0.0, "commit": CODE_VERSION["commit"],
                       "cpu": machine()["cpu"], "cores": os.cpu_count()})
    while run.step < stop:
        if run.step % n == 0:  # a new epoch: a new order of the A images
            run.order = torch.randperm(n, generator=run.order_rng)
        item = data[int(run.order[run.step % n])]  # "A", "B": 3 x crop x crop each
        losses = cyclegan_step(run.model, item["A"][None], item["B"][None], gan_loss,  # (1, 3, crop, crop) in
                               c["lambda_A"], c["lambda_B"], c["lambda_identity"])
        for scheduler in run.schedulers:
            scheduler.step()
        run.step += 1
        for name, value in losses.items():
            run.history[name].append(value.item())
        if not all(math.isfinite(run.history[name][-1]) for name in losses):
            raise RunError(f"a loss became NaN or infinite at step {run.step}; the last good state is in {path}")
        run.seconds = seconds_before + time.monotonic() - start
        run.slices[-1].update(to_step=run.step, seconds=round(time.monotonic() - start, 1))
        ending = run.step >= stop or time.monotonic() > deadline
        if run.step % save_every == 0 or ending:
            save_checkpoint(path, run_state(run))
        if ending:
            return


# ---------------------------------------------------------------- scoring

def finite(result: dict) -> dict:
    "JSON has no inf or NaN: a perfect copy's PSNR becomes null."
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in result.items()}


def mean_photo(root: Path, size: int) -> torch.Tensor:
    "The mean of domain B's photos at test settings (resize to size, no crop, no flip): 1 x 3 x size x size."
    test_mode = UnpairedImageDataset(root, "train", load_size=size, crop_size=size, no_flip=True)
    with torch.random.fork_rng(devices=[]):  # load() draws a (here trivial) crop from torch's RNG
        photos = torch.stack([test_mode.load("B", path) for path in test_mode.files["B"]])  # (|B|, 3, S, S)
    return photos.double().mean(0, keepdim=True).float()


def pix2pix_scores(labels: torch.Tensor, photos: torch.Tensor) -> dict:
    "The committed pix2pix reference model (loaded, not trained) on the same files, or why it is skipped."
    if not REFERENCE_MODEL.is_file():
        return {"skipped": f"{REFERENCE_MODEL.relative_to(ROOT)} is not there"}
    reference = reference_model()
    size = reference["options"]["crop_size"]
    if size != labels.shape[-1]:
        return {"skipped": f"the reference model is {size} px; this run is scored at {labels.shape[-1]} px"}
    training = reference["card"]["training"]
    return {"model": str(REFERENCE_MODEL.parent.relative_to(ROOT)), "command": training["command"],
            "steps": training["steps"], "trained_on": "the 400 aligned facades training pairs",
            "scores": finite(scores(translate_batch(reference["G"], labels, seed=0), photos))}


def evaluate(model: CycleGAN, labels: torch.Tensor, photos: torch.Tensor, mean: torch.Tensor) -> tuple[dict, dict]:
    "(metrics, translations) of the val label maps and photos (N x 3 x S x S each, [-1, 1]); pixels scored on [0, 1]."
    fake_photos = translate_batch(model.G_A, labels, seed=0)        # G_A: label map -> photo
    cycled_labels = translate_batch(model.G_B, fake_photos, seed=0)  # G_B(G_A(x))
    fake_labels = translate_batch(model.G_B, photos, seed=0)        # G_B: photo -> label map
    cycled_photos = translate_batch(model.G_A, fake_labels, seed=0)  # G_A(G_B(y))
    l1 = lambda a, b: l1_distance(to_unit_range(a), to_unit_range(b)).item()
    metrics = {"G_A(labels) vs photos": finite(scores(fake_photos, photos)),
               "mean training photo vs photos": finite(scores(mean.expand_as(photos), photos)),
               "pix2pix reference model": pix2pix_scores(labels, photos),
               "cycle_L1_labels": l1(cycled_labels, labels), "cycle_L1_photos": l1(cycled_photos, photos),
               "G_B(photos) vs labels L1": l1(fake_labels, labels)}
    return metrics, {"fake_photos": fake_photos, "cycled_labels": cycled_labels}


def write_results(run: Run, facades: Path, unpaired: Path, out: Path) -> dict:
    "out/result.json and out/outputs.png (label map | G_A | G_B(G_A) | photo of the SHOWN val files)."
    c = run.config
    labels, photos = val_tensors(facades, "BtoA", c["crop_size"], c["num_val"])  # (N, 3, S, S): labels, photos
    metrics, made = evaluate(run.model, labels, photos, mean_photo(unpaired, c["crop_size"]))
    shown = [i for i in SHOWN if i < len(labels)]
    grid = image_grid(labels[shown], made["fake_photos"][shown], made["cycled_labels"][shown], photos[shown])
    write_file(out / "outputs.png", png_bytes(Image.fromarray(grid.numpy())))  # (4 S, 4 S, 3)
    files = {side: list_images(unpaired / f"train{side}")[0] for side in "AB"}
    result = {"what": "CycleGAN, facades label maps (A) <-> photos (B), unpaired", "config": c, "steps": run.step,
              "data": {"trainA": f"label maps (right halves) of training files {stem_ranges(files['A'])}",
                       "trainB": f"photos (left halves) of training files {stem_ranges(files['B'])}",
                       "shared_files": len({p.stem for p in files["A"]} & {p.stem for p in files["B"]})},
              "metrics": metrics, "pixel_scale": "[0, 1]", "val_files": len(labels), "shown_val_files": shown,
              "outputs_png": "label map | G_A(label map) | G_B(G_A(label map)) | real photo",
              "curves": curves(run.history), "train_seconds": round(run.seconds, 1), "slices": run.slices,
              "command": COMMAND, "code_version": CODE_VERSION, "machine": machine()}
    write_file(out / "result.json", (json.dumps(result, indent=1, allow_nan=False) + "\n").encode())
    return result


# ---------------------------------------------------------------- commands

def start_or_resume(path: Path, config: dict) -> Run:
    if path.is_file():
        run = load_run(path, config)
        print(f"resuming {path} at step {run.step} of {config['steps']}", flush=True)
        return run
    print(f"starting a new run ({config['steps']} steps); its state goes to {path}", flush=True)
    return new_run(config)


def run_training(args) -> int:
    config = {**CONFIG, **json.loads(args.base)} if args.base else dict(CONFIG)
    facades = Path(args.dataroot) if args.dataroot else dataset_dir("facades")
    work, out = Path(args.work), Path(args.results)
    unpaired = write_unpaired(facades, work / "facades_unpaired", config["unpaired_files"])
    run = start_or_resume(work / "state.pt", config)
    stop = min(config["steps"], args.steps if args.steps is not None else config["steps"])
    if run.step < stop:
        data = UnpairedImageDataset(unpaired, "train", load_size=config["load_size"], crop_size=config["crop_size"])
        deadline = time.monotonic() + (args.minutes * 60 if args.minutes is not None else math.inf)
        train_slice(run, data, stop, deadline, args.save_every, work / "state.pt")
        print(f"[{time.strftime('%H:%M:%S')}] step {run.step} of {config['steps']}, {run.seconds / 60:.1f} min of "
              f"training so far", flush=True)
    if run.step < config["steps"] or (out / "result.json").is_file():
        return 0
    result = write_results(run, facades, unpaired, out)
    m = result["metrics"]
    line = (f"G_A L1 {m['G_A(labels) vs photos']['L1']:.4f}, cycle L1 labels {m['cycle_L1_labels']:.4f}, "
            f"photos {m['cycle_L1_photos']:.4f}")
    print(f"wrote {out}/result.json and outputs.png: {line}", flush=True)
    if args.commit:
        commit([out / "result.json", out / "outputs.png"], f"cyclegan: {run.step} steps, "
               f"{run.seconds / 3600:.1f} h in {len(run.slices)} slices on {os.cpu_count()} cores; {line}")
    return 0


def run_status(args) -> int:
    path, out = Path(args.work) / "state.pt", Path(args.results) / "result.json"
    if path.is_file():
        saved = load_checkpoint(path)
        print(f"{saved['step']} / {saved['config']['steps']} steps, {saved['seconds'] / 60:.1f} min of training "
              f"in {len(saved['slices'])} slices ({path})")
    else:
        print(f"0 / {CONFIG['steps']} steps (no state at {path})")
    print(f"result: {'written' if out.is_file() else 'not yet'} ({out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train (resuming) for a slice; score once every step is done")
    run.add_argument("--steps", type=int, help="stop at this step (default: all of the config's steps)")
    run.add_argument("--minutes", type=float, help="stop after this many wall minutes (checked after each step)")
    run.add_argument("--save_every", type=int, default=200, help="save the state every N steps (default: %(default)s)")
    run.add_argument("--commit", action="store_true", help="git-commit result.json and outputs.png when written")
    run.add_argument("--base", help="JSON options over CONFIG (tests: tiny networks, a few steps)")
    run.add_argument("--dataroot", help="the facades folder (default: the course's)")
    run.add_argument("--work", default=str(WORK), help="the unpaired set and state.pt (default: %(default)s)")
    run.add_argument("--results", default=str(RESULTS))
    run.set_defaults(func=run_training)
    status = commands.add_parser("status", help="steps done and whether the result exists")
    status.add_argument("--work", default=str(WORK))
    status.add_argument("--results", default=str(RESULTS))
    status.set_defaults(func=run_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RunError, CheckpointError, PairedDataError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
