"""tools/data_limits.py, lesson 10's data limits: every run end to end on a tiny facades-like set (train a few
steps, score on val and train, write, resume, table), and the data each run trains on, checked pixel by pixel."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from imagefactory import aligned_pairs
from p2p_lib.train import lr_factor

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("data_limits_script", ROOT / "tools" / "data_limits.py")
limits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(limits)

TINY = {"ngf": 4, "ndf": 4, "load_size": 136}
TRAIN_FILES = 30   # more than 25, fewer than 100: pairs_25 takes 25, the others are capped at 30
EXPECTED_PAIRS = {"pairs_25": 25, "pairs_100": 30, "pairs_400": 30, "pairs_25_no_jitter": 25,
                  "shuffled_pairs": 30, "shifted_8px": 30}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data_limits")
    facades = aligned_pairs(tmp / "facades", (("train", TRAIN_FILES), ("val", 5)), size=128, block=8)
    args = ["run", "--base", json.dumps(TINY), "--steps", "3", "--dataroot", str(facades),
            "--results", str(tmp / "results")]
    assert limits.main(args) == 0
    return tmp, facades, args


def config():
    return {**limits.BASE, **TINY}


def test_every_run_lands_with_its_pairs_scores_command_and_machine(tiny_run):
    tmp, facades, _ = tiny_run
    names = sorted(p.stem for p in (facades / "train").iterdir())   # the dataset's order: sorted by file name
    for name in limits.DATA_RUNS:
        result = json.loads((tmp / "results" / name / "result.json").read_text())
        assert result["run"] == name and result["steps"] == 3 and result["val_pairs"] == 5
        pairs = EXPECTED_PAIRS[name]
        assert result["data"]["pairs"] == pairs and result["data"]["train_files"] == names[:pairs]
        assert result["train_pairs_scored"] == min(100, pairs)
        assert result["schedule"] == {"steps_per_epoch": pairs, "n_epochs": 1, "n_epochs_decay": 0,
                                      "decay_ends_at_step": pairs}
        m = result["metrics"]
        for split in ("val", "train"):
            assert 0 <= m[split]["L1"] <= 1 and 0 < m[split]["SSIM"] <= 1 and m[split]["sharpness_pooled"] >= 0
        assert m["val_minus_train_L1"] == pytest.approx(m["val"]["L1"] - m["train"]["L1"])
        assert 0 < m["L1_to_mean_photo"] <= 1 and 0 < m["mean_photo_val_L1"] <= 1
        assert result["command"] == f"python tools/data_limits.py run --only {name}"
        assert result["machine"]["cores"] >= 1 and "commit" in result["code_version"] and result["curves"]["G_L1"]
        assert result["options"]["ngf"] == 4 and result["options"]["direction"] == "BtoA"
        with Image.open(tmp / "results" / name / "outputs.png") as grid:
            assert grid.size == (3 * 128, 4 * 128)   # input | output | target, the 4 shown val photos
    assert json.loads((tmp / "results" / "pairs_25_no_jitter" / "result.json").read_text())["data"]["jitter"] is False


def test_the_real_schedules_hold_the_full_rate_for_800_steps_and_end_their_decay_at_step_1600():
    for pairs, epochs in ((25, 32), (100, 8), (400, 2)):
        plan = limits.schedule(pairs, 1600)
        assert plan == {"n_epochs": epochs, "n_epochs_decay": epochs}
        rates = [lr_factor(1 + step // pairs, epochs, epochs) for step in range(1600)]  # epoch of each step
        assert rates[:800] == [1.0] * 800 and rates[800] < 1
        assert sum(rates[800:]) / 800 == pytest.approx(0.5)   # the same mean rate over the decay in every run
        assert (1 + 1599 // pairs) == 2 * epochs               # step 1600 is the last of the last epoch


def test_shuffled_pairs_is_a_fixed_derangement_of_whole_photos(tiny_run):
    tmp, facades, _ = tiny_run
    shuffled = limits.train_set("shuffled_pairs", facades, config(), test_mode=True)
    partner = shuffled.partner
    assert sorted(partner) == list(range(TRAIN_FILES)) and all(j != i for i, j in enumerate(partner))
    assert limits.train_set("shuffled_pairs", facades, config()).partner == partner == limits.derangement(TRAIN_FILES)
    assert limits.derangement(TRAIN_FILES, seed=1) != partner
    plain = limits.train_set("pairs_400", facades, config(), test_mode=True)
    for i in (0, 7, TRAIN_FILES - 1):
        item = shuffled[i]
        assert torch.equal(item["A"], plain[i]["A"])                   # the label map of file i ...
        assert torch.equal(item["B"], plain[partner[i]]["B"])          # ... with the photo of file partner[i]
        assert not torch.equal(item["B"], plain[i]["B"])
    recorded = json.loads((tmp / "results" / "shuffled_pairs" / "result.json").read_text())["data"]
    assert recorded["photo_of"] == [recorded["train_files"][j] for j in partner]


def test_shifted_8px_moves_the_photo_8_px_right_of_its_labels(tiny_run):
    _, facades, _ = tiny_run
    plain = limits.train_set("pairs_400", facades, config(), test_mode=True)[5]
    shifted = limits.train_set("shifted_8px", facades, config(), test_mode=True)[5]
    assert torch.equal(shifted["A"], plain["A"])                       # the labels stay where they are
    assert torch.equal(shifted["B"][..., 8:], plain["B"][..., :-8])    # the photo moves 8 px to the right
    assert torch.equal(shifted["B"][..., :8], plain["B"][..., :1].expand(-1, -1, 8))  # padded with its left edge
    assert not torch.equal(shifted["B"], plain["B"])


def test_the_no_jitter_set_returns_the_same_item_every_time_and_the_jittered_one_does_not(tiny_run):
    _, facades, _ = tiny_run
    steady, jittered = (limits.train_set(name, facades, config()) for name in ("pairs_25_no_jitter", "pairs_25"))
    reads = []
    for seed in range(4):
        torch.manual_seed(seed)
        reads.append((steady[3], jittered[3]))
    assert all(torch.equal(s["A"], reads[0][0]["A"]) and torch.equal(s["B"], reads[0][0]["B"]) for s, _ in reads)
    assert reads[0][0]["A"].shape[-1] == 128
    assert any(not torch.equal(j["A"], reads[0][1]["A"]) for _, j in reads)


def test_a_second_run_skips_what_landed_and_list_says_so(tiny_run, capsys):
    tmp, _, args = tiny_run
    before = {p: p.read_bytes() for p in (tmp / "results").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert limits.main(args) == 0
    assert capsys.readouterr().out == ""      # nothing trained again
    assert {p: p.read_bytes() for p in (tmp / "results").rglob("*") if p.is_file()} == before
    assert limits.main(["list", "--results", str(tmp / "results")]) == 0
    listing = capsys.readouterr().out
    assert all(f"done  {name}" in listing for name in limits.DATA_RUNS)


def test_the_table_has_every_run_and_the_committed_one_is_current(tiny_run):
    tmp, _, _ = tiny_run
    assert limits.main(["table", "--results", str(tmp / "results")]) == 0
    table = (tmp / "results" / "README.md").read_text()
    results = limits.load_results(tmp / "results")
    assert list(results) == list(limits.DATA_RUNS)
    for name, result in results.items():
        m = result["metrics"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} | "))
        assert (f"| {result['data']['pairs']} | {m['val']['L1']:.4f} |" in row and f"| {m['train']['L1']:.4f} | "
                f"{m['val_minus_train_L1']:+.4f} | {m['L1_to_mean_photo']:.4f} |" in row and "3 steps" in row)
    # the committed table was written from the committed results: rerun `python tools/data_limits.py table` after a run
    committed = limits.load_results(limits.RESULTS)
    assert set(committed) == set(limits.DATA_RUNS)
    assert (limits.RESULTS / "README.md").read_text() == limits.results_table(committed)


def test_table_without_results_says_what_to_run(tmp_path, capsys):
    assert limits.main(["table", "--results", str(tmp_path)]) == 1
    assert "tools/data_limits.py run" in capsys.readouterr().err
