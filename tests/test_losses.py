"""p2p_lib.losses (lesson 04) against the formulas, each computed by hand from log-sigmoid."""
import pytest
import torch

from p2p_lib.losses import GAN_MODES, GANLoss, discriminator_loss, generator_loss
from p2p_lib.patchgan import PatchDiscriminator
from p2p_lib.unet import UNetGenerator

SHAPES = [(1, 1, 30, 30), (2, 1, 7, 5)]


def log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    "log σ(z) = min(z, 0) - log(1 + exp(-|z|)), written out so the reference does not reuse torch's BCE."
    return torch.clamp(z, max=0) - torch.log1p(torch.exp(-z.abs()))


def bce_by_hand(z: torch.Tensor, t: float) -> torch.Tensor:
    "Mean binary cross-entropy of logits z against label t: -[t log σ(z) + (1 - t) log(1 - σ(z))]."
    return -(t * log_sigmoid(z) + (1 - t) * log_sigmoid(-z)).mean()


def logits(shape, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target_is_real", [True, False])
def test_vanilla_is_bce_with_logits(shape, target_is_real):
    z = logits(shape)
    loss = GANLoss("vanilla")(z, target_is_real)
    assert loss.shape == ()
    torch.testing.assert_close(loss, bce_by_hand(z, 1.0 if target_is_real else 0.0))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target_is_real", [True, False])
def test_lsgan_is_mean_squared_error_to_the_label(shape, target_is_real):
    z = logits(shape, seed=1)
    label = 1.0 if target_is_real else 0.0
    torch.testing.assert_close(GANLoss("lsgan")(z, target_is_real), ((z - label) ** 2).mean())


def test_custom_labels_are_used():
    z = logits((2, 1, 7, 5), seed=2)
    vanilla = GANLoss("vanilla", real_label=0.9, fake_label=0.1)
    torch.testing.assert_close(vanilla(z, True), bce_by_hand(z, 0.9))
    torch.testing.assert_close(vanilla(z, False), bce_by_hand(z, 0.1))
    lsgan = GANLoss("lsgan", real_label=0.9, fake_label=0.1)
    torch.testing.assert_close(lsgan(z, True), ((z - 0.9) ** 2).mean())


@pytest.mark.parametrize("shape", SHAPES)
def test_every_patch_gets_the_label_and_its_own_gradient(shape):
    z = logits(shape, seed=3).requires_grad_()
    GANLoss()(z, True).backward()
    # d/dz mean(BCE(z, 1)) = (σ(z) - 1) / N, patch by patch
    torch.testing.assert_close(z.grad, (torch.sigmoid(z.detach()) - 1) / z.numel())


def test_saturated_logits_give_finite_loss_and_unit_gradient():
    z = torch.tensor([-50.0, 50.0], requires_grad=True)
    loss = GANLoss()(z, False)  # fakes; the second one D is sure is real
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(25.0))  # (≈0 + 50) / 2
    torch.testing.assert_close(z.grad, torch.tensor([0.0, 0.5]))  # σ(z) - 0, over 2 elements


def test_labels_follow_the_logits_dtype():
    z = logits((1, 1, 4, 4), seed=4).double()
    loss = GANLoss()(z, True)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, bce_by_hand(z, 1.0))


def test_invalid_mode_names_the_valid_ones():
    assert GAN_MODES == ("vanilla", "lsgan")
    with pytest.raises(ValueError) as info:
        GANLoss("wgangp")
    message = str(info.value)
    assert "wgangp" in message and "vanilla" in message and "lsgan" in message


@pytest.fixture
def tiny_pair():
    "A small G and D (train mode, as in training) and a batch of 2 random 32×32 pairs."
    torch.manual_seed(0)
    G = UNetGenerator(num_downs=5, ngf=4)
    D = PatchDiscriminator(ndf=4, n_layers=2)
    real_A = torch.rand(2, 3, 32, 32) * 2 - 1
    real_B = torch.rand(2, 3, 32, 32) * 2 - 1
    return G, D, real_A, real_B, G(real_A)


@pytest.mark.parametrize("mode", GAN_MODES)
def test_discriminator_loss_is_half_the_sum_on_conditional_pairs(tiny_pair, mode):
    G, D, real_A, real_B, fake_B = tiny_pair
    loss = discriminator_loss(D, GANLoss(mode), real_A, real_B, fake_B)
    with torch.no_grad():  # train-mode BatchNorm: each forward normalises with its own batch, as inside
        pred_fake = D(torch.cat([real_A, fake_B], 1))
        pred_real = D(torch.cat([real_A, real_B], 1))
    if mode == "vanilla":
        expected = 0.5 * (bce_by_hand(pred_fake, 0.0) + bce_by_hand(pred_real, 1.0))
    else:
        expected = 0.5 * ((pred_fake ** 2).mean() + ((pred_real - 1) ** 2).mean())
    torch.testing.assert_close(loss, expected)


def test_discriminator_loss_trains_D_and_leaves_G_alone(tiny_pair):
    G, D, real_A, real_B, fake_B = tiny_pair
    discriminator_loss(D, GANLoss(), real_A, real_B, fake_B).backward()
    assert all(p.grad is None for p in G.parameters())  # fake_B was detached
    assert all(p.grad is not None for p in D.parameters())
    assert any(p.grad.abs().sum() > 0 for p in D.parameters())


@pytest.mark.parametrize("lambda_L1", [None, 7.5, 0.0])
def test_generator_loss_is_non_saturating_adversarial_plus_weighted_l1(tiny_pair, lambda_L1):
    G, D, real_A, real_B, fake_B = tiny_pair
    kwargs = {} if lambda_L1 is None else {"lambda_L1": lambda_L1}
    weight = 100.0 if lambda_L1 is None else lambda_L1  # the paper's λ is the default
    total, adversarial, l1 = generator_loss(D, GANLoss(), real_A, real_B, fake_B, **kwargs)
    with torch.no_grad():
        pred_fake = D(torch.cat([real_A, fake_B], 1))
    torch.testing.assert_close(adversarial, bce_by_hand(pred_fake, 1.0))  # fakes labelled real: -log D
    torch.testing.assert_close(l1, (fake_B - real_B).abs().mean())
    torch.testing.assert_close(total, adversarial + weight * l1)


def test_generator_loss_reaches_every_weight_of_G(tiny_pair):
    G, D, real_A, real_B, fake_B = tiny_pair
    total, _, _ = generator_loss(D, GANLoss(), real_A, real_B, fake_B)
    total.backward()
    assert all(p.grad is not None for p in G.parameters())
    assert all(p.grad.abs().sum() > 0 for p in G.parameters())
