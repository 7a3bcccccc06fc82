"""p2p_lib.networks: the official option names build the lessons' networks, and --init_type draws as the
official init_weights does (conv weights by the rule, BatchNorm scales ~ N(1, gain), biases 0)."""
import math

import pytest
import torch
from torch import nn

from p2p_lib.networks import NetworkOptionError, define_D, define_G, init_net, size_multiple_of

SMALL = {"netG": "unet_128", "ngf": 8, "netD": "basic", "ndf": 8}


def conv_weights(net):
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_default_options_are_the_official_defaults():
    G, D = define_G({}), define_D({})
    assert sum(p.numel() for p in G.parameters()) == 54_413_955  # the official unet_256, ngf 64, batch norm (lesson 02)
    assert sum(p.numel() for p in D.parameters()) == 2_768_705  # the official basic D, ndf 64, 6 input channels (lesson 03)


@pytest.mark.parametrize("init_type", ["xavier", "kaiming", "orthogonal"])
def test_init_types_draw_conv_weights_by_their_rule_and_batchnorm_as_normal(init_type):
    torch.manual_seed(0)
    net = init_net(nn.Sequential(nn.Conv2d(64, 128, 4), nn.BatchNorm2d(128), nn.Conv2d(128, 256, 4, bias=True)),
                   init_type, gain=0.5)
    first, bn, last = net
    fan_in, fan_out = 64 * 16, 128 * 16
    expected_std = {"xavier": 0.5 * math.sqrt(2 / (fan_in + fan_out)), "kaiming": math.sqrt(2 / fan_in)}
    if init_type == "orthogonal":  # rows of the (128, 1024) matrix are orthogonal, each of norm gain
        rows = first.weight.flatten(1)
        assert torch.allclose(rows @ rows.T, 0.25 * torch.eye(128), atol=1e-5)
    else:
        assert first.weight.std().item() == pytest.approx(expected_std[init_type], rel=0.05)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.15) and bn.weight.std().item() == pytest.approx(0.5, rel=0.2)
    assert (bn.bias == 0).all() and (last.bias == 0).all()


def test_normal_init_is_lesson_01s_and_is_not_drawn_twice():
    torch.manual_seed(3)
    built = define_G(SMALL)  # the networks init 'normal' (0.02) as they are built
    torch.manual_seed(3)
    again = define_G({**SMALL, "init_type": "normal", "init_gain": 0.02})
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), again.state_dict().values()))
    assert abs(torch.cat([w.flatten() for w in conv_weights(built)]).std().item() - 0.02) < 1e-3
    wider = define_G({**SMALL, "init_gain": 0.05})
    assert abs(torch.cat([w.flatten() for w in conv_weights(wider)]).std().item() - 0.05) < 2e-3


@pytest.mark.parametrize("options, match", [({"netG": "resnet_12blocks"}, "unknown generator 'resnet_12blocks'"),
                                            ({"netD": "huge"}, "unknown discriminator 'huge'"),
                                            ({"init_type": "uniform"}, "unknown init_type 'uniform'")])
def test_unknown_choices_name_the_option(options, match):
    with pytest.raises(NetworkOptionError, match=match):
        define_G({**SMALL, **options}) if "netD" not in options else define_D({**SMALL, **options})


def test_resnet_generators_have_the_official_sizes():
    "--netG resnet_9blocks / resnet_6blocks: lesson 10's ResnetGenerator with CycleGAN's counts (instance norm, no dropout)."
    options = {"norm": "instance", "no_dropout": True}
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(define_G({**options, "netG": "resnet_9blocks"})) == 11_378_179
    assert count(define_G({**options, "netG": "resnet_6blocks"})) == 7_837_699
    G = define_G({**options, "netG": "resnet_6blocks", "ngf": 8})
    assert G(torch.zeros(1, 3, 36, 36)).shape == (1, 3, 36, 36)  # any multiple of 4
    assert size_multiple_of("resnet_6blocks") == 4
    with_dropout = define_G({"netG": "resnet_6blocks", "ngf": 8})
    assert any(isinstance(m, torch.nn.Dropout) for m in with_dropout.modules())


def test_multiscale_discriminator_from_options():
    "--netD multiscale: lesson 11's MultiscaleDiscriminator, --num_D scales of --n_layers_D PatchGANs on (x, y) pairs."
    D = define_D({"netD": "multiscale", "ndf": 64})
    assert sum(p.numel() for p in D.parameters()) == 8_306_115 and len(D.scales) == 3
    small = define_D({"netD": "multiscale", "ndf": 8, "num_D": 2, "n_layers_D": 2})
    verdicts = small(torch.zeros(1, 6, 64, 64))
    assert [tuple(v.shape) for v in verdicts] == [(1, 1, 14, 14), (1, 1, 6, 6)]
    assert define_D({"netD": "multiscale", "ndf": 8, "adversarial": "gan"}).scales[0].model[0][0].in_channels == 3
