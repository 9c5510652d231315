"""StableSR checkpoint converter: safe Lightning unpickling, ldm ↔ diffusers key mapping, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from methods.stablesr.cfw import CFWAutoencoder
from methods.stablesr.convert import convert_cfw_checkpoint, convert_stablesr_checkpoint
from methods.stablesr.encoder import EncoderConfig, TimeAwareEncoder
from methods.stablesr.sft import SFTUNet
from methods.stablesr.testing import (
    cfw_state_dict,
    randomize_,
    stablesr_state_dict,
    tiny_cfw,
    tiny_sft_unet,
    tiny_vae,
)
from srbench.diffusion.checkpoints import load_lightning_checkpoint
from srbench.safe_load import WeightsFileRefused
from srbench.testing.lightning import write_lightning_checkpoint


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stablesr_ckpt_round_trip(tmp_path: Path) -> None:
    sft_unet, enc = tiny_sft_unet(seed=0)
    vae = randomize_(tiny_vae(), seed=9)
    ldm = stablesr_state_dict(sft_unet, enc, vae)  # + first_stage_model, cond_stage_model, schedule buffers
    # official names and shapes (ldm UNetModelDualcondV2 + EncoderUNetModelWT)
    c0, e0 = 32, 64  # tiny UNet level-0 width, tiny encoder model_channels
    assert ldm["model.diffusion_model.input_blocks.1.0.spade.mlp_shared.0.weight"].shape == (32, 32, 3, 3)
    assert ldm["model.diffusion_model.input_blocks.1.0.spade.mlp_gamma.weight"].shape == (c0, 32, 3, 3)
    assert "model.diffusion_model.middle_block.2.spade.param_free_norm.bias" in ldm
    assert (
        "model.diffusion_model.output_blocks.2.1.conv.weight" in ldm
    )  # upsampler after an attention-free level
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in ldm
    assert ldm["structcond_stage_model.input_blocks.1.1.qkv.weight"].shape == (3 * e0, e0, 1)
    assert ldm["structcond_stage_model.middle_block.1.proj_out.weight"].shape == (2 * e0, 2 * e0, 1)
    assert ldm["structcond_stage_model.time_embed.0.weight"].shape == (4 * e0, e0)
    assert "structcond_stage_model.fea_tran.2.skip_connection.weight" in ldm  # 128 -> 32 channels
    assert "structcond_stage_model.fea_tran.0.emb_layers.1.bias" in ldm
    ckpt = write_lightning_checkpoint(tmp_path / "stablesr_000117.ckpt", ldm, global_step=117)

    state, meta = load_lightning_checkpoint(ckpt)
    assert meta["global_step"] == 117
    _assert_same_state(state, ldm)
    conv = convert_stablesr_checkpoint(state, encoder_heads=enc.config.num_heads)
    assert conv.encoder_config == enc.config
    assert conv.vae is not None
    _assert_same_state(conv.vae, vae.state_dict())

    fresh_unet, fresh_enc = tiny_sft_unet(seed=7)
    fresh_unet.unet.load_state_dict(conv.unet, strict=True)
    fresh_unet.sft.load_state_dict(conv.sft, strict=True)
    fresh_enc.load_state_dict(conv.encoder, strict=True)
    _assert_same_state(fresh_unet.state_dict(), sft_unet.state_dict())
    _assert_same_state(fresh_enc.state_dict(), enc.state_dict())
    x, lr, ctx, t = (
        torch.randn(1, 4, 16, 16),
        torch.randn(1, 4, 16, 16),
        torch.randn(1, 8, 32),
        torch.tensor([999]),
    )
    with torch.no_grad():
        assert torch.equal(fresh_unet(x, t, ctx, fresh_enc(lr, t)), sft_unet(x, t, ctx, enc(lr, t)))


def test_cfw_ckpt_round_trip(tmp_path: Path) -> None:
    cfw = tiny_cfw(randomize_(tiny_vae(), seed=1))
    assert cfw.levels == [1, 2]
    ldm = cfw_state_dict(cfw)
    assert "decoder.fusion_layer_1.encode_enc_1.conv_out.weight" in ldm
    assert "decoder.fusion_layer_2.encode_enc_2.1.rdb3.conv5.weight" in ldm
    assert "decoder.fusion_layer_2.encode_enc_3.norm2.weight" in ldm
    assert ldm["decoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert "decoder.up.3.upsample.conv.weight" in ldm and "encoder.down.0.downsample.conv.weight" in ldm
    ckpt = write_lightning_checkpoint(tmp_path / "vqgan_cfw_00011.ckpt", ldm, global_step=11)

    state, _ = load_lightning_checkpoint(ckpt)
    vae_sd, fusion_sd = convert_cfw_checkpoint(state, num_levels=4)
    assert not any(k.startswith("loss.") for k in vae_sd)
    fresh = CFWAutoencoder(tiny_vae())
    fresh.vae.load_state_dict(vae_sd, strict=True)
    fresh.fusion_layers.load_state_dict(fusion_sd, strict=True)
    _assert_same_state(fresh.state_dict(), cfw.state_dict())


def test_full_size_official_key_layout() -> None:
    """SD-2.1 + default encoder on the meta device: the 22 official SPADE sites and encoder keys."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            block_out_channels=(320, 640, 1280, 1280),
        )
        sft_unet, enc = SFTUNet(unet), TimeAwareEncoder()
    ldm = stablesr_state_dict(sft_unet, enc)
    sites = {k.split(".spade.")[0].removeprefix("model.diffusion_model.") for k in ldm if ".spade." in k}
    expected = {f"input_blocks.{i}.0" for i in (1, 2, 4, 5, 7, 8, 10, 11)}
    expected |= {"middle_block.0", "middle_block.2"} | {f"output_blocks.{i}.0" for i in range(12)}
    assert sites == expected
    enc_keys = {
        k.removeprefix("structcond_stage_model.") for k in ldm if k.startswith("structcond_stage_model.")
    }
    assert {k.rsplit(".", 2)[0] for k in enc_keys if ".qkv." in k} == {
        f"input_blocks.{i}.1" for i in (1, 2, 4, 5, 7, 8)
    } | {"middle_block.1"}
    assert {k for k in enc_keys if ".op." in k} == {
        f"input_blocks.{i}.0.op.{p}" for i in (3, 6, 9) for p in ("weight", "bias")
    }
    assert (
        "fea_tran.3.skip_connection.weight" in enc_keys
        and "fea_tran.1.skip_connection.weight" not in enc_keys
    )
    # ... and back: the converter recovers the same diffusers names and the official encoder config
    conv = convert_stablesr_checkpoint(ldm)
    assert set(conv.unet) == set(unet.state_dict())
    assert set(conv.sft) == set(sft_unet.sft.state_dict())
    assert set(conv.encoder) == set(enc.state_dict())
    assert conv.encoder_config == EncoderConfig()
    with torch.device("meta"):
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
        )
        cfw = CFWAutoencoder(vae)
    vae_sd, fusion_sd = convert_cfw_checkpoint(cfw_state_dict(cfw), num_levels=4)
    assert set(vae_sd) == set(vae.state_dict()) and set(fusion_sd) == set(cfw.fusion_layers.state_dict())


class _Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['SRBENCH_EVIL_MARKER'], 'w').close()",))


def test_loader_refuses_code_in_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SRBENCH_EVIL_MARKER", str(marker))
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, path)
    expected = r"evil\.ckpt: refusing to load global 'builtins\.exec'"
    with pytest.raises(WeightsFileRefused, match=expected) as e:
        load_lightning_checkpoint(path)
    assert not marker.exists() and "weights_only" not in str(e.value)


def test_loader_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_lightning_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}, "global_step": 3}, tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match="no tensors"):
        load_lightning_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match="not a StableSR diffusion checkpoint"):
        convert_stablesr_checkpoint({"first_stage_model.encoder.conv_in.weight": torch.zeros(1)})
