"""Make the course's reference model (facades labels -> photo) and its model card.

    python tools/reference_model.py train [--checkpoints_dir checkpoints]
        runs `p2p train` with REFERENCE_OPTIONS below (about 75 minutes on an idle 2-core CPU); run it again
        after an interruption and it continues from CHECKPOINTS_DIR/facades_reference/latest_state.pt.

    python tools/reference_model.py export --run checkpoints/facades_reference [--out models/facades_label2photo]
                                           [--compare LABEL=CHECKPOINT ...] [--code-version SHA] [--dataroot DIR]
        reads the run's latest_state.pt and writes OUT/model.safetensors (G and D, half precision:
        p2p_lib.modelfile), OUT/card.json and OUT/README.md (the model card: command, code version,
        steps, wall time, machine, metrics on the whole val split, acceptance criteria) and
        OUT/samples.png (label | output | photo for a few val pairs).

Every number in the card is measured on the model file as shipped (read back from OUT/model.safetensors).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python tools/reference_model.py` from a checkout

from p2p_lib.checkpoint import (CheckpointError, build_generator, load_checkpoint, load_generator,  # noqa: E402
                                load_state_dict_strict, write_atomically)
from p2p_lib.data import PairedDataError, PairedImageDataset  # noqa: E402
from p2p_lib.device import cpu_capabilities, cpu_model  # noqa: E402
from p2p_lib.inference import size_multiple  # noqa: E402
from p2p_lib.metrics import color_histogram_intersection, l1_distance, psnr, ssim, to_unit_range  # noqa: E402
from p2p_lib.modelfile import load_model_file, save_model_file  # noqa: E402
from p2p_lib.networks import define_D  # noqa: E402
from p2p_lib.train import translate_batch  # noqa: E402

NAME = "facades_reference"
CHECKPOINTS_DIR = "{checkpoints_dir}"  # filled in with --checkpoints_dir
# `p2p train` + these: the reference model's recipe, one option per line.
REFERENCE_OPTIONS = [
    "--dataroot", "datasets/facades",      # p2p download facades: 400 train / 100 val pairs
    "--direction", "BtoA",                 # labels (right half) -> photo (left half): the paper's facades task
    "--name", NAME,
    "--checkpoints_dir", CHECKPOINTS_DIR,
    "--load_size", "143",                  # resize to 143, random 128 crop: the paper's 286 -> 256 jitter at half size
    "--crop_size", "128",                  # DEVIATION from the paper: 128 px, 4x fewer pixels (CPU time)
    "--netG", "unet_128",                  # the official 7-level U-Net for 128 px
    "--ngf", "32",                         # DEVIATION: half the official 64 generator filters
    "--ndf", "32",                         # DEVIATION: half the official 64 discriminator filters
    "--n_epochs", "30",                    # 30 epochs at lr 2e-4 ...
    "--n_epochs_decay", "30",              # ... then 30 with a linear decay to 0 (the paper: 100 + 100 at 256 px)
    "--num_val", "100",                    # val L1/PSNR on the whole val split after every epoch
    "--no_progress",                       # log lines, not a progress bar (the run goes to a log file)
    "--print_freq", "400",                 # one loss line per epoch (400 pairs, batch size 1)
    "--save_latest_freq", "1000",          # latest_state.pt every 2.5 epochs' worth of iterations ...
    "--save_epoch_freq", "10",             # ... and {10,20,...,60}_state.pt at those epochs' ends
    "--seed", "0",                         # init, data order, jitter and dropout: repeatable on a CPU
]
SAMPLE_COUNT = 6          # val pairs in samples.png
MEAN_PHOTO = "mean training photo"
REFERENCE = "reference"
LAST_WEIGHTS = "last weights, not averaged"
MAX_CHECKERBOARD_RATIO = 1.5


# ---------------------------------------------------------------- train

def reference_arguments(checkpoints_dir: str | os.PathLike) -> list[str]:
    "REFERENCE_OPTIONS with the checkpoints folder filled in: the `p2p train` arguments of a fresh run."
    return [str(checkpoints_dir) if a == CHECKPOINTS_DIR else a for a in REFERENCE_OPTIONS]


def train_arguments(checkpoints_dir: str | os.PathLike) -> list[str]:
    "The `p2p train` arguments; --continue_train when the run has a latest_state.pt to continue from."
    arguments = reference_arguments(checkpoints_dir)
    if (Path(checkpoints_dir) / NAME / "latest_state.pt").is_file():
        arguments.append("--continue_train")
    return arguments


def run_train(args) -> int:
    from p2p_lib.cli import main  # the same entry point as the `p2p` command
    arguments = train_arguments(args.checkpoints_dir)
    print("p2p train " + shlex.join(arguments), flush=True)
    return main(["train", *arguments])


# ---------------------------------------------------------------- measures

def nyquist_energy_fraction(images: torch.Tensor) -> torch.Tensor:
    """Per image of (N, C, H, W), H and W even: the share of its grey image's non-DC spectral power
    (|2-D DFT|², the mean over channels as grey) that lies at the 2-pixel period, the bins of row H/2
    or column W/2 of the DFT (each counted once). A stride-2 transposed convolution whose kernel
    overlaps unevenly (the U-Net's 4x4, stride 2) paints a pattern of period 2 in y, x or both: its
    energy lands exactly there. Brightness (DC) is excluded, so adding a constant changes nothing; a
    flat image has no non-DC power and counts 0."""
    grey = torch.as_tensor(images).double().mean(1)
    height, width = grey.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"the 2-pixel period has its own DFT bin only for even sizes, got {height}x{width}")
    power = torch.fft.fft2(grey).abs() ** 2
    at_period_2 = power[:, height // 2, :].sum(-1) + power[:, :, width // 2].sum(-1) - power[:, height // 2, width // 2]
    non_dc = power.flatten(1).sum(1) - power[:, 0, 0]
    return torch.where(non_dc > 0, at_period_2 / non_dc.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def checkerboard_ratio(outputs: torch.Tensor, photos: torch.Tensor) -> float:
    """The checkerboard energy ratio: the mean nyquist_energy_fraction of `outputs` over that of the real
    `photos`. 1: as much 2-pixel-period energy as real photos have; above 1: a checkerboard the photos
    do not have; below 1: smoother than the photos. Scale-free: [-1, 1] or [0, 1] images alike."""
    return (nyquist_energy_fraction(outputs).mean() / nyquist_energy_fraction(photos).mean()).item()


def mean_photo(photos: torch.Tensor) -> torch.Tensor:
    "The per-pixel mean of (N, C, H, W) photos: the one output that minimises the mean squared error to them."
    return photos.double().mean(0).to(photos.dtype)


def scores(outputs: torch.Tensor, photos: torch.Tensor) -> dict:
    "L1, PSNR (dB), SSIM and the colour histogram intersection with images on [0, 1]; the checkerboard ratio."
    fake, real = to_unit_range(outputs), to_unit_range(photos)
    return {"L1": l1_distance(fake, real).item(), "PSNR": psnr(fake, real).item(), "SSIM": ssim(fake, real).item(),
            "color_histogram_intersection": color_histogram_intersection(fake, real),
            "checkerboard_ratio": checkerboard_ratio(fake, real)}


# ---------------------------------------------------------------- data and models

def load_split(root, phase: str, direction: str, size: int, input_nc: int = 3, output_nc: int = 3):
    "(inputs, targets) of a whole split at the official test settings: resized to size, no crop, no flip."
    dataset = PairedImageDataset(root, phase, direction=direction, load_size=size, crop_size=size, no_flip=True,
                                 input_nc=input_nc, output_nc=output_nc)
    with torch.random.fork_rng(devices=[]):  # the dataset draws its (here trivial) crop from torch's RNG
        items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([item["A"] for item in items]), torch.stack([item["B"] for item in items])


def networks_from_state(state: dict, path: Path):
    "G and D of a training state, rebuilt from its options (CheckpointError if they do not fit)."
    G = build_generator(state["options"])
    load_state_dict_strict(G, state["G"], what=f"generator (G in {path.name})")
    D = define_D(state["options"], init=False)
    load_state_dict_strict(D, state["D"], what=f"discriminator (D in {path.name})")
    return G, D


def epoch_states(run: Path, last_step: int) -> list[tuple[str, dict]]:
    """(file name, training state) of the run's E_state.pt files (--save_epoch_freq) up to the latest state's
    step, by epoch: the checkpoints whose generators the shipped model averages (a file left by a later,
    abandoned run is not one of them)."""
    found = sorted((int(m[1]), path) for path in run.glob("*_state.pt")
                   if (m := re.fullmatch(r"(\d+)_state\.pt", path.name)))
    states = [(path.name, load_checkpoint(path, kind="train_state")) for _, path in found]
    return [(name, state) for name, state in states if int(state["step"]) <= last_step]


def average_weights(state_dicts: list[dict]) -> dict:
    """The uniform average of the floating-point tensors of several state dicts of one network (in float64,
    cast back), integer ones (BatchNorm's counters) from the last. Weight averaging along one run (Polyak
    averaging; SWA, Izmailov et al. 2018; for GANs Yazici et al. 2019) cancels the step-to-step jitter
    of adversarial training: the average is smoother than any one of the checkpoints."""
    if not state_dicts:
        raise CheckpointError("no checkpoints to average")
    last = state_dicts[-1]
    if any(sd.keys() != last.keys() or any(sd[k].shape != last[k].shape for k in last) for sd in state_dicts):
        raise CheckpointError("the checkpoints to average do not hold the same network")
    return {name: (torch.stack([sd[name].double() for sd in state_dicts]).mean(0).to(tensor.dtype)
                   if tensor.is_floating_point() else tensor) for name, tensor in last.items()}


def averaged_generator(state: dict, run: Path, average: bool):
    """(G, [(epoch file, step), ...]): the shipped generator. With `average`, the average of the generator
    weights of every epoch checkpoint of the run (and of the latest state if it is newer than all of them);
    else the latest state's own."""
    G, _ = networks_from_state(state, run / "latest_state.pt")
    if not average:
        return G, [("latest_state.pt", int(state["step"]))]
    sources = epoch_states(run, int(state["step"]))
    if not sources or int(sources[-1][1]["step"]) < int(state["step"]):
        sources.append(("latest_state.pt", state))
    load_state_dict_strict(G, average_weights([s["G"] for _, s in sources]), what="the averaged generator")
    return G, [(name, int(s["step"])) for name, s in sources]


def parse_compare(items: list[str]) -> dict[str, Path]:
    "LABEL=CHECKPOINT pairs (--compare) as {label: path}."
    compare = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--compare {item!r}: expected LABEL=CHECKPOINT, e.g. course=.cache/course_model/x.pt")
        if label in (REFERENCE, MEAN_PHOTO) or label in compare:
            raise SystemExit(f"--compare {item!r}: the label {label!r} is taken")
        compare[label] = Path(path)
    return compare


def load_compare(compare: dict[str, Path], size: int) -> dict[str, tuple]:
    "The --compare generators as {label: (G, path)}, each checked to take `size`-px inputs (before any long work)."
    models = {}
    for label, path in compare.items():
        G, _ = load_generator(path)
        if size % size_multiple(G):
            raise CheckpointError(f"--compare {label}: {path} needs inputs in multiples of {size_multiple(G)} px; "
                                  f"the val images are {size} px, the reference model's size")
        models[label] = (G, path)
    return models


def evaluate_all(G, others: dict[str, tuple], val_A, val_B, train_B) -> dict[str, dict]:
    """Scores on the val split of the reference G, the other (G, path) models and the mean training photo, each
    generator in the paper's test mode (train-mode BatchNorm, dropout on, seed 0, one image at a time)."""
    results = {REFERENCE: scores(translate_batch(G, val_A, seed=0), val_B)}
    for label, (other, path) in others.items():
        results[label] = {**scores(translate_batch(other, val_A, seed=0), val_B), "checkpoint": str(path)}
    baseline = mean_photo(train_B).expand_as(val_B)
    results[MEAN_PHOTO] = scores(baseline, val_B)
    return results


# ---------------------------------------------------------------- provenance

def training_seconds(run: Path, up_to_step: int) -> dict:
    """Training wall time: the sum of the "seconds" of the "epoch" records in RUN/loss_log.jsonl, up to
    the state's step (a log can run ahead of the last saved state). An epoch interrupted and resumed
    counts only from the resume: a lower bound then."""
    records, unreadable = [], 0
    log = run / "loss_log.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a running or killed training
            unreadable += 1
            continue
        if record.get("type") == "epoch" and record.get("step", 0) <= up_to_step:
            records.append(record)
    epochs = [r["epoch"] for r in records]
    return {"seconds": sum(float(r.get("seconds", 0)) for r in records), "epoch_records": len(records),
            "uncounted_steps": up_to_step - max((int(r.get("step", 0)) for r in records), default=0),
            "repeated_epochs": sorted({e for e in epochs if epochs.count(e) > 1}), "unreadable_lines": unreadable,
            "source": str(log) if log.is_file() else f"{log} (missing: wall time unknown)"}


def validation_curve(run: Path, up_to_step: int) -> list[dict]:
    """The val_L1 / val_PSNR that training logged at each epoch's end (loss_log.jsonl; pixels on [0, 1], the
    first --num_val val pairs, train mode, the run's seed): how the pixel metrics moved while it trained."""
    curve = []
    log = run / "loss_log.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "epoch" and "val_L1" in record and record.get("step", 0) <= up_to_step:
            curve.append({"epoch": record["epoch"], "step": record["step"], "val_L1": round(record["val_L1"], 4),
                          "val_PSNR": round(record["val_PSNR"], 2)})
    return curve


def option_differences(options: dict) -> list[str]:
    "Where the run's options differ from what REFERENCE_OPTIONS gives (--checkpoints_dir aside)."
    from p2p_lib.cli import build_parser
    expected = vars(build_parser().parse_args(["train", *reference_arguments("unused")]))
    given = [a[2:] for a in REFERENCE_OPTIONS if a.startswith("--") and a != "--checkpoints_dir"]
    return [f"{key}: run {options.get(key)!r}, REFERENCE_OPTIONS {expected[key]!r}"
            for key in given if options.get(key) != expected[key]]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(given: str | None) -> dict:
    "The commit the run was trained with: --code-version, else the current HEAD (the run folder does not record it)."
    if given:
        return {"commit": given, "source": "given with --code-version"}
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD") or "unknown",
            "source": "the current git HEAD at export time, as the run folder does not record the code it was "
                      "trained with; pass --code-version to state it",
            "uncommitted_changes_at_export": None if changes is None else bool(changes)}



