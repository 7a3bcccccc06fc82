"""p2p combine: A|B pairs from two folders, checked as a whole before anything is written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2p_lib import cli, combine
from p2p_lib.combine import CombineError, combine_folders


def pattern(seed: int, size=(8, 6)) -> np.ndarray:
    """A distinct small RGB image (H, W, 3) per seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def save(array: np.ndarray, path: Path, **options) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return array


def load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def split_folders(tmp_path):
    """A/{train,val}/*.png and B/{train,val}/*.png with matching names; the arrays by (split, name)."""
    arrays = {}
    for seed, (split, name) in enumerate([("train", "1.png"), ("train", "2.png"), ("val", "1.png")]):
        arrays[split, name] = (save(pattern(2 * seed), tmp_path / "A" / split / name),
                               save(pattern(2 * seed + 1), tmp_path / "B" / split / name))
    return tmp_path, arrays


# ---------------------------------------------------------------------------------------------
# What is written

@pytest.mark.parametrize("threads", ["--no_multiprocessing", "--workers=3"])
def test_split_folders_give_exact_side_by_side_pngs(split_folders, capsys, threads):
    root, arrays = split_folders
    args = ["combine", "--fold_A", str(root / "A"), "--fold_B", str(root / "B"), "--fold_AB", str(root / "AB")]
    assert cli.main(args + [threads]) == 0  # the official script dies here with a NameError (#1721)
    assert files(root / "AB") == ["train/1.png", "train/2.png", "val/1.png"]
    for (split, name), (a, b) in arrays.items():
        out = root / "AB" / split / name
        with Image.open(out) as img:
            assert img.format == "PNG" and img.mode == "RGB"
        np.testing.assert_array_equal(load(out), np.concatenate([a, b], axis=1))  # A left, B right, lossless
    out = capsys.readouterr().out
    assert "train: 2 pairs" in out and "val: 1 pairs" in out


