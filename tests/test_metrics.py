"""The metrics of lesson 07 against a reference implementation (torchmetrics) and closed forms."""
import importlib
import math

import pytest
import torch

from p2p_lib.metrics import (LAB_BINS, color_histogram_intersection, confusion_matrix, detail_ratio,
                             feature_statistics, find_fid_weights, frechet_distance, gaussian_blur, gaussian_window,
                             gradient_energy, histogram_intersection, l1_distance, lab_histograms, psnr,
                             segmentation_scores, srgb_to_lab, ssim, to_unit_range)


def _reference(module="image"):
    """torchmetrics, the reference implementation (in the `test` extras, used by tests only)."""
    return importlib.import_module(f"torchmetrics.functional.{module}")


SHAPES = [(1, 3, 32, 32), (4, 3, 48, 37), (2, 1, 11, 64), (3, 3, 70, 50)]  # incl. non-square, 1 channel, 11 px


def _random_pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g)
    prediction = (target + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    return prediction, target


def _structured_pair(shape):
    """Smooth gradients, stripes and a checkerboard, against a blurred and brightened version."""
    n, c, h, w = shape
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    patterns = [y * x, 0.5 + 0.5 * torch.sin(20 * x + 3 * y), ((torch.arange(h).view(h, 1) // 4
                + torch.arange(w).view(1, w) // 4) % 2).float(), torch.full((h, w), 0.3)]
    target = torch.stack([torch.stack([patterns[(i + k) % 4] for k in range(c)]) for i in range(n)])
    prediction = (gaussian_blur(target.double(), gaussian_window(5, 1.0), padding="reflect").float() + 0.05).clamp(0, 1)
    return prediction, target


def _pairs():
    for i, shape in enumerate(SHAPES):
        yield f"random-{shape}", *_random_pair(shape, i)
        yield f"structured-{shape}", *_structured_pair(shape)


PAIRS = list(_pairs())


@pytest.mark.parametrize("name,prediction,target", PAIRS, ids=[p[0] for p in PAIRS])
def test_psnr_matches_torchmetrics_per_image(name, prediction, target):
    tm = _reference()
    ours = psnr(prediction, target, reduction="none")
    reference = torch.stack([tm.peak_signal_noise_ratio(p[None], t[None], data_range=1.0)
                             for p, t in zip(prediction, target)])
    torch.testing.assert_close(ours, reference.double(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(psnr(prediction, target), reference.double().mean(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name,prediction,target", PAIRS, ids=[p[0] for p in PAIRS])
def test_ssim_matches_torchmetrics(name, prediction, target):
    tm = _reference()
    # torchmetrics reflect-pads, so its SSIM map has a value at every pixel ...
    reference, full_map = tm.structural_similarity_index_measure(
        prediction.double(), target.double(), data_range=1.0, reduction="none", return_full_image=True)
    torch.testing.assert_close(ssim(prediction, target, border="reflect", reduction="none"), reference,
                               rtol=1e-6, atol=1e-7)
    # ... and away from the border (5 px for the 11x11 window) the padding plays no part: the valid windows.
    valid = full_map[..., 5:-5, 5:-5].flatten(1).mean(1)
    torch.testing.assert_close(ssim(prediction, target, reduction="none"), valid, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ssim(prediction, target), valid.mean(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,prediction,target", PAIRS, ids=[p[0] for p in PAIRS])
def test_l1_matches_torchmetrics_mean_absolute_error(name, prediction, target):
    tm = _reference("regression")
    reference = torch.stack([tm.mean_absolute_error(p, t) for p, t in zip(prediction, target)])
    torch.testing.assert_close(l1_distance(prediction, target, reduction="none"), reference.double(),
                               rtol=1e-5, atol=1e-7)


def test_a_single_image_is_a_batch_of_one_and_data_range_scales_psnr():
    tm = _reference()
    prediction, target = _random_pair((3, 40, 30), 9)
    assert torch.equal(ssim(prediction, target), ssim(prediction[None], target[None]))
    reference = tm.peak_signal_noise_ratio(prediction * 255, target * 255, data_range=255.0)
    torch.testing.assert_close(psnr(prediction * 255, target * 255, data_range=255.0), reference.double(),
                               rtol=1e-5, atol=1e-4)


def test_identical_images_have_infinite_psnr_perfect_ssim_and_zero_l1():
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.isinf(psnr(image, image)) and psnr(image, image) > 0
    other = image.clone()
    other[1] += 0.1
    per_image = psnr(other, image, reduction="none")
    assert math.isinf(per_image[0].item()) and math.isclose(per_image[1].item(), 20.0, rel_tol=1e-6)
    assert ssim(image, image).item() == pytest.approx(1.0, abs=1e-12)
    assert l1_distance(image, image).item() == 0


def test_closed_forms_a_uniform_offset_of_a_tenth_is_20_db():
    grey = torch.full((1, 3, 16, 16), 0.4)
    assert l1_distance(grey + 0.1, grey).item() == pytest.approx(0.1)
    assert psnr(grey + 0.1, grey).item() == pytest.approx(20.0)


def test_bad_shapes_and_tiny_images_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 40), torch.zeros(1, 3, 10, 40))
    with pytest.raises(ValueError, match="reduction"):
        l1_distance(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), reduction="sum")


def test_to_unit_range_maps_tanh_outputs_to_zero_one():
    assert to_unit_range(torch.tensor([-1.0, 0.0, 1.0, 1.5])).tolist() == [0.0, 0.5, 1.0, 1.0]


def test_segmentation_scores_by_hand_and_against_torchmetrics():
    classification = _reference("classification")
    # true 0 0 1 2 / predicted 0 1 1 1: pixel acc 2/4, class acc (1/2 + 1 + 0) / 3, IoU (1/2 + 1/3 + 0) / 3
    counts = confusion_matrix(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 0], [1, 2]]), num_classes=3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    scores = segmentation_scores(counts)
    assert scores == pytest.approx({"pixel_accuracy": 0.5, "class_accuracy": 0.5, "class_iou": 5 / 18})

    g = torch.Generator().manual_seed(0)
    true = torch.randint(0, 5, (4, 20, 30), generator=g)
    predicted = torch.where(torch.rand(true.shape, generator=g) < 0.6, true, torch.randint(0, 5, true.shape, generator=g))
    scores = segmentation_scores(confusion_matrix(predicted, true, 5))
    multiclass_accuracy, multiclass_jaccard_index = (classification.multiclass_accuracy,
                                                     classification.multiclass_jaccard_index)
    assert scores["pixel_accuracy"] == pytest.approx(multiclass_accuracy(predicted, true, 5, average="micro").item())
    assert scores["class_accuracy"] == pytest.approx(multiclass_accuracy(predicted, true, 5, average="macro").item())
    assert scores["class_iou"] == pytest.approx(multiclass_jaccard_index(predicted, true, 5, average="macro").item())


def test_segmentation_ignores_unlabelled_pixels_and_absent_classes():
    # label 255 = "void": skipped; class 2 never occurs anywhere: left out of both class means
    counts = confusion_matrix(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 255, 1]), num_classes=3)
    assert counts.sum() == 3
    scores = segmentation_scores(counts)
    assert scores["class_accuracy"] == pytest.approx((1 + 1 / 2) / 2)
    assert scores["class_iou"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="predicted labels"):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), num_classes=3)


def test_frechet_distance_closed_forms():
    assert frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(2.0)  # (0-1)² + (2-1)²
    # diagonal covariances commute: sum of (sqrt(a) - sqrt(b))² over the diagonal
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = 3.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert frechet_distance([0, 0, 0], torch.diag(a), [1, 1, 1], torch.diag(b)) == pytest.approx(expected)


def test_frechet_distance_of_non_commuting_covariances_matches_the_eigenvalues_of_the_product():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 6, generator=g, dtype=torch.float64), torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = y @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.5
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    # Tr sqrt(S1 S2) = sum of the square roots of the (real, non-negative) eigenvalues of S1 S2
    trace_sqrt = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum()
    expected = ((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected.item(), rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    torch.testing.assert_close(s1, torch.cov(x.T))


def test_fid_weights_are_never_downloaded_and_the_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("P2P_FID_WEIGHTS", raising=False)
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError) as err:
        find_fid_weights(missing)
    assert str(missing) in str(err.value) and "pip install pytorch-fid" in str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(err.value)
    present = tmp_path / "weights.pth"
    present.write_bytes(b"stand-in")
    monkeypatch.setenv("P2P_FID_WEIGHTS", str(present))
    assert find_fid_weights() == present


# sRGB colours and their CIELAB values (D65, 2° observer), as colour references list them
LAB_REFERENCE = {(1.0, 1.0, 1.0): (100.0, 0.0, 0.0), (0.0, 0.0, 0.0): (0.0, 0.0, 0.0),
                 (1.0, 0.0, 0.0): (53.2408, 80.0925, 67.2032), (0.0, 1.0, 0.0): (87.7347, -86.1827, 83.1793),
                 (0.0, 0.0, 1.0): (32.2970, 79.1875, -107.8602), (1.0, 1.0, 0.0): (97.1393, -21.5537, 94.4780),
                 (0.5, 0.5, 0.5): (53.3889, 0.0, 0.0)}


def test_srgb_to_lab_matches_reference_colours_on_any_batch_shape():
    rgb = torch.tensor(list(LAB_REFERENCE), dtype=torch.float64).T.reshape(3, 1, len(LAB_REFERENCE))
    expected = torch.tensor(list(LAB_REFERENCE.values()), dtype=torch.float64).T.reshape(3, 1, -1)
    assert torch.allclose(srgb_to_lab(rgb), expected, atol=2e-3)
    batch = torch.stack([rgb, rgb.flip(-1)])  # (2, 3, 1, 7)
    assert torch.allclose(srgb_to_lab(batch), torch.stack([expected, expected.flip(-1)]), atol=2e-3)


def test_greys_have_no_colour_and_lightness_rises_with_the_grey_level():
    levels = torch.linspace(0, 1, 11, dtype=torch.float64)
    lab = srgb_to_lab(levels.expand(3, 1, 11))
    assert lab[1:].abs().max() < 1e-3
    assert bool((lab[0, 0].diff() > 0).all()) and lab[0, 0, 0] == 0 and abs(lab[0, 0, -1] - 100) < 1e-3


def test_lab_histograms_count_every_pixel_and_add_up_over_batches():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 12, 9, generator=g)
    whole = lab_histograms(images)
    assert set(whole) == set(LAB_BINS) and all(h.sum() == 5 * 12 * 9 for h in whole.values())
    parts = [lab_histograms(images[:2]), lab_histograms(images[2:])]
    assert all(torch.equal(whole[k], parts[0][k] + parts[1][k]) for k in whole)
    summed = {k: parts[0][k] + parts[1][k] for k in whole}  # histograms may be passed instead of images
    assert color_histogram_intersection(summed, images) == color_histogram_intersection(images, images)


