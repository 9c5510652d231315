"""srbench.metrics: paper-correct PSNR/SSIM, NIQE offline, missing-weights handling, FR/NR plumbing.

Offline: conftest gives a private, empty TORCH_HOME / HF_HOME; nothing is downloaded.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import yaml
from skimage.metrics import structural_similarity

from srbench import metric_files
from srbench.interface import WeightsMissing
from srbench.metrics import MetricSuite, lower_better, metric_specs

CONF = Path(__file__).resolve().parent.parent / "conf" / "metrics"


def _y601(rgb: np.ndarray) -> np.ndarray:
    """Y of YCbCr ITU-R BT.601, limited range, on [0,1] RGB (HWC) -> [16/255, 235/255] (MATLAB rgb2ycbcr)."""
    return (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0 + 16.0 / 255.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10.0 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A real 160x144 photo crop (HR) and a noisy, brightened copy (SR), float64 RGB in [0,1]."""
    hr = skimage.data.astronaut()[40:200, 200:344].astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    sr = np.clip(hr * 0.95 + 0.03 + rng.normal(0.0, 0.06, hr.shape), 0.0, 1.0)
    return sr, hr


@pytest.fixture(scope="module")
def suite() -> MetricSuite:
    return MetricSuite(["psnr", "psnr-rgb", "ssim", "niqe"])


def test_psnr_is_y_of_ycbcr_bt601_and_matches_hand_computation(pair, suite) -> None:
    sr, hr = pair
    scores = suite.score(_t(sr), _t(hr))
    ys, yh = _y601(sr), _y601(hr)
    # pyiqa adds eps=1e-8 to the MSE (here ~1.3e-3): PSNR is 3.3e-5 dB lower than the textbook value
    assert scores["psnr"] == pytest.approx(_psnr(ys, yh), abs=1e-4)
    assert scores["psnr-rgb"] == pytest.approx(_psnr(sr, hr), abs=1e-4)
    assert abs(scores["psnr"] - scores["psnr-rgb"]) > 0.3  # Y and RGB PSNR really differ on this pair

    cropped = MetricSuite(["psnr", "psnr-rgb"], crop_border=4)
    c = cropped.score(_t(sr).unsqueeze(0), _t(hr).unsqueeze(0))  # (1,3,H,W) works as (3,H,W)
    assert c["psnr"] == pytest.approx(_psnr(ys[4:-4, 4:-4], yh[4:-4, 4:-4]), abs=1e-4)
    assert c["psnr-rgb"] == pytest.approx(_psnr(sr[4:-4, 4:-4], hr[4:-4, 4:-4]), abs=1e-4)
    assert c["psnr"] != pytest.approx(scores["psnr"], abs=1e-3)
    assert cropped.options["psnr"] == {"test_y_channel": True, "crop_border": 4, "color_space": "ycbcr"}

    rgb = MetricSuite(["psnr"], y_channel=False)
    assert rgb.score(_t(sr), _t(hr))["psnr"] == pytest.approx(scores["psnr-rgb"], abs=1e-9)
    assert "RGB" in rgb.notes["psnr"]


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_y_matches_skimage_on_matlab_rounded_y(pair, crop) -> None:
    """Reference: skimage structural_similarity (Gaussian sigma 1.5 -> 11x11 window, population covariance,
    data_range 255, as the MATLAB code) on the BT.601 Y channel rounded to integers, which is what pyiqa
    computes (MATLAB rgb2ycbcr on uint8).  Tolerance 1e-5; measured difference ~3e-7."""
    sr, hr = pair
    ssim = MetricSuite(["ssim"], crop_border=crop).score(_t(sr), _t(hr))["ssim"]
    ys, yh = _y601(sr) * 255.0, _y601(hr) * 255.0
    if crop:
        ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255.0}
    ref = structural_similarity(np.round(ys), np.round(yh), **kw)
    assert ssim == pytest.approx(ref, abs=1e-5)
    # BasicSR's calculate_ssim does not round Y: a different (slightly) number, within 3e-3 here
    assert ssim == pytest.approx(structural_similarity(ys, yh, **kw), abs=3e-3)
    assert 0.2 < ssim < 0.99


