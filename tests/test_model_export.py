"""`p2p export` (p2p_lib.modelexport): the official .pth loads into the official network, the safetensors
model file round trips, the torch.export .pt2 and the ONNX graph compute what PyTorch computes in the
test-time mode they state (at the training size and at another one), and bad input is one clear line.

Tolerance: on these [-1, 1] outputs the pt2 and onnxruntime graphs differ from PyTorch by ~3e-7 (float32
reordering); GRAPH_TOLERANCE leaves room for other seeds and bigger nets. Dropout is random in train
mode, so exactness is checked with dropout off, and the random graph for doing something."""
import copy
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from netfactory import with_trained_statistics
from official_networks import ResnetGenerator as OfficialResnetGenerator
from official_networks import define_unet, get_norm_layer
from p2p_lib.checkpoint import build_generator, generator_checkpoint, load_generator, save_checkpoint
from p2p_lib.cli import main
from p2p_lib.modelexport import load_pt2, prepare_for_export, save_onnx
from p2p_lib.modelfile import load_model_file
from p2p_lib.networks import define_D

OPTIONS = {"netG": "unet_128", "ngf": 2, "norm": "batch", "no_dropout": False, "input_nc": 3, "output_nc": 3,
           "netD": "basic", "n_layers_D": 3, "ndf": 2, "adversarial": "cgan", "model": "pix2pix",
           "direction": "BtoA", "load_size": 143, "crop_size": 128, "preprocess": "resize_and_crop"}
GRAPH_TOLERANCE = 1e-4
SIZES = [(1, 128, 128), (2, 256, 128)]  # the training size, and another multiple of 2**7 with a batch of 2


def training_state(G, D, options):
    "The keys load_checkpoint demands of a train_state; optimizer and RNG contents do not matter to an export."
    return {"format": "p2p_lib", "version": 1, "kind": "train_state", "options": options,
            "G": G.state_dict(), "D": D.state_dict(), "optimizer_G": {}, "optimizer_D": {},
            "scheduler_G": {}, "scheduler_D": {}, "epoch": 2, "step": 10, "rng": {}}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return with_trained_statistics(build_generator(OPTIONS)), define_D(OPTIONS)


@pytest.fixture
def run(tmp_path, nets):
    """CHECKPOINTS/tiny/ with latest_net_G.pt and latest_state.pt (G and D)."""
    G, D = nets
    folder = tmp_path / "checkpoints" / "tiny"
    save_checkpoint(folder / "latest_net_G.pt", generator_checkpoint(G, OPTIONS))
    save_checkpoint(folder / "latest_state.pt", training_state(G, D, OPTIONS))
    return {"checkpoints": tmp_path / "checkpoints", "out": tmp_path / "out", "G": G, "D": D}


def export(run, *args):
    return main(["export", "--name", "tiny", "--checkpoints_dir", str(run["checkpoints"]), *args])


def without_dropout(G, mode):
    "PyTorch's own computation of `mode` with dropout off (a copy: train-mode BN would update G's statistics)."
    ref = copy.deepcopy(G).train(mode != "eval")
    for module in ref.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return ref


def inputs(shape, seed=1):
    batch, height, width = shape
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- official

