"""One pix2pix training step, plain against the default fast step, on this machine (not part of the tests).

    .venv/bin/python benchmarks/train_step.py                          # 256 px, batch 1, unet_256, ngf/ndf 64
    .venv/bin/python benchmarks/train_step.py --size 128 --ngf 32 --ndf 32   # the course model's size
    .venv/bin/python benchmarks/train_step.py --amp bf16 --json step.json    # force bf16, keep the numbers

What it measures: the time of one call of lesson 06's `train_step` (G forward, one D update, one G
update, 70x70 PatchGAN D) in two variants, after a few warm-up steps:
- plain: `pick_speed(device, plain=True)`: float32, NCHW, eager, Adam without the fused kernel, no
  compile: the official recipe's arithmetic;
- fast: `pick_speed(device)` (or `--amp ...`): whatever the library picks on this machine, e.g. bf16
  autocast + channels_last + fused Adam on a CPU with AMX, float32 + fused Adam on an AVX2 CPU.
Each variant lives in its own worker process (so that its peak memory, RSS on a CPU, is its own) and
the parent drives both round by round, alternately: a round is K steps of one variant, then K of the
other, so a moment when the machine is busy hits both alike. The table gives the MEDIAN round of each
(and the best round, for reference), images/s (batch / s per iteration) and peak memory.

How to read it: the last line, `speedup_vs_plain_fp32: X.XXx`, is plain s/iter divided by fast s/iter
(medians) measured in the same run: > 1 means the default step is faster. Ratios from one run are
comparable across machines; absolute times only on the same machine at the same load.

Agreement: from one seed (same initial weights, same random input pairs, dropout seeded alike before
every step, its masks drawn in NCHW order in both) each variant trains 3 steps, and after each step G
translates one fixed input (train mode, as at the paper's test time, with the variant's own autocast).
It prints the max abs difference of the two outputs (on [-1, 1]) after every step; after the last it must
be within 0.05 when both run float32 and within 0.15 when the fast one uses bf16/fp16 autocast. Not
tighter, because Adam amplifies rounding: its first update is lr * sign(gradient) for every weight, and
with beta1 = 0.5 the next ones divide nearly cancelling averages, so weights whose gradient is near zero
move differently after a 1-ulp change. Measured at 256 px, ngf/ndf 64: float32 with fused against plain
Adam 1.1e-5, 2.3e-3, 9.9e-3 after steps 1, 2, 3 (the plain step is bit-for-bit repeatable); bf16
(emulated on AVX2) 0.01 for the forward alone and 0.11 after 3 steps (0.076 at 128 px, ngf/ndf 32). A
real fault is larger: skipping two of the three updates moves the output by 0.33 (0.21 at 128 px).

Targets (the issue's) at 256x256, batch 1, unet_256 + 70x70 PatchGAN, ngf/ndf 64, on a CPU:
>= 2.0x with AMX, >= 1.5x with AVX-512-BF16 but no AMX, >= 1.3x with AVX-512 only; AVX2 only: report.
The target for the detected CPU class (or "report only") is printed just above the speedup line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from p2p_lib.device import (AMP_CHOICES, SpeedSettings, cpu_capabilities, cpu_has_fast_bf16, cpu_model, pick_device,
                            pick_speed)
from p2p_lib.losses import GANLoss
from p2p_lib.networks import NETG_NUM_DOWNS, define_D, define_G, size_multiple_of
from p2p_lib.train import make_optimizers, train_step, translate_batch

VARIANTS = ("plain", "fast")
NETG_FOR_SIZE = {256: "unet_256", 128: "unet_128"}
TARGETS = {"AMX": 2.0, "AVX-512-BF16": 1.5, "AVX-512": 1.3}  # speedup goals per CPU class; others: report only
TARGET_CONFIG = {"size": 256, "batch": 1, "netG": "unet_256", "ngf": 64, "ndf": 64}
# On G's [-1, 1] outputs after 3 steps (the module docstring gives the measurements behind them).
FLOAT32_TOLERANCE = 0.05   # same arithmetic, other rounding (fused Adam), amplified by Adam
AUTOCAST_TOLERANCE = 0.15  # bf16/fp16 rounding, amplified alike


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--netG", default="auto", choices=["auto", *sorted(NETG_NUM_DOWNS)],
                        help="auto: unet_256 for 256 px, unet_128 for 128 px")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto: CUDA, then MPS, then the CPU")
    parser.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="passed to pick_speed for the fast variant")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the fast variant's G and D (compiles during the warm-up; needs a C++ compiler)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (the median counts)")
    parser.add_argument("--steps-per-round", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--agree-steps", type=int, default=3, help="training steps of the agreement check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: run one variant
    args = parser.parse_args(argv)
    if args.netG == "auto":
        if args.size not in NETG_FOR_SIZE:
            parser.error(f"--netG auto knows sizes {sorted(NETG_FOR_SIZE)}; give --netG for --size {args.size}")
        args.netG = NETG_FOR_SIZE[args.size]
    if args.size % size_multiple_of(args.netG):
        parser.error(f"{args.netG} needs --size a multiple of {size_multiple_of(args.netG)}")
    return args


def resolve_device(name: str) -> torch.device:
    return pick_device(None if name == "auto" else name)


def variant_settings(variant: str, device: torch.device, amp: str, compile: bool = False) -> SpeedSettings:
    return pick_speed(device, plain=True) if variant == "plain" else pick_speed(device, amp=amp, compile=compile)


@dataclasses.dataclass
class Trainer:
    """One variant's networks, optimisers, loss and settings: what a training step needs."""
    G: torch.nn.Module
    D: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    gan_loss: GANLoss
    settings: SpeedSettings
    scaler: torch.amp.GradScaler | None

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        "The images in the memory layout the networks use (NHWC where channels_last)."
        return images.contiguous(memory_format=torch.channels_last) if self.settings.channels_last else images

    def autocast(self):
        device_type = next(self.G.parameters()).device.type
        dtype = self.settings.amp_dtype
        return torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext()

    def step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict:
        return train_step(self.G, self.D, self.opt_G, self.opt_D, real_A, real_B, self.gan_loss,
                          amp_dtype=self.settings.amp_dtype, scaler=self.scaler)


