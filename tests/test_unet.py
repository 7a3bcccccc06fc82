"""The U-Net generator (lesson 02): sizes, dropout, and equivalence with the official pix2pix code.

The reference is tests/official_networks.py, a transcription of the official `UnetGenerator`
(pytorch-CycleGAN-and-pix2pix, BSD licence). Both state_dicts list the same tensors in the same
order, so weights are copied across by position and the outputs must be bit-for-bit identical.
"""
import pytest
import torch
from torch import nn

from official_networks import define_unet
from p2p_lib.unet import UNetGenerator, unet_channels


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def unet256():
    torch.manual_seed(0)
    return UNetGenerator()


def randomize_(net: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and BatchNorm statistic a random value, so that a forward pass tests all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05 + (1.0 if t.dim() == 1 and "weight" in name else 0.0))
    return net


def copy_by_order(ours: nn.Module, official: nn.Module) -> None:
    mine, theirs = ours.state_dict(), official.state_dict()
    assert len(mine) == len(theirs)
    for (k1, v1), (k2, v2) in zip(mine.items(), theirs.items()):
        assert v1.shape == v2.shape and v1.dtype == v2.dtype, f"{k1} {tuple(v1.shape)} vs {k2} {tuple(v2.shape)}"
    official.load_state_dict(dict(zip(theirs.keys(), mine.values())))


def assert_identical(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- sizes ---------------------------------------------------------------------------------------------

def test_param_counts_match_official_unet_256_and_unet_128(unet256):
    assert n_params(unet256) == 54_413_955  # official unet_256
    assert n_params(UNetGenerator(num_downs=7)) == 41_828_995  # official unet_128


def test_encoder_widths_are_the_papers():
    # Appendix 6.1.1: encoder C64-C128-C256-C512-C512-C512-C512-C512
    assert unet_channels(8) == [64, 128, 256, 512, 512, 512, 512, 512]
    assert unet_channels(5, ngf=8) == [8, 16, 32, 64, 64]


def test_decoder_reads_the_papers_unet_widths(unet256):
    # Appendix 6.1.1: U-Net decoder CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128 (channels each
    # transposed convolution reads), the last one mapping to the 3 output channels.
    convs = [m for m in unet256.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.in_channels for c in convs] == [512, 1024, 1024, 1024, 1024, 512, 256, 128]
    assert [c.out_channels for c in convs] == [512, 512, 512, 512, 256, 128, 64, 3]


def test_norm_layers_skip_the_outermost_and_innermost_encoder_levels(unet256):
    # 6 encoder norms (levels 1..6) + 7 decoder norms (all but the output layer)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in unet256.modules()) == 13
    assert not any(isinstance(m, nn.BatchNorm2d) for m in unet256.encoder[0])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in unet256.encoder[-1])


