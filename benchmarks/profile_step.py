"""Where the time of one training step goes, plain against the default fast step (not part of the tests).

    .venv/bin/python benchmarks/profile_step.py                     # 256 px, batch 1, unet_256, ngf/ndf 64
    .venv/bin/python benchmarks/profile_step.py --json benchmarks/results/profile_step_256_amx.json

`train_step.py` says how much faster the fast step is; this script says why not more. It builds both
variants exactly as `train_step.py` does (same seed, same weights, same input pair), runs a few warm-up
steps, then profiles `--steps` steps of each with torch.profiler and adds up every operator's SELF CPU
time into a few categories, by the operator and its callers:
- conv / transposed conv, forward and backward (aten::convolution and aten::convolution_backward, split
  by their `transposed` argument: the U-Net's decoder is transposed convolutions);
- dtype casts and layout copies (aten::copy_, aten::_to_copy: autocast casting weights and activations
  to bf16 and back, channels_last conversions);
- batch norm; Adam (everything under Optimizer.step / zero_grad); everything else (activations,
  dropout, concatenation, the losses, autograd bookkeeping).
It prints ms per step for each category in each variant, their ratio and the fast step's shares, then
the same step's wall time without the profiler. The profiler adds overhead, so the categories' sum is a
little above the unprofiled time; the shares are what matter. The CPU's capabilities are printed first.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step as bench  # noqa: E402  (the same set-up as the speed benchmark)

from p2p_lib.device import cpu_capabilities  # noqa: E402

CONV_ARGS_TRANSPOSED = {"aten::convolution": 6, "aten::convolution_backward": 7}  # index of `transposed`
CAST_OPS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone"}
CATEGORIES = ("conv forward", "transposed conv forward", "conv backward", "transposed conv backward",
              "dtype casts and layout copies", "batch norm", "Adam", "everything else")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--netG", default="auto")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--amp", default="auto", help="passed to pick_speed for the fast variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    passed = ["--size", str(args.size), "--batch", str(args.batch), "--netG", args.netG, "--ngf", str(args.ngf),
              "--ndf", str(args.ndf), "--amp", args.amp, "--seed", str(args.seed), "--device", "cpu"]
    args.bench = bench.parse_args(passed)  # the speed benchmark's own checks and netG choice
    return args


def category(event) -> str:
    "The category an event's self time belongs to, from its own name and its callers'."
    chain, node = [], event
    while node is not None:
        chain.append(node)
        node = node.cpu_parent
    names = [node.name for node in chain]
    if any(name.startswith("Optimizer.") for name in names):
        return "Adam"
    for node in chain:  # the nearest convolution above (or at) this event decides
        if node.name in CONV_ARGS_TRANSPOSED:
            inputs = getattr(node, "concrete_inputs", None) or []
            index = CONV_ARGS_TRANSPOSED[node.name]
            transposed = len(inputs) > index and inputs[index] is True
            phase = "backward" if node.name.endswith("backward") else "forward"
            return f"{'transposed conv' if transposed else 'conv'} {phase}"
    if event.name in CAST_OPS:
        return "dtype casts and layout copies"
    if any("batch_norm" in name for name in names):
        return "batch norm"
    return "everything else"


def profile_variant(args, variant: str) -> dict:
    "ms per step per category (self CPU time), and the unprofiled wall time per step, for one variant."
    device = torch.device("cpu")
    trainer = bench.build_trainer(args.bench, bench.variant_settings(variant, device, args.amp), device)
    real_A, real_B = bench.random_pairs(args.bench, 1, args.seed, trainer, device)[0]
    for _ in range(args.warmup):
        trainer.step(real_A, real_B)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(args.steps):
            trainer.step(real_A, real_B)
    totals = defaultdict(float)
    for event in profiler.events():
        totals[category(event)] += event.self_cpu_time_total / 1000 / args.steps  # microseconds -> ms per step
    wall = bench.timed_steps(trainer, real_A, real_B, args.steps, device) / args.steps * 1000
    return {"describe": trainer.settings.describe(), "ms_per_step": {name: totals[name] for name in CATEGORIES},
            "profiled_total_ms": sum(totals.values()), "unprofiled_wall_ms": wall}


def print_table(results: dict) -> None:
    plain, fast = results["plain"], results["fast"]
    print(f"{'category':<32}{'plain ms':>10}{'fast ms':>10}{'speedup':>9}{'share of fast':>15}")
    for name in CATEGORIES:
        p, f = plain["ms_per_step"][name], fast["ms_per_step"][name]
        ratio = f"{p / f:.2f}x" if f > 0.05 else "-"
        print(f"{name:<32}{p:10.1f}{f:10.1f}{ratio:>9}{f / fast['profiled_total_ms']:14.1%}")
    p, f = plain["profiled_total_ms"], fast["profiled_total_ms"]
    print(f"{'all (profiled)':<32}{p:10.1f}{f:10.1f}{p / f:8.2f}x")
    p, f = plain["unprofiled_wall_ms"], fast["unprofiled_wall_ms"]
    print(f"{'wall time, no profiler':<32}{p:10.1f}{f:10.1f}{p / f:8.2f}x")


def main(argv=None) -> None:
    args = parse_args(argv)
    capabilities = cpu_capabilities()
    print(f"cpu: {bench.cpu_model()}; {capabilities}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.bench.netG}, {args.size} px, batch {args.batch}, ngf {args.ngf}, ndf {args.ndf}; "
          f"{args.warmup} warm-up and {args.steps} profiled steps per variant")
    started = time.perf_counter()
    results = {variant: profile_variant(args, variant) for variant in ("plain", "fast")}
    for variant in results:
        print(f"{variant}: {results[variant]['describe']}")
    print_table(results)
    if args.json:
        record = {"command": "python benchmarks/profile_step.py " + " ".join(sys.argv[1:]),
                  "config": {k: v for k, v in vars(args).items() if k not in ("bench", "json")},
                  "netG": args.bench.netG, "cpu_capabilities": capabilities, "torch": torch.__version__,
                  "cpu_model": bench.cpu_model(), "seconds": round(time.perf_counter() - started, 1), "variants": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        temporary.replace(args.json)  # atomic: a reader never sees half a file
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
