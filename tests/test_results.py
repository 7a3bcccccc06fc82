"""p2p_lib.results: reading the committed ablation sweep back (result.json + outputs.png per run)."""
import json

import numpy as np
import pytest
from PIL import Image

from p2p_lib.results import colour_intersection, kept_outputs, load_sweep


def write_run(folder, setting, seed, pairs=(3, 7), side=8):
    run = folder / f"{setting}-seed{seed}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"setting": setting, "seed": seed, "shown_val_pairs": list(pairs),
                                                 "metrics": {"color_histogram_intersection": {"L": 0.9, "a": 0.6, "b": 0.3}}}))
    column = np.zeros((side * len(pairs), side, 3), np.uint8)
    for i in range(len(pairs)):
        column[i * side:(i + 1) * side] = 40 * (i + 1) + seed  # each kept image a different grey
    Image.fromarray(column).save(run / "outputs.png")
    return run


def test_runs_are_grouped_by_setting_and_sorted_by_seed(tmp_path):
    write_run(tmp_path, "l1_cgan", 1)
    write_run(tmp_path, "l1", 0)
    write_run(tmp_path, "l1_cgan", 0)
    sweep = load_sweep(tmp_path)
    assert sorted(sweep) == ["l1", "l1_cgan"]
    assert [run["seed"] for run in sweep["l1_cgan"]] == [0, 1]
    assert sweep["l1"][0]["folder"] == str(tmp_path / "l1-seed0")
    assert load_sweep(tmp_path / "missing") == {}


def test_kept_outputs_split_the_column_by_val_pair(tmp_path):
    write_run(tmp_path, "l1", 2, pairs=(3, 7, 11))
    images = kept_outputs(load_sweep(tmp_path)["l1"][0])
    assert list(images) == [3, 7, 11]
    assert all(image.shape == (8, 8, 3) and image.dtype == np.uint8 for image in images.values())
    assert [int(image[0, 0, 0]) for image in images.values()] == [42, 82, 122]  # top to bottom, in order


def test_kept_outputs_refuse_a_column_that_does_not_match_its_pairs(tmp_path):
    run = write_run(tmp_path, "l1", 0, pairs=(3, 7))
    result = json.loads((run / "result.json").read_text())
    with pytest.raises(ValueError, match="3 square images of 8 px"):
        kept_outputs({**result, "shown_val_pairs": [3, 7, 9], "folder": str(run)})


def test_colour_intersection_is_the_mean_over_l_a_b():
    assert colour_intersection({"color_histogram_intersection": {"L": 0.9, "a": 0.6, "b": 0.3}}) == pytest.approx(0.6)


def test_lesson_times_merge_and_read_back(tmp_path):
    from p2p_lib.results import lesson_run_time, record_lesson_times
    timings = tmp_path / "timings.json"
    assert "no run time recorded" in lesson_run_time("07", timings)
    record_lesson_times({"07_evaluation_inference.ipynb": 95.04, "00_what_is_pix2pix.ipynb": 20.0}, timings, today="2026-12-04")
    record_lesson_times({"00_what_is_pix2pix.ipynb": 31.0}, timings, today="2026-12-05")  # one lesson again
    saved = json.loads(timings.read_text())
    assert saved["07_evaluation_inference.ipynb"]["seconds"] == 95.0 and saved["00_what_is_pix2pix.ipynb"]["seconds"] == 31.0
    assert saved["00_what_is_pix2pix.ipynb"]["date"] == "2026-12-05" and saved["07_evaluation_inference.ipynb"]["date"] == "2026-12-04"
    line = lesson_run_time("07", timings)
    assert line.startswith("07_evaluation_inference.ipynb ran in 1.6 min") and "2026-12-04" in line
    assert not list(tmp_path.glob("*.tmp"))


def test_a_test_run_records_each_lessons_time_only_when_asked(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from p2p_lib.paths import PROJECT_ROOT
    (tmp_path / "lessons").mkdir()
    shutil.copy(PROJECT_ROOT / "conftest.py", tmp_path / "conftest.py")
    run_time_cell = {"cell_type": "code", "execution_count": 1, "id": "a0", "metadata": {},
                     "source": ["# NBVAL_IGNORE_OUTPUT\n", "from p2p_lib.results import lesson_run_time\n", "print(lesson_run_time(\"99\"))"],
                     "outputs": [{"name": "stdout", "output_type": "stream", "text": ["not run yet\n"]}]}
    notebook = {"cells": [run_time_cell, {"cell_type": "code", "execution_count": 2, "id": "a1", "metadata": {}, "source": ["print(6 * 7)"],
                                          "outputs": [{"name": "stdout", "output_type": "stream", "text": ["42\n"]}]}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "lessons" / "99_tiny.ipynb").write_text(json.dumps(notebook))
    timings = tmp_path / "timings.json"
    command = [sys.executable, "-m", "pytest", "-q", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
               "-p", "no:randomly", "lessons/99_tiny.ipynb"]
    env = {**os.environ, "P2P_TIMINGS_FILE": str(timings)}
    for record in ("0", "1"):
        done = subprocess.run(command, cwd=tmp_path, env={**env, "P2P_RECORD_TIMINGS": record}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert timings.exists() == (record == "1")
        saved = json.loads((tmp_path / "lessons" / "99_tiny.ipynb").read_text())
        printed = "".join(saved["cells"][0]["outputs"][0]["text"])
        assert printed.startswith("99_tiny.ipynb ran in ") if record == "1" else printed == "not run yet\n"
        assert saved["cells"][1] == notebook["cells"][1]  # nothing else in the notebook changes
    entry = json.loads(timings.read_text())["99_tiny.ipynb"]
    assert 0 < entry["seconds"] < 120 and entry["machine"]["cores"] >= 1
