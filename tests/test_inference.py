"""translate, translate_folder and evaluate_generator (lesson 07) on tiny generators and images."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from netfactory import with_trained_statistics
from p2p_lib.data import PairedDataError, PairedImageDataset, to_tensor
from p2p_lib.inference import (evaluate_generator, evaluation_item, image_files, load_image, prepare_input,
                               restore_output, side_by_side, to_pil, translate, translate_folder)
from p2p_lib.metrics import color_histogram_intersection, detail_ratio, psnr, ssim, to_unit_range
from p2p_lib.train import seeded, translation_mode
from p2p_lib.unet import UNetGenerator


def tiny_unet(seed=0, input_nc=3, output_nc=3, norm="batch"):
    """A 6-level U-Net (inputs: multiples of 64; dropout at level 4) with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    return with_trained_statistics(UNetGenerator(input_nc, output_nc, num_downs=6, ngf=4, norm=norm))


class Identity1x1(nn.Module):
    """A 'generator' that returns its input (a 1x1 identity convolution), with the U-Net's size rule."""
    num_downs = 5

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        assert x.shape[-1] % 32 == 0 and x.shape[-2] % 32 == 0
        return self.conv(x)


def noise_image(width, height, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3) if mode == "RGB" else (height, width), dtype=np.uint8)
    return Image.fromarray(pixels)


def buffers(net):
    return {name: buf.clone() for name, buf in net.named_buffers()}


@pytest.mark.parametrize("fit", ["resize", "pad"])
@pytest.mark.parametrize("size", [(300, 201), (64, 64), (31, 97), (5, 3)])
def test_translate_returns_an_image_of_the_input_size(fit, size):
    out = translate(tiny_unet(), noise_image(*size), seed=0, fit=fit)
    assert isinstance(out, Image.Image) and out.size == size and out.mode == "RGB"


def test_pad_mode_gives_back_every_pixel_exactly_and_resize_mode_at_the_network_size_too():
    picture = noise_image(300, 201, seed=1)
    assert np.array_equal(np.asarray(translate(Identity1x1(), picture, fit="pad")), np.asarray(picture))
    square = noise_image(64, 64, seed=2)  # already a multiple: resize mode changes nothing
    assert np.array_equal(np.asarray(translate(Identity1x1(), square, size=64)), np.asarray(square))
    tiny = noise_image(2, 1, seed=3)  # narrower than any reflection: replicated, still cropped back exactly
    assert np.array_equal(np.asarray(translate(Identity1x1(), tiny, fit="pad")), np.asarray(tiny))


def test_prepare_input_pads_to_the_multiple_and_resizes_to_the_size():
    picture = noise_image(300, 201)
    batch, info = prepare_input(picture, 32, 64, "pad")
    assert batch.shape == (1, 3, 224, 320)
    top, left = info["offset"]
    assert torch.equal(batch[0, :, top:top + 201, left:left + 300], to_tensor(picture))
    batch, _ = prepare_input(picture, 32, 64, "resize")
    assert batch.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="multiple"):
        prepare_input(picture, 32, 48, "resize")
    with pytest.raises(ValueError, match="fit"):
        prepare_input(picture, 32, 64, "stretch")


def test_a_seed_makes_train_mode_repeatable_and_seeds_differ():
    net, picture = tiny_unet(), noise_image(64, 64)
    a, b = translate(net, picture, seed=5, size=64), translate(net, picture, seed=5, size=64)
    c = translate(net, picture, seed=6, size=64)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))  # dropout draws other masks


def test_the_seed_leaves_the_callers_random_state_alone():
    net = tiny_unet()
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    translate(net, noise_image(64, 64), seed=1, size=64)
    assert torch.equal(torch.rand(3), expected)


def test_train_mode_leaves_batchnorm_buffers_bit_identical_and_flags_as_they_were():
    net = tiny_unet()
    before = buffers(net)
    for mode in (True, False):  # the network as a user holds it: in train mode, then in eval mode
        net.train(mode)
        translate(net, noise_image(96, 64), seed=0, size=64)
        translate(net, noise_image(96, 64), eval_mode=True, size=64)
        assert all(m.training == mode for m in net.modules())
        after = buffers(net)
        assert after.keys() == before.keys()
        for name in before:
            assert torch.equal(after[name], before[name]), name


def test_translation_mode_really_runs_in_train_mode_and_the_buffers_would_change_without_the_restore():
    net = tiny_unet()
    before = buffers(net)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with translation_mode(net, eval_mode=False):
        assert all(m.training for m in net.modules())
        net(x)
        changed = [name for name, buf in net.named_buffers() if not torch.equal(buf, before[name])]
    assert changed  # train-mode BatchNorm updated its statistics inside ...
    assert all(torch.equal(buf, before[name]) for name, buf in net.named_buffers())  # ... and they are back
    with translation_mode(net, eval_mode=True):
        assert not any(m.training for m in net.modules())
        assert not torch.is_grad_enabled()