def test_flat_folders_of_jpegs_stay_jpeg_at_high_quality(tmp_path):
    flat = np.kron(np.arange(12, dtype=np.uint8).reshape(3, 4), np.ones((16, 16), np.uint8)) * 20
    a = save(np.stack([flat, 255 - flat, flat // 2], axis=-1), tmp_path / "A" / "x.jpg", quality=100)
    b = save(np.stack([flat // 3, flat, 255 - flat], axis=-1), tmp_path / "B" / "x.jpg", quality=100)
    a, b = load(tmp_path / "A" / "x.jpg"), load(tmp_path / "B" / "x.jpg")  # what was actually stored
    combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", workers=1)
    assert files(tmp_path / "AB") == ["x.jpg"]
    with Image.open(tmp_path / "AB" / "x.jpg") as img:
        assert img.format == "JPEG" and img.size == (128, 48)
    error = np.abs(load(tmp_path / "AB" / "x.jpg").astype(int) - np.concatenate([a, b], axis=1).astype(int))
    assert error.mean() < 2.0  # quality 95, 4:4:4: close to the inputs (the default quality 75 with 4:2:0 is not)


def test_use_AB_pairs_x_A_with_x_B_in_one_folder(tmp_path):
    a = save(pattern(1), tmp_path / "in" / "001_A.png")
    b = save(pattern(2), tmp_path / "in" / "001_B.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    plan = combine_folders(tmp_path / "in", tmp_path / "in", tmp_path / "AB", use_AB=True, workers=1)
    assert files(tmp_path / "AB") == ["001.png"]
    np.testing.assert_array_equal(load(tmp_path / "AB" / "001.png"), np.concatenate([a, b], axis=1))
    assert [p.name for p in plan.ignored] == ["notes.txt"]


def test_num_imgs_takes_the_first_pairs_in_name_order(tmp_path):
    for i, name in enumerate(["c.png", "a.png", "b.png"]):
        save(pattern(i), tmp_path / "A" / name)
        save(pattern(10 + i), tmp_path / "B" / name)
    combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", num_imgs=2, workers=1)
    assert files(tmp_path / "AB") == ["a.png", "b.png"]


def test_grey_and_rgba_inputs_become_rgb(tmp_path):
    save(pattern(1)[..., 0], tmp_path / "A" / "g.png")                      # greyscale
    rgba = np.concatenate([pattern(2), np.full((6, 8, 1), 128, np.uint8)], axis=-1)
    save(rgba, tmp_path / "B" / "g.png")                                     # with alpha
    combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", workers=1)
    out = load(tmp_path / "AB" / "g.png")
    np.testing.assert_array_equal(out[:, :8], np.repeat(pattern(1)[..., :1], 3, axis=-1))
    np.testing.assert_array_equal(out[:, 8:], pattern(2))


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path, capsys):
    sixteen = np.array([[0, 257, 32896, 65535] * 2] * 6, dtype=np.uint16)   # 0, 1, 128, 255 in 8 bits
    (tmp_path / "A").mkdir()
    Image.fromarray(sixteen).save(tmp_path / "A" / "d.png")
    with Image.open(tmp_path / "A" / "d.png") as img:
        assert img.mode.startswith("I")  # really 16 bits on disk (Pillow's convert('RGB') would clip it: 0, 255, ...)
    save(pattern(3), tmp_path / "B" / "d.png")
    assert cli.main(["combine", "--fold_A", str(tmp_path / "A"), "--fold_B", str(tmp_path / "B"),
                     "--fold_AB", str(tmp_path / "AB"), "--no_multiprocessing"]) == 0
    out = load(tmp_path / "AB" / "d.png")
    np.testing.assert_array_equal(out[0, :4, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(out[:, :8, 0], out[:, :8, 2])  # grey: R = G = B


def test_8_bit_data_in_a_16_bit_file_and_truncated_files_are_named(tmp_path, capsys):
    (tmp_path / "A").mkdir()
    Image.fromarray(np.full((6, 8), 200, dtype=np.uint16)).save(tmp_path / "A" / "e.png")
    save(pattern(3), tmp_path / "B" / "e.png")
    assert cli.main(["combine", "--fold_A", str(tmp_path / "A"), "--fold_B", str(tmp_path / "B"),
                     "--fold_AB", str(tmp_path / "AB"), "--no_multiprocessing"]) == 1
    err = capsys.readouterr().err
    assert "e.png is a 16-bit image whose values never exceed 200" in err and "Traceback" not in err
    jpeg = tmp_path / "J"
    save(pattern(4, size=(64, 48)), jpeg / "A" / "t.jpg", quality=90)
    save(pattern(5, size=(64, 48)), jpeg / "B" / "t.jpg", quality=90)
    whole = (jpeg / "B" / "t.jpg").read_bytes()
    (jpeg / "B" / "t.jpg").write_bytes(whole[: len(whole) // 2])  # the header (size) reads; the pixels do not
    with pytest.raises(CombineError, match=r"cannot read .*B/t\.jpg"):
        combine_folders(jpeg / "A", jpeg / "B", jpeg / "AB", workers=1)


def test_exif_orientation_is_applied_before_pairing(tmp_path):
    stored = np.zeros((2, 4, 3), np.uint8)  # stored 4 wide, 2 high; orientation 6 shows it 2 wide, 4 high
    stored[:, :2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    save(stored, tmp_path / "A" / "p.png", exif=exif.tobytes())
    save(pattern(3, size=(2, 4)), tmp_path / "B" / "p.png")
    combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", workers=1)
    out = load(tmp_path / "AB" / "p.png")
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[:, :2], np.rot90(stored, k=-1))  # rotated as a viewer shows it
    np.testing.assert_array_equal(out[:, 2:], pattern(3, size=(2, 4)))


def test_resize_brings_B_to_A_size(tmp_path):
    a = save(pattern(1, size=(8, 6)), tmp_path / "A" / "r.png")
    b = save(pattern(2, size=(4, 3)), tmp_path / "B" / "r.png")
    with pytest.raises(CombineError, match=r"differ in size.*r\.png 8x6 vs r\.png 4x3"):
        combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", workers=1)
    assert not (tmp_path / "AB").exists()
    combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", resize="nearest", workers=1)
    out = load(tmp_path / "AB" / "r.png")
    np.testing.assert_array_equal(out[:, :8], a)
    np.testing.assert_array_equal(out[:, 8:], b.repeat(2, axis=0).repeat(2, axis=1))  # nearest: colours exact


# ---------------------------------------------------------------------------------------------
# What is refused, with nothing written

def test_files_without_partner_are_named_and_nothing_is_written(split_folders, capsys):
    root, _ = split_folders
    save(pattern(50), root / "A" / "train" / "3.png")
    save(pattern(51), root / "B" / "val" / "9.png")
    args = ["combine", "--fold_A", str(root / "A"), "--fold_B", str(root / "B"), "--fold_AB", str(root / "AB")]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "3.png" in err and "9.png" in err and "no partner" in err and "Traceback" not in err
    assert not (root / "AB").exists()  # the official script would silently write the others


def test_existing_output_is_named_and_kept_unless_overwrite(split_folders):
    root, arrays = split_folders
    mine = save(pattern(99), root / "AB" / "train" / "2.png")
    with pytest.raises(CombineError, match=r"already exist.*train/2\.png"):
        combine_folders(root / "A", root / "B", root / "AB", workers=1)
    assert files(root / "AB") == ["train/2.png"]  # the others were not written either
    np.testing.assert_array_equal(load(root / "AB" / "train" / "2.png"), mine)
    combine_folders(root / "A", root / "B", root / "AB", overwrite=True, workers=1)
    np.testing.assert_array_equal(load(root / "AB" / "train" / "2.png"), np.concatenate(arrays["train", "2.png"], 1))


def test_split_folders_must_match(split_folders):
    root, _ = split_folders
    (root / "A" / "test").mkdir()
    save(pattern(7), root / "A" / "test" / "1.png")
    with pytest.raises(CombineError, match=r"split folders of .*A missing in .*B: test"):
        combine_folders(root / "A", root / "B", root / "AB", workers=1)
    assert not (root / "AB").exists()


def test_mixed_layout_is_refused(split_folders):
    root, _ = split_folders
    save(pattern(7), root / "A" / "stray.png")
    with pytest.raises(CombineError, match="both images .*and split folders"):
        combine_folders(root / "A", root / "B", root / "AB", workers=1)
    assert not (root / "AB").exists()


def test_output_folder_may_not_be_an_input_folder(split_folders):
    root, _ = split_folders
    before = {p: p.read_bytes() for p in (root / "A").rglob("*.png")}
    with pytest.raises(CombineError, match="is the input folder"):
        combine_folders(root / "A", root / "B", root / "A", overwrite=True, workers=1)
    assert {p: p.read_bytes() for p in (root / "A").rglob("*.png")} == before


def test_unreadable_image_is_named(tmp_path):
    save(pattern(1), tmp_path / "A" / "bad.png")
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CombineError, match=r"could not be read.*bad\.png"):
        combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", workers=1)
    assert not (tmp_path / "AB").exists()


def test_empty_folders_are_refused(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    with pytest.raises(CombineError, match="no image pairs"):
        combine_folders(tmp_path / "A", tmp_path / "B", tmp_path / "AB", workers=1)


# ---------------------------------------------------------------------------------------------
# Atomic writes

def test_a_failed_write_leaves_no_partial_or_temporary_file(split_folders, capsys, monkeypatch):
    root, arrays = split_folders
    real_save, calls = Image.Image.save, []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            fp.write(b"half an image")  # bytes already in the temporary file when the disk fills up
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", failing_save)
    args = ["combine", "--fold_A", str(root / "A"), "--fold_B", str(root / "B"), "--fold_AB", str(root / "AB"),
            "--no_multiprocessing"]
    assert cli.main(args) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert files(root / "AB") == ["train/1.png"]  # the first pair complete, the second not there at all
    np.testing.assert_array_equal(load(root / "AB" / "train" / "1.png"), np.concatenate(arrays["train", "1.png"], 1))


def test_save_atomic_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        combine.save_atomic(Image.new("RGB", (2, 2)), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"] and target.read_bytes() == b"old"