def test_histogram_intersection_is_one_for_equal_zero_for_disjoint_and_symmetric():
    p, q = torch.tensor([1.0, 3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert histogram_intersection(p, 10 * p) == pytest.approx(1.0)  # only the shape counts, not the total
    assert histogram_intersection(p, q) == 0.0
    r = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert histogram_intersection(p, r) == pytest.approx(histogram_intersection(r, p)) == pytest.approx(0.5)


def test_grey_outputs_of_colourful_targets_lose_the_a_and_b_intersection():
    g = torch.Generator().manual_seed(1)
    colourful = torch.rand(4, 3, 16, 16, generator=g)
    grey = colourful.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    same = color_histogram_intersection(colourful, colourful)
    washed = color_histogram_intersection(grey, colourful)
    assert all(v == pytest.approx(1.0) for v in same.values())
    assert washed["a"] < 0.2 and washed["b"] < 0.2  # all of grey's mass sits in the a = b = 0 bin


def test_detail_ratio_is_one_for_itself_below_one_for_blur_and_above_for_noise():
    g = torch.Generator().manual_seed(2)
    target = gaussian_blur(torch.rand(3, 3, 40, 40, generator=g, dtype=torch.float64), gaussian_window(5, 1.0))
    assert torch.allclose(detail_ratio(target, target, reduction="none"), torch.ones(3, dtype=torch.float64))
    ratios = [detail_ratio(gaussian_blur(target, gaussian_window(9, sigma), padding="reflect"), target).item()
              for sigma in (0.5, 1.0, 2.0)]
    assert 1 > ratios[0] > ratios[1] > ratios[2] > 0  # more blur, less detail
    noisy = (target + 0.1 * torch.randn(target.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert detail_ratio(noisy, target) > 1


def test_gradient_energy_by_hand():
    stripes = torch.tensor([[0.0, 1.0, 0.0, 1.0]]).expand(2, 4)[None]  # (1, 2, 4): vertical stripes
    assert gradient_energy(stripes).item() == pytest.approx(1.0)  # |jump| 1 across, 0 down
    assert gradient_energy(torch.zeros(2, 1, 5, 5)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"the same shape, got \(1, 4, 4\) and \(1, 4, 5\)"):
        detail_ratio(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
