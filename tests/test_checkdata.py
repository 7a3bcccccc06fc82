"""`p2p check-data` (p2p_lib/checkdata.py): every problem named, the exit status, the facades summary."""
from __future__ import annotations

import argparse
import os
import re

import numpy as np
import pytest
import torch

import imagefactory as make
from p2p_lib import checkdata
from p2p_lib.data import PairedDataError, PairedImageDataset


def check_data(capsys, *argv):
    """Run `p2p check-data ARGV` through the subcommand's own parser; (exit status, printed text)."""
    parser = argparse.ArgumentParser(prog="p2p")
    checkdata.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check-data", *map(str, argv)])
    status = args.func(args)
    return status, capsys.readouterr().out


@pytest.fixture
def good(tmp_path):
    """A small clean aligned dataset: train 3 pairs, val 2, test 1, all 520x264."""
    root = tmp_path / "good"
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for number in range(count):
            make.write_pair(root / split / f"{number}.png", seed=number)
    return root


def test_real_facades_summary(capsys):
    from p2p_lib import facades_dir
    from p2p_lib.cli import main

    root = facades_dir()
    before = {p.name: p.stat().st_mtime_ns for p in (root / "val").iterdir()}
    status = main(["check-data", str(root)])
    out = capsys.readouterr().out
    assert status == 0
    assert out.count("\n") == 1, out  # one line when all is well
    assert re.search(r"train 400, val 100, test 106", out)
    assert "512x256" in out and "halves 256x256" in out and out.startswith("OK")
    assert {p.name: p.stat().st_mtime_ns for p in (root / "val").iterdir()} == before


def test_clean_dataset_one_line_exit_zero(good, capsys):
    status, out = check_data(capsys, good)
    assert status == 0
    assert out.strip().splitlines() == [f"OK {good}: aligned A|B pairs, train 3, val 2, test 1; "
                                        "size 520x264 (halves 260x264)"]


def test_broken_folder_names_every_file_and_fails(good, capsys):
    train = good / "train"
    make.corrupt_jpeg(train / "corrupt.jpg")
    make.truncated_png(train / "truncated.png")
    make.not_an_image(train / "page.jpg")
    make.empty_file(train / "empty.png")
    make.write_array(train / "odd.png", make.noise(513, 256))
    make.write_array(train / "single.jpg", make.noise(300, 300))
    make.symlink_loop(train / "loop.png")
    before = make.tree_snapshot(good)
    status, out = check_data(capsys, good)
    assert status == 1
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    for name in ("corrupt.jpg", "truncated.png", "page.jpg", "empty.png", "odd.png", "single.jpg", "loop.png"):
        assert sum(name in line for line in errors) == 1, (name, out)
    assert out.splitlines()[-1].startswith("FAIL") and "7 error(s)" in out
    assert "train 3," in out.splitlines()[-1]  # the three good pairs are still counted
    assert make.tree_snapshot(good) == before


