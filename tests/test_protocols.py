"""Named protocols (conf/protocol/*.yaml): settings, cropping rules, HR-size handling, records, no mixing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from srbench.interface import SRBenchError
from srbench.protocol import Protocol

CONF = Path(__file__).resolve().parents[1] / "conf"


def load(name: str) -> Protocol:
    return Protocol.from_config(yaml.safe_load((CONF / "protocol" / f"{name}.yaml").read_text()))


def test_every_protocol_config_loads_and_says_where_it_comes_from() -> None:
    names = sorted(p.stem for p in (CONF / "protocol").glob("*.yaml"))
    assert {
        "full",
        "invsr_paper",
        "stablesr_paper",
        "seesr_paper",
        "dmsr_paper",
        "dossr_paper",
        "rgb",
    } <= set(names)
    for n in names:
        p = load(n)
        assert p.name == n and p.description, n
        if n.endswith("_paper"):
            assert p.reference, f"{n} must cite its source"


def test_the_papers_settings() -> None:
    s = load("stablesr_paper")
    assert (s.lr_centre_crop, s.crop_border, s.y_channel, s.lr_resize_short_side) == (128, 0, True, 128)
    assert (load("seesr_paper").lr_centre_crop, load("seesr_paper").crop_border) == (128, 4)
    inv = load("invsr_paper")
    assert (inv.lr_centre_crop, inv.crop_border, inv.y_channel, inv.hr_mismatch) == (None, 0, True, "crop")
    assert load("dmsr_paper").lr_centre_crop is None and load("dmsr_paper").y_channel  # SSIM on Y
    assert not load("rgb").y_channel
    assert load("dossr_paper").lr_centre_crop == 128


def test_centre_crop_takes_the_matching_hr_region() -> None:
    lr = torch.rand(3, 160, 200)
    hr = torch.rand(3, 640, 800)
    out_lr, out_hr = load("stablesr_paper").prepare(lr, hr, 4)
    assert out_lr.shape == (3, 128, 128) and out_hr is not None and out_hr.shape == (3, 512, 512)
    assert torch.equal(out_lr, lr[:, 16:144, 36:164])
    assert torch.equal(out_hr, hr[:, 64:576, 144:656])
    with pytest.raises(SRBenchError, match="smaller than the centre crop 128"):
        load("stablesr_paper").prepare(torch.rand(3, 100, 200), torch.rand(3, 400, 800), 4)


def test_hr_size_mismatch_is_an_error_or_the_common_region() -> None:
    lr, hr = torch.rand(3, 30, 40), torch.rand(3, 123, 157)  # HR not exactly 4 x LR (RealSR V3-style)
    with pytest.raises(SRBenchError, match=r"HR 157x123 is not 4 x LR 40x30"):
        load("full").prepare(lr, hr, 4)
    out_lr, out_hr = load("invsr_paper").prepare(lr, hr, 4)
    assert out_lr.shape == (3, 30, 39) and out_hr is not None and out_hr.shape == (3, 120, 156)
    assert torch.equal(out_hr, hr[:, :120, :156]) and torch.equal(out_lr, lr[:, :, :39])  # top-left, as InvSR


def test_lr_only_short_side_resize_then_crop() -> None:
    lr = torch.rand(3, 112, 200)  # a RealSet80-sized image with a short side below 128
    out, hr = load("stablesr_paper").prepare(lr, None, 4)
    assert out.shape == (3, 128, 128) and hr is None and out.min() >= 0 and out.max() <= 1
    big = torch.rand(3, 300, 200)
    assert load("stablesr_paper").prepare(big, None, 4)[0].shape == (3, 128, 128)
    # with an HR the resize is not applied (it would break the LR/HR geometry)
    lr2, hr2 = torch.rand(3, 128, 160), torch.rand(3, 512, 640)
    out2, _ = load("stablesr_paper").prepare(lr2, hr2, 4)
    assert torch.equal(out2, lr2[:, :, 16:144])


def test_backward_compatible_config_and_validation() -> None:
    old = {"name": "full", "crop_border": 0, "y_channel": True, "quantize": True}
    p = Protocol.from_config(old)
    lr, hr = torch.rand(3, 8, 8), torch.rand(3, 32, 32)
    out_lr, out_hr = p.prepare(lr, hr, 4)
    assert out_lr is lr and out_hr is hr and p.hr_mismatch == "error"
    assert {"hr_mismatch", "lr_resize_short_side", "reference"} <= set(p.as_dict())
    with pytest.raises(SRBenchError, match="unknown keys"):
        Protocol.from_config({"name": "x", "crop": 4})
    with pytest.raises(SRBenchError, match="hr_mismatch must be one of"):
        Protocol.from_config({"name": "x", "hr_mismatch": "resize"})
    with pytest.raises(SRBenchError, match="crop_border must be >= 0"):
        Protocol(name="x", crop_border=-1)


def _pairs(root: Path, hr_extra: int) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("LR", "HR"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        hr = rng.integers(0, 256, size=(32 + hr_extra, 32 + hr_extra, 3), dtype=np.uint8)
        Image.fromarray(hr).save(root / "HR" / f"im{i}.png")
        Image.fromarray(np.ascontiguousarray(hr[:32:4, :32:4])).save(root / "LR" / f"im{i}.png")
    return root


def _cfg(data: Path, protocol: str) -> dict:
    return {
        "method": {"name": "bicubic"},
        "steps": 1,
        "dataset": {"name": "toy", "kind": "paired", "lr_dir": str(data / "LR"), "hr_dir": str(data / "HR")},
        "protocol": yaml.safe_load((CONF / "protocol" / f"{protocol}.yaml").read_text()),
        "metrics": {"names": ["psnr"], "on_missing": "skip"},
        "seed": 0,
        "device": "cpu",
        "dtype": "fp32",
        "warmup": 0,
        "save_images": False,
        "overwrite": False,
        "run_name": None,
        "wandb": {"enabled": False},
    }


def test_runs_record_their_protocol_and_the_leaderboard_keeps_protocols_apart(tmp_path: Path) -> None:
    import methods.bicubic  # noqa: F401  (registers "bicubic")
    from srbench.leaderboard import collect, to_markdown
    from srbench.runner import run_cell

    data = _pairs(tmp_path / "data", hr_extra=3)  # HR 35x35 for LR 8x8
    strict = run_cell(_cfg(data, "full"), tmp_path / "runs" / "toy" / "full" / "bicubic" / "steps1")
    assert strict.summary is not None and strict.summary["n_ok"] == 0
    assert "HR 35x35 is not 4 x LR 8x8" in strict.summary["failures"][0]["error"]
    loose = run_cell(
        _cfg(data, "invsr_paper"), tmp_path / "runs" / "toy" / "invsr_paper" / "bicubic" / "steps1"
    )
    s = json.loads((loose.run_dir / "summary.json").read_text())
    assert loose.status == "done" and s["n_ok"] == 3
    assert s["protocol"] == "invsr_paper" and s["protocol_settings"]["hr_mismatch"] == "crop"
    assert s["protocol_settings"]["reference"].startswith("InvSR")
    assert s["scale"] == 4  # the method's SR scale: the leaderboard never ranks x2 with x4
    # a second protocol on the same data: its own table, never ranked with the first
    rgb = run_cell(
        _cfg(_pairs(tmp_path / "d2", 0), "rgb"), tmp_path / "runs" / "toy" / "rgb" / "bicubic" / "steps1"
    )
    assert rgb.status == "done"
    df, lower = collect([tmp_path / "runs"])
    md = to_markdown(df, lower)
    assert "## toy — protocol `invsr_paper`" in md and "## toy — protocol `rgb`" in md
    assert sorted(df[df["status"] == "done"]["protocol"]) == ["invsr_paper", "rgb"]
    # the cell whose every image failed is listed with its status, never dropped
    assert df[df["status"] == "failed"]["protocol"].tolist() == ["full"]
    assert "## Cells not ranked" in md
    rows = re.sub(r" {2,}", " ", md).splitlines()  # tabulate pads columns
    (line,) = [ln for ln in rows if ln.startswith("| toy | full | bicubic")]
    assert "| 1 | failed | every image failed (3); first: " in line


def test_cells_recorded_with_the_boolean_quantize_still_match_today_s_mode(tmp_path: Path) -> None:
    """Cells finished before quantize had modes recorded ``quantize: true`` (= round): a rerun finds them
    finished instead of refusing them, and the leaderboard ranks them with today's round cells."""
    import methods.bicubic  # noqa: F401  (registers "bicubic")
    from srbench.leaderboard import collect
    from srbench.runner import run_cell

    data = _pairs(tmp_path / "data", hr_extra=0)
    runs = tmp_path / "runs"
    old = run_cell(_cfg(data, "full"), runs / "toy" / "full" / "bicubic" / "steps1")
    assert old.status == "done"
    for name, key in (("cell.json", ("outputs", "protocol")), ("summary.json", ("protocol_settings",))):
        path = old.run_dir / name
        record = json.loads(path.read_text())
        node = record
        for k in key:
            node = node[k]
        assert node["quantize"] == "round"
        node["quantize"] = True  # as written before the modes existed
        path.write_text(json.dumps(record))
    assert run_cell(_cfg(data, "full"), old.run_dir).status == "already_done"
    cfg = _cfg(data, "full")
    cfg["run_name"] = "bicubic-new"
    assert run_cell(cfg, runs / "toy" / "full" / "bicubic-new" / "steps1").status == "done"
    df, _ = collect([runs])
    done = df[df["status"] == "done"]
    assert len(done) == 2 and done["protocol_settings"].nunique() == 1  # one table


