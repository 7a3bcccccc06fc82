"""p2p_lib.modelfile: the .safetensors model file (G, optionally D, options and a card) round trips,
is half precision on disk, is written atomically, refuses bad files clearly, and p2p translate / test read it."""
import json
import os

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from safetensors import safe_open

from imagefactory import aligned_pairs
from netfactory import with_trained_statistics
from p2p_lib.checkpoint import CheckpointError, load_checkpoint, load_generator
from p2p_lib.cli import main
from p2p_lib.inference import translate
from p2p_lib.modelfile import load_model_file, save_model_file
from p2p_lib.networks import define_D, define_G
from p2p_lib.train import translate_batch

OPTIONS = {"netG": "unet_128", "ngf": 4, "norm": "batch", "no_dropout": False, "input_nc": 3, "output_nc": 3,
           "netD": "basic", "n_layers_D": 3, "ndf": 4, "direction": "BtoA", "load_size": 143, "crop_size": 128,
           "preprocess": "resize_and_crop", "lr": 0.0002, "dataroot": "datasets/facades"}
# float16 keeps 11 significant bits: each weight within 2**-11 relative of its float32 value. Through the
# network that moves the [-1, 1] outputs of these small nets by < 1e-3; 5e-3 leaves room for other seeds.
FP16_OUTPUT_TOLERANCE = 5e-3


def networks(seed=0, **changes):
    torch.manual_seed(seed)
    options = {**OPTIONS, **changes}
    return with_trained_statistics(define_G(options)), define_D(options)


def stored(path):
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata(), {key: fh.get_tensor(key) for key in fh.keys()}


def test_generator_alone_round_trips_in_half_precision(tmp_path):
    G, _ = networks()
    path = save_model_file(tmp_path / "model.safetensors", G, OPTIONS, metadata={"command": "p2p train ..."})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left behind
    metadata, tensors = stored(path)
    assert metadata["format"] == "p2p_lib-model" and metadata["version"] == "1"
    assert all(key.startswith("G.") for key in tensors)
    assert tensors["G.encoder.0.0.weight"].dtype == torch.float16
    assert tensors["G.encoder.1.1.num_batches_tracked"].dtype == torch.int64
    assert tensors["G.encoder.1.1.num_batches_tracked"].item() == 1234
    options = json.loads(metadata["options"])
    assert options == {k: OPTIONS[k] for k in ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc",
                                                 "direction", "load_size", "crop_size", "preprocess")}
    model = load_model_file(path)
    assert model["D"] is None and model["card"] == {"command": "p2p train ..."} and model["options"] == options
    loaded = model["G"].state_dict()
    for name, tensor in G.state_dict().items():
        expected = tensor.half().float() if tensor.is_floating_point() else tensor
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], expected), name


def test_outputs_of_the_loaded_generator_match_the_original(tmp_path):
    G, _ = networks(1)
    half = load_model_file(save_model_file(tmp_path / "half.safetensors", G, OPTIONS))["G"]
    full = load_model_file(save_model_file(tmp_path / "full.safetensors", G, OPTIONS, dtype=torch.float32))["G"]
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    reference = translate_batch(G, x, seed=0)  # the paper's test mode: train-mode BatchNorm, seeded dropout
    assert torch.equal(translate_batch(full, x, seed=0), reference)  # float32 storage is exact
    difference = (translate_batch(half, x, seed=0) - reference).abs().max().item()
    assert 0 < difference < FP16_OUTPUT_TOLERANCE
    with torch.no_grad():
        assert (half.eval()(x) - G.eval()(x)).abs().max().item() < FP16_OUTPUT_TOLERANCE
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size


def test_generator_and_discriminator_round_trip(tmp_path):
    G, D = networks(2)
    path = save_model_file(tmp_path / "gd.safetensors", G, OPTIONS, D=D)
    metadata, tensors = stored(path)
    assert {"netD", "n_layers_D", "ndf"} <= set(json.loads(metadata["options"]))
    assert any(k.startswith("D.") for k in tensors) and tensors["D.model.0.0.weight"].dtype == torch.float16
    model = load_model_file(path, with_discriminator=True)
    for name, tensor in D.state_dict().items():
        expected = tensor.half().float() if tensor.is_floating_point() else tensor
        assert torch.equal(model["D"].state_dict()[name], expected), name
    assert load_model_file(path)["D"] is None  # D is read only when asked for


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    G1, _ = networks(3)
    save_model_file(path, G1, OPTIONS)
    before = path.read_bytes()

    def disk_full(fd):  # the new bytes are in the temporary file; the disk gives up before the swap
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model_file(path, networks(4)[0], OPTIONS)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    loaded = load_model_file(path)["G"].state_dict()
    assert torch.equal(loaded["encoder.0.0.weight"], G1.state_dict()["encoder.0.0.weight"].half().float())


