"""`p2p test` and `p2p translate` end to end, on a tiny checkpoint and a tiny synthetic dataset."""
import html
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from p2p_lib.checkpoint import build_generator, generator_checkpoint, save_checkpoint
from p2p_lib.cli import main
from p2p_lib.data import to_tensor
from p2p_lib.metrics import l1_distance, to_unit_range

OPTIONS = {"netG": "unet_128", "ngf": 2, "norm": "batch", "no_dropout": False, "input_nc": 3, "output_nc": 3,
           "direction": "BtoA", "load_size": 143, "crop_size": 128, "preprocess": "resize_and_crop"}
SAMPLES = ["pair_0", "a&b <odd>", "pair_2", "pair_3"]  # one name that HTML must escape


@pytest.fixture
def run(tmp_path):
    """A tiny checkpoint (CHECKPOINTS/tiny/latest_net_G.pt), a 4-pair test split and paths for the results."""
    torch.manual_seed(0)
    G = build_generator(OPTIONS)
    with torch.no_grad():  # running statistics a trained network could have
        for name, buf in G.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / "checkpoints" / "tiny" / "latest_net_G.pt", generator_checkpoint(G, OPTIONS))
    split = tmp_path / "data" / "test"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for sample in SAMPLES:
        left = rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)  # A: the target with BtoA
        right = np.roll(left, 5, axis=1) // 2  # B: the input with BtoA
        Image.fromarray(np.concatenate([left, right], axis=1)).save(split / f"{sample}.png")
    return {"root": tmp_path, "data": tmp_path / "data", "checkpoints": tmp_path / "checkpoints",
            "results": tmp_path / "results", "G": G}


def p2p_test(run, *extra):
    return main(["test", "--dataroot", str(run["data"]), "--name", "tiny", "--checkpoints_dir", str(run["checkpoints"]),
                 "--results_dir", str(run["results"]), "--device", "cpu", *extra])


def test_p2p_test_writes_images_an_index_and_metrics_that_match_the_images(run, capsys):
    assert p2p_test(run) == 0
    out = capsys.readouterr().out
    web = run["results"] / "tiny" / "test_latest"
    metrics = json.loads((web / "metrics.json").read_text())
    assert metrics["count"] == 4 and metrics["eval_mode"] is False and metrics["direction"] == "BtoA"
    assert f"L1 {metrics['L1']:.4f}" in out and "train mode" in out
    for sample in SAMPLES:
        for kind in ("real_A", "fake_B", "real_B"):
            assert Image.open(web / "images" / f"{sample}_{kind}.png").size == (128, 128)
    # real_A is the input after the direction: the right half (B) of the file, resized to 128 (no crop)
    pair = Image.open(run["data"] / "test" / "pair_0.png")
    expected_input = pair.crop((70, 0, 140, 70)).resize((128, 128), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(Image.open(web / "images" / "pair_0_real_A.png")), np.asarray(expected_input))
    # the saved metrics are those of the saved images (up to the 8-bit rounding of the PNGs)
    for row in metrics["per_image"]:
        fake = to_tensor(Image.open(web / "images" / f"{row['name']}_fake_B.png"))
        real = to_tensor(Image.open(web / "images" / f"{row['name']}_real_B.png"))
        assert l1_distance(to_unit_range(fake), to_unit_range(real)).item() == pytest.approx(row["L1"], abs=2e-3)
    assert metrics["L1"] == pytest.approx(np.mean([row["L1"] for row in metrics["per_image"]]))
    assert metrics["detail"] == pytest.approx(np.mean([row["detail"] for row in metrics["per_image"]]))
    assert set(metrics["color"]) == {"L", "a", "b"} and all(0 <= v <= 1 for v in metrics["color"].values())
    assert f"detail ratio {metrics['detail']:.3f}" in out and f"L {metrics['color']['L']:.3f}" in out
    page = (web / "index.html").read_text()
    assert html.escape("a&b <odd>") in page and "a&b <odd>" not in page
    assert 'src="images/a%26b%20%3Codd%3E_fake_B.png"' in page
    assert page.count("<tr>") == 5  # the header and one row per sample


def test_p2p_test_is_repeatable_with_a_seed_and_eval_mode_differs(run):
    web = run["results"] / "tiny" / "test_latest"
    assert p2p_test(run, "--num_test", "2", "--seed", "3") == 0
    first = json.loads((web / "metrics.json").read_text())
    assert p2p_test(run, "--num_test", "2", "--seed", "3") == 0
    assert json.loads((web / "metrics.json").read_text())["per_image"] == first["per_image"]
    assert first["count"] == 2
    assert p2p_test(run, "--num_test", "2", "--eval") == 0
    evaluated = json.loads((web / "metrics.json").read_text())
    assert evaluated["eval_mode"] is True and evaluated["L1"] != pytest.approx(first["L1"])


