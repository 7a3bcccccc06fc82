"""The switches lesson 08's ablations need: the encoder-decoder generator (lesson 02's U-Net without skips),
an unconditional D and L1 alone (lesson 06's train_step, `p2p train --adversarial`)."""
import json

import pytest
import torch

import p2p_lib.train as lesson
from p2p_lib.networks import NetworkOptionError, define_D, define_G
from test_engine import data, parse, tiny  # noqa: F401  (data: the fixture the last test uses)
import p2p_lib.engine as engine

SMALL = {"netG": "unet_128", "ngf": 4, "ndf": 4, "netD": "basic"}


def batch(seed=0, size=128):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1, torch.rand(1, 3, size, size, generator=g) * 2 - 1


def test_the_encoder_decoder_is_the_u_net_without_its_skips():
    torch.manual_seed(0)
    unet, plain = define_G(SMALL), define_G({**SMALL, "netG": "encoder_decoder_128"})
    assert unet.skips and not plain.skips
    # same encoder; the decoder blocks read half the channels (no concatenated skip), the innermost alike
    assert [b[0].in_channels for b in plain.encoder] == [b[0].in_channels for b in unet.encoder]
    assert [b[0].in_channels * (1 if i == 0 else 2) for i, b in enumerate(plain.decoder)] == \
           [b[0].in_channels for b in unet.decoder]
    A, other = batch(0)[0], batch(1)[0]
    assert plain(A).shape == (1, 3, 128, 128)
    # Pin the 1x1 bottleneck code: without skips the output then no longer depends on the input at all;
    # with skips, the input's detail reaches the output around the bottleneck.
    pinned = torch.randn(1, 32, 1, 1)
    for G, depends in ((plain, False), (unet, True)):
        G.eval()  # no dropout, running statistics: the same input gives the same output
        handle = G.encoder[-1].register_forward_hook(lambda module, inputs, output: pinned)
        with torch.no_grad():
            differs = not torch.allclose(G(A), G(other))
        handle.remove()
        assert differs == depends


def test_an_unconditional_d_sees_the_image_alone_and_none_trains_g_on_l1_only():
    assert define_D(SMALL).model[0][0].in_channels == 6
    assert define_D({**SMALL, "adversarial": "gan"}).model[0][0].in_channels == 3
    with pytest.raises(NetworkOptionError, match="unknown adversarial 'both'"):
        define_D({**SMALL, "adversarial": "both"})
    A, B = batch()
    assert lesson.discriminator_condition(A, "gan").shape == (1, 0, 128, 128)
    with pytest.raises(ValueError, match="cgan, gan, none"):
        lesson.discriminator_condition(A, "pix")
    for adversarial in ("cgan", "gan", "none"):
        run = lesson.build_training({**SMALL, "adversarial": adversarial, "seed": 0}, device="cpu")
        assert run.adversarial == adversarial
        G0 = {k: v.clone() for k, v in run.G.state_dict().items()}
        D0 = {k: v.clone() for k, v in run.D.state_dict().items()}
        with torch.no_grad():
            l1 = (run.G(A) - B).abs().mean().item()  # train mode: BatchNorm's batch statistics, as in the step
        torch.manual_seed(1)
        losses = lesson.train_step(run.G, run.D, run.opt_G, run.opt_D, A, B, run.gan_loss, 100.0,
                                   adversarial=adversarial)
        assert any(not torch.equal(G0[k], v) for k, v in run.G.state_dict().items()), adversarial
        D_moved = any(not torch.equal(D0[k], v) for k, v in run.D.state_dict().items())
        assert D_moved == (adversarial != "none"), adversarial
        if adversarial == "none":
            assert [losses[k].item() for k in ("G_GAN", "D_real", "D_fake")] == [0.0, 0.0, 0.0]
        else:
            assert all(losses[k].item() > 0 for k in ("G_GAN", "D_real", "D_fake"))
        assert losses["G_L1"].item() == pytest.approx(100 * l1, rel=0.2)  # dropout draws differ; same scale


def test_p2p_train_takes_adversarial_and_the_encoder_decoder_and_resume_keeps_them(data, tmp_path):  # noqa: F811
    args = tiny(data, tmp_path / "ck", "--max_steps", "2", "--adversarial", "gan", name="gan")
    args[args.index("--netG") + 1] = "encoder_decoder_128"
    engine.train(parse(args))
    saved = json.loads((tmp_path / "ck" / "gan" / "opt.json").read_text())
    assert (saved["adversarial"], saved["netG"]) == ("gan", "encoder_decoder_128")
    state = torch.load(tmp_path / "ck" / "gan" / "latest_state.pt", weights_only=True)
    assert state["D"]["model.0.0.weight"].shape[1] == 3  # the unconditional D: 3 input channels
    with pytest.raises(SystemExit, match=r"--adversarial gan \(you gave cgan\)"):
        engine.train(parse(tiny(data, tmp_path / "ck", "--continue_train", "--adversarial", "cgan", name="gan")))
    with pytest.raises(SystemExit):
        parse(tiny(data, tmp_path / "ck", "--adversarial", "both"))
    fresh = parse(tiny(data, tmp_path / "ck"))
    assert fresh["adversarial"] == "cgan"  # the paper's, by default