def test_niqe_offline_from_basicsr_params_on_a_real_photo(suite) -> None:
    from basicsr.metrics import calculate_niqe

    assert "niqe" in suite.available
    mat = metric_files.niqe_params_from_basicsr()
    assert mat is not None and mat.is_file()
    assert "basicsr niqe_pris_params.npz" in suite.notes["niqe"] and str(mat) in suite.notes["niqe"]
    assert suite.options["niqe"]["pretrained_model_path"] == str(mat)
    assert suite.weights_verified["niqe"] is None  # no hash to check basicsr's parameters against

    import scipy.io  # the conversion round-trips exactly

    z, m = np.load(metric_files.basicsr_niqe_npz()), scipy.io.loadmat(mat)
    np.testing.assert_array_equal(m["mu_prisparam"].ravel(), z["mu_pris_param"].ravel())
    np.testing.assert_array_equal(m["cov_prisparam"], z["cov_pris_param"])

    img = skimage.data.astronaut()  # 512x512 RGB uint8
    value = suite.score(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)["niqe"]
    reference = calculate_niqe(img[..., ::-1].astype(np.float64), 0, input_order="HWC", convert_to="y")
    assert 2.0 < value < 10.0
    # measured: pyiqa (Y of YIQ) 3.0624 vs basicsr (Y of YCbCr, same pristine model) 3.0649
    assert abs(value - float(reference)) < 0.1


