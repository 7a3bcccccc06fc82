"""Lesson 11's multi-scale discriminator and feature-matching loss (p2p_lib.multiscale): exact parameter counts and
verdict grids, receptive fields measured from gradients, pix2pixHD's downsampling, and the losses on hand-computed
inputs."""
import pytest
import torch

from p2p_lib.losses import GANLoss
from p2p_lib.multiscale import MultiscaleDiscriminator, coarse_l1, feature_matching_loss, multiscale_gan_loss
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


# ---------------------------------------------------------------- part 2: the step, the enhancer

class FixedVerdicts(torch.nn.Module):
    "A stand-in discriminator: the same logits (0 everywhere) at `scales` scales, and features (1, 2, logits)."

    def __init__(self, scales: int = 2):
        super().__init__()
        self.scales = scales

    def forward(self, xy):
        return [torch.zeros(1, 1, 2, 2) for _ in range(self.scales)]

    def features(self, xy):
        image = xy[:, -3:]  # the judged image: its mean is the "feature" of every layer
        return [[image.mean().reshape(1, 1, 1, 1), 2 * image.mean().reshape(1, 1, 1, 1), torch.zeros(1, 1, 2, 2)]
                for _ in range(self.scales)]


def test_multiscale_discriminator_loss_by_hand():
    from p2p_lib.multiscale import multiscale_discriminator_loss
    condition, real, fake = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    loss, fake_part, real_part = multiscale_discriminator_loss(FixedVerdicts(2), GANLoss("vanilla"), condition, real, fake)
    ln2 = torch.log(torch.tensor(2.0))
    assert torch.allclose(fake_part, 2 * ln2) and torch.allclose(real_part, 2 * ln2)  # logit 0: ln 2 per scale
    assert torch.allclose(loss, 2 * ln2)                                              # 0.5 * (2 ln2 + 2 ln2)
    loss, fake_part, real_part = multiscale_discriminator_loss(FixedVerdicts(3), GANLoss("lsgan"), condition, real, fake)
    assert (fake_part.item(), real_part.item(), loss.item()) == (0.0, 3.0, 1.5)       # (0 - 1)^2 per real scale


def test_multiscale_generator_loss_by_hand():
    from p2p_lib.multiscale import multiscale_generator_loss
    condition, real = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    fake = torch.full((1, 3, 4, 4), 0.5)
    total, adversarial, l1, matching = multiscale_generator_loss(FixedVerdicts(2), GANLoss("lsgan"), condition, real,
                                                                 fake, lambda_L1=100.0, lambda_FM=10.0)
    assert adversarial.item() == 2.0 and l1.item() == 0.5  # two scales of (0 - 1)^2; |0.5 - 0|
    # feature layers 0.5 and 1.0 off, n_layers = 3 - 2 = 1: weight 4 / 2 = 2 per layer, 1/2 per scale, lambda 10
    assert matching.item() == pytest.approx(2 * 10 * 2 / 2 * (0.5 + 1.0))
    assert total.item() == pytest.approx(2.0 + 100 * 0.5 + matching.item())
    no_matching = multiscale_generator_loss(FixedVerdicts(2), GANLoss("lsgan"), condition, real, fake, lambda_FM=0.0)
    assert no_matching[3].item() == 0.0


def test_one_scale_without_feature_matching_is_lesson_06s_step_bit_for_bit():
    from p2p_lib.multiscale import multiscale_train_step
    from p2p_lib.train import make_optimizers, train_step
    from p2p_lib.unet import UNetGenerator

    def pair():
        torch.manual_seed(0)
        return UNetGenerator(3, 3, num_downs=5, ngf=4), MultiscaleDiscriminator(6, 4, 3, num_D=1)
    (G1, D1), (G2, D2) = pair(), pair()
    plain = PatchDiscriminator(6, 4, 3)
    plain.load_state_dict(D2.scales[0].state_dict())
    opts1, opts2 = make_optimizers(G1, D1, fused=False), make_optimizers(G2, plain, fused=False)
    torch.manual_seed(1)
    batches = [(torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1) for _ in range(3)]
    for A, B in batches:
        torch.manual_seed(2)
        ours = multiscale_train_step(G1, D1, *opts1, A, B, GANLoss(), lambda_FM=0.0)
        torch.manual_seed(2)
        theirs = train_step(G2, plain, *opts2, A, B, GANLoss())
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs) and ours["G_FM"].item() == 0.0
    assert all(torch.equal(a, b) for a, b in zip(G1.state_dict().values(), G2.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(D1.scales[0].state_dict().values(), plain.state_dict().values()))
    with pytest.raises(ValueError, match="trains no discriminator"):
        multiscale_train_step(G1, D1, *opts1, A, B, GANLoss(), adversarial="none")


def test_local_enhancer_shapes_parameters_and_stages():
    from p2p_lib.cyclegan import ResnetGenerator
    from p2p_lib.multiscale import LocalEnhancer
    from p2p_lib.train import set_requires_grad
    net = LocalEnhancer(ngf=32, n_blocks_global=9, n_blocks_local=3)
    front = (3 * 32 * 49 + 32) + (32 * 64 * 9 + 64)                       # 7x7 conv, stride-2 conv (biases: instance norm)
    back = 3 * 2 * (64 * 64 * 9 + 64) + (64 * 32 * 9 + 32) + (32 * 3 * 49 + 3)  # 3 residual blocks, up-conv, 7x7 out
    assert n_params(net.front) == front == 23_232 and n_params(net.back) == back == 244_739
    assert n_params(net.global_generator) == n_params(ResnetGenerator(ngf=64, n_blocks=9)) == 11_378_179
    x = torch.randn(1, 3, 64, 96)
    assert net.global_features(x).shape == (1, 64, 32, 48) and net(x).shape == (1, 3, 64, 96)
    set_requires_grad(net.global_generator, False)
    net(x).sum().backward()
    assert all(p.grad is None for p in net.global_generator.parameters())
    assert all(p.grad is not None for p in net.front.parameters()) and net.num_downs == 3


def test_coarse_l1_sees_the_layout_not_the_texture():
    white, black = torch.ones(1, 3, 32, 32), -torch.ones(1, 3, 32, 32)
    assert coarse_l1(white, black) == pytest.approx(1.0)          # [0, 1]: 1 against 0
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1   # 1-px black and white
    grey = torch.zeros(1, 3, 32, 32)                                      # 0.5 on [0, 1]
    assert coarse_l1(checker.expand(1, 3, 32, 32), grey) == pytest.approx(0.0)  # same layout, other texture
