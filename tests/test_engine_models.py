"""`p2p train --model cycle_gan` (lesson 10) and `p2p train --netD multiscale` (lesson 11): the official defaults, the
files written, exact resume (image pools included), and that the command trains what the lessons' code trains."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import p2p_lib.engine as engine
from imagefactory import aligned_pairs
from p2p_lib.checkpoint import load_checkpoint, load_generator
from p2p_lib.cyclegan import ResnetGenerator, UnpairedImageDataset, build_cyclegan, cyclegan_step
from p2p_lib.losses import GANLoss
from p2p_lib.multiscale import MultiscaleDiscriminator, multiscale_step
from p2p_lib.train import SeededPairs, build_training, epoch_batches, fit
from test_engine import assert_same_training_state, parse, state, tiny, train

CYCLE_LOSSES = ["G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"]


def unaligned(root, counts=(5, 4), size=40, seed=0):
    "root/trainA (blocky noise) and root/trainB (other noise, negated): unrelated images, as CycleGAN reads them."
    rng = np.random.default_rng(seed)
    for side, count in zip("AB", counts):
        folder = root / f"train{side}"
        folder.mkdir(parents=True)
        for i in range(count):
            a = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
            Image.fromarray(a if side == "A" else 255 - a).save(folder / f"{side.lower()}{i}.png")
    return root


@pytest.fixture
def unpaired(tmp_path):
    return unaligned(tmp_path / "unpaired")


def cycle(data, checkpoints, *extra, name="cycle"):
    "A small CycleGAN run: resnet_6blocks with 4 filters at 32 px, a 3-image pool, 5 iterations an epoch, float32."
    return ["--model", "cycle_gan", "--dataroot", str(data), "--name", name, "--checkpoints_dir", str(checkpoints),
            "--netG", "resnet_6blocks", "--load_size", "36", "--crop_size", "32", "--ngf", "4", "--ndf", "4",
            "--pool_size", "3", "--n_epochs", "2", "--n_epochs_decay", "2", "--no_progress", "--print_freq", "2",
            "--amp", "off", "--no_channels_last", *extra]


def test_cycle_gan_switches_to_the_official_cyclegan_defaults():
    opts = parse(["--dataroot", "x", "--model", "cycle_gan"])
    official = {"netG": "resnet_9blocks", "netD": "basic", "norm": "instance", "no_dropout": True, "gan_mode": "lsgan",
                "pool_size": 50, "lambda_A": 10.0, "lambda_B": 10.0, "lambda_identity": 0.5, "ngf": 64, "ndf": 64,
                "load_size": 286, "crop_size": 256, "lr": 2e-4, "beta1": 0.5, "batch_size": 1, "n_epochs": 100,
                "n_epochs_decay": 100}
    assert {k: opts[k] for k in official} == official
    assert parse(["--dataroot", "x", "--model", "cycle_gan", "--gan_mode", "vanilla"])["gan_mode"] == "vanilla"
    pix2pix = parse(["--dataroot", "x"])
    assert (pix2pix["model"], pix2pix["gan_mode"], pix2pix["pool_size"], pix2pix["netG"]) == ("pix2pix", "vanilla", 0, "unet_256")


def test_a_cycle_gan_run_writes_both_generators_and_logs_its_eight_losses(unpaired, tmp_path, capsys):
    result = train(cycle(unpaired, tmp_path / "ck", "--max_steps", "7"))
    run = tmp_path / "ck" / "cycle"
    assert result["status"] == "done" and result["step"] == 7
    said = capsys.readouterr()
    assert "cycle_gan: 5 A and 4 B images (unpaired), 5 iterations per epoch" in said.out
    assert "training without validation" in said.err  # unpaired data has no val/ pairs to score
    assert {"latest_state.pt", "latest_net_G_A.pt", "latest_net_G_B.pt", "loss_log.jsonl"} <= {p.name for p in run.iterdir()}
    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records][:3] == ["train", "train", "epoch"]
    assert all(name in records[0] and np.isfinite(records[0][name]) for name in CYCLE_LOSSES)
    saved = state(run)
    assert [key.split(".")[0] for key in saved["G"]][:1] == ["G_A"] and any(k.startswith("D_B.") for k in saved["D"])
    assert [len(pool["images"]) for pool in saved["pools"]] == [3, 3]  # both pools full after 7 steps
    G_A, options = load_generator(run / "latest_net_G_A.pt")  # what p2p translate / test read
    G_B, options_B = load_generator(run / "latest_net_G_B.pt")
    assert isinstance(G_A, ResnetGenerator) and options["netG"] == "resnet_6blocks"
    assert options["direction"] == "AtoB" and options_B["direction"] == "BtoA"
    assert all(torch.equal(v, saved["G"][f"G_B.{k}"]) for k, v in G_B.state_dict().items())


@pytest.mark.parametrize("first, total", [(3, 7), (5, 9)])  # inside an epoch; at an epoch's end
def test_cycle_gan_resumes_exactly_pools_and_their_random_state_included(unpaired, tmp_path, first, total):
    train(cycle(unpaired, tmp_path / "a", "--max_steps", str(total)))
    train(cycle(unpaired, tmp_path / "b", "--max_steps", str(first)))
    resumed = train(cycle(unpaired, tmp_path / "b", "--max_steps", str(total), "--continue_train"))
    assert resumed["step"] == total
    a, b = state(tmp_path / "a" / "cycle"), state(tmp_path / "b" / "cycle")
    assert_same_training_state(a, b)
    for pool_a, pool_b in zip(a["pools"], b["pools"]):
        assert len(pool_a["images"]) == len(pool_b["images"]) == 3
        assert all(torch.equal(x, y) for x, y in zip(pool_a["images"], pool_b["images"]))
        assert pool_a["rng_state"] == pool_b["rng_state"]


def test_a_resumed_run_without_its_pools_is_refused(unpaired, tmp_path):
    train(cycle(unpaired, tmp_path / "ck", "--max_steps", "3"))
    path = tmp_path / "ck" / "cycle" / "latest_state.pt"
    saved = load_checkpoint(path)
    torch.save({**saved, "pools": []}, path)
    with pytest.raises(SystemExit, match="0 image pools, this run 2"):
        train(cycle(unpaired, tmp_path / "ck", "--max_steps", "5", "--continue_train"))
    with pytest.raises(SystemExit, match="--model cycle_gan .you gave pix2pix."):
        train(["--model", "pix2pix", "--dataroot", str(unpaired), "--name", "cycle", "--checkpoints_dir",
               str(tmp_path / "ck"), "--continue_train"])


def test_the_command_trains_lesson_10s_cyclegan_step_weight_for_weight(unpaired, tmp_path):
    "What lesson 10 claims: `p2p train --model cycle_gan` is build_cyclegan + cyclegan_step in lesson 06's loop."
    train(cycle(unpaired, tmp_path / "ck", "--max_steps", "10"))  # two whole epochs at the full rate
    model = build_cyclegan(ngf=4, ndf=4, n_blocks=6, pool_size=3, seed=0)
    pairs = SeededPairs(UnpairedImageDataset(unpaired, load_size=36, crop_size=32), seed=0)
    for epoch in (1, 2):
        for real_A, real_B in epoch_batches(pairs, epoch):
            cyclegan_step(model, real_A, real_B, GANLoss("lsgan"))
    saved = state(tmp_path / "ck" / "cycle")
    for name in ("G_A", "G_B"):
        ours = getattr(model, name).state_dict()
        assert all(torch.equal(value, saved["G"][f"{name}.{key}"]) for key, value in ours.items()), name
    assert all(torch.equal(value, saved["D"][f"D_A.{key}"]) for key, value in model.D_A.state_dict().items())


def test_cycle_gan_data_errors_are_clear(tmp_path):
    root = unaligned(tmp_path / "half", counts=(3, 3))
    for image in (root / "trainB").iterdir():
        image.unlink()
    (root / "trainB").rmdir()
    with pytest.raises(SystemExit, match="unpaired data needs trainA/ and trainB/"):
        train(cycle(root, tmp_path / "ck"))


def test_direction_and_max_dataset_size_choose_the_cycle_gan_images(unpaired, tmp_path, capsys):
    train(cycle(unpaired, tmp_path / "ck", "--max_steps", "1", "--direction", "BtoA", "--max_dataset_size", "2"))
    assert "2 A and 2 B images" in capsys.readouterr().out
    opts = {**parse(cycle(unpaired, tmp_path / "x", "--direction", "BtoA")), "dataroot": str(unpaired)}
    data = engine.unpaired_training_data(opts)
    assert [p.parent.name for p in data.files["A"]] == ["trainB"] * 4  # the run's A side is the B folder


# ------------------------------------------------------------------------------ --netD multiscale (lesson 11)

@pytest.fixture
def pairs(tmp_path):
    return aligned_pairs(tmp_path / "pairs", (("train", 5), ("val", 2)), 136, 0, block=8)


def multiscale(data, checkpoints, *extra):
    return tiny(data, checkpoints, "--netD", "multiscale", "--num_D", "2", "--amp", "off", "--no_channels_last", *extra)


def test_multiscale_runs_logs_feature_matching_and_resumes_exactly(pairs, tmp_path, capsys):
    result = train(multiscale(pairs, tmp_path / "a", "--max_steps", "7"))
    assert result["status"] == "done"
    assert "D multiscale (2 scales, feature matching x 10.0)" in capsys.readouterr().out
    run = tmp_path / "a" / "run"
    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert records[0]["G_FM"] > 0 and records[1]["type"] == "epoch" and "G_FM" in records[1]
    assert any(key.startswith("scales.1.") for key in state(run)["D"])
    train(multiscale(pairs, tmp_path / "b", "--max_steps", "3"))
    train(multiscale(pairs, tmp_path / "b", "--max_steps", "7", "--continue_train"))
    assert_same_training_state(state(run), state(tmp_path / "b" / "run"))
    with pytest.raises(SystemExit, match="--num_D 2 .you gave 3."):
        train(multiscale(pairs, tmp_path / "b", "--max_steps", "8", "--continue_train", "--num_D", "3"))


def test_multiscale_command_is_lesson_11s_step_in_lesson_06s_loop(pairs, tmp_path):
    argv = multiscale(pairs, tmp_path / "ck", "--max_steps", "5", "--lambda_feat", "4")
    train(argv)
    opts = parse(argv)
    run = build_training(opts, "cpu", engine.pick_speed("cpu", "off", False))
    assert isinstance(run.D, MultiscaleDiscriminator)
    fit(run, engine._training_pairs(opts), 2, 2, max_steps=5, step=multiscale_step(4.0))
    saved = state(tmp_path / "ck" / "run")
    assert all(torch.equal(value, saved["G"][key]) for key, value in run.G.state_dict().items())
    assert all(torch.equal(value, saved["D"][key]) for key, value in run.D.state_dict().items())


def test_p2p_translate_runs_a_cycle_gan_generator(unpaired, tmp_path):
    "The G_A file is an ordinary generator checkpoint: p2p translate reads it, any size (padded to a multiple of 4)."
    from p2p_lib.cli import main
    train(cycle(unpaired, tmp_path / "ck", "--max_steps", "2"))
    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 42, 3), dtype=np.uint8)).save(picture)
    for fit_mode in ("resize", "pad"):
        out = tmp_path / f"out_{fit_mode}.png"
        assert main(["translate", str(picture), "--checkpoint", str(tmp_path / "ck" / "cycle" / "latest_net_G_A.pt"),
                     "--output", str(out), "--fit", fit_mode]) == 0
        assert Image.open(out).size == (42, 30)
