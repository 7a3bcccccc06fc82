"""`p2p train`: the paper's training recipe from the command line (hand-written plumbing).

The step itself is lesson 06's `p2p_lib.train.train_step`, unchanged; this module wraps it with what a
long run needs: options named like the official train.py (with the official pix2pix defaults),
checkpoints of the full training state that resume bit for bit (p2p_lib.checkpoint), a learning-rate
schedule, mixed precision (--amp), multi-GPU training with PyTorch's DistributedDataParallel under
`torchrun`, a progress bar, a JSONL log, validation images and metrics each epoch, and guard rails:
a NaN/Inf loss stops the run and keeps the last good checkpoint, Ctrl-C saves a checkpoint you can
resume, running out of memory gives advice instead of a stack trace.

    p2p train --dataroot datasets/facades --name facades_label2photo --direction BtoA
    torchrun --nproc_per_node 4 -m p2p_lib.cli train --dataroot ... --name ...
    python -m p2p_lib.engine --dataroot ... (the same as `p2p train`)

Determinism: every random choice is seeded by --seed: the initial weights, dropout, the shuffling
(a permutation per epoch) and the crop/flip jitter (each pair's jitter is seeded by (seed, epoch,
index), so it does not depend on --num_workers or on where a run was resumed). On a CPU, N steps in
one go and N/2 + resume + N/2 give identical weights.

With several processes (torchrun), each takes its own shard of every epoch (DistributedSampler) and its
own batch of --batch_size, so the effective batch is processes x batch_size; gradients are averaged by
DistributedDataParallel; only rank 0 writes logs, images and checkpoints (the logged losses are rank 0's).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from p2p_lib.blocks import init_weights
from p2p_lib.checkpoint import (FORMAT, NETG_NUM_DOWNS, VERSION, CheckpointError, build_generator,
                                generator_checkpoint, generator_path, jsonable_options, load_checkpoint,
                                load_state_dict_strict, save_checkpoint, state_path)
from p2p_lib.losses import GAN_MODES, GANLoss
from p2p_lib.patchgan import PatchDiscriminator, PixelDiscriminator
from p2p_lib.train import (LR_POLICIES, image_grid, l1_and_psnr, make_optimizers, make_scheduler, pick_device,
                           train_step, translate_batch)

__all__ = ["register_cli", "add_train_arguments", "options_from_args", "train", "run", "main",
           "build_discriminator", "NETD_CHOICES", "IGNORED_OPTIONS", "LOSS_NAMES", "TrainingStopped"]

NETD_CHOICES = ("basic", "n_layers", "pixel")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
LOSS_NAMES = ("G_GAN", "G_L1", "D_real", "D_fake")
# Official options that have no meaning here: accepted (so official command lines work) with a notice.
IGNORED_OPTIONS = {
    "display_id": "no visdom display: see loss_log.jsonl, images/ and --tensorboard",
    "display_freq": "no visdom display", "display_ncols": "no visdom display", "display_server": "no visdom display",
    "display_env": "no visdom display", "display_port": "no visdom display", "display_winsize": "no visdom display",
    "update_html_freq": "no HTML page: images/ holds the samples", "no_html": "no HTML page is written",
    "use_wandb": "no Weights & Biases logging: see loss_log.jsonl and --tensorboard",
    "wandb_project_name": "no Weights & Biases logging",
    "verbose": "the networks' sizes are always printed", "suffix": "the run's name is --name as given",
    "load_iter": "resume with --continue_train --epoch latest|N", "save_by_iter": "latest_* is saved every --save_latest_freq iterations",
    "lr_decay_iters": "only for the step policy; --lr_policy is linear or constant here",
    "dataset_mode": "pix2pix reads aligned pairs (A|B files, or A/ and B/ folders)",
}
OOM_ADVICE = ("Out of memory. Try, in this order: --amp (mixed precision), a smaller --batch_size, a smaller "
              "--crop_size (with --load_size a little larger, e.g. 143 for 128, and --netG unet_128), "
              "smaller --ngf/--ndf; on a GPU, close other programs using it (nvidia-smi).")


class TrainingStopped(Exception):
    """Training stopped early (NaN/Inf loss); the message says why and what was kept."""


# ----------------------------------------------------------------------------------------- options

def _inf_or_int(text: str) -> float:
    return float("inf") if str(text).lower() in ("inf", "infinity") else int(text)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `p2p train` options: named as the official train.py where the same thing exists, with the
    official pix2pix defaults."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataroot", required=True,
                      help="dataset folder with train/ (and val/ for validation each epoch); each split holds A|B "
                           "side-by-side images or A/ and B/ folders (e.g. datasets/facades)")
    data.add_argument("--direction", default="AtoB", choices=("AtoB", "BtoA"),
                      help="AtoB: left half (A) -> right half (B); BtoA the other way (facades labels -> photo: BtoA)")
    data.add_argument("--phase", default="train", help="the split to train on (default: train)")
    data.add_argument("--input_nc", type=int, default=3, choices=(1, 3), help="input channels (default: 3)")
    data.add_argument("--output_nc", type=int, default=3, choices=(1, 3), help="output channels (default: 3)")
    data.add_argument("--load_size", type=int, default=286, help="resize images to this size (default: 286)")
    data.add_argument("--crop_size", type=int, default=256, help="then crop to this size at random (default: 256)")
    data.add_argument("--preprocess", default="resize_and_crop",
                      help="resize_and_crop (default) | crop | scale_width | scale_width_and_crop | none")
    data.add_argument("--no_flip", action="store_true", help="no random horizontal flips")
    data.add_argument("--serial_batches", action="store_true", help="take pairs in order instead of shuffled")
    data.add_argument("--max_dataset_size", type=_inf_or_int, default=float("inf"),
                      help="use at most this many training pairs (default: all)")
    data.add_argument("--num_workers", "--num_threads", dest="num_workers", type=int, default=None,
                      help="data-loading worker processes (default: 0 on a CPU, 4 on a GPU; --num_threads is the "
                           "official name). The results do not depend on it.")
    data.add_argument("--num_val", type=int, default=10,
                      help="validation pairs scored (L1, PSNR) and shown each epoch, from DATAROOT/val if it exists "
                           "(default: 10; 0: none)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="pix2pix", help="only pix2pix (the official code also has cycle_gan, ...)")
    model.add_argument("--netG", default="unet_256", help=f"generator: {' | '.join(NETG_NUM_DOWNS)} (default: unet_256)")
    model.add_argument("--netD", default="basic",
                       help="discriminator: basic (70x70 PatchGAN) | n_layers (PatchGAN with --n_layers_D) | pixel (1x1)")
    model.add_argument("--n_layers_D", type=int, default=3, help="PatchGAN depth for --netD n_layers (default: 3)")
    model.add_argument("--ngf", type=int, default=64, help="generator filters in the first layer (default: 64)")
    model.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first layer (default: 64)")
    model.add_argument("--norm", default="batch", choices=("batch", "instance", "none"), help="default: batch")
    model.add_argument("--no_dropout", action="store_true", help="no dropout in the generator")
    model.add_argument("--init_type", default="normal", choices=INIT_TYPES, help="weight init (default: normal)")
    model.add_argument("--init_gain", type=float, default=0.02, help="scale of the init (default: 0.02)")
    model.add_argument("--gan_mode", default="vanilla",
                       help=f"adversarial loss: {' | '.join(GAN_MODES)} (default: vanilla, the paper's)")
    model.add_argument("--lambda_L1", type=float, default=100.0, help="weight of the L1 term (default: 100)")
    model.add_argument("--pool_size", type=int, default=0, help="image pool size; pix2pix uses none (0)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: 0.0002)")
    optim.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (default: 0.5)")
    optim.add_argument("--batch_size", type=int, default=1, help="pairs per step and per GPU (default: 1)")
    optim.add_argument("--n_epochs", type=int, default=100, help="epochs at the initial learning rate (default: 100)")
    optim.add_argument("--n_epochs_decay", type=int, default=100,
                       help="epochs of linear decay to zero after that (default: 100)")
    optim.add_argument("--lr_policy", default="linear",
                       help="linear (official: constant, then linear decay) | constant (the paper, the Lua code)")
    optim.add_argument("--epoch_count", type=int, default=None,
                       help="number of the first epoch of a fresh run (default: 1); a resumed run continues from "
                            "its checkpoint")
    optim.add_argument("--max_steps", type=int, default=None,
                       help="stop after this many iterations in all (counted across resumes)")
    optim.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", default=None,
                          help="cuda, cuda:1, mps or cpu (default: CUDA if present, then MPS, then CPU)")
    hardware.add_argument("--gpu_ids", default=None, help="official style: -1 for the CPU, 0 for cuda:0")
    hardware.add_argument("--amp", nargs="?", const="auto", default=None, choices=("auto", "bf16", "fp16"),
                          help="mixed precision: bf16 on CPUs and recent GPUs, fp16 with loss scaling on older GPUs "
                               "(--amp alone picks; it only pays off with hardware support)")
    hardware.add_argument("--channels_last", action="store_true", help="NHWC memory layout (faster on some GPUs)")
    hardware.add_argument("--sync_bn", action="store_true",
                          help="with several GPUs, BatchNorm over the whole batch of all GPUs (GPUs only)")

    save = parser.add_argument_group("checkpoints and logs")
    save.add_argument("--name", default="experiment_name", help="the run's name: CHECKPOINTS_DIR/NAME holds its files")
    save.add_argument("--checkpoints_dir", default="./checkpoints", help="default: ./checkpoints")
    save.add_argument("--continue_train", action="store_true", help="resume from CHECKPOINTS_DIR/NAME/{EPOCH}_state.pt")
    save.add_argument("--epoch", default="latest", help="checkpoint to resume: latest (default) or an epoch number")
    save.add_argument("--print_freq", type=int, default=100, help="log the losses every N iterations (default: 100)")
    save.add_argument("--save_latest_freq", type=int, default=5000,
                      help="save latest_* every N iterations (default: 5000)")
    save.add_argument("--save_epoch_freq", type=int, default=5,
                      help="save {epoch}_* every N epochs (default: 5); each full state of the default model is "
                           "about 0.7 GB")
    save.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (needs `pip install tensorboard`)")
    save.add_argument("--no_progress", action="store_true", help="no progress bar")

    ignored = parser.add_argument_group("accepted for compatibility with the official train.py, and ignored")
    for option in ("display_id", "display_freq", "display_ncols", "display_server", "display_env", "display_port",
                   "display_winsize", "update_html_freq", "wandb_project_name", "suffix", "load_iter",
                   "lr_decay_iters", "dataset_mode"):
        ignored.add_argument(f"--{option}", default=None, help=argparse.SUPPRESS)
    for option in ("no_html", "use_wandb", "verbose", "save_by_iter"):
        ignored.add_argument(f"--{option}", action="store_true", default=None, help=argparse.SUPPRESS)
    ignored.description = ", ".join(f"--{o}" for o in IGNORED_OPTIONS)
    return parser


def _notice(text: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"note: {text}", file=sys.stderr)


def options_from_args(args: argparse.Namespace) -> dict:
    """Check the parsed options and turn them into the run's options dict (JSON-able values)."""
    opts = {k: v for k, v in vars(args).items() if k not in IGNORED_OPTIONS and k != "func" and k != "command"}
    for option, why in IGNORED_OPTIONS.items():
        value = getattr(args, option, None)
        if value not in (None, False) and not (option == "dataset_mode" and value == "aligned"):
            _notice(f"--{option} is ignored ({why})")
    if opts["model"] != "pix2pix":
        raise SystemExit(f"--model {opts['model']}: this command trains pix2pix only "
                         f"(the official repository's other models, e.g. cycle_gan, are not part of this course)")
    if opts["netG"] not in NETG_NUM_DOWNS:
        raise SystemExit(f"--netG {opts['netG']}: unknown generator; choose one of {', '.join(NETG_NUM_DOWNS)} "
                         f"(unet_256 for 256 px crops, unet_128 for 128 px)")
    if opts["netD"] not in NETD_CHOICES:
        raise SystemExit(f"--netD {opts['netD']}: unknown discriminator; choose one of {', '.join(NETD_CHOICES)}")
    if opts["gan_mode"] not in GAN_MODES:
        raise SystemExit(f"--gan_mode {opts['gan_mode']}: choose one of {', '.join(GAN_MODES)}"
                         + (" (wgangp is not implemented: pix2pix uses vanilla)" if opts["gan_mode"] == "wgangp" else ""))
    if opts["lr_policy"] not in LR_POLICIES:
        raise SystemExit(f"--lr_policy {opts['lr_policy']}: choose one of {', '.join(LR_POLICIES)} "
                         f"(linear = the official default, constant = the paper's)")
    if opts["pool_size"] != 0:
        raise SystemExit("--pool_size: pix2pix trains without an image pool (0); the pool is CycleGAN's")
    multiple = 2 ** NETG_NUM_DOWNS[opts["netG"]]
    if opts["preprocess"] in ("resize_and_crop", "crop", "scale_width_and_crop") and opts["crop_size"] % multiple:
        raise SystemExit(f"--crop_size {opts['crop_size']}: --netG {opts['netG']} needs a multiple of {multiple}"
                         + (" (use --netG unet_128 for 128 px)" if opts["crop_size"] % 128 == 0 else ""))
    for option in ("batch_size", "print_freq", "save_latest_freq", "save_epoch_freq"):
        if opts[option] < 1:
            raise SystemExit(f"--{option} must be at least 1, got {opts[option]}")
    if opts["max_steps"] is not None and opts["max_steps"] < 0:
        raise SystemExit(f"--max_steps must be positive, got {opts['max_steps']}")
    if opts["gpu_ids"] is not None and opts["device"] is None:
        ids = [i for i in str(opts["gpu_ids"]).split(",") if i.strip()]
        if ids and int(ids[0]) < 0:
            opts["device"] = "cpu"
        elif ids:
            opts["device"] = f"cuda:{int(ids[0])}"
            if len(ids) > 1:
                _notice(f"--gpu_ids {opts['gpu_ids']}: one process uses one GPU; for several, launch with "
                        f"`torchrun --nproc_per_node {len(ids)} -m p2p_lib.cli train ...`")
    if opts["epoch_count"] is not None and opts["continue_train"]:
        _notice("--epoch_count is ignored with --continue_train: the run continues where its checkpoint stopped")
    if opts["epoch_count"] is None:
        opts["epoch_count"] = 1
    opts["dataroot"] = str(opts["dataroot"])
    opts["checkpoints_dir"] = str(opts["checkpoints_dir"])
    return opts


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train pix2pix (the paper's recipe; resumable, multi-GPU with torchrun)",
        description="Train pix2pix with the official defaults (unet_256, 70x70 PatchGAN, 286->256 jitter, batch 1, "
                    "Adam 2e-4 / 0.5, lambda_L1 100, 100 + 100 epochs). Writes CHECKPOINTS_DIR/NAME/: "
                    "latest_state.pt (resume with --continue_train), latest_net_G.pt (for p2p test / translate), "
                    "loss_log.jsonl (losses, learning rates and, each epoch, val_L1 with pixels on [-1, 1] as the "
                    "training losses, i.e. twice p2p test's L1 on [0, 1], and val_PSNR) and images/. "
                    "Example: p2p train --dataroot datasets/facades "
                    "--name facades_label2photo --direction BtoA",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------ the networks

def build_discriminator(opts: dict) -> nn.Module:
    "The discriminator of --netD, judging (input, output) pairs stacked in channels."
    channels = opts["input_nc"] + opts["output_nc"]
    if opts["netD"] == "basic":
        return PatchDiscriminator(channels, opts["ndf"], n_layers=3, norm=opts["norm"])
    if opts["netD"] == "n_layers":
        return PatchDiscriminator(channels, opts["ndf"], n_layers=opts["n_layers_D"], norm=opts["norm"])
    if opts["netD"] == "pixel":
        return PixelDiscriminator(channels, opts["ndf"], norm=opts["norm"])
    raise ValueError(f"unknown --netD {opts['netD']!r}; choose one of {', '.join(NETD_CHOICES)}")


def _initialise(net: nn.Module, init_type: str, gain: float) -> None:
    """The official init_weights: conv/linear weights by init_type (scale gain), BatchNorm weights ~ N(1, gain),
    biases 0. 'normal' is lesson 01's init_weights."""
    if init_type == "normal":
        init_weights(net, gain)
        return
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


ARCHITECTURE = ("netG", "netD", "n_layers_D", "ngf", "ndf", "norm", "no_dropout", "input_nc", "output_nc")


# ---------------------------------------------------------------------------------------- the data

class _SeededPairs(torch.utils.data.Dataset):
    """Item (epoch, index) of the dataset with its random jitter seeded by (seed, epoch, index): the
    same pair gets the same crop and flip whichever worker loads it and wherever a run was resumed.
    The caller's RNG states are put back, so loading never disturbs dropout."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        seed = ((self.seed * 1_000_003 + epoch) * 1_000_003 + index) % (2 ** 63)
        py_state, torch_state = random.getstate(), torch.get_rng_state()
        random.seed(seed)
        torch.random.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            torch.set_rng_state(torch_state)


class _EpochSampler(torch.utils.data.Sampler):
    """This rank's indices of one epoch (DistributedSampler's shuffle and sharding), as (epoch, index)
    keys, skipping the first `skip` (a run resumed in the middle of an epoch)."""

    def __init__(self, base: torch.utils.data.DistributedSampler, epoch: int, skip: int = 0):
        self.base, self.epoch, self.skip = base, epoch, skip
        base.set_epoch(epoch)
        self.indices = list(base)[skip:]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.indices])

    def __len__(self):
        return len(self.indices)


# ------------------------------------------------------------------------------------ small helpers

def _rng_state() -> dict:
    np_state = np.random.get_state(legacy=True)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def _amp_setup(choice: str | None, device: torch.device):
    """(autocast dtype or None, GradScaler or None) for --amp on this device."""
    if choice is None:
        return None, None
    if device.type == "cpu":
        if choice == "fp16":
            raise SystemExit("--amp fp16: float16 autocast is for GPUs; on a CPU use --amp bf16")
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            _notice("--amp: this CPU has no native bfloat16 arithmetic (AVX-512-BF16 or AMX), so bf16 autocast "
                    "will likely be SLOWER than float32; measure with benchmarks/bench_train_step.py")
        return torch.bfloat16, None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if choice == "bf16" or (choice == "auto" and bf16):
            if not bf16:
                raise SystemExit("--amp bf16: this GPU has no bfloat16 support; use --amp fp16")
            return torch.bfloat16, None
        return torch.float16, torch.amp.GradScaler("cuda")
    raise SystemExit(f"--amp is not supported on {device.type} here; train without it")


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _StopFlag:
    """Ctrl-C: the first one asks the loop to stop after the current step (and save); a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# --------------------------------------------------------------------------------------- training

