"""Kill tests for the mutants `benchmarks/mutation.py --group losses` left alive in DM-SR's losses
(methods/dmsr/losses.py) and timestep estimator (methods/dmsr/estimator.py): the LPIPS feature
normalisation's epsilon, width floors of narrow networks, VGG's initialisation and Eq. 10 on one logit
vector.  Each compares with an independent reference (the lpips package, torch's init formula, literals)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from methods.dmsr.estimator import TimestepEstimator, vgg19_features
from methods.dmsr.losses import LatentLPIPS


# ---- methods.dmsr.losses -----------------------------------------------------------------------------
def test_latent_lpips_unit_normalisation_matches_lpips_on_tiny_and_zero_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LPIPS divides by ‖f‖ + 1e-10: at ‖f‖ = 1e-10 that halves f, at f = 0 it stays 0 (no NaN)."""
    import lpips

    torch.manual_seed(0)
    m = LatentLPIPS(width_div=64)  # heads on 1, 2, 4, 8, 8 channels
    chns = [getattr(m, f"lin{k}").model[1].in_channels for k in range(5)]
    feats0, feats1 = [], []
    for c in chns:
        tiny = torch.zeros(2, c, 3, 3)
        tiny[:, 0] = 1e-10  # ‖f‖ = 1e-10 at every position
        feats0.append(tiny)
        feats1.append(torch.zeros(2, c, 3, 3))  # ‖f‖ = 0
    outputs = iter([feats0, feats1])
    monkeypatch.setattr(m.net, "forward", lambda z: next(outputs))
    got = m(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))
    want = sum(
        lpips.spatial_average(
            getattr(m, f"lin{k}")((lpips.normalize_tensor(a) - lpips.normalize_tensor(b)) ** 2)
        )
        for k, (a, b) in enumerate(zip(feats0, feats1, strict=True))
    ).flatten()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    # the unit vector is halved: 0.25 · Σ_k w_k[0] per sample
    heads = sum(getattr(m, f"lin{k}").model[1].weight[0, 0].item() for k in range(5))
    torch.testing.assert_close(got, torch.full((2,), 0.25 * heads))


