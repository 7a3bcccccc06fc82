"""Lesson 08's ablations: the paper's Tables 1-3 (and our lambda sweep), reproduced small on facades.

    python tools/ablate.py run [--only NAME ...] [--seeds 0 1 2] [--commit]
        trains every pending run, one at a time (about 5 minutes each on a 2-core CPU), and writes its
        results to experiments/ablations/RUN/ (result.json, outputs.png) as soon as it finishes; with
        --commit, commits those files at once. Run it again after an interruption: finished runs are
        skipped, an interrupted one starts again. The trained networks stay in .cache/ablations/ (not
        committed), so `evaluate` can score them again without training.
    python tools/ablate.py evaluate [--only NAME ...]
        re-scores the runs whose networks are in .cache/ablations/ (after a change to the measures).
    python tools/ablate.py list
        prints every run of the sweep and whether it is done.

Every run is lesson 06's course model (unet_128, ngf/ndf 32, 143 -> 128 px, batch 1) trained with lesson
06's `train_course_model` (the loop `p2p train` runs) for 2 + 2 epochs (1,600 steps), float32 pinned, with
one setting changed. Scores on the whole val split in the paper's test mode (p2p_lib.train.translate_batch).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python tools/ablate.py` from a checkout
sys.path.insert(0, str(ROOT / "tools"))

from p2p_lib.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint  # noqa: E402
from p2p_lib.ablation import gradient_shares  # noqa: E402  (lesson 08 teaches the measurement)
from p2p_lib.metrics import detail_ratio, to_unit_range  # noqa: E402
from p2p_lib.networks import define_D, define_G  # noqa: E402
from p2p_lib.paths import dataset_dir  # noqa: E402
from p2p_lib.train import (COURSE_CONFIG, image_grid, train_course_model,  # noqa: E402
                           training_code_digest, translate_batch, val_tensors)
from reference_model import _git, machine, png_bytes, scores, write_file  # noqa: E402

RESULTS = ROOT / "experiments" / "ablations"   # committed: small files per run
MODELS = ROOT / ".cache" / "ablations"         # not committed: the trained networks, to re-score them
# The base of every run: lesson 06's course model, trained twice as long (2 + 2 epochs = 1,600 steps).
BASE = {**COURSE_CONFIG, "n_epochs": 2, "n_epochs_decay": 2, "snapshots": 1, "snapshot_steps": []}
# name: (what the paper calls it, the options that differ from BASE). BASE itself is "l1_cgan".
SETTINGS = {
    # Table 1: the objective (U-Net, the course's 70x70 PatchGAN)
    "l1":             ("L1", {"adversarial": "none"}),
    "gan":            ("GAN", {"adversarial": "gan", "lambda_L1": 0.0}),
    "cgan":           ("cGAN", {"lambda_L1": 0.0}),
    "l1_gan":         ("L1+GAN", {"adversarial": "gan"}),
    "l1_cgan":        ("L1+cGAN", {}),
    # our lambda sweep of L1 + cGAN (the paper uses lambda = 100 and does not sweep it)
    "lambda_1":       ("L1+cGAN, λ=1", {"lambda_L1": 1.0}),
    "lambda_10":      ("L1+cGAN, λ=10", {"lambda_L1": 10.0}),
    "lambda_1000":    ("L1+cGAN, λ=1000", {"lambda_L1": 1000.0}),
    # Table 2: the generator (no skips), with L1 and with L1 + cGAN
    "encdec_l1":      ("encoder-decoder, L1", {"netG": "encoder_decoder_128", "adversarial": "none"}),
    "encdec_l1_cgan": ("encoder-decoder, L1+cGAN", {"netG": "encoder_decoder_128"}),
    # Table 3: the discriminator's patch (L1 + cGAN); n_layers 3 is BASE's "basic"
    "pixelgan":       ("PixelGAN (1×1)", {"netD": "pixel"}),
    "patch_n1":       ("PatchGAN, n_layers 1 (16×16)", {"netD": "n_layers", "n_layers_D": 1}),
    "patch_n2":       ("PatchGAN, n_layers 2 (34×34)", {"netD": "n_layers", "n_layers_D": 2}),
    "patch_n4":       ("PatchGAN, n_layers 4 (142×142)", {"netD": "n_layers", "n_layers_D": 4}),
}
SEEDS = (0, 1)
THIRD_SEED = ("l1", "cgan", "l1_cgan", "patch_n2")  # the key settings get seed 2 too
SHOWN = (0, 1, 2, 3)   # the val pairs whose outputs each run keeps (outputs.png)
GRADIENT_PAIRS = 16    # val pairs on which the gradient shares are measured


def planned_runs(only: list[str] | None = None, seeds: list[int] | None = None) -> list[tuple[str, int]]:
    "(setting, seed) of the whole sweep, seed by seed: every setting's seed 0 first, so a partial sweep is even."
    wanted = list(SETTINGS) if not only else only
    unknown = [name for name in wanted if name not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}; the sweep has {', '.join(SETTINGS)}")
    runs = [(name, seed) for seed in SEEDS for name in wanted]
    runs += [(name, 2) for name in wanted if name in THIRD_SEED]
    return [(name, seed) for name, seed in runs if seeds is None or seed in seeds]


def run_id(name: str, seed: int) -> str:
    return f"{name}-seed{seed}"


def run_config(name: str, seed: int, base: dict | None = None) -> dict:
    return {**(BASE if base is None else base), **SETTINGS[name][1], "seed": seed}


def curves(history: dict[str, list[float]], points: int = 32) -> dict:
    "Each loss averaged over `points` equal stretches of the run: a curve small enough to commit."
    steps = len(next(iter(history.values()), []))
    size = max(1, -(-steps // points))
    return {"every": size, **{name: [round(sum(v[i:i + size]) / len(v[i:i + size]), 5) for i in range(0, steps, size)]
                              for name, v in history.items()}}


def evaluate_run(G, D, config: dict, val_A, val_B) -> tuple[dict, torch.Tensor]:
    "(scores, outputs) on the whole val split: scores() of tools/reference_model.py, and the sharpness after 2x2 pooling."
    outputs = translate_batch(G, val_A, seed=0)
    result = scores(outputs, val_B)
    result["sharpness_pooled"] = detail_ratio(to_unit_range(outputs), to_unit_range(val_B), pool=2).item()
    result["detail_ratio"] = detail_ratio(to_unit_range(outputs), to_unit_range(val_B)).item()
    result["gradient"] = gradient_shares(G, D, config, val_A[:GRADIENT_PAIRS], val_B[:GRADIENT_PAIRS])
    return result, outputs


def code_version(script: str = "tools/ablate.py") -> dict:
    """The code a run is trained and scored with, read when this process starts (the sweep runs for hours while
    the project moves on): the git HEAD, whether the training code (p2p_lib and `script`) differed from it, and
    lesson 06's digest of the training modules (p2p_lib.train.training_code_digest) that the course model's
    cache also uses."""
    changed = _git("status", "--porcelain", "--", "p2p_lib", script, "tools/reference_model.py")
    return {"commit": _git("rev-parse", "HEAD") or "unknown",
            "training_code_uncommitted": None if changed is None else bool(changed),
            "training_code_digest": training_code_digest()}


CODE_VERSION = code_version()


def write_results(name: str, seed: int, config: dict, trained: dict, val_A, val_B, out: Path) -> dict:
    "RUN/result.json and RUN/outputs.png (the SHOWN val pairs' outputs, 128 px)."
    G, D = trained["G"], trained["D"]
    metrics, outputs = evaluate_run(G, D, config, val_A, val_B)
    shown = list(SHOWN)
    grid = image_grid(outputs[shown])  # one column: the outputs of the shown pairs, top to bottom
    write_file(out / "outputs.png", png_bytes(Image.fromarray(grid.numpy())))
    result = {"setting": name, "paper_name": SETTINGS[name][0], "seed": seed,
              "options": {k: v for k, v in config.items() if k not in ("snapshots", "snapshot_steps")},
              "differs_from_base": SETTINGS[name][1], "steps": trained["steps"],
              "metrics": metrics, "val_pairs": len(val_A), "shown_val_pairs": shown,
              "curves": curves(trained["history"]), "train_seconds": round(trained["seconds"], 1),
              "command": f"python tools/ablate.py run --only {name} --seeds {seed}",
              "code_version": CODE_VERSION, "machine": machine()}
    write_file(out / "result.json", (json.dumps(result, indent=1, allow_nan=False) + "\n").encode())
    return result


def save_networks(path: Path, trained: dict, config: dict) -> None:
    save_checkpoint(path, {"kind": "ablation_run", "G": trained["G"].state_dict(), "D": trained["D"].state_dict(),
                           "options": config, "history": trained["history"], "steps": trained["steps"],
                           "seconds": trained["seconds"]})


def load_networks(path: Path) -> tuple[dict, dict]:
    saved = load_checkpoint(path)  # weights only: loading runs no code
    if saved.get("kind") != "ablation_run":
        raise SystemExit(f"{path}: not a run of tools/ablate.py")
    config = saved["options"]
    G, D = define_G(config, init=False), define_D(config, init=False)
    load_state_dict_strict(G, saved["G"], what=f"G in {path}")
    load_state_dict_strict(D, saved["D"], what=f"D in {path}")
    return {"G": G, "D": D, "history": saved["history"], "steps": saved["steps"], "seconds": saved["seconds"]}, config


def commit(paths: list[Path], message: str, repo: Path = ROOT) -> bool:
    """git add + commit of exactly these paths (other staged work stays staged, uncommitted); a few tries if
    another git command holds the index. Returns whether it committed; a failure is a warning, not a stop."""
    names = [str(Path(p).resolve().relative_to(Path(repo).resolve())) for p in paths]
    for attempt in range(5):
        added = subprocess.run(["git", "add", "--", *names], cwd=repo, capture_output=True, text=True)
        done = subprocess.run(["git", "commit", "-q", "-m", message, "--only", "--", *names], cwd=repo,
                              capture_output=True, text=True) if added.returncode == 0 else added
        if done.returncode == 0:
            return True
        time.sleep(2 + 3 * attempt)  # another git command holds index.lock
    print(f"warning: could not commit {', '.join(names)}: {done.stderr.strip()}", file=sys.stderr)
    return False


def _shown_path(path: Path) -> str:
    "A path inside the project relative to it (results are committed: no machine's folder names in them)."
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_sweep(args) -> int:
    base = {**BASE, **json.loads(args.base)} if args.base else BASE
    results, models = Path(args.results), Path(args.models)
    root = Path(args.dataroot) if args.dataroot else dataset_dir(base["dataset"])
    val_A, val_B = val_tensors(root, base["direction"], base["crop_size"], base["num_val"])
    for name, seed in planned_runs(args.only, args.seeds):
        out = results / run_id(name, seed)
        if (out / "result.json").is_file():
            continue
        config = {**run_config(name, seed, base), "dataroot": _shown_path(root)}
        print(f"[{time.strftime('%H:%M:%S')}] {run_id(name, seed)}: {SETTINGS[name][0]}", flush=True)
        trained = train_course_model({**config, "dataset": str(root)}, device="cpu", verbose=False)
        save_networks(models / f"{run_id(name, seed)}.pt", trained, config)
        result = write_results(name, seed, config, trained, val_A, val_B, out)
        m = result["metrics"]
        print(f"  {trained['seconds']:.0f} s; val L1 {m['L1']:.4f}, SSIM {m['SSIM']:.3f}, "
              f"sharpness {m['sharpness_pooled']:.3f}", flush=True)
        if args.commit:
            commit([out / "result.json", out / "outputs.png"],
                   f"ablations: {run_id(name, seed)} ({SETTINGS[name][0]}), val L1 {m['L1']:.4f}, "
                   f"{trained['seconds']:.0f} s on {result['machine']['cores']} cores")
    return 0


def run_evaluate(args) -> int:
    results, models = Path(args.results), Path(args.models)
    for name, seed in planned_runs(args.only):
        path = models / f"{run_id(name, seed)}.pt"
        if not path.is_file():
            continue
        trained, config = load_networks(path)
        root = ROOT / config["dataroot"]  # relative to the project, or absolute
        val_A, val_B = val_tensors(root, config["direction"], config["crop_size"], config["num_val"])
        write_results(name, seed, config, trained, val_A, val_B, results / run_id(name, seed))
        print(f"re-scored {run_id(name, seed)}")
    return 0


def run_list(args) -> int:
    for name, seed in planned_runs(args.only):
        done = (Path(args.results) / run_id(name, seed) / "result.json").is_file()
        print(f"{'done' if done else '    '}  {run_id(name, seed):<24} {SETTINGS[name][0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, func, text in (("run", run_sweep, "train and score every pending run"),
                                ("evaluate", run_evaluate, "re-score the runs whose networks are cached"),
                                ("list", run_list, "the runs of the sweep, and which are done")):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("--only", nargs="+", default=None, metavar="NAME", help="these settings only")
        sub.add_argument("--results", default=str(RESULTS), help="where results go (default: %(default)s)")
        sub.add_argument("--models", default=str(MODELS), help="where the networks go (default: %(default)s)")
        sub.set_defaults(func=func)
        if command == "run":
            sub.add_argument("--seeds", nargs="+", type=int, default=None, help="these seeds only")
            sub.add_argument("--commit", action="store_true", help="git-commit each run's results as it finishes")
            sub.add_argument("--dataroot", default=None, help="the facades folder (default: datasets/facades)")
            sub.add_argument("--base", default=None, help="JSON options over the base (tests: a tiny setting)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
