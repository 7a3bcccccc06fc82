"""Lesson 10's CycleGAN pieces (p2p_lib.cyclegan): the ResNet generator against a transcription of the official
one (tests/official_networks.py) and its exact parameter counts, the unconditional instance-norm PatchGAN,
the losses on hand-computed inputs, the history pool (its draws, and a state round trip that repeats them),
one training step, and the unpaired reader."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from official_networks import ResnetGenerator as OfficialResnetGenerator
from official_networks import get_norm_layer as official_norm_layer
from p2p_lib.cyclegan import (ImagePool, ResnetBlock, ResnetGenerator, UnpairedImageDataset, build_cyclegan,
                              cyclegan_step, discriminator_loss_unpaired, generator_losses)
from p2p_lib.imagefiles import PairedDataError
from p2p_lib.losses import GANLoss
from p2p_lib.patchgan import PatchDiscriminator


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("n_blocks, expected", [(9, 11_378_179), (6, 7_837_699)])
def test_resnet_generator_has_the_official_parameter_count(n_blocks, expected):
    assert n_params(ResnetGenerator(ngf=64, n_blocks=n_blocks)) == expected


def test_unconditional_instance_norm_patchgan_has_the_official_parameter_count():
    assert n_params(PatchDiscriminator(3, 64, n_layers=3, norm="instance")) == 2_764_737


@pytest.mark.parametrize("norm, dropout", [("instance", False), ("batch", False), ("batch", True)])
def test_resnet_generator_matches_the_official_one_weight_for_weight(norm, dropout):
    ours = ResnetGenerator(3, 3, ngf=8, norm=norm, use_dropout=dropout, n_blocks=2)
    official = OfficialResnetGenerator(3, 3, ngf=8, norm_layer=official_norm_layer(norm), use_dropout=dropout, n_blocks=2)
    assert list(ours.state_dict()) == list(official.state_dict())      # the same layer order and names
    official.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ours.eval(), official.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=0, atol=1e-6)


def test_resnet_block_adds_a_change_to_its_input():
    block = ResnetBlock(4)
    for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
        nn.init.zeros_(conv.weight), nn.init.zeros_(conv.bias)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)   # F = 0: the identity path alone


def test_generator_losses_by_hand():
    lsgan = GANLoss("lsgan")
    A, B = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4) * 0.5

    class Half(nn.Module):      # a "discriminator" that answers 0.5 everywhere
        def forward(self, x):
            return torch.full((x.shape[0], 1, 2, 2), 0.5)

    shift = lambda by: type("Shift", (nn.Module,), {"forward": lambda self, x: x + by})()
    total, parts, fake_B, fake_A = generator_losses(shift(0.2), shift(-0.1), Half(), Half(), A, B, lsgan,
                                                    lambda_A=10, lambda_B=5, lambda_identity=0.5)
    assert torch.equal(fake_B, A + 0.2) and torch.equal(fake_A, B - 0.1)
    expected = {"G_A": 0.25, "G_B": 0.25,                       # (0.5 - 1)^2
                "cycle_A": 10 * 0.1, "cycle_B": 5 * 0.1,         # A + 0.2 - 0.1 is 0.1 off A; B likewise
                "idt_A": 0.5 * 5 * 0.2, "idt_B": 0.5 * 10 * 0.1}  # G_A(B) is 0.2 off B, G_B(A) 0.1 off A
    assert {k: round(v.item(), 6) for k, v in parts.items()} == pytest.approx(expected)
    assert total.item() == pytest.approx(sum(expected.values()))
    _, parts, _, _ = generator_losses(shift(0.2), shift(-0.1), Half(), Half(), A, B, lsgan, lambda_identity=0)
    assert "idt_A" not in parts and "idt_B" not in parts


def test_discriminator_loss_is_half_the_sum_and_does_not_reach_the_generator():
    D = PatchDiscriminator(3, 4, n_layers=1, norm="instance")
    lsgan = GANLoss("lsgan")
    real, source = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16, requires_grad=True)
    fake = source * 2
    loss = discriminator_loss_unpaired(D, lsgan, real, fake)
    assert loss.item() == pytest.approx(0.5 * (lsgan(D(real), True) + lsgan(D(fake), False)).item())
    loss.backward()
    assert source.grad is None


def test_pool_returns_stored_images_only_after_it_is_full_and_never_from_the_future():
    pool = ImagePool(pool_size=3, seed=1)
    seen = [int(pool.query(torch.full((1, 1, 1, 1), float(k))).item()) for k in range(200)]
    assert seen[:3] == [0, 1, 2] and all(s <= k for k, s in enumerate(seen))
    older = sum(s < k for k, s in enumerate(seen[3:], 3)) / len(seen[3:])
    assert 0.35 < older < 0.65                                    # about half, by the official rule
    assert ImagePool(0).query(x := torch.rand(2, 3, 4, 4)) is x  # no pool: unchanged
    batch = ImagePool(5).query(torch.rand(4, 3, 2, 2))
    assert batch.shape == (4, 3, 2, 2) and not batch.requires_grad


def test_pool_state_round_trip_repeats_the_draws_and_survives_pickling():
    pool = ImagePool(pool_size=4, seed=0)
    fakes = [torch.full((1, 1, 1, 1), float(k)) for k in range(30)]
    for fake in fakes[:10]:
        pool.query(fake)
    state = pickle.loads(pickle.dumps(pool.state_dict()))
    after = [pool.query(f).item() for f in fakes[10:]]
    resumed = ImagePool(pool_size=4, seed=123)
    resumed.load_state_dict(state)
    assert [resumed.query(f).item() for f in fakes[10:]] == after
    with pytest.raises(ValueError, match="holds 5 images"):
        ImagePool(5).load_state_dict(state)


def test_one_step_moves_every_network_and_is_repeatable():
    def run():
        model = build_cyclegan(ngf=4, ndf=4, n_blocks=1, seed=3)
        torch.manual_seed(0)
        A, B = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
        start = {n: [p.clone() for p in getattr(model, n).parameters()] for n in ("G_A", "G_B", "D_A", "D_B")}
        losses = cyclegan_step(model, A, B, GANLoss("lsgan"))
        return model, start, losses
    model, start, losses = run()
    for name, before in start.items():
        assert any(not torch.equal(p, q) for p, q in zip(getattr(model, name).parameters(), before)), name
    assert set(losses) == {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in losses.values())
    again, _, _ = run()
    for a, b in zip(model.G_A.parameters(), again.G_A.parameters()):
        assert torch.equal(a, b)
    assert all(p.requires_grad for p in model.D_A.parameters())   # D's unfrozen again after the step


def write_images(folder, count, size=40, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_unpaired_reader_cycles_A_draws_B_and_jitters_each_side(tmp_path):
    write_images(tmp_path / "trainA", 3, seed=0)
    write_images(tmp_path / "trainB", 5, seed=1)
    data = UnpairedImageDataset(tmp_path, "train", load_size=36, crop_size=32)
    assert len(data) == 5
    torch.manual_seed(0)
    items = [data[i] for i in range(5)]
    assert [item["A_paths"].rsplit("/", 1)[1] for item in items] == ["0.png", "1.png", "2.png", "0.png", "1.png"]
    assert all(item["A"].shape == item["B"].shape == (3, 32, 32) for item in items)
    assert len({item["B_paths"] for item in items}) > 1            # B is drawn, not in step with A
    torch.manual_seed(0)
    assert all(torch.equal(a["B"], b["B"]) for a, b in zip(items, [data[i] for i in range(5)]))  # seeded


def test_unpaired_reader_says_which_folder_is_missing_or_empty(tmp_path):
    write_images(tmp_path / "trainA", 2)
    with pytest.raises(PairedDataError, match="trainB"):
        UnpairedImageDataset(tmp_path, "train")
    (tmp_path / "trainB").mkdir()
    with pytest.raises(PairedDataError, match="no images"):
        UnpairedImageDataset(tmp_path, "train")
