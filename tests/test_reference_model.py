"""tools/reference_model.py: the checkerboard measure, the mean-photo baseline, the training command, and an
export end to end from a tiny fake training state on a tiny dataset."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from imagefactory import aligned_pairs
from p2p_lib.checkpoint import FORMAT, VERSION, CheckpointError, generator_checkpoint, save_checkpoint
from p2p_lib.modelfile import load_model_file
from p2p_lib.networks import define_D, define_G

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reference_model", ROOT / "tools" / "reference_model.py")
reference_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference_model)


def smooth_images(count=3, size=32, seed=0):
    "Slow gradients and broad blobs: photo-like in having little energy at the 2-pixel period."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = [np.stack([np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform() * y) + c) for c in range(3)])
              for _ in range(count)]
    return torch.tensor(np.array(images)) * 0.5


def test_a_period_2_checkerboard_scores_far_above_a_smooth_image():
    smooth = smooth_images()
    checker = torch.tensor(np.indices((32, 32)).sum(0) % 2 * 2.0 - 1).expand(3, 3, 32, 32)
    assert reference_model.nyquist_energy_fraction(checker).tolist() == pytest.approx([1.0] * 3)
    assert reference_model.checkerboard_ratio(checker, smooth) > 100
    # a faint checkerboard on the smooth images: clearly above 1, and more of it scores higher
    faint, strong = smooth + 0.02 * checker, smooth + 0.1 * checker
    assert 1.5 < reference_model.checkerboard_ratio(faint, smooth) < reference_model.checkerboard_ratio(strong, smooth)


def test_identical_sets_give_one_and_brightness_changes_nothing():
    images, photos = smooth_images(seed=1) + 0.05 * torch.randn(3, 3, 32, 32), smooth_images(seed=2)
    assert reference_model.checkerboard_ratio(photos, photos) == pytest.approx(1.0)
    ratio = reference_model.checkerboard_ratio(images, photos)
    assert reference_model.checkerboard_ratio(images + 0.3, photos) == pytest.approx(ratio, rel=1e-9)
    assert reference_model.checkerboard_ratio(images, photos - 0.2) == pytest.approx(ratio, rel=1e-9)
    flat = torch.zeros(2, 3, 32, 32)
    assert reference_model.nyquist_energy_fraction(flat).tolist() == [0.0, 0.0]  # no energy: no checkerboard
    with pytest.raises(ValueError, match="even sizes"):
        reference_model.nyquist_energy_fraction(torch.zeros(1, 3, 31, 32))


def test_the_mean_photo_baseline_is_the_per_pixel_mean_of_the_training_photos(tmp_path):
    root = aligned_pairs(tmp_path / "data", counts=(("train", 5),), size=64)
    _, photos = reference_model.load_split(root, "train", "BtoA", 128)
    assert photos.shape == (5, 3, 128, 128)
    # BtoA: the photo (target) is the left half of each file; resized to 128 with bicubic, as training does
    expected = np.mean([np.asarray(Image.open(path).crop((0, 0, 64, 64)).resize((128, 128), Image.Resampling.BICUBIC),
                                   dtype=np.float64) for path in sorted((root / "train").iterdir())], axis=0)
    mean = reference_model.mean_photo(photos)
    assert np.abs((mean.permute(1, 2, 0).numpy() + 1) / 2 * 255 - expected).max() < 1e-3
    # the mean is the best single answer in squared error: better than any one training photo given for all
    def mse(guess):
        return (photos - guess).pow(2).mean().item()
    assert all(mse(mean) < mse(photo) for photo in photos)


def test_the_training_command_is_the_reference_recipe_and_resumes(tmp_path, monkeypatch):
    arguments = reference_model.train_arguments(tmp_path)
    assert arguments[arguments.index("--checkpoints_dir") + 1] == str(tmp_path)
    assert "--continue_train" not in arguments and "--netG" in arguments and "--seed" in arguments
    save_checkpoint(tmp_path / "facades_reference" / "latest_state.pt", {"step": torch.tensor(1)})
    assert reference_model.train_arguments(tmp_path)[-1] == "--continue_train"
    calls = []
    monkeypatch.setattr("p2p_lib.cli.main", lambda argv: calls.append(argv) or 0)
    assert reference_model.main(["train", "--checkpoints_dir", str(tmp_path)]) == 0
    assert calls == [["train", *reference_model.train_arguments(tmp_path)]]


OPTIONS = {"netG": "unet_128", "ngf": 8, "netD": "basic", "n_layers_D": 3, "ndf": 8, "norm": "batch",
           "no_dropout": False, "input_nc": 3, "output_nc": 3, "direction": "BtoA", "load_size": 143,
           "crop_size": 128, "preprocess": "resize_and_crop", "n_epochs": 1, "n_epochs_decay": 1, "seed": 0}


def fake_run(tmp_path):
    """A training state as engine.py's save() writes it (tiny networks, one epoch of two done), its log, and data."""
    data = aligned_pairs(tmp_path / "data", counts=(("train", 4), ("val", 3)), size=64)
    run = tmp_path / "checkpoints" / "facades_reference"
    options = {**OPTIONS, "dataroot": str(data), "checkpoints_dir": str(run.parent), "name": run.name}
    torch.manual_seed(0)
    G, D = define_G(options), define_D(options)
    opt_G, opt_D = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    sched_G, sched_D = (torch.optim.lr_scheduler.LambdaLR(o, lambda epoch: 1.0) for o in (opt_G, opt_D))
    state = {"format": FORMAT, "version": VERSION, "kind": "train_state", "options": options,
             "G": G.state_dict(), "D": D.state_dict(), "optimizer_G": opt_G.state_dict(),
             "optimizer_D": opt_D.state_dict(), "scheduler_G": sched_G.state_dict(),
             "scheduler_D": sched_D.state_dict(), "epoch": 1, "epoch_iter": 4, "epoch_complete": True, "step": 4,
             "rng": {"torch": torch.get_rng_state()}, "rng_per_rank": None, "scaler": None}
    save_checkpoint(run / "latest_state.pt", state)
    log = [{"type": "train", "epoch": 1, "step": 2, "seconds": 99.0}, {"type": "epoch", "epoch": 1, "step": 4,
           "seconds": 12.5}, {"type": "epoch", "epoch": 2, "step": 8, "seconds": 20.0}]  # epoch 2: after the state
    (run / "loss_log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + '\n{"type": "ep')  # a cut last line
    save_checkpoint(tmp_path / "copy_net_G.pt", generator_checkpoint(G, options))
    return run, G, D


def test_export_writes_the_model_file_card_readme_and_samples(tmp_path, capsys):
    run, G, D = fake_run(tmp_path)
    out = tmp_path / "models" / "facades_label2photo"
    assert reference_model.main(["export", "--run", str(run), "--out", str(out), "--code-version", "abc123",
                                 "--compare", f"float32 copy={tmp_path / 'copy_net_G.pt'}"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "card.json", "model.safetensors", "samples.png"]
    model = load_model_file(out / "model.safetensors", with_discriminator=True)
    for net, shipped in ((G, model["G"]), (D, model["D"])):
        for name, tensor in net.state_dict().items():
            expected = tensor.half().float() if tensor.is_floating_point() else tensor
            assert torch.equal(shipped.state_dict()[name], expected), name
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert fh.get_tensor("G.encoder.0.0.weight").dtype == torch.float16
    assert model["card"]["code_version"]["commit"] == "abc123" and model["card"]["step"] == 4

    card = json.loads((out / "card.json").read_text())
    models = card["evaluation"]["models"]
    assert set(models) == {"reference", "float32 copy", "mean training photo"} and card["evaluation"]["pairs"] == 3
    for scores in models.values():
        assert {"L1", "PSNR", "SSIM", "color_histogram_intersection", "checkerboard_ratio"} <= set(scores)
        assert 0 <= scores["L1"] <= 1 and -1 <= scores["SSIM"] <= 1 and scores["checkerboard_ratio"] > 0
    assert models["float32 copy"]["L1"] == pytest.approx(models["reference"]["L1"], abs=5e-3)  # fp16 storage only
    training = card["training"]
    assert training["wall_time"]["seconds"] == 12.5 and training["wall_time"]["unreadable_lines"] == 1
    assert training["wall_time"]["uncounted_steps"] == 0  # the state is at the end of the counted epoch
    assert (training["steps"], training["epochs_completed"], training["epochs_planned"]) == (4, 1, 2)
    assert training["complete"] is False and training["code_version"]["source"] == "given with --code-version"
    assert training["command"].startswith("p2p train --dataroot datasets/facades --direction BtoA")
    assert training["run_differs_from_command"]  # the fake run's ngf 8 is not the recipe's 32: said, not hidden
    assert [a["passed"] for a in card["acceptance"]] == [
        models["reference"]["L1"] < models["mean training photo"]["L1"], models["reference"]["checkerboard_ratio"] <= 1.5]

    readme = (out / "README.md").read_text()
    assert training["command"] in readme and "abc123" in readme and "INCOMPLETE" in readme
    assert sum(line.startswith(("- PASS", "- FAIL")) for line in readme.splitlines()) == 2
    assert Image.open(out / "samples.png").size == (3 * 128, 3 * 128)  # 3 val pairs: label | output | photo
    printed = capsys.readouterr().out
    assert "(a) L1 of the reference model" in printed and "(b) checkerboard" in printed


@pytest.mark.parametrize("state, done", [
    ({"epoch": 30, "epoch_complete": True}, 30),    # an older engine: the epoch of the last step, and a flag
    ({"epoch": 6, "epoch_complete": False}, 5),
    ({"epoch": 31, "epoch_iter": 0}, 30),           # p2p_lib.train.fit: the epoch in progress (the next one)
    ({"epoch": 6, "epoch_iter": 200}, 5),
    ({"epoch": 12, "epoch_iter": 0, "options": {"epoch_count": 5}}, 7),  # --epoch_count 5: the first is epoch 5
])
def test_epochs_completed_reads_both_state_formats(state, done):
    assert reference_model.epochs_completed({"options": {}, **state}) == done


def test_a_failed_criterion_is_said_plainly():
    ours = {"L1": 0.30, "checkerboard_ratio": 2.4}
    lines = reference_model.acceptance({"reference": ours, "mean training photo": {"L1": 0.25}})
    assert [line["passed"] for line in lines] == [False, False]
    assert "FAILS" in lines[0]["detail"] and "0.3000 vs 0.2500" in lines[0]["detail"]
    assert "2.4x the real photos' share" in lines[1]["detail"]
    lines = reference_model.acceptance({"reference": {"L1": 0.2, "checkerboard_ratio": 1.1},
                                        "mean training photo": {"L1": 0.25}})
    assert [line["passed"] for line in lines] == [True, True] and "FAILS" not in str(lines)


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert reference_model.main(["export", "--run", str(tmp_path / "nowhere")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="expected LABEL=CHECKPOINT"):
        reference_model.parse_compare(["course.pt"])
    big = tmp_path / "big_net_G.pt"  # a unet_256 cannot translate the 128-px val images: said, not a traceback
    save_checkpoint(big, generator_checkpoint(define_G({**OPTIONS, "netG": "unet_256", "ngf": 2}), OPTIONS | {
        "netG": "unet_256", "ngf": 2}))
    with pytest.raises(CheckpointError, match="--compare big: .* multiples of 256 px"):
        reference_model.load_compare({"big": big}, 128)


def test_the_committed_reference_model_loads_offline_and_p2p_translate_uses_it(tmp_path):
    from p2p_lib.checkpoint import load_generator
    from p2p_lib.cli import main as p2p
    from p2p_lib.train import REFERENCE_MODEL, reference_model
    assert REFERENCE_MODEL.stat().st_size < 40e6  # half precision, tens of MB at most
    loaded = reference_model(with_discriminator=True)
    card = loaded["card"]
    assert loaded["options"]["netG"] == "unet_128" and loaded["options"]["direction"] == "BtoA"
    assert all(p.dtype == torch.float32 for p in loaded["G"].parameters())  # cast for CPU inference
    assert {"reference", "mean training photo"} <= set(card["evaluation"]["models"])
    G, options = load_generator(REFERENCE_MODEL)
    assert options["ngf"] == card["options"]["ngf"]
    labels = Image.new("RGB", (128, 128), (0, 0, 255))
    labels.save(tmp_path / "labels.png")
    assert p2p(["translate", str(tmp_path / "labels.png"), "--output", str(tmp_path / "photo.png"),
                "--checkpoint", str(REFERENCE_MODEL)]) == 0
    assert Image.open(tmp_path / "photo.png").size == (128, 128)


def test_average_weights_is_the_mean_of_float_tensors_and_refuses_different_networks():
    first = {"w": torch.tensor([1.0, 2.0]), "bn.num_batches_tracked": torch.tensor(3)}
    second = {"w": torch.tensor([3.0, 6.0]), "bn.num_batches_tracked": torch.tensor(7)}
    mean = reference_model.average_weights([first, second])
    assert mean["w"].tolist() == [2.0, 4.0] and mean["w"].dtype == torch.float32
    assert mean["bn.num_batches_tracked"].item() == 7  # a counter, not a weight: the last one's
    with pytest.raises(CheckpointError, match="not hold the same network"):
        reference_model.average_weights([first, {"w": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(1)}])
    with pytest.raises(CheckpointError, match="no checkpoints"):
        reference_model.average_weights([])


def test_export_ships_the_average_of_the_epoch_checkpoints_and_scores_the_last_weights_beside_it(tmp_path):
    run, G, D = fake_run(tmp_path)
    state = torch.load(run / "latest_state.pt", weights_only=True)
    torch.manual_seed(1)
    G_epoch1 = define_G(state["options"])
    save_checkpoint(run / "1_state.pt", {**state, "G": G_epoch1.state_dict(), "step": 2})
    save_checkpoint(run / "7_state.pt", {**state, "G": define_G(state["options"]).state_dict(), "step": 99})  # later
    aligned_pairs(Path(state["options"]["dataroot"]), counts=(("test", 2),), size=64)
    out = tmp_path / "out"
    assert reference_model.main(["export", "--run", str(run), "--out", str(out), "--code-version", "abc"]) == 0
    shipped = load_model_file(out / "model.safetensors")["G"].state_dict()
    for name, tensor in G.state_dict().items():
        if tensor.is_floating_point():  # epoch 1 and the newer latest state, not the abandoned 7_state.pt
            expected = ((tensor.double() + G_epoch1.state_dict()[name].double()) / 2).float().half().float()
            assert torch.allclose(shipped[name], expected, atol=1e-3), name
    card = json.loads((out / "card.json").read_text())
    assert [c["file"] for c in card["training"]["averaged_checkpoints"]] == ["1_state.pt", "latest_state.pt"]
    assert "DEVIATION" in card["training"]["generator"]
    assert set(card["evaluation"]["models"]) == {"reference", reference_model.LAST_WEIGHTS, "mean training photo"}
    assert card["evaluation"]["test"]["pairs"] == 2 and "reference" in card["evaluation"]["test"]["models"]
    assert card["evaluation"]["models"]["reference"] != card["evaluation"]["models"][reference_model.LAST_WEIGHTS]
    readme = (out / "README.md").read_text()
    assert "uniform average of the generator weights of 2 checkpoints" in readme and "/test split (2 pairs)" in readme

    assert reference_model.main(["export", "--run", str(run), "--out", str(out), "--average", "none"]) == 0
    shipped = load_model_file(out / "model.safetensors")["G"].state_dict()
    assert all(torch.equal(shipped[k], t.half().float()) for k, t in G.state_dict().items() if t.is_floating_point())
