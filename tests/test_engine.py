"""`p2p train` (p2p_lib.engine): options, exact resume, checkpoints, logs, and the guard rails."""
import argparse
import json
import math

import pytest
import torch
from PIL import Image

from imagefactory import aligned_pairs
import p2p_lib.engine as engine
import p2p_lib.train as lesson
from p2p_lib.checkpoint import load_checkpoint, load_generator
from p2p_lib.cli import build_parser


def make_pairs(root, counts=(("train", 5), ("val", 2)), size=136, seed=0):
    """Aligned A|B files made with PIL: B is the photographic negative of A."""
    return aligned_pairs(root, counts, size, seed, block=8)


@pytest.fixture
def data(tmp_path):
    return make_pairs(tmp_path / "pairs")


def tiny(data, checkpoints, *extra, name="run"):
    """Arguments of a small, fast run: unet_128 at 128 px with 4 filters, 5 pairs = 5 iterations an epoch."""
    return ["--dataroot", str(data), "--name", name, "--checkpoints_dir", str(checkpoints), "--netG", "unet_128",
            "--load_size", "136", "--crop_size", "128", "--ngf", "4", "--ndf", "4", "--n_epochs", "2",
            "--n_epochs_decay", "2", "--num_val", "2", "--no_progress", "--print_freq", "3", *extra]


def parse(argv):
    parser = argparse.ArgumentParser()
    engine.add_train_arguments(parser)
    return engine.options_from_args(parser.parse_args(argv))


def train(argv, on_step=None):
    return engine.train(parse(argv), on_step=on_step)


def state(run_dir, epoch="latest"):
    return load_checkpoint(run_dir / f"{epoch}_state.pt", kind="train_state")


def assert_same_training_state(a, b):
    """Every tensor of both networks, both optimisers (which must have state: a run that made steps) and both
    schedules, the random states and the counters are equal."""
    for net in ("G", "D"):
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
    for opt in ("optimizer_G", "optimizer_D"):
        assert a[opt]["state"] and a[opt]["state"].keys() == b[opt]["state"].keys(), f"{opt}: no state, or other keys"
        for index, values in a[opt]["state"].items():
            assert values.keys() == b[opt]["state"][index].keys()
            for key, value in values.items():
                assert torch.equal(value, b[opt]["state"][index][key]), f"{opt} {index} {key} differs"
        assert a[opt]["param_groups"] == b[opt]["param_groups"], f"{opt}: learning rates or betas differ"
    for scheduler in ("scheduler_G", "scheduler_D"):
        assert a[scheduler] == b[scheduler], f"{scheduler} differs"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]), "torch's random state differs"
    assert (a["step"], a["epoch"], a["epoch_iter"]) == (b["step"], b["epoch"], b["epoch_iter"])


def test_defaults_are_the_official_pix2pix_defaults():
    opts = parse(["--dataroot", "x"])
    official = {"netG": "unet_256", "netD": "basic", "n_layers_D": 3, "ngf": 64, "ndf": 64, "norm": "batch",
                "no_dropout": False, "gan_mode": "vanilla", "lambda_L1": 100.0, "lr": 2e-4, "beta1": 0.5,
                "n_epochs": 100, "n_epochs_decay": 100, "batch_size": 1, "load_size": 286, "crop_size": 256,
                "direction": "AtoB", "preprocess": "resize_and_crop", "lr_policy": "linear", "epoch_count": 1,
                "init_type": "normal", "init_gain": 0.02, "input_nc": 3, "output_nc": 3, "model": "pix2pix",
                "print_freq": 100, "save_latest_freq": 5000, "save_epoch_freq": 5, "epoch": "latest",
                "checkpoints_dir": "./checkpoints", "name": "experiment_name", "serial_batches": False,
                "no_flip": False, "max_dataset_size": float("inf")}
    assert {k: opts[k] for k in official} == official