def test_latent_lpips_widths_never_fall_below_one_channel() -> None:
    m = LatentLPIPS(width_div=128)  # 64 // 128 = 0 → 1 channel, 128 // 128 = 1
    convs = [c for c in m.net.modules() if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [1, 1, 1, 1, 2, 2, 2, 4, 4, 4, 4, 4, 4]
    assert [getattr(m, f"lin{k}").model[1].in_channels for k in range(5)] == [1, 1, 2, 4, 4]


# ---- methods.dmsr.estimator --------------------------------------------------------------------------
def test_estimator_widths_never_fall_below_one_channel() -> None:
    est = TimestepEstimator(width_div=128)
    convs = [c for c in est.features if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [1, 1, 1, 1] + [2] * 4 + [4] * 8
    assert est.head.in_features == 4 and est.head.out_features == 500


def test_vgg19_features_use_torchvision_vgg_init() -> None:
    """torchvision's VGG.__init__: kaiming_normal_(mode="fan_out", nonlinearity="relu"), zero biases, i.e.
    std = √2 / √(out_channels · 3 · 3) per conv (He et al. 2015 Eq. 10 on the backward pass)."""
    torch.manual_seed(0)
    feats = vgg19_features(width_div=2)
    convs = [c for c in feats if isinstance(c, nn.Conv2d)]
    assert len(convs) == 16
    for c in convs:
        want = math.sqrt(2.0) / math.sqrt(c.out_channels * 9)
        assert c.weight.mean().item() == pytest.approx(0.0, abs=0.05 * want)
        assert c.weight.std().item() == pytest.approx(want, rel=0.05)
        assert torch.count_nonzero(c.bias) == 0


def test_expectation_of_a_single_logit_vector() -> None:
    """Eq. 10 for one F ∈ ℝ^500 (no batch dimension): Σ_k softmax(F)_k · k."""
    est = TimestepEstimator(width_div=128)
    assert est.expectation(torch.zeros(500)).item() == pytest.approx(249.5)
    f = torch.full((500,), -1e4)
    f[[10, 30]] = 0.0  # two equal bins: t̂ = 20
    assert est.expectation(f).item() == pytest.approx(20.0)


@pytest.mark.parametrize("checkpoints_exist", [False, True])
def test_imagenet_download_checks_torchvision_hash_prefix(
    tmp_path, monkeypatch: pytest.MonkeyPatch, checkpoints_exist: bool
) -> None:  # type: ignore[no-untyped-def]
    """download=True fetches torchvision's URL into <hub>/checkpoints (made when absent, kept when present)
    with the sha256 prefix of its file name checked and no progress bar; the loaded convs are the file's."""
    import torchvision

    hub = tmp_path / "hub"  # not there yet: the parents are created too
    if checkpoints_exist:
        (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    ref = vgg19_features()
    calls = []

    def fake_download(url: str, dst: str, **kwargs: object) -> None:
        calls.append((url, dst, kwargs))
        torch.save({f"features.{k}": v for k, v in ref.state_dict().items()}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    est = TimestepEstimator()
    path = est.load_imagenet_vgg19(download=True)
    url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert calls == [
        (url, str(hub / "checkpoints" / "vgg19-dcbb9e9d.pth"), {"hash_prefix": "dcbb9e9d", "progress": False})
    ]
    assert path == hub / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert torch.equal(est.features[34].weight, ref[34].weight)


def test_latent_lpips_from_file_defaults_to_full_width_and_names_a_missing_first_conv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from srbench.interface import SRBenchError

    torch.manual_seed(2)
    full = LatentLPIPS().state_dict()  # InvSR's file is the full-width network
    torch.save(full, tmp_path / "full.pth")
    loaded = LatentLPIPS.from_file(tmp_path / "full.pth")
    assert loaded.net.slice5[-2].out_channels == 512
    assert torch.equal(loaded.lin4.model[1].weight, full["lin4.model.1.weight"])
    small = LatentLPIPS(width_div=16).state_dict()
    del small["net.slice1.0.weight"]  # the key the input width is read from
    torch.save(small, tmp_path / "no_first.pth")
    with pytest.raises(SRBenchError, match="not InvSR's latent LPIPS layout"):
        LatentLPIPS.from_file(tmp_path / "no_first.pth", width_div=16)


def test_surrogate_keeps_the_dtype_of_what_it_acts_on() -> None:
    """A float64 prescribed gradient on a float32 tensor: the loss stays float32, its gradient is g/numel."""
    from methods.dmsr.losses import surrogate

    y = torch.randn(2, 3, requires_grad=True)
    g = torch.randn(2, 3, dtype=torch.float64)
    loss = surrogate(y, g)
    assert loss.dtype == torch.float32
    loss.backward()
    torch.testing.assert_close(y.grad, (g / 6).float())


def test_lpips_timestep_target_clamps_negative_distances_to_zero() -> None:
    from methods.dmsr.losses import lpips_timestep_target

    def signed_lpips(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B,1,1,1), may dip below 0
        return (a - b).mean(dim=(1, 2, 3), keepdim=True)

    lr = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    hr = torch.full_like(lr, 0.5)
    assert lpips_timestep_target(signed_lpips, lr, hr).tolist() == [0.0, 0.0, 499.0]


def test_estimator_state_dict_holds_only_learned_weights() -> None:
    """mean, std and bins are constants (non-persistent): checkpoints hold the VGG convs and the head only."""
    est = TimestepEstimator(width_div=128)
    keys = set(est.state_dict())
    assert keys == {
        f"features.{i}.{p}"
        for i, m in enumerate(est.features)
        if isinstance(m, nn.Conv2d)
        for p in ("weight", "bias")
    } | {"head.weight", "head.bias"}
