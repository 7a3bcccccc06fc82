"""Generators saved by the official pix2pix code load into our UNetGenerator and compute the same function.

The reference network is the official UnetGenerator transcribed in tests/official_networks.py."""
from collections import OrderedDict

import pytest
import torch

from p2p_lib.official import (generator_from_official_state_dict, infer_official_unet_options,
                              is_official_unet_state_dict, load_official_generator, official_unet_name_map,
                              our_state_dict_to_official, strip_module_prefix)
from p2p_lib.unet import UNetGenerator
from netfactory import with_trained_statistics
from official_networks import define_unet  # tests/official_networks.py (pytest puts tests/ on sys.path)

# (input_nc, output_nc, num_downs, ngf, norm): unet_256 and unet_128 as the official code names them,
# a shallower one, every norm, and channel counts that differ between input and output.
CASES = [(3, 3, 8, 4, "batch"), (1, 3, 7, 6, "instance"), (3, 2, 5, 8, "none")]


def _official(input_nc, output_nc, num_downs, ngf, norm, seed=0):
    torch.manual_seed(seed)
    # BatchNorm running statistics made non-trivial, as a trained network's are
    return with_trained_statistics(define_unet(input_nc, output_nc, num_downs, ngf, norm, use_dropout=True))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}-{c[2]}downs" for c in CASES])
def test_the_name_map_lists_the_official_tensors_in_order_and_ours_in_order(case):
    input_nc, output_nc, num_downs, ngf, norm = case
    official = _official(*case).state_dict()
    ours = UNetGenerator(input_nc, output_nc, num_downs, ngf, norm=norm).state_dict()
    name_map = official_unet_name_map(num_downs, norm)
    assert list(name_map) == list(official)
    assert list(name_map.values()) == list(ours)
    for official_name, our_name in name_map.items():
        assert official[official_name].shape == ours[our_name].shape, (official_name, our_name)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}-{c[2]}downs" for c in CASES])
def test_an_official_checkpoint_loads_and_computes_the_same_outputs(case, tmp_path):
    input_nc, output_nc, num_downs, ngf, norm = case
    official = _official(*case)
    path = tmp_path / "latest_net_G.pth"
    torch.save(official.state_dict(), path)

    ours, options = load_official_generator(path)
    assert options["num_downs"] == num_downs and options["netG"] == f"unet_{2 ** num_downs}"
    assert (options["ngf"], options["norm"]) == (ngf, norm)
    assert (options["input_nc"], options["output_nc"]) == (input_nc, output_nc)

    size = 2 ** num_downs
    x = torch.rand(2, input_nc, size, size) * 2 - 1
    official.eval(), ours.eval()
    with torch.no_grad():
        expected, got = official(x.clone()), ours(x.clone())
    assert got.shape == (2, output_nc, size, size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    # Train mode (dropout on, batch statistics): the same dropout masks are drawn in the same order.
    official.train(), ours.train()
    with torch.no_grad():
        torch.manual_seed(7)
        expected = official(x.clone())
        torch.manual_seed(7)
        got = ours(x.clone())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_dataparallel_prefix_is_stripped():
    official = _official(3, 3, 5, 4, "batch").state_dict()
    wrapped = OrderedDict((f"module.{k}", v) for k, v in official.items())
    assert list(strip_module_prefix(wrapped)) == list(official)
    assert is_official_unet_state_dict(wrapped)
    net, options = generator_from_official_state_dict(wrapped)
    assert options["num_downs"] == 5
    torch.testing.assert_close(net.state_dict()["encoder.1.0.weight"], official["model.model.1.model.1.weight"])


def test_old_files_without_the_batch_counter_and_instance_norm_statistics_still_load():
    batch = _official(3, 3, 5, 4, "batch").state_dict()
    old = OrderedDict((k, v) for k, v in batch.items() if not k.endswith("num_batches_tracked"))
    net, _ = generator_from_official_state_dict(old)
    # level 4 is the innermost of 5: its decoder block runs first, its norm is the official index 4
    torch.testing.assert_close(net.state_dict()["decoder.0.1.running_var"],
                               batch["model.model.1.model.3.model.3.model.3.model.4.running_var"])

    # PyTorch < 0.4 InstanceNorm kept running statistics; the official loader drops them, so do we.
    instance = _official(3, 3, 5, 4, "instance").state_dict()
    with_stats = OrderedDict(instance)
    with_stats["model.model.1.model.2.running_mean"] = torch.zeros(8)
    with_stats["model.model.1.model.2.running_var"] = torch.ones(8)
    net, options = generator_from_official_state_dict(with_stats)
    assert options["norm"] == "instance"


def test_our_weights_exported_under_official_names_load_into_the_official_network():
    torch.manual_seed(3)
    ours = UNetGenerator(3, 3, 6, 4, norm="batch").eval()
    official = define_unet(3, 3, 6, 4, "batch", use_dropout=True).eval()
    official.load_state_dict(our_state_dict_to_official(ours.state_dict()))  # strict: every name must match
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(official(x.clone()), ours(x.clone()), rtol=1e-5, atol=1e-5)


def test_inferred_options_read_the_architecture_off_the_tensors():
    sd = _official(1, 2, 7, 6, "instance").state_dict()
    assert infer_official_unet_options(sd) == {"netG": "unet_128", "num_downs": 7, "ngf": 6, "norm": "instance",
                                               "input_nc": 1, "output_nc": 2, "no_dropout": False}


def test_options_that_contradict_the_tensors_fail_with_a_clear_message():
    sd = _official(3, 3, 5, 4, "batch").state_dict()
    with pytest.raises(ValueError, match="shape mismatch"):
        generator_from_official_state_dict(sd, {"ngf": 8})
    with pytest.raises(ValueError, match="does not fit"):
        generator_from_official_state_dict(sd, {"netG": "unet_256"})


def test_files_that_are_not_official_generators_are_refused(tmp_path):
    not_torch = tmp_path / "notes_net_G.pth"
    not_torch.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_official_generator(not_torch)
    discriminator = tmp_path / "latest_net_D.pth"
    torch.save(OrderedDict([("model.0.weight", torch.zeros(8, 6, 4, 4))]), discriminator)
    with pytest.raises(ValueError, match="not the state dict of an official UnetGenerator"):
        load_official_generator(discriminator)
    truncated = _official(3, 3, 5, 4, "batch").state_dict()
    del truncated["model.model.1.model.6.weight"]
    with pytest.raises(ValueError, match="1 missing tensors"):
        generator_from_official_state_dict(truncated)
