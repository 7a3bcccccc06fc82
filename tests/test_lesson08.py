"""Lesson 08's library pieces (p2p_lib.ablation, verdicts, stepper, facadedraw) and its widgets, without a
browser: setting a widget's value or clicking a button fires its observers and changes what it shows."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefactory import aligned_pairs
from p2p_lib.ablation import (PATCH_CHOICES, format_table, gradient_shares, lambda_view, outline_patch, patch_view,
                              summarise, table_rows)
from p2p_lib.results import load_sweep
from p2p_lib.facadedraw import (FACADE_CLASSES, blank_labels, drawing_to_photo, facade_palette, jet_guess,
                                labels_from_map, paint_rectangle, render_labels)
from p2p_lib.networks import define_D, define_G
from p2p_lib.patchgan import patch_span
from p2p_lib.stepper import StepByStep
from p2p_lib.train import COURSE_CONFIG
from p2p_lib.verdicts import patch_verdicts, verdict_overlay


def fake_result(folder: Path, setting: str, seed: int, l1: float, gradient=None, colour=0.5) -> None:
    """A result.json as tools/ablate.py writes it (the keys the readers use), and an outputs.png whose
    pixels encode the setting and seed, to tell the images apart."""
    run = folder / f"{setting}-seed{seed}"
    run.mkdir(parents=True)
    metrics = {"L1": l1, "PSNR": 14.0, "SSIM": 0.3, "color_histogram_intersection": {"L": colour, "a": colour, "b": colour},
               "checkerboard_ratio": 2.0, "sharpness_pooled": 0.5 + seed, "gradient": gradient}
    (run / "result.json").write_text(json.dumps({"setting": setting, "paper_name": setting, "seed": seed,
                                                 "metrics": metrics, "steps": 10, "train_seconds": 1.0}))
    Image.new("RGB", (128, 512), (seed * 50, len(setting) * 10, 7)).save(run / "outputs.png")


@pytest.fixture
def sweep_dir(tmp_path):
    fake_result(tmp_path, "l1_cgan", 1, 0.20, {"adversarial": 0.3, "l1": 0.45})
    fake_result(tmp_path, "l1_cgan", 0, 0.18, {"adversarial": 0.1, "l1": 0.45})
    fake_result(tmp_path, "lambda_1000", 0, 0.16, {"adversarial": 0.2, "l1": 4.5})
    fake_result(tmp_path, "l1", 0, 0.15)
    return tmp_path


def test_the_sweep_reader_groups_by_setting_and_summarises_over_seeds(sweep_dir):
    sweep = load_sweep(sweep_dir)
    assert sorted(sweep) == ["l1", "l1_cgan", "lambda_1000"] and [r["seed"] for r in sweep["l1_cgan"]] == [0, 1]
    s = summarise(sweep["l1_cgan"], "L1")
    assert s["mean"] == pytest.approx(0.19) and s["spread"] == pytest.approx(0.02) and s["seeds"] == 2
    assert summarise(sweep["l1"], "colour")["mean"] == pytest.approx(0.5)
    assert summarise([], "L1") is None
    rows = table_rows(sweep, [("U-Net, L1", "l1", "l1"), ("GAN", "gan", "gan"), ("new", "l1_cgan", None)])
    assert rows[0]["paper"] == 0.42 and rows[1]["L1"] is None and rows[2]["paper"] is None
    text = format_table(rows)
    assert "0.190 ±0.010" in text and "GAN (0)" in text and "—" in text


def test_lambda_view_reads_metrics_outputs_and_gradient_shares(sweep_dir):
    sweep = load_sweep(sweep_dir)
    view = lambda_view(sweep, 100)
    assert view["setting"] == "l1_cgan" and view["seeds"] == 2
    assert view["metrics"]["L1"]["mean"] == pytest.approx(0.19)
    assert view["outputs_png"] == sweep_dir / "l1_cgan-seed0" / "outputs.png"
    assert view["gradient"]["adversarial"] == pytest.approx(0.2)  # the mean over seeds
    assert view["gradient"]["adversarial_share"] == pytest.approx(0.2 / 0.65)
    assert view["curve"]["L1"] == [(100, pytest.approx(0.19)), (1000, pytest.approx(0.16))]  # lambdas with runs
    empty = lambda_view(sweep, 10)
    assert empty["seeds"] == 0 and empty["outputs_png"] is None and empty["gradient"] is None
    with pytest.raises(ValueError, match="not swept"):
        lambda_view(sweep, 5)


def test_patch_view_matches_the_discriminators_it_describes():
    for choice in PATCH_CHOICES:
        view = patch_view(choice, size=128, ndf=32)
        options = {"netD": "pixel"} if choice == "pixel" else {"netD": "n_layers", "n_layers_D": choice}
        D = define_D({**options, "ndf": 32})
        assert view["parameters"] == sum(p.numel() for p in D.parameters())
        assert D(torch.zeros(1, 6, 128, 128)).shape[-1] == view["grid"]
    assert (patch_view(3)["receptive_field"], patch_view(2)["share"]) == (70, 34 / 128)
    assert patch_view(5)["setting"] is None and patch_view("pixel")["receptive_field"] == 1
    with pytest.raises(ValueError):
        patch_view(6)


def test_outline_patch_draws_the_receptive_field_clipped_at_the_border():
    image = np.zeros((128, 128, 3), np.uint8)
    out = outline_patch(image, 3, (7, 7), width=1)
    (top, bottom), (left, right) = patch_span(7, 3), patch_span(7, 3)
    assert bottom - top + 1 == 70 and out[top, left:right + 1, 0].min() == 255 and out[top + 1, left + 1].max() == 0
    assert image.max() == 0  # a copy: the input is untouched
    corner = outline_patch(image, 3, (0, 0), width=1)  # starts in the padding: clipped to the image
    assert corner[0, 0, 0] == 255 and corner[patch_span(0, 3)[1], 0, 0] == 255


def test_patch_verdicts_are_a_probability_grid_and_leave_d_as_it_was():
    torch.manual_seed(0)
    D = define_D({"ndf": 4})
    buffers = [b.clone() for b in D.buffers()]
    A, B = torch.rand(3, 128, 128) * 2 - 1, torch.rand(3, 128, 128) * 2 - 1
    verdict = patch_verdicts(D, A, B)
    assert verdict.shape == (14, 14) and 0 <= verdict.min() and verdict.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(buffers, D.buffers())) and D.training
    sure = verdict_overlay(B, torch.ones(14, 14), 3)  # "real" everywhere: every painted block leans green
    centre = sure[60:68, 60:68].astype(int)
    assert (centre[..., 1] >= centre[..., 0]).all()
    outlined = verdict_overlay(B, torch.zeros(14, 14), 3, cell=(7, 7))
    top = patch_span(7, 3)[0]
    assert (outlined[top, 64] == 255).all()


def test_step_by_step_updates_one_network_per_click_and_adds_one_point(tmp_path):
    root = aligned_pairs(tmp_path / "data", (("train", 2),), 64)
    s = StepByStep(root, pairs=2, size=64, width=4)
    G0 = {k: v.clone() for k, v in s.G.named_parameters()}
    D0 = {k: v.clone() for k, v in s.D.named_parameters()}
    s.d_step()
    assert all(torch.equal(G0[k], v) for k, v in s.G.named_parameters())
    assert not all(torch.equal(D0[k], v) for k, v in s.D.named_parameters())
    D1 = {k: v.clone() for k, v in s.D.named_parameters()}
    s.g_step()
    assert all(torch.equal(D1[k], v) for k, v in s.D.named_parameters())
    assert not all(torch.equal(G0[k], v) for k, v in s.G.named_parameters())
    s.run(3)
    assert s.history["update"] == ["D", "G", "D+G", "D+G", "D+G"] and len(s.history["G_L1"]) == 5
    assert s.losses() == s.losses()  # measuring changes nothing (seeded dropout, buffers restored)
    assert s.outputs().shape == (2, 3, 64, 64) and s.verdicts().shape == (6, 6)


def test_the_palette_is_measured_from_label_maps(tmp_path):
    # label maps painted with colours near jet(k/12), blurred by JPEG as the real ones are
    rng = np.random.default_rng(0)
    true = np.stack([jet_guess(k) for k in range(1, 13)]) + rng.integers(-15, 15, (12, 3))
    true = true.clip(0, 255).round().astype(np.uint8)
    (tmp_path / "train").mkdir()
    for i in range(3):
        labels = rng.integers(0, 12, (8, 8)).repeat(32, 0).repeat(32, 1)
        pair = np.concatenate([np.zeros((256, 256, 3), np.uint8), true[labels]], axis=1)
        Image.fromarray(pair).save(tmp_path / "train" / f"{i}.jpg", quality=90)
    palette = facade_palette(tmp_path, pairs=3)
    assert np.abs(palette.astype(int) - true.astype(int)).max() <= 6


def test_drawing_is_a_label_array_rendered_and_translated():
    labels = blank_labels(32)
    assert (labels == FACADE_CLASSES.index("facade")).all()
    painted = paint_rectangle(labels, (20, 5), (4, 2), "window")  # corners in any order, both included
    assert painted[2:6, 4:21].tolist() == np.full((4, 17), 2).tolist() and painted.sum() == labels.sum() + 4 * 17
    assert labels[3, 5] == 1  # the input is not changed
    clipped = paint_rectangle(labels, (-10, -10), (100, 3), "shop")
    assert (clipped[:4] == 11).all() and (clipped[4:] == 1).all()
    palette = np.stack([jet_guess(k) for k in range(1, 13)]).round().astype(np.uint8)
    assert np.array_equal(labels_from_map(render_labels(painted, palette), palette), painted)
    torch.manual_seed(0)
    G = define_G({"netG": "unet_128", "ngf": 4})
    photo = drawing_to_photo(G, paint_rectangle(blank_labels(256), (0, 0), (255, 40), "background"), palette)
    assert photo.shape == (256, 256, 3) and photo.dtype == np.uint8


# ------------------------------------------------------------------ widgets (no browser)

widgets = pytest.importorskip("p2p_lib.widgets")


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_lambda_widget_shows_the_committed_run_of_the_chosen_lambda(sweep_dir):
    sweep = load_sweep(sweep_dir)
    A = torch.zeros(4, 3, 128, 128)
    explorer = widgets.LambdaExplorer(sweep, A, A)
    assert explorer.outputs.value == (sweep_dir / "l1_cgan-seed0" / "outputs.png").read_bytes()  # λ = 100 first
    explorer.slider.value = 1000
    assert explorer.outputs.value == (sweep_dir / "lambda_1000-seed0" / "outputs.png").read_bytes()
    assert "0.1600" in explorer.metrics.value and "λ = 1000" in explorer.metrics.value
    assert "4%" in explorer.gradient.value  # 0.2 / (0.2 + 4.5)
    explorer.slider.value = 10
    assert explorer.outputs.value == b"" and "not run yet" in explorer.metrics.value
    assert png_pixels(explorer.curve.value).shape[2] == 3


def test_the_patch_widget_redraws_the_receptive_field(sweep_dir):
    explorer = widgets.PatchExplorer(load_sweep(sweep_dir), torch.zeros(3, 128, 128))
    assert "70 px" in explorer.text.value and "L1 ↓ 0.1900" in explorer.text.value  # n_layers 3 = l1_cgan's runs
    before = explorer.image.value
    explorer.slider.value = 1
    assert "16 px" in explorer.text.value and "62 × 62" in explorer.text.value and explorer.image.value != before
    explorer.slider.value = 5
    assert "not in the sweep" in explorer.text.value
    explorer.slider.value = 3
    explorer.size.value = 256  # the paper's input size: 30 x 30 verdicts of 70-px patches, 27% of the side
    assert "30 × 30" in explorer.text.value and "27% of the 256-px side" in explorer.text.value
    assert png_pixels(explorer.image.value).shape == (256, 256, 3)


def test_the_verdict_widget_follows_the_chosen_patch_and_pair():
    torch.manual_seed(0)
    options = {"netG": "unet_128", "ngf": 4, "ndf": 4}
    explorer = widgets.VerdictExplorer({"tiny": (define_G(options), define_D(options))},
                                       torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 3, 128, 128) * 2 - 1)
    real_v, fake_v = explorer.verdicts
    assert f"this patch {real_v[7, 7]:.2f}" in explorer.text.value
    image = explorer.real.value
    explorer.row.value = 2
    assert f"this patch {real_v[2, 7]:.2f}" in explorer.text.value and explorer.real.value != image
    explorer.index.value = 1
    assert not torch.equal(explorer.verdicts[0], real_v)


def test_the_stepper_buttons_add_exactly_one_point_per_update(tmp_path):
    root = aligned_pairs(tmp_path / "data", (("train", 2),), 64)
    widget = widgets.StepperWidget(StepByStep(root, pairs=2, size=64, width=4))
    assert widget.text.value == "no update yet"
    widget.d_button.click()
    assert widget.stepper.history["update"] == ["D"] and widget.text.value.startswith("update 1 (D)")
    curves = widget.curves.value
    widget.g_button.click()
    widget.steps.value = 3
    widget.run_button.click()
    assert len(widget.stepper.history["D_real"]) == 5 and widget.curves.value != curves


def test_drawing_on_the_widget_changes_the_photo():
    torch.manual_seed(0)
    palette = np.stack([jet_guess(k) for k in range(1, 13)]).round().astype(np.uint8)
    val_map = render_labels(paint_rectangle(blank_labels(256), (0, 0), (255, 100), "shop"), palette)
    draw = widgets.DrawFacade(define_G({"netG": "unet_128", "ngf": 4}), palette, [val_map])
    photo = draw.photo.value
    draw.label.value = "door"
    draw.press(10, 200)
    draw.release(60, 250)   # the mouse-up of a stroke: paint, then translate
    assert (draw.labels[200:251, 10:61] == FACADE_CLASSES.index("door")).all() and draw.photo.value != photo
    draw.load.click()
    assert (draw.labels[:101] == FACADE_CLASSES.index("shop")).all()
    draw.clear.click()
    assert (draw.labels == FACADE_CLASSES.index("facade")).all()


def test_compare_tells_settings_apart_only_beyond_their_seed_spread(tmp_path):
    from p2p_lib.ablation import compare
    for seed, (a, b) in enumerate([(0.20, 0.15), (0.22, 0.16)]):
        fake_result(tmp_path, "l1_cgan", seed, a)
        fake_result(tmp_path, "l1", seed, b)
    fake_result(tmp_path, "cgan", 0, 0.30)
    sweep = load_sweep(tmp_path)
    apart = compare(sweep, "l1_cgan", "l1", "L1")
    assert apart["difference"] == pytest.approx(0.055) and apart["apart"] is True and apart["seeds"] == (2, 2)
    # sharpness_pooled is 0.5 + seed in fake_result: equal means, spreads of 1
    assert compare(sweep, "l1_cgan", "l1", "sharpness_pooled")["apart"] is False
    assert compare(sweep, "l1_cgan", "cgan", "L1")["apart"] is None  # one seed of cgan: nothing to judge by
    assert compare(sweep, "l1_cgan", "gan", "L1") is None


def test_gradient_shares_split_gs_gradient_into_its_two_terms():
    config = {**COURSE_CONFIG, "ngf": 4, "ndf": 4}
    torch.manual_seed(0)
    G, D = define_G(config), define_D(config)
    A, B = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 3, 128, 128) * 2 - 1
    base = gradient_shares(G, D, config, A, B)
    ten_times = gradient_shares(G, D, {**config, "lambda_L1": 1000.0}, A, B)
    # the L1 part scales with lambda; the adversarial part does not depend on it
    assert ten_times["l1"] == pytest.approx(10 * base["l1"], rel=1e-5)  # float32 gradients
    assert ten_times["adversarial"] == pytest.approx(base["adversarial"], rel=1e-5)
    assert 0 < ten_times["adversarial_share"] < base["adversarial_share"] < 1
    # L1's gradient of a mean over N*3*H*W pixels: each entry is lambda / (3 H W) in size
    assert base["l1"] == pytest.approx(100 / (3 * 128 * 128) * (3 * 128 * 128) ** 0.5, rel=1e-3)
    assert gradient_shares(G, D, {**config, "adversarial": "none"}, A, B) is None