def test_eval_mode_is_deterministic_and_differs_from_train_mode():
    net, picture = tiny_unet(), noise_image(64, 64, seed=4)
    first = np.asarray(translate(net, picture, eval_mode=True, size=64))
    assert np.array_equal(first, np.asarray(translate(net, picture, eval_mode=True, size=64)))
    train = np.asarray(translate(net, picture, eval_mode=False, seed=0, size=64))
    assert np.abs(first.astype(int) - train.astype(int)).mean() > 1  # not just a rounding difference


def test_train_mode_matches_a_manual_forward_pass_in_train_mode():
    net, picture = tiny_unet(), noise_image(64, 64, seed=5)
    reference = tiny_unet()
    reference.train()
    with torch.no_grad():
        torch.manual_seed(9)
        expected = to_pil(reference(to_tensor(picture)[None])[0])
    assert np.array_equal(np.asarray(translate(net, picture, seed=9, size=64)), np.asarray(expected))


def test_inputs_as_path_pil_or_array_and_one_channel_models(tmp_path):
    picture = noise_image(70, 50, seed=6)
    path = tmp_path / "in.png"
    picture.save(path)
    net = tiny_unet()
    outs = [translate(net, source, seed=0, size=64) for source in (path, str(path), picture, np.asarray(picture))]
    assert all(np.array_equal(np.asarray(o), np.asarray(outs[0])) for o in outs)
    grey_net = tiny_unet(input_nc=1, output_nc=1)
    grey = translate(grey_net, picture, seed=0, size=64)  # an RGB picture is converted to L for a 1-channel net
    assert grey.mode == "L" and grey.size == (70, 50)
    assert load_image(picture, channels=1).mode == "L"


def test_an_unreadable_file_fails_with_an_error_that_names_it(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(PairedDataError, match="broken.jpg"):
        translate(tiny_unet(), broken)


def test_to_pil_rounds_to_the_nearest_level_and_round_trips_8_bit_images():
    picture = noise_image(20, 10, seed=7)
    assert np.array_equal(np.asarray(to_pil(to_tensor(picture))), np.asarray(picture))
    assert np.asarray(to_pil(torch.full((3, 1, 1), 0.0)))[0, 0, 0] == 128  # 127.5 rounds to 128, not 127
    assert side_by_side(to_tensor(picture), to_tensor(picture)[:1], gap=3).size == (43, 10)


def test_translate_folder_writes_every_image_at_its_size_and_never_overwrites(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {"a.png": (40, 30), "b.jpg": (64, 64), "c.png": (33, 70)}
    for i, (name, size) in enumerate(sizes.items()):
        noise_image(*size, seed=i).save(inputs / name)
    (inputs / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files(inputs)] == ["a.png", "b.jpg", "c.png"]
    net = tiny_unet()
    written = translate_folder(net, inputs, tmp_path / "out", seed=3, size=64)
    assert [p.name for p in written] == ["a.png", "b.png", "c.png"]
    for path, size in zip(written, sizes.values()):
        assert Image.open(path).size == size
    # image k gets seed + k: the same as translating it alone with that seed
    alone = translate(net, inputs / "b.jpg", seed=4, size=64)
    assert np.array_equal(np.asarray(Image.open(written[1])), np.asarray(alone))
    stamp = written[0].stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="exist"):
        translate_folder(net, inputs, tmp_path / "out", seed=3, size=64)
    assert written[0].stat().st_mtime_ns == stamp
    assert translate_folder(net, inputs, tmp_path / "out", seed=3, size=64, overwrite=True) == written
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        translate_folder(net, tmp_path / "empty", tmp_path / "x")


def _synthetic_split(root, count=3, half=48, height=44):
    """An aligned dataset (A|B files) whose B side is a smooth function of A, at a size that needs resizing."""
    folder = root / "val"
    folder.mkdir(parents=True)
    for i in range(count):
        a = np.asarray(noise_image(half, height, seed=10 + i))
        b = 255 - a
        Image.fromarray(np.concatenate([a, b], axis=1)).save(folder / f"pair_{i}.png")
    return root


def test_evaluate_generator_reports_the_metrics_of_each_image_and_their_means(tmp_path):
    root = _synthetic_split(tmp_path / "data")
    dataset = PairedImageDataset(root, phase="val", load_size=64, crop_size=64, no_flip=True)
    net = tiny_unet()
    before = buffers(net)
    seen = []
    result = evaluate_generator(net, dataset, eval_mode=False, seed=0, on_image=lambda *args: seen.append(args))
    assert result["count"] == 3 and len(result["per_image"]) == 3 and len(seen) == 3
    assert [row["name"] for row in result["per_image"]] == ["pair_0", "pair_1", "pair_2"]
    assert result["PSNR"] == pytest.approx(np.mean([row["PSNR"] for row in result["per_image"]]))
    index, item, fake, scores = seen[1]
    assert fake.shape == item["B"].shape == (3, 64, 64)
    assert scores["PSNR"] == pytest.approx(psnr(to_unit_range(fake), to_unit_range(item["B"])).item())
    assert scores["SSIM"] == pytest.approx(ssim(to_unit_range(fake), to_unit_range(item["B"])).item())
    assert scores["detail"] == pytest.approx(detail_ratio(to_unit_range(fake), to_unit_range(item["B"])).item())
    fakes, targets = zip(*[(to_unit_range(f), to_unit_range(it["B"])) for _, it, f, _ in seen])
    assert result["color"] == pytest.approx(color_histogram_intersection(torch.stack(fakes), torch.stack(targets)))
    assert all(torch.equal(buf, before[name]) for name, buf in net.named_buffers())
    again = evaluate_generator(net, dataset, eval_mode=False, seed=0)
    assert again["L1"] == result["L1"]  # the seed makes the train-mode run repeatable
    evaluated = evaluate_generator(net, dataset, eval_mode=True, num_images=2)
    assert evaluated["count"] == 2 and evaluated["L1"] != pytest.approx(result["L1"])


def test_evaluation_items_are_deterministic_with_a_centre_crop(tmp_path):
    root = _synthetic_split(tmp_path / "data", count=1, half=48, height=48)
    dataset = PairedImageDataset(root, phase="val", load_size=40, crop_size=32)  # flip allowed: must be ignored
    items = [evaluation_item(dataset, 0) for _ in range(3)]
    assert all(torch.equal(items[0]["A"], it["A"]) for it in items)
    a_side = Image.open(root / "val" / "pair_0.png").crop((0, 0, 48, 48)).resize((40, 40), Image.Resampling.BICUBIC)
    assert torch.equal(items[0]["A"], to_tensor(a_side.crop((4, 4, 36, 36))))  # (40 - 32) / 2 = 4 on each side
    assert torch.allclose(items[0]["B"], -items[0]["A"], atol=2 / 255 + 1e-6)  # B = 255 - A, up to resampling


def test_seeded_without_a_seed_changes_nothing():
    torch.manual_seed(1)
    with seeded(None):
        first = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), first)