def test_output_shape_and_range():
    torch.manual_seed(0)
    net = UNetGenerator(num_downs=6, ngf=8)
    x = 3 * torch.randn(2, 3, 64, 128)  # large inputs, so that tanh saturates somewhere
    y = net(x)
    assert y.shape == (2, 3, 64, 128)
    assert y.abs().max() <= 1
    assert y.std() > 0.05  # not a constant
    colorize = UNetGenerator(input_nc=1, output_nc=2, num_downs=5, ngf=8)
    assert colorize(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_inputs_not_a_multiple_of_2_to_the_num_downs_get_a_clear_error(unet256):
    with pytest.raises(ValueError, match=r"multiples of 2\*\*8 = 256, got \(200, 300\)"):
        unet256(torch.randn(1, 3, 200, 300))
    net = UNetGenerator(num_downs=6, ngf=8)
    with pytest.raises(ValueError, match=r"multiples of 2\*\*6 = 64, got \(64, 96\)"):
        net(torch.randn(1, 3, 64, 96))
    assert net(torch.randn(1, 3, 128, 64)).shape == (1, 3, 128, 64)


def test_num_downs_below_two_is_refused():
    with pytest.raises(ValueError, match="num_downs"):
        UNetGenerator(num_downs=1)


# --- the encoder-decoder variant ----------------------------------------------------------------------

def test_encoder_decoder_variant_has_fewer_params_and_runs(unet256):
    torch.manual_seed(0)
    plain = UNetGenerator(skips=False)
    # Without skips each decoder level l < 7 reads ch[l] fewer channels: 16 * ch[l] * out[l] weights fewer,
    # 16 * (64*3 + 128*64 + 256*128 + 512*256 + 3 * 512*512) = 15,338,496.
    assert n_params(unet256) - n_params(plain) == 15_338_496
    convs = [m for m in plain.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 512, 512, 512, 256, 128, 64, 3]  # CD512-CD512-CD512-C512-...
    assert all(c.in_channels == c2.out_channels for c, c2 in zip(convs[1:], convs))
    y = plain(torch.randn(1, 3, 256, 256))
    assert y.shape == (1, 3, 256, 256) and y.abs().max() <= 1


@pytest.mark.parametrize("skips", [True, False])
def test_without_skips_everything_passes_the_bottleneck(skips):
    """Pin the innermost features to a constant: the encoder-decoder's output no longer depends on the input;
    the U-Net's still does, through its skips."""
    torch.manual_seed(0)
    net = UNetGenerator(num_downs=5, ngf=8, skips=skips).eval()
    fixed = torch.randn(1, 64, 1, 1)
    net.encoder[-1].register_forward_hook(lambda module, inputs, output: fixed.clone())
    with torch.no_grad():
        a, b = net(torch.randn(1, 3, 32, 32)), net(torch.randn(1, 3, 32, 32))
    assert torch.equal(a, b) is (not skips)


# --- dropout --------------------------------------------------------------------------------------------

def dropout_output_shapes(net: nn.Module, size: int) -> list[tuple]:
    shapes = []
    hooks = [m.register_forward_hook(lambda module, inputs, out: shapes.append(tuple(out.shape)))
             for m in net.modules() if isinstance(m, nn.Dropout)]
    with torch.no_grad():
        net(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


def test_dropout_sits_on_the_three_512_blocks_after_the_innermost(unet256):
    dropouts = [m for m in unet256.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(m.p == 0.5 for m in dropouts)
    # official PyTorch placement: after the decoder blocks of levels 6, 5, 4, which write 512 channels at
    # 4x4, 8x8 and 16x16 for a 256x256 input (not after the innermost one, which writes 2x2)
    assert dropout_output_shapes(unet256, 256) == [(1, 512, 4, 4), (1, 512, 8, 8), (1, 512, 16, 16)]


@pytest.mark.parametrize("num_downs, expected", [(5, 0), (6, 1), (7, 2), (9, 4)])
def test_dropout_count_follows_num_downs(num_downs, expected):
    net = UNetGenerator(num_downs=num_downs, ngf=4)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == expected


def test_no_dropout_when_use_dropout_is_false():
    net = UNetGenerator(use_dropout=False, ngf=4)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    net.train()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # training mode, yet deterministic: no noise left


# --- equivalence with the official implementation -------------------------------------------------------

@pytest.mark.parametrize("num_downs, ngf", [(5, 8), (6, 8), (7, 8), (8, 4)])
def test_same_seed_same_initial_weights_as_official(num_downs, ngf):
    torch.manual_seed(123)
    ours = UNetGenerator(num_downs=num_downs, ngf=ngf)
    torch.manual_seed(123)
    official = define_unet(num_downs=num_downs, ngf=ngf)
    mine, theirs = ours.state_dict(), official.state_dict()
    assert n_params(ours) == n_params(official)
    assert len(mine) == len(theirs)
    for v1, v2 in zip(mine.values(), theirs.values()):
        assert torch.equal(v1, v2)


def check_equivalent(ours: nn.Module, official: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    randomize_(ours, seed)
    copy_by_order(ours, official)
    # evaluation mode: running statistics, no dropout
    ours.eval(), official.eval()
    with torch.no_grad():
        assert_identical(ours(x), official(x))
    # training mode: batch statistics and dropout, with the same random masks under the same seed
    ours.train(), official.train()
    torch.manual_seed(seed + 1)
    y_ours = ours(x)
    torch.manual_seed(seed + 1)
    y_official = official(x)
    assert_identical(y_ours, y_official)
    # Gradients agree up to float rounding only: a skip's gradient is summed in another order there.
    y_ours.square().mean().backward()
    y_official.square().mean().backward()
    for p1, p2 in zip(ours.parameters(), official.parameters()):
        assert (p1.grad - p2.grad).abs().max() <= 1e-5 * p2.grad.abs().max()
    for b1, b2 in zip(ours.buffers(), official.buffers()):  # running statistics updated alike
        assert_identical(b1, b2)


@pytest.mark.parametrize("num_downs, size", [(5, 32), (6, 64), (7, 128)])
def test_identical_to_official_unet(num_downs, size):
    torch.manual_seed(0)
    ours = UNetGenerator(num_downs=num_downs, ngf=8)
    official = define_unet(num_downs=num_downs, ngf=8)
    check_equivalent(ours, official, torch.randn(2, 3, size, size))


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_identical_to_official_unet_with_other_norms(norm):
    torch.manual_seed(0)
    ours = UNetGenerator(num_downs=6, ngf=8, norm=norm)
    official = define_unet(num_downs=6, ngf=8, norm=norm)
    assert n_params(ours) == n_params(official)
    check_equivalent(ours, official, torch.randn(2, 3, 64, 64))


def test_identical_to_official_unet_256_default_config(unet256):
    official = define_unet()  # unet_256, batch norm, dropout: what pix2pix trains on facades
    assert n_params(official) == n_params(unet256)
    copy_by_order(unet256, official)
    x = torch.randn(1, 3, 256, 256)
    unet256.eval(), official.eval()
    with torch.no_grad():
        assert_identical(unet256(x), official(x))
        unet256.train(), official.train()
        torch.manual_seed(5)
        y_ours = unet256(x)
        torch.manual_seed(5)
        assert_identical(y_ours, official(x))
