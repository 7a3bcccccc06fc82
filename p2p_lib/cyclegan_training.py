"""What `p2p train --model cycle_gan` trains (hand-written plumbing): lesson 10's CycleGAN as a lesson 06 TrainingRun.

The networks, the pools and the step are lesson 10's (`p2p_lib.cyclegan`: build_cyclegan, cyclegan_step); the loop
is lesson 06's `fit` with `cyclegan_step` as its step. Two containers make the four networks fit the run's two slots,
as the official code's two optimizers already group them: `run.G` holds G_A and G_B (one Adam over both), `run.D`
holds D_A and D_B (one Adam over both) and the two image pools. So the checkpoints, the exact resume and the guard
rails of `p2p train` serve CycleGAN unchanged; the engine saves the pools beside the weights.
"""
from __future__ import annotations

import torch
from torch import nn

from p2p_lib.cyclegan import CycleGAN, ImagePool, UnpairedImageDataset, build_cyclegan, cyclegan_step
from p2p_lib.device import SpeedSettings
from p2p_lib.imagefiles import PairedDataError
from p2p_lib.losses import GANLoss
from p2p_lib.networks import RESNET_BLOCKS, define_G, init_net
from p2p_lib.patchgan import PatchDiscriminator
from p2p_lib.train import TrainingRun, _autocast, make_scheduler

__all__ = ["CYCLE_GAN_DEFAULTS", "CycleGenerators", "CycleDiscriminators", "build_cyclegan_training",
           "cyclegan_run_step", "generator_sides", "unpaired_training_data", "build_cycle_generators",
           "build_cycle_discriminators"]

# The official cycle_gan_model.py's changes to the defaults (its modify_commandline_options, and its train options).
CYCLE_GAN_DEFAULTS = {"netG": "resnet_9blocks", "norm": "instance", "no_dropout": True, "gan_mode": "lsgan",
                      "pool_size": 50, "lambda_A": 10.0, "lambda_B": 10.0, "lambda_identity": 0.5}


class CycleGenerators(nn.Module):
    "G_A: A -> B and G_B: B -> A (one optimizer over both, as official). forward is G_A: what validation runs."

    def __init__(self, G_A: nn.Module, G_B: nn.Module):
        super().__init__()
        self.G_A, self.G_B = G_A, G_B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.G_A(x)


class CycleDiscriminators(nn.Module):
    """D_A judges B images (G_A's outputs), D_B judges A images (one optimizer over both). Each trains on its
    pool's history of fakes: pool_fake_B feeds D_A, pool_fake_A feeds D_B. The pools are not in the state dict
    (they hold images and an RNG, not weights): the engine checkpoints `pools` beside it."""

    def __init__(self, D_A: nn.Module, D_B: nn.Module, pool_fake_A: ImagePool, pool_fake_B: ImagePool):
        super().__init__()
        self.D_A, self.D_B = D_A, D_B
        self.pools = (pool_fake_A, pool_fake_B)

    def forward(self, x: torch.Tensor):
        raise RuntimeError("CycleDiscriminators holds two discriminators: call D_A or D_B")


def _resnet_blocks(opts: dict) -> int:
    if opts["netG"] not in RESNET_BLOCKS:
        raise ValueError(f"--model cycle_gan trains lesson 10's ResNet generators: --netG {' or '.join(RESNET_BLOCKS)} "
                         f"(not {opts['netG']})")
    return RESNET_BLOCKS[opts["netG"]]


def generator_sides(opts: dict) -> dict[str, dict]:
    """The options of each generator as `p2p translate` / `p2p test` read them: G_A maps the run's A images to B
    (input_nc -> output_nc, in the run's direction), G_B the other way."""
    flipped = {"AtoB": "BtoA", "BtoA": "AtoB"}[opts["direction"]]
    return {"G_A": dict(opts),
            "G_B": {**opts, "input_nc": opts["output_nc"], "output_nc": opts["input_nc"], "direction": flipped}}


def build_cycle_generators(opts: dict, init: bool = True) -> CycleGenerators:
    "Both generators from the options, by p2p_lib.networks.define_G (shapes for a resumed checkpoint's check)."
    sides = generator_sides(opts)
    return CycleGenerators(define_G(sides["G_A"], init), define_G(sides["G_B"], init))


