"""DM-SR networks: timestep estimator (Eq. 10), timestep-aware encoder, checkpoint format."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL

from methods.dmsr.checkpoint import (
    CONFIG_FILE,
    PAPER_PROMPT,
    WEIGHTS_FILE,
    DMSRConfig,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from methods.dmsr.encoder import TimestepAwareEncoder
from methods.dmsr.estimator import TimestepEstimator, discretize_timestep
from srbench.interface import SRBenchError, WeightsMissing


def _tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        layers_per_block=1,
    ).eval()


# ---- estimator ---------------------------------------------------------------------------------
def test_estimator_full_size_is_vgg19_features() -> None:
    est = TimestepEstimator()
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in est.features)
    n_pool = sum(isinstance(m, torch.nn.MaxPool2d) for m in est.features)
    assert (n_conv, n_pool) == (16, 5)  # conv1_x … conv5_x of VGG19
    assert sum(p.numel() for p in est.features.parameters()) == 20_024_384
    assert est.head.in_features == 512 and est.head.out_features == 500


def test_estimator_eq10_soft_argmax_and_range() -> None:
    torch.manual_seed(0)
    est = TimestepEstimator(width_div=16).eval()
    img = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        logits = est.logits(img)
        t_hat = est(img)
    assert logits.shape == (3, 500) and t_hat.shape == (3,) and t_hat.dtype == torch.float32
    ref = (torch.softmax(logits.double(), -1) * torch.arange(500, dtype=torch.float64)).sum(-1)
    torch.testing.assert_close(t_hat.double(), ref, rtol=0, atol=1e-3)
    # extreme logits: t̂ stays in [0, 499] and a one-hot distribution gives its bin
    for k in (0, 137, 499):
        one_hot = torch.full((1, 500), -1e4)
        one_hot[0, k] = 1e4
        assert est.expectation(one_hot).item() == pytest.approx(k, abs=1e-3)
    big = torch.randn(64, 500) * 100
    t = est.expectation(big)
    assert (t >= 0).all() and (t <= 499).all()


def test_estimator_is_deterministic_and_batch_independent() -> None:
    torch.manual_seed(1)
    est = TimestepEstimator(width_div=16).eval()
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b, single = est(img), est(img), est(img[1:])
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:], single, rtol=1e-5, atol=1e-4)


def test_discretize_rounds_half_up_and_clamps() -> None:
    t = torch.tensor([-3.0, 0.0, 0.49, 0.5, 2.5, 3.5, 498.6, 499.0, 620.0])
    assert discretize_timestep(t).tolist() == [0, 0, 0, 1, 3, 4, 499, 499, 499]
    assert discretize_timestep(t, t_max=250).max().item() == 250
    assert discretize_timestep(t).dtype == torch.long


def test_estimator_imagenet_init_from_torch_hub_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    est = TimestepEstimator()
    with pytest.raises(WeightsMissing, match=r"vgg19-dcbb9e9d\.pth"):
        est.load_imagenet_vgg19()
    # a stand-in file in torchvision's own layout (features.* keys; the classifier is ignored)
    ref = TimestepEstimator().features  # a different random init
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        {f"features.{k}": v for k, v in ref.state_dict().items()},
        tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth",
    )
    est.load_imagenet_vgg19()
    assert torch.equal(est.features[0].weight, ref[0].weight)
    assert torch.equal(est.features[34].weight, ref[34].weight)
    with pytest.raises(ValueError):
        TimestepEstimator(width_div=16).load_imagenet_vgg19()


# ---- encoder -----------------------------------------------------------------------------------
def test_untrained_encoder_equals_vae_encoder() -> None:
    vae = _tiny_vae()
    enc = TimestepAwareEncoder.from_vae(vae).eval()
    assert [lin.out_features for lin in enc.t_embed] == [32, 64]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = vae.encode(x).latent_dist
        for t in (torch.tensor([0, 0]), torch.tensor([17, 499]), torch.tensor([250.7, 3.2])):
            moments = enc(x, t)
            assert moments.shape == (2, 8, 32, 32)
            torch.testing.assert_close(moments[:, :4], ref.mean, rtol=0, atol=1e-6)
            torch.testing.assert_close(moments[:, 4:], ref.logvar, rtol=0, atol=1e-6)
            torch.testing.assert_close(enc.encode_mean(x, t), ref.mean, rtol=0, atol=1e-6)


def test_sd_vae_encoder_gets_four_embeddings_128_256_512_512() -> None:
    cfg = TimestepAwareEncoder.config_from_vae(
        {
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "layers_per_block": 2,
            "latent_channels": 4,
        }
    )
    with torch.device("meta"):
        enc = TimestepAwareEncoder(**cfg)
    assert [lin.out_features for lin in enc.t_embed] == [128, 256, 512, 512]
    n_body = sum(p.numel() for n, p in enc.named_parameters() if not n.startswith("t_embed"))
    assert n_body == 34_163_664  # VAE encoder + quant_conv (the paper's "34.16 M", Tab. 2)


def test_encoder_timestep_injection_changes_output() -> None:
    vae = _tiny_vae()
    enc = TimestepAwareEncoder.from_vae(vae).eval()
    torch.manual_seed(3)
    for lin in enc.t_embed:
        torch.nn.init.normal_(lin.weight, std=0.5)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = enc(x, torch.tensor([10, 10]))
        b = enc(x, torch.tensor([400, 400]))
        c = enc(x, torch.tensor([10, 400]))
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(c[0], a[0])
    torch.testing.assert_close(c[1], b[1])


def test_encoder_gradient_checkpointing_matches() -> None:
    enc = TimestepAwareEncoder.from_vae(_tiny_vae())
    for lin in enc.t_embed:
        torch.nn.init.normal_(lin.weight, std=0.1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    t = torch.tensor([120])
    enc(x, t).square().mean().backward()
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.gradient_checkpointing = True
    enc(x, t).square().mean().backward()
    for g, p in zip(grads, enc.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


# ---- checkpoint --------------------------------------------------------------------------------
def _trained_like_pair(seed: int = 0) -> tuple[TimestepEstimator, TimestepAwareEncoder]:
    torch.manual_seed(seed)
    est = TimestepEstimator(width_div=16)
    enc = TimestepAwareEncoder.from_vae(_tiny_vae(seed))
    for lin in enc.t_embed:
        torch.nn.init.normal_(lin.weight, std=0.1)
    return est, enc


def test_checkpoint_round_trip(tmp_path) -> None:
    est, enc = _trained_like_pair()
    cfg = DMSRConfig(base_model="/some/tiny-sd", training={"iterations": {"encoder": 2}, "seed": 0})
    out = save_checkpoint(tmp_path / "ckpt", estimator=est, encoder=enc, config=cfg)
    assert {p.name for p in out.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE}
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["format"] == "srbench-dmsr" and meta["format_version"] == 1
    assert meta["estimator"] == {"num_bins": 500, "width_div": 16}
    assert meta["encoder"]["block_out_channels"] == [32, 64] and meta["encoder"]["temb_dim"] == 256
    assert meta["prompt"] == PAPER_PROMPT and meta["real"] is False and meta["t_max"] == 499

    ck = load_checkpoint(out)
    assert ck.config.base_model == "/some/tiny-sd" and ck.config.training["seed"] == 0
    for a, b in ((est, ck.estimator), (enc, ck.encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(est.eval()(x), ck.estimator(x))
        assert torch.equal(
            enc.eval()(x * 2 - 1, torch.tensor([42])), ck.encoder(x * 2 - 1, torch.tensor([42]))
        )


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(WeightsMissing, match="srbench train dmsr"):
        load_checkpoint(tmp_path / "nowhere")
    est, enc = _trained_like_pair()
    out = save_checkpoint(tmp_path / "ckpt", estimator=est, encoder=enc, config=DMSRConfig())
    meta = json.loads((out / CONFIG_FILE).read_text())

    bad = dict(meta, format="something-else")
    (out / CONFIG_FILE).write_text(json.dumps(bad))
    with pytest.raises(SRBenchError, match="not a DM-SR checkpoint"):
        read_config(out)

    bad = dict(meta, surprise=1)
    (out / CONFIG_FILE).write_text(json.dumps(bad))
    with pytest.raises(SRBenchError, match="unknown keys"):
        read_config(out)

    bad = dict(meta, estimator={"num_bins": 500, "width_div": 8})  # weights were saved at width_div 16
    (out / CONFIG_FILE).write_text(json.dumps(bad))
    with pytest.raises(SRBenchError, match="estimator weights do not match"):
        load_checkpoint(out)

    (out / CONFIG_FILE).write_text(json.dumps(meta))
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsMissing, match="missing"):
        load_checkpoint(out)
