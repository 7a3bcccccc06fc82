"""How fast is lesson 06's training step in a few settings, on this machine? (not part of the tests)

    .venv/bin/python benchmarks/bench_train_step.py                  # unet_128, ngf/ndf 32, 128 px, CPU/GPU
    .venv/bin/python benchmarks/bench_train_step.py --ngf 64 --ndf 64 --netG unet_256 --size 256

Each setting trains a few warm-up steps, then is timed over several rounds (the best round counts,
which filters out moments when other programs took the CPU). Every number is also given as a ratio
to the baseline (float32, default memory layout, batch 1) measured in the same process, so that
ratios stay comparable even when the machine is busy; absolute times are only comparable on the same
machine at the same load. Speed is reported as iterations/s and as images/s (a batch of 4 does four
images per iteration).
"""
from __future__ import annotations

import argparse
import time

import torch

from p2p_lib.checkpoint import NETG_NUM_DOWNS, build_generator
from p2p_lib.losses import GANLoss
from p2p_lib.patchgan import PatchDiscriminator
from p2p_lib.train import make_optimizers, pick_device, train_step


def setup(args, device, batch_size=1, channels_last=False, fused=None):
    torch.manual_seed(0)
    G = build_generator({"netG": args.netG, "ngf": args.ngf, "norm": "batch", "no_dropout": False,
                         "input_nc": 3, "output_nc": 3}).to(device)
    D = PatchDiscriminator(6, args.ndf).to(device)
    A = torch.rand(batch_size, 3, args.size, args.size, device=device) * 2 - 1
    B = torch.rand(batch_size, 3, args.size, args.size, device=device) * 2 - 1
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        A, B = A.contiguous(memory_format=torch.channels_last), B.contiguous(memory_format=torch.channels_last)
    opt_G, opt_D = make_optimizers(G, D, fused=fused)
    return G, D, opt_G, opt_D, A, B


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netG", default="unet_128", choices=sorted(NETG_NUM_DOWNS))
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    half = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    settings = [
        ("baseline: float32, batch 1", dict()),
        ("Adam without the fused kernel", dict(fused=False)),
        ("channels_last", dict(channels_last=True)),
        (f"{str(half).replace('torch.', '')} autocast", dict(amp=half)),
        ("batch 4", dict(batch_size=4)),
        (f"batch 4, channels_last, {str(half).replace('torch.', '')}",
         dict(batch_size=4, channels_last=True, amp=half)),
    ]
    print(f"{args.netG}, ngf {args.ngf}, ndf {args.ndf}, {args.size} px on {device} "
          f"({torch.get_num_threads()} CPU threads), PyTorch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    runs = []
    for label, options in settings:
        amp = options.pop("amp", None)
        batch = options.get("batch_size", 1)
        G, D, opt_G, opt_D, A, B = setup(args, device, **options)
        scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        loss = GANLoss().to(device)
        for _ in range(2):
            train_step(G, D, opt_G, opt_D, A, B, loss, amp_dtype=amp, scaler=scaler)
        runs.append((label, batch, G, D, opt_G, opt_D, A, B, loss, amp, scaler))
    best = [float("inf")] * len(runs)
    for _ in range(args.rounds):  # interleaved rounds: a busy moment hits every setting, not one
        for i, (label, batch, G, D, opt_G, opt_D, A, B, loss, amp, scaler) in enumerate(runs):
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(G, D, opt_G, opt_D, A, B, loss, amp_dtype=amp, scaler=scaler)
            sync(device)
            best[i] = min(best[i], (time.perf_counter() - start) / args.steps)
    base = best[0]
    print(f"{'setting':44s} {'it/s':>7s} {'img/s':>7s} {'it/s ratio':>11s} {'img/s ratio':>12s}")
    for (label, batch, *_), seconds in zip(runs, best):
        print(f"{label:44s} {1 / seconds:7.2f} {batch / seconds:7.2f} {base / seconds:10.2f}x {batch * base / seconds:11.2f}x")


if __name__ == "__main__":
    main()
