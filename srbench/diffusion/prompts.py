"""A fixed prompt encoded once: the SR methods here condition on one constant text (InvSR's positive
prompt, StableSR's empty prompt), so the text encoder runs once per (text, device, dtype).

Encoding follows diffusers' Stable Diffusion ``encode_prompt`` for SD 1/2: pad/truncate to the
tokenizer's ``model_max_length`` (77), no attention mask (CLIP text models are not configured to use
one), and take ``last_hidden_state`` (after the final layer norm).  ``clip_skip=k`` instead takes the
hidden state k layers before the last and applies the final layer norm, as diffusers does.
"""

from __future__ import annotations

from typing import Any

import torch


class PromptEmbeddingCache:
    """Encodes each prompt once and returns it expanded to a batch: ``(B, 77, D)``."""

    def __init__(self, tokenizer: Any, text_encoder: Any, *, clip_skip: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.clip_skip = clip_skip
        self._cache: dict[tuple[str, str, torch.dtype], torch.Tensor] = {}

    @torch.inference_mode()
    def _encode(self, prompt: str) -> torch.Tensor:
        if self.text_encoder is None:
            raise RuntimeError(f"prompt {prompt!r} is not cached and the text encoder was released")
        tok = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tok.input_ids.to(self.text_encoder.device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tok.attention_mask.to(ids.device)
        if self.clip_skip is None:
            return self.text_encoder(ids, attention_mask=mask)[0]
        out = self.text_encoder(ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[-(self.clip_skip + 1)]
        body = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 5 flattened it
        return body.final_layer_norm(hidden)

    def encode(
        self, prompt: str, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The embedding of ``prompt``, shape ``(1, L, D)``, computed once per (prompt, device, dtype)."""
        device = torch.device(device) if device is not None else self._encoder_device()
        dtype = dtype or self._encoder_dtype()
        key = (prompt, str(device), dtype)
        if key not in self._cache:
            same = [v for (p, _, _), v in self._cache.items() if p == prompt]
            emb = same[0] if same else self._encode(prompt)
            self._cache[key] = emb.to(device=device, dtype=dtype)
        return self._cache[key]

    def get(
        self,
        prompt: str,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """``(batch_size, L, D)``: the cached embedding expanded (a view, no copy)."""
        emb = self.encode(prompt, device=device, dtype=dtype)
        return emb.expand(batch_size, *emb.shape[1:])

    def release_text_encoder(self) -> None:
        """Drop the text encoder (its memory); prompts already cached stay available."""
        self.text_encoder = None

    def _encoder_device(self) -> torch.device:
        if self.text_encoder is None:
            return torch.device("cpu")
        return self.text_encoder.device

    def _encoder_dtype(self) -> torch.dtype:
        if self.text_encoder is None:
            return torch.float32
        return self.text_encoder.dtype
