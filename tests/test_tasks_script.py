"""tools/tasks.py, lesson 09's applications: every task end to end on a tiny facades-like set (make the pairs,
train a few steps, score against the baselines, write, resume)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagefactory import aligned_pairs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("tasks_script", ROOT / "tools" / "tasks.py")
tasks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tasks)

TINY = {"ngf": 4, "ndf": 4, "n_epochs": 1, "n_epochs_decay": 0, "load_size": 136}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    facades = aligned_pairs(tmp / "facades", (("train", 3), ("val", 5)), size=128, block=8)
    args = ["run", "--base", json.dumps(TINY), "--dataroot", str(facades), "--data", str(tmp / "data"),
            "--results", str(tmp / "results")]
    assert tasks.main(args) == 0
    return tmp, facades, args


def test_every_task_lands_with_its_baselines_command_and_machine(tiny_run):
    tmp, _, _ = tiny_run
    for name in tasks.TASK_RUNS:
        result = json.loads((tmp / "results" / name / "result.json").read_text())
        assert result["task"] == name and result["steps"] == 3 and result["val_photos"] == 5
        methods = result["metrics"]
        assert "pix2pix (L1 + cGAN)" in methods and len(methods) >= 2, name   # the model and a baseline at least
        for scores in methods.values():
            assert 0 <= scores["L1"] <= 1 and 0 < scores["SSIM"] <= 1 and scores["sharpness_pooled"] >= 0
        assert result["command"] == f"python tools/tasks.py run --only {name}"
        assert result["machine"]["cores"] >= 1 and "commit" in result["code_version"] and result["curves"]["G_L1"]
        with Image.open(tmp / "results" / name / "outputs.png") as grid:
            assert grid.size == (3 * 128, 4 * 128)   # input | output | target, the 4 shown photos
    lab = json.loads((tmp / "results" / "colorize_lab" / "result.json").read_text())
    assert lab["options"]["input_nc"] == 1 and lab["options"]["output_nc"] == 2
    assert set(lab["metrics"]) == {"pix2pix (L1 + cGAN)", "gray (a*b* = 0)", "mean training colour"}


def test_inpainting_paste_known_only_lowers_the_error_and_the_baselines_are_the_inputs(tiny_run):
    tmp, facades, _ = tiny_run
    inpaint = json.loads((tmp / "results" / "inpaint" / "result.json").read_text())["metrics"]
    assert inpaint["pix2pix + paste_known"]["L1"] <= inpaint["pix2pix (L1 + cGAN)"]["L1"]
    assert inpaint["rectangles filled with the image's mean"]["L1"] != inpaint["input (gray rectangles)"]["L1"]
    # the super-resolution baseline is the bicubic input itself, scored like the model
    task = tasks.task_data("superres", facades, tmp / "data", 128)
    inputs, targets = task["val"]
    superres = json.loads((tmp / "results" / "superres" / "result.json").read_text())["metrics"]
    assert superres["bicubic (the input)"]["PSNR"] == pytest.approx(tasks.score("superres", inputs, inputs, targets)["PSNR"])
    # and inpainting's masks are the ones make-pairs drew: the input is gray (0) exactly there
    task = tasks.task_data("inpaint", facades, tmp / "data", 128)
    masks = tasks.val_masks(task["keys"], 128)
    inputs = task["val"][0]
    assert masks.any() and torch.all(inputs.permute(1, 0, 2, 3)[:, masks].abs() < 0.01)


def test_a_second_run_skips_what_landed_and_list_says_so(tiny_run, capsys):
    tmp, _, args = tiny_run
    before = {p: p.read_bytes() for p in (tmp / "results").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert tasks.main(args) == 0
    assert capsys.readouterr().out == ""      # nothing trained again
    assert {p: p.read_bytes() for p in (tmp / "results").rglob("*") if p.is_file()} == before
    assert tasks.main(["list", "--results", str(tmp / "results")]) == 0
    listing = capsys.readouterr().out
    assert all(f"done  {name}" in listing for name in tasks.TASK_RUNS)


def test_the_table_has_every_task_and_method_and_the_committed_one_is_current(tiny_run, capsys):
    tmp, _, _ = tiny_run
    assert tasks.main(["table", "--results", str(tmp / "results")]) == 0
    table = (tmp / "results" / "README.md").read_text()
    for name, result in tasks.load_results(tmp / "results").items():
        for method, scores in result["metrics"].items():
            assert f"| {name} | {method.replace('*', chr(92) + '*')} | {scores['L1']:.4f} |" in table
    assert "3 steps" in table
    # the committed table was written from the committed results: rerun `python tools/tasks.py table` after a run
    committed = tasks.load_results(tasks.RESULTS)
    assert set(committed) == set(tasks.TASK_RUNS)
    assert (tasks.RESULTS / "README.md").read_text() == tasks.results_table(committed)


def test_table_without_results_says_what_to_run(tmp_path, capsys):
    assert tasks.main(["table", "--results", str(tmp_path)]) == 1
    assert "tools/tasks.py run" in capsys.readouterr().err
