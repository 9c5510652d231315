"""MetricSuite.score_batch: one metric call per batch, the same numbers as per-image score().

Real photos (the demo set's), SR = a noisy, brightened copy.  LPIPS runs on a RANDOM-BACKBONE stand-in
(``random_backbones=True``: a randomly initialised AlexNet made in memory): its values are not LPIPS, but
batching goes through exactly the published network's code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srbench.data.demo import centre_crop, load_photo
from srbench.metrics import MetricSuite

PHOTOS = ("astronaut", "chelsea", "camera", "gravel")
SIZE = 160  # >= 96: one NIQE block per side


def _close(batched: float, single: float) -> bool:
    """Equal, or within 1e-6 relative (measured on CPU: bit-identical for all four metrics)."""
    return batched == single or math.isclose(batched, single, rel_tol=1e-6, abs_tol=1e-12)


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """(SR, HR): 4 real photos, HR 160x160 crops and SR (4,3,160,160) noisy copies, float32 in [0,1]."""
    hr = torch.stack(
        [torch.from_numpy(centre_crop(load_photo(p), SIZE).copy()).permute(2, 0, 1) for p in PHOTOS]
    )
    hr = hr.float() / 255.0
    g = torch.Generator().manual_seed(0)
    sr = (hr * 0.95 + 0.03 + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0.0, 1.0)
    return sr, hr


@pytest.fixture(scope="module")
def suite() -> MetricSuite:
    """psnr, ssim (Y of YCbCr), lpips (random AlexNet stand-in) and niqe (basicsr's pristine model)."""
    torch.manual_seed(0)
    s = MetricSuite(["psnr", "ssim", "lpips", "niqe"], random_backbones=True)
    assert s.available == ["psnr", "ssim", "lpips", "niqe"], s.skipped
    return s


def _count_calls(suite: MetricSuite, monkeypatch) -> dict[str, list[int]]:
    """Wraps every built metric to record the batch size of each call."""
    calls: dict[str, list[int]] = {n: [] for n in suite.available}
    for name in suite.available:
        real = suite._metrics[name]

        def wrapped(*args, _real=real, _name=name):
            calls[_name].append(args[0].shape[0])
            return _real(*args)

        monkeypatch.setitem(suite._metrics, name, wrapped)
    return calls


def test_batched_equals_per_image_one_call_per_metric(suite, images, monkeypatch) -> None:
    sr, hr = images
    hr = torch.nn.functional.pad(hr, (0, 7, 0, 5), mode="replicate")  # HR 165x167: common region 160x160
    single = [suite.score(sr[i], hr[i]) for i in range(len(sr))]
    calls = _count_calls(suite, monkeypatch)
    batched = suite.score_batch(sr, hr)
    assert calls == {n: [4] for n in suite.available}  # every metric called once, on all 4 images
    assert not suite.errors and suite.image_errors == [{}] * 4
    for b, s in zip(batched, single, strict=True):
        assert list(b) == list(s) == ["psnr", "ssim", "lpips", "niqe"]  # same keys, same order
        assert all(_close(b[k], s[k]) for k in s), (b, s)
        assert all(np.isfinite(list(b.values())))
    # values differ between images (no broadcasting of image 0's score), and are plausible
    assert (
        len({round(b["psnr"], 6) for b in batched}) == 4 and len({round(b["niqe"], 6) for b in batched}) == 4
    )
    assert all(20 < b["psnr"] < 40 and 0.3 < b["ssim"] < 1 and b["lpips"] > 0 for b in batched)

    calls.update({n: [] for n in calls})  # chunks: 2 calls per metric (3 + 1 images), same numbers
    chunked = suite.score_batch(sr, hr, chunk=3)
    assert calls == {n: [3, 1] for n in suite.available}
    assert all(_close(c[k], b[k]) for c, b in zip(chunked, batched, strict=True) for k in b)

    nr = suite.score_batch(sr)  # no HR: NR metrics only, the same values
    assert [list(d) for d in nr] == [["niqe"]] * 4
    assert [d["niqe"] for d in nr] == [b["niqe"] for b in batched]


def test_crop_border_honoured(images) -> None:
    sr, hr = images
    cropped = MetricSuite(["psnr", "ssim"], crop_border=4)
    full = MetricSuite(["psnr", "ssim"])
    got = cropped.score_batch(sr, hr)
    by_hand = full.score_batch(sr[..., 4:-4, 4:-4], hr[..., 4:-4, 4:-4])  # crop 4 == scoring the interior
    uncropped = full.score_batch(sr, hr)
    for g, h, u, i in zip(got, by_hand, uncropped, range(len(sr)), strict=True):
        assert _close(g["psnr"], h["psnr"]) and _close(g["ssim"], h["ssim"])
        assert g["psnr"] != u["psnr"] and g["ssim"] != u["ssim"]
        s = cropped.score(sr[i], hr[i])
        assert _close(g["psnr"], s["psnr"]) and _close(g["ssim"], s["ssim"])


def test_one_failing_image_gets_nan_others_keep_their_scores(suite, images, monkeypatch) -> None:
    sr, hr = images
    sr = sr.clone()
    sr[1] = 0.0  # a black image: the patched NIQE below refuses it
    ref = [suite.score(sr[i], hr[i]) for i in (0, 2, 3)]
    real = suite._metrics["niqe"]
    calls: list[int] = []

    def picky_niqe(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        if (x.flatten(1).amax(1) == 0).any():
            raise RuntimeError("black image")
        return real(x)

    monkeypatch.setitem(suite._metrics, "niqe", picky_niqe)
    out = suite.score_batch(sr, hr)
    assert calls == [4, 1, 1, 1, 1]  # the batch, then each image alone
    assert math.isnan(out[1]["niqe"]) and np.isfinite(out[1]["psnr"])  # other metrics still score image 1
    for o, r in zip([out[0], out[2], out[3]], ref, strict=True):
        assert all(_close(o[k], r[k]) for k in r)
    assert suite.errors == {"niqe": "image 1: RuntimeError: black image"}
    assert suite.image_errors == [{}, {"niqe": "RuntimeError: black image"}, {}, {}]

    # score() on the bad image alone: the message it always gave
    assert math.isnan(suite.score(sr[1])["niqe"])
    assert suite.errors == {"niqe": "RuntimeError: black image"}

    # a metric returning the wrong number of values is retried per image too; failing everywhere -> all NaN
    monkeypatch.setitem(suite._metrics, "psnr", lambda a, b: torch.zeros(1))
    monkeypatch.setitem(suite._metrics, "ssim", lambda a, b: 1 / 0)
    out = suite.score_batch(sr[:2], hr[:2])
    assert [o["psnr"] for o in out] == [0.0, 0.0]
    assert all(math.isnan(o["ssim"]) for o in out)
    assert suite.errors["ssim"] == "images [0, 1]: ZeroDivisionError: division by zero"


def test_min_side_rule_applies_to_the_batch(suite) -> None:
    x = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    out = suite.score_batch(x, x)
    assert all(math.isnan(o["niqe"]) and o["psnr"] > 60 for o in out)  # identical images: PSNR ~80 dB
    assert suite.errors["niqe"].startswith("images [0, 1, 2]: image side 64 px < 96 px")
    assert all("96 px" in e["niqe"] for e in suite.image_errors)


def test_shape_and_argument_errors(suite) -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"sr: expected a \(B,3,H,W\) RGB batch, got shape \(3, 8, 8\)"):
        suite.score_batch(x[0])
    with pytest.raises(ValueError, match=r"hr: .*got shape \(2, 1, 8, 8\)"):
        suite.score_batch(x, x[:, :1])
    with pytest.raises(ValueError, match=r"batch sizes differ: sr \(2, 3, 8, 8\), hr \(1, 3, 8, 8\)"):
        suite.score_batch(x, x[:1])
    with pytest.raises(ValueError, match="float tensor in \\[0,1\\] or uint8"):
        suite.score_batch((x * 255).to(torch.int16))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="chunk must be a positive int"):
            suite.score_batch(x, chunk=bad)
    assert suite.score_batch(torch.rand(0, 3, 8, 8)) == [] and suite.errors == {}