def build_trainer(args, settings: SpeedSettings, device: torch.device) -> Trainer:
    "G, D and the rest for one variant, initialised from args.seed: the same seed gives both variants the same weights."
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark  # global: set per variant, before the first conv
    torch.manual_seed(args.seed)
    options = {"netG": args.netG, "ngf": args.ngf, "netD": "basic", "ndf": args.ndf, "norm": "batch",
               "input_nc": 3, "output_nc": 3}
    G, D = define_G(options).to(device), define_D(options).to(device)
    if settings.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    if settings.compile:  # as build_training does: in place, compiled at the first (warm-up) step
        from torch._inductor import config as inductor
        inductor.fallback_random = True  # the eager dropout masks, so the agreement check holds
        G.compile()
        D.compile()
    opt_G, opt_D = make_optimizers(G, D, fused=settings.fused_adam)  # after the move: fused Adam needs the device
    scaler = torch.amp.GradScaler(device.type) if settings.grad_scaler else None  # float16 needs loss scaling
    return Trainer(G.train(), D.train(), opt_G, opt_D, GANLoss("vanilla").to(device), settings, scaler)


def random_pairs(args, count: int, seed: int, trainer: Trainer, device: torch.device) -> list:
    "`count` (A, B) batches in [-1, 1], drawn on the CPU from `seed` so that every variant and device gets the same."
    generator = torch.Generator().manual_seed(seed)
    shape = (args.batch, 3, args.size, args.size)
    return [tuple(trainer.layout((torch.rand(shape, generator=generator) * 2 - 1).to(device)) for _ in "AB")
            for _ in range(count)]


