"""tools/ablate.py, lesson 08's sweep: its plan, its measures, and a whole tiny sweep end to end (train, score,
write, resume, re-score)."""
import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from imagefactory import aligned_pairs

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ablate", ROOT / "tools" / "ablate.py")
ablate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablate)

TINY = json.dumps({"ngf": 4, "ndf": 4, "n_epochs": 1, "n_epochs_decay": 1, "num_val": 4})


def test_the_plan_covers_the_papers_tables_with_two_seeds_and_a_third_for_the_key_settings():
    runs = ablate.planned_runs()
    assert len(runs) == 2 * len(ablate.SETTINGS) + len(ablate.THIRD_SEED) == 32
    assert runs[:len(ablate.SETTINGS)] == [(name, 0) for name in ablate.SETTINGS]  # seed 0 of everything first
    assert {seed for name, seed in runs if name == "l1_cgan"} == {0, 1, 2}
    assert {seed for name, seed in runs if name == "gan"} == {0, 1}
    configs = {name: ablate.run_config(name, 0) for name in ablate.SETTINGS}
    assert configs["l1_cgan"] == {**ablate.BASE, "seed": 0}  # the paper's objective is the base itself
    assert (configs["gan"]["adversarial"], configs["gan"]["lambda_L1"]) == ("gan", 0.0)
    assert (configs["cgan"].get("adversarial", "cgan"), configs["cgan"]["lambda_L1"]) == ("cgan", 0.0)
    assert configs["l1"]["adversarial"] == "none" and configs["encdec_l1_cgan"]["netG"] == "encoder_decoder_128"
    assert [configs[f"lambda_{v}"]["lambda_L1"] for v in (1, 10, 1000)] == [1.0, 10.0, 1000.0]
    with pytest.raises(SystemExit, match="unknown setting"):
        ablate.planned_runs(["l2"])


def test_curves_average_equal_stretches():
    history = {"G_L1": [float(i) for i in range(10)]}
    assert ablate.curves(history, points=5) == {"every": 2, "G_L1": [0.5, 2.5, 4.5, 6.5, 8.5]}


def test_a_tiny_sweep_end_to_end_resumes_and_rescores(tmp_path, capsys):
    data = aligned_pairs(tmp_path / "data", (("train", 3), ("val", 4)), 143)
    argv = ["run", "--only", "l1", "gan", "--seeds", "0", "--results", str(tmp_path / "results"),
            "--models", str(tmp_path / "models"), "--dataroot", str(data), "--base", TINY]
    assert ablate.main(argv) == 0
    for run in ("l1-seed0", "gan-seed0"):
        result = json.loads((tmp_path / "results" / run / "result.json").read_text())
        m = result["metrics"]
        assert {"L1", "PSNR", "SSIM", "color_histogram_intersection", "checkerboard_ratio", "sharpness_pooled"} <= set(m)
        assert result["steps"] == 6 and len(result["curves"]["G_L1"]) == 6 and result["val_pairs"] == 4
        assert result["command"] == f"python tools/ablate.py run --only {run.split('-')[0]} --seeds 0"
        assert {"commit", "training_code_digest"} <= set(result["code_version"]) and result["machine"]["cores"] >= 1
        assert Image.open(tmp_path / "results" / run / "outputs.png").size == (128, 4 * 128)
    l1 = json.loads((tmp_path / "results" / "l1-seed0" / "result.json").read_text())
    gan = json.loads((tmp_path / "results" / "gan-seed0" / "result.json").read_text())
    assert l1["metrics"]["gradient"] is None and gan["metrics"]["gradient"]["l1"] == 0.0  # GAN alone: lambda 0
    assert max(l1["curves"]["G_GAN"]) == 0.0 and min(gan["curves"]["D_real"]) > 0
    # a second call skips what is done: nothing is trained again
    printed = capsys.readouterr().out
    assert ablate.main(argv) == 0 and capsys.readouterr().out == ""
    assert "l1-seed0: L1" in printed
    # re-scoring from the cached networks gives the same numbers
    (tmp_path / "results" / "l1-seed0" / "result.json").unlink()
    assert ablate.main(["evaluate", "--only", "l1", "--results", str(tmp_path / "results"),
                        "--models", str(tmp_path / "models")]) == 0
    again = json.loads((tmp_path / "results" / "l1-seed0" / "result.json").read_text())
    assert again["metrics"] == l1["metrics"]


def test_commit_takes_only_the_runs_files_and_leaves_other_staged_work_alone(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "work.py").write_text("staged, not the run's\n")
    git("add", "work.py")
    result = tmp_path / "experiments" / "ablations" / "l1-seed0" / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text("{}")
    assert ablate.commit([result], "ablations: l1-seed0", repo=tmp_path)
    assert git("show", "--name-only", "--format=%s", "HEAD").split() == ["ablations:", "l1-seed0",
                                                                         "experiments/ablations/l1-seed0/result.json"]
    assert git("diff", "--cached", "--name-only").split() == ["work.py"]  # still staged, not committed