def build_cycle_discriminators(opts: dict, init: bool = True) -> CycleDiscriminators:
    "Both unconditional 70x70 PatchGANs (shapes only: the pools are empty). `init` is accepted for the same call."
    D_A = PatchDiscriminator(opts["output_nc"], opts["ndf"], 3, opts["norm"])
    D_B = PatchDiscriminator(opts["input_nc"], opts["ndf"], 3, opts["norm"])
    return CycleDiscriminators(D_A, D_B, ImagePool(opts["pool_size"]), ImagePool(opts["pool_size"]))


def build_cyclegan_training(opts: dict, device: torch.device, speed: SpeedSettings) -> TrainingRun:
    """A fresh CycleGAN run: lesson 10's build_cyclegan (seeded by --seed: the same options, the same weights and
    pools as the lesson's), on `device`, with lesson 06's per-epoch schedules, as a TrainingRun."""
    if opts["netD"] != "basic" or opts["n_layers_D"] != 3:
        raise ValueError("--model cycle_gan trains lesson 10's unconditional 70x70 PatchGANs: --netD basic")
    m = build_cyclegan(ngf=opts["ngf"], ndf=opts["ndf"], n_blocks=_resnet_blocks(opts), norm=opts["norm"],
                       input_nc=opts["input_nc"], output_nc=opts["output_nc"], lr=opts["lr"], beta1=opts["beta1"],
                       pool_size=opts["pool_size"], seed=opts["seed"])
    if (opts["init_type"], opts["init_gain"]) != ("normal", 0.02):  # build_cyclegan already drew N(0, 0.02)
        for net in (m.G_A, m.G_B, m.D_A, m.D_B):
            init_net(net, opts["init_type"], opts["init_gain"])
    G, D = CycleGenerators(m.G_A, m.G_B).to(device), CycleDiscriminators(m.D_A, m.D_B, m.pool_fake_A, m.pool_fake_B).to(device)
    if speed.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    first = opts.get("epoch_count") or 1
    schedulers = [make_scheduler(opt, opts["n_epochs"], opts["n_epochs_decay"], opts["lr_policy"], epoch_count=first)
                  for opt in (m.opt_G, m.opt_D)]  # the optimizers hold the same parameter objects, now on `device`
    return TrainingRun(G, D, m.opt_G, m.opt_D, schedulers, GANLoss(opts["gan_mode"]).to(device), 0.0, speed, None,
                       "gan", epoch=first)


def cyclegan_run_step(lambda_A: float = 10.0, lambda_B: float = 10.0, lambda_identity: float = 0.5):
    "A step for lesson 06's fit: lesson 10's cyclegan_step on the run's four networks, two optimizers and pools."
    def step(run: TrainingRun, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        G, D = run.G, run.D
        model = CycleGAN(G.G_A, G.G_B, D.D_A, D.D_B, run.opt_G, run.opt_D, *D.pools)
        with _autocast(real_A.device.type, run.speed.amp_dtype):  # bf16 where the device has it; no fp16 scaler
            return cyclegan_step(model, real_A, real_B, run.gan_loss, lambda_A, lambda_B, lambda_identity)
    return step


def unpaired_training_data(opts: dict) -> UnpairedImageDataset:
    """The official unaligned data: DATAROOT/{phase}A and {phase}B; --direction BtoA swaps the two sides, and
    --max_dataset_size keeps the first N images of each."""
    dataset = UnpairedImageDataset(opts["dataroot"], opts["phase"], load_size=opts["load_size"],
                                   crop_size=opts["crop_size"], preprocess=opts["preprocess"], no_flip=opts["no_flip"],
                                   input_nc=opts["input_nc"], output_nc=opts["output_nc"])
    if opts["direction"] == "BtoA":  # the A side of the run is the B folder; channels follow the run's A and B
        dataset.files = {"A": dataset.files["B"], "B": dataset.files["A"]}
    limit = opts["max_dataset_size"]
    if limit != float("inf"):
        dataset.files = {side: files[:int(limit)] for side, files in dataset.files.items()}
    if any(not files for files in dataset.files.values()):
        raise PairedDataError(f"--max_dataset_size {limit}: no images left", opts["dataroot"])
    return dataset