def test_saving_refuses_what_could_not_be_loaded_back(tmp_path):
    G, D = networks()
    path = tmp_path / "model.safetensors"
    with pytest.raises(CheckpointError, match=r"lack \['norm'\]"):
        save_model_file(path, G, {k: v for k, v in OPTIONS.items() if k != "norm"})
    with pytest.raises(CheckpointError, match=r"lack \['netD'"):
        save_model_file(path, G, {k: v for k, v in OPTIONS.items() if k not in ("netD", "n_layers_D", "ndf")}, D=D)
    with pytest.raises(CheckpointError, match="does not fit.*shape mismatch"):
        save_model_file(path, G, {**OPTIONS, "ngf": 8})  # options that describe another network
    with torch.no_grad():
        G.encoder[0][0].weight[0, 0, 0, 0] = 1e5  # beyond float16's largest value, 65504
    with pytest.raises(CheckpointError, match="encoder.0.0.weight has values that are not finite in torch.float16"):
        save_model_file(path, G, OPTIONS)
    with pytest.raises(CheckpointError, match="metadata must be plain JSON"):
        save_model_file(path, networks()[0], OPTIONS, metadata={"when": object()})
    assert not path.exists() and list(tmp_path.iterdir()) == []


def write_raw(path, tensors, metadata):
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def test_bad_files_give_clear_errors_that_name_the_file(tmp_path):
    G, _ = networks()
    good = save_model_file(tmp_path / "good.safetensors", G, OPTIONS)
    metadata, tensors = stored(good)
    cases = {
        "missing.safetensors": "no (model file|checkpoint file or folder) at",
        "text.safetensors": "not a readable safetensors file",
        "cut.safetensors": "not a readable safetensors file: not one, or truncated",
        "foreign.safetensors": "not a p2p_lib model file \\(no 'format' metadata",
        "other.safetensors": "not a p2p_lib model file \\(format='diffusers'",
        "future.safetensors": "version '2'",
        "no_options.safetensors": "no 'options' metadata",
        "bad_options.safetensors": "'options' metadata is not valid JSON",
        "few_options.safetensors": r"options lack \['ngf'\]",
        "no_generator.safetensors": "holds no generator",
        "mismatch.safetensors": "generator \\(G in mismatch.safetensors\\) does not fit.*shape mismatch",
    }
    (tmp_path / "text.safetensors").write_text("not a model file")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    write_raw(tmp_path / "foreign.safetensors", tensors, None)
    write_raw(tmp_path / "other.safetensors", tensors, {**metadata, "format": "diffusers"})
    write_raw(tmp_path / "future.safetensors", tensors, {**metadata, "version": "2"})
    write_raw(tmp_path / "no_options.safetensors", tensors, {k: v for k, v in metadata.items() if k != "options"})
    write_raw(tmp_path / "bad_options.safetensors", tensors, {**metadata, "options": "{netG: unet_128"})
    few = {k: v for k, v in json.loads(metadata["options"]).items() if k != "ngf"}
    write_raw(tmp_path / "few_options.safetensors", tensors, {**metadata, "options": json.dumps(few)})
    write_raw(tmp_path / "no_generator.safetensors", {"D.x": torch.zeros(1)}, metadata)
    wider = json.dumps({**json.loads(metadata["options"]), "ngf": 8})
    write_raw(tmp_path / "mismatch.safetensors", tensors, {**metadata, "options": wider})
    for name, message in cases.items():
        for loader in (load_model_file, load_generator):
            with pytest.raises(CheckpointError, match=message) as info:
                loader(tmp_path / name)
            assert name in str(info.value)
    with pytest.raises(CheckpointError, match="holds no discriminator.*inference only"):
        load_model_file(good, with_discriminator=True)


def test_load_generator_reads_model_files_by_extension_or_by_header(tmp_path):
    G, _ = networks(5)
    path = save_model_file(tmp_path / "model.safetensors", G, OPTIONS)
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(path.read_bytes())
    expected = load_model_file(path)["G"].state_dict()
    for source in (path, renamed):
        G2, options = load_generator(source)
        assert options["crop_size"] == 128 and all(torch.equal(v, expected[k]) for k, v in G2.state_dict().items())
    with pytest.raises(CheckpointError, match="is a .safetensors model file, not a torch checkpoint"):
        load_checkpoint(renamed)
    messages = []
    _, options = load_generator(path, overrides={"no_dropout": True, "ngf": None}, warn=messages.append)
    assert messages == ["--no_dropout True overrides the checkpoint's no_dropout=False"] and options["no_dropout"]


@pytest.fixture
def model_file(tmp_path):
    G, D = networks(6, ngf=2)
    return save_model_file(tmp_path / "facades" / "model.safetensors", G, {**OPTIONS, "ngf": 2}, D=D)


def test_p2p_translate_takes_a_model_file(model_file, tmp_path):
    picture = tmp_path / "labels.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "photo.png"
    assert main(["translate", str(picture), "--output", str(out), "--checkpoint", str(model_file),
                 "--device", "cpu"]) == 0
    # what the CLI wrote is the model file's generator, at the saved crop size 128, seed 0
    expected = translate(load_model_file(model_file)["G"], picture, seed=0, size=128)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    assert Image.open(out).size == (90, 60)


def test_p2p_test_takes_a_model_file(model_file, tmp_path):
    data = aligned_pairs(tmp_path / "data", counts=(("test", 2),))
    results = tmp_path / "results"
    assert main(["test", "--dataroot", str(data), "--checkpoint", str(model_file), "--results_dir", str(results),
                 "--device", "cpu"]) == 0
    metrics = json.loads((results / "model" / "test_latest" / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["direction"] == "BtoA" and metrics["crop_size"] == 128
