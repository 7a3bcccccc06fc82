"""The PatchGAN discriminator of lesson 03 (p2p_lib.patchgan).

The expected numbers (2,768,705 parameters, a 30x30 grid for 256x256, receptive fields 16/34/70/142/286)
come from the paper and the official code; the receptive field is measured here from input gradients,
and both networks are compared output for output with a transcription of the official ones (tests/official_networks.py).
"""

import pytest
import torch
from torch import nn

from official_networks import NLayerDiscriminator as OfficialNLayerDiscriminator
from official_networks import PixelDiscriminator as OfficialPixelDiscriminator
from official_networks import get_norm_layer as official_norm_layer
from p2p_lib.patchgan import PatchDiscriminator, PixelDiscriminator, patch_grid_size, patch_span, receptive_field


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv_biases(net: nn.Module) -> list[bool]:
    return [m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d)]


def grid_by_conv_arithmetic(size: int, n_layers: int) -> int:
    """out = floor((in + 2p - k) / s) + 1 for each 4x4, padding-1 conv: n_layers at stride 2, then two at stride 1."""
    for stride in [2] * n_layers + [1, 1]:
        size = (size + 2 * 1 - 4) // stride + 1
    return size


# ---------------------------------------------------------------- sizes


def test_default_discriminator_has_the_official_parameter_count():
    assert n_params(PatchDiscriminator()) == 2_768_705


def test_default_discriminator_gives_a_30x30_grid_of_logits_for_256x256():
    torch.manual_seed(0)
    net = PatchDiscriminator().eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 6, 256, 256))
    assert logits.shape == (1, 1, 30, 30)


def test_wide_facade_pair_gives_a_30x62_grid():
    net = PatchDiscriminator(ndf=4).eval()  # the grid depends on strides, not on widths
    with torch.no_grad():
        assert net(torch.randn(1, 6, 256, 512)).shape == (1, 1, 30, 62)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("height,width", [(96, 160), (131, 100)])
def test_non_square_grid_matches_the_conv_arithmetic(n_layers, height, width):
    net = PatchDiscriminator(input_nc=3, ndf=2, n_layers=n_layers).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 3, height, width))
    expected = (grid_by_conv_arithmetic(height, n_layers), grid_by_conv_arithmetic(width, n_layers))
    assert tuple(logits.shape) == (1, 1, *expected)
    assert (patch_grid_size(height, n_layers), patch_grid_size(width, n_layers)) == expected


def test_channel_widths_double_up_to_8_ndf():
    net = PatchDiscriminator(ndf=64, n_layers=5)
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 512, 512, 1]  # the paper's 286x286 D: C64-C128-C256-C512-C512-C512


def test_n_layers_below_one_is_refused():
    with pytest.raises(ValueError, match="n_layers must be at least 1, got 0"):
        PatchDiscriminator(n_layers=0)
    with pytest.raises(ValueError, match="n_layers must be at least 1, got 0"):
        receptive_field(0)


# ---------------------------------------------------------------- receptive field


def test_receptive_field_values():
    assert [receptive_field(n) for n in range(1, 6)] == [16, 34, 70, 142, 286]


def nonzero_extent(grad: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int], torch.Tensor]:
    seen = (grad != 0).any(dim=0)  # over channels
    rows, cols = seen.any(dim=1).nonzero().flatten(), seen.any(dim=0).nonzero().flatten()
    return (rows[0].item(), rows[-1].item()), (cols[0].item(), cols[-1].item()), seen


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("n_layers,size", [(1, 40), (2, 72), (3, 120), (4, 200), (5, 352)])
def test_receptive_field_measured_from_input_gradients(n_layers, size, norm):
    """Backprop from one logit: the input pixels with nonzero gradient are exactly the ones it sees.
    BatchNorm must be in eval mode (train-mode batch statistics couple every pixel); norm='none' needs nothing."""
    torch.manual_seed(n_layers)
    net = PatchDiscriminator(input_nc=2, ndf=2, n_layers=n_layers, norm=norm).double()
    if norm == "batch":
        net.eval()
    image = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    logits = net(image)
    centre = logits.shape[-1] // 2
    logits[0, 0, centre, centre].backward()
    rows, cols, seen = nonzero_extent(image.grad[0])
    assert 0 < rows[0] and rows[1] < size - 1 and 0 < cols[0] and cols[1] < size - 1, "field cut by the border"
    side = rows[1] - rows[0] + 1
    assert side == cols[1] - cols[0] + 1 == [16, 34, 70, 142, 286][n_layers - 1]
    assert seen[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1].all() and seen.sum() == side * side
    assert rows == cols == patch_span(centre, n_layers)

    # The corner logit: its window starts in the zero padding, so the image shows only the part from 0 on.
    image.grad = None
    net(image)[0, 0, 0, 0].backward()
    rows, cols, _ = nonzero_extent(image.grad[0])
    first, last = patch_span(0, n_layers)
    assert first < 0
    assert rows == cols == (0, last)


