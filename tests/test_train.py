"""Lesson 06's training pieces (p2p_lib.train): the step against a hand-written reference, the schedule,
the loop, the tensor cache, validation, and the cached course model."""
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imagefactory import aligned_pairs
from p2p_lib.checkpoint import load_generator
from p2p_lib.data import PairedImageDataset, to_tensor, transform_image
from p2p_lib.losses import GANLoss
from p2p_lib.patchgan import PatchDiscriminator
from p2p_lib.train import (COURSE_CONFIG, PairCache, course_model, course_model_path, fit, image_grid,
                           l1_and_psnr, lr_factor, make_optimizers, make_scheduler, pick_device, set_requires_grad,
                           train_step, translate_batch, val_tensors)
from p2p_lib.unet import UNetGenerator


def make_pairs(root, counts=(("train", 5), ("val", 3)), size=72, seed=0, same=False):
    """Aligned A|B files; B is the photographic negative of A (or A itself: same=True)."""
    return aligned_pairs(root, counts, size, seed, same=same)


def tiny_nets(seed=0, size_levels=5, ngf=4, dropout=True):
    torch.manual_seed(seed)
    return UNetGenerator(num_downs=size_levels, ngf=ngf, use_dropout=dropout), PatchDiscriminator(6, ndf=4, n_layers=2)


def pair(seed=1, size=32, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1, torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda:1")  # named: taken as given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
        assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")


def test_set_requires_grad_switches_every_weight():
    G, D = tiny_nets()
    set_requires_grad([G, D], False)
    assert not any(p.requires_grad for p in [*G.parameters(), *D.parameters()])
    set_requires_grad(D, True)
    assert all(p.requires_grad for p in D.parameters()) and not any(p.requires_grad for p in G.parameters())


def reference_step(G, D, opt_G, opt_D, A, B, lambda_L1=100.0):
    """The official pix2pix_model.optimize_parameters, written out with plain torch calls."""
    bce = torch.nn.BCEWithLogitsLoss()
    fake = G(A)
    for p in D.parameters():
        p.requires_grad = True
    opt_D.zero_grad()
    pred_fake = D(torch.cat((A, fake), 1).detach())
    pred_real = D(torch.cat((A, B), 1))
    loss_D = (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real))) * 0.5
    loss_D.backward()
    opt_D.step()
    for p in D.parameters():
        p.requires_grad = False
    opt_G.zero_grad()
    pred = D(torch.cat((A, fake), 1))
    loss_G = bce(pred, torch.ones_like(pred)) + F.l1_loss(fake, B) * lambda_L1
    loss_G.backward()
    opt_G.step()


def test_train_step_matches_the_official_algorithm():
    G, D = tiny_nets(dropout=False)  # dropout would draw different masks in the two runs' orders
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opt_G, opt_D = make_optimizers(G, D, fused=False)
    ref_G, ref_D = (torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999)) for net in (G2, D2))
    for step in range(3):
        A, B = pair(step)
        losses = train_step(G, D, opt_G, opt_D, A, B, GANLoss("vanilla"), lambda_L1=100.0)
        reference_step(G2, D2, ref_G, ref_D, A, B)
    for ours, ref in ((G, G2), (D, D2)):
        for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert set(losses) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    assert all(v.dim() == 0 and not v.requires_grad for v in losses.values())
    assert all(p.requires_grad for p in D.parameters())


def test_train_step_losses_are_the_official_ones():
    G, D = tiny_nets(dropout=False)
    A, B = pair()
    with torch.no_grad():
        fake = G(A)
        l1 = (fake - B).abs().mean().item()
        real_logits = D(torch.cat([A, B], 1))
    opt_G, opt_D = make_optimizers(G, D)
    losses = train_step(G, D, opt_G, opt_D, A, B, GANLoss(), lambda_L1=10.0)
    assert losses["G_L1"].item() == pytest.approx(10.0 * l1, rel=1e-5)  # weighted, as the official log
    # the D_real the step reports was measured before D's update, on the real pair
    assert losses["D_real"].item() == pytest.approx(F.softplus(-real_logits).mean().item(), rel=1e-5)


def test_the_g_step_leaves_no_gradient_in_d_and_the_d_step_none_in_g():
    G, D = tiny_nets()
    opt_G, opt_D = make_optimizers(G, D)
    seen = {}
    d_step, g_step = opt_D.step, opt_G.step

    def spy_D(*args, **kwargs):
        seen["G grads at D's step"] = [p.grad for p in G.parameters()]
        seen["D grads after D's backward"] = [p.grad.clone() for p in D.parameters()]
        return d_step(*args, **kwargs)

    def spy_G(*args, **kwargs):
        seen["D grads at G's step"] = [p.grad.clone() for p in D.parameters()]
        return g_step(*args, **kwargs)

    opt_D.step, opt_G.step = spy_D, spy_G
    train_step(G, D, opt_G, opt_D, *pair(), GANLoss())
    assert all(g is None for g in seen["G grads at D's step"])  # fake_B.detach(): D's backward stopped at G
    # D frozen during G's step: its gradients are exactly what D's own backward left
    assert all(torch.equal(a, b) for a, b in zip(seen["D grads after D's backward"], seen["D grads at G's step"]))