def machine() -> dict:
    "The machine this export runs on (the run records none: the training machine if exported where it trained)."
    return {"cpu": cpu_model(), **cpu_capabilities(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "system": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ---------------------------------------------------------------- the card

def sample_grid(inputs: torch.Tensor, outputs: torch.Tensor, photos: torch.Tensor) -> Image.Image:
    "One row per example: input | output | photo, images in [-1, 1] -> one RGB picture."
    rows = [torch.cat(list(images), dim=2) for images in zip(inputs, outputs, photos)]
    pixels = (to_unit_range(torch.cat(rows, dim=1).expand(3, -1, -1)) * 255).round().byte()
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


def png_bytes(picture: Image.Image) -> bytes:
    """A 256-colour PNG, not dithered: about a third of the RGB PNG's size, and dithering would add the very
    high-frequency noise samples.png is there to show (or not)."""
    buffer = io.BytesIO()
    picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def acceptance(results: dict) -> list[dict]:
    "The two acceptance criteria as pass/fail lines, each failure said plainly."
    ours, baseline = results[REFERENCE], results[MEAN_PHOTO]
    l1_ok = ours["L1"] < baseline["L1"]
    ratio = ours["checkerboard_ratio"]
    checker_ok = ratio <= MAX_CHECKERBOARD_RATIO
    return [
        {"criterion": "(a) L1 of the reference model < L1 of the mean training photo", "passed": l1_ok,
         "detail": f"{ours['L1']:.4f} vs {baseline['L1']:.4f}" + ("" if l1_ok else
                   ": FAILS. Per pixel the model is no closer to the real photos than one average facade given "
                   "for every input; its outputs are not yet better than knowing nothing about the labels.")},
        {"criterion": f"(b) checkerboard energy ratio <= {MAX_CHECKERBOARD_RATIO}", "passed": checker_ok,
         "detail": f"{ratio:.3f}" + ("" if checker_ok else
                   f": FAILS. The outputs carry {ratio:.1f}x the real photos' share of energy at the 2-pixel "
                   "period: the transposed convolutions' checkerboard is still there (look at samples.png).")},
    ]


def epochs_completed(state: dict) -> int:
    """Epochs a training state has finished. Newer states (p2p_lib.train.fit) hold the epoch in progress,
    already the next one once an epoch ends; older ones the epoch of the last step and "epoch_complete"."""
    first = int(state["options"].get("epoch_count") or 1)
    if "epoch_complete" in state:
        return int(state["epoch"]) - first + (1 if state["epoch_complete"] else 0)
    return int(state["epoch"]) - first


def generator_source(averaged: list[tuple[str, int]]) -> str:
    "Where the shipped generator's weights come from, in words."
    if len(averaged) == 1:
        return f"the weights of {averaged[0][0]} (step {averaged[0][1]}), not averaged"
    return (f"the uniform average of the generator weights of {len(averaged)} checkpoints of the run: "
            + ", ".join(f"{name} (step {step})" for name, step in averaged)
            + "; D is the last state's. DEVIATION from the paper, which ships the last weights: one model's outputs "
              "jitter with the last few adversarial steps, the average of the run's checkpoints does not "
              f"(the row '{LAST_WEIGHTS}' shows the difference)")


def build_card(state: dict, run: Path, out: Path, args, results: dict, pairs: dict, samples: int,
               averaged: list[tuple[str, int]]) -> dict:
    "Everything the README says, as JSON (card.json); results and pairs by split ('val', and 'test' if there)."
    options = state["options"]
    model_file = out / "model.safetensors"
    planned = int(options.get("n_epochs", 0)) + int(options.get("n_epochs_decay", 0))
    done = epochs_completed(state)
    checkpoints_dir = options.get("checkpoints_dir") or str(run.parent)
    return {
        "name": out.name, "path": str(out), "task": "facades: label map -> photo (pix2pix, direction BtoA)",
        "files": {"model.safetensors": {"bytes": model_file.stat().st_size, "networks": ["G", "D"],
                                        "dtype": "float16 (BatchNorm counters int64)"},
                  "samples.png": f"{samples} val pairs: label | output | photo, {options['crop_size']} px"},
        "options": {k: options.get(k) for k in ("netG", "ngf", "netD", "n_layers_D", "ndf", "norm", "no_dropout",
                                                "input_nc", "output_nc", "direction", "load_size", "crop_size")},
        "training": {"command": "p2p train " + shlex.join(reference_arguments(checkpoints_dir)),
                     "run_differs_from_command": option_differences(options),
                     "code_version": code_version(args.code_version), "run": str(run),
                     "steps": state["step"], "generator": generator_source(averaged),
                     "averaged_checkpoints": [{"file": name, "step": step} for name, step in averaged],
                     "epochs_completed": done, "epochs_planned": planned,
                     "complete": done >= planned > 0, "wall_time": training_seconds(run, state["step"]),
                     "validation_curve": validation_curve(run, state["step"]),
                     "history": args.history or "",
                     "machine": machine()},
        "evaluation": {"split": f"{args.dataroot}/val", "pairs": pairs["val"],
                       "preprocess": f"resize to {options['crop_size']} px, no crop, no flip",
                       "mode": "the paper's test mode: train-mode BatchNorm (each image's own statistics), dropout "
                               "on, seeded (p2p_lib.train.translate_batch, seed 0), one image at a time",
                       "scale": "Images on [0, 1]: L1 (lower is better), PSNR in dB, SSIM, colour histogram "
                                "intersection (higher is better); checkerboard_ratio: 1 = as real photos",
                       "models": results["val"],
                       **({"test": {"split": f"{args.dataroot}/test", "pairs": pairs["test"], "models": results["test"],
                                    "why": "the val split was watched while training and while choosing to average; "
                                           "the test split was not: it checks that the choice holds on unseen pairs"}}
                          if "test" in results else {})},
        "acceptance": acceptance(results["val"]),
    }


def _metrics_table(models: dict) -> list[str]:
    lines = ["| model | L1 ↓ | PSNR (dB) ↑ | SSIM ↑ | colour hist. L / a / b ↑ | checkerboard ratio |",
             "|---|---|---|---|---|---|"]
    for label, m in models.items():
        colour = " / ".join(f"{m['color_histogram_intersection'][c]:.3f}" for c in "Lab")
        lines.append(f"| {label} | {m['L1']:.4f} | {m['PSNR']:.2f} | {m['SSIM']:.4f} | {colour} | "
                     f"{m['checkerboard_ratio']:.3f} |")
    return lines


def _training_lines(card: dict) -> list[str]:
    t, o = card["training"], card["options"]
    wall, m, code = t["wall_time"], t["machine"], t["code_version"]
    differs = "; ".join(t["run_differs_from_command"]) or "none"
    status = "complete" if t["complete"] else "**INCOMPLETE** (exported before the last epoch)"
    return [f"- Command: `{t['command']}`", f"- Run options that differ from that command: {differs}",
            f"- Code: `{code['commit']}` ({code['source']}"
            f"{'; the working tree had uncommitted changes' if code.get('uncommitted_changes_at_export') else ''})",
            f"- {t['steps']} iterations, {t['epochs_completed']} of {t['epochs_planned']} epochs: {status}",
            *([f"- Generator: {t['generator']}"] if t.get("generator") else []),
            *([f"- History: {t['history']}"] if t.get("history") else []),
            f"- Training wall time: {wall['seconds'] / 60:.1f} min (sum of {wall['epoch_records']} epoch records "
            f"in loss_log.jsonl" + (f"; the {wall['uncounted_steps']} iterations after the last one are not counted"
                                    if wall["uncounted_steps"] else "") + ")" if wall["epoch_records"] else f"- Training wall time: unknown ({wall['source']})",
            f"- Machine (where this export ran; the run records none): {m['cpu']}, {m['cores']} cores, ISA "
            f"{m['isa']} (AMX bf16: {m['amx_bf16']}, AVX-512-BF16: {m['avx512_bf16']}), torch {m['torch']}",
            f"- Networks: G {o['netG']} ngf {o['ngf']}, D {o['netD']} ndf {o['ndf']}, {o['norm']} norm, "
            f"{'no dropout' if o['no_dropout'] else 'dropout 0.5'}; trained at {o['load_size']} -> {o['crop_size']} px",
            *_curve_lines(t.get("validation_curve") or [])]


def _curve_lines(curve: list[dict]) -> list[str]:
    "Every tenth epoch's logged val_L1 (and the best), as one line."
    if not curve:
        return []
    shown = [c for c in curve if c["epoch"] % 10 == 0 or c is curve[-1]]
    best = min(curve, key=lambda c: c["val_L1"])
    return [f"- Validation while training (loss_log.jsonl: val_L1 on [0, 1], epoch: value): "
            + ", ".join(f"{c['epoch']}: {c['val_L1']:.4f}" for c in shown)
            + f"; lowest {best['val_L1']:.4f} at epoch {best['epoch']}"]


def model_card_markdown(card: dict) -> str:
    "README.md: what the model is, how to use it, how it was made, how well it does, where it falls short."
    e, files = card["evaluation"], card["files"]
    size_mb = files["model.safetensors"]["bytes"] / 1e6
    lines = [f"# {card['name']}: pix2pix, facades labels → photo", "",
             "The course's reference model: a pix2pix generator (and its discriminator) trained on the 400 facades "
             "training pairs to turn a colour label map into a photo. Made by `tools/reference_model.py`.", "",
             "```bash", f"p2p translate labels.png --output photo.png --checkpoint {card['path']}/model.safetensors",
             f"p2p test --dataroot datasets/facades --phase val --num_test 100 --checkpoint {card['path']}/model.safetensors",
             "```",
             "", "## Files", "",
             f"- `model.safetensors` ({size_mb:.1f} MB): G under `G.`, D under `D.`, float16; the options and "
             "a provenance card in its metadata (`p2p_lib.modelfile.load_model_file`).",
             f"- `samples.png`: {files['samples.png']} (a 256-colour PNG, to keep it small; the metrics use the "
             "full-precision outputs).", "- `card.json`: everything on this page, as JSON.", "",
             "## Training", "", *_training_lines(card), "",
             "## Evaluation", "",
             f"The whole {e['split']} split ({e['pairs']} pairs), {e['preprocess']}; {e['mode']}. "
             f"{e['scale']}.", "",
             *_metrics_table(e["models"]), "",
             *([f"The whole {e['test']['split']} split ({e['test']['pairs']} pairs), the same way: {e['test']['why']}.",
                "", *_metrics_table(e["test"]["models"]), ""] if "test" in e else []),
             f"`{MEAN_PHOTO}`: the per-pixel mean of the training photos, the same output for every input — the "
             "L1 a model must beat to have learnt anything from the labels. The checkerboard ratio is the share "
             "of non-DC spectral energy at the 2-pixel period, outputs over real photos (1: as real photos).", "",
             "## Acceptance", ""]
    lines += [f"- {'PASS' if a['passed'] else 'FAIL'}: {a['criterion']}: {a['detail']}" for a in card["acceptance"]]
    o, planned = card["options"], card["training"]["epochs_planned"]
    lines += ["", "## Limits", "",
              f"- Trained at {o['crop_size']} px with ngf {o['ngf']} / ndf {o['ndf']} for {planned} epochs (the paper: "
              "256 px, 64 / 64, 200 epochs): a course model for CPUs; expect blurrier outputs than the paper's.",
              "- Facades only: label maps in the CMP Facade Database's 12-colour scheme, rectified frontal facades.",
              "- Outputs are samples (dropout on at test time, as in the paper): another seed gives another photo.",
              "", "## Data", "",
              "CMP Facade Database (R. Tyleček and R. Šára, GCPR 2013), as distributed with pix2pix: no explicit "
              "licence; cite the paper (see datasets/README.md).", "", "![samples](samples.png)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- export

def write_file(path: Path, data: bytes) -> None:
    "Write `data` to `path` atomically (a killed run leaves the old file or none), making its folder first."
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda fh: fh.write(data))


def provenance(state: dict, run: Path, args, averaged: list[tuple[str, int]]) -> dict:
    "The card kept inside model.safetensors: where the weights come from (the metrics are in card.json)."
    return {"name": Path(args.out).name, "run": str(run), "step": state["step"], "epoch": state["epoch"],
            "generator": generator_source(averaged),
            "command": "p2p train " + shlex.join(reference_arguments(state["options"].get("checkpoints_dir") or
                                                                      run.parent)),
            "code_version": code_version(args.code_version), "card": "card.json and README.md beside this file"}


def run_export(args) -> int:
    run, out = Path(args.run), Path(args.out)
    state_file = run / "latest_state.pt"
    state = load_checkpoint(state_file, kind="train_state")
    options = state["options"]
    args.dataroot = args.dataroot or options.get("dataroot") or "datasets/facades"
    size, direction = int(options["crop_size"]), options["direction"]
    # Everything that can fail on bad input comes before anything is written.
    others = load_compare(parse_compare(args.compare), size)
    last_G, D = networks_from_state(state, state_file)
    G, averaged = averaged_generator(state, run, average=args.average == "epochs")
    if len(averaged) > 1:  # what the averaging changed, measured beside it
        others = {LAST_WEIGHTS: (last_G, state_file), **others}
    splits = {phase: load_split(args.dataroot, phase, direction, size)
              for phase in ("val", "test") if phase == "val" or (Path(args.dataroot) / phase).is_dir()}
    _, train_B = load_split(args.dataroot, "train", direction, size)
    save_model_file(out / "model.safetensors", G, options, D=D, metadata=provenance(state, run, args, averaged))
    shipped = load_model_file(out / "model.safetensors")["G"]  # measure what is shipped: the float16 weights
    results = {}
    for phase, (A, B) in splits.items():
        print(f"evaluating on {len(A)} {phase} pairs (mean photo of {len(train_B)} training photos) ...", flush=True)
        results[phase] = evaluate_all(shipped, others, A, B, train_B)
    val_A, val_B = splits["val"]
    outputs = translate_batch(shipped, val_A[:SAMPLE_COUNT], seed=0)
    write_file(out / "samples.png", png_bytes(sample_grid(val_A[:SAMPLE_COUNT], outputs, val_B[:SAMPLE_COUNT])))
    pairs = {phase: len(A) for phase, (A, _) in splits.items()}
    card = build_card(state, run, out, args, results, pairs, len(outputs), averaged)
    write_file(out / "card.json", (json.dumps(card, indent=1, allow_nan=False) + "\n").encode())
    write_file(out / "README.md", model_card_markdown(card).encode())
    for line in _metrics_table(results["val"]) + [f"{'PASS' if a['passed'] else 'FAIL'}: {a['criterion']}: "
                                                  f"{a['detail']}" for a in card["acceptance"]]:
        print(line)
    print(f"wrote {out}/model.safetensors, card.json, README.md, samples.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the reference model (resumes when interrupted)")
    train.add_argument("--checkpoints_dir", default="checkpoints", help="where the run goes (default: %(default)s)")
    train.set_defaults(func=run_train)
    export = commands.add_parser("export", help="write model.safetensors, the model card and samples")
    export.add_argument("--run", required=True, help="the run folder: CHECKPOINTS_DIR/facades_reference")
    export.add_argument("--out", default="models/facades_label2photo", help="output folder (default: %(default)s)")
    export.add_argument("--compare", action="extend", nargs="+", default=[], metavar="LABEL=CHECKPOINT",
                        help="other generators to score alongside (any file p2p translate reads)")
    export.add_argument("--code-version", dest="code_version", default=None,
                        help="the commit the run was trained with (default: the current HEAD, said so in the card)")
    export.add_argument("--dataroot", default=None, help="the facades folder (default: the run's --dataroot)")
    export.add_argument("--average", choices=["epochs", "none"], default="epochs",
                        help="epochs: ship the average of the generator weights of every epoch checkpoint of the run "
                             "(E_state.pt); none: the latest state's own weights (default: %(default)s)")
    export.add_argument("--history", default=None, help="how the run was actually made, if not in one go (free text)")
    export.set_defaults(func=run_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, PairedDataError) as err:  # bad input: say what, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
