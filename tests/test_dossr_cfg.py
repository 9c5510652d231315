"""DoSSR classifier-free guidance as the official ``SpacedSampler.predict_noise``: one pass when
``cfg_scale == 1``; otherwise a conditional and an unconditional pass (same c_latent, the negative
prompt's context) mixed as u_neg + s (u_pos - u_neg) -- on tiny random models."""

from __future__ import annotations

import pytest
import torch

import methods.dossr  # noqa: F401  (registers "dossr")
from methods.dossr.testing import TinyDoSSR, save_tiny_dossr
from srbench import create_method


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyDoSSR:
    return save_tiny_dossr(tmp_path_factory.mktemp("dossr-cfg"), seed=0)


def _method(tiny: TinyDoSSR, **options: object):  # type: ignore[no-untyped-def]
    m = create_method("dossr", model=str(tiny.sd_folder), ckpt=str(tiny.ckpt), **options)
    m.load("cpu", torch.float32)
    return m


class _Recorder(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.contexts = inner, []

    def forward(self, x, t, c_latent, context):  # type: ignore[no-untyped-def]
        self.contexts.append(context)
        return self.inner(x, t, c_latent, context)


class _Mixed(torch.nn.Module):
    """The official mix done outside the method: model_uncond + s (model_cond - model_uncond)."""

    def __init__(self, inner: torch.nn.Module, uncond: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.inner, self.uncond, self.scale = inner, uncond, scale

    def forward(self, x, t, c_latent, context):  # type: ignore[no-untyped-def]
        cond = self.inner(x, t, c_latent, context)
        unc = self.inner(x, t, c_latent, self.uncond.expand(x.shape[0], -1, -1))
        return unc + self.scale * (cond - unc)


def _run(m, seed: int = 0):  # type: ignore[no-untyped-def]
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    return m.upscale(lr, steps=3, generator=torch.Generator().manual_seed(seed))


def test_cfg_mixes_a_conditional_and_a_negative_prompt_pass(tiny: TinyDoSSR) -> None:
    plain = _method(tiny)
    guided = _method(tiny, cfg_scale=3.0)  # negative prompt "" (the official default)
    rec = _Recorder(guided.denoiser)
    guided.denoiser = rec
    out = _run(guided)
    guided.denoiser = rec.inner
    pos = guided.prompts.get(guided.prompt, 1)
    neg = guided.prompts.get("", 1)
    assert len(rec.contexts) == 6  # two passes per step: positive first, then negative
    assert all(torch.equal(c, pos) for c in rec.contexts[0::2])
    assert all(torch.equal(c, neg) for c in rec.contexts[1::2])
    # the same as guidance done by hand around the network, with the method's guidance off
    plain.denoiser = _Mixed(plain.denoiser, neg, 3.0)
    assert torch.equal(out, _run(plain))


def test_cfg_scale_one_is_one_pass_and_ignores_the_negative_prompt(tiny: TinyDoSSR) -> None:
    base = _run(_method(tiny))
    one = _method(tiny, cfg_scale=1.0, negative_prompt="blurry, noisy")
    rec = _Recorder(one.denoiser)
    one.denoiser = rec
    assert torch.equal(_run(one), base) and len(rec.contexts) == 3
    # any other scale guides (the official condition is cfg_scale == 1), and the negative prompt matters
    half = _run(_method(tiny, cfg_scale=0.5))
    assert not torch.equal(half, base)
    a = _run(_method(tiny, cfg_scale=2.0, negative_prompt=""))
    b = _run(_method(tiny, cfg_scale=2.0, negative_prompt="blurry, noisy"))
    assert not torch.equal(a, b)
