"""tools/multiscale_run.py, lesson 11's comparison: every run end to end on a tiny facades-like set (train a few
steps, score at its size and, for the 256-px runs, at 512 px, write, skip when done, table), coarse L1 by hand, and
the committed table against the committed results."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagefactory import aligned_pairs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("multiscale_script", ROOT / "tools" / "multiscale_run.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
import data_limits  # noqa: E402  (tools/, on the path the script puts it: the whole-set score it chunks)

TINY = {"ngf": 4, "ndf": 4, "num_val": 3}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiscale")
    facades = aligned_pairs(tmp / "facades", (("train", 4), ("val", 3)), size=64, block=8)
    args = ["run", "--base", json.dumps(TINY), "--steps", "2", "--dataroot", str(facades), "--results", str(tmp / "results")]
    assert script.main(args) == 0
    return tmp, facades, args


def test_every_run_lands_with_its_scores_pictures_command_and_machine(tiny_run):
    tmp, _, _ = tiny_run
    for name, (what, num_D, size, _) in script.RUNS.items():
        folder = tmp / "results" / name
        result = json.loads((folder / "result.json").read_text())
        assert (result["run"], result["what"], result["steps"], result["val_pairs"]) == (name, what, 2, 3)
        o = result["options"]
        assert (o["num_D"], o["crop_size"], o["load_size"], o["netD"], o["lambda_FM"]) == (num_D, size, size * 286 // 256, "multiscale", 10.0)
        assert (o["n_epochs"], o["n_epochs_decay"]) == (1, 0)   # 2 steps on 4 pairs: one epoch
        m = result["metrics"]
        assert 0 < m["L1"] < 1 and 0 <= m["coarse_L1"] <= m["L1"] + 1e-9 and m["sharpness_pooled"] >= 0
        assert result["curves"]["G_FM"] and result["command"] == f"python tools/multiscale_run.py run --only {name}"
        assert result["machine"]["cores"] >= 1 and "commit" in result["code_version"]
        rows = 2 if size < 512 else 1
        with Image.open(folder / "outputs.png") as grid:
            assert grid.size == (3 * size, rows * size)   # input | output | target
        assert ("metrics_at_512" in result) == (size < 512) == (folder / "outputs_at_512.png").is_file()
    small = json.loads((tmp / "results" / "single_256" / "result.json").read_text())
    assert small["D_parameters"] * 3 == json.loads((tmp / "results" / "multi_256" / "result.json").read_text())["D_parameters"]


def test_finished_runs_are_skipped(tiny_run):
    tmp, _, args = tiny_run
    before = {p: p.stat().st_mtime_ns for p in (tmp / "results").glob("*/result.json")}
    assert script.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp / "results").glob("*/result.json")} == before


def test_the_table_of_the_tiny_runs_and_of_the_committed_results(tiny_run, capsys):
    tmp, _, _ = tiny_run
    assert script.main(["table", "--results", str(tmp / "results")]) == 0
    table = (tmp / "results" / "README.md").read_text()
    assert table.count("\n| single_") == 2 and table.count("\n| multi_") == 2
    committed = script.load_results(script.RESULTS)
    assert sorted(committed) == sorted(script.RUNS)
    assert (script.RESULTS / "README.md").read_text() == script.results_table(committed)


def test_the_table_without_results_says_what_to_run(tmp_path, capsys):
    assert script.main(["table", "--results", str(tmp_path)]) == 1
    assert "run `python tools/multiscale_run.py run` first" in capsys.readouterr().err


def test_chunked_scores_are_the_whole_sets_scores():
    torch.manual_seed(0)
    outputs, targets = torch.rand(7, 3, 32, 32) * 2 - 1, torch.rand(7, 3, 32, 32) * 2 - 1
    whole, chunked = data_limits.score(outputs, targets), script.chunked_score(outputs, targets, chunk=3)
    assert whole.keys() == chunked.keys()
    for key, value in whole.items():
        if isinstance(value, dict):
            assert chunked[key] == pytest.approx(value, rel=1e-12)
        else:
            assert chunked[key] == pytest.approx(value, rel=1e-12), key