def synchronize(device: torch.device) -> None:
    "Wait for queued GPU work, so that the clock measures the steps, not their launch."
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed_steps(trainer: Trainer, real_A, real_B, count: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        trainer.step(real_A, real_B)
    synchronize(device)
    return time.perf_counter() - start


def rss_mib(field: str) -> float | None:
    "VmRSS (now) or VmHWM (peak) of this process in MiB, from /proc (None where there is none)."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory(device: torch.device) -> dict:
    "Peak memory of this process: allocated GPU memory on CUDA, else the peak resident set (RSS)."
    if device.type == "cuda":
        return {"kind": "cuda max_memory_allocated", "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20}
    peak = rss_mib("VmHWM")
    if peak is None:  # no /proc (macOS: ru_maxrss is in bytes; Linux: KiB)
        scale = 2**20 if sys.platform == "darwin" else 2**10
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    return {"kind": "peak RSS", "peak_mib": peak}


def run_worker(args) -> None:
    """A child process running one variant, driven over stdin/stdout, one JSON line per answer:
    `steps N` -> {"seconds": time of N steps}; `quit` -> its peak memory, then it exits."""
    protocol, sys.stdout = sys.stdout, sys.stderr  # a stray print must not corrupt the protocol
    device = resolve_device(args.device)
    rss_before = rss_mib("VmRSS")  # torch imported, nothing built: the part of the peak that is not the step
    trainer = build_trainer(args, variant_settings(args.worker, device, args.amp, args.compile), device)
    real_A, real_B = random_pairs(args, 1, args.seed, trainer, device)[0]

    def answer(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    answer({"describe": trainer.settings.describe(), "threads": torch.get_num_threads(), "rss_before_mib": rss_before})
    for line in sys.stdin:
        command, _, count = line.strip().partition(" ")
        if command == "steps":
            answer({"seconds": timed_steps(trainer, real_A, real_B, int(count), device)})
        elif command == "quit":
            answer(peak_memory(device))
            return
        else:
            raise SystemExit(f"worker: unknown command {line!r}")


class Worker:
    "The parent's handle on one worker process."

    def __init__(self, variant: str, args):
        passed = ["--size", str(args.size), "--batch", str(args.batch), "--netG", args.netG, "--ngf", str(args.ngf),
                  "--ndf", str(args.ndf), "--device", args.device, "--amp", args.amp, "--seed", str(args.seed)] \
                 + (["--compile"] if args.compile else [])
        self.variant = variant
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", variant, *passed],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.hello = self.read()

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the {self.variant} worker died (exit code {code}); its stderr is above")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def finish(self) -> dict:
        memory = self.ask("quit")
        self.process.wait()
        return memory


def interleaved_rounds(workers: dict, rounds: int, steps: int, warmup: int) -> dict[str, list[float]]:
    "Seconds per iteration of every round of every variant, the variants taking turns round by round."
    for worker in workers.values():
        if warmup:
            worker.ask(f"steps {warmup}")  # first steps pick kernels and allocate: not what a long run pays
    per_iteration = {variant: [] for variant in workers}
    for index in range(rounds):
        order = list(workers) if index % 2 == 0 else list(reversed(list(workers)))  # who goes first alternates too
        for variant in order:
            per_iteration[variant].append(workers[variant].ask(f"steps {steps}")["seconds"] / steps)
    return per_iteration


def measure_speed(args) -> dict:
    "Both variants in their own processes: describe(), threads, per-round s/iter and peak memory of each."
    workers = {}
    try:
        for variant in VARIANTS:  # both start (import, build) together; only the timed rounds take turns
            workers[variant] = Worker(variant, args)
        rounds = interleaved_rounds(workers, args.rounds, args.steps_per_round, args.warmup)
        memory = {variant: worker.finish() for variant, worker in workers.items()}
    finally:
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.kill()
    return {variant: {**workers[variant].hello, **memory[variant], "rounds_s_per_iter": times,
                      "median_s_per_iter": statistics.median(times), "best_s_per_iter": min(times)}
            for variant, times in rounds.items()}


def masks_independent_of_layout(G: torch.nn.Module) -> None:
    """Make G's dropout draw the same masks from a seed whatever the memory layout. Dropout draws its
    mask in memory order, so one seed gives a channels_last (NHWC) tensor other masks than an NCHW one:
    other noise z, outputs ~0.2 apart even at equal weights. Feeding dropout NCHW makes the agreement
    check compare arithmetic, not noise; it is only used there, never in the timed steps."""
    for module in G.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_pre_hook(lambda _, inputs: tuple(x.contiguous() for x in inputs))


def outputs_while_training(args, variant: str, device: torch.device) -> tuple[list[torch.Tensor], Trainer]:
    """G's output on one fixed input after each of args.agree_steps training steps from args.seed (train
    mode, as at the paper's test time, with the variant's own autocast), and the trainer."""
    trainer = build_trainer(args, variant_settings(variant, device, args.amp, args.compile), device)
    masks_independent_of_layout(trainer.G)
    pairs = random_pairs(args, args.agree_steps + 1, args.seed + 1, trainer, device)
    fixed_input, outputs = pairs[-1][0][:1], []
    for index, (real_A, real_B) in enumerate(pairs[:-1]):
        torch.manual_seed(args.seed + 1000 + index)  # dropout (the paper's noise z) draws the same masks in both
        trainer.step(real_A, real_B)
        with trainer.autocast():
            outputs.append(translate_batch(trainer.G, fixed_input, seed=args.seed))
    return outputs, trainer


def agreement_check(args, device: torch.device) -> dict:
    "Whether the two variants, trained alike from one seed, give the same G outputs within the tolerance."
    plain, _ = outputs_while_training(args, "plain", device)
    fast, trainer = outputs_while_training(args, "fast", device)
    per_step = [(a - b).abs().max().item() for a, b in zip(plain, fast)]
    float32 = trainer.settings.amp_dtype is None
    tolerance = FLOAT32_TOLERANCE if float32 else AUTOCAST_TOLERANCE
    # float16's scaler skips the updates whose gradients overflow: a FAIL with a scale below 65536 means that
    scale = trainer.scaler.get_scale() if trainer.scaler is not None else None
    return {"steps": args.agree_steps, "max_abs_diff": per_step[-1] if per_step else 0.0, "per_step": per_step,
            "tolerance": tolerance, "grad_scale": scale, "passed": not per_step or per_step[-1] <= tolerance,
            "fast_arithmetic": "float32" if float32 else str(trainer.settings.amp_dtype).replace("torch.", "")}


def target_for(args, device: torch.device, caps: dict) -> tuple[float | None, str]:
    "The issue's speedup target for this machine and configuration, or None with why it is report only."
    if device.type != "cpu":
        return None, f"report only (the targets are for CPUs; this is {device.type})"
    goal, isa = TARGETS.get(caps["isa"]), caps["isa"]
    if goal is None:
        return None, f"report only ({isa} CPU)"
    if {key: getattr(args, key) for key in TARGET_CONFIG} != TARGET_CONFIG:
        return None, f"report only (the {isa} target, {goal:.1f}x, is for 256 px, batch 1, unet_256, ngf/ndf 64)"
    if args.amp != "auto" or args.compile:
        return None, f"report only (the {isa} target, {goal:.1f}x, is for the default settings: --amp auto, no --compile)"
    if caps["isa"] != "AVX-512" and not cpu_has_fast_bf16():
        return None, f"report only (P2P_BF16=off turns the {isa} CPU's bf16 off)"
    return goal, f">= {goal:.1f}x ({isa} CPU)"


def print_table(args, speed: dict) -> None:
    "s/iter (median and best round), images/s and peak memory of each variant."
    memory_kind = speed["plain"]["kind"]
    print(f"\n{'variant':8s} {'s/iter':>8s} {'best':>8s} {'images/s':>9s}   {memory_kind} MiB")
    for variant in VARIANTS:
        row = speed[variant]
        before = row.get("rss_before_mib")
        extra = f" (+{row['peak_mib'] - before:.0f})" if memory_kind == "peak RSS" and before else ""
        print(f"{variant:8s} {row['median_s_per_iter']:8.3f} {row['best_s_per_iter']:8.3f} "
              f"{args.batch / row['median_s_per_iter']:9.2f}   {row['peak_mib']:.0f}{extra}")
    if memory_kind == "peak RSS":
        print("(+N: the peak above the worker's RSS after importing torch, before building anything)")


def print_report(args, device, caps, speed, agreement, speedup, target_text) -> None:
    print(f"{args.netG} + 70x70 PatchGAN, ngf {args.ngf}, ndf {args.ndf}, {args.size} px, batch {args.batch}, "
          f"on {device}; PyTorch {torch.__version__}, {speed['fast']['threads']} threads")
    print(f"CPU: {cpu_model()}; ISA class {caps['isa']} (PyTorch kernels: {caps['torch_isa']}), "
          f"AMX-BF16 {'yes' if caps['amx_bf16'] else 'no'}, AVX-512-BF16 {'yes' if caps['avx512_bf16'] else 'no'}")
    for variant in VARIANTS:
        print(f"{variant:5s}: {speed[variant]['describe']}")
    print(f"{args.rounds} interleaved rounds of {args.steps_per_round} steps per variant after {args.warmup} "
          f"warm-up steps; s/iter is the MEDIAN round (best round for reference)")
    print_table(args, speed)
    steps, last = ", ".join(f"{value:.1e}" for value in agreement["per_step"]), agreement["steps"]
    scale = f" (grad scaler's scale at the end: {agreement['grad_scale']:g})" if agreement["grad_scale"] else ""
    print(f"\nagreement ({agreement['fast_arithmetic']} fast step): max |G_plain - G_fast| after steps 1..{last}: "
          f"{steps}; after {last}: {agreement['max_abs_diff']:.2e}, tolerance {agreement['tolerance']:g}: "
          f"{'PASS' if agreement['passed'] else 'FAIL'}{scale}")
    print(f"target: {target_text}")
    print(f"speedup_vs_plain_fp32: {speedup:.2f}x")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    device = resolve_device(args.device)
    args.device = str(device)  # the workers must use the same device
    caps = cpu_capabilities()
    speed = measure_speed(args)
    agreement = agreement_check(args, device)  # after the timing, so it cannot disturb it
    speedup = speed["plain"]["median_s_per_iter"] / speed["fast"]["median_s_per_iter"]
    goal, target_text = target_for(args, device, caps)
    if goal is not None:
        target_text += f": {'met' if speedup >= goal else 'NOT met'}"
    print_report(args, device, caps, speed, agreement, speedup, target_text)
    if args.json:
        results = {"config": {k: v for k, v in vars(args).items() if k not in ("json", "worker")},
                   "torch": torch.__version__, "cpu_model": cpu_model(), "cpu_capabilities": caps, "variants": speed,
                   "agreement": agreement, "speedup_vs_plain_fp32": speedup, "target": target_text}
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
