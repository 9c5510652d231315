"""Degradation pipelines: deterministic by seed, shapes, value range, a hand-built reference composition."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from srbench.data.degradations import (
    PIPELINES,
    DegradationPipeline,
    _jpeg,
    apply_degradation,
    build_kernel,
    degrade,
    get_pipeline,
    sample_params,
)


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    """A real photo crop, 64x64 RGB float in [0,1]."""
    img = skdata.astronaut()[100:164, 180:244]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_deterministic_by_seed_shapes_and_range(hr: torch.Tensor, name: str) -> None:
    lr, params = degrade(hr, 7, name)
    lr2, params2 = degrade(hr, 7, name)
    assert torch.equal(lr, lr2) and params == params2
    assert lr.shape == (3, 16, 16) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)  # on the 8-bit grid, as the authors' saved PNGs
    json.dumps(params)  # loggable
    others = [degrade(hr, s, name)[0] for s in (8, 9)]
    assert not torch.equal(lr, others[0]) and not torch.equal(others[0], others[1])
    # a degraded image stays an image of the same scene: close to a plain downscale on average
    ref = F.interpolate(hr[None], size=(16, 16), mode="area")[0]
    assert (lr - ref).abs().mean() < 0.15


def test_params_replay_and_batch_layout(hr: torch.Tensor) -> None:
    lr, params = degrade(hr[None], 3, "resshift")
    assert lr.shape == (1, 3, 16, 16)
    assert torch.equal(apply_degradation(hr[None], params), lr)


def test_numpy_uint8_in_uint8_out(hr: torch.Tensor) -> None:
    arr = (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    lr, _ = degrade(arr, 1, "resshift_test")
    lr_t, _ = degrade(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, 1, "resshift_test")
    assert lr.dtype == np.uint8 and lr.shape == (16, 16, 3)
    assert np.array_equal(lr, (lr_t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def test_global_random_states_are_left_alone(hr: torch.Tensor) -> None:
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    t, n, p = torch.get_rng_state(), np.random.get_state(), random.getstate()
    degrade(hr, 0, "realesrgan")
    assert torch.equal(torch.get_rng_state(), t)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], n[1:2], strict=True))
    assert random.getstate() == p


def test_matches_a_hand_built_composition_of_basicsr_steps(hr: torch.Tensor) -> None:
    """One fixed draw through apply_degradation == the same steps written out with basicsr's functions."""
    from basicsr.data.degradations import add_gaussian_noise_pt, bivariate_generalized_Gaussian
    from basicsr.utils.diffjpeg import DiffJPEG
    from basicsr.utils.img_process_util import filter2D

    params = {
        "pipeline": "resshift_test",
        "kernel1": {
            "type": "generalized_aniso",
            "size": 7,
            "sigma_x": 0.7,
            "sigma_y": 0.4,
            "theta": 0.3,
            "beta": 1.2,
        },
        "kernel2": {"type": "iso", "size": 3, "sigma_x": 0.3, "sigma_y": 0.3, "theta": 0.0},
        "final_sinc": None,
        "resize1": {"updown": "down", "scale": 0.75, "mode": "bicubic"},
        "noise1": {"type": "gaussian", "sigma": 5.0, "gray": False},
        "jpeg1": 80.0,
        "second_order": False,
        "final_order": "resize_first",
        "final_mode": "area",
        "jpeg2": 90.0,
        "noise_seed": 123,
    }
    got = apply_degradation(hr[None], params)

    k = bivariate_generalized_Gaussian(7, 0.7, 0.4, 0.3, 1.2, isotropic=False)
    k = torch.FloatTensor(np.pad(k / k.sum(), 3))  # ResShift pads kernel 1 to blur_kernel_size = 13
    jpeger = DiffJPEG(differentiable=False)
    x = filter2D(hr[None], k[None])
    x = F.interpolate(x, scale_factor=0.75, mode="bicubic")
    torch.manual_seed(123)
    x = add_gaussian_noise_pt(x, sigma=5.0, gray_noise=0, clip=True, rounds=False)
    x = jpeger(x.clamp(0, 1), quality=80.0)
    x = F.interpolate(x, size=(16, 16), mode="area")  # the final "sinc" is a pulse: identity
    x = jpeger(x.clamp(0, 1), quality=90.0)
    want = torch.clamp((x * 255.0).round(), 0, 255) / 255.0
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "iso", "size": 9, "sigma_x": 1.0, "sigma_y": 1.0, "theta": 0.0},
        {"type": "plateau_aniso", "size": 7, "sigma_x": 1.0, "sigma_y": 0.5, "theta": 1.0, "beta": 1.5},
        {"type": "sinc", "size": 11, "omega_c": 1.2},
        None,
    ],
)
def test_kernels_are_normalised_centred_and_padded(spec: dict | None) -> None:
    k = build_kernel(spec, 21)
    assert k.shape == (21, 21) and torch.isclose(k.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(k, k.flip(0).flip(1), atol=1e-6)  # point-symmetric about the centre
    if spec is not None:
        pad = (21 - spec["size"]) // 2
        assert k[:pad].abs().sum() == 0 and k[:, -pad:].abs().sum() == 0


def test_opencv_jpeg_path_equals_basicsr_add_jpg_compression(hr: torch.Tensor) -> None:
    from basicsr.data.degradations import add_jpg_compression

    x = (hr * 255).round() / 255
    got = _jpeg(x[None], 77.6, "cv2")[0]
    bgr = x.flip(0).permute(1, 2, 0).numpy().astype(np.float32)
    want = (
        torch.from_numpy(add_jpg_compression(bgr, 77)).permute(2, 0, 1).flip(0)
    )  # int(q), as env.md §3 says
    assert torch.equal(got, want)
    lr, _ = degrade(hr, 2, replace(get_pipeline("resshift_test"), jpeg="cv2"))
    assert lr.shape == (3, 16, 16)


def test_draws_follow_each_pipelines_settings() -> None:
    test = [sample_params("resshift_test", s) for s in range(300)]
    assert not any(p["second_order"] for p in test)  # ImageNet-Test: one order only
    assert {p["kernel1"]["type"] for p in test} <= {"iso", "aniso", "sinc"}
    assert {p["kernel1"]["size"] for p in test} == {3, 5, 7, 9, 11}  # ResShift's range(3, 13, 2)
    assert all(70 <= p["jpeg1"] <= 95 and 80 <= p["jpeg2"] <= 100 for p in test)
    sig = [p["noise1"]["sigma"] for p in test if p["noise1"]["type"] == "gaussian"]
    assert sig and min(sig) >= 1 and max(sig) <= 15
    assert 0.05 < np.mean([p["final_sinc"] is not None for p in test]) < 0.4  # final_sinc_prob 0.2
    real = [sample_params("realesrgan", s) for s in range(300)]
    assert all(p["second_order"] for p in real)
    assert {p["kernel1"]["size"] for p in real} <= set(range(7, 22, 2))
    assert 0.5 < np.mean([p["final_sinc"] is not None for p in real]) < 0.95  # final_sinc_prob 0.8
    train = [sample_params("resshift", s) for s in range(300)]
    assert 0.35 < np.mean([p["second_order"] for p in train]) < 0.65  # second_order_prob 0.5


def test_realesrgan_sharpens_first_and_needs_room_for_it(hr: torch.Tensor) -> None:
    params = sample_params("realesrgan", 5)
    with_usm = apply_degradation(hr[None], params)
    without = apply_degradation(hr[None], params, replace(get_pipeline("realesrgan"), usm_sharpen=False))
    assert not torch.equal(with_usm, without)
    with pytest.raises(ValueError, match="too small for Real-ESRGAN's USM"):
        degrade(hr[:, :40, :40], 0, "realesrgan")


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown degradation pipeline"):
        get_pipeline("nope")
    with pytest.raises(ValueError, match="unknown degradation settings"):
        DegradationPipeline.from_dict({"preset": "resshift", "blur_sigmaa": [1, 2]})
    p = DegradationPipeline.from_dict({"preset": "realesrgan", "noise_range": [1, 5], "jpeg": "cv2"})
    assert p.noise_range == (1, 5) and p.usm_sharpen and p.jpeg == "cv2"
    with pytest.raises(ValueError, match="expected a"):
        degrade(torch.zeros(1, 1, 8, 8), 0)


def test_images_smaller_than_the_kernel_fall_back_to_edge_padding() -> None:
    from srbench.data.degradations import _filter

    x = torch.rand(1, 3, 5, 5)
    assert torch.equal(_filter(x, build_kernel(None, 21)), x)  # a pulse is the identity, padding aside
    blurred = _filter(
        x, build_kernel({"type": "iso", "size": 21, "sigma_x": 3.0, "sigma_y": 3.0, "theta": 0.0}, 21)
    )
    assert blurred.shape == x.shape and blurred.std() < x.std()


def test_batches_draw_one_set_of_params_per_image(hr: torch.Tensor) -> None:
    batch = torch.stack([hr, hr.flip(-1)])
    lr, params = degrade(batch, 4, "resshift_test")
    assert lr.shape == (2, 3, 16, 16) and isinstance(params, list) and len(params) == 2
    assert params[0] != params[1]
    assert torch.equal(lr[1:], apply_degradation(batch[1:], params[1]))
    again, _ = degrade(batch, np.random.default_rng(4), "resshift_test")  # an int seed = default_rng(seed)
    assert torch.equal(lr, again)
