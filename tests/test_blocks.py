"""The building blocks of lesson 01 (p2p_lib.blocks): shapes, bias rule, norms, dropout, init."""
import pytest
import torch
from torch import nn

from p2p_lib.blocks import NORMS, conv_block, conv_uses_bias, init_weights, norm_layer, up_block


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("side", [256, 64, 2])
def test_stride2_conv_block_halves_exactly(side):
    out = conv_block(3, 16)(torch.randn(2, 3, side, side))
    assert out.shape == (2, 16, side // 2, side // 2)


@pytest.mark.parametrize("side", [32, 31])
def test_stride1_conv_block_loses_one_pixel(side):
    # the discriminator's last C_k: 4x4 kernel, padding 1, stride 1 takes n to n - 1
    out = conv_block(8, 16, stride=1)(torch.randn(1, 8, side, side))
    assert out.shape == (1, 16, side - 1, side - 1)


@pytest.mark.parametrize("side", [1, 2, 64])
def test_up_block_doubles_exactly(side):
    block = up_block(32, 8)  # even from 1x1, BatchNorm sees 2x2 values per channel
    assert block(torch.randn(1, 32, side, side)).shape == (1, 8, 2 * side, 2 * side)


def test_conv_block_layers_and_activation():
    block = conv_block(3, 64)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU]
    conv = block[0]
    assert conv.kernel_size == (4, 4) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert block[2].negative_slope == 0.2
    assert [type(m) for m in conv_block(3, 64, use_norm=False)] == [nn.Conv2d, nn.LeakyReLU]


def test_up_block_dropout_present_or_absent():
    with_dropout = up_block(64, 32)
    assert [type(m) for m in with_dropout] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.Dropout, nn.ReLU]
    assert with_dropout[2].p == 0.5
    assert [type(m) for m in up_block(64, 32, dropout=False)] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU]


def test_up_block_dropout_is_random_in_train_mode_only():
    torch.manual_seed(0)
    block = up_block(16, 16, norm="instance")
    x = torch.randn(1, 16, 8, 8)
    assert not torch.equal(block(x), block(x))
    block.eval()
    assert torch.equal(block(x), block(x))


@pytest.mark.parametrize("norm, expected", [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d),
                                            ("none", nn.Identity)])
def test_norm_layer_types(norm, expected):
    assert type(norm_layer(norm, 8)) is expected
    assert norm in NORMS


def test_instance_norm_is_the_official_one():
    layer = norm_layer("instance", 8)
    assert not layer.affine and not layer.track_running_stats and n_params(layer) == 0


def test_norm_layer_rejects_unknown_name_and_names_the_choices():
    with pytest.raises(ValueError) as info:
        norm_layer("layer", 8)
    message = str(info.value)
    assert "'layer'" in message
    assert all(f"'{name}'" in message for name in ("batch", "instance", "none"))


@pytest.mark.parametrize("norm, has_bias", [("batch", False), ("instance", True), ("none", False)])
def test_bias_follows_the_official_rule(norm, has_bias):
    assert conv_uses_bias(norm) is has_bias
    assert (conv_block(8, 16, norm=norm)[0].bias is not None) is has_bias
    assert (conv_block(8, 16, norm=norm, use_norm=False)[0].bias is not None) is has_bias
    assert (up_block(16, 8, norm=norm)[0].bias is not None) is has_bias


def test_explicit_bias_overrides_the_rule():
    assert conv_block(6, 64, use_norm=False, bias=True)[0].bias is not None  # the discriminator's first conv
    assert conv_block(8, 16, norm="instance", bias=False)[0].bias is None


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_norm_cancels_a_conv_bias(norm):
    torch.manual_seed(0)
    with_bias = conv_block(8, 16, norm=norm, bias=True)
    without = conv_block(8, 16, norm=norm, bias=False)
    without[0].weight.data.copy_(with_bias[0].weight.data)
    nn.init.normal_(with_bias[0].bias, 0.0, 3.0)
    x = torch.randn(4, 8, 16, 16)
    assert torch.allclose(with_bias(x), without(x), atol=1e-5)
    # ...and the bias gets no gradient: moving it cannot change the output
    (with_bias(x) * torch.randn(4, 16, 8, 8)).sum().backward()
    assert with_bias[0].bias.grad.abs().max() < 1e-4


def test_parameter_counts():
    # a 4x4 conv: 16 * c_in * c_out weights (+ c_out bias); BatchNorm: 2 * c_out; InstanceNorm: none
    assert n_params(conv_block(3, 64, use_norm=False)) == 16 * 3 * 64
    assert n_params(conv_block(64, 128)) == 16 * 64 * 128 + 2 * 128
    assert n_params(conv_block(64, 128, norm="instance")) == 16 * 64 * 128 + 128
    assert n_params(up_block(1024, 512)) == 16 * 1024 * 512 + 2 * 512


def test_init_weights_statistics_on_a_big_layer():
    torch.manual_seed(0)
    net = nn.Sequential(conv_block(512, 512, bias=True), up_block(512, 256, norm="instance"))
    for p in net.parameters():  # start far from the official init, so the test sees init_weights act
        nn.init.constant_(p, 5.0)
    assert init_weights(net) is net
    conv, bn, convt = net[0][0], net[0][1], net[1][0]
    for weight in (conv.weight, convt.weight):
        assert abs(weight.mean().item()) < 1e-3
        assert abs(weight.std().item() - 0.02) < 1e-3
    assert abs(bn.weight.mean().item() - 1.0) < 0.005  # 512 draws from N(1, 0.02^2)
    assert abs(bn.weight.std().item() - 0.02) < 0.005
    for bias in (conv.bias, bn.bias, convt.bias):
        assert torch.count_nonzero(bias) == 0


def test_init_weights_gain():
    torch.manual_seed(0)
    conv = init_weights(conv_block(256, 256), gain=0.1)[0]
    assert abs(conv.weight.std().item() - 0.1) < 0.005
