"""tools/cyclegan_run.py, lesson 10's long CycleGAN run, on a tiny facades-like set: the unpaired split, a run
stopped and resumed in slices against the same run in one go (bit for bit), the results, a changed config."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefactory import aligned_pairs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cyclegan_run", ROOT / "tools" / "cyclegan_run.py")
cyclegan_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cyclegan_run)

STEPS = 8  # two epochs of the 4 label maps: the resumed slices cross an epoch's end
TINY = {"unpaired_files": 4, "ngf": 4, "ndf": 4, "n_blocks": 1, "load_size": 36, "crop_size": 32, "pool_size": 3,
        "steps": STEPS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "The tiny run in one go (straight/) and in three slices (sliced/: --minutes 0, --steps 3, the rest)."
    tmp = tmp_path_factory.mktemp("cyclegan")
    facades = aligned_pairs(tmp / "facades", (("train", 12), ("val", 5)), size=40, block=4)
    common = ["--base", json.dumps(TINY), "--dataroot", str(facades), "--save_every", "2"]
    folders = lambda name: ["--work", str(tmp / name / "work"), "--results", str(tmp / name / "results")]
    assert cyclegan_run.main(["run", *common, *folders("straight")]) == 0
    steps_after = []
    for stop in (["--minutes", "0"], ["--steps", "3"], []):
        assert cyclegan_run.main(["run", *common, *folders("sliced"), *stop]) == 0
        steps_after.append(torch.load(tmp / "sliced" / "work" / "state.pt", weights_only=True)["step"])
    return tmp, facades, common, folders, steps_after


def states(tmp: Path) -> tuple[dict, dict]:
    return tuple(torch.load(tmp / name / "work" / "state.pt", weights_only=True) for name in ("straight", "sliced"))


def test_a_run_resumed_in_slices_ends_bit_identical_to_one_run_in_one_go(runs):
    tmp, _, _, _, steps_after = runs
    assert steps_after == [1, 3, STEPS]   # --minutes 0 stops after one step, --steps 3 at step 3
    straight, sliced = states(tmp)
    assert straight["step"] == sliced["step"] == STEPS
    for name in ("G_A", "G_B", "D_A", "D_B"):
        for key, value in straight[name].items():
            assert torch.equal(value, sliced[name][key]), f"{name}.{key}"
    for name in ("pool_fake_A", "pool_fake_B"):
        a, b = straight[name], sliced[name]
        assert len(a["images"]) == len(b["images"]) == TINY["pool_size"]
        assert all(torch.equal(x, y) for x, y in zip(a["images"], b["images"])) and a["rng_state"] == b["rng_state"]
    assert straight["history"] == sliced["history"] and len(straight["history"]["cycle_A"]) == STEPS
    for rng in ("torch_rng", "order_rng"):
        assert torch.equal(straight[rng], sliced[rng])
    assert straight["opt_G"]["state"][0]["step"] == sliced["opt_G"]["state"][0]["step"] == STEPS
    assert straight["sched_D"] == sliced["sched_D"]
    assert [(s["from_step"], s["to_step"]) for s in sliced["slices"]] == [(0, 1), (1, 3), (3, STEPS)]
    assert sliced["seconds"] == pytest.approx(sum(s["seconds"] for s in sliced["slices"]), abs=0.2)


def test_the_learning_rate_is_constant_for_half_the_steps_then_falls_linearly_per_step(runs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cyclegan_run.step_schedule(optimizer, 8)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), scheduler.step()
    assert rates == pytest.approx([1, 1, 1, 1, 4 / 5, 3 / 5, 2 / 5, 1 / 5])
    assert states(runs[0])[0]["opt_G"]["param_groups"][0]["lr"] == 0.0   # the rate after the run's last step


def test_the_results_land_with_command_machine_code_version_and_a_4_column_grid(runs):
    tmp = runs[0]
    results = {name: json.loads((tmp / name / "results" / "result.json").read_text())
               for name in ("straight", "sliced")}
    result = results["sliced"]
    assert result["command"] == "python tools/cyclegan_run.py run" and result["steps"] == STEPS
    assert result["machine"]["cores"] >= 1 and "commit" in result["code_version"]
    assert result["config"] == {**cyclegan_run.CONFIG, **TINY} and len(result["slices"]) == 3
    assert result["train_seconds"] > 0 and result["curves"]["cycle_A"] and result["val_files"] == 5
    m = result["metrics"]
    assert all(0 <= value <= 1 for value in (m["G_A(labels) vs photos"]["L1"], m["cycle_L1_labels"],
                                             m["cycle_L1_photos"], m["mean training photo vs photos"]["L1"]))
    assert "skipped" in m["pix2pix reference model"]   # the reference model is 128 px, the tiny run 32 px
    assert result["metrics"] == results["straight"]["metrics"]   # the same weights score the same
    assert result["data"]["shared_files"] == 0
    with Image.open(tmp / "sliced" / "results" / "outputs.png") as grid:
        assert grid.size == (4 * 32, 4 * 32)   # label map | G_A | G_B(G_A) | photo, 4 val files


def test_the_unpaired_split_is_numeric_and_shares_no_file(runs):
    tmp, facades = runs[0], runs[1]
    unpaired = tmp / "sliced" / "work" / "facades_unpaired"
    stems = {side: sorted(int(p.stem) for p in (unpaired / f"train{side}").glob("*.png")) for side in "AB"}
    assert stems == {"A": [0, 1, 2, 3], "B": [4, 5, 6, 7]}   # by number, not by name (0, 1, 10, 11, ...)
    pair = np.asarray(Image.open(facades / "train" / "2.png"))
    assert np.array_equal(np.asarray(Image.open(unpaired / "trainA" / "2.png")), pair[:, 40:])   # the label map
    pair = np.asarray(Image.open(facades / "train" / "5.png"))
    assert np.array_equal(np.asarray(Image.open(unpaired / "trainB" / "5.png")), pair[:, :40])   # the photo


def test_a_changed_config_against_a_saved_state_is_a_clear_error(runs, capsys):
    tmp, facades, _, folders, _ = runs
    state = tmp / "straight" / "work" / "state.pt"
    before = state.read_bytes()
    changed = ["--base", json.dumps({**TINY, "lambda_identity": 0.0}), "--dataroot", str(facades)]
    capsys.readouterr()
    assert cyclegan_run.main(["run", *changed, *folders("straight")]) == 1
    error = capsys.readouterr().err
    assert "another config" in error and "lambda_identity: saved 0.5, now 0.0" in error
    assert state.read_bytes() == before


def test_status_says_how_far_the_run_is(runs, capsys):
    tmp = runs[0]
    capsys.readouterr()
    assert cyclegan_run.main(["status", *runs[3]("sliced")]) == 0
    out = capsys.readouterr().out
    assert f"{STEPS} / {STEPS} steps" in out and "result: written" in out
    assert cyclegan_run.main(["status", "--work", str(tmp / "none"), "--results", str(tmp / "none")]) == 0
    assert f"0 / {cyclegan_run.CONFIG['steps']} steps" in capsys.readouterr().out