@pytest.mark.parametrize(
    "dataset,protocol",
    [("realsr_crop128", "stablesr_paper"), ("realset80", "dmsr_paper"), ("imagenet_test", "invsr_paper")],
)
def test_hydra_composes_the_dataset_and_protocol_groups(dataset: str, protocol: str) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={dataset}", f"protocol={protocol}"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert plain["dataset"]["kind"] == "manifest" and plain["dataset"]["name"] == dataset
    assert Protocol.from_config(plain["protocol"]).name == protocol


# ---- 8-bit quantisation per protocol ------------------------------------------------------------------
def _hostile() -> torch.Tensor:
    """Values on, just below, just above and exactly half-way between 8-bit levels, and out of range."""
    k = torch.arange(0, 256, dtype=torch.float32)
    vals = torch.cat([k, k + 0.5, k + 0.999, k + 0.001, torch.tensor([-3.0, -0.4, 255.6, 400.0])]) / 255
    return vals.view(1, 1, -1).expand(3, 4, -1).clone()


def test_round_and_floor_are_what_the_authors_save() -> None:
    from skimage import img_as_ubyte

    from srbench.protocol import quantize_8bit

    x = _hostile()
    hwc = x.permute(1, 2, 0).numpy()
    # InvSR: skimage.img_as_ubyte on the clamped output (utils/util_image.py imwrite)
    want_round = img_as_ubyte(np.clip(hwc, 0, 1)).astype(np.float32) / 255
    # StableSR / DoSSR: (255. * x).astype(np.uint8) after the clamp (truncation)
    want_floor = (255.0 * np.clip(hwc, 0, 1)).astype(np.uint8).astype(np.float32) / 255
    got_round = quantize_8bit(x, "round").permute(1, 2, 0).numpy()
    got_floor = quantize_8bit(x, "floor").permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got_round, want_round)
    np.testing.assert_array_equal(got_floor, want_floor)
    assert (got_round != got_floor).any()
    assert torch.equal(quantize_8bit(x, "none"), x)
    with pytest.raises(SRBenchError, match="quantize must be one of"):
        quantize_8bit(x, "ceil")


