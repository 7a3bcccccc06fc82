"""`p2p train`: the paper's training recipe from the command line (hand-written plumbing).

The training itself is lesson 06's, whole: `p2p_lib.train.build_training` makes the run (networks
through `p2p_lib.networks`, Adam, the schedule) and `p2p_lib.train.fit` is the loop (epochs of seeded
batches, `train_step`, the schedule stepped per epoch, a NaN/Inf check). This module adds only what no
lesson teaches: options named like the official train.py (with the official pix2pix defaults), the
speed settings of the device (`p2p_lib.device.pick_speed`: bf16 only where the hardware has it),
checkpoints of the full training state that resume bit for bit, multi-GPU training under `torchrun`,
logs (JSONL, TensorBoard: p2p_lib.runlog), validation images each epoch, a results page kept current
(web/index.html: p2p_lib.runpage), and guard rails: a NaN/Inf loss stops the run
and keeps the last good checkpoint, Ctrl-C or SIGTERM saves a checkpoint you can resume, running out of
memory gives advice instead of a stack trace.

    p2p train --dataroot datasets/facades --name facades_label2photo --direction BtoA
    p2p train --dataroot datasets/facades --name facades_hd --direction BtoA --netD multiscale    # lesson 11
    p2p train --model cycle_gan --dataroot datasets/horse2zebra --name horse2zebra                 # lesson 10
    p2p train --name facades_label2photo --dataroot datasets/facades --continue_train --n_epochs 150
    torchrun --nproc_per_node 4 -m p2p_lib.cli train --dataroot ... --name ...

--model cycle_gan (lesson 10) switches the defaults to the official CycleGAN ones, as the official code does
(resnet_9blocks, instance norm, no dropout, lsgan, a 50-image pool, unaligned data in trainA/ and trainB/), and
trains lesson 10's four networks with its cyclegan_step in the same loop (p2p_lib.cyclegan_training); the
checkpoint also keeps both image pools and their random state. --netD multiscale (lesson 11) trains pix2pix
with pix2pixHD's multi-scale discriminator and feature matching (--num_D, --lambda_feat).

Determinism: every random choice is seeded by --seed (lesson 06: the initial weights, dropout, each
epoch's order and each pair's jitter). On a CPU, N steps in one go and N/2 + resume + N/2 give identical
weights, and `p2p train` with the course model's settings gives lesson 06's course model.

With several processes (torchrun), each takes its own shard of every epoch and its own batch of
--batch_size, so the effective batch is processes x batch_size; gradients are averaged by
DistributedDataParallel; only rank 0 writes logs, images and checkpoints (the logged losses are rank 0's).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from p2p_lib.checkpoint import (FORMAT, VERSION, CheckpointError, build_generator, check_architecture,
                                generator_checkpoint, generator_path,
                                jsonable_options, load_checkpoint, load_state_dict_strict, save_checkpoint, state_path)
from p2p_lib.cyclegan_training import (build_cycle_discriminators, build_cycle_generators, build_cyclegan_training,
                                       cyclegan_run_step, generator_sides, unpaired_training_data)
from p2p_lib.imagefiles import IMG_EXTENSIONS, PairedDataError
from p2p_lib.device import AMP_CHOICES, pick_device, pick_speed
from p2p_lib.losses import GAN_MODES
from p2p_lib.optiontypes import count_or_inf, number
from p2p_lib.patchgan import patch_grid_size
from p2p_lib.runlog import RunLog, SaveFailed
from p2p_lib.runpage import WatchHooks
from p2p_lib.rundir import (RunFolderError, RunFolderLock, check_free_space, checkpoint_bytes, describe_write_error,
                            megabytes, remove_leftover_temporaries)
from p2p_lib.networks import (ADVERSARIAL_CHOICES, ARCHITECTURE_OPTIONS, NETD_CHOICES, NETG_CHOICES, INIT_TYPES, define_D,
                              size_multiple_of)
from p2p_lib.train import (LOSS_NAMES, LR_POLICIES, Hooks, SeededPairs, TrainingDiverged, build_training, fit,
                           image_grid, l1_and_psnr, lr_factor, steps_per_epoch, train_step, translate_batch,
                           val_tensors)

__all__ = ["register_cli", "add_train_arguments", "options_from_args", "train", "run", "main",
           "IGNORED_OPTIONS", "RESUME_FIXED", "LOSS_NAMES"]

# Official options that have no meaning here: accepted (so official command lines work) with a notice.
IGNORED_OPTIONS = {
    "display_id": "no visdom display: see web/index.html, loss_log.jsonl and --tensorboard",
    "display_ncols": "no visdom display", "display_server": "no visdom display",
    "display_env": "no visdom display", "display_port": "no visdom display", "display_winsize": "no visdom display",
    "use_wandb": "no Weights & Biases logging: see loss_log.jsonl and --tensorboard",
    "wandb_project_name": "no Weights & Biases logging",
    "verbose": "the networks' sizes are always printed", "suffix": "the run's name is --name as given",
    "load_iter": "resume with --continue_train --epoch latest|N", "save_by_iter": "latest_* is saved every --save_latest_freq iterations",
    "lr_decay_iters": "only for the step policy; --lr_policy is linear or constant here",
    "dataset_mode": "the model decides: pix2pix reads aligned pairs (A|B files, or A/ and B/ folders), cycle_gan "
                    "unaligned trainA/ and trainB/",
}
MODELS = ("pix2pix", "cycle_gan")
# What a checkpoint fixes: the networks' shapes and the data they learn from. On --continue_train they come from
# the checkpoint (giving a different value is an error); every other option given on resume is applied.
FRESH_DEFAULTS = {"netG": "unet_256", "netD": "basic", "n_layers_D": 3, "ngf": 64, "ndf": 64, "norm": "batch",
                  "no_dropout": False, "input_nc": 3, "output_nc": 3, "init_type": "normal", "init_gain": 0.02,
                  "direction": "AtoB", "phase": "train", "load_size": 286, "crop_size": 256,
                  "preprocess": "resize_and_crop", "no_flip": False, "serial_batches": False,
                  "max_dataset_size": float("inf"), "batch_size": 1, "seed": 0, "adversarial": "cgan",
                  "model": "pix2pix", "num_D": 3, "pool_size": 0}
RESUME_FIXED = tuple(FRESH_DEFAULTS)
# What --model cycle_gan changes (the official cycle_gan_model.py); options a resumed run may change are at the end.
MODEL_DEFAULTS = {"pix2pix": {"gan_mode": "vanilla"},
                  "cycle_gan": {"netG": "resnet_9blocks", "norm": "instance", "no_dropout": True, "pool_size": 50,
                                "adversarial": "gan", "gan_mode": "lsgan"}}
assert set(ARCHITECTURE_OPTIONS) <= set(RESUME_FIXED)
OOM_ADVICE = ("Out of memory. Try, in this order: --amp (mixed precision), a smaller --batch_size, a smaller "
              "--crop_size (with --load_size a little larger, e.g. 143 for 128, and --netG unet_128), "
              "smaller --ngf/--ndf; on a GPU, close other programs using it (nvidia-smi).")


def _say(text: str, file=None) -> None:
    "Print on rank 0 only (every process runs the same code)."
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, file=file or sys.stdout, flush=True)


def _notice(text: str) -> None:
    _say(f"note: {text}", sys.stderr)


# ----------------------------------------------------------------------------------------- options

def _default(name: str) -> str:
    return f" (default: {FRESH_DEFAULTS[name]}; with --continue_train: the checkpoint's)"


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `p2p train` options: named as the official train.py where the same thing exists, with the
    official pix2pix defaults. (An option table: long by nature, one line per option.)"""
    data = parser.add_argument_group("data")
    data.add_argument("--dataroot", required=True,
                      help="dataset folder with train/ (and val/ for validation each epoch); each split holds A|B "
                           "side-by-side images or A/ and B/ folders (e.g. datasets/facades); for --model cycle_gan, "
                           "trainA/ and trainB/ (unpaired)")
    data.add_argument("--direction", default=None, choices=("AtoB", "BtoA"),
                      help="AtoB: left half (A) -> right half (B); BtoA the other way (facades labels -> photo: BtoA)"
                           + _default("direction"))
    data.add_argument("--phase", default=None, help="the split to train on" + _default("phase"))
    data.add_argument("--input_nc", type=int, default=None, choices=(1, 3), help="input channels" + _default("input_nc"))
    data.add_argument("--output_nc", type=int, default=None, choices=(1, 3), help="output channels" + _default("output_nc"))
    data.add_argument("--load_size", type=number(int, 1), default=None, help="resize images to this size" + _default("load_size"))
    data.add_argument("--crop_size", type=number(int, 1), default=None, help="then crop to this size at random" + _default("crop_size"))
    data.add_argument("--preprocess", default=None,
                      help="resize_and_crop | crop | scale_width | scale_width_and_crop | none" + _default("preprocess"))
    data.add_argument("--no_flip", action="store_true", default=None, help="no random horizontal flips")
    data.add_argument("--serial_batches", action="store_true", default=None,
                      help="take pairs in order instead of shuffled")
    data.add_argument("--max_dataset_size", type=count_or_inf, default=None,
                      help="use at most this many training pairs (default: all)")
    data.add_argument("--num_workers", "--num_threads", dest="num_workers", type=number(int, 0), default=None,
                      help="data-loading worker processes (default: 0 on a CPU, 4 on a GPU; --num_threads is the "
                           "official name). The results do not depend on it.")
    data.add_argument("--num_val", type=number(int, 0), default=10,
                      help="validation pairs scored (L1, PSNR on [0, 1]) and shown each epoch, from DATAROOT/val if "
                           "it exists (default: 10; 0: none)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None, choices=MODELS,
                       help="pix2pix (default) | cycle_gan (lesson 10: unpaired trainA/ and trainB/; switches the defaults "
                            "to the official CycleGAN ones: resnet_9blocks, instance norm, no dropout, lsgan, pool 50)")
    model.add_argument("--netG", default=None, help=f"generator: {' | '.join(NETG_CHOICES)}" + _default("netG"))
    model.add_argument("--netD", default=None, help="discriminator: basic (70x70 PatchGAN) | n_layers (PatchGAN with "
                                                    "--n_layers_D) | pixel (1x1) | multiscale (pix2pixHD's: --num_D "
                                                    "PatchGANs at 1, 1/2, 1/4 ... size, with feature matching; lesson "
                                                    "11)" + _default("netD"))
    model.add_argument("--num_D", type=number(int, 1), default=None,
                       help="scales of --netD multiscale (pix2pixHD's name)" + _default("num_D"))
    model.add_argument("--lambda_feat", type=number(float, 0), default=10.0,
                       help="weight of the feature-matching loss with --netD multiscale (pix2pixHD's name; default: 10; "
                            "0: none)")
    model.add_argument("--n_layers_D", type=number(int, 1), default=None, help="PatchGAN depth for --netD n_layers" + _default("n_layers_D"))
    model.add_argument("--ngf", type=number(int, 1), default=None, help="generator filters in the first layer" + _default("ngf"))
    model.add_argument("--ndf", type=number(int, 1), default=None, help="discriminator filters in the first layer" + _default("ndf"))
    model.add_argument("--norm", default=None, choices=("batch", "instance", "none"), help=_default("norm").strip(" ()"))
    model.add_argument("--no_dropout", action="store_true", default=None, help="no dropout in the generator")
    model.add_argument("--init_type", default=None, choices=INIT_TYPES, help="weight init" + _default("init_type"))
    model.add_argument("--init_gain", type=number(float, above=0), default=None, help="scale of the init" + _default("init_gain"))
    model.add_argument("--gan_mode", default=None,
                       help=f"adversarial loss: {' | '.join(GAN_MODES)} (default: vanilla, the paper's; lsgan for cycle_gan)")
    model.add_argument("--lambda_L1", type=number(float, 0), default=100.0, help="weight of the L1 term (default: 100)")
    model.add_argument("--adversarial", default=None, choices=ADVERSARIAL_CHOICES,
                       help="what D judges: cgan = (input, output) pairs, the paper's | gan = the output alone | none = "
                            "no D, L1 alone (lesson 08's ablations; not an official option)" + _default("adversarial"))
    model.add_argument("--pool_size", type=number(int, 0), default=None,
                       help="fakes each discriminator keeps to train on; pix2pix uses none (0), cycle_gan 50" + _default("pool_size"))
    model.add_argument("--lambda_A", type=number(float, 0), default=10.0, help="cycle_gan: weight of the A -> B -> A cycle loss (default: 10)")
    model.add_argument("--lambda_B", type=number(float, 0), default=10.0, help="cycle_gan: weight of the B -> A -> B cycle loss (default: 10)")
    model.add_argument("--lambda_identity", type=number(float, 0), default=0.5,
                       help="cycle_gan: weight of the identity loss, as a share of lambda_A / lambda_B (default: 0.5; 0: none)")

    optim = parser.add_argument_group("optimisation (given with --continue_train, these apply from there on)")
    optim.add_argument("--lr", type=number(float, above=0), default=2e-4, help="Adam learning rate (default: 0.0002)")
    optim.add_argument("--beta1", type=number(float, 0, below=1), default=0.5, help="Adam beta1 (default: 0.5)")
    optim.add_argument("--batch_size", type=number(int, 1), default=None, help="pairs per step and per GPU" + _default("batch_size"))
    optim.add_argument("--n_epochs", type=number(int, 0), default=100, help="epochs at the initial learning rate (default: 100)")
    optim.add_argument("--n_epochs_decay", type=number(int, 0), default=100,
                       help="epochs of linear decay to zero after that (default: 100)")
    optim.add_argument("--lr_policy", default="linear",
                       help="linear (official: constant, then linear decay) | constant (the paper, the Lua code)")
    optim.add_argument("--epoch_count", type=number(int, 1), default=None,
                       help="number of the first epoch of a fresh run (default: 1); a resumed run continues from "
                            "its checkpoint")
    optim.add_argument("--max_steps", type=number(int, 1), default=None,
                       help="stop after this many iterations in all (counted across resumes)")
    optim.add_argument("--seed", type=number(int, 0, maximum=2**63 - 1), default=None, help="seed of every random choice" + _default("seed"))

    hardware = parser.add_argument_group("hardware (the fast settings are picked per device and printed)")
    hardware.add_argument("--device", default=None,
                          help="cuda, cuda:1, mps or cpu (default: CUDA if present, then MPS, then CPU)")
    hardware.add_argument("--gpu_ids", default=None, help="official style: -1 for the CPU, 0 for cuda:0")
    hardware.add_argument("--amp", nargs="?", const="auto", default="auto", choices=AMP_CHOICES,
                          help="mixed precision: auto (default) = bf16 autocast on CPUs with AMX/AVX-512-BF16 and on "
                               "GPUs with bf16, fp16 with loss scaling on older GPUs, float32 elsewhere; off = float32 "
                               "(P2P_BF16=off makes a bf16 CPU count as one without)")
    hardware.add_argument("--channels_last", dest="channels_last", action="store_true", default=None,
                          help="NHWC memory layout (default: where it pays: GPUs and bf16 CPUs)")
    hardware.add_argument("--no_channels_last", dest="channels_last", action="store_false", help="NCHW memory layout")
    hardware.add_argument("--plain", action="store_true",
                          help="the plain step: float32, NCHW, eager, plain Adam (the official recipe's arithmetic)")
    hardware.add_argument("--compile", action="store_true",
                          help="torch.compile G and D (off by default: no faster on the 2-core CPUs measured, a minute "
                               "or more to compile, needs a C++ compiler; measure with benchmarks/train_step.py --compile)")
    hardware.add_argument("--sync_bn", action="store_true",
                          help="with several GPUs, BatchNorm over the whole batch of all GPUs (GPUs only)")

    save = parser.add_argument_group("checkpoints and logs")
    save.add_argument("--name", default="experiment_name", help="the run's name: CHECKPOINTS_DIR/NAME holds its files")
    save.add_argument("--checkpoints_dir", default="./checkpoints", help="default: ./checkpoints")
    save.add_argument("--continue_train", action="store_true",
                      help="resume from CHECKPOINTS_DIR/NAME/{EPOCH}_state.pt, with its architecture and data options")
    save.add_argument("--epoch", default="latest", help="checkpoint to resume: latest (default) or an epoch number")
    save.add_argument("--print_freq", type=number(int, 1), default=100, help="log the losses every N iterations (default: 100)")
    save.add_argument("--save_latest_freq", type=number(int, 1), default=5000,
                      help="save latest_* every N iterations (default: 5000)")
    save.add_argument("--save_epoch_freq", type=number(int, 1), default=5,
                      help="save {epoch}_* every N epochs (default: 5); each full state of the default model is "
                           "about 0.7 GB")
    save.add_argument("--tensorboard", action="store_true",
                      help="also log to CHECKPOINTS_DIR/NAME/tensorboard/: the losses and scores, the sample pictures, "
                           "the options as hyperparameters (needs `pip install tensorboard`)")
    save.add_argument("--no_progress", action="store_true", help="no progress bar")
    save.add_argument("--no_html", action="store_true",
                      help="write no results page (CHECKPOINTS_DIR/NAME/web/index.html: each epoch's validation "
                           "samples and training visuals, newest first, and the loss curves)")
    save.add_argument("--update_html_freq", type=number(int, 1), default=1000,
                      help="save the current training visuals (real_A, fake_B, real_B of the batch) to the results "
                           "page (and to TensorBoard) every N iterations; an epoch keeps its latest (default: 1000)")
    save.add_argument("--display_freq", type=number(int, 1), default=400,
                      help="redraw the results page's curves every N iterations; it is also rewritten at each epoch's "
                           "end (default: 400)")

    ignored = parser.add_argument_group("accepted for compatibility with the official train.py, and ignored")
    for option in ("display_id", "display_ncols", "display_server", "display_env", "display_port",
                   "display_winsize", "wandb_project_name", "suffix", "load_iter", "lr_decay_iters", "dataset_mode"):
        ignored.add_argument(f"--{option}", default=None, help=argparse.SUPPRESS)
    for option in ("use_wandb", "verbose", "save_by_iter"):
        ignored.add_argument(f"--{option}", action="store_true", default=None, help=argparse.SUPPRESS)
    ignored.description = ", ".join(f"--{o}" for o in IGNORED_OPTIONS)
    return parser


