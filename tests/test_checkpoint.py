"""p2p_lib.checkpoint: atomic saves, safe loads, clear errors, and rebuilding generators."""
import pickle
import warnings

import pytest
import torch

from p2p_lib.checkpoint import (FORMAT, VERSION, CheckpointError, build_generator, generator_checkpoint,
                                generator_path, load_checkpoint, load_generator, load_state_dict_strict,
                                save_checkpoint, state_path)

OPTIONS = {"netG": "unet_128", "ngf": 4, "norm": "batch", "no_dropout": False, "input_nc": 3, "output_nc": 3,
           "direction": "BtoA", "load_size": 128, "crop_size": 128, "preprocess": "resize_and_crop"}


def small_generator(seed=0, **changes):
    torch.manual_seed(seed)
    return build_generator({**OPTIONS, **changes})


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_generator_follows_the_options():
    assert build_generator({**OPTIONS, "netG": "unet_128"}).num_downs == 7
    assert build_generator({**OPTIONS, "netG": "unet_256"}).num_downs == 8
    G = build_generator({**OPTIONS, "ngf": 8, "input_nc": 1, "output_nc": 1, "no_dropout": True})
    assert G.encoder[0][0].in_channels == 1 and G.encoder[0][0].out_channels == 8
    assert not any(isinstance(m, torch.nn.Dropout) for m in G.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in build_generator(OPTIONS).modules())
    with pytest.raises(CheckpointError, match="unet_128.*unet_256.*resnet_9blocks"):
        build_generator({**OPTIONS, "netG": "resnet_12blocks"})
    resnet = build_generator({**OPTIONS, "netG": "resnet_6blocks", "ngf": 8, "norm": "instance"})
    assert len([m for m in resnet.modules() if type(m).__name__ == "ResnetBlock"]) == 6


def test_save_and_load_round_trip(tmp_path):
    G = small_generator()
    path = save_checkpoint(tmp_path / "run" / "latest_net_G.pt", generator_checkpoint(G, OPTIONS))
    assert [p.name for p in path.parent.iterdir()] == ["latest_net_G.pt"]  # no temporary file left behind
    obj = load_checkpoint(path, kind="generator")
    assert obj["format"] == FORMAT and obj["version"] == VERSION and obj["options"]["ngf"] == 4
    G2, options = load_generator(path)
    assert same_weights(G, G2) and options == obj["options"]


def test_an_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "latest_state.pt"
    save_checkpoint(path, {"step": torch.tensor(1)})

    def crash(obj, fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": torch.tensor(2)})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest_state.pt"]