def test_each_paper_protocol_quantises_as_its_authors_code() -> None:
    modes = {n: load(n).quantize for n in ("invsr_paper", "stablesr_paper", "dossr_paper", "seesr_paper")}
    assert modes == {
        "invsr_paper": "round",  # img_as_ubyte
        "stablesr_paper": "floor",  # astype(np.uint8)
        "dossr_paper": "floor",  # astype(np.uint8)
        "seesr_paper": "floor",  # ToPILImage: mul(255).byte()
    }
    assert load("dmsr_paper").quantize == "round" and load("full").quantize == "round"
    # booleans of older configs keep their meaning; a bad mode names the protocol
    assert Protocol(name="old", quantize=True).quantize == "round"  # type: ignore[arg-type]
    assert Protocol(name="old", quantize=False).quantize == "none"  # type: ignore[arg-type]
    with pytest.raises(SRBenchError, match="protocol 'x': quantize must be one of"):
        Protocol(name="x", quantize="truncate")


def test_the_runner_scores_the_quantised_sr_and_records_the_mode(tmp_path: Path) -> None:
    import methods.bicubic  # noqa: F401  (registers "bicubic")
    from srbench.runner import run_cell

    data = _pairs(tmp_path / "data", hr_extra=0)
    rows = {}
    for mode in ("round", "floor", "none"):
        cfg = _cfg(data, "full")
        cfg["protocol"]["quantize"] = mode
        cfg["save_images"] = True
        out = run_cell(cfg, tmp_path / mode)
        rows[mode] = [json.loads(line) for line in (out.run_dir / "per_image.jsonl").read_text().splitlines()]
        assert all(r["quantize"] == mode for r in rows[mode])
    psnr = {m: [r["psnr"] for r in rs] for m, rs in rows.items()}
    assert len({tuple(v) for v in psnr.values()}) == 3  # the mode changes the score
    # the saved PNG of a floor run is the truncated SR
    from srbench.protocol import quantize_8bit
    from srbench.registry import create_method

    m = create_method("bicubic")
    m.load("cpu")
    lr = torch.from_numpy(np.asarray(Image.open(data / "LR" / "im0.png"), dtype=np.float32) / 255)
    sr = m.upscale(lr.permute(2, 0, 1)[None], steps=1)[0]
    png = np.asarray(Image.open(tmp_path / "floor" / "images" / "im0.png"))
    want = (quantize_8bit(sr, "floor") * 255).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(png, want)