def train(opts: dict, on_step=None) -> dict:
    """Train with the options dict of `options_from_args` (see `p2p train --help`).

    `on_step(step, losses)` is called after every iteration (tests use it). Returns {"status": "done" |
    "interrupted" | "nan" | "oom", "step", "epoch", "run_dir", "exit_code"}."""
    from p2p_lib.data import PairedDataError, PairedImageDataset  # lesson 05

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    main_process = rank == 0
    if distributed:
        if opts["device"] is None and torch.cuda.is_available():
            device = torch.device(f"cuda:{local_rank}")
        else:
            device = pick_device(opts["device"])
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    else:
        device = pick_device(opts["device"])
    if opts["sync_bn"] and device.type != "cuda":
        raise SystemExit("--sync_bn: SyncBatchNorm runs only on CUDA GPUs; drop --sync_bn on the CPU")
    amp_dtype, scaler = _amp_setup(opts["amp"], device)

    run_dir = Path(opts["checkpoints_dir"]) / opts["name"]
    try:
        return _train(opts, on_step, device, distributed, rank, world, main_process, amp_dtype, scaler, run_dir,
                      PairedImageDataset, PairedDataError)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(opts, on_step, device, distributed, rank, world, main_process, amp_dtype, scaler, run_dir,
           PairedImageDataset, PairedDataError) -> dict:
    def say(text):
        if main_process:
            print(text, flush=True)

    # ---- data
    try:
        dataset = PairedImageDataset(opts["dataroot"], opts["phase"], direction=opts["direction"],
                                     load_size=opts["load_size"], crop_size=opts["crop_size"],
                                     preprocess=opts["preprocess"], no_flip=opts["no_flip"],
                                     input_nc=opts["input_nc"], output_nc=opts["output_nc"],
                                     max_dataset_size=opts["max_dataset_size"],
                                     multiple=2 ** NETG_NUM_DOWNS[opts["netG"]])
    except (PairedDataError, ValueError) as err:
        raise SystemExit(f"cannot read the training data: {err}") from None
    val_A = val_B = None
    if opts["num_val"] > 0 and (Path(opts["dataroot"]) / "val").exists() and main_process:
        val = PairedImageDataset(opts["dataroot"], "val", direction=opts["direction"], load_size=opts["crop_size"],
                                 crop_size=opts["crop_size"], preprocess=opts["preprocess"], no_flip=True,
                                 input_nc=opts["input_nc"], output_nc=opts["output_nc"],
                                 max_dataset_size=opts["num_val"], multiple=2 ** NETG_NUM_DOWNS[opts["netG"]])
        with torch.random.fork_rng(devices=[]):
            items = [val[i] for i in range(len(val))]
        val_A, val_B = torch.stack([i["A"] for i in items]), torch.stack([i["B"] for i in items])
    base_sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank,
                                                       shuffle=not opts["serial_batches"], seed=opts["seed"])
    seeded = _SeededPairs(dataset, opts["seed"])
    num_workers = opts["num_workers"] if opts["num_workers"] is not None else (0 if device.type == "cpu" else 4)
    loader_generator = torch.Generator()  # the loader's worker seeds: kept off the global RNG (resume-exact)

    def loader(epoch, skip_batches):
        sampler = _EpochSampler(base_sampler, epoch, skip_batches * opts["batch_size"])
        return torch.utils.data.DataLoader(seeded, batch_size=opts["batch_size"], sampler=sampler,
                                           num_workers=num_workers, pin_memory=device.type == "cuda",
                                           generator=loader_generator)

    steps_per_epoch = math.ceil(math.ceil(len(dataset) / world) / opts["batch_size"])

    # ---- networks, optimisers, schedules
    random.seed(opts["seed"])
    np.random.seed(opts["seed"] % 2 ** 32)
    torch.manual_seed(opts["seed"])
    G = build_generator(opts)
    D = build_discriminator(opts)
    _initialise(G, opts["init_type"], opts["init_gain"])
    _initialise(D, opts["init_type"], opts["init_gain"])
    G.to(device)
    D.to(device)
    if opts["channels_last"]:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    opt_G, opt_D = make_optimizers(G, D, opts["lr"], opts["beta1"])
    state = None
    if opts["continue_train"]:
        path = state_path(run_dir, opts["epoch"])
        if not path.exists():
            raise SystemExit(f"--continue_train: no checkpoint {path}"
                             + (f" (found: {', '.join(sorted(p.name for p in run_dir.glob('*_state.pt')))})"
                                if run_dir.is_dir() else ""))
        try:
            state = load_checkpoint(path, map_location="cpu", kind="train_state")
        except CheckpointError as err:
            raise SystemExit(f"--continue_train: {err}") from None
        saved = state["options"]
        different = [f"--{k} {saved.get(k)} (you gave {opts[k]})" for k in ARCHITECTURE if saved.get(k) != opts[k]]
        if different:
            raise SystemExit(f"--continue_train: {path} was trained with " + ", ".join(different)
                             + ": pass the same architecture options to resume it")
        opts["epoch_count"] = saved.get("epoch_count", 1)
    sched_args = (opts["n_epochs"], opts["n_epochs_decay"], opts["lr_policy"], opts["epoch_count"])
    sched_G, sched_D = make_scheduler(opt_G, *sched_args), make_scheduler(opt_D, *sched_args)
    step, epoch, epoch_iter = 0, opts["epoch_count"], 0
    resumed = None
    if state is not None:
        try:
            load_state_dict_strict(G, state["G"], "generator (G)")
            load_state_dict_strict(D, state["D"], "discriminator (D)")
            opt_G.load_state_dict(state["optimizer_G"])
            opt_D.load_state_dict(state["optimizer_D"])
            sched_G.load_state_dict(state["scheduler_G"])
            sched_D.load_state_dict(state["scheduler_D"])
        except (CheckpointError, ValueError, KeyError) as err:
            raise SystemExit(f"--continue_train: {err}") from None
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, epoch, epoch_iter = int(state["step"]), int(state["epoch"]), int(state.get("epoch_iter", 0))
        if state.get("epoch_complete", False):
            epoch, epoch_iter = epoch + 1, 0
        rng = state["rng"]
        per_rank = state.get("rng_per_rank")
        if distributed and per_rank and len(per_rank) == world:
            rng = per_rank[rank]
        _set_rng_state(rng)
        resumed = f"resumed {path}: epoch {epoch}, {epoch_iter} iterations into it, {step} in all"
    elif distributed:
        torch.manual_seed(opts["seed"] + rank)  # each GPU its own dropout masks (the weights come from rank 0)

    if distributed:
        if opts["sync_bn"]:
            G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
            D = nn.SyncBatchNorm.convert_sync_batchnorm(D)
        ids = [device.index] if device.type == "cuda" else None
        G = nn.parallel.DistributedDataParallel(G, device_ids=ids)
        D = nn.parallel.DistributedDataParallel(D, device_ids=ids)
    elif opts["sync_bn"]:
        _notice("--sync_bn has no effect with one process")
    gan_loss = GANLoss(opts["gan_mode"]).to(device)
    last_epoch = opts["n_epochs"] + opts["n_epochs_decay"]

    # ---- outputs (rank 0 only)
    log_file = writer = None
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "opt.json").write_text(json.dumps(jsonable_options(opts), indent=2) + "\n")
        log_file = open(run_dir / "loss_log.jsonl", "a", encoding="utf-8")
        if opts["tensorboard"]:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                _notice("--tensorboard: TensorBoard is not installed (pip install tensorboard); logging to "
                        "loss_log.jsonl only")
        n_G = sum(p.numel() for p in _unwrap(G).parameters())
        n_D = sum(p.numel() for p in _unwrap(D).parameters())
        say(f"p2p train: {len(dataset)} training pairs, {steps_per_epoch} iterations per epoch"
            f"{f' per process ({world} processes)' if distributed else ''}; G {opts['netG']} {n_G / 1e6:.2f} M "
            f"parameters, D {opts['netD']} {n_D / 1e6:.2f} M; device {device}"
            f"{f', {amp_dtype} autocast' if amp_dtype else ''}; writing to {run_dir}")
        if resumed:
            say(resumed)

    def log(record):
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch", "epoch_iter"):
                    writer.add_scalar(f"{record['type']}/{key}", value, record["step"])

    def lrs():
        return {"lr_G": opt_G.param_groups[0]["lr"], "lr_D": opt_D.param_groups[0]["lr"]}

    def save(tag, complete):
        rng = _rng_state()
        per_rank = None
        if distributed:
            per_rank = [None] * world
            dist.all_gather_object(per_rank, rng)
        if not main_process:
            return
        obj = {"format": FORMAT, "version": VERSION, "kind": "train_state", "options": jsonable_options(opts),
               "G": _unwrap(G).state_dict(), "D": _unwrap(D).state_dict(),
               "optimizer_G": opt_G.state_dict(), "optimizer_D": opt_D.state_dict(),
               "scheduler_G": sched_G.state_dict(), "scheduler_D": sched_D.state_dict(),
               "epoch": epoch, "epoch_iter": epoch_iter, "epoch_complete": complete, "step": step,
               "rng": rng, "rng_per_rank": per_rank, "scaler": scaler.state_dict() if scaler is not None else None}
        save_checkpoint(state_path(run_dir, tag), obj)
        save_checkpoint(generator_path(run_dir, tag), generator_checkpoint(G, opts))

    def validate(tag):
        if val_A is None or (distributed and opts["sync_bn"]):  # SyncBatchNorm would wait for the other GPUs
            return {}
        fake = translate_batch(_unwrap(G), val_A.to(device), seed=opts["seed"])
        grid = image_grid(val_A[:4], fake[:4], val_B[:4])
        (run_dir / "images").mkdir(exist_ok=True)
        from PIL import Image
        Image.fromarray(grid.numpy()).save(run_dir / "images" / f"{tag}.png")
        scores = l1_and_psnr(fake, val_B)
        return {"val_L1": scores["L1"], "val_PSNR": scores["PSNR"]}

    status, exit_code = "done", 0
    sums = torch.zeros(len(LOSS_NAMES), device=device)
    epoch_sums = torch.zeros(len(LOSS_NAMES), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    since_print, timer = 0, time.perf_counter()
    # On a CPU reading a flag costs nothing; on a GPU it waits for the queued work, so check less often.
    check_every = 1 if device.type == "cpu" and not distributed else opts["print_freq"]
    epoch_done = False      # whether the end-of-epoch work (validation, scheduler step) of `epoch` is done
    saved_at = None         # (step, epoch_done) of the last checkpoint written in this run
    progress = None
    in_step = False
    max_steps = opts["max_steps"]
    try:
        with _StopFlag() as stop:
            stop_now = reached = max_steps is not None and step >= max_steps
            while epoch <= last_epoch and not stop_now:
                epoch_start = time.perf_counter()
                if main_process and not opts["no_progress"]:
                    from tqdm import tqdm
                    progress = tqdm(total=steps_per_epoch, initial=epoch_iter, desc=f"epoch {epoch}/{last_epoch}",
                                    unit="it", dynamic_ncols=True, leave=False, file=sys.stderr)
                for batch in loader(epoch, epoch_iter):
                    real_A = batch["A"].to(device, non_blocking=True)
                    real_B = batch["B"].to(device, non_blocking=True)
                    if opts["channels_last"]:
                        real_A = real_A.contiguous(memory_format=torch.channels_last)
                        real_B = real_B.contiguous(memory_format=torch.channels_last)
                    in_step = True
                    losses = train_step(G, D, opt_G, opt_D, real_A, real_B, gan_loss, opts["lambda_L1"],
                                        amp_dtype, scaler)
                    in_step = False
                    step, epoch_iter, since_print = step + 1, epoch_iter + 1, since_print + 1
                    values = torch.stack([losses[k].detach().float() for k in LOSS_NAMES])
                    finite &= torch.isfinite(values).all()
                    sums += values
                    epoch_sums += values
                    if progress is not None:
                        progress.update(1)
                    if on_step is not None:
                        on_step(step, losses)
                    due_latest = step % opts["save_latest_freq"] == 0
                    due_print = step % opts["print_freq"] == 0
                    if (due_latest or due_print or step % check_every == 0) and not _all_finite(finite, distributed):
                        raise TrainingStopped(f"a loss became NaN or infinite at iteration {step} (epoch {epoch})")
                    if due_print:
                        mean = (sums / since_print).tolist()
                        log({"type": "train", "epoch": epoch, "epoch_iter": epoch_iter, "step": step,
                             **dict(zip(LOSS_NAMES, mean)), **lrs(),
                             "it_per_s": since_print / (time.perf_counter() - timer)})
                        text = " ".join(f"{k}: {v:.3f}" for k, v in zip(LOSS_NAMES, mean))
                        if progress is not None:
                            progress.set_postfix_str(text)
                        elif main_process:
                            print(f"(epoch: {epoch}, iters: {epoch_iter}, step: {step}) {text}", flush=True)
                        sums.zero_()
                        since_print, timer = 0, time.perf_counter()
                    if due_latest:
                        save("latest", False)
                        saved_at = (step, False)
                    reached = max_steps is not None and step >= max_steps
                    if _stop_requested(stop, distributed, device) or reached:
                        stop_now = True
                        break
                if progress is not None:
                    progress.close()
                    progress = None
                if epoch_iter < steps_per_epoch:  # stopped inside the epoch
                    break
                # ---- the end of an epoch
                if not _all_finite(finite, distributed):
                    raise TrainingStopped(f"a loss became NaN or infinite in epoch {epoch}")
                scores = validate(f"epoch{epoch:03d}") if main_process else {}
                count = max(epoch_iter, 1)
                record = {"type": "epoch", "epoch": epoch, "step": step,
                          **{k: v / count for k, v in zip(LOSS_NAMES, epoch_sums.tolist())}, **lrs(), **scores,
                          "seconds": time.perf_counter() - epoch_start}
                log(record)
                if main_process:
                    shown = "".join(f", {k} {v:.4g}" for k, v in scores.items())
                    print(f"end of epoch {epoch}/{last_epoch}: {step} iterations, {record['seconds']:.0f} s"
                          f"{shown}, lr {record['lr_G']:.2e}", flush=True)
                epoch_sums.zero_()
                sched_G.step()
                sched_D.step()
                epoch_done = True
                if epoch % opts["save_epoch_freq"] == 0 or epoch == last_epoch:
                    save("latest", True)
                    save(epoch, True)
                    saved_at = (step, True)
                if stop_now or epoch == last_epoch:
                    break
                epoch, epoch_iter, epoch_done = epoch + 1, 0, False
            # ---- the end: save where we are, unless that was just saved
            if saved_at != (step, epoch_done) and step > 0:
                save("latest", epoch_done)
                saved_at = (step, epoch_done)
            if not epoch_done and not (stop_now and not reached) and step > 0:
                scores = validate(f"step{step:06d}") if main_process else {}
                if scores:
                    log({"type": "final", "epoch": epoch, "step": step, **scores, **lrs()})
                    say("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
            if stop_now and not reached:
                status, exit_code = "interrupted", 130
                say(f"stopped at iteration {step}; resume with the same command and --continue_train")
            else:
                say(f"done: {step} iterations; the generator is in {generator_path(run_dir, 'latest')}")
    except TrainingStopped as err:
        status, exit_code = "nan", 1
        kept = (f"the last good checkpoint, {state_path(run_dir, 'latest')} (iteration {saved_at[0]}), is kept"
                if saved_at is not None else "nothing was saved in this run")
        if main_process:
            print(f"\nTraining stopped: {err}. The run diverged; {kept}. Try a lower --lr, --gan_mode lsgan, "
                  f"or check the data (`p2p check-data`).", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        status, exit_code = "interrupted", 130
        if in_step or distributed:
            say(f"\ninterrupted {'inside an iteration' if in_step else 'while other processes run'}: not saving; "
                f"the last checkpoint ({'iteration ' + str(saved_at[0]) if saved_at else 'none in this run'}) is kept")
        else:
            save("latest", epoch_done)
            say(f"\ninterrupted: saved {state_path(run_dir, 'latest')} at iteration {step}; "
                f"resume with the same command and --continue_train")
    except Exception as err:
        if not _is_oom(err):
            raise
        status, exit_code = "oom", 1
        if main_process:
            print(f"\n{OOM_ADVICE}\n({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                  file=sys.stderr, flush=True)
    finally:
        if progress is not None:
            progress.close()
        if log_file is not None:
            log_file.close()
        if writer is not None:
            writer.close()
    return {"status": status, "step": step, "epoch": epoch, "run_dir": str(run_dir), "exit_code": exit_code}


def _all_finite(flag: torch.Tensor, distributed: bool) -> bool:
    """Whether every loss so far was finite, on every process (all stop together, or none)."""
    if distributed:
        flag = flag.float()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _stop_requested(stop: _StopFlag, distributed: bool, device: torch.device) -> bool:
    """Whether Ctrl-C was pressed (on any process: every process must stop at the same iteration)."""
    if not distributed:
        return stop.requested
    flag = torch.tensor(float(stop.requested), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def run(args: argparse.Namespace) -> int:
    """The `p2p train` command: exit status 0 when done, 130 when interrupted, 1 on divergence or OOM."""
    opts = options_from_args(args)
    return train(opts)["exit_code"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2p_lib.engine", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