def test_restore_output_resizes_back_to_the_original_size():
    _, info = prepare_input(noise_image(50, 20), 32, 64, "resize")
    assert restore_output(torch.zeros(3, 64, 64), info).size == (50, 20)


def manual_eval_output(net, array: np.ndarray) -> np.ndarray:
    "G.eval() on a (H, W, 3) uint8 array whose sides fit the network: the reference, written out by hand."
    x = torch.from_numpy(np.array(array)).permute(2, 0, 1).float()[None] / 255 * 2 - 1  # a writable copy
    net.eval()
    with torch.no_grad():
        y = net(x)[0]
    net.train()
    return ((y.clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy()


def test_translate_at_awkward_sizes_is_pad_or_resize_then_the_network_then_crop_or_resize_back():
    net = tiny_unet(seed=7)
    picture = noise_image(150, 101, seed=8)  # neither side a multiple of 64
    pixels = np.asarray(picture)
    # pad: reflect to 192 x 128 (the multiples of 64 above 150 x 101), centred, then crop the same window back
    top, left = (128 - 101) // 2, (192 - 150) // 2
    padded = np.pad(pixels, ((top, 128 - 101 - top), (left, 192 - 150 - left), (0, 0)), mode="reflect")
    expected = manual_eval_output(net, padded)[top:top + 101, left:left + 150]
    got = np.asarray(translate(net, picture, eval_mode=True, fit="pad")).astype(int)
    assert np.abs(got - expected.astype(int)).max() <= 1  # within one grey level (float rounding)
    # resize: bicubic to 64 x 64, the network, bicubic back to 150 x 101
    small = np.asarray(picture.resize((64, 64), Image.Resampling.BICUBIC))
    back = Image.fromarray(manual_eval_output(net, small)).resize((150, 101), Image.Resampling.BICUBIC)
    got = np.asarray(translate(net, picture, eval_mode=True, size=64)).astype(int)
    assert np.abs(got - np.asarray(back).astype(int)).max() <= 1


def test_eval_mode_is_a_plain_G_eval_in_translate_and_evaluate_generator(tmp_path):
    net = tiny_unet(seed=9)  # non-trivial running statistics: eval mode must use them
    picture = noise_image(64, 64, seed=10)
    expected = manual_eval_output(net, np.asarray(picture)).astype(int)
    assert np.abs(np.asarray(translate(net, picture, eval_mode=True)).astype(int) - expected).max() <= 1
    train_mode = np.asarray(translate(net, picture, seed=0)).astype(int)
    assert np.abs(train_mode - expected).mean() > 5  # the other mode really is another computation
    pair = np.concatenate([np.asarray(picture), np.asarray(noise_image(64, 64, seed=11))], axis=1)
    (tmp_path / "test").mkdir()
    Image.fromarray(pair).save(tmp_path / "test" / "0.png")
    dataset = PairedImageDataset(tmp_path, "test", load_size=64, crop_size=64, no_flip=True)
    seen = []
    evaluate_generator(net, dataset, eval_mode=True, on_image=lambda i, item, fake, scores: seen.append(fake))
    got = np.asarray(to_pil(seen[0])).astype(int)
    assert np.abs(got - expected).max() <= 1
