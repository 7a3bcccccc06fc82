"""Lesson 06's training pieces (p2p_lib.train): the step against a hand-written reference, the schedule,
the loop, the tensor cache, validation, and the cached course model."""
import copy
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imagefactory import aligned_pairs
from p2p_lib.checkpoint import load_generator
from p2p_lib.data import PairedImageDataset, to_tensor, transform_image
from p2p_lib.losses import GANLoss
from p2p_lib.patchgan import PatchDiscriminator
from p2p_lib.train import (COURSE_CONFIG, Hooks, SeededPairs, TrainingDiverged, TrainingRun, build_training,
                           course_model, course_model_path, epoch_batches, epoch_keys, fit, image_grid, l1_and_psnr,
                           lr_factor, make_optimizers, make_scheduler, pick_device, set_requires_grad,
                           steps_per_epoch, TRAINING_MODULES, train_step, training_code_digest, translate_batch,
                           update_D, update_G, val_tensors)
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
    with monkeypatch.context() as two_gpus:  # named: taken as given, if the machine has it
        two_gpus.setattr(torch.cuda, "is_available", lambda: True)
        two_gpus.setattr(torch.cuda, "device_count", lambda: 2)
        assert pick_device("cuda:1") == torch.device("cuda:1")
        with pytest.raises(ValueError, match=r"'cuda:2': this machine has 2 GPU\(s\): cuda:0 to cuda:1"):
            pick_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda'"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        pick_device("gpu")
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


def test_update_d_and_update_g_each_move_only_their_network_and_make_up_train_step():
    G, D = tiny_nets(dropout=False)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    (opt_G, opt_D), (opt_G2, opt_D2) = make_optimizers(G, D), make_optimizers(G2, D2)
    A, B = pair()
    # weights only: a forward pass in train mode also moves BatchNorm's running statistics
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in (("G", G2), ("D", D2))}

    def unchanged(net, name):
        return all(torch.equal(a, b) for a, b in zip(net.parameters(), before[name]))

    fake_B = G2(A)  # once, as train_step does: both halves go through the same fake_B
    update_D(D2, opt_D2, GANLoss(), A, B, fake_B)
    assert unchanged(G2, "G") and not unchanged(D2, "D")
    assert not any(p.requires_grad for p in D2.parameters())  # left frozen for G's half
    before["D"] = [p.detach().clone() for p in D2.parameters()]
    update_G(D2, opt_G2, GANLoss(), A, B, fake_B, lambda_L1=100.0)
    assert unchanged(D2, "D") and not unchanged(G2, "G")
    assert all(p.requires_grad for p in D2.parameters())
    # the two halves in order are train_step, to the bit
    train_step(G, D, opt_G, opt_D, A, B, GANLoss(), lambda_L1=100.0)
    for ours, halves in ((G, G2), (D, D2)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), halves.state_dict().values()))


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


def test_mixed_precision_step_really_runs_in_bfloat16_on_the_cpu():
    G, D = tiny_nets()
    opt_G, opt_D = make_optimizers(G, D)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for m in G.modules()
             if isinstance(m, torch.nn.Conv2d)]
    losses = train_step(G, D, opt_G, opt_D, *pair(), GANLoss(), amp_dtype=torch.bfloat16)
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)  # autocast is on: the activations are bf16
    seen.clear()
    train_step(G, D, opt_G, opt_D, *pair(), GANLoss())
    assert seen and all(dtype == torch.float32 for dtype in seen)  # and off by default
    for h in hooks:
        h.remove()
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
    with pytest.raises(ValueError, match="lr_policy must be one of linear, constant; got 'cosine'"):
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


class Recorder(Hooks):
    def __init__(self, stop_at=None):
        self.steps, self.epochs, self.l1, self.stop_at = [], [], [], stop_at

    def after_step(self, run, losses):
        self.steps.append((run.epoch, run.epoch_iter, run.step))
        self.l1.append(losses["G_L1"].item())
        return run.step == self.stop_at

    def after_epoch(self, run, epoch):
        self.epochs.append((epoch, run.epoch, run.epoch_iter, run.opt_G.param_groups[0]["lr"]))