class RunsCode:
    """What an attacker would put in a checkpoint: unpickling it calls open(marker, 'w')."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "G": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_generator(path)
    raw = tmp_path / "evil.pkl"  # a bare pickle, not torch's zip format
    with open(raw, "wb") as fh:
        pickle.dump({"G": RunsCode(marker)}, fh)
    with warnings.catch_warnings(), pytest.raises(CheckpointError, match="refused"):
        warnings.simplefilter("ignore")  # torch notes the pickle protocol before refusing
        load_checkpoint(raw)
    assert not marker.exists()
    # the same file with plain pickle would have run the code: the test's payload is real
    with open(path, "rb") as fh:
        torch.load(fh, weights_only=False)
    assert marker.exists()


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    G = small_generator()
    good = save_checkpoint(tmp_path / "good.pt", generator_checkpoint(G, OPTIONS))
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({**generator_checkpoint(G, OPTIONS), "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"format": FORMAT, "version": VERSION, "kind": "train_state", "options": OPTIONS, "G": {}},
               tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="incomplete train_state.*'D'"):
        load_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="must be a p2p_lib train_state"):
        load_checkpoint(good, kind="train_state")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a p2p_lib checkpoint nor an official"):
        load_generator(tmp_path / "other.pt")


def test_a_wrong_architecture_names_what_does_not_match(tmp_path):
    G8 = small_generator(ngf=8)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(small_generator(ngf=4), G8.state_dict(), "generator")
    text = str(info.value)
    assert "shape mismatch for 'encoder.1.0.weight'" in text and "(16, 8, 4, 4)" in text and "(8, 4, 4, 4)" in text
    G256 = build_generator({**OPTIONS, "netG": "unet_256"})
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(small_generator(), G256.state_dict(), "generator")
    assert "13 unexpected keys" in str(info.value) and "'encoder.6.1.weight'" in str(info.value)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_state_dict_strict(G256, small_generator().state_dict(), "generator")
    # a checkpoint whose options disagree with its weights
    bad = generator_checkpoint(G8, OPTIONS)  # options say ngf 4
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(CheckpointError, match="does not fit.*shape mismatch"):
        load_generator(tmp_path / "bad.pt")


def test_load_generator_finds_files_in_a_checkpoints_dir(tmp_path):
    run = tmp_path / "checkpoints" / "facades"
    G_latest, G_5 = small_generator(1), small_generator(2)
    save_checkpoint(generator_path(run, "latest"), generator_checkpoint(G_latest, OPTIONS))
    save_checkpoint(generator_path(run, 5), generator_checkpoint(G_5, OPTIONS))
    assert same_weights(load_generator(tmp_path / "checkpoints", name="facades")[0], G_latest)
    assert same_weights(load_generator(run, epoch=5)[0], G_5)
    with pytest.raises(CheckpointError, match="no generator checkpoint for epoch 7"):
        load_generator(run, epoch=7)
    with pytest.raises(CheckpointError, match="give the run's name"):
        load_generator(tmp_path / "checkpoints")
    # only a full training state: the generator comes from it
    G_state = small_generator(3)
    D = torch.nn.Conv2d(6, 1, 4)
    state = {"format": FORMAT, "version": VERSION, "kind": "train_state", "options": OPTIONS,
             "G": G_state.state_dict(), "D": D.state_dict(), "optimizer_G": {}, "optimizer_D": {},
             "scheduler_G": {}, "scheduler_D": {}, "epoch": 9, "step": 90, "rng": {}}
    save_checkpoint(state_path(run, 9), state)
    assert same_weights(load_generator(run, epoch=9)[0], G_state)


def test_official_state_dicts_go_through_the_official_converter(tmp_path):
    from p2p_lib.official import our_state_dict_to_official
    G = small_generator(4)
    torch.save(our_state_dict_to_official(G.state_dict()), tmp_path / "latest_net_G.pth")
    G2, options = load_generator(tmp_path)  # the folder: finds the official latest_net_G.pth
    assert same_weights(G, G2)
    assert options["netG"] == "unet_128" and options["ngf"] == 4


def test_build_generator_turns_bad_options_into_checkpoint_errors():
    with pytest.raises(CheckpointError, match="norm"):
        build_generator({**OPTIONS, "norm": "layer"})
    G = build_generator({**OPTIONS, "no_dropout": None})  # None: the official default, dropout on
    assert any(isinstance(m, torch.nn.Dropout) for m in G.modules())


def test_overrides_replace_the_saved_options_with_a_warning_each(tmp_path):
    path = save_checkpoint(tmp_path / "g.pt", generator_checkpoint(small_generator(), OPTIONS))
    messages = []
    G, options = load_generator(path, overrides={"no_dropout": True, "direction": "AtoB", "ngf": None,
                                                 "crop_size": 128, "load_size": 256}, warn=messages.append)
    assert messages == ["--no_dropout True overrides the checkpoint's no_dropout=False",
                        "--direction AtoB overrides the checkpoint's direction='BtoA'"]  # equal or None: silent
    assert options["no_dropout"] and options["direction"] == "AtoB" and options["load_size"] == 256
    assert not any(isinstance(m, torch.nn.Dropout) for m in G.modules())
    with pytest.warns(UserWarning, match="--direction AtoB overrides") as caught:
        load_generator(path, overrides={"direction": "AtoB"})  # the default: warnings.warn
    assert caught[0].filename == __file__  # the warning points at the caller's line, not at the library
    with pytest.raises(CheckpointError, match="does not fit.*shape mismatch"):
        load_generator(path, overrides={"ngf": 8}, warn=messages.append)


def test_architecture_overrides_rebuild_an_official_generator(tmp_path):
    from p2p_lib.official import our_state_dict_to_official
    G = small_generator(5)
    path = tmp_path / "latest_net_G.pth"
    torch.save(our_state_dict_to_official(G.state_dict()), path)
    messages = []
    G2, options = load_generator(path, overrides={"no_dropout": True, "direction": "BtoA"}, warn=messages.append)
    assert messages == ["--no_dropout True overrides no_dropout=False (what the official checkpoint implies)"]
    assert same_weights(G, G2) and options["direction"] == "BtoA"
    assert not any(isinstance(m, torch.nn.Dropout) for m in G2.modules())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_generator(path, overrides={"ngf": 8}, warn=messages.append)


def _module_level_imports(module: str) -> set[str]:
    import ast
    from pathlib import Path
    source = (Path(__file__).resolve().parents[1] / "p2p_lib" / f"{module}.py").read_text()
    names = set()
    for node in ast.parse(source).body:  # top-level statements only: what importing the module runs
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("p2p_lib.")}


def test_the_loading_modules_import_each_other_one_way():
    """modelfile -> checkpoint -> official, networks: no cycle, so no module needs another half-initialised."""
    assert {"p2p_lib.official", "p2p_lib.networks"} <= _module_level_imports("checkpoint")
    assert "p2p_lib.modelfile" not in _module_level_imports("checkpoint")
    assert "p2p_lib.checkpoint" in _module_level_imports("modelfile")
    for lower in ("official", "networks"):
        assert not {"p2p_lib.checkpoint", "p2p_lib.modelfile"} & _module_level_imports(lower), lower


@pytest.mark.parametrize("changes, said", [
    ({"ngf": "4"}, "ngf='4' is not a width"), ({"ngf": -4}, "ngf=-4 is not a width"),
    ({"ngf": True}, "ngf=True is not a width"), ({"ngf": 10**9}, r"an integer from 1 to 4096"),
    ({"ngf": 4096}, "does not fit the network its options describe"),   # within the limit, but not what is stored
    ({"ngf": 8}, r"shape mismatch for 'encoder.0.0.weight': checkpoint \(4, 3, 4, 4\) vs network \(8, 3, 4, 4\)"),
    ({"netG": "unet_256"}, "does not fit the network its options describe"), ({"norm": "group"}, "do not describe a generator"),
    ({"input_nc": 0}, "input_nc=0 is not a width"),
])
def test_tampered_options_are_checked_against_the_stored_tensors_before_any_network_is_built(tmp_path, changes, said):
    saved = generator_checkpoint(small_generator(), OPTIONS)
    saved["options"].update(changes)
    path = save_checkpoint(tmp_path / "edited.pt", saved)
    # ngf 4096 at unet_128 would be a 55-billion-parameter network: built for real, this test would run out of memory
    with pytest.raises(CheckpointError, match=said):
        load_generator(path)


def test_a_generator_with_nan_weights_is_refused_at_load(tmp_path):
    G = small_generator()
    with torch.no_grad():
        G.encoder[1][0].weight[0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "diverged.pt", generator_checkpoint(G, OPTIONS))
    with pytest.raises(CheckpointError, match=r"holds NaN or Inf in 1 tensors \(first: 'encoder.1.0.weight'\)"):
        load_generator(path)