def test_train_mode_batchnorm_couples_every_pixel():
    torch.manual_seed(0)
    net = PatchDiscriminator(input_nc=1, ndf=2, n_layers=1).double().train()
    image = torch.randn(1, 1, 64, 64, dtype=torch.float64, requires_grad=True)
    net(image)[0, 0, 15, 15].backward()
    assert (image.grad != 0).all()


# ---------------------------------------------------------------- the 1x1 PixelGAN


def test_pixel_discriminator_gives_one_logit_per_pixel():
    net = PixelDiscriminator().eval()
    with torch.no_grad():
        assert net(torch.randn(2, 6, 37, 53)).shape == (2, 1, 37, 53)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_a_pixel_logit_depends_only_on_that_pixel(norm):
    torch.manual_seed(0)
    net = PixelDiscriminator(ndf=8, norm=norm).double().eval()
    xy = torch.randn(1, 6, 20, 24, dtype=torch.float64, requires_grad=True)
    net(xy)[0, 0, 7, 19].backward()
    seen = (xy.grad[0] != 0).any(dim=0)
    assert seen.nonzero().tolist() == [[7, 19]]
    assert (xy.grad[0, :, 7, 19] != 0).all()  # every channel of that pixel counts: labels and photo


# ---------------------------------------------------------------- bias rules, no sigmoid


@pytest.mark.parametrize("n_layers", [1, 3, 5])
def test_bias_rule_first_and_last_conv_only_with_batch_norm(n_layers):
    assert conv_biases(PatchDiscriminator(n_layers=n_layers, ndf=8)) == [True] + [False] * n_layers + [True]


@pytest.mark.parametrize("n_layers", [1, 3, 5])
def test_bias_rule_every_conv_with_instance_norm(n_layers):
    assert conv_biases(PatchDiscriminator(n_layers=n_layers, ndf=8, norm="instance")) == [True] * (n_layers + 2)


def test_pixel_discriminator_bias_rule():
    assert conv_biases(PixelDiscriminator(norm="batch")) == [True, False, False]
    assert conv_biases(PixelDiscriminator(norm="instance")) == [True, True, True]


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_no_sigmoid_anywhere(norm):
    for net in (PatchDiscriminator(ndf=8, norm=norm), PatchDiscriminator(ndf=8, n_layers=5, norm=norm),
                PixelDiscriminator(ndf=8, norm=norm)):
        assert not any(isinstance(m, nn.Sigmoid) for m in net.modules())


# ---------------------------------------------------------------- the official networks
# (transcribed in tests/official_networks.py)



def load_by_order(ours: nn.Module, official: nn.Module) -> None:
    """Copy the official network's parameters and buffers into ours, entry by entry in registration order.
    The names differ (our blocks nest), so order and shapes are what must agree."""
    theirs, mine = list(official.state_dict().values()), ours.state_dict()
    assert len(theirs) == len(mine)
    for (name, tensor), source in zip(mine.items(), theirs):
        assert tensor.shape == source.shape, name
    ours.load_state_dict(dict(zip(mine.keys(), theirs)))


def assert_same_function(ours: nn.Module, official: nn.Module, shape) -> None:
    torch.manual_seed(1)
    with torch.no_grad():  # random, non-trivial norm parameters and statistics, so they are compared too
        for module in official.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
            elif isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
                if module.bias is not None:
                    module.bias.normal_()
    load_by_order(ours, official)
    xy = torch.randn(*shape)
    for train in (True, False):
        ours.train(train)
        official.train(train)
        a, b = xy.clone().requires_grad_(), xy.clone().requires_grad_()
        out_ours, out_official = ours(a), official(b)
        torch.testing.assert_close(out_ours, out_official)
        (out_ours ** 2).mean().backward()
        (out_official ** 2).mean().backward()
        torch.testing.assert_close(a.grad, b.grad)


def test_the_transcribed_official_discriminator_has_2768705_parameters():
    assert n_params(OfficialNLayerDiscriminator(6, 64, 3, official_norm_layer("batch"))) == 2_768_705


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5])
def test_patch_discriminator_matches_the_official_nlayer_discriminator(norm, n_layers):
    official = OfficialNLayerDiscriminator(6, ndf=8, n_layers=n_layers, norm_layer=official_norm_layer(norm))
    ours = PatchDiscriminator(6, ndf=8, n_layers=n_layers, norm=norm)
    assert n_params(ours) == n_params(official)
    assert_same_function(ours, official, (2, 6, 96, 96))


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_pixel_discriminator_matches_the_official_one(norm):
    official = OfficialPixelDiscriminator(6, ndf=16, norm_layer=official_norm_layer(norm))
    ours = PixelDiscriminator(6, ndf=16, norm=norm)
    assert n_params(ours) == n_params(official)
    assert_same_function(ours, official, (2, 6, 24, 20))


def test_default_sizes_match_the_official_defaults():
    official = OfficialNLayerDiscriminator(6, norm_layer=official_norm_layer("batch"))
    ours = PatchDiscriminator()
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in official.parameters()]
    assert n_params(PixelDiscriminator()) == n_params(OfficialPixelDiscriminator(6, norm_layer=official_norm_layer("batch")))
