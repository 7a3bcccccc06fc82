"""Lesson 11's multi-scale discriminator and feature-matching loss (p2p_lib.multiscale): exact parameter counts and
verdict grids, receptive fields measured from gradients, pix2pixHD's downsampling, and the losses on hand-computed
inputs."""
import pytest
import torch

from p2p_lib.losses import GANLoss
from p2p_lib.multiscale import MultiscaleDiscriminator, feature_matching_loss, multiscale_gan_loss
from p2p_lib.patchgan import PatchDiscriminator


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("num_D, input_nc, expected", [(3, 6, 8_306_115), (2, 6, 5_537_410), (3, 3, 3 * 2_765_633)])
def test_parameter_count_is_num_D_patchgans(num_D, input_nc, expected):
    assert n_params(MultiscaleDiscriminator(input_nc, 64, 3, num_D=num_D)) == expected == num_D * n_params(PatchDiscriminator(input_nc, 64, 3))


def test_grids_and_separate_weights():
    D = MultiscaleDiscriminator(6, 8, 3, num_D=3)
    verdicts = D(torch.randn(1, 6, 256, 256))
    assert [tuple(v.shape) for v in verdicts] == [(1, 1, 30, 30), (1, 1, 14, 14), (1, 1, 6, 6)]
    first = [p.data_ptr() for p in D.scales[0].parameters()]
    assert not set(first) & {p.data_ptr() for p in D.scales[1].parameters()}
    assert not torch.equal(next(D.scales[0].parameters()), next(D.scales[1].parameters()))  # drawn separately


def test_downsampling_is_pix2pixHDs_average_pool():
    D = MultiscaleDiscriminator(1, 4, 1, num_D=2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    half = D.pyramid(x)[1]
    assert half.shape == (1, 1, 2, 2)
    # top-left output: the 2x2 corner only (the padded zeros are not counted): (0 + 1 + 4 + 5) / 4
    assert half[0, 0, 0, 0].item() == pytest.approx(2.5)
    # the one at (1, 1): the full 3x3 window around pixel (2, 2)
    assert half[0, 0, 1, 1].item() == pytest.approx(x[0, 0, 1:4, 1:4].mean().item())


@pytest.mark.parametrize("scale, field", [(0, 70), (1, 141), (2, 283)])
def test_receptive_fields_measured_from_gradients(scale, field):
    D = MultiscaleDiscriminator(3, 4, 3, num_D=3).eval()
    xy = torch.randn(1, 3, 384, 384, requires_grad=True)
    logits = D(xy)[scale]
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows = (xy.grad[0].abs().sum(0) > 0).any(1).nonzero()
    assert int(rows.max() - rows.min() + 1) == field


def test_features_end_with_the_logits_of_each_scale():
    D = MultiscaleDiscriminator(6, 4, 3, num_D=2)
    xy = torch.randn(1, 6, 64, 64)
    features = D.features(xy)
    assert [len(f) for f in features] == [5, 5]
    for f, v in zip(features, D(xy)):
        torch.testing.assert_close(f[-1], v)


def test_feature_matching_by_hand_and_its_weights():
    real = [[torch.zeros(2, 2, 4, 4), torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 1, 1)]]
    fake = [[torch.full((2, 2, 4, 4), 0.25), torch.full((2, 1, 2, 2), -2.0), torch.full((2, 1, 1, 1), 5.0)]]
    # one scale, n_layers 1 -> layer weight 4 / 2 = 2; lambda 10: 10 * 2 * (0.25 + 2.0)
    assert feature_matching_loss(fake, real, lambda_FM=10, n_layers=1).item() == pytest.approx(45.0)
    assert feature_matching_loss(fake * 2, real * 2, lambda_FM=1, n_layers=3).item() == pytest.approx(0.5 * 2 * 2.25)


def test_feature_matching_trains_only_the_generator_side():
    D = MultiscaleDiscriminator(6, 4, 3, num_D=2)
    real_xy = torch.randn(1, 6, 64, 64, requires_grad=True)
    fake_xy = torch.randn(1, 6, 64, 64, requires_grad=True)
    loss = feature_matching_loss(D.features(fake_xy), D.features(real_xy))
    loss.backward()
    assert real_xy.grad is None and fake_xy.grad.abs().sum() > 0
    assert feature_matching_loss(D.features(real_xy), D.features(real_xy)).item() == 0


def test_multiscale_gan_loss_is_the_sum_over_scales():
    loss = GANLoss("lsgan")
    verdicts = [torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 1, 1) * 3]
    assert multiscale_gan_loss(verdicts, loss, True).item() == pytest.approx(1.0 + 4.0)
    assert multiscale_gan_loss(verdicts, loss, False).item() == pytest.approx(0.0 + 9.0)


def test_num_D_must_be_positive():
    with pytest.raises(ValueError, match="num_D"):
        MultiscaleDiscriminator(num_D=0)