def test_mixed_precision_step_runs_on_the_cpu():
    G, D = tiny_nets()
    opt_G, opt_D = make_optimizers(G, D)
    losses = train_step(G, D, opt_G, opt_D, *pair(), GANLoss(), amp_dtype=torch.bfloat16)
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.dtype == torch.float32 for p in G.parameters())  # the weights stay in float32


def test_make_optimizers_uses_the_papers_adam():
    G, D = tiny_nets()
    opt_G, opt_D = make_optimizers(G, D)
    for opt, net in ((opt_G, G), (opt_D, D)):
        group = opt.param_groups[0]
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)
        assert len(group["params"]) == len(list(net.parameters()))
    assert opt_G.param_groups[0]["fused"] is True  # CPU tensors: the fused kernel exists
    opt_G, _ = make_optimizers(G, D, lr=1e-3, beta1=0.9, fused=False)
    assert opt_G.param_groups[0]["lr"] == 1e-3 and opt_G.param_groups[0]["betas"] == (0.9, 0.999)
    assert not opt_G.param_groups[0]["fused"]


def test_the_learning_rate_schedule():
    assert [lr_factor(e, 100, 100) for e in (1, 100)] == [1.0, 1.0]
    assert lr_factor(101, 100, 100) == pytest.approx(100 / 101)
    assert lr_factor(200, 100, 100) == pytest.approx(1 / 101)
    assert all(lr_factor(e, 100, 100, "constant") == 1.0 for e in (1, 150, 200))
    with pytest.raises(ValueError, match="linear, constant"):
        lr_factor(1, policy="step")
    with pytest.raises(ValueError):
        make_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), policy="cosine")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, n_epochs=2, n_epochs_decay=3)
    seen = []
    for _ in range(5):  # epochs 1..5, stepped at the end of each
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1, 1, 3 / 4, 2 / 4, 1 / 4])
    # a run that starts at epoch 4 (official --epoch_count 4) is already decaying
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    make_scheduler(opt, n_epochs=2, n_epochs_decay=3, epoch_count=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(2 / 4)


def test_fit_is_seeded_and_overfits_one_pair():
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    A, B = torch.stack([x, y, x * y])[None], torch.stack([y, -x, (x + y) / 2])[None]

    def run(steps):
        torch.manual_seed(3)
        G, D = UNetGenerator(num_downs=5, ngf=8), PatchDiscriminator(6, ndf=4, n_layers=2)
        opt_G, opt_D = make_optimizers(G, D, lr=1e-3)  # a faster rate than the paper's, for a short test
        calls = []
        history = fit(G, D, iter(lambda: (A, B), None), steps, opt_G, opt_D, GANLoss(),
                      callback=lambda step, losses: calls.append(step))
        return history, calls, G

    history, calls, G = run(40)
    assert calls == list(range(1, 41))
    assert set(history) == {"G_GAN", "G_L1", "D_real", "D_fake"} and all(len(v) == 40 for v in history.values())
    assert history["G_L1"][-1] < 0.5 * history["G_L1"][0]
    again, _, G_again = run(40)
    assert again == history
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G_again.state_dict().values()))