def _check_choices(opts: dict) -> None:
    "Options that name something this command does not have: a clear error, before anything runs."
    if opts["netG"] is not None and opts["netG"] not in NETG_CHOICES:
        raise SystemExit(f"--netG {opts['netG']}: unknown generator; choose one of {', '.join(NETG_CHOICES)} "
                         f"(unet_256 for 256 px crops, unet_128 for 128 px; encoder_decoder_*: without skips; "
                         f"resnet_*: CycleGAN's)")
    if opts["netD"] is not None and opts["netD"] not in NETD_CHOICES:
        raise SystemExit(f"--netD {opts['netD']}: unknown discriminator; choose one of {', '.join(NETD_CHOICES)}")
    if opts["gan_mode"] is not None and opts["gan_mode"] not in GAN_MODES:
        raise SystemExit(f"--gan_mode {opts['gan_mode']}: choose one of {', '.join(GAN_MODES)}"
                         + (" (wgangp is not implemented: pix2pix uses vanilla)" if opts["gan_mode"] == "wgangp" else ""))
    if opts["lr_policy"] not in LR_POLICIES:
        raise SystemExit(f"--lr_policy {opts['lr_policy']}: choose one of {', '.join(LR_POLICIES)} "
                         f"(linear = the official default, constant = the paper's)")
    name = opts["name"]
    if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
        raise SystemExit(f"--name {name!r}: the run's folder name inside --checkpoints_dir (not empty, not an absolute "
                         f"path, no '..'); to write elsewhere, give --checkpoints_dir")
    if opts["n_epochs"] + opts["n_epochs_decay"] < 1:
        raise SystemExit("--n_epochs + --n_epochs_decay is 0: nothing to train (the official default is 100 + 100)")