def tiny_run(seed=3, lr=1e-3):
    torch.manual_seed(seed)
    G, D = UNetGenerator(num_downs=5, ngf=8), PatchDiscriminator(6, ndf=4, n_layers=2)
    opt_G, opt_D = make_optimizers(G, D, lr=lr)  # a faster rate than the paper's, for a short test
    return TrainingRun(G, D, opt_G, opt_D, [make_scheduler(o, 20, 20) for o in (opt_G, opt_D)], GANLoss())


def test_fit_is_seeded_steps_the_schedule_per_epoch_and_overfits_one_pair(tmp_path):
    one = SeededPairs(PairedImageDataset(make_pairs(tmp_path / "one", counts=(("train", 1),), size=32), "train",
                                         load_size=32, crop_size=32, no_flip=True))
    run, hooks = tiny_run(), Recorder()
    assert fit(run, one, n_epochs=20, n_epochs_decay=20, hooks=[hooks]) == "done"
    assert [s[2] for s in hooks.steps] == list(range(1, 41)) and run.step == 40 and run.epoch == 41
    assert hooks.epochs[0] == (1, 2, 0, 1e-3)  # after epoch 1 the run stands at epoch 2, iteration 0
    assert hooks.epochs[20][3] == pytest.approx(1e-3 * 19 / 21)  # lr for epoch 22: the linear decay, per epoch
    assert hooks.l1[-1] < 0.7 * hooks.l1[0]  # it learns the pair
    again = tiny_run()
    fit(again, one, n_epochs=20, n_epochs_decay=20)
    assert all(torch.equal(a, b) for a, b in zip(run.G.state_dict().values(), again.G.state_dict().values()))


def test_fit_stops_when_asked_at_max_steps_and_on_nan(tmp_path):
    pairs = SeededPairs(PairedImageDataset(make_pairs(tmp_path / "p", size=40), "train", load_size=40, crop_size=32))
    run, hooks = tiny_run(), Recorder(stop_at=3)
    assert fit(run, pairs, 2, 2, hooks=[hooks]) == "stopped" and run.step == 3
    assert fit(run, pairs, 2, 2, max_steps=7) == "max_steps" and (run.step, run.epoch, run.epoch_iter) == (7, 2, 2)
    run = tiny_run(lr=1e30)  # D's first update makes G's adversarial loss infinite
    with pytest.raises(TrainingDiverged, match="iteration 1"):
        fit(run, pairs, 2, 2)


def test_seeded_pairs_and_epoch_batches(tmp_path):
    pairs = SeededPairs(PairedImageDataset(make_pairs(tmp_path / "p", counts=(("train", 7),), size=48), "train",
                                           load_size=48, crop_size=32), seed=5)
    rng = torch.get_rng_state()
    assert torch.equal(pairs[(2, 4)]["A"], pairs[(2, 4)]["A"])  # the jitter depends on (seed, epoch, index) only
    assert torch.equal(rng, torch.get_rng_state())  # and draws nothing from the global generator
    assert any(not torch.equal(pairs[(e, 4)]["A"], pairs[(2, 4)]["A"]) for e in (3, 4, 5))
    order = [i for _, i in epoch_keys(pairs, 1)]
    assert sorted(order) == list(range(7)) and order != [i for _, i in epoch_keys(pairs, 2)]
    shards = [[i for _, i in epoch_keys(pairs, 1, rank=r, world=2)] for r in (0, 1)]
    assert set(shards[0] + shards[1]) == set(range(7)) and len(shards[0]) == len(shards[1]) == 4  # padded to 8
    assert len(set(shards[0]) & set(shards[1])) <= 1  # disjoint but for the one pair repeated as padding
    batches = list(epoch_batches(pairs, 1, batch_size=3))
    assert [b[0].shape[0] for b in batches] == [3, 3, 1] and steps_per_epoch(pairs, 3) == 3
    skipped = list(epoch_batches(pairs, 1, batch_size=3, skip_batches=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[1:], skipped))  # resuming skips what was done
    A, _ = next(epoch_batches(pairs, 1, channels_last=True))
    assert A.is_contiguous(memory_format=torch.channels_last)