def test_pair_cache_is_the_dataset_jitter_on_tensors(tmp_path):
    root = make_pairs(tmp_path / "pairs", size=80)
    cache = PairCache(root, "train", direction="BtoA", load_size=72)
    dataset = PairedImageDataset(root, "train", direction="BtoA", load_size=72, crop_size=64)
    assert len(cache) == len(dataset) == 5 and cache.A.dtype == torch.uint8 and cache.A.shape == (5, 3, 72, 72)
    options = dict(preprocess="resize_and_crop", load_size=72, crop_size=64)
    for index, x, y, flip in [(0, 0, 0, False), (1, 8, 3, True), (4, 5, 8, False), (2, 8, 8, True)]:
        a_img, b_img, _, _ = dataset.load_sides(index)
        params = {"crop_pos": (x, y), "flip": flip}
        A, B = cache.crop([index], 64, [x], [y], [flip])
        assert torch.equal(A[0], to_tensor(transform_image(a_img, params, **options)))
        assert torch.equal(B[0], to_tensor(transform_image(b_img, params, **options)))
    # random jitter: both sides cropped and flipped alike (here A and B are the same picture)
    cache = PairCache(make_pairs(tmp_path / "same", size=80, same=True), "train", load_size=72)
    g = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(30):
        A, B = cache.batch([0, 1, 2], 64, generator=g)
        assert A.shape == (3, 3, 64, 64)
        assert torch.equal(A, B)
        corners.add(tuple(A[0, :, 0, 0].tolist()))
    assert len(corners) > 5  # the crops move
    A1, _ = cache.batch([3], 64, no_flip=True, generator=torch.Generator().manual_seed(5))
    A2, _ = cache.batch([3], 64, no_flip=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(A1, A2)


def test_translate_batch_is_the_papers_test_mode_and_changes_nothing():
    torch.manual_seed(0)
    G = UNetGenerator(num_downs=6, ngf=4)  # dropout after the decoder block of level 4
    G.eval()
    A, _ = pair(size=64, batch=3)
    buffers = [b.clone() for b in G.buffers()]
    rng = torch.get_rng_state()
    out1 = translate_batch(G, A, seed=1)
    assert not G.training  # its mode is put back
    assert all(torch.equal(a, b) for a, b in zip(buffers, G.buffers()))  # running statistics untouched
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(out1, translate_batch(G, A, seed=1))
    assert not torch.equal(out1, translate_batch(G, A, seed=2))  # dropout is on: another seed, other masks
    with torch.no_grad():
        G.train()
        torch.manual_seed(1)
        first = G(A[:1])
    assert torch.allclose(out1[:1], first, atol=1e-6)  # image 0 alone, batch statistics, dropout


def test_l1_and_psnr():
    real = torch.rand(2, 3, 8, 8) * 2 - 1
    fake = (real + 0.2).clamp(-1, 1)
    scores = l1_and_psnr(real.clone(), real)
    assert scores["L1"] == 0 and math.isinf(scores["PSNR"])
    shifted = torch.full((1, 3, 4, 4), 0.2), torch.zeros(1, 3, 4, 4)
    scores = l1_and_psnr(*shifted)
    assert scores["L1"] == pytest.approx(0.2) and scores["PSNR"] == pytest.approx(20.0)  # 0.1 on [0, 1]
    assert l1_and_psnr(fake, real)["L1"] <= 0.2 + 1e-6


def test_image_grid_puts_examples_in_rows_and_columns_side_by_side():
    a = torch.full((2, 3, 4, 5), -1.0)
    b = torch.full((2, 1, 4, 5), 1.0)  # one channel: grey
    grid = image_grid(a, b, a)
    assert grid.shape == (8, 15, 3) and grid.dtype == torch.uint8
    assert (grid[:, :5] == 0).all() and (grid[:, 5:10] == 255).all() and (grid[:, 10:] == 0).all()


def test_course_model_is_cached_by_config(tmp_path, monkeypatch):
    make_pairs(tmp_path / "data" / "tiny", counts=(("train", 3), ("val", 2)), size=136)
    monkeypatch.setenv("P2P_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    config = {**COURSE_CONFIG, "dataset": "tiny", "load_size": 136, "crop_size": 128, "ngf": 4, "ndf": 4,
              "steps": 4, "decay_steps": 2, "num_val": 2, "snapshots": 1, "snapshot_steps": [2]}
    path = course_model_path(config)
    assert path.parent == tmp_path / "cache" / "course_model"
    assert course_model_path({**config, "steps": 5}) != path  # another config, another file
    first = course_model(device="cpu", verbose=False, config=config)
    assert path.exists() and first["path"] == path
    assert [s["step"] for s in first["snapshots"]] == [0, 2, 4]
    assert all(len(v) == 4 for v in first["history"].values())
    assert set(first["val"]) == {"L1", "PSNR"} and first["G"].training
    assert list(path.parent.iterdir()) == [path]  # written atomically: no temporary file left

    import p2p_lib.train as train_module
    monkeypatch.setattr(train_module, "train_course_model", lambda *a, **k: pytest.fail("should load the cache"))
    again = course_model(device="cpu", verbose=False, config=config)
    assert all(torch.equal(a, b) for a, b in zip(first["G"].state_dict().values(), again["G"].state_dict().values()))
    assert again["history"] == first["history"] and again["val"] == first["val"] and again["config"] == config
    # the cache file is a generator checkpoint: p2p translate / load_generator read it
    G, options = load_generator(path)
    assert options["netG"] == "unet_128" and options["ngf"] == 4
    monkeypatch.undo()
    monkeypatch.setenv("P2P_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("P2P_CACHE", str(tmp_path / "cache"))
    # a damaged cache is trained again, and the result is the same (seeded)
    path.write_bytes(path.read_bytes()[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third = course_model(device="cpu", verbose=False, config=config)
    assert any("cannot be used" in str(w.message) for w in caught)
    assert all(torch.equal(a, b) for a, b in zip(first["G"].state_dict().values(), third["G"].state_dict().values()))


def test_val_tensors_use_the_official_test_settings(tmp_path):
    root = make_pairs(tmp_path / "pairs", size=80)
    A, B = val_tensors(root, "AtoB", size=64, count=2)
    assert A.shape == B.shape == (2, 3, 64, 64)
    img = Image.open(root / "val" / "0.png").convert("RGB")
    left = img.crop((0, 0, 80, 80)).resize((64, 64), Image.Resampling.BICUBIC)
    assert torch.equal(A[0], to_tensor(left))  # resized whole: no crop, no flip