def test_the_command_is_registered_and_documented(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--dataroot", "--continue_train", "--max_steps", "--amp", "--lr_policy", "--netG", "--sync_bn"):
        assert option in text
    assert "accepted for compatibility with the official train.py, and ignored" in text


@pytest.mark.parametrize("argv, message", [
    (["--netG", "resnet_12blocks"], "unknown generator; choose one of unet_128, unet_256"),
    (["--netD", "huge"], "choose one of basic, n_layers, pixel, multiscale"),
    (["--model", "cycle_gan", "--netG", "unet_256"], "cycle_gan trains lesson 10's networks"),
    (["--model", "cycle_gan", "--input_nc", "1"], "needs --input_nc = --output_nc"),
    (["--gan_mode", "wgangp"], "wgangp is not implemented"),
    (["--lr_policy", "cosine"], "choose one of linear, constant"),
    (["--pool_size", "50"], "without an image pool"),
    (["--netD", "multiscale", "--netG", "unet_128", "--crop_size", "128", "--load_size", "143", "--num_D", "4"],
     "the coarsest scale sees 16 px"),
    (["--netG", "unet_256", "--crop_size", "128"], "use --netG unet_128"),
])
def test_options_that_cannot_work_give_a_clear_error(argv, message):
    with pytest.raises(SystemExit, match=message):
        parse(["--dataroot", "x", *argv])


def test_official_options_that_do_not_apply_are_accepted_with_a_notice(capsys):
    opts = parse(["--dataroot", "x", "--display_id", "0", "--no_html", "--use_wandb", "--gpu_ids", "-1",
                  "--suffix", "{model}", "--num_threads", "2"])
    err = capsys.readouterr().err
    assert "--display_id is ignored" in err and "--use_wandb is ignored" in err
    assert "--no_html" not in err and opts["no_html"] is True  # an official option that works: no results page
    assert opts["device"] == "cpu"  # --gpu_ids -1 is the CPU
    assert opts["num_workers"] == 2  # the official --num_threads is the number of loader processes
    assert "display_id" not in opts


def test_a_run_writes_checkpoints_logs_and_images(data, tmp_path):
    result = train(tiny(data, tmp_path / "ck", "--max_steps", "7", "--save_latest_freq", "4",
                        "--save_epoch_freq", "1"))
    run = tmp_path / "ck" / "run"
    assert result["status"] == "done" and result["exit_code"] == 0 and result["step"] == 7
    names = sorted(p.name for p in run.iterdir())
    assert names == [".lock", "1_net_G.pt", "1_state.pt", "images", "latest_net_G.pt", "latest_state.pt",
                     "loss_log.jsonl", "opt.json", "web"]
    assert sorted(p.name for p in (run / "images").iterdir()) == ["epoch001.png", "step000007.png"]
    assert Image.open(run / "images" / "epoch001.png").size == (3 * 128, 2 * 128)  # input | output | target
    opts = json.loads((run / "opt.json").read_text())
    assert opts["ngf"] == 4 and opts["max_dataset_size"] is None  # strict JSON: inf is written as null
    records = [json.loads(line) for line in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "epoch", "train", "final"]
    assert [r["step"] for r in records] == [3, 5, 6, 7]
    assert all(math.isfinite(r[k]) for r in records[:3] for k in engine.LOSS_NAMES)
    assert records[1]["val_L1"] > 0 and records[1]["lr_G"] == 2e-4
    latest = state(run)
    assert (latest["step"], latest["epoch"], latest["epoch_iter"]) == (7, 2, 2)
    epoch1 = state(run, 1)  # saved after epoch 1's end: the run stands at the start of epoch 2
    assert (epoch1["step"], epoch1["epoch"], epoch1["epoch_iter"]) == (5, 2, 0)
    G, options = load_generator(run)  # the small export equals the state's generator
    assert all(torch.equal(G.state_dict()[k], latest["G"][k]) for k in latest["G"])
    assert options["netG"] == "unet_128" and options["direction"] == "AtoB"


@pytest.mark.parametrize("first, total", [(3, 7), (5, 8)])  # inside an epoch; exactly at an epoch's end
def test_resuming_gives_identical_weights(data, tmp_path, first, total):
    straight = train(tiny(data, tmp_path / "a", "--max_steps", str(total)))
    assert straight["step"] == total
    train(tiny(data, tmp_path / "b", "--max_steps", str(first)))
    resumed = train(tiny(data, tmp_path / "b", "--max_steps", str(total), "--continue_train"))
    assert resumed["step"] == total
    assert_same_training_state(state(tmp_path / "a" / "run"), state(tmp_path / "b" / "run"))


def test_resuming_from_an_epoch_checkpoint(data, tmp_path):
    train(tiny(data, tmp_path / "a", "--max_steps", "8", "--save_epoch_freq", "1"))
    train(tiny(data, tmp_path / "b", "--max_steps", "8", "--save_epoch_freq", "1"))
    (tmp_path / "b" / "run" / "latest_state.pt").unlink()
    resumed = train(tiny(data, tmp_path / "b", "--max_steps", "8", "--continue_train", "--epoch", "1"))
    assert resumed["step"] == 8
    assert_same_training_state(state(tmp_path / "a" / "run"), state(tmp_path / "b" / "run"))


def test_the_results_do_not_depend_on_the_number_of_loader_workers(data, tmp_path):
    train(tiny(data, tmp_path / "a", "--max_steps", "4", "--num_workers", "0"))
    train(tiny(data, tmp_path / "b", "--max_steps", "4", "--num_workers", "2"))
    assert_same_training_state(state(tmp_path / "a" / "run"), state(tmp_path / "b" / "run"))


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(data, tmp_path, capsys):
    def interrupt(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    result = train(tiny(data, tmp_path / "b", "--max_steps", "7"), on_step=interrupt)
    assert result["status"] == "interrupted" and result["exit_code"] == 130
    assert "--continue_train" in capsys.readouterr().out
    assert state(tmp_path / "b" / "run")["step"] == 3
    train(tiny(data, tmp_path / "b", "--max_steps", "7", "--continue_train"))
    train(tiny(data, tmp_path / "a", "--max_steps", "7"))
    assert_same_training_state(state(tmp_path / "a" / "run"), state(tmp_path / "b" / "run"))


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    real_step = lesson.train_step

    def poisoned(*args, **kwargs):
        losses = real_step(*args, **kwargs)
        if poisoned.calls >= 3:
            losses["G_L1"] = torch.tensor(float("nan"))
        poisoned.calls += 1
        return losses
    poisoned.calls = 0
    monkeypatch.setattr(lesson, "train_step", poisoned)  # what lesson 06's fit calls
    result = train(tiny(data, tmp_path / "ck", "--max_steps", "8", "--save_latest_freq", "2"))
    assert result["status"] == "nan" and result["exit_code"] == 1 and result["step"] == 4
    err = capsys.readouterr().err
    assert "NaN or infinite at iteration 4" in err and "last good checkpoint" in err and "(iteration 2)" in err
    kept = state(tmp_path / "ck" / "run")
    assert kept["step"] == 2
    assert all(torch.isfinite(v).all() for v in kept["G"].values() if v.is_floating_point())


def test_a_diverging_learning_rate_is_caught_before_anything_is_saved(data, tmp_path, capsys):
    # D's first update with lr 1e30 makes G's adversarial loss infinite in the same iteration
    result = train(tiny(data, tmp_path / "ck", "--max_steps", "10", "--lr", "1e30", "--save_latest_freq", "1"))
    assert result["status"] == "nan" and result["exit_code"] == 1 and result["step"] == 1
    err = capsys.readouterr().err
    assert "NaN or infinite at iteration 1" in err and "nothing was saved in this run" in err
    assert not (tmp_path / "ck" / "run" / "latest_state.pt").exists()  # the diverged weights were not saved


def test_out_of_memory_gives_advice_instead_of_a_trace(data, tmp_path, monkeypatch, capsys):
    def too_big(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(lesson, "train_step", too_big)
    result = train(tiny(data, tmp_path / "ck", "--max_steps", "3"))
    assert result["status"] == "oom" and result["exit_code"] == 1
    err = capsys.readouterr().err
    assert "Out of memory" in err and "--amp" in err and "--batch_size" in err and "--crop_size" in err


def test_resume_refuses_other_architectures_and_unsafe_files(data, tmp_path):
    train(tiny(data, tmp_path / "ck", "--max_steps", "2"))
    with pytest.raises(SystemExit, match=r"trained with --ngf 4 \(you gave 8\)"):
        train(tiny(data, tmp_path / "ck", "--continue_train") + ["--ngf", "8"])
    with pytest.raises(SystemExit, match="no checkpoint .*7_state.pt.*found: latest_state.pt"):
        train(tiny(data, tmp_path / "ck", "--continue_train", "--epoch", "7"))

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))
    torch.save({"format": "p2p_lib", "G": Payload()}, tmp_path / "ck" / "run" / "latest_state.pt")
    with pytest.raises(SystemExit, match="refusing to load"):
        train(tiny(data, tmp_path / "ck", "--continue_train"))
    assert not (tmp_path / "marker").exists()


def test_sync_bn_is_refused_on_the_cpu(data, tmp_path):
    with pytest.raises(SystemExit, match="SyncBatchNorm runs only on CUDA GPUs"):
        train(tiny(data, tmp_path / "ck", "--sync_bn", "--device", "cpu"))


def test_learning_rate_policies_and_mixed_precision(data, tmp_path):
    # 2 epochs at full rate, then 2 of decay: lr 1, 1, 2/3, 1/3 (x 2e-4) during epochs 1..4
    train(tiny(data, tmp_path / "lin", "--max_steps", "20", "--amp", "bf16"))
    lrs = [r["lr_G"] for r in map(json.loads, (tmp_path / "lin" / "run" / "loss_log.jsonl").read_text().splitlines())
           if r["type"] == "epoch"]
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    assert all(torch.isfinite(v).all() for v in state(tmp_path / "lin" / "run")["G"].values()
               if v.is_floating_point())
    train(tiny(data, tmp_path / "const", "--max_steps", "15", "--lr_policy", "constant"))
    lrs = [r["lr_G"] for r in map(json.loads, (tmp_path / "const" / "run" / "loss_log.jsonl").read_text().splitlines())
           if r["type"] == "epoch"]
    assert lrs == [2e-4, 2e-4, 2e-4]


def test_the_cli_entry_point_runs_a_short_training(data, tmp_path):
    code = build_parser().parse_args(["train", *tiny(data, tmp_path / "ck", "--max_steps", "2")])
    assert code.func(code) == 0
    assert (tmp_path / "ck" / "run" / "latest_net_G.pt").exists()


def test_resume_needs_only_the_name_and_applies_new_optimisation_options(data, tmp_path):
    train(tiny(data, tmp_path / "a", "--max_steps", "8", "--seed", "3"))
    train(tiny(data, tmp_path / "b", "--max_steps", "4", "--seed", "3"))
    short = ["--dataroot", str(data), "--name", "run", "--checkpoints_dir", str(tmp_path / "b"), "--continue_train",
             "--n_epochs", "2", "--n_epochs_decay", "2", "--num_val", "0", "--no_progress", "--max_steps", "8"]
    resumed = train(short)  # architecture, data options and seed come from the checkpoint
    assert resumed["step"] == 8
    assert_same_training_state(state(tmp_path / "a" / "run"), state(tmp_path / "b" / "run"))
    assert json.loads((tmp_path / "b" / "run" / "opt.json").read_text())["ngf"] == 4
    # optimisation options given on resume apply from there on, and the log says so
    longer = train(short[:-1] + ["12", "--lr", "1e-4", "--n_epochs", "3"])
    assert longer["step"] == 12
    latest = state(tmp_path / "b" / "run")
    assert latest["options"]["lr"] == 1e-4 and latest["optimizer_G"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    records = [json.loads(line) for line in (tmp_path / "b" / "run" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if r["type"] == "resume"] == [2e-4, 1e-4]


def test_sigterm_saves_a_checkpoint_and_exits_143(data, tmp_path, capsys):
    import os
    import signal

    def terminate(step, losses):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what `timeout`, a cluster scheduler or a container stop sends

    result = train(tiny(data, tmp_path / "b", "--max_steps", "7"), on_step=terminate)
    assert result["status"] == "interrupted" and result["exit_code"] == 143 and result["step"] == 3
    assert "SIGTERM" in capsys.readouterr().out
    train(tiny(data, tmp_path / "b", "--max_steps", "7", "--continue_train"))
    train(tiny(data, tmp_path / "a", "--max_steps", "7"))
    assert_same_training_state(state(tmp_path / "a" / "run"), state(tmp_path / "b" / "run"))


def test_the_fast_settings_are_printed_and_can_be_switched_off(data, tmp_path, capsys):
    train(tiny(data, tmp_path / "ck", "--max_steps", "1", "--plain"))
    assert "float32, NCHW, plain Adam" in capsys.readouterr().out
    opts = parse(tiny(data, tmp_path / "ck", "--amp", "off", "--no_channels_last"))
    assert opts["amp"] == "off" and opts["channels_last"] is False
    assert parse(tiny(data, tmp_path / "ck"))["amp"] == "auto"  # the fast default


def test_p2p_train_with_the_course_settings_is_the_lessons_loop_weight_for_weight(tmp_path, monkeypatch):
    from p2p_lib import facades_dir
    from p2p_lib.train import COURSE_CONFIG, command_options, train_course_model
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    config = {**COURSE_CONFIG, "num_val": 2, "snapshots": 1}
    argv = ["--dataroot", str(facades_dir()), "--name", "same", "--checkpoints_dir", str(tmp_path / "ck"),
            "--max_steps", "3", "--num_val", "0", "--no_progress", *command_options(config)]
    assert train(argv)["step"] == 3
    from_command = load_checkpoint(tmp_path / "ck" / "same" / "latest_state.pt")
    from_lesson = train_course_model(config, device="cpu", verbose=False, max_steps=3)
    for name, net in (("G", from_lesson["G"]), ("D", from_lesson["D"])):
        for key, value in net.state_dict().items():
            assert torch.equal(value, from_command[name][key]), f"{name}.{key} differs"


def test_compile_compiles_both_networks_in_place_and_checkpoints_keep_their_keys(data, tmp_path, monkeypatch, capsys):
    compiled = []  # a real torch.compile needs a C++ compiler and minutes on 2 cores: record the calls instead
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    train(tiny(data, tmp_path / "ck", "--max_steps", "2", "--compile"))
    assert compiled == ["UNetGenerator", "PatchDiscriminator"]
    assert "torch.compile" in capsys.readouterr().out
    saved = state(tmp_path / "ck" / "run")
    assert not any("_orig_mod" in key for key in saved["G"]) and saved["step"] == 2
    compiled.clear()
    train(tiny(data, tmp_path / "ck2", "--max_steps", "1"))
    assert compiled == []  # off by default


@pytest.mark.parametrize("option, value, said", [
    ("--lr", "-1", "must be more than 0, got -1"), ("--lr", "nan", "expected a finite number"),
    ("--beta1", "1", "must be at least 0 and less than 1, got 1"), ("--beta1", "-0.1", "at least 0 and less than 1"),
    ("--lambda_L1", "nan", "expected a finite number"), ("--init_gain", "0", "must be more than 0"),
    ("--ngf", "0", "must be at least 1, got 0"), ("--ndf", "-4", "must be at least 1"),
    ("--load_size", "0", "at least 1"), ("--crop_size", "-1", "at least 1"), ("--n_epochs", "-1", "at least 0"),
    ("--n_epochs_decay", "x", "expected an integer"), ("--max_dataset_size", "0", "at least 1"),
    ("--max_steps", "0", "at least 1"), ("--batch_size", "0", "at least 1"), ("--num_val", "-1", "at least 0"),
    ("--seed", "-1", "at least 0"), ("--save_epoch_freq", "0", "at least 1"), ("--n_layers_D", "0", "at least 1"),
])
def test_numbers_out_of_range_are_refused_naming_the_option_and_range(tmp_path, capsys, option, value, said):
    from p2p_lib.cli import main
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck"), option, value])
    assert stopped.value.code == 2  # argparse's usage error, before anything runs
    err = capsys.readouterr().err
    assert f"argument {option}" in err and said in err and "Traceback" not in err
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("argv, message", [
    (["--n_epochs", "0", "--n_epochs_decay", "0"], "nothing to train"),
    (["--load_size", "256", "--crop_size", "512", "--netG", "unet_256"], "larger than --load_size 256"),
    (["--device", "tpu:0"], "unknown device 'tpu:0'"),
    (["--device", "cuda:99"], "cuda:99"),
    (["--gpu_ids", "7"], r"cuda:7.*\(from --gpu_ids 7\)"),
])
def test_impossible_combinations_and_devices_are_refused(data, tmp_path, argv, message):
    gpu = argv[1].removeprefix("cuda:") if argv[0] == "--gpu_ids" or argv[1].startswith("cuda:") else None
    if gpu is not None and torch.cuda.device_count() > int(gpu):
        pytest.skip(f"this machine has the GPU {argv[1]} names")
    with pytest.raises(SystemExit, match=message):
        train(tiny(data, tmp_path / "ck", *argv))
    assert not (tmp_path / "ck").exists()