def test_official_export_loads_strictly_into_the_official_unet_and_computes_the_same(run, capsys):
    path = run["out"] / "tiny_official" / "latest_net_G.pth"
    assert export(run, "--format", "official", "--output", str(path)) == 0
    out = capsys.readouterr().out
    assert "--name tiny_official" in out and f"--checkpoints_dir {run['out']}" in out
    commands = [line for line in out.splitlines() if "python test.py" in line]
    assert len(commands) == 2 and all("--netG unet_128 --ngf 2 --norm batch --input_nc 3 --output_nc 3" in c
                                      and "--eval" not in c and "--no_dropout" not in c for c in commands)
    assert "weights only" in out and "train mode" in out
    official = define_unet(3, 3, 7, 2, "batch", use_dropout=False)
    official.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for mode in ("eval", "train"):
        x = inputs((1, 128, 128))
        with torch.no_grad():
            expected = without_dropout(run["G"], mode)(x)
            got = copy.deepcopy(official).train(mode == "train")(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_official_export_of_a_resnet_generator_keeps_the_official_names(tmp_path, capsys):
    options = {**OPTIONS, "netG": "resnet_6blocks", "norm": "instance", "no_dropout": True, "model": "cycle_gan"}
    torch.manual_seed(0)
    G = build_generator(options)
    source = save_checkpoint(tmp_path / "latest_net_G_A.pt", generator_checkpoint(G, options))
    path = tmp_path / "cyc" / "latest_net_G.pth"
    assert main(["export", "--checkpoint", str(source), "--format", "official", "--output", str(path), "--eval"]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if "python test.py" in line]
    assert commands and all("--netG resnet_6blocks --ngf 2 --norm instance" in c and "--no_dropout" in c
                            and c.endswith("--eval") for c in commands)
    official = OfficialResnetGenerator(3, 3, 2, get_norm_layer("instance"), use_dropout=False, n_blocks=6)
    official.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = inputs((1, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(official.eval()(x), G.eval()(x), rtol=0, atol=1e-5)


# ---- safetensors

def test_safetensors_export_of_a_training_state_keeps_G_and_D_and_round_trips(run, capsys):
    path = run["out"] / "tiny.safetensors"
    assert export(run, "--format", "safetensors", "--output", str(path)) == 0
    assert "stored: G and D, float32" in capsys.readouterr().out
    G, options = load_generator(path)
    expected, got = run["G"].state_dict(), G.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert options["crop_size"] == 128 and options["direction"] == "BtoA"
    x = inputs((1, 128, 128))
    with torch.no_grad():
        assert torch.equal(G.eval()(x), copy.deepcopy(run["G"]).eval()(x))
    model = load_model_file(path, with_discriminator=True)
    assert all(torch.equal(model["D"].state_dict()[k], v) for k, v in run["D"].state_dict().items())
    assert "loader's choice" in model["card"]["test_time"] and model["card"]["source"].endswith("latest_state.pt")


def test_safetensors_generator_only_and_half(run):
    path = run["out"] / "g.safetensors"
    assert export(run, "--format", "safetensors", "--output", str(path), "--generator_only", "--half") == 0
    model = load_model_file(path)
    assert model["D"] is None
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        assert all(k.startswith("G.") for k in fh.keys())
        assert fh.get_tensor("G.encoder.0.0.weight").dtype == torch.float16


def test_a_discriminator_the_model_file_cannot_describe_is_refused(tmp_path, nets, capsys):
    options = {**OPTIONS, "adversarial": "gan"}  # D sees the output alone: 3 channels, not 6
    G, _ = nets
    source = save_checkpoint(tmp_path / "latest_state.pt", training_state(G, define_D(options), options))
    path = tmp_path / "x.safetensors"
    assert main(["export", "--checkpoint", str(source), "--format", "safetensors", "--output", str(path)]) == 1
    assert "--generator_only" in capsys.readouterr().err and not path.exists()


# ---- pt2 and ONNX

def test_the_prepared_train_modes_compute_train_mode_batchnorm_without_touching_the_statistics(nets):
    G = nets[0]
    before = {k: v.clone() for k, v in G.state_dict().items()}
    prepared = prepare_for_export(G, "train_no_dropout")
    x = inputs((2, 128, 128))
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), without_dropout(G, "train")(x), rtol=0, atol=1e-6)
        prepared.train()(x)  # even in train mode it has no statistics to update
    assert not list(prepared.buffers()) and all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert G.training  # G's mode is left as it was (built: train)


def test_pt2_eval_export_matches_pytorch_eval_at_two_sizes(run, capsys):
    path = run["out"] / "tiny.pt2"
    assert export(run, "--format", "pt2", "--output", str(path), "--eval") == 0
    assert "test-time mode eval" in capsys.readouterr().out
    program, about = load_pt2(path)
    assert about["test_time_mode"] == "eval" and "running statistics" in about["test_time"]
    assert about["options"]["netG"] == "unet_128" and "multiples of 128" in about["input"]
    for shape in SIZES:
        x = inputs(shape)
        with torch.no_grad():
            diff = (program.module()(x) - without_dropout(run["G"], "eval")(x)).abs().max().item()
        assert diff <= GRAPH_TOLERANCE, (shape, diff)
    with pytest.raises(Exception, match="(?i)guard|constraint|expected|size"):
        program.module()(inputs((1, 130, 128)))  # not a multiple of 2**7: refused, not silently wrong


def test_pt2_default_export_carries_random_dropout_and_batch_statistics(run, capsys):
    path = run["out"] / "train.pt2"
    assert export(run, "--format", "pt2", "--output", str(path)) == 0
    assert "test-time mode train: train mode" in capsys.readouterr().out
    program, about = load_pt2(path)
    assert about["test_time_mode"] == "train" and "random dropout" in about["test_time"]
    program = program.module()
    eager = prepare_for_export(run["G"], "train")  # draws the same torch.rand_like masks in the same order
    off = without_dropout(run["G"], "train")
    for shape in SIZES:
        x = inputs(shape)
        with torch.no_grad():
            torch.manual_seed(5)
            first = program(x)
            torch.manual_seed(5)
            expected = eager(x)
            torch.manual_seed(6)
            second = program(x)
            dropout_off = off(x)
        assert (first - expected).abs().max().item() <= GRAPH_TOLERANCE  # batch statistics and dropout, exactly
        assert (first - second).abs().max().item() > 1e-3  # dropout is random per call
        assert (first - dropout_off).abs().max().item() > 1e-3  # and does something


def test_onnx_export_without_dropout_matches_pytorch_train_mode_in_onnxruntime(run, capsys):
    import onnx
    import onnxruntime
    path = run["out"] / "tiny.onnx"
    assert export(run, "--format", "onnx", "--output", str(path), "--no_dropout_at_test") == 0
    assert "test-time mode train_no_dropout" in capsys.readouterr().out
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["test_time_mode"] == "train_no_dropout" and "batch it is given" in metadata["test_time"]
    assert json.loads(metadata["options"])["ngf"] == 2
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in SIZES:
        x = inputs(shape)
        with torch.no_grad():
            expected = without_dropout(run["G"], "train")(x).numpy()
        got = session.run(["output"], {"input": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() <= GRAPH_TOLERANCE, shape
        assert np.array_equal(got, session.run(["output"], {"input": x.numpy()})[0])  # deterministic


def test_random_dropout_stays_random_in_onnxruntime(tmp_path):
    """RandomDropout's ONNX lowering (RandomUniformLike), on a layer small enough to convert in a second:
    a new mask per run, about half the values zeroed and the rest doubled."""
    import onnxruntime
    layer = prepare_for_export(nn.Sequential(nn.Dropout(0.5)), "train")
    side = torch.export.Dim("side", min=1, max=64)
    program = torch.export.export(layer, (torch.ones(1, 2, 8, 8),), dynamic_shapes={"input": {2: 4 * side}})
    path = save_onnx(program, tmp_path / "dropout.onnx", {"test_time_mode": "train", "test_time": "train mode"})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((1, 2, 64, 8), dtype=np.float32)
    first, second = (session.run(None, {"input": x})[0] for _ in range(2))
    assert set(np.unique(first)) <= {0.0, 2.0} and 0.4 < (first == 0).mean() < 0.6
    assert not np.array_equal(first, second)


# ---- bad input: one 'error:' line, nothing written

def error_of(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_an_unknown_run_and_a_missing_epoch_are_named(run, capsys):
    out = str(run["out"] / "x.pth")
    assert main(["export", "--name", "nope", "--checkpoints_dir", str(run["checkpoints"]), "--format", "official",
                 "--output", out]) == 1
    assert "no run 'nope'" in (err := error_of(capsys)) and "runs in" in err and "tiny" in err
    assert export(run, "--epoch", "7", "--format", "official", "--output", out) == 1
    assert "--epoch 7" in (err := error_of(capsys)) and "epochs saved there: latest" in err
    assert not run["out"].exists()


def test_an_existing_output_is_kept_unless_force_and_a_file_in_the_way_is_named(run, capsys):
    path = run["out"] / "latest_net_G.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"keep me")
    assert export(run, "--format", "official", "--output", str(path)) == 1
    assert "exists already" in error_of(capsys) and path.read_bytes() == b"keep me"
    # --output a folder: DIR/latest_net_G.pth
    assert export(run, "--format", "official", "--output", str(run["out"]), "--force") == 0
    assert path.read_bytes() != b"keep me"
    assert export(run, "--format", "official", "--output", str(path / "x.pth")) == 1
    assert "is a file, not a folder" in error_of(capsys)


def test_onnx_without_its_packages_says_what_to_install(run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    path = run["out"] / "m.onnx"
    assert export(run, "--format", "onnx", "--output", str(path)) == 1
    assert "pip install 'p2p_lib[export]'" in error_of(capsys) and not path.exists()


def test_runs_and_generators_it_cannot_export_are_refused(run, tmp_path, capsys):
    G_A = build_generator({**OPTIONS, "netG": "resnet_6blocks"})
    save_checkpoint(run["checkpoints"] / "tiny" / "latest_net_G_A.pt", generator_checkpoint(G_A, OPTIONS))
    assert export(run, "--format", "pt2", "--output", str(tmp_path / "x.pt2")) == 1
    assert "cycle_gan run" in error_of(capsys)
    options = {**OPTIONS, "netG": "encoder_decoder_128"}
    source = save_checkpoint(tmp_path / "ed.pt", generator_checkpoint(build_generator(options), options))
    with_source = ["export", "--checkpoint", str(source)]
    assert main([*with_source, "--format", "official", "--output", str(tmp_path / "e.pth")]) == 1
    assert "no encoder_decoder_128" in error_of(capsys)
    assert main([*with_source, "--epoch", "3", "--format", "onnx", "--output", str(tmp_path / "y.onnx")]) == 2
    assert "--epoch and --checkpoints_dir go with --name" in error_of(capsys)
    with pytest.raises(SystemExit) as exit_:
        main([*with_source, "--format", "pt2", "--output", str(tmp_path / "z.pt2"), "--eval", "--no_dropout_at_test"])
    assert exit_.value.code == 2
