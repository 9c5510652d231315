"""The tiny test models carry the config files the hub publishes (srbench.testing.hub_configs), and the code
that reads a raw config dict completes it through diffusers: SD 2.1-base's unet/config.json (diffusers
0.10) lacks num_attention_heads, class_embed_type, mid_block_type ..., which broke DoSSR's ControlNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srbench.testing.tiny_sd import save_tiny_sd


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    return {hub: save_tiny_sd(root / hub, hub=hub) for hub in ("sd-turbo", "sd21-base")}


def _keys(folder: Path, file: str) -> set[str]:
    return set(json.loads((folder / file).read_text()))


def test_sd21_base_files_have_the_published_diffusers_0_10_key_sets(folders: dict[str, Path]) -> None:
    sd = folders["sd21-base"]
    unet = _keys(sd, "unet/config.json")
    # 21 keys + class/version (the 911-byte file); keys diffusers added since 0.10 are absent
    assert len(unet) == 23
    assert json.loads((sd / "unet/config.json").read_text())["_diffusers_version"] == "0.10.0.dev0"
    for newer in (
        "num_attention_heads",
        "class_embed_type",
        "mid_block_type",
        "upcast_attention",
        "transformer_layers_per_block",
        "addition_embed_type",
    ):
        assert newer not in unet
    assert {"attention_head_dim", "use_linear_projection", "dual_cross_attention"} <= unet
    assert "scaling_factor" not in _keys(sd, "vae/config.json")  # 29-line file, no scaling_factor
    sched = json.loads((sd / "scheduler/scheduler_config.json").read_text())
    assert sched["_class_name"] == "PNDMScheduler" and "timestep_spacing" not in sched
    tok = json.loads((sd / "tokenizer/tokenizer_config.json").read_text())
    assert tok["pad_token"] == "<|endoftext|>" and tok["bos_token"]["__type"] == "AddedToken"
    assert json.loads((sd / "tokenizer/special_tokens_map.json").read_text())["pad_token"] == "!"


def test_sd_turbo_files_have_the_published_key_sets(folders: dict[str, Path]) -> None:
    sd = folders["sd-turbo"]
    assert len(_keys(sd, "unet/config.json")) == 48 + 3  # every 0.24 parameter + class/version/path
    assert {"force_upcast", "scaling_factor"} <= _keys(sd, "vae/config.json")
    sched = json.loads((sd / "scheduler/scheduler_config.json").read_text())
    assert sched["_class_name"] == "EulerDiscreteScheduler" and sched["timestep_spacing"] == "trailing"
    assert "final_sigmas_type" not in sched and "rescale_betas_zero_snr" not in sched  # newer than 0.24
    assert "added_tokens_decoder" in _keys(sd, "tokenizer/tokenizer_config.json")
    for folder in folders.values():
        text = json.loads((folder / "text_encoder/config.json").read_text())
        assert (text["bos_token_id"], text["eos_token_id"], text["pad_token_id"]) == (0, 2, 1)
        assert "torch_dtype" in text and "dtype" not in text  # transformers 4.x wrote torch_dtype


def test_both_layouts_load_as_users_load_them(folders: dict[str, Path]) -> None:
    from srbench.diffusion.sd import load_sd_components

    for hub, cls in (("sd-turbo", "EulerDiscreteScheduler"), ("sd21-base", "PNDMScheduler")):
        sd = load_sd_components(folders[hub])
        assert type(sd.scheduler).__name__ == cls
        assert sd.tokenizer.pad_token == "!" and sd.tokenizer.pad_token_id == 0  # SD 2 pads with "!"
        assert sd.tokenizer.model_max_length == 77
        ids = sd.tokenizer("the", padding="max_length", max_length=77, return_tensors="pt").input_ids
        assert sd.text_encoder(ids)[0].shape == (1, 77, 32)


def test_raw_configs_are_completed_through_diffusers(folders: dict[str, Path]) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from methods.dossr.network import CondEncoder, build_lacontrolnet, empty_init
    from srbench.diffusion.sd import config_with_defaults

    raw = UNet2DConditionModel.load_config(folders["sd21-base"] / "unet")
    full = config_with_defaults(UNet2DConditionModel, raw)
    assert "num_attention_heads" not in raw and "num_attention_heads" in full
    assert full["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    assert full["attention_head_dim"] == raw["attention_head_dim"]
    with empty_init():
        net = build_lacontrolnet(raw)  # from the raw dict: AttributeError before the fix
    assert net.config.in_channels == raw["in_channels"] + 4
    vae_raw = AutoencoderKL.load_config(folders["sd21-base"] / "vae")
    assert "scaling_factor" not in vae_raw
    assert CondEncoder.from_vae_config(vae_raw).scaling_factor == pytest.approx(0.18215)


def test_a_tiny_override_the_published_file_cannot_express_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="upcast_attention"):
        save_tiny_sd(tmp_path / "bad", hub="sd21-base", unet={"upcast_attention": True})
    with pytest.raises(ValueError, match="unknown hub"):
        save_tiny_sd(tmp_path / "bad2", hub="sd-3")
    # a value within the key set is written as given
    sd = save_tiny_sd(tmp_path / "ok", hub="sd21-base", unet={"norm_num_groups": 8})
    assert json.loads((sd / "unet/config.json").read_text())["norm_num_groups"] == 8
