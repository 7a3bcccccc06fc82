"""p2p download-model: the official generators, fetched from an http.server on 127.0.0.1 started here.

Nothing leaves this machine: the "official" files are a tiny unet_256 (ngf 2) in the official layout, built
here and served by a thread stopped at the end of each test. Every failure checks that nothing was placed,
that no temporary file remains, and that an existing model and its record were left exactly as they were.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback import serving  # tests/loopback.py
from netfactory import with_trained_statistics  # tests/netfactory.py
from PIL import Image

from p2p_lib import download, pretrained
from p2p_lib.checkpoint import CheckpointError, load_generator
from p2p_lib.cli import main
from p2p_lib.inference import translate
from p2p_lib.networks import define_G
from p2p_lib.official import our_state_dict_to_official

TINY = {"netG": "unet_256", "ngf": 2, "norm": "batch", "no_dropout": False, "input_nc": 3, "output_nc": 3}
NAME = "facades_label2photo"  # documented as BtoA: the direction the tests expect `p2p test` to pick up


def tiny_generator(seed: int):
    torch.manual_seed(seed)
    return with_trained_statistics(define_G(TINY))


def official_bytes(G) -> bytes:
    buffer = io.BytesIO()
    torch.save(our_state_dict_to_official(G.state_dict()), buffer)
    return buffer.getvalue()


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    "Serves server.files: path -> (body, announced length or None); '/cut' paths hang up halfway."

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path not in self.server.files:
            self.send_error(404)
            return
        body, announced = self.server.files[self.path]
        self.send_response(200)
        if announced is not None:
            self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


@pytest.fixture
def server():
    with serving(_Handler) as httpd:
        httpd.files = {}
        yield httpd


@pytest.fixture
def served(server, tmp_path, monkeypatch):
    """A good tiny generator at /good.pth (and at /NAME.pth, for $P2P_MODELS_URL), its network and paths."""
    monkeypatch.delenv(pretrained.MODELS_URL_VARIABLE, raising=False)
    G = tiny_generator(0)
    good = official_bytes(G)
    server.files["/good.pth"] = server.files[f"/{NAME}.pth"] = (good, len(good))
    return {"server": server, "G": G, "good": good, "checkpoints": tmp_path / "checkpoints",
            "run": tmp_path / "checkpoints" / f"{NAME}_pretrained", "tmp": tmp_path}


def fetch_model(served, path="/good.pth", *extra, name=NAME):
    return main(["download-model", name, "--checkpoints_dir", str(served["checkpoints"]),
                 "--url", served["server"].url + path, *extra])


def tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def make_pairs(root: Path, count: int = 3) -> Path:
    "A tiny aligned test split: A (left) | B (right), 32x32 each."
    split = root / "test"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(split / f"pair_{k}.png")
    return root


# ---------------------------------------------------------------------------------------------
# The table of sources

def test_the_table_holds_the_official_scripts_models_with_their_datasets_and_directions():
    expected = {  # written out, not rebuilt from the pattern the table is made with
        "edges2shoes": ("edges2shoes", "AtoB", "val"), "sat2map": ("maps", "AtoB", "val"),
        "map2sat": ("maps", "BtoA", "val"), "facades_label2photo": ("facades", "BtoA", "test"),
        "day2night": ("night2day", "BtoA", "test")}
    assert {m.name: (m.dataset, m.direction, m.phase) for m in pretrained.MODELS.values()} == expected
    assert pretrained.MODELS["sat2map"].url == "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch/sat2map.pth"
    for spec in pretrained.MODELS.values():
        assert spec.sha256 is None  # nothing published, nothing checkable here: the table must not pretend
        assert spec.dataset in download.DATASETS and spec.phase in download.DATASETS[spec.dataset].splits
        assert spec.direction_from.startswith("documented: " if spec.name == NAME else "inferred: ")


def test_list_shows_every_model_with_its_dataset_direction_and_test_command(capsys):
    assert main(["download-model", "--list"]) == 0
    out = capsys.readouterr().out
    for spec in pretrained.MODELS.values():
        assert f"{spec.name}: {spec.translates}; dataset {spec.dataset}, {spec.direction}" in out
    assert "p2p test --dataroot datasets/maps --name map2sat_pretrained --phase val" in out
    assert "facades, BtoA (documented)" in out and "night2day, BtoA (inferred)" in out
    assert main(["download-model"]) == 0 and capsys.readouterr().out == out  # no NAME: the same list


# ---------------------------------------------------------------------------------------------
# A good download, then p2p test and p2p translate on it

def test_a_good_file_is_placed_with_its_record_and_runs_in_the_documented_direction(served, capsys, monkeypatch):
    monkeypatch.setenv(pretrained.MODELS_URL_VARIABLE, served["server"].url + "/")  # a mirror's base URL
    assert main(["download-model", NAME, "--checkpoints_dir", str(served["checkpoints"])]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(served["good"]).hexdigest()
    assert served["server"].requests == [f"/{NAME}.pth"]
    assert f"SHA-256 {digest}" in out and f"--sha256 {digest}" in out and "note: the file has ngf=2" in out
    assert sorted(p.name for p in served["run"].iterdir()) == ["latest_net_G.pth", "pretrained.json"]  # no temp files
    assert (served["run"] / "latest_net_G.pth").read_bytes() == served["good"]
    record = json.loads((served["run"] / "pretrained.json").read_text())
    assert record["sha256"] == digest and record["bytes"] == len(served["good"])
    assert record["url"] == f"{served['server'].url}/{NAME}.pth" and record["dataset"] == "facades"
    assert record["options"] == {**TINY, "direction": "BtoA", "crop_size": 256, "preprocess": "resize_and_crop"}

    data, results = make_pairs(served["tmp"] / "facades"), served["tmp"] / "results"
    common = ["--name", f"{NAME}_pretrained", "--checkpoints_dir", str(served["checkpoints"]), "--device", "cpu"]
    assert main(["test", "--dataroot", str(data), "--num_test", "2", "--results_dir", str(results), *common]) == 0
    web = results / f"{NAME}_pretrained" / "test_latest"
    metrics = json.loads((web / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["direction"] == "BtoA" and metrics["crop_size"] == 256
    # BtoA without being told: the input is the right half (B) of the file, resized to the recorded crop size
    pair = Image.open(data / "test" / "pair_0.png")
    expected = pair.crop((32, 0, 64, 32)).resize((256, 256), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(Image.open(web / "images" / "pair_0_real_A.png")), np.asarray(expected))

    labels = served["tmp"] / "label.png"
    pair.crop((32, 0, 64, 32)).save(labels)
    assert main(["translate", str(labels), "--output", str(served["tmp"] / "photo.png"), *common]) == 0
    reference = translate(served["G"], labels, seed=0, size=256)  # the network we served, run by the library
    assert np.array_equal(np.asarray(Image.open(served["tmp"] / "photo.png")), np.asarray(reference))


def test_an_explicit_direction_still_overrides_the_record_with_a_warning(served, capsys):
    assert fetch_model(served) == 0
    data, results = make_pairs(served["tmp"] / "facades", count=1), served["tmp"] / "results"
    assert main(["test", "--dataroot", str(data), "--direction", "AtoB", "--results_dir", str(results), "--name",
                 f"{NAME}_pretrained", "--checkpoints_dir", str(served["checkpoints"]), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: --direction AtoB overrides the checkpoint's direction='BtoA' (from pretrained.json)" in err
    metrics = json.loads((results / f"{NAME}_pretrained" / "test_latest" / "metrics.json").read_text())
    assert metrics["direction"] == "AtoB"
    messages = []  # --checkpoint FILE reads the record beside the file too, and silently when nothing disagrees
    _, options = load_generator(served["run"] / "latest_net_G.pth", warn=messages.append)
    assert options["direction"] == "BtoA" and options["crop_size"] == 256 and messages == []


def test_an_existing_model_is_left_alone_unless_force(served, capsys):
    assert fetch_model(served) == 0
    other = official_bytes(tiny_generator(1))
    served["server"].files["/other.pth"] = (other, len(other))
    before = tree(served["run"])
    assert fetch_model(served, "/other.pth") == 0
    assert "exists already; left alone" in capsys.readouterr().out
    assert served["server"].requests == ["/good.pth"] and tree(served["run"]) == before  # not even asked for
    pin = hashlib.sha256(other).hexdigest()
    assert fetch_model(served, "/other.pth", "--force", "--sha256", pin.upper()) == 0
    assert (served["run"] / "latest_net_G.pth").read_bytes() == other
    record = json.loads((served["run"] / "pretrained.json").read_text())
    assert record["sha256"] == pin and record["sha256_checked"] == "matched --sha256"


# ---------------------------------------------------------------------------------------------
# Bad downloads: one clear line, nothing placed, nothing left behind, an existing model untouched

def _bad_files(good: bytes) -> dict:
    resnet = define_G({**TINY, "netG": "resnet_6blocks"}).state_dict()  # official-style names, but not the U-Net
    nan = our_state_dict_to_official(tiny_generator(2).state_dict())
    nan["model.model.0.weight"][0, 0, 0, 0] = float("nan")
    return {
        "truncated": ((good[: len(good) // 2], len(good)), "connection ended"),
        "cut_unannounced": ((good[: len(good) // 2], None), "not a usable pix2pix generator"),
        "not_a_generator": ((saved(OrderedDict(resnet)), None), "not an official pix2pix U-Net generator"),
        "not_torch": ((b"<html>moved</html>", 18), "not a usable pix2pix generator"),
        "pickled_code": ((saved({"model.model.0.weight": Path("x")}), None), "arbitrary code"),
        "nan": ((saved(nan), None), "NaN or Inf"),
        "not_tensors": ((saved({"model.model.0.weight": "text"}), None), "values other than tensors"),
    }


BAD = ["truncated", "cut_unannounced", "not_a_generator", "not_torch", "pickled_code", "nan", "not_tensors",
       "wrong_hash", "404"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_download_places_nothing_and_keeps_an_existing_model(served, capsys, case):
    files = _bad_files(served["good"])
    path, extra, reason = "/bad.pth", [], None
    if case in files:
        served["server"].files[path], reason = files[case]
    elif case == "wrong_hash":
        path, extra, reason = "/good.pth", ["--sha256", "0" * 64], "does not match the expected"
    else:
        path, reason = "/missing.pth", "HTTP 404"
    before = tree(served["tmp"])
    assert fetch_model(served, path, *extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and reason in err and "nothing was placed" in err.lower()
    assert "Traceback" not in err and err.count("\n") == 1
    assert tree(served["tmp"]) == before and not served["checkpoints"].exists()  # not even the folders it made

    assert fetch_model(served) == 0  # a good model in place; a forced bad download must not touch it
    kept = tree(served["run"])
    assert fetch_model(served, path, *extra, "--force") == 1
    assert tree(served["run"]) == kept


def test_unknown_name_and_malformed_hash_are_usage_errors_before_any_request(served, capsys):
    assert fetch_model(served, name="edges2handbags") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'edges2handbags'") and "facades_label2photo, day2night" in err
    assert fetch_model(served, "/good.pth", "--sha256", "abc") == 2
    assert "64 hexadecimal digits" in capsys.readouterr().err
    assert served["server"].requests == [] and not served["checkpoints"].exists()


def test_a_run_folder_whose_own_generator_would_shadow_the_download_is_refused(served, capsys):
    served["run"].mkdir(parents=True)
    (served["run"] / "latest_net_G.pt").write_bytes(b"a p2p_lib generator")
    assert fetch_model(served) == 1
    assert "latest_net_G.pt, which `p2p test" in capsys.readouterr().err
    assert served["server"].requests == [] and sorted(p.name for p in served["run"].iterdir()) == ["latest_net_G.pt"]


# ---------------------------------------------------------------------------------------------
# Reading the record back (p2p_lib.checkpoint)

def test_a_replaced_model_file_makes_the_record_void_with_a_warning(served):
    assert fetch_model(served) == 0
    replacement = official_bytes(define_G({**TINY, "ngf": 3}))  # another official file, of another size
    (served["run"] / "latest_net_G.pth").write_bytes(replacement)
    messages = []
    _, options = load_generator(served["run"] / "latest_net_G.pth", warn=messages.append)
    assert options["ngf"] == 3 and "direction" not in options and "crop_size" not in options
    assert len(messages) == 1 and "the file was replaced since" in messages[0]


@pytest.mark.parametrize("edit, said", [
    (lambda r: "{not json", "is not readable JSON"),
    (lambda r: {**r, "format": "something else"}, "is not a record of p2p download-model"),
    (lambda r: {**r, "options": {**r["options"], "direction": "sideways"}}, "is not valid"),
    (lambda r: {**r, "options": {**r["options"], "ngf": 4096}}, "records ngf=4096 (the tensors: 2)"),
])
def test_a_damaged_record_is_refused_with_its_name(served, capsys, edit, said):
    assert fetch_model(served) == 0
    sidecar = served["run"] / "pretrained.json"
    edited = edit(json.loads(sidecar.read_text()))
    sidecar.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(CheckpointError, match="pretrained.json") as caught:
        load_generator(served["run"] / "latest_net_G.pth")
    assert said in str(caught.value)


def test_ctrl_c_during_the_download_places_nothing_and_exits_130(served, capsys, monkeypatch):
    def interrupted(url, target, **kwargs):
        Path(target).write_bytes(served["good"][:100])  # part of the file has arrived
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrained, "fetch", interrupted)
    assert fetch_model(served) == 130
    assert "error: interrupted; nothing was placed and the temporary files were removed" in capsys.readouterr().err
    assert not served["run"].exists() or list(served["run"].iterdir()) == []