def test_build_training_is_seeded_and_follows_the_options():
    options = {"netG": "unet_128", "ngf": 4, "ndf": 4, "lr": 1e-3, "beta1": 0.9, "n_epochs": 1, "n_epochs_decay": 1,
               "seed": 7}
    a, b = build_training(options, "cpu"), build_training(options, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.G.state_dict().values(), b.G.state_dict().values()))
    assert a.opt_G.param_groups[0]["betas"] == (0.9, 0.999) and a.opt_D.param_groups[0]["lr"] == 1e-3
    assert a.G.num_downs == 7 and a.epoch == 1 and a.step == 0
    c = build_training({**options, "seed": 8}, "cpu")
    assert not torch.equal(next(iter(a.G.parameters())), next(iter(c.G.parameters())))


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
    assert scores["L1"] == pytest.approx(0.1) and scores["PSNR"] == pytest.approx(20.0)  # 0.2 on [-1, 1] is 0.1 on [0, 1]
    assert l1_and_psnr(fake, real)["L1"] <= 0.1 + 1e-6


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
              "n_epochs": 1, "n_epochs_decay": 1, "num_val": 2, "snapshots": 1, "snapshot_steps": [2]}
    path = course_model_path(config)
    assert path.parent == tmp_path / "cache" / "course_model"
    assert course_model_path({**config, "n_epochs": 2}) != path  # another config, another file
    import p2p_lib
    import p2p_lib.train as train_module
    package = Path(p2p_lib.__file__).parent
    copy = tmp_path / "p2p_lib_copy"
    copy.mkdir()
    for module in TRAINING_MODULES:
        (copy / f"{module}.py").write_bytes((package / f"{module}.py").read_bytes())
    assert training_code_digest(copy) == training_code_digest()
    for module in TRAINING_MODULES:  # the training code is part of the key: a changed step never hands back a stale model
        changed = copy / f"{module}.py"
        original = changed.read_bytes()
        changed.write_bytes(original + b"\n# changed\n")
        assert training_code_digest(copy) != training_code_digest(), module
        changed.write_bytes(original)
    with monkeypatch.context() as patch:
        (copy / "train.py").write_bytes(b"# another trainer\n")
        patch.setattr(train_module, "training_code_digest", lambda: training_code_digest(copy))
        assert course_model_path(config) != path
    assert course_model_path(config) == path
    first = course_model(device="cpu", verbose=False, config=config)
    assert path.exists() and first["path"] == path
    assert [s["step"] for s in first["snapshots"]] == [0, 2, 6] and first["steps"] == 6  # 3 pairs, 2 epochs
    # each snapshot scores the val pairs: the validation curve starts at val_before and ends at val
    assert first["snapshots"][0]["L1"] == pytest.approx(first["val_before"]["L1"])
    assert first["snapshots"][-1]["L1"] == pytest.approx(first["val"]["L1"])
    assert first["snapshots"][1]["L1"] != first["snapshots"][0]["L1"]
    assert all(len(v) == 6 for v in first["history"].values())
    assert set(first["val"]) == {"L1", "PSNR"} and first["G"].training
    assert list(path.parent.iterdir()) == [path]  # written atomically: no temporary file left

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


def test_snapshots_score_the_val_pairs_and_never_change_the_run(tmp_path, monkeypatch):
    from p2p_lib.train import train_course_model
    make_pairs(tmp_path / "data" / "tiny", counts=(("train", 3), ("val", 2)), size=136)
    monkeypatch.setenv("P2P_DATA", str(tmp_path / "data"))
    config = {**COURSE_CONFIG, "dataset": "tiny", "load_size": 136, "crop_size": 128, "ngf": 4, "ndf": 4,
              "n_epochs": 1, "n_epochs_decay": 1, "num_val": 2, "snapshots": 1}
    watched = train_course_model({**config, "snapshot_steps": [1, 2, 3, 4, 5]}, "cpu", verbose=False)
    unwatched = train_course_model({**config, "snapshot_steps": []}, "cpu", verbose=False)
    assert [s["step"] for s in watched["snapshots"]] == [0, 1, 2, 3, 4, 5, 6]
    assert all(0 < s["L1"] < 1 and math.isfinite(s["PSNR"]) for s in watched["snapshots"])
    assert all(torch.equal(a, b) for a, b in zip(watched["G"].state_dict().values(), unwatched["G"].state_dict().values()))
    assert watched["history"] == unwatched["history"]
