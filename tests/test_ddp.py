"""`p2p train` under torchrun: two CPU processes with DistributedDataParallel on the gloo backend."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from imagefactory import aligned_pairs

# Runs the engine as torchrun would run `p2p train`, and afterwards saves this process's weights,
# so the test can compare the two processes (DDP must keep them identical).
LAUNCHER = textwrap.dedent("""
    import os, sys
    import torch
    import p2p_lib.engine as engine
    import p2p_lib.train as lesson

    nets = {}
    real_step = lesson.train_step

    def spy(G, D, *args, **kwargs):
        nets["G"], nets["D"] = G, D
        return real_step(G, D, *args, **kwargs)

    lesson.train_step = spy  # what lesson 06's fit calls
    code = engine.main(sys.argv[2:])
    weights = {name: {k: v.detach().clone() for k, v in engine._unwrap(net).named_parameters()}
               for name, net in nets.items()}
    weights["wrapped"] = type(nets["G"]).__name__
    torch.save(weights, os.path.join(sys.argv[1], "rank%s.pt" % os.environ["RANK"]))
    sys.exit(code)
""")


def make_pairs(root, count=6, size=136):
    return aligned_pairs(root, (("train", count), ("val", 2)), size, block=8)


def torchrun(tmp_path, args, processes=2):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               str(processes), str(launcher), str(tmp_path), *args],
                              capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in 300 s:\n{err.stdout}\n{err.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_two_processes_with_batch_1_train_as_one_with_batch_2(tmp_path):
    """DDP averages the two processes' gradients: with a per-image norm (instance), no dropout and no flip, that is
    the gradient of one process's batch of the same two pairs (rank r takes every 2nd pair of the same order)."""
    data = make_pairs(tmp_path / "pairs")
    common = ["--dataroot", str(data), "--netG", "unet_128", "--load_size", "136", "--crop_size", "128", "--ngf", "4",
              "--ndf", "4", "--norm", "instance", "--no_dropout", "--max_steps", "3", "--num_val", "0",
              "--no_progress", "--amp", "off"]
    torchrun(tmp_path, [*common, "--name", "two", "--checkpoints_dir", str(tmp_path / "ck"), "--batch_size", "1"])
    import p2p_lib.engine as engine
    parser = __import__("argparse").ArgumentParser()
    engine.add_train_arguments(parser)
    opts = engine.options_from_args(parser.parse_args([*common, "--name", "one", "--checkpoints_dir",
                                                       str(tmp_path / "ck"), "--batch_size", "2"]))
    assert engine.train(opts)["step"] == 3
    from p2p_lib.train import build_training
    start = build_training(opts, "cpu")
    first = {"G": start.G.state_dict(), "D": start.D.state_dict()}
    two, one = (torch.load(tmp_path / "ck" / name / "latest_state.pt", weights_only=True) for name in ("two", "one"))
    for net in ("G", "D"):
        diff = torch.cat([(two[net][k].float() - one[net][k].float()).abs().flatten() for k in one[net]])
        moved = torch.cat([(one[net][k].float() - first[net][k].float()).abs().flatten() for k in one[net]])
        # Adam divides by the gradient's own size, so a weight whose gradient is ~0 can flip its update on a
        # rounding difference (measured: max 9e-4), and how far rounding goes depends on the CPU's kernels. So the
        # bound is relative to how far a typical weight moved in these 3 steps (2.6e-4). Measured |two - one| of G:
        # on an AVX2 CPU 99% within 1e-8; on an AVX-512 CPU median 1.4e-7, 90th percentile 1.5e-6 (99th: 7e-6);
        # against a wrong run (one process, batch 1: other data at each step, as a wrong shard or no averaging
        # gives) median 1.5e-4, 90th percentile 4.7e-4.
        typical = moved.median().item()
        assert typical > 1e-4, (net, typical)
        assert diff.median().item() < 0.01 * typical and diff.quantile(0.9).item() < 0.05 * typical, \
            (net, diff.median().item(), diff.quantile(0.9).item(), typical)


def test_two_processes_train_in_step_and_only_rank_0_writes(tmp_path):
    data = make_pairs(tmp_path / "pairs")
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    args = ["--dataroot", str(data), "--name", "ddp", "--checkpoints_dir", str(tmp_path / "ck"), "--netG", "unet_128",
            "--load_size", "136", "--crop_size", "128", "--ngf", "4", "--ndf", "4", "--max_steps", "4",
            "--print_freq", "1", "--num_val", "2", "--no_progress", "--save_latest_freq", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(launcher), str(tmp_path), *args],
                              capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in 300 s:\n{err.stdout}\n{err.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["wrapped"] == "DistributedDataParallel"
    for net in ("G", "D"):
        for name, value in rank0[net].items():
            assert torch.isfinite(value).all(), f"{net}.{name}"
            assert torch.equal(value, rank1[net][name]), f"{net}.{name} differs between the processes"
    run = tmp_path / "ck" / "ddp"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "images", "latest_net_G.pt", "latest_state.pt",
                                                     "loss_log.jsonl", "opt.json", "web"]
    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    # one writer: each record once; 6 pairs over 2 processes = 3 iterations per epoch
    assert [(r["type"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("train", 3), ("epoch", 3),
                                                         ("train", 4), ("final", 4)]
    assert "3 iterations per epoch per process (2 processes)" in done.stdout
    saved = torch.load(run / "latest_state.pt", weights_only=True)
    assert saved["step"] == 4 and len(saved["rng_per_rank"]) == 2
    assert all(torch.equal(saved["G"][k], v) for k, v in rank0["G"].items())