def test_every_truncated_file_is_found_by_decoding(good, capsys):
    # Only a full decode finds these: the headers are intact.
    for number in range(3):
        data = (good / "train" / f"{number}.png").read_bytes()
        (good / "train" / f"{number}.png").write_bytes(data[: len(data) * 2 // 3])
    status, out = check_data(capsys, good, "--phase", "train")
    assert status == 1
    assert all(f"{number}.png is truncated" in out for number in range(3))


def test_folder_layout_unpartnered_and_size_mismatch(tmp_path, capsys):
    train = tmp_path / "train"
    for stem in ("1", "2"):
        make.write_array(train / "A" / f"{stem}.jpg", make.noise(64, 64))
        make.write_array(train / "B" / f"{stem}.png", make.noise(64, 64))
    make.write_array(train / "A" / "only_a.png", make.noise(64, 64))
    make.write_array(train / "B" / "only_b.png", make.noise(64, 64))
    make.write_array(train / "A" / "3.png", make.noise(64, 64))
    make.write_array(train / "B" / "3.png", make.noise(64, 48))
    status, out = check_data(capsys, tmp_path)
    assert status == 1
    assert "only_a.png has no partner" in out and "only_b.png has no partner" in out
    assert "64x48" in out
    assert "A/ B/ folder pairs" in out and "train 2" in out


@pytest.mark.parametrize("case", ["missing_train", "empty_val", "nonexistent", "loop_split", "both_layouts"])
def test_split_level_problems_fail(tmp_path, capsys, case):
    root = tmp_path / "data"
    make.write_pair(root / "val" / "1.png")
    expected = {"missing_train": str(root / "train"), "empty_val": str(root / "val"),
                "nonexistent": str(tmp_path / "nowhere"), "loop_split": str(root / "train"),
                "both_layouts": str(root / "train")}[case]
    if case == "empty_val":
        make.write_pair(root / "train" / "1.png")
        (root / "val" / "1.png").unlink()
    elif case == "nonexistent":
        root = tmp_path / "nowhere"
    elif case == "loop_split":
        os.symlink(root / "train", root / "train")
    elif case == "both_layouts":
        make.write_pair(root / "train" / "1.png")
        make.write_array(root / "train" / "A" / "1.png", make.noise(64, 64))
        make.write_array(root / "train" / "B" / "1.png", make.noise(64, 64))
    status, out = check_data(capsys, root)
    assert status == 1
    assert any(line.startswith("ERROR") and expected in line for line in out.splitlines()), out


def test_missing_val_and_test_are_notes_not_errors(tmp_path, capsys):
    make.write_pair(tmp_path / "train" / "1.png")
    status, out = check_data(capsys, tmp_path)
    assert status == 0
    assert "note: no val split" in out and "note: no test split" in out
    assert out.splitlines()[-1].startswith("OK") and "train 1" in out


def test_phase_limits_the_splits_and_must_exist(good, capsys):
    make.truncated_png(good / "test" / "bad.png")
    status, out = check_data(capsys, good, "--phase", "train", "--phase", "val")
    assert status == 0 and "bad.png" not in out and "test 1" not in out and "train 3, val 2;" in out
    status, out = check_data(capsys, good, "--phase", "validation")
    assert status == 1 and str(good / "validation") in out


def test_mode_surprises_are_warnings_and_strict_fails_on_them(good, capsys):
    train = good / "train"
    make.write_array(train / "gray.png", make.noise(520, 264, channels=1))
    make.write_array(train / "palette.png", make.permuted_pair())
    from PIL import Image
    Image.open(train / "palette.png").convert("P", palette=Image.Palette.ADAPTIVE).save(train / "palette.png")
    make.sixteen_bit_pair(train / "depth.png", height=256)
    rgba = np.concatenate([make.permuted_pair(), np.full((264, 520, 1), 255, np.uint8)], axis=2)
    make.write_array(train / "opaque.png", rgba)
    (train / "notes.txt").write_text("not an image")
    status, out = check_data(capsys, good)
    assert status == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    for word, name in (("grayscale", "gray.png"), ("palette", "palette.png"), ("16-bit", "depth.png"),
                       ("alpha", "opaque.png"), ("skipped", "notes.txt"), ("mixes image sizes", "512x256")):
        assert any(word in line and name in line for line in warnings), (word, out)
    assert out.splitlines()[-1].startswith("OK with warnings") and "train 7" in out
    status, _ = check_data(capsys, good, "--strict")
    assert status == 1


def test_transparent_and_eight_bit_in_sixteen_are_errors(good, capsys):
    rgba = np.concatenate([make.permuted_pair(), np.full((264, 520, 1), 255, np.uint8)], axis=2)
    rgba[0, 0, 3] = 10
    make.write_array(good / "train" / "see_through.png", rgba)
    make.write_array(good / "train" / "small16.png", np.full((264, 520), 255, np.uint16))
    status, out = check_data(capsys, good)
    assert status == 1
    assert "see_through.png has transparent pixels" in out and "small16.png is a 16-bit image" in out


def test_many_files_of_one_kind_are_grouped(good, capsys):
    for number in range(15):
        make.write_array(good / "val" / f"g{number:02d}.png", make.noise(520, 264, seed=number, channels=1))
    status, out = check_data(capsys, good, "--phase", "val")
    assert status == 0
    line = next(line for line in out.splitlines() if "grayscale" in line)
    assert "15 file(s)" in line and "and 5 more" in line
    _, out = check_data(capsys, good, "--phase", "val", "--all")
    assert all(f"g{number:02d}.png" in out for number in range(15))


@pytest.mark.parametrize("maker, name, fails, said", [  # the expected outcome, pinned; then both must agree with it
    (make.corrupt_jpeg, "bad.jpg", True, "bad.jpg"), (make.truncated_png, "bad.png", True, "is truncated"),
    (make.not_an_image, "bad.png", True, "is not an image PIL can read"), (make.empty_file, "bad.png", True, "is empty"),
    (make.symlink_loop, "bad.png", True, "symlink loop"),
    (lambda p: make.write_array(p, make.noise(511, 256)), "bad.png", True, "an odd width"),
    (lambda p: make.write_array(p, make.noise(256, 256)), "bad.png", True, "looks like a single image"),
    (lambda p: make.write_array(p, make.noise(520, 264, channels=1)), "fine.png", False, "grayscale"),
])
def test_check_data_and_the_dataset_reach_the_expected_verdict(good, capsys, maker, name, fails, said):
    maker(good / "train" / name)
    try:
        dataset = PairedImageDataset(good)
        torch.manual_seed(0)
        for index in range(len(dataset)):
            dataset[index]
        dataset_failed = False
    except PairedDataError as err:
        dataset_failed = True
        assert said in str(err)
    status, out = check_data(capsys, good, "--phase", "train")
    assert (dataset_failed, status) == (fails, int(fails)), out
    assert name in out and said in out


def test_messages_that_used_to_mislead(good, capsys):
    """A FIFO is not 'an empty file' (and opening it would wait forever), a 1-pixel-wide file gets no advice to
    pad to width 0, and a float TIFF is one error, not an error and a conversion note."""
    fifo = good / "train" / "pipe.png"
    os.mkfifo(fifo)
    make.write_array(good / "train" / "thin.png", make.noise(1, 1))
    make.write_array(good / "val" / "depth.tif", np.full((264, 520), 0.5, np.float32))
    status, out = check_data(capsys, good)
    assert status == 1
    assert "pipe.png is not a regular file (a FIFO, socket or device)" in out and "pipe.png is empty" not in out
    assert "thin.png is 1x1: too small to hold two halves A|B" in out and "e.g. 0" not in out
    assert "depth.tif is a 32-bit float image (mode F)" in out and "mode F: converted to RGB" not in out
    with pytest.raises(PairedDataError, match="not a regular file"):
        from p2p_lib.data import open_image
        open_image(fifo)
