"""Lesson 09's task transforms (p2p_lib.tasks) and `p2p make-pairs` (p2p_lib.makepairs): shapes, value ranges,
determinism, hand-checked cases, and bad input refused with nothing written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from p2p_lib import cli
from p2p_lib.data import PairedImageDataset, get_params, transform_image
from p2p_lib.imagefiles import PairedDataError
from p2p_lib.makepairs import MakePairsError, make_pairs
from p2p_lib.tasks import (TASKS, ColorizationDataset, bicubic_degrade, edge_map, hide, lab_batch_to_rgb, lab_tensors,
                           lab_to_rgb, paste_known, photo_half, rectangle_mask, stylize, task_input, to_gray)
from p2p_lib.train import COURSE_CONFIG, train_course_model


def photo(seed: int = 0, size: int = 64) -> Image.Image:
    "A smooth random colour picture (low-frequency noise, upsampled), like a photo at small scale."
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the transforms -----------------------------------------------------------------------------------
def test_photo_half_takes_one_side_of_an_aligned_file():
    pair = Image.fromarray(np.concatenate([np.full((4, 4, 3), 10, np.uint8), np.full((4, 4, 3), 200, np.uint8)], 1))
    assert pixels(photo_half(pair, "left")).max() == 10 and pixels(photo_half(pair, "right")).min() == 200
    with pytest.raises(ValueError, match="even width"):
        photo_half(Image.new("RGB", (5, 4)))
    with pytest.raises(ValueError, match="'left' or 'right'"):
        photo_half(pair, "top")


def test_gray_is_pils_luma_in_three_equal_channels():
    gray = pixels(to_gray(Image.new("RGB", (2, 2), (255, 0, 0))))
    assert gray.shape == (2, 2, 3) and (gray == 76).all()  # 0.299 * 255 = 76.2: ITU-R 601 luma of pure red


@pytest.mark.parametrize("rgb, lab", [((255, 255, 255), (100, 0, 0)), ((0, 0, 0), (0, 0, 0)),
                                      ((255, 0, 0), (53.24, 80.09, 67.20))])  # sRGB red, D65 (CIE tables)
def test_lab_scaling_is_the_official_colorization_modes(rgb, lab):
    L, ab = lab_tensors(Image.new("RGB", (3, 2), rgb))
    assert L.shape == (1, 2, 3) and ab.shape == (2, 2, 3) and L.dtype == ab.dtype == torch.float32
    assert L[0, 0, 0].item() == pytest.approx(lab[0] / 50 - 1, abs=1e-3)     # L / 50 - 1
    assert ab[:, 0, 0].tolist() == pytest.approx([lab[1] / 110, lab[2] / 110], abs=1e-3)  # ab / 110


def test_lab_round_trip_and_lightness_kept_whatever_the_colours():
    image = photo(1)
    L, ab = lab_tensors(image)
    assert -1 <= L.min() and L.max() <= 1 and ab.abs().max() <= 1
    assert np.abs(lab_to_rgb(L, ab).astype(int) - pixels(image)).max() <= 1
    # any predicted ab keeps the input's lightness (to 8-bit rounding and gamut clipping)
    wild = torch.rand_like(ab) * 0.6 - 0.3
    L_back, _ = lab_tensors(Image.fromarray(lab_to_rgb(L, wild)))
    assert 50 * (L_back - L).abs().mean() < 1.0  # in L* units, of 100


def test_rectangle_masks_are_reproducible_from_the_file_name():
    a = rectangle_mask((64, 48), key="x.jpg", seed=0)
    assert a.shape == (48, 64) and a.dtype == bool and 0 < a.mean() < 0.6
    assert np.array_equal(a, rectangle_mask((64, 48), key="x.jpg", seed=0))
    assert not np.array_equal(a, rectangle_mask((64, 48), key="y.jpg", seed=0))
    assert not np.array_equal(a, rectangle_mask((64, 48), key="x.jpg", seed=1))
    one = rectangle_mask((100, 100), key="z", count=(1, 1), side=(0.2, 0.2))
    rows, cols = np.nonzero(one)
    assert one.sum() == 400 and np.ptp(rows) == np.ptp(cols) == 19  # a single 20 x 20 rectangle


def test_hide_sets_the_masked_pixels_to_gray_and_paste_known_restores_the_rest():
    image, mask = photo(2), rectangle_mask((64, 64), key="p", seed=3)
    hidden = pixels(hide(image, mask))
    assert (hidden[mask] == 128).all() and np.array_equal(hidden[~mask], pixels(image)[~mask])
    given = torch.from_numpy(hidden).permute(2, 0, 1).float() / 127.5 - 1
    output = torch.rand(3, 64, 64) * 2 - 1
    pasted = paste_known(output, given, torch.from_numpy(mask))
    assert torch.equal(pasted[:, torch.from_numpy(mask)], output[:, torch.from_numpy(mask)])
    assert torch.equal(pasted[:, ~torch.from_numpy(mask)], given[:, ~torch.from_numpy(mask)])
    batch = paste_known(output[None].repeat(2, 1, 1, 1), given[None].repeat(2, 1, 1, 1), torch.from_numpy(mask))
    assert batch.shape == (2, 3, 64, 64) and torch.equal(batch[1], pasted)


def test_edges_of_a_square_are_its_outline_black_on_white_one_pixel_wide():
    square = np.zeros((64, 64, 3), np.uint8)
    square[16:48, 16:48] = 255
    edges = pixels(edge_map(Image.fromarray(square)))[..., 0]
    assert set(np.unique(edges)) == {0, 255}
    on = edges == 0
    assert abs(on.sum() - 4 * 32) <= 16                       # about the square's perimeter
    assert not on[24:40, 24:40].any() and not on[:8].any()    # nothing inside, nothing far outside
    thick = on[:-1, :-1] & on[1:, :-1] & on[:-1, 1:] & on[1:, 1:]
    assert not thick.any()                                    # thinned: no 2 x 2 block of edge pixels
    assert not (pixels(edge_map(Image.new("RGB", (32, 32), (90, 90, 90)))) == 0).any()  # flat: no edges


def test_stylize_posterises_and_outlines_deterministically():
    image = photo(4)
    styled = pixels(stylize(image))
    assert styled.shape == (64, 64, 3) and np.array_equal(styled, pixels(stylize(image)))
    assert len(np.unique(styled.reshape(-1, 3), axis=0)) <= 2 ** 9          # 3 bits per channel
    assert set(np.unique(styled)) <= {0, 32, 64, 96, 128, 160, 192, 224}     # posterize(3) keeps the top 3 bits
    assert (styled == 0).all(-1).any()                                      # black outlines


def test_bicubic_degrade_keeps_the_size_and_removes_fine_detail():
    flat = Image.new("RGB", (32, 32), (40, 120, 200))
    assert np.array_equal(pixels(bicubic_degrade(flat)), pixels(flat))  # nothing to lose
    checker = Image.fromarray(((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)).convert("RGB")
    degraded = pixels(bicubic_degrade(checker))
    assert degraded.shape == (32, 32, 3) and degraded.std() < 10 and abs(degraded.mean() - 127.5) < 10
    with pytest.raises(ValueError, match="too small"):
        bicubic_degrade(Image.new("RGB", (3, 3)))


def test_task_input_makes_each_tasks_input_at_the_photos_size():
    image = photo(5)
    for task in TASKS:
        made = task_input(task, image, key="a.jpg")
        assert made.size == image.size and made.mode == "RGB", task
    assert np.array_equal(pixels(task_input("inpaint", image, key="a.jpg")), pixels(task_input("inpaint", image, key="a.jpg")))
    with pytest.raises(ValueError, match="unknown task 'blur'"):
        task_input("blur", image)


# --- p2p make-pairs -----------------------------------------------------------------------------------
@pytest.fixture
def photo_folders(tmp_path):
    "SRC/train/{a,b}.png and SRC/val/c.png, photos saved losslessly."
    src = tmp_path / "photos"
    for split, name, seed in (("train", "a.png", 0), ("train", "b.png", 1), ("val", "c.png", 2)):
        (src / split).mkdir(parents=True, exist_ok=True)
        photo(seed).save(src / split / name)
    return src


def test_make_pairs_mirrors_the_splits_and_writes_input_beside_photo(photo_folders, tmp_path):
    dest = tmp_path / "pairs"
    job = make_pairs("superres", photo_folders, dest)
    assert job.splits == {"train": 2, "val": 1} and sorted(files(dest)) == ["train/a.png", "train/b.png", "val/c.png"]
    pair = pixels(load(dest / "train" / "b.png"))
    assert pair.shape == (64, 128, 3)
    assert np.array_equal(pair[:, 64:], pixels(photo(1)))                        # B: the photo, exactly
    assert np.array_equal(pair[:, :64], pixels(bicubic_degrade(photo(1))))       # A: the task's input
    data = PairedImageDataset(dest, "train", direction="AtoB", load_size=64, crop_size=64, no_flip=True)
    assert len(data) == 2 and data[0]["A"].shape == (3, 64, 64)                  # what p2p train reads


def test_make_pairs_takes_one_half_of_aligned_files_and_flat_folders_stay_flat(tmp_path):
    src = tmp_path / "aligned"
    src.mkdir()
    labels = Image.new("RGB", (64, 64), (0, 0, 255))
    aligned = Image.new("RGB", (128, 64))
    aligned.paste(photo(7), (0, 0)), aligned.paste(labels, (64, 0))
    aligned.save(src / "1.png")
    job = make_pairs("colorize", src, tmp_path / "out", half="left")
    assert job.splits == {"": 1}
    pair = pixels(load(tmp_path / "out" / "1.png"))
    assert np.array_equal(pair[:, 64:], pixels(photo(7))) and np.array_equal(pair[:, :64], pixels(to_gray(photo(7))))


def test_make_pairs_refuses_bad_jobs_and_writes_nothing(photo_folders, tmp_path):
    dest = tmp_path / "pairs"
    make_pairs("edges", photo_folders, dest)
    before = files(dest)
    with pytest.raises(MakePairsError, match=r"3 output\(s\) exist already.*--overwrite"):
        make_pairs("inpaint", photo_folders, dest)
    assert files(dest) == before
    make_pairs("inpaint", photo_folders, dest, overwrite=True)
    assert files(dest) != before
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "missing", tmp_path / "o1", "is not a folder"),
             (tmp_path / "empty", tmp_path / "o2", "no photos in"),
             (photo_folders, photo_folders / "train" / "inside", "is inside SRC"),
             (photo_folders, photo_folders, "DEST is SRC")]
    (tmp_path / "a_file").write_text("x")
    cases.append((photo_folders, tmp_path / "a_file", "is a file"))
    for src, out, message in cases:
        with pytest.raises(MakePairsError, match=message):
            make_pairs("edges", src, out)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert not (photo_folders / "train" / "inside").exists()
    photo(9).save(photo_folders / "train" / "a.jpg")   # a.jpg and a.png would both write a.png
    with pytest.raises(MakePairsError, match="two photos map to one output name"):
        make_pairs("edges", photo_folders, tmp_path / "o3")
    assert not (tmp_path / "o3").exists()


def test_a_broken_photo_stops_the_job_by_name_and_what_was_written_is_complete(photo_folders, tmp_path):
    (photo_folders / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)   # a truncated PNG
    with pytest.raises(MakePairsError, match="b.png"):
        make_pairs("edges", photo_folders, tmp_path / "pairs")
    assert sorted(files(tmp_path / "pairs")) == ["train/a.png"]            # a.png came first, complete
    assert load(tmp_path / "pairs" / "train" / "a.png").size == (128, 64)
    photo(0, size=8).save(photo_folders / "train" / "b.png")
    with pytest.raises(MakePairsError, match="8x8 px is too small"):
        make_pairs("edges", photo_folders, tmp_path / "pairs", overwrite=True)


def test_the_command_line(photo_folders, tmp_path, capsys):
    dest = tmp_path / "pairs"
    assert cli.main(["make-pairs", "--task", "stylize", str(photo_folders), str(dest)]) == 0
    out = capsys.readouterr().out
    assert "train: 2 stylize pairs" in out and "val: 1 stylize pairs" in out and "--direction AtoB" in out
    assert cli.main(["make-pairs", "--task", "stylize", str(photo_folders), str(dest)]) == 1
    assert "refused, nothing written" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["make-pairs", "--task", "blur", str(photo_folders), str(dest)])
    assert exit_.value.code == 2 and "invalid choice: 'blur'" in capsys.readouterr().err


# --- the L*a*b* colorization dataset, and the course loop on it ---------------------------------------
def test_colorization_dataset_converts_each_photo_after_one_shared_jitter(photo_folders):
    plain = ColorizationDataset(photo_folders, "train", load_size=64, crop_size=64, no_flip=True)
    assert len(plain) == 2
    item = plain[1]
    L, ab = lab_tensors(photo(1))
    assert torch.equal(item["A"], L) and torch.equal(item["B"], ab) and item["A_paths"].endswith("b.png")
    jittered = ColorizationDataset(photo_folders, "train", load_size=72, crop_size=48)
    torch.manual_seed(3)
    item = jittered[0]
    assert item["A"].shape == (1, 48, 48) and item["B"].shape == (2, 48, 48)
    # L* and a*b* come from one crop and one flip: together they are a real photo's crop, not two
    rebuilt = lab_to_rgb(item["A"], item["B"]).astype(int)
    torch.manual_seed(3)
    params = get_params((64, 64), load_size=72, crop_size=48)
    expected = pixels(transform_image(photo(0), params, load_size=72, crop_size=48))
    assert np.abs(rebuilt - expected).max() <= 1
    rgb = lab_batch_to_rgb(item["A"][None], item["B"][None])
    assert rgb.shape == (1, 3, 48, 48) and rgb.min() >= -1 and rgb.max() <= 1


def test_colorization_dataset_reads_one_half_and_names_bad_files(tmp_path):
    (tmp_path / "train").mkdir()
    aligned = Image.new("RGB", (128, 64), (0, 0, 255))
    aligned.paste(photo(7), (0, 0))
    aligned.save(tmp_path / "train" / "1.png")
    item = ColorizationDataset(tmp_path, "train", half="left", load_size=64, crop_size=64, no_flip=True)[0]
    assert torch.equal(item["B"], lab_tensors(photo(7))[1])
    (tmp_path / "val").mkdir()
    with pytest.raises(PairedDataError, match="no photos in"):
        ColorizationDataset(tmp_path, "val")
    (tmp_path / "val" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    with pytest.raises(PairedDataError, match="bad.png"):
        ColorizationDataset(tmp_path, "val", load_size=64, crop_size=64)[0]


def test_the_course_loop_trains_one_to_two_channels(photo_folders):
    config = {**COURSE_CONFIG, "input_nc": 1, "output_nc": 2, "ngf": 4, "ndf": 4, "snapshots": 0,
              "snapshot_steps": [], "num_val": 1}   # unet_128: the photos at 128 px
    train = ColorizationDataset(photo_folders, "train", load_size=143, crop_size=128)
    val_item = ColorizationDataset(photo_folders, "val", load_size=128, crop_size=128, no_flip=True)[0]
    result = train_course_model(config, "cpu", verbose=False, max_steps=2, train_data=train,
                                val=(val_item["A"][None], val_item["B"][None]))
    assert result["steps"] == 2 and result["options"]["input_nc"] == 1 and result["options"]["output_nc"] == 2
    assert [g["grid"] for g in result["snapshots"]] == [None, None]  # no grid shows 2 channels
    with torch.no_grad():
        assert result["G"](val_item["A"][None]).shape == (1, 2, 128, 128)