def test_official_display_options_are_accepted_with_a_notice_and_overrides_warn(run, capsys):
    assert p2p_test(run, "--num_test", "1", "--display_winsize", "256", "--serial_batches", "--gpu_ids", "-1",
                    "--no_dropout", "--direction", "AtoB") == 0
    err = capsys.readouterr().err
    assert "--display_winsize is an option of the official code" in err and "--serial_batches" in err
    assert "--no_dropout True overrides the checkpoint's no_dropout=False" in err
    assert "--direction AtoB overrides the checkpoint's direction='BtoA'" in err
    metrics = json.loads((run["results"] / "tiny" / "test_latest" / "metrics.json").read_text())
    assert metrics["direction"] == "AtoB"


def test_an_architecture_override_that_does_not_fit_the_weights_is_a_clear_error(run, capsys):
    assert p2p_test(run, "--ngf", "4") == 1
    err = capsys.readouterr().err
    assert "--ngf 4 overrides the checkpoint's ngf=2" in err and "shape mismatch" in err


def test_missing_and_broken_checkpoints_are_clear_errors(run, capsys):
    assert p2p_test(run, "--epoch", "7") == 1
    err = capsys.readouterr().err
    assert "no generator checkpoint for --name tiny --epoch 7" in err and "epochs saved in" in err and "latest" in err
    broken = run["root"] / "broken.pt"  # an interrupted copy: the first half of a real checkpoint
    whole = (run["checkpoints"] / "tiny" / "latest_net_G.pt").read_bytes()
    broken.write_bytes(whole[:len(whole) // 2])
    assert main(["test", "--dataroot", str(run["data"]), "--checkpoint", str(broken), "--results_dir",
                 str(run["results"]), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "not a readable checkpoint" in err
    assert not (run["results"] / "broken").exists()
    discriminator = run["root"] / "latest_net_D.pth"
    torch.save(OrderedDict([("model.0.weight", torch.zeros(8, 6, 4, 4))]), discriminator)
    assert main(["translate", str(discriminator), "--output", str(run["root"] / "x.png"), "--checkpoint",
                 str(discriminator)]) == 1
    assert "neither a p2p_lib checkpoint nor an official pix2pix generator" in capsys.readouterr().err
    assert main(["test", "--dataroot", str(run["data"]), "--checkpoint", str(broken), "--model", "cycle_gan"]) == 2


def write_inputs(root):
    folder = root / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (201, 300, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (64, 40), dtype=np.uint8)).save(folder / "grey.jpg")  # L: becomes RGB
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    single = root / "single.jpg"
    Image.fromarray(rng.integers(0, 256, (50, 77, 3), dtype=np.uint8)).save(single)
    return folder, single


def p2p_translate(run, *args):
    return main(["translate", *args, "--name", "tiny", "--checkpoints_dir", str(run["checkpoints"]), "--device", "cpu"])


def test_p2p_translate_writes_each_input_at_its_size_names_bad_files_and_carries_on(run, capsys):
    folder, single = write_inputs(run["root"])
    out = run["root"] / "out"
    assert p2p_translate(run, str(folder), str(single), "--output", str(out)) == 1  # broken.png failed
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "2 problem" not in captured.out
    assert Image.open(out / "wide.png").size == (300, 201)
    assert Image.open(out / "grey.png").size == (40, 64)
    assert Image.open(out / "single.png").size == (77, 50)
    assert not (out / "broken.png").exists()
    assert "3 image(s) written" in captured.out and "1 problem(s)" in captured.out

    before = (out / "wide.png").read_bytes()
    assert p2p_translate(run, str(folder / "wide.png"), "--output", str(out / "wide.png"), "--seed", "9") == 1
    assert "exists already; not overwritten" in capsys.readouterr().err
    assert (out / "wide.png").read_bytes() == before
    assert p2p_translate(run, str(folder / "wide.png"), "--output", str(out / "wide.png"), "--seed", "9",
                         "--overwrite") == 0
    assert (out / "wide.png").read_bytes() != before  # another seed: another dropout sample


def test_p2p_translate_one_file_to_one_file_repeatably_in_both_fits(run):
    _, single = write_inputs(run["root"])
    outputs = []
    for name, extra in [("a.png", []), ("b.png", []), ("c.png", ["--fit", "pad"]), ("d.png", ["--eval"])]:
        assert p2p_translate(run, str(single), "--output", str(run["root"] / name), *extra) == 0
        outputs.append(np.asarray(Image.open(run["root"] / name)))
        assert outputs[-1].shape == (50, 77, 3)
    assert np.array_equal(outputs[0], outputs[1])  # the default seed 0: the same sample twice
    assert not np.array_equal(outputs[0], outputs[2]) and not np.array_equal(outputs[0], outputs[3])
    assert p2p_translate(run, str(run["root"] / "nothing.png"), "--output", str(run["root"] / "e.png")) == 1


def test_p2p_translate_loads_an_official_checkpoint(run, tmp_path):
    from official_networks import define_unet  # tests/official_networks.py: the official UnetGenerator

    torch.manual_seed(1)
    official = define_unet(3, 3, 7, 2, "batch", use_dropout=True)
    path = tmp_path / "latest_net_G.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in official.state_dict().items()), path)  # GPU-style names
    _, single = write_inputs(tmp_path)
    assert main(["translate", str(single), "--output", str(tmp_path / "o.png"), "--checkpoint", str(path),
                 "--eval", "--device", "cpu"]) == 0
    produced = np.asarray(Image.open(tmp_path / "o.png"))
    assert produced.shape == (50, 77, 3)
    # the same translation by the official network itself, resized to 128 and back as translate does
    picture = Image.open(single).convert("RGB").resize((128, 128), Image.Resampling.BICUBIC)
    with torch.no_grad():
        fake = official.eval()(to_tensor(picture)[None])[0]
    expected = Image.fromarray(((fake.clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy())
    expected = np.asarray(expected.resize((77, 50), Image.Resampling.BICUBIC))
    assert np.abs(produced.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("command", ["test", "translate"])
def test_help_explains_the_options(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for option in ("--name", "--checkpoints_dir", "--epoch", "--checkpoint", "--eval", "--seed", "example"):
        assert option in text
    if command == "test":
        for option in ("--dataroot", "--results_dir", "--phase", "--num_test", "--load_size", "--direction"):
            assert option in text
    else:
        assert "--output" in text and "never overwritten" in text and "--fit" in text


def test_p2p_train_then_p2p_test_needs_no_repeated_options(tmp_path, capsys):
    """The architecture, direction, crop size and dataroot come from the checkpoint `p2p train` wrote."""
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        folder = tmp_path / "data" / split
        folder.mkdir(parents=True)
        for i in range(2):
            a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(folder / f"p{i}.png")
    checkpoints = str(tmp_path / "checkpoints")
    assert main(["train", "--dataroot", str(tmp_path / "data"), "--name", "run", "--checkpoints_dir", checkpoints,
                 "--netG", "unet_128", "--ngf", "4", "--ndf", "4", "--load_size", "128", "--crop_size", "128",
                 "--direction", "BtoA", "--num_val", "0", "--max_steps", "2", "--no_progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    results = tmp_path / "results"
    assert main(["test", "--name", "run", "--checkpoints_dir", checkpoints, "--results_dir", str(results),
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    metrics = json.loads((results / "run" / "test_latest" / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["direction"] == "BtoA" and metrics["crop_size"] == 128
    assert Image.open(results / "run" / "test_latest" / "images" / "p0_fake_B.png").size == (128, 128)


def test_bad_counts_and_devices_are_refused_before_anything_runs(run, capsys):
    for option, value, said in (("--num_test", "-1", "must be at least 1, got -1"),
                                ("--max_dataset_size", "0", "must be at least 1"), ("--seed", "x", "expected an integer")):
        with pytest.raises(SystemExit) as stopped:
            p2p_test(run, option, value)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and f"argument {option}" in err and said in err
    assert main(["test", "--dataroot", str(run["data"]), "--name", "tiny", "--checkpoints_dir",
                 str(run["checkpoints"]), "--results_dir", str(run["results"]), "--device", "gpu0"]) == 1
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    assert not run["results"].exists()


def test_results_and_outputs_that_cannot_be_written_are_one_line_each(run, capsys):
    in_the_way = run["root"] / "a_file"
    in_the_way.write_text("not a folder")
    assert p2p_test(run, "--results_dir", str(in_the_way)) == 1
    err = capsys.readouterr().err
    assert f"cannot make the results folder {in_the_way}" in err and f"{in_the_way} is a file" in err
    assert "Traceback" not in err
    picture = run["root"] / "in.png"
    Image.new("RGB", (64, 64), "blue").save(picture)
    assert p2p_translate(run, str(picture), "--output", str(in_the_way / "out.png")) == 1
    err = capsys.readouterr().err
    assert "cannot make the output folder" in err and f"{in_the_way} is a file" in err and "Traceback" not in err
    assert in_the_way.read_text() == "not a folder"


def test_p2p_test_eval_writes_what_a_plain_G_eval_computes(run):
    """--eval: the fake_B images are G.eval() of the input resized to the crop size (128), within a grey level
    (the first pair in name order is "a&b <odd>")."""
    assert p2p_test(run, "--num_test", "1", "--eval") == 0
    images = run["results"] / "tiny" / "test_latest" / "images"
    real_A = np.asarray(Image.open(images / "a&b <odd>_real_A.png"), dtype=np.float32)  # BtoA: the right half, 128 px
    G = run["G"].eval()
    with torch.no_grad():
        fake = G(torch.from_numpy(real_A).permute(2, 0, 1)[None] / 255 * 2 - 1)[0]
    expected = ((fake.clamp(-1, 1) + 1) / 2 * 255).round().permute(1, 2, 0).numpy()
    written = np.asarray(Image.open(images / "a&b <odd>_fake_B.png"), dtype=np.float32)
    assert written.shape == (128, 128, 3) and np.abs(written - expected).max() <= 1