def _check_model(opts: dict) -> None:
    "What each model can train, once its options are complete (fresh, or read from the checkpoint)."
    if opts["model"] == "pix2pix" and opts["pool_size"] != 0:
        raise SystemExit("--pool_size: pix2pix trains without an image pool (0); the pool is CycleGAN's (--model cycle_gan)")
    if opts["model"] != "cycle_gan":
        return
    if not opts["netG"].startswith("resnet_") or opts["netD"] != "basic":
        raise SystemExit(f"--model cycle_gan trains lesson 10's networks: --netG resnet_9blocks or resnet_6blocks and "
                         f"--netD basic (not --netG {opts['netG']} --netD {opts['netD']})")
    if opts["lambda_identity"] > 0 and opts["input_nc"] != opts["output_nc"]:
        raise SystemExit(f"--lambda_identity {opts['lambda_identity']}: the identity loss feeds each generator images of "
                         f"its output domain, so it needs --input_nc = --output_nc (here {opts['input_nc']} and "
                         f"{opts['output_nc']}); give --lambda_identity 0")
    if opts["compile"] or opts["sync_bn"]:
        raise SystemExit("--model cycle_gan: --compile and --sync_bn are pix2pix's only here")


def _check_sizes(opts: dict) -> None:
    multiple = size_multiple_of(opts["netG"])
    if opts["netD"] == "multiscale":  # the coarsest scale sees the crop average-pooled num_D - 1 times
        coarsest = -(-opts["crop_size"] // 2 ** (opts["num_D"] - 1))
        if patch_grid_size(coarsest, opts["n_layers_D"]) < 1:
            raise SystemExit(f"--netD multiscale --num_D {opts['num_D']}: at --crop_size {opts['crop_size']} the coarsest "
                             f"scale sees {coarsest} px, too small for a PatchGAN with {opts['n_layers_D']} layers; "
                             f"give fewer scales (--num_D) or a larger crop")
    if opts["preprocess"] == "resize_and_crop" and opts["crop_size"] > opts["load_size"]:
        raise SystemExit(f"--crop_size {opts['crop_size']} is larger than --load_size {opts['load_size']}: the random "
                         f"crop must fit in the resized image (the paper: 286 -> 256; 143 -> 128 at half size)")
    if opts["preprocess"] in ("resize_and_crop", "crop", "scale_width_and_crop") and opts["crop_size"] % multiple:
        raise SystemExit(f"--crop_size {opts['crop_size']}: --netG {opts['netG']} needs a multiple of {multiple}"
                         + (" (use --netG unet_128 for 128 px)" if opts["crop_size"] % 128 == 0 else ""))


def _device_from_gpu_ids(opts: dict) -> None:
    if opts["gpu_ids"] is None or opts["device"] is not None:
        return
    ids = [i for i in str(opts["gpu_ids"]).split(",") if i.strip()]
    if ids and int(ids[0]) < 0:
        opts["device"] = "cpu"
    elif ids:
        opts["device"] = f"cuda:{int(ids[0])}"
        if len(ids) > 1:
            _notice(f"--gpu_ids {opts['gpu_ids']}: one process uses one GPU; for several, launch with "
                    f"`torchrun --nproc_per_node {len(ids)} -m p2p_lib.cli train ...`")


def options_from_args(args: argparse.Namespace) -> dict:
    """Check the parsed options and turn them into the run's options dict (JSON-able values). On a fresh run the
    options a checkpoint fixes (RESUME_FIXED) get the official defaults; with --continue_train the ones not
    given stay None until `train` reads them from the checkpoint."""
    opts = {k: v for k, v in vars(args).items() if k not in IGNORED_OPTIONS and k not in ("func", "command")}
    for option, why in IGNORED_OPTIONS.items():
        value = getattr(args, option, None)
        expected_mode = "unaligned" if getattr(args, "model", None) == "cycle_gan" else "aligned"
        if value not in (None, False) and not (option == "dataset_mode" and value == expected_mode):
            _notice(f"--{option} is ignored ({why})")
    _check_choices(opts)
    _device_from_gpu_ids(opts)
    if opts["epoch_count"] is not None and opts["continue_train"]:
        _notice("--epoch_count is ignored with --continue_train: the run continues where its checkpoint stopped")
    if opts["epoch_count"] is None:
        opts["epoch_count"] = 1
    if not opts["continue_train"]:
        fresh = {**FRESH_DEFAULTS, **MODEL_DEFAULTS[opts["model"] or "pix2pix"]}
        opts.update({k: fresh[k] for k in RESUME_FIXED if opts[k] is None})
        _model_options(opts)
        _check_sizes(opts)
    opts["dataroot"] = str(opts["dataroot"])
    opts["checkpoints_dir"] = str(opts["checkpoints_dir"])
    return opts


def _model_options(opts: dict) -> None:
    "The options a resumed run may change, defaulted by its model (gan_mode: vanilla, or lsgan for cycle_gan); checked."
    if opts["gan_mode"] is None:
        opts["gan_mode"] = MODEL_DEFAULTS[opts["model"]]["gan_mode"]
    _check_model(opts)


def resumed_options(opts: dict, saved: dict, source: Path) -> dict:
    """The options of a resumed run: the checkpoint's architecture and data options (RESUME_FIXED), an error
    naming any given differently, and everything else as given now (a longer schedule, another lr)."""
    saved_options, saved = saved, {**FRESH_DEFAULTS, **{k: v for k, v in saved.items() if k in RESUME_FIXED}}
    if saved["max_dataset_size"] is None:  # JSON has no infinity: written as null
        saved["max_dataset_size"] = float("inf")
    different = [f"--{k} {saved[k]} (you gave {opts[k]})" for k in RESUME_FIXED
                 if opts[k] is not None and opts[k] != saved[k]]
    if different:
        raise SystemExit(f"--continue_train: {source} was trained with " + ", ".join(different)
                         + ": a resumed run keeps its architecture and data; drop these options to resume it, "
                           "or start a new run under another --name")
    resumed = {**opts, **saved}
    if resumed["gan_mode"] is None:  # not given: the loss it trained with (not the default of a fresh run)
        resumed["gan_mode"] = saved_options.get("gan_mode")
    _model_options(resumed)
    _check_sizes(resumed)
    return resumed


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train pix2pix (the paper's recipe; resumable, multi-GPU with torchrun), or CycleGAN",
        description="Train pix2pix with the official defaults (unet_256, 70x70 PatchGAN, 286->256 jitter, batch 1, "
                    "Adam 2e-4 / 0.5, lambda_L1 100, 100 + 100 epochs) and the device's fast settings. Writes "
                    "CHECKPOINTS_DIR/NAME/: latest_state.pt (resume with --continue_train), latest_net_G.pt (for "
                    "p2p test / translate), loss_log.jsonl (losses, learning rates and, each epoch, val_L1 and "
                    "val_PSNR with pixels on [0, 1], as p2p test reports them), images/ and web/index.html (the "
                    "results page, kept current: open it in a browser while the run trains). "
                    "Example: p2p train --dataroot datasets/facades --name facades_label2photo --direction BtoA. "
                    "--netD multiscale: pix2pixHD's three-scale discriminator with feature matching (lesson 11). "
                    "--model cycle_gan: CycleGAN on unpaired trainA/ and trainB/ with the official CycleGAN defaults "
                    "(lesson 10), writing latest_net_G_A.pt (A -> B) and latest_net_G_B.pt (B -> A).",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------ small helpers

def _rng_state() -> dict:
    np_state = np.random.get_state(legacy=True)
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


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


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _StopFlag:
    """Ctrl-C or SIGTERM (what `timeout`, schedulers and container stops send): the first asks the loop to
    stop after the current step and save; a second Ctrl-C interrupts at once."""

    SIGNALS = {signal.SIGINT: ("Ctrl-C", 130), signal.SIGTERM: ("SIGTERM", 143)}

    def __init__(self):
        self.requested, self.exit_code, self._previous = None, 0, {}

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.exit_code = self.SIGNALS[signum]
        print(f"\n{self.requested}: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    "Whether `flag` is set on any process (every process must stop at the same iteration)."
    if world == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# ------------------------------------------------------------------------------------ checkpoints

def _save(run, opts: dict, run_dir: Path, tag, world: int, main_process: bool) -> None:
    "The TrainingRun as {tag}_state.pt (with every process's random state) and its generator as {tag}_net_G.pt."
    rng = _rng_state()
    per_rank = None
    if world > 1:
        per_rank = [None] * world
        dist.all_gather_object(per_rank, rng)
    if not main_process:
        return
    schedulers = [s.state_dict() for s in run.schedulers]
    obj = {"format": FORMAT, "version": VERSION, "kind": "train_state", "options": jsonable_options(opts),
           "G": _unwrap(run.G).state_dict(), "D": _unwrap(run.D).state_dict(),
           "optimizer_G": run.opt_G.state_dict(), "optimizer_D": run.opt_D.state_dict(),
           "scheduler_G": schedulers[0], "scheduler_D": schedulers[1],
           "epoch": run.epoch, "epoch_iter": run.epoch_iter, "step": run.step,
           "rng": rng, "rng_per_rank": per_rank, "scaler": run.scaler.state_dict() if run.scaler is not None else None,
           "pools": [pool.state_dict() for pool in _image_pools(run)]}
    save_checkpoint(state_path(run_dir, tag), obj)
    for path, checkpoint in _generator_files(run, opts, run_dir, tag):
        save_checkpoint(path, checkpoint)


def _image_pools(run) -> tuple:
    "CycleGAN's two image pools (lesson 10), kept by its discriminators' container; pix2pix has none."
    return getattr(_unwrap(run.D), "pools", ())


def _generator_files(run, opts: dict, run_dir: Path, tag) -> list[tuple[Path, dict]]:
    """The generator-only checkpoints for p2p test / translate: {tag}_net_G.pt, or for cycle_gan {tag}_net_G_A.pt
    (A -> B) and {tag}_net_G_B.pt (B -> A), as the official code names them."""
    if opts["model"] != "cycle_gan":
        return [(generator_path(run_dir, tag), generator_checkpoint(run.G, opts))]
    sides = generator_sides(opts)
    return [(path, generator_checkpoint(getattr(_unwrap(run.G), name), sides[name]))
            for name, path in zip(("G_A", "G_B"), _generator_paths(opts, run_dir, tag))]


def _generator_paths(opts: dict, run_dir: Path, tag) -> list[Path]:
    if opts["model"] != "cycle_gan":
        return [generator_path(run_dir, tag)]
    return [run_dir / f"{tag}_net_G_A.pt", run_dir / f"{tag}_net_G_B.pt"]


def _read_state(opts: dict, run_dir: Path) -> tuple[dict, Path]:
    path = state_path(run_dir, opts["epoch"])
    if not path.exists():
        found = sorted(p.name for p in run_dir.glob("*_state.pt")) if run_dir.is_dir() else []
        raise SystemExit(f"--continue_train: no checkpoint {path}" + (f" (found: {', '.join(found)})" if found else ""))
    try:
        state = load_checkpoint(path, map_location="cpu", kind="train_state")
    except CheckpointError as err:
        raise SystemExit(f"--continue_train: {err}") from None
    newer = _newer_checkpoints(run_dir, str(opts["epoch"]), int(state["step"]))
    if newer:
        fork = Path(opts["checkpoints_dir"]) / f"{opts['name']}_from_{opts['epoch']}"
        raise SystemExit(f"--continue_train --epoch {opts['epoch']}: {run_dir} has newer checkpoints ({', '.join(newer)}), "
                         f"which going on from {path.name} would overwrite. To go on from epoch {opts['epoch']} "
                         f"deliberately, make it a new run: mkdir -p {fork} && cp {path} {fork}/latest_state.pt, then "
                         f"p2p train --name {fork.name} --checkpoints_dir {opts['checkpoints_dir']} --continue_train")
    return state, path


def _newer_checkpoints(run_dir: Path, tag: str, step: int) -> list[str]:
    "The training states in run_dir past `step` (the state of `tag`): latest by its step, numbered ones by epoch."
    if tag == "latest":
        return []
    newer = []
    latest = state_path(run_dir, "latest")
    if latest.is_file():
        try:
            latest_step = int(load_checkpoint(latest, map_location="cpu", kind="train_state")["step"])
        except (CheckpointError, KeyError, ValueError):
            latest_step = None  # unreadable: it may hold newer work; do not overwrite it either
        if latest_step is None or latest_step > step:
            newer.append(f"{latest.name} at iteration {latest_step if latest_step is not None else '?'}")
    if tag.isdigit():
        numbered = {int(p.name.split("_")[0]): p.name for p in run_dir.glob("*_state.pt") if p.name.split("_")[0].isdigit()}
        newer += [name for epoch, name in sorted(numbered.items()) if epoch > int(tag)]
    return newer


def _restore(run, state: dict, opts: dict, rank: int, world: int) -> str:
    "Load a saved TrainingRun into `run`, then apply this command's optimisation options (lr, schedule)."
    try:
        load_state_dict_strict(run.G, state["G"], "generator (G)")
        load_state_dict_strict(run.D, state["D"], "discriminator (D)")
        run.opt_G.load_state_dict(state["optimizer_G"])
        run.opt_D.load_state_dict(state["optimizer_D"])
        run.schedulers[0].load_state_dict(state["scheduler_G"])
        run.schedulers[1].load_state_dict(state["scheduler_D"])
    except (CheckpointError, ValueError, KeyError) as err:
        raise SystemExit(f"--continue_train: {err}") from None
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    pools, saved_pools = _image_pools(run), state.get("pools") or []
    if len(saved_pools) != len(pools):
        raise SystemExit(f"--continue_train: the checkpoint holds {len(saved_pools)} image pools, this run {len(pools)}: "
                         f"the file is damaged or was edited")
    try:
        for pool, saved in zip(pools, saved_pools):
            pool.load_state_dict(saved)
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"--continue_train: the checkpoint's image pools cannot be restored: {err}") from None
    run.step, run.epoch, run.epoch_iter = int(state["step"]), int(state["epoch"]), int(state.get("epoch_iter", 0))
    if state.get("epoch_complete", False):  # checkpoints of older versions counted a finished epoch so
        run.epoch, run.epoch_iter = run.epoch + 1, 0
    per_rank = state.get("rng_per_rank")
    _set_rng_state(per_rank[rank] if world > 1 and per_rank and len(per_rank) == world else state["rng"])
    factor = lr_factor(run.epoch, opts["n_epochs"], opts["n_epochs_decay"], opts["lr_policy"])
    for optimizer, scheduler in zip((run.opt_G, run.opt_D), run.schedulers):
        scheduler.base_lrs = [opts["lr"]] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group.update(initial_lr=opts["lr"], lr=opts["lr"] * factor, betas=(opts["beta1"], group["betas"][1]))
    return f"resumed at epoch {run.epoch}, {run.epoch_iter} iterations into it, {run.step} in all"


# ------------------------------------------------------------------------------------ what the command adds

class _Validation:
    "Val L1/PSNR on [0, 1] and a sample grid in images/, in the paper's test mode (rank 0 only)."

    def __init__(self, opts: dict, run_dir: Path, main_process: bool):
        self.A = self.B = None
        self.run_dir, self.seed = run_dir, opts["seed"]
        root = Path(opts["dataroot"])
        if opts["num_val"] == 0 or not main_process or opts["sync_bn"]:
            return
        val = root / "val"  # either layout: A|B files in it, or A/ and B/ folders
        if not val.is_dir() or not any(p.suffix.lower() in IMG_EXTENSIONS for p in val.rglob("*") if p.is_file()):
            _notice(f"{val} {'has no images' if val.is_dir() else 'does not exist'}: "
                    "training without validation (no val_L1 / val_PSNR in the log)")
            return
        try:
            self.A, self.B = val_tensors(root, opts["direction"], opts["crop_size"], opts["num_val"],
                                         input_nc=opts["input_nc"], output_nc=opts["output_nc"])
        except PairedDataError as err:
            raise SystemExit(f"p2p train: a validation image cannot be used (--num_val 0 trains without "
                             f"validation):\n{err}") from None

    def __call__(self, G: nn.Module, tag: str) -> dict:
        if self.A is None:  # (with SyncBatchNorm, rank 0 alone cannot run G: it would wait for the others)
            return {}
        fake = translate_batch(_unwrap(G), self.A, seed=self.seed)
        from PIL import Image
        path = self.run_dir / "images" / f"{tag}.png"
        try:
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(image_grid(self.A[:4], fake[:4], self.B[:4]).numpy()).save(path)
        except OSError as err:
            raise SaveFailed(f"could not write {path}: {describe_write_error(err, self.run_dir)}") from None
        scores = l1_and_psnr(fake, self.B)
        return {"val_L1": scores["L1"], "val_PSNR": scores["PSNR"]}


@dataclass
class Session:
    "Where a `p2p train` process works: its options, run folder and log, the process count, and whether it writes."
    opts: dict
    run_dir: Path
    log: RunLog
    world: int = 1
    main_process: bool = True


class CommandHooks(Hooks):
    """What `p2p train` adds to lesson 06's loop: loss logs and progress, periodic checkpoints, validation at
    each epoch's end, and stopping on a signal. It remembers what was saved last (for the final save). `watch`
    (p2p_lib.runpage.WatchHooks) runs after it in the same loop: the results page and TensorBoard's pictures."""

    def __init__(self, session: Session, validate, stop, per_epoch: int, on_step=None, watch=None):
        self.opts, self.run_dir, self.log = session.opts, session.run_dir, session.log
        self.world, self.main_process = session.world, session.main_process
        self.validate, self.stop, self.per_epoch, self.on_step, self.watch = validate, stop, per_epoch, on_step, watch
        self.sums = self.epoch_sums = None
        self.since_print, self.epoch_steps, self.timer, self.epoch_start = 0, 0, time.perf_counter(), time.perf_counter()
        self.saved_at, self.inside, self.progress, self.lrs, self.names = None, False, None, {}, None

    def after_step(self, run, losses):
        self.inside = True  # a KeyboardInterrupt from here on leaves a consistent run: it may be saved
        if self.names is None:
            self.names = tuple(losses)  # pix2pix's LOSS_NAMES, G_FM with --netD multiscale, CycleGAN's eight
        values = torch.stack([losses[k].detach().float() for k in self.names])
        self.sums = values if self.sums is None else self.sums + values
        self.epoch_sums = values if self.epoch_sums is None else self.epoch_sums + values
        self.since_print, self.epoch_steps = self.since_print + 1, self.epoch_steps + 1
        self.lrs = {"lr_G": run.opt_G.param_groups[0]["lr"], "lr_D": run.opt_D.param_groups[0]["lr"]}
        self._progress(run)
        if self.on_step is not None:
            self.on_step(run.step, losses)
        if run.step % self.opts["print_freq"] == 0:
            self._print_losses(run)
        if run.step % self.opts["save_latest_freq"] == 0:
            self.save(run, "latest")
        stop = _any_rank(self.stop.requested is not None, self.world, next(run.G.parameters()).device)
        self.inside = False
        return stop

    def after_epoch(self, run, epoch):
        scores = self.validate(run.G, f"epoch{epoch:03d}")
        count = max(self.epoch_steps, 1)  # the steps this process made in the epoch (a resumed one made fewer)
        names = self.names or LOSS_NAMES
        means = (self.epoch_sums / count).tolist() if self.epoch_sums is not None else [float("nan")] * len(names)
        record = {"type": "epoch", "epoch": epoch, "step": run.step, **dict(zip(names, means)), **self.lrs,
                  **scores, "seconds": time.perf_counter() - self.epoch_start}
        self.log.write(record)
        shown = "".join(f", {k} {v:.4g}" for k, v in scores.items())
        _say(f"end of epoch {epoch}/{self.opts['n_epochs'] + self.opts['n_epochs_decay']}: {run.step} iterations, "
             f"{record['seconds']:.0f} s{shown}, lr {self.lrs.get('lr_G', 0):.2e}")
        self.epoch_sums, self.epoch_steps, self.epoch_start = None, 0, time.perf_counter()
        self._close_progress()
        if epoch % self.opts["save_epoch_freq"] == 0 or epoch == self.opts["n_epochs"] + self.opts["n_epochs_decay"]:
            self.save(run, "latest")
            self.save(run, epoch)

    def save(self, run, tag) -> None:
        "Save `run` as `tag`; SaveFailed (saying what is kept) if the files cannot be written."
        try:
            _save(run, self.opts, self.run_dir, tag, self.world, self.main_process)
        except OSError as err:
            kept = (f"the checkpoint of iteration {self.saved_at} ({state_path(self.run_dir, 'latest')}) is intact: "
                    f"make room and resume with --continue_train" if self.saved_at is not None else
                    "nothing was saved in this run" + (" (an earlier one's checkpoint is intact)" if self.opts["continue_train"] else ""))
            raise SaveFailed(f"could not save {state_path(self.run_dir, tag)}: {describe_write_error(err, self.run_dir)}; "
                             f"a save needs about {megabytes(checkpoint_bytes(_unwrap(run.G), _unwrap(run.D)))}. "
                             f"Training stopped at iteration {run.step}; {kept}") from None
        self.saved_at = run.step

    def _print_losses(self, run) -> None:
        mean = (self.sums / self.since_print).tolist()
        self.log.write({"type": "train", "epoch": run.epoch, "epoch_iter": run.epoch_iter, "step": run.step,
                        **dict(zip(self.names, mean)), **self.lrs,
                        "it_per_s": self.since_print / (time.perf_counter() - self.timer)})
        text = " ".join(f"{k}: {v:.3f}" for k, v in zip(self.names, mean))
        if self.progress is not None:
            self.progress.set_postfix_str(text)
        else:
            _say(f"(epoch: {run.epoch}, iters: {run.epoch_iter}, step: {run.step}) {text}")
        self.sums, self.since_print, self.timer = None, 0, time.perf_counter()

    def _progress(self, run) -> None:
        "A terminal progress bar per epoch (tqdm), rank 0 only, unless --no_progress."
        if not self.main_process or self.opts["no_progress"]:
            return
        if self.progress is None:
            from tqdm import tqdm
            self.progress = tqdm(total=self.per_epoch, initial=run.epoch_iter - 1, desc=f"epoch {run.epoch}",
                                 unit="it", dynamic_ncols=True, leave=False, file=sys.stderr)
        self.progress.update(1)

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None


# --------------------------------------------------------------------------------------- training

def _named_device(opts: dict) -> torch.device:
    try:
        return pick_device(opts["device"])
    except ValueError as err:
        raise SystemExit(f"--device: {err}" + (f" (from --gpu_ids {opts['gpu_ids']})" if opts.get("gpu_ids") else "")) from None


def _distributed_device(opts: dict) -> tuple[torch.device, int, int]:
    "(device, rank, world): under torchrun (WORLD_SIZE > 1) join the process group, one GPU per process."
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _named_device(opts), rank, world
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = opts["device"] is None and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if use_cuda else _named_device(opts)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def _training_pairs(opts: dict) -> SeededPairs:
    from p2p_lib.data import PairedImageDataset  # lesson 05
    try:
        if opts["model"] == "cycle_gan":  # lesson 10's unaligned data; each B partner is drawn inside SeededPairs' seed
            return SeededPairs(unpaired_training_data(opts), opts["seed"])
        dataset = PairedImageDataset(opts["dataroot"], opts["phase"], direction=opts["direction"],
                                     load_size=opts["load_size"], crop_size=opts["crop_size"],
                                     preprocess=opts["preprocess"], no_flip=opts["no_flip"],
                                     input_nc=opts["input_nc"], output_nc=opts["output_nc"],
                                     max_dataset_size=opts["max_dataset_size"], multiple=size_multiple_of(opts["netG"]))
    except (PairedDataError, ValueError) as err:
        raise SystemExit(f"cannot read the training data: {err}") from None
    return SeededPairs(dataset, opts["seed"])


def _speed(opts: dict, device: torch.device):
    if opts["sync_bn"] and device.type != "cuda":
        raise SystemExit("--sync_bn: SyncBatchNorm runs only on CUDA GPUs; drop --sync_bn on the CPU")
    try:
        return pick_speed(device, opts["amp"], opts["channels_last"], opts["plain"], opts.get("compile", False))
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _wrap_distributed(run, opts: dict, device: torch.device, world: int) -> None:
    if world == 1:
        if opts["sync_bn"]:
            _notice("--sync_bn has no effect with one process")
        return
    if opts["sync_bn"]:
        run.G, run.D = nn.SyncBatchNorm.convert_sync_batchnorm(run.G), nn.SyncBatchNorm.convert_sync_batchnorm(run.D)
    ids = [device.index] if device.type == "cuda" else None
    run.G = nn.parallel.DistributedDataParallel(run.G, device_ids=ids)
    run.D = nn.parallel.DistributedDataParallel(run.D, device_ids=ids)


def train(opts: dict, on_step=None) -> dict:
    """Train with the options dict of `options_from_args` (see `p2p train --help`).

    `on_step(step, losses)` is called after every iteration (tests use it). Returns {"status": "done" |
    "interrupted" | "nan" | "oom", "step", "epoch", "run_dir", "exit_code"}."""
    device, rank, world = _distributed_device(opts)
    try:
        return _train(opts, on_step, device, rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _builders(opts: dict):
    "The model's (G, D) builders without initialisation: the shapes a resumed checkpoint must have."
    if opts["model"] == "cycle_gan":
        return (lambda o: build_cycle_generators(o, init=False)), (lambda o: build_cycle_discriminators(o, init=False))
    return build_generator, (lambda options: define_D(options, init=False))


def _build_run(opts: dict, device: torch.device, speed, world: int):
    "A fresh TrainingRun of the model: lesson 06's build_training, or lesson 10's CycleGAN in the same shape."
    if opts["model"] != "cycle_gan":
        return build_training(opts, device, speed)
    if world > 1:
        raise SystemExit("--model cycle_gan trains in one process here (no torchrun): its four networks share "
                         "two optimizers that DistributedDataParallel would each need to wrap")
    if speed.grad_scaler:  # cyclegan_step has no loss scaling: float16 would lose small gradients
        _notice("--model cycle_gan: float32 instead of float16 mixed precision (this GPU has no bfloat16)")
        speed = pick_speed(device, "off", speed.channels_last, False, False)
    speed = dataclasses.replace(speed, fused_adam=False)  # lesson 10's build_cyclegan makes plain Adams
    try:
        return build_cyclegan_training(opts, device, speed)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _step(opts: dict):
    "fit's step: pix2pix's train_step (None: fit's default), lesson 11's with --netD multiscale, lesson 10's CycleGAN."
    if opts["model"] == "cycle_gan":
        return cyclegan_run_step(opts["lambda_A"], opts["lambda_B"], opts["lambda_identity"])
    if opts["netD"] == "multiscale":
        from p2p_lib.multiscale import multiscale_step
        return multiscale_step(opts["lambda_feat"])
    return None


def _prepare(opts: dict, device: torch.device, rank: int, world: int):
    "Options (from the checkpoint when resuming), data and the TrainingRun, restored if resuming."
    run_dir = Path(opts["checkpoints_dir"]) / opts["name"]
    state = resumed = None
    if opts["continue_train"]:
        state, source = _read_state(opts, run_dir)
        opts = resumed_options(opts, state["options"], source)
        try:  # before anything is built: a damaged or edited file must not allocate what its options ask for
            build_G, build_D = _builders(opts)
            check_architecture(opts, state.get("G"), f"generator (G in {source.name})", build_G)
            check_architecture(opts, state.get("D"), f"discriminator (D in {source.name})", build_D)
        except CheckpointError as err:
            raise SystemExit(f"--continue_train: {err}") from None
        opts["epoch_count"] = state["options"].get("epoch_count", 1)
    pairs = _training_pairs(opts)
    run = _build_run(opts, device, _speed(opts, device), world)
    if state is not None:
        resumed = _restore(run, state, opts, rank, world)
    elif world > 1:
        torch.manual_seed(opts["seed"] + rank)  # each GPU its own dropout masks (the weights come from rank 0)
    _wrap_distributed(run, opts, device, world)
    return opts, run_dir, pairs, run, resumed


@contextmanager
def _claimed(run_dir: Path, run, opts: dict, main_process: bool):
    """Rank 0 holds the run folder's lock while it trains (a second run with the same --name is refused),
    removes what a killed save left behind, and checks that the disk can hold a checkpoint, all before
    the first step."""
    with ExitStack() as held:
        if main_process:
            try:
                held.enter_context(RunFolderLock(run_dir, f"p2p train --name {opts['name']} "
                                                          f"--checkpoints_dir {opts['checkpoints_dir']}"))
                _prepare_run_folder(run_dir, run, opts)
            except RunFolderError as err:
                raise SystemExit(f"p2p train: {err}") from None
            except OSError as err:  # opt.json could not be written
                raise SystemExit(f"p2p train: cannot write to {run_dir}: {describe_write_error(err, run_dir)}") from None
        yield


def _prepare_run_folder(run_dir: Path, run, opts: dict) -> None:
    "With the lock held: remove a killed save's leftovers, check the free space, write opt.json."
    removed = remove_leftover_temporaries(run_dir)
    if removed:
        _notice(f"removed {len(removed)} temporary file(s) an interrupted save left in {run_dir}: " + ", ".join(removed))
    check_free_space(run_dir, checkpoint_bytes(_unwrap(run.G), _unwrap(run.D)))
    (run_dir / "opt.json").write_text(json.dumps(jsonable_options(opts), indent=2) + "\n")


def _train(opts, on_step, device, rank, world) -> dict:
    opts, run_dir, pairs, run, resumed = _prepare(opts, device, rank, world)
    with _claimed(run_dir, run, opts, rank == 0):
        return _train_claimed(opts, on_step, run_dir, pairs, run, resumed, rank, world, device)


def _train_claimed(opts, on_step, run_dir, pairs, run, resumed, rank, world, device) -> dict:
    main_process = rank == 0
    log = RunLog(run_dir, opts, main_process)
    per_epoch = steps_per_epoch(pairs, opts["batch_size"], world)
    n_G, n_D = (sum(p.numel() for p in _unwrap(net).parameters()) / 1e6 for net in (run.G, run.D))
    if opts["model"] == "cycle_gan":
        sizes = {side: len(files) for side, files in pairs.dataset.files.items()}
        what = (f"cycle_gan: {sizes['A']} A and {sizes['B']} B images (unpaired), {per_epoch} iterations per epoch; "
                f"G_A + G_B {opts['netG']} {n_G:.2f} M parameters, D_A + D_B {opts['netD']} {n_D:.2f} M")
    else:
        scales = f" ({opts['num_D']} scales, feature matching x {opts['lambda_feat']})" if opts["netD"] == "multiscale" else ""
        what = (f"{len(pairs)} training pairs, {per_epoch} iterations per epoch"
                f"{f' per process ({world} processes)' if world > 1 else ''}; G {opts['netG']} {n_G:.2f} M parameters, "
                f"D {opts['netD']}{scales} {n_D:.2f} M")
    _say(f"p2p train: {what}; {run.speed.describe()}; writing to {run_dir}")
    if resumed:
        _say(resumed)
        log.write({"type": "resume", "step": run.step, "epoch": run.epoch, "lr": opts["lr"],
                   "n_epochs": opts["n_epochs"], "n_epochs_decay": opts["n_epochs_decay"]})
    with _StopFlag() as stop:
        session = Session(opts, run_dir, log, world, main_process)
        watch = WatchHooks(opts, run_dir, log, main_process, run)  # web/index.html and TensorBoard's pictures
        hooks = CommandHooks(session, _Validation(opts, run_dir, main_process), stop, per_epoch, on_step, watch)
        try:
            return _loop(opts, run, pairs, hooks, device, rank, world)
        finally:
            hooks._close_progress()
            watch.finish(run)
            log.close()


def _loop(opts, run, pairs, hooks: CommandHooks, device, rank, world) -> dict:
    "Run lesson 06's fit, then save where it stopped; turn divergence, interrupts and OOM into messages."
    main_process, run_dir = rank == 0, hooks.run_dir
    outcome = {"status": "done", "exit_code": 0}
    try:
        ended = fit(run, pairs, opts["n_epochs"], opts["n_epochs_decay"], opts["batch_size"],
                    step=hooks.watch.watching(_step(opts)), shuffle=not opts["serial_batches"],
                    max_steps=opts["max_steps"], hooks=[hooks, hooks.watch],  # watch after: it shows what hooks wrote
                    num_workers=_num_workers(opts, device), rank=rank, world=world,
                    check_every=1 if device.type == "cpu" and world == 1 else opts["print_freq"])
        if hooks.saved_at != run.step and run.step > 0:
            hooks.save(run, "latest")
        if ended == "stopped":
            outcome = {"status": "interrupted", "exit_code": hooks.stop.exit_code or 130}
            _say(f"stopped at iteration {run.step} ({hooks.stop.requested}); saved {state_path(run_dir, 'latest')}; "
                 f"resume with the same command and --continue_train")
        else:
            _final_validation(run, hooks)
            made = " and ".join(str(path) for path in _generator_paths(opts, run_dir, "latest"))
            _say(f"done: {run.step} iterations; the generator{'s are' if ' and ' in made else ' is'} in {made}")
    except TrainingDiverged as err:
        outcome = {"status": "nan", "exit_code": 1}
        kept = (f"the last good checkpoint, {state_path(run_dir, 'latest')} (iteration {hooks.saved_at}), is kept"
                if hooks.saved_at is not None else "nothing was saved in this run")
        _say(f"\nTraining stopped: {err}. The run diverged; {kept}. Try a lower --lr, --gan_mode lsgan, "
             f"or check the data (`p2p check-data`).", sys.stderr)
    except KeyboardInterrupt:
        outcome = _save_on_interrupt(run, hooks, world)
    except SaveFailed as err:
        outcome = {"status": "save_failed", "exit_code": 1}
        _say(f"\np2p train: {err}", sys.stderr)
    except PairedDataError as err:
        outcome = _stop_on_bad_data(run, hooks, err)
    except Exception as err:
        if not _is_oom(err):
            raise
        outcome = {"status": "oom", "exit_code": 1}
        _say(f"\n{OOM_ADVICE}\n({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})", sys.stderr)
    return {**outcome, "step": run.step, "epoch": run.epoch, "run_dir": str(run_dir)}


def _data_error_text(err: PairedDataError) -> str:
    "The dataset's own message, also when a DataLoader worker re-raised it with its traceback inside."
    text = str(err)
    if "Original Traceback" in text and "PairedDataError: " in text:
        text = text.rsplit("PairedDataError: ", 1)[1].strip()
    return text


def _stop_on_bad_data(run, hooks: CommandHooks, err: PairedDataError) -> dict:
    "A training image that cannot be used: keep the steps made (the run is between two steps), say which file."
    saved = ""
    if run.step > 0 and hooks.saved_at != run.step and hooks.world == 1:
        try:
            hooks.save(run, "latest")
            saved = f" Saved {state_path(hooks.run_dir, 'latest')} at iteration {run.step}: fix or remove the file, then resume with --continue_train."
        except SaveFailed as failed:
            saved = f" And {failed}."
    _say(f"\np2p train: stopped at iteration {run.step}: a training image cannot be used:\n{_data_error_text(err)}{saved}",
         sys.stderr)
    return {"status": "bad_data", "exit_code": 1}


def _save_on_interrupt(run, hooks: CommandHooks, world: int) -> dict:
    "A second Ctrl-C (or one outside a step) stops at once: save if the run is consistent, and say what is kept."
    run_dir = hooks.run_dir
    if hooks.inside and world == 1:
        try:
            hooks.save(run, "latest")
        except SaveFailed as err:
            _say(f"\ninterrupted, and {err}", sys.stderr)
            return {"status": "save_failed", "exit_code": 1}
        _say(f"\ninterrupted: saved {state_path(run_dir, 'latest')} at iteration {run.step}; "
             f"resume with the same command and --continue_train")
    else:
        _say(f"\ninterrupted {'inside an iteration' if world == 1 else 'while other processes run'}: not "
             f"saving; the last checkpoint ({'iteration ' + str(hooks.saved_at) if hooks.saved_at else 'none in this run'}) is kept")
    return {"status": "interrupted", "exit_code": 130}


def _num_workers(opts: dict, device: torch.device) -> int:
    return opts["num_workers"] if opts["num_workers"] is not None else (0 if device.type == "cpu" else 4)


def _final_validation(run, hooks: CommandHooks) -> None:
    "Validate where the run ended, unless an epoch's end just did."
    if run.epoch_iter == 0 or run.step == 0:
        return
    scores = hooks.validate(run.G, f"step{run.step:06d}")
    if scores:
        hooks.log.write({"type": "final", "epoch": run.epoch, "step": run.step, **scores, **hooks.lrs})
        _say("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))


def run(args: argparse.Namespace) -> int:
    """The `p2p train` command: exit status 0 when done, 130 when interrupted (143 on SIGTERM), 1 on
    divergence or OOM."""
    opts = options_from_args(args)
    return train(opts)["exit_code"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2p_lib.engine", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