def _hostile_pickle(path: Path, marker: Path) -> None:
    """A weights file that runs code when unpickled without restrictions: it creates ``marker``."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": torch.zeros(1), "x": Payload()}, path)


def test_missing_hostile_and_random_backbone_lpips(pair, caplog, tmp_path, monkeypatch) -> None:
    """lpips with an empty TORCH_HOME is skipped with a message naming the file, its full path and URL;
    on_missing="error" raises.  A file at that path whose SHA256 is not the published one (here a pickle
    that would run code) is never handed to torchvision: skipped, naming the file, its hash and the expected
    one.  ``random_backbones=True`` builds LPIPS on a RANDOM AlexNet made in memory: plumbing only."""
    from pyiqa.utils import download_util

    # caches of this test only: torch.hub reads TORCH_HOME per call; pyiqa fixed its dir at import
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "torch" / "hub" / "pyiqa"))
    sr, hr = _t(pair[0]).float(), _t(pair[1]).float()
    alex = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    pyiqa_lin = tmp_path / "torch" / "hub" / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth"
    assert Path(torch.hub.get_dir()) / "checkpoints" / alex.name == alex
    assert metric_files.pyiqa_cache_dir() / pyiqa_lin.name == pyiqa_lin

    with caplog.at_level(logging.WARNING, logger="srbench.metrics"):
        skipped = MetricSuite(["lpips", "psnr"])
    assert skipped.available == ["psnr"] and "lpips" not in skipped.score(sr, hr)
    msg = skipped.skipped["lpips"]
    assert "alexnet-owt-7be5be79.pth" in msg and str(alex) in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert "LPIPS_v0.1_alex" not in msg  # the lpips package ships pyiqa's linear layers byte for byte
    assert any("lpips" in r.getMessage() and str(alex) in r.getMessage() for r in caplog.records)
    with pytest.raises(WeightsMissing, match=r"alexnet-owt-7be5be79\.pth"):
        MetricSuite(["lpips"], on_missing="error")

    marker = tmp_path / "PWNED"
    _hostile_pickle(alex, marker)
    digest = metric_files.sha256_of(alex)
    hostile = MetricSuite(["lpips", "psnr"])
    assert hostile.available == ["psnr"] and not marker.exists()
    why = hostile.skipped["lpips"]
    assert str(alex) in why and digest in why and "starts with 7be5be79" in why and "does not load" in why
    with pytest.raises(WeightsMissing, match=rf"{digest}.*7be5be79"):
        MetricSuite(["lpips"], on_missing="error")
    assert not marker.exists()

    built = MetricSuite(["lpips"], random_backbones=True)  # the hostile file is not even opened
    assert built.available == ["lpips"] and not built.skipped and not marker.exists()
    lin = built.options["lpips"]["pretrained_model_path"]  # taken from the lpips package (hash checked)
    assert lin.endswith("weights/v0.1/alex.pth") and lin in built.notes["lpips"]
    assert "RANDOM torchvision AlexNet_Weights" in built.notes["lpips"]
    assert built.weights_verified["lpips"] is False  # a random stand-in: not the published metric
    d = built.score(sr, hr)["lpips"]
    assert np.isfinite(d) and d > 0.0
    assert built.score(hr, hr)["lpips"] == pytest.approx(0.0, abs=1e-6)

    # the same linear layers under pyiqa's own file name: found in pyiqa's cache, same value
    pyiqa_lin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lin, pyiqa_lin)
    torch.manual_seed(0)
    again = MetricSuite(["lpips"], random_backbones=True)
    torch.manual_seed(0)
    same_seed = MetricSuite(["lpips"], random_backbones=True)
    assert "pretrained_model_path" not in again.options["lpips"]
    assert str(pyiqa_lin) in again.notes["lpips"]
    assert again.score(sr, hr)["lpips"] == pytest.approx(same_seed.score(sr, hr)["lpips"], abs=1e-6)


def test_unhashed_files_get_a_weights_only_load_first(tmp_path, monkeypatch) -> None:
    """BRISQUE's SVM file has no hash in its name and pyiqa unpickles it with weights_only=False: srbench
    loads it weights-only first; a pickle that names code is refused, a tensors-only one goes to pyiqa."""
    from pyiqa.utils import download_util

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "pyiqa"))
    (svm,) = metric_files.required_files("brisque")
    assert svm.hash_prefix is None and svm.unpickled and svm.path == tmp_path / "pyiqa" / svm.filename
    marker = tmp_path / "PWNED"
    _hostile_pickle(svm.path, marker)
    suite = MetricSuite(["brisque"])
    why = suite.skipped["brisque"]
    assert str(svm.path) in why and "holds more than tensors" in why and "'posix.system'" in why
    assert "weights_only=False" not in why and not marker.exists()
    with pytest.raises(WeightsMissing, match="holds more than tensors"):
        MetricSuite(["brisque"], on_missing="error")
    assert not marker.exists()

    torch.save((torch.rand(10, 1), torch.rand(10, 36)), svm.path)  # the layout pyiqa reads: (sv_coef, sv)
    ok = MetricSuite(["brisque"])
    assert ok.available == ["brisque"] and ok.weights_verified["brisque"] is None  # no published hash

    # LIQE's text-feature cache is unpickled by pyiqa when present: it is checked the same way
    cache = [f for f in metric_files.required_files("liqe") if f.optional]
    assert [f.filename for f in cache] == ["liqe_text_feat.pt"] and cache[0].unpickled
    _hostile_pickle(cache[0].path, marker)
    assert "holds more than tensors" in (cache[0].refusal(cache[0].path) or "") and not marker.exists()


def test_allow_download_uses_srbench_downloader_and_checks_the_file(tmp_path, monkeypatch) -> None:
    """With allow_download, srbench fetches the missing file itself (never pyiqa/torchvision) and the
    downloaded file passes the same checks before any loader sees it."""
    from srbench.data import fetch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "PWNED"
    calls = []

    def fake_download(url, dest, **kw):
        calls.append(url)
        _hostile_pickle(Path(dest), marker)  # what a compromised mirror could serve
        return ""

    monkeypatch.setattr(fetch, "download", fake_download)
    suite = MetricSuite(["lpips"], allow_download=True)
    assert calls == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]
    assert "lpips" in suite.skipped and "is not the published" in suite.skipped["lpips"]
    assert not marker.exists()


def test_fr_only_with_hr_nr_always_and_shape_mismatch_crop(suite, monkeypatch) -> None:
    import pyiqa

    calls: list[str] = []
    real = pyiqa.create_metric
    monkeypatch.setattr(pyiqa, "create_metric", lambda name, **kw: calls.append(name) or real(name, **kw))
    local = MetricSuite(["psnr", "ssim", "niqe"])
    assert calls == ["psnr", "ssim", "niqe"]

    img = torch.from_numpy(skimage.data.coffee()[:200, :210].copy()).permute(2, 0, 1).float() / 255.0
    hr = torch.from_numpy(skimage.data.coffee()[5:195, 3:223].copy()).permute(2, 0, 1).float() / 255.0
    nr_only = local.score(img)
    assert set(nr_only) == {"niqe"} and np.isfinite(nr_only["niqe"])

    both = local.score(img, hr)  # SR 200x210, HR 190x220 -> both cropped to the top-left 190x210
    assert set(both) == {"psnr", "ssim", "niqe"}
    ref = local.score(img[:, :190, :210], hr[:, :190, :210])
    assert both["psnr"] == ref["psnr"] and both["ssim"] == ref["ssim"]
    assert both["niqe"] == nr_only["niqe"]  # NR metrics see the whole SR image
    assert calls == ["psnr", "ssim", "niqe"]  # scoring never rebuilds a metric

    tiny = local.score(torch.rand(3, 64, 64))  # below one NIQE block: NaN and a reason, no exception
    assert np.isnan(tiny["niqe"]) and "96" in local.errors["niqe"]
    assert local.score(img)["niqe"] == nr_only["niqe"] and not local.errors

    with pytest.raises(ValueError, match="expected"):
        local.score(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown metric"):
        MetricSuite(["psnr", "not-a-metric"])


def test_specs_agree_with_pyiqa_and_every_weight_file_resolves() -> None:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    specs = metric_specs()
    assert MetricSuite.specs() == specs
    for name, spec in specs.items():
        cfg = DEFAULT_CONFIGS[spec.pyiqa_name]
        assert spec.lower_better == cfg.get("lower_better", False), name
        if spec.kind == "set":  # pyiqa's FID compares two folders, not image pairs: its mode says NR
            assert name == "fid" and cfg["metric_mode"].lower() == "nr", name
        else:
            assert spec.kind == cfg["metric_mode"].lower(), name
        assert lower_better(name) == spec.lower_better
        for f in metric_files.required_files(name):  # names and URLs come from pyiqa/torchvision/timm
            if f.optional:  # a cache pyiqa writes itself (LIQE's text features): no URL
                continue
            assert f.url.startswith("https://") and f.url.endswith(f.filename), (name, f)
            # the test session's caches are empty; only the lpips package's copies of pyiqa's files count
            found = f.locate()
            assert found is None or (found in f.alternatives and name.startswith("lpips")), (name, found)
    assert lower_better("lpips") and lower_better("niqe") and not lower_better("musiq")
    assert DEFAULT_CONFIGS["maniqa"]["metric_opts"]["train_dataset"] == "koniq"  # "maniqa" = KonIQ model
    assert DEFAULT_CONFIGS["maniqa-pipal"]["metric_opts"]["train_dataset"] == "pipal"
    # the timm backbones srbench looks up are the ones pyiqa builds
    assert DEFAULT_CONFIGS["topiq_nr"]["metric_opts"]["semantic_model_name"] == "resnet50"
    assert DEFAULT_CONFIGS["nima"]["metric_opts"]["base_model_name"] == "inception_resnet_v2"
    assert (
        metric_files.required_files("maniqa")[0].hf_repo == "timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"
    )


def test_metric_configs() -> None:
    cfgs = {p.stem: yaml.safe_load(p.read_text()) for p in CONF.glob("*.yaml")}
    assert set(cfgs) >= {"default", "paper", "fast"}
    assert cfgs["default"]["names"] == ["psnr", "ssim", "lpips", "niqe"]
    assert cfgs["fast"]["names"] == ["psnr", "ssim"]
    for name, cfg in cfgs.items():
        # crop_border / y_channel belong to the protocol (conf/protocol/), never to a metrics config
        assert set(cfg) == {"names", "on_missing"}, name
        assert set(cfg["names"]) <= set(metric_specs()), name
        assert cfg["on_missing"] == "skip"
