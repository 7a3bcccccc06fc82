"""PairedImageDataset and its pieces (lesson 05, p2p_lib/data.py): layouts, jitter, modes, errors."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imagefactory as make
from p2p_lib.data import PairedDataError, PairedImageDataset, convert_mode, open_image

MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


@pytest.fixture
def aligned(tmp_path):
    """root/train with three 520x264 A|B files (halves 260x264), B = A with channels rotated."""
    root = tmp_path / "data"
    for number in range(3):
        make.write_pair(root / "train" / f"{number}.png", seed=number)
    return root


def all_items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def assert_refused(root, build_and_load, *names):
    """The call raises PairedDataError naming every one of `names`, and leaves the files untouched."""
    before = make.tree_snapshot(root)
    with pytest.raises(PairedDataError) as caught:
        build_and_load()
    for name in names:
        assert name in str(caught.value), f"{name!r} not named in: {caught.value}"
    assert isinstance(caught.value, ValueError)
    assert make.tree_snapshot(root) == before
    return str(caught.value)


# ---- tensors: shape, dtype, range, channels -------------------------------------------------


def test_item_keys_dtype_range_and_exact_values(tmp_path):
    # A half black with one white column, B half mid-grey: known pixel values through 'none' (no resize).
    a = np.zeros((256, 256, 3), np.uint8)
    a[:, 7] = 255
    b = np.full((256, 256, 3), 128, np.uint8)
    make.write_array(tmp_path / "train" / "x.png", np.concatenate([a, b], axis=1))
    item = PairedImageDataset(tmp_path, preprocess="none", no_flip=True)[0]
    assert set(item) == {"A", "B", "A_paths", "B_paths"}
    assert item["A"].dtype == item["B"].dtype == torch.float32
    assert item["A"].shape == item["B"].shape == (3, 256, 256)
    assert item["A"][:, 0, 7].tolist() == [1.0, 1.0, 1.0]
    assert item["A"][:, 5, 0].tolist() == [-1.0, -1.0, -1.0]
    assert torch.allclose(item["B"], torch.full((3, 256, 256), 128 / 127.5 - 1), atol=1e-6)
    assert item["A"].is_contiguous()
    assert item["A_paths"] == item["B_paths"] == str(tmp_path / "train" / "x.png")


def test_default_jitter_output_is_in_range(aligned):
    torch.manual_seed(0)
    for item in all_items(PairedImageDataset(aligned)):
        for key in ("A", "B"):
            assert item[key].shape == (3, 256, 256)
            assert -1.0 <= item[key].min() and item[key].max() <= 1.0


@pytest.mark.parametrize("input_nc,output_nc", [(1, 3), (3, 1), (1, 1)])
def test_channels_per_side(aligned, input_nc, output_nc):
    torch.manual_seed(0)
    item = PairedImageDataset(aligned, input_nc=input_nc, output_nc=output_nc)[0]
    assert item["A"].shape == (input_nc, 256, 256)
    assert item["B"].shape == (output_nc, 256, 256)


def test_one_channel_is_the_luma_of_the_rgb_side(tmp_path):
    pixels = make.noise(512, 256, seed=3)
    make.write_array(tmp_path / "train" / "x.png", pixels)
    item = PairedImageDataset(tmp_path, preprocess="none", no_flip=True, input_nc=1)[0]
    luma = np.asarray(Image.fromarray(pixels[:, :256]).convert("L"), dtype=np.float32)
    assert torch.allclose(item["A"][0], torch.from_numpy(luma / 127.5 - 1), atol=1e-6)


def test_grayscale_file_on_a_three_channel_side_is_repeated(tmp_path):
    pixels = make.noise(512, 256, seed=4, channels=1)
    make.write_array(tmp_path / "train" / "g.png", pixels)  # mode L
    item = PairedImageDataset(tmp_path, preprocess="none", no_flip=True)[0]
    assert item["A"].shape == (3, 256, 256)
    assert torch.equal(item["A"][0], item["A"][1]) and torch.equal(item["A"][1], item["A"][2])
    assert torch.allclose(item["A"][0], torch.from_numpy(pixels[:, :256] / 127.5 - 1).float(), atol=1e-6)


# ---- the shared jitter -----------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", MODES)
def test_same_crop_and_flip_on_both_sides_in_every_mode(aligned, preprocess):
    # B is A with channels rotated, so a correctly shared transform gives B == A[[2, 0, 1]] exactly;
    # a different crop or flip on one side breaks it (the pixels are random noise).
    dataset = PairedImageDataset(aligned, preprocess=preprocess, multiple=4)
    for seed in range(4):
        torch.manual_seed(seed)
        for item in all_items(dataset):
            assert torch.equal(item["B"], item["A"][[2, 0, 1]])


def test_jitter_varies_crop_and_flip_and_is_repeatable(tmp_path):
    make.write_pair(tmp_path / "train" / "x.png", half_width=256, height=256)
    dataset = PairedImageDataset(tmp_path)
    outputs = []
    for seed in range(12):
        torch.manual_seed(seed)
        outputs.append(dataset[0]["A"])
    torch.manual_seed(3)
    assert torch.equal(dataset[0]["A"], outputs[3])  # the same seed gives the same crop and flip
    # Each output is exactly one 256 window of the 286x286 bicubic resize, mirrored or not; both
    # orientations and several windows occur over 12 seeds.
    img = Image.fromarray(make.permuted_pair(256, 256)[:, :256]).resize((286, 286), Image.Resampling.BICUBIC)
    resized = (np.asarray(img).transpose(2, 0, 1) / 127.5 - 1).astype(np.float32)
    found = []
    for out in outputs:
        matches = []
        for flip in (False, True):
            view = (out.flip(2) if flip else out).numpy()
            matches += [(x, y, flip) for x in range(31) for y in range(31)
                        if np.allclose(view[:, :2, :2], resized[:, y:y + 2, x:x + 2], atol=1e-6)
                        and np.allclose(view, resized[:, y:y + 256, x:x + 256], atol=1e-6)]
        assert len(matches) == 1
        found += matches
    assert 0 < sum(flip for _, _, flip in found) < len(found)
    assert len({(x, y) for x, y, _ in found}) > 6


def test_no_flip_never_flips(tmp_path):
    make.write_pair(tmp_path / "train" / "x.png", half_width=256, height=256)
    dataset = PairedImageDataset(tmp_path, preprocess="none", no_flip=True)
    expected = dataset[0]["A"]
    for seed in range(8):
        torch.manual_seed(seed)
        assert torch.equal(dataset[0]["A"], expected)


def test_jitter_repeatable_in_dataloader_workers(aligned):
    dataset = PairedImageDataset(aligned)
    batches = []
    for _ in range(2):
        torch.manual_seed(11)
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1)
        batches.append(next(iter(loader))["A"])
    assert torch.equal(batches[0], batches[1])


# ---- preprocess modes on a non-square, odd-sized 520x264 pair (halves 260x264) ------------------


@pytest.mark.parametrize("preprocess,multiple,size", [
    ("resize_and_crop", 256, (256, 256)),
    ("crop", 256, (256, 256)),
    ("scale_width", 256, (290, 286)),  # width 286, height int(286 * 264 / 260) = 290 (H, W)
    ("scale_width_and_crop", 256, (256, 256)),
    ("none", 256, (256, 256)),  # 260x264 rounded to multiples of 256
    ("none", 4, (264, 260)),  # the official rule: already multiples of 4, untouched
])
def test_each_preprocess_mode_on_520x264(aligned, preprocess, multiple, size):
    torch.manual_seed(0)
    dataset = PairedImageDataset(aligned, preprocess=preprocess, multiple=multiple)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        item = dataset[0]
    assert item["A"].shape == item["B"].shape == (3, *size)


def test_crop_mode_without_resize_keeps_pixels(aligned):
    torch.manual_seed(0)
    item = PairedImageDataset(aligned, preprocess="crop", no_flip=True)[0]
    half = torch.from_numpy(make.permuted_pair(seed=0)[:, :260].copy()).permute(2, 0, 1).float() / 127.5 - 1
    windows = [(x, y) for x in range(5) for y in range(9) if torch.equal(half[:, y:y + 256, x:x + 256], item["A"])]
    assert len(windows) == 1  # an exact 256x256 window of the original half


def test_scale_width_keeps_aspect_ratio(tmp_path):
    for side in ("A", "B"):  # 2:1 images: the folder layout (an A|B file would be 4:1, not a pair)
        make.write_array(tmp_path / "train" / side / "x.png", make.noise(400, 200))
    item = PairedImageDataset(tmp_path, preprocess="scale_width", load_size=512, crop_size=128)[0]
    assert item["A"].shape == (3, 256, 512)


def test_none_warns_once_when_it_resizes(aligned):
    dataset = PairedImageDataset(aligned, preprocess="none")
    with pytest.warns(UserWarning, match="260x264 images to 256x256"):
        dataset[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset[1]  # no second warning


def test_crop_larger_than_image_is_refused_with_the_file(tmp_path):
    make.write_pair(tmp_path / "train" / "small.png", half_width=200, height=200)
    assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path, preprocess="crop")[0], "small.png", "crop_size")


def test_bad_options_are_value_errors(aligned):
    for options, said in (({"direction": "AB"}, "direction must be 'AtoB' or 'BtoA', got 'AB'"),
                          ({"preprocess": "resize"}, "preprocess must be one of resize_and_crop, .* got 'resize'"),
                          ({"input_nc": 4}, "input_nc and output_nc must be 1 or 3, got 4 and 3"),
                          ({"load_size": 200, "crop_size": 256}, r"load_size \(200\) must be at least crop_size \(256\)")):
        with pytest.raises(ValueError, match=said):
            PairedImageDataset(aligned, **options)


# ---- direction and layouts -----------------------------------------------------------------------


def test_direction_swaps_the_halves(tmp_path):
    a = np.zeros((256, 256, 3), np.uint8)
    a[..., 0] = 200  # left half red
    b = np.zeros((256, 256, 3), np.uint8)
    b[..., 2] = 200  # right half blue
    make.write_array(tmp_path / "train" / "x.png", np.concatenate([a, b], axis=1))
    forward = PairedImageDataset(tmp_path, direction="AtoB")[0]
    backward = PairedImageDataset(tmp_path, direction="BtoA")[0]
    assert forward["A"][0].mean() > 0.5 and forward["A"][2].mean() < -0.9  # red input
    assert backward["A"][2].mean() > 0.5 and backward["A"][0].mean() < -0.9  # blue input
    make.write_pair(tmp_path / "train" / "x.png", half_width=256, height=256)
    torch.manual_seed(2)
    forward = PairedImageDataset(tmp_path, direction="AtoB")[0]
    torch.manual_seed(2)
    backward = PairedImageDataset(tmp_path, direction="BtoA")[0]
    assert torch.equal(forward["A"], backward["B"]) and torch.equal(forward["B"], backward["A"])


def test_direction_applies_channels_to_the_network_input(tmp_path):
    make.write_pair(tmp_path / "train" / "x.png", half_width=256, height=256)
    item = PairedImageDataset(tmp_path, direction="BtoA", input_nc=1, output_nc=3)[0]
    assert item["A"].shape[0] == 1 and item["B"].shape[0] == 3


def test_folder_layout_matches_by_name_across_extensions(tmp_path):
    for stem in ("001", "002"):
        pixels = make.noise(200, 180, seed=int(stem))
        make.write_array(tmp_path / "train" / "A" / f"{stem}.jpg", pixels, quality=95)
        make.write_array(tmp_path / "train" / "B" / f"{stem}.png", pixels[:, :, [2, 0, 1]])
    dataset = PairedImageDataset(tmp_path, preprocess="crop", crop_size=128, direction="BtoA")
    assert dataset.layout == "folders" and len(dataset) == 2
    item = dataset[1]
    assert item["A_paths"].endswith(os.path.join("B", "002.png"))
    assert item["B_paths"].endswith(os.path.join("A", "002.jpg"))
    assert item["A"].shape == item["B"].shape == (3, 128, 128)


def test_folder_layout_keeps_shared_crop(tmp_path):
    for stem in range(3):
        pixels = make.noise(300, 280, seed=stem)
        make.write_array(tmp_path / "train" / "A" / f"{stem}.png", pixels)
        make.write_array(tmp_path / "train" / "B" / f"{stem}.png", pixels[:, :, [2, 0, 1]])
    dataset = PairedImageDataset(tmp_path)
    for seed in range(4):
        torch.manual_seed(seed)
        for item in all_items(dataset):
            assert torch.equal(item["B"], item["A"][[2, 0, 1]])


def test_max_dataset_size_takes_the_first_files_in_official_order(tmp_path):
    for number in (1, 2, 10, 100):
        make.write_pair(tmp_path / "train" / f"{number}.png", half_width=16, height=16, seed=number)
    dataset = PairedImageDataset(tmp_path, max_dataset_size=3)
    assert [Path(a).name for a, _ in dataset.pairs] == ["1.png", "10.png", "100.png"]  # string order


def test_skips_hidden_and_other_files(aligned):
    (aligned / "train" / ".DS_Store").write_bytes(b"\0\0")
    make.not_an_image(aligned / "train" / "._0.png")  # macOS AppleDouble file
    (aligned / "train" / "notes.txt").write_text("hello")
    assert len(PairedImageDataset(aligned)) == 3


# ---- image modes -------------------------------------------------------------------------------------


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = make.sixteen_bit_pair(tmp_path / "train" / "depth.png", height=256)
    assert Image.open(path).mode == "I;16"
    item = PairedImageDataset(tmp_path, preprocess="none", multiple=4, no_flip=True, input_nc=1)[0]
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1  # k * 257 -> exactly k
    assert torch.allclose(item["A"][0, 0], levels, atol=1e-6)
    assert torch.allclose(item["B"][:, 5], levels.expand(3, -1), atol=1e-6)  # 3 channels, same scale


def test_sixteen_bit_holding_eight_bit_data_is_refused(tmp_path):
    make.write_array(tmp_path / "train" / "labels16.png", np.full((64, 128), 200, np.uint16))
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path)[0], "labels16.png")
    assert "8-bit" in message


def test_opaque_rgba_drops_alpha_and_transparent_rgba_is_refused(tmp_path):
    rgb = make.noise(512, 256, seed=5)
    rgba = np.concatenate([rgb, np.full((256, 512, 1), 255, np.uint8)], axis=2)
    make.write_array(tmp_path / "train" / "opaque.png", rgba)
    item = PairedImageDataset(tmp_path, preprocess="none", no_flip=True)[0]
    assert torch.allclose(item["A"], torch.from_numpy(rgb[:, :256] / 127.5 - 1).permute(2, 0, 1).float(), atol=1e-6)
    rgba[10, 300, 3] = 0  # one transparent pixel in B
    make.write_array(tmp_path / "train" / "opaque.png", rgba)
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path)[0], "opaque.png")
    assert "transparent" in message


def test_la_and_palette_and_cmyk_modes(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    gray = make.noise(512, 256, seed=6, channels=1)
    Image.fromarray(gray).convert("LA").save(split / "la.png")
    Image.fromarray(make.noise(512, 256, seed=7)).convert("P", palette=Image.Palette.ADAPTIVE).save(split / "p.png")
    Image.fromarray(make.noise(512, 256, seed=8)).convert("CMYK").save(split / "cmyk.tif")
    for name, mode in {"la.png": "LA", "p.png": "P", "cmyk.tif": "CMYK"}.items():
        img = open_image(split / name)
        assert img.mode == mode
        assert convert_mode(img, 3, name).mode == "RGB" and convert_mode(img, 1, name).mode == "L"
    assert np.array_equal(np.asarray(convert_mode(open_image(split / "la.png"), 1)), gray)
    palette = open_image(split / "p.png")
    assert np.array_equal(np.asarray(convert_mode(palette, 3)), np.asarray(palette.convert("RGB")))
    assert all(item["A"].shape == (3, 256, 256) for item in all_items(PairedImageDataset(tmp_path)))


def test_palette_with_transparency_is_treated_as_alpha(tmp_path):
    img = Image.new("P", (512, 256), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 20, 20))
    img.save(tmp_path / "t.png", transparency=1)
    loaded = open_image(tmp_path / "t.png")
    with pytest.raises(PairedDataError, match="transparent"):
        convert_mode(loaded, 3, tmp_path / "t.png")


# ---- bad inputs: the error names the file, and nothing is changed -----------------------------------


@pytest.mark.parametrize("maker,name", [
    (make.corrupt_jpeg, "corrupt.jpg"),
    (make.truncated_png, "truncated.png"),
    (make.truncated_jpeg, "truncated.jpg"),
    (make.not_an_image, "page.jpg"),
])
def test_undecodable_files_fail_at_load_naming_the_file(aligned, maker, name):
    maker(aligned / "train" / name)
    dataset = PairedImageDataset(aligned)  # listing is fine: the header is not even read yet
    message = assert_refused(aligned, lambda: all_items(dataset), name)
    assert "check-data" in message


def test_zero_byte_file_fails_at_construction(aligned):
    make.empty_file(aligned / "train" / "empty.png")
    message = assert_refused(aligned, lambda: PairedImageDataset(aligned), "empty.png")
    assert "0 bytes" in message


def test_odd_width_fails(tmp_path):
    make.write_array(tmp_path / "train" / "odd.png", make.noise(513, 256))
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path)[0], "odd.png")
    assert "odd width" in message


@pytest.mark.parametrize("width,height", [(256, 256), (640, 480), (1024, 256)])
def test_single_unpaired_image_in_aligned_folder_fails(tmp_path, width, height):
    make.write_array(tmp_path / "train" / "single.jpg", make.noise(width, height))
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path)[0], "single.jpg")
    assert "not a pair" in message


def test_a_without_b_and_b_without_a_fail_at_construction(tmp_path):
    for side, stem in (("A", "1"), ("B", "1"), ("A", "2"), ("B", "3")):
        make.write_array(tmp_path / "train" / side / f"{stem}.png", make.noise(64, 64))
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path), "2.png", "3.png")
    assert "no partner" in message


def test_folder_pair_of_different_sizes_fails(tmp_path):
    make.write_array(tmp_path / "train" / "A" / "1.png", make.noise(64, 64))
    make.write_array(tmp_path / "train" / "B" / "1.png", make.noise(64, 60))
    assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path)[0], "1.png", "64x60")


def test_only_one_side_folder_fails(tmp_path):
    make.write_array(tmp_path / "train" / "A" / "1.png", make.noise(64, 64))
    assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path), "train", "no B/")


def test_both_layouts_in_one_split_fail(aligned):
    make.write_array(aligned / "train" / "A" / "1.png", make.noise(64, 64))
    make.write_array(aligned / "train" / "B" / "1.png", make.noise(64, 64))
    assert_refused(aligned, lambda: PairedImageDataset(aligned), "mixes both layouts")


def test_empty_split_fails(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "readme.txt").write_text("put images here")
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path), str(tmp_path / "train"))
    assert "empty" in message and "readme.txt" in message


def test_missing_split_fails_listing_what_exists(aligned):
    message = assert_refused(aligned, lambda: PairedImageDataset(aligned, phase="val"), str(aligned / "val"))
    assert "train" in message


def test_root_that_is_a_split_folder_gets_a_hint(aligned):
    message = assert_refused(aligned, lambda: PairedImageDataset(aligned / "train"), "looks like a split folder")
    assert str(aligned / "train") in message


def test_combine_input_layout_gets_a_hint(tmp_path):
    make.write_array(tmp_path / "A" / "train" / "1.png", make.noise(64, 64))
    make.write_array(tmp_path / "B" / "train" / "1.png", make.noise(64, 64))
    assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path), "p2p combine")


def test_nonexistent_root_fails(tmp_path):
    missing = tmp_path / "no_such_dataset"
    message = assert_refused(tmp_path, lambda: PairedImageDataset(missing), str(missing))
    assert "does not exist" in message


def test_symlink_loop_file_fails_at_construction(aligned):
    make.symlink_loop(aligned / "train" / "loop.jpg")
    message = assert_refused(aligned, lambda: PairedImageDataset(aligned), "loop.jpg")
    assert "symlink loop" in message


def test_symlink_loop_split_fails(tmp_path):
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data" / "train", tmp_path / "data" / "train")
    message = assert_refused(tmp_path, lambda: PairedImageDataset(tmp_path / "data"), "train")
    assert "symlink loop" in message


def test_directory_symlink_back_to_parent_is_not_followed(aligned):
    os.symlink("..", aligned / "train" / "up")
    assert len(PairedImageDataset(aligned)) == 3


def test_broken_symlink_fails_at_construction(aligned):
    os.symlink("gone.png", aligned / "train" / "link.png")
    assert_refused(aligned, lambda: PairedImageDataset(aligned), "link.png")


def test_dataloader_worker_error_names_the_file(aligned):
    make.truncated_png(aligned / "train" / "1_truncated.png")
    loader = torch.utils.data.DataLoader(PairedImageDataset(aligned), batch_size=1, num_workers=1)
    message = assert_refused(aligned, lambda: list(loader), "1_truncated.png")
    assert "truncated" in message
