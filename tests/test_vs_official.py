"""The parts of ``benchmarks/vs_official.py`` / ``official_harness.py`` that need no authors' checkout.

Running the authors' code needs their repositories (never vendored), so the comparison itself is a
benchmark; what is tested here: a missing or wrong checkout fails at once with the clone command, the ldm
configs derived from srbench's SD 2.1 configs are the authors' yaml values, and the ``open_clip``
stand-in computes what the SD 2 text encoder computes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    key = f"srbench_benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, _BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


harness = _load("official_harness")


@pytest.mark.parametrize("method", ["invsr", "stablesr", "dossr"])
def test_missing_checkout_names_the_clone_command(tmp_path: Path, method: str) -> None:
    repo = harness.CHECKOUTS[method].repo
    with pytest.raises(harness.CheckoutError, match=f"git clone https://github.com/{repo}"):
        harness.require_checkout(method, None)
    with pytest.raises(harness.CheckoutError, match="does not exist"):
        harness.require_checkout(method, tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    with pytest.raises(harness.CheckoutError, match=f"not a checkout of {repo}: missing"):
        harness.require_checkout(method, tmp_path / "partial")
    full = tmp_path / "full"
    for rel in harness.CHECKOUTS[method].needs:
        (full / rel).parent.mkdir(parents=True, exist_ok=True)
        (full / rel).write_text("")
    assert harness.require_checkout(method, full) == full


def test_vs_official_exits_with_the_message_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vs = _load("vs_official")
    rc = vs.main(["dossr", "--checkout", str(tmp_path / "DoSSR")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "git clone https://github.com/AMD-AIG-AIMA/DoSSR" in err


def test_ldm_configs_from_srbench_are_the_authors_yaml() -> None:
    """SD 2.1's diffusers configs map to the ``unet_config`` / ``ddconfig`` of StableSR's
    ``v2-finetune_text_T_512.yaml`` and DoSSR's ``cldm_v21.yaml``."""
    from srbench.testing.full_size import SD21_UNET, SD21_VAE

    assert harness.ldm_unet_params(SD21_UNET) == {
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 320,
        "channel_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attention_resolutions": [4, 2, 1],
        "num_head_channels": 64,
        "context_dim": 1024,
        "use_linear_in_transformer": True,
        "transformer_depth": 1,
    }
    assert harness.ldm_ddconfig(SD21_VAE) == {
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "z_channels": 4,
    }


def test_open_clip_stand_in_matches_the_sd2_text_encoder(tmp_path: Path) -> None:
    """FrozenOpenCLIPEmbedder(layer="penultimate") on the stand-in, loaded from a CLIPTextModel's weights,
    gives the CLIPTextModel's last_hidden_state (what srbench encodes its prompts with)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from srbench.testing.tiny_sd import save_tiny_sd

    folder = save_tiny_sd(tmp_path / "sd")
    te = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    oc = harness.open_clip_stub(te.config, tok)
    model, _, _ = oc.create_model_and_transforms("ViT-H-14", device=torch.device("cpu"), pretrained=None)
    state = harness.openclip_text_state(te, "")
    harness.assign_weights(model, state, "stand-in")
    text = ["clean, high-resolution, 8k", ""]
    tokens = oc.tokenize(text)
    with torch.no_grad():
        # the authors' FrozenOpenCLIPEmbedder.encode_with_transformer, penultimate layer
        x = (model.token_embedding(tokens) + model.positional_embedding).permute(1, 0, 2)
        for block in model.transformer.resblocks[:-1]:
            x = block(x, attn_mask=model.attn_mask)
        ours = model.ln_final(x.permute(1, 0, 2))
        ref = te(tokens).last_hidden_state
    assert tokens.shape == (2, 77) and int(tokens[1, -1]) == 0  # zero-padded as open_clip.tokenize
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
