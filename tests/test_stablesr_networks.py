"""StableSR network pieces on tiny random weights: time-aware encoder, SFT hooks, CFW decoder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

from methods.stablesr.cfw import CFWAutoencoder, FusionBlock
from methods.stablesr.convert import merge_legacy_qkv
from methods.stablesr.encoder import EncoderConfig, TimeAwareEncoder
from methods.stablesr.sft import SFTLayer, SFTUNet, sft_targets
from methods.stablesr.testing import TINY_ENCODER, randomize_, tiny_cfw, tiny_sft_unet

# ---- time-aware encoder -----------------------------------------------------------------------------


def test_encoder_features_keyed_by_width() -> None:
    enc = randomize_(TimeAwareEncoder(TINY_ENCODER))
    x = torch.randn(2, 4, 16, 16)
    feats = enc(x, torch.tensor([999, 10]))
    assert sorted(feats, key=int) == ["4", "8", "16"]
    for k, v in feats.items():
        assert v.shape == (2, TINY_ENCODER.out_channels, int(k), int(k))
    # deterministic, and time-aware: a different timestep changes every feature map
    again = enc(x, torch.tensor([999, 10]))
    other = enc(x, torch.tensor([500, 500]))
    for k in feats:
        assert torch.equal(feats[k], again[k])
        assert not torch.allclose(feats[k], other[k], atol=1e-4)


def test_encoder_timestep_embedding_is_cos_first() -> None:
    enc = TimeAwareEncoder(TINY_ENCODER)
    t = torch.tensor([3.0, 700.0])
    e = enc.time_proj(t)
    half = TINY_ENCODER.model_channels // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
    ref = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(e, ref, atol=1e-5, rtol=1e-5)


def _legacy_attention(x: torch.Tensor, attn: torch.nn.Module, heads: int) -> torch.Tensor:
    """ldm ``AttentionBlock`` + ``QKVAttentionLegacy`` written from its definition (per-head q,k,v rows)."""
    b, c, h, w = x.shape
    qkv_w = merge_legacy_qkv(attn.to_q.weight, attn.to_k.weight, attn.to_v.weight, heads)
    qkv_b = merge_legacy_qkv(attn.to_q.bias, attn.to_k.bias, attn.to_v.bias, heads)
    xs = x.reshape(b, c, h * w)
    normed = F.group_norm(xs, attn.group_norm.num_groups, attn.group_norm.weight, attn.group_norm.bias, 1e-5)
    qkv = torch.einsum("oc,bct->bot", qkv_w, normed) + qkv_b[None, :, None]
    d = c // heads
    q, k, v = qkv.reshape(b * heads, 3 * d, h * w).split(d, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
    out = torch.einsum("oc,bct->bot", attn.to_out[0].weight, a) + attn.to_out[0].bias[None, :, None]
    return (xs + out).reshape(b, c, h, w)


def test_encoder_attention_matches_legacy_qkv_layout() -> None:
    enc = randomize_(TimeAwareEncoder(TINY_ENCODER), seed=3)
    attn = enc.down_blocks[0].attentions[0]
    x = torch.randn(2, TINY_ENCODER.model_channels, 8, 8)
    with torch.no_grad():
        ref = _legacy_attention(x, attn, TINY_ENCODER.num_heads)
        out = attn(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_default_encoder_matches_paper_table7() -> None:
    cfg = EncoderConfig()
    assert (cfg.model_channels, cfg.out_channels, cfg.channel_mult, cfg.num_heads) == (
        256,
        256,
        (1, 1, 2, 2),
        4,
    )
    assert set(cfg.attention_resolutions) == {4, 2, 1} and cfg.num_res_blocks == 2 and cfg.in_channels == 4


# ---- SD-2.1-sized structure (built on the meta device: no memory, no weights) -------------------


def _sd21_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def _sd_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    )


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_sd21_has_22_sft_layers_and_paper_parameter_counts() -> None:
    with torch.device("meta"):
        sft_unet = SFTUNet(_sd21_unet())
        enc = TimeAwareEncoder()
        cfw = CFWAutoencoder(_sd_vae())
    assert len(sft_unet.targets) == 22
    widths = [sft_unet.sft[k].mlp_gamma.out_channels for k in sft_unet.sft]
    assert widths == [320, 320, 640, 640, 1280, 1280, 1280, 1280] + [1280] * 8 + [640] * 3 + [320] * 3
    n_enc, n_sft, n_cfw = _count(enc), _count(sft_unet.sft), _count(cfw.fusion_layers)
    # paper §4.1 / App. A: encoder + SFT ~105 M; Table 5: 149.91 M trainable in total (with CFW)
    assert round((n_enc + n_sft) / 1e6, 2) == 105.51
    assert round((n_enc + n_sft + n_cfw) / 1e6, 2) == 149.91
    assert cfw.levels == [1, 2]
    assert [cfw.fusion_layers[str(i)].encode_enc_3.conv2.out_channels for i in (1, 2)] == [256, 512]


# ---- SFT --------------------------------------------------------------------------------------------


def test_sft_modulates_every_resblock_after_conv2_before_skip() -> None:
    sft_unet, enc = tiny_sft_unet()
    unet = sft_unet.unet
    assert len(sft_targets(unet)) == 5 * 2 + 2  # 2 levels: 2 down + 3 up resnets per level, 2 in the middle
    x, ctx, t = torch.randn(1, 4, 16, 16), torch.randn(1, 8, 32), torch.tensor([321])
    feats = enc(torch.randn(1, 4, 16, 16), t)
    captured: dict[str, tuple] = {}
    path = "up_blocks.1.resnets.2"  # has a conv shortcut (concatenated skip input)
    block = dict(unet.named_modules())[path]
    hook = block.register_forward_hook(lambda m, a, o: captured.update(io=(a[0], a[1], o)))
    try:
        with torch.no_grad():
            sft_unet(x, t, ctx, feats)
    finally:
        hook.remove()
    inp, temb, out = captured["io"]
    with torch.no_grad():  # ResnetBlock2D written out, with the official SFT placement
        h = block.conv1(F.silu(block.norm1(inp)))
        h = h + block.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = block.conv2(F.silu(block.norm2(h)))
        layer: SFTLayer = sft_unet.sft["up_blocks_1_resnets_2"]
        norm = F.group_norm(h, 32, layer.param_free_norm.weight, layer.param_free_norm.bias, 1e-5)
        a = F.relu(layer.mlp_shared[0](feats[str(h.shape[-1])]))
        h = norm * (1 + layer.mlp_gamma(a)) + layer.mlp_beta(a)
        ref = block.conv_shortcut(inp) + h
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sft_hooks_only_live_during_the_call() -> None:
    sft_unet, enc = tiny_sft_unet()
    x, ctx, t = torch.randn(1, 4, 16, 16), torch.randn(1, 8, 32), torch.tensor([10])
    with torch.no_grad():
        plain = sft_unet.unet(x, t, encoder_hidden_states=ctx).sample
        modulated = sft_unet(x, t, ctx, enc(torch.randn(1, 4, 16, 16), t))
        plain_again = sft_unet.unet(x, t, encoder_hidden_states=ctx).sample
    assert modulated.shape == plain.shape
    assert not torch.allclose(modulated, plain, atol=1e-3)
    assert torch.equal(plain, plain_again)


@pytest.mark.parametrize("channels_last", [False, True])
def test_sft_convs_get_the_features_in_their_weights_memory_format(channels_last: bool) -> None:
    # diffusers' attention hands the encoder's features over channels-last: a conv whose weight is in the
    # other format reorders its weight on every call, so the features are converted once per UNet call
    sft_unet, enc = tiny_sft_unet()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    other = torch.contiguous_format if channels_last else torch.channels_last
    sft_unet.to(memory_format=fmt)
    assert sft_unet.memory_format() == fmt
    x, ctx, t = torch.randn(1, 4, 16, 16), torch.randn(1, 8, 32), torch.tensor([321])
    with torch.no_grad():
        feats = {k: v.contiguous(memory_format=other) for k, v in enc(torch.randn(1, 4, 16, 16), t).items()}
    seen: list[torch.Tensor] = []
    hooks = [
        layer.mlp_shared[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        for layer in sft_unet.sft.values()
    ]
    try:
        with torch.no_grad():
            out = sft_unet(x, t, ctx, feats)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == len(sft_unet.sft)
    assert all(a.is_contiguous(memory_format=fmt) for a in seen)
    with torch.no_grad():  # the same numbers as features given in the weights' format
        same = sft_unet(x, t, ctx, {k: v.contiguous(memory_format=fmt) for k, v in feats.items()})
    torch.testing.assert_close(out, same, atol=1e-5, rtol=1e-5)


def test_sft_missing_width_is_a_clear_error() -> None:
    sft_unet, enc = tiny_sft_unet()
    feats = enc(torch.randn(1, 4, 16, 16), torch.tensor([1]))
    del feats["8"]
    with pytest.raises(RuntimeError, match="no encoder feature of width 8"), torch.no_grad():
        sft_unet(torch.randn(1, 4, 16, 16), torch.tensor([1]), torch.randn(1, 8, 32), feats)


# ---- CFW --------------------------------------------------------------------------------------------


def test_cfw_w0_is_exactly_the_plain_decoder() -> None:
    cfw = tiny_cfw()
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        with cfw.capture_features() as feats:
            cfw.vae.encode(img)
        plain = cfw.vae.decode(z).sample
        with cfw.fused(feats, 0.0):
            w0 = cfw.vae.decode(z).sample
        with cfw.fused(feats, 0.5):
            w05 = cfw.vae.decode(z).sample
        plain_after = cfw.vae.decode(z).sample
    assert torch.equal(w0, plain)
    assert not torch.allclose(w05, plain, atol=1e-4)
    assert torch.equal(plain_after, plain)  # hooks removed on exit


def test_cfw_features_come_from_inner_encoder_levels() -> None:
    cfw = tiny_cfw()
    assert cfw.levels == [1, 2]  # 4-level VAE (as SD): levels 1 and 2, neither outermost nor deepest
    with torch.no_grad(), cfw.capture_features() as feats:
        cfw.vae.encode(torch.rand(2, 3, 32, 40))
    assert sorted(feats) == [1, 2]
    # ResBlock outputs of levels 1 and 2, before their downsamples (H/2 and H/4)
    assert feats[1].shape == (2, 32, 16, 20) and feats[2].shape == (2, 32, 8, 10)


def test_fusion_block_is_residual_and_linear_in_w() -> None:
    block = randomize_(FusionBlock(32, num_rrdb=1), seed=5)
    enc, dec = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        r1, r05, r0 = block(enc, dec, 1.0) - dec, block(enc, dec, 0.5) - dec, block(enc, dec, 0.0)
    torch.testing.assert_close(r05 * 2, r1)
    assert torch.equal(r0, dec)


def test_cfw_needs_features_when_w_positive() -> None:
    cfw = tiny_cfw()
    with pytest.raises(ValueError, match="needs encoder features"), cfw.fused(None, 0.5):
        pass
    with torch.no_grad(), cfw.capture_features() as feats:
        cfw.vae.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="does not match"), torch.no_grad(), cfw.fused(feats, 0.5):
        cfw.vae.decode(torch.randn(1, 4, 2, 2))
