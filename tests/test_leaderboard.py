"""Leaderboard aggregation: one row per cell, arrows, best per column, protocols never mixed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from srbench.leaderboard import collect, write_leaderboard

OFFSETS = [-0.35, -0.25, -0.15, -0.05, 0.05, 0.15, 0.25, 0.35]  # per-image spread around the mean


def _summary(
    root: Path,
    method: str,
    steps: int,
    dataset: str,
    protocol: str,
    psnr: float,
    niqe: float,
    real: bool = True,
    status: str = "done",
    *,
    seed: int = 0,
    variant: str = "",
    options: dict[str, Any] | None = None,
    fingerprint: str = "f" * 64,
    settings: dict[str, Any] | None = None,
    psnr_images: list[float] | None = None,
    scale: int | None = None,
) -> Path:
    """A cell as the runner writes it: summary.json and per_image.csv (8 images unless given)."""
    psnr_images = psnr_images or [psnr + o for o in OFFSETS]
    niqe_images = [niqe - o for o in OFFSETS][: len(psnr_images)]
    d = root / dataset / protocol / (method + (f"-{variant}" if variant else "")) / f"steps{steps}-seed{seed}"
    d.mkdir(parents=True)
    s: dict[str, Any] = {
        "status": status,
        "method": method,
        "variant": variant,
        "options": options or {},
        "steps": steps,
        "seed": seed,
        "dataset": dataset,
        "dataset_fingerprint": {"sha256": fingerprint, "n_images": len(psnr_images)},
        "protocol": protocol,
        "protocol_settings": settings or {"name": protocol, "crop_border": 0},
        "weights": {"label": "real" if real else "random", "real": real},
        "n_ok": len(psnr_images),
        "n_failed": 0,
        "metrics": {
            "psnr": {"mean": float(np.mean(psnr_images)), "ci95": 0.5, "lower_better": False},
            "niqe": {"mean": float(np.mean(niqe_images)), "ci95": 0.1, "lower_better": True},
        },
        "latency_s": {"total": {"median": 0.25, "p90": 0.3}},
        "environment": {"device_name": "CPU", "dtype": "fp32"},
    }
    if scale is not None:
        s["scale"] = scale
    if status != "done":
        s["reason" if status == "skipped" else "error"] = f"{method} {status} (test)"
    (d / "summary.json").write_text(json.dumps(s))
    ids = [f"im{i}" for i in range(len(psnr_images))]
    pd.DataFrame({"id": ids, "status": "ok", "psnr": psnr_images, "niqe": niqe_images}).to_csv(
        d / "per_image.csv", index=False
    )
    return d


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _summary(root, "realesrgan", 1, "demo", "full", 24.0, 4.0)
    _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0)
    _summary(root, "invsr", 1, "demo", "full", 25.0, 3.0, real=False)  # random weights: never "best"
    _summary(root, "bicubic", 1, "demo", "crop128", 30.0, 6.0, settings={"name": "crop128", "crop_border": 4})
    _summary(root, "broken", 1, "demo", "full", 99.0, 0.0, status="failed")
    return root


def test_collect_one_row_per_cell(runs: Path) -> None:
    df, lower = collect([runs])
    assert lower == {"psnr": False, "niqe": True}
    done = df[df["status"] == "done"]
    assert set(zip(done["method"], done["protocol"], strict=True)) == {
        ("realesrgan", "full"),
        ("bicubic", "full"),
        ("invsr", "full"),
        ("bicubic", "crop128"),
    }
    # the failed cell is listed with its reason, never dropped
    (failed,) = df[df["status"] == "failed"].itertuples()
    assert failed.method == "broken" and failed.reason == "broken failed (test)"


def test_markdown_and_csv(runs: Path, tmp_path: Path) -> None:
    csv_path, md_path, md = write_leaderboard([runs], tmp_path / "lb")
    md = _squeeze(md)  # tabulate pads columns
    table = pd.read_csv(csv_path)
    assert (table["status"] == "done").sum() == 4 and (table["status"] == "failed").sum() == 1
    assert _squeeze(md_path.read_text()) == md
    assert "psnr ↑" in md and "niqe ↓" in md
    # protocols get separate tables; the crop128 bicubic row (30 dB) is not ranked against full-image rows
    full, crop = _section(md, "demo — protocol `full`"), _section(md, "demo — protocol `crop128`")
    # realesrgan beats bicubic on each of the 8 images: significantly best, so bold; the random row never is
    assert "**24.00**" in full and "**4.0000**" in full
    assert "25.00" in full and "**25.00**" not in full
    assert "30.00" in crop and "**30.00**" not in crop  # a single row has no "best"
    assert "random" in md and "not results" in md
    assert "| demo | full | broken | 1 | failed | broken failed (test) |" in md


def _squeeze(text: str) -> str:
    """Markdown with the column padding tabulate adds collapsed: ``| a | 1 |`` whatever the widths."""
    return re.sub(r" {2,}", " ", text)


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        collect([tmp_path / "nope"])


def test_pareto_front() -> None:
    from srbench.leaderboard import pareto_front

    lat = [1.0, 2.0, 3.0, 0.5, 2.5]
    psnr = [24.0, 25.0, 24.5, 20.0, 26.0]
    # (3.0, 24.5) is beaten by (2.0, 25.0); the rest trade latency for quality
    assert pareto_front(lat, psnr, lower_better=False) == [3, 0, 1, 4]
    lpips = [0.3, 0.2, 0.25, 0.5, 0.1]
    assert pareto_front(lat, lpips, lower_better=True) == [3, 0, 1, 4]


def test_ranks_and_plots(runs: Path, tmp_path: Path) -> None:
    csv_path, _, md = write_leaderboard([runs], tmp_path / "lb")
    md = _squeeze(md)  # tabulate pads columns
    df = pd.read_csv(csv_path)
    df = df[df["status"] == "done"]
    real_full = df[(df["protocol"] == "full") & (df["weights"] == "real")].set_index("method")
    assert real_full.loc["realesrgan", "psnr_rank"] == 1 and real_full.loc["bicubic", "niqe_rank"] == 2
    assert df.set_index("method").loc["invsr", "psnr_rank"] == 1  # ranked among random rows only
    full = _section(md, "demo — protocol `full`")
    assert full.index("| realesrgan") < full.index("| bicubic") < full.index("| invsr")  # real rows first
    assert "**24.00** ± 0.50" in full and "23.00 ± 0.50" in full
    png = tmp_path / "lb" / "plots" / "demo__full.png"
    assert png.is_file() and png.stat().st_size > 5000
    assert "![quality vs latency, demo — protocol full](plots/demo__full.png)" in md


def test_tables_split_on_image_set_and_protocol_settings_and_say_why(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _summary(root, "realesrgan", 1, "demo", "full", 24.0, 4.0)
    _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0)
    # the same dataset name on other images, and the same protocol name with other settings
    _summary(root, "dossr", 1, "demo", "full", 26.0, 3.0, fingerprint="e" * 64, psnr_images=[26.0] * 7)
    crop4 = {"name": "full", "crop_border": 4}
    _summary(root, "invsr", 1, "demo", "full", 25.0, 3.5, settings=crop4)
    _, _, md = write_leaderboard([root], tmp_path / "lb")
    md = _squeeze(md)  # tabulate pads columns
    main = _section(md, "demo — protocol `full`")
    assert "| realesrgan" in main and "| bicubic" in main and "dossr" not in main and "invsr" not in main
    other_images = _section(md, "demo — protocol `full` — images eeeeeeee")
    assert "| dossr" in other_images
    assert "a different image set: fingerprint eeeeeeee (7 images) vs ffffffff (8 images)" in other_images
    (title,) = [ln for ln in md.splitlines() if ln.startswith("## demo — protocol `full` — settings")]
    settings = _section(md, title[3:])
    assert "| invsr" in settings and "protocol settings differ (crop_border 4 vs 0)" in settings


def test_cells_of_another_scale_get_their_own_table(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _summary(root, "realesrgan", 1, "demo", "full", 24.0, 4.0)  # no scale recorded: x4, as before issue 20
    _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0, scale=4)
    _summary(root, "stablesr", 1, "demo", "full", 30.0, 3.0, scale=2)  # method.upscale=2 on the same LR
    _, _, md = write_leaderboard([root], tmp_path / "lb")
    md = _squeeze(md)
    main = _section(md, "demo — protocol `full`")
    assert "| realesrgan" in main and "| bicubic" in main and "stablesr" not in main
    x2 = _section(md, "demo — protocol `full` — x2")
    assert "| stablesr" in x2 and "another scale: x2 vs x4" in x2


def test_bold_only_where_the_best_is_significantly_better(tmp_path: Path) -> None:
    from scipy.stats import wilcoxon

    root = tmp_path / "runs"
    best = [24.0 + o for o in OFFSETS]
    worse = [v - 1.0 for v in best]  # worse on every image
    close = [v + d for v, d in zip(best, [0.3, -0.3, 0.3, -0.3, 0.3, -0.3, 0.3, -0.5], strict=True)]
    _summary(root, "a", 1, "demo", "full", 0, 4.0, psnr_images=best)
    _summary(root, "b", 1, "demo", "full", 0, 7.0, psnr_images=worse)
    _summary(root, "c", 1, "demo", "full", 0, 5.0, psnr_images=close)
    csv_path, _, md = write_leaderboard([root], tmp_path / "lb")
    md = _squeeze(md)  # tabulate pads columns
    df = pd.read_csv(csv_path).set_index("method")
    raw_b = wilcoxon(np.subtract(worse, best)).pvalue
    raw_c = wilcoxon(np.subtract(close, best)).pvalue
    assert df.loc["b", "psnr_p_raw"] == pytest.approx(raw_b) and df.loc["c", "psnr_p_raw"] == pytest.approx(
        raw_c
    )
    # Holm over the two comparisons: the smaller p-value is doubled, the larger kept (both capped at 1)
    assert df.loc["b", "psnr_p"] == pytest.approx(2 * raw_b) and df.loc["c", "psnr_p"] == pytest.approx(raw_c)
    assert df.loc["b", "psnr_p"] < 0.05 <= df.loc["c", "psnr_p"] and np.isnan(df.loc["a", "psnr_p"])
    # a is the best PSNR but not significantly better than c: no bold; its NIQE (4 vs 5 and 7) is
    table = _section(md, "demo — protocol `full`")
    assert "**24.00**" not in table and "24.00 ± 0.50" in table and "**4.0000**" in table
    # without c, a is significantly best
    (root / "demo" / "full" / "c" / "steps1-seed0" / "summary.json").unlink()
    _, _, md = write_leaderboard([root], tmp_path / "lb2")
    md = _squeeze(md)  # tabulate pads columns
    assert "**24.00** ± 0.50" in _section(md, "demo — protocol `full`")


def test_seeds_make_one_row_with_the_across_seed_sd_and_a_per_image_interval(tmp_path: Path) -> None:
    from scipy import stats

    root = tmp_path / "runs"
    for seed, shift in ((0, 0.0), (1, 0.1), (2, 0.2)):
        _summary(
            root, "invsr", 1, "demo", "full", 0, 4.0, seed=seed, psnr_images=[24 + shift + o for o in OFFSETS]
        )
    _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0)
    csv_path, _, md = write_leaderboard([root], tmp_path / "lb")
    md = _squeeze(md)  # tabulate pads columns
    df = pd.read_csv(csv_path).set_index("method")
    row = df.loc["invsr"]
    assert row["seeds"] == "0,1,2" and row["n_seeds"] == 3
    assert row["psnr"] == pytest.approx(24.1) and row["psnr_seed_sd"] == pytest.approx(0.1)
    # the interval is over the 8 per-image means across seeds, not over the 24 (seed, image) scores
    half = stats.t.ppf(0.975, 7) * np.std(OFFSETS, ddof=1) / np.sqrt(8)
    assert row["psnr_ci95"] == pytest.approx(half) and row["psnr_n"] == 8
    assert "| invsr | 1 | real | 0,1,2 | **24.10** ± " in md and "(seed sd 0.10)" in md


def test_variants_of_a_method_are_separate_rows(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _summary(root, "realesrgan", 1, "demo", "full", 24.0, 4.0)
    _summary(
        root, "realesrgan", 1, "demo", "full", 24.1, 4.0, variant="a60caa9c", options={"method.tile": 32}
    )
    df = pd.read_csv(write_leaderboard([root], tmp_path / "lb")[0])
    assert sorted(df["method"]) == ["realesrgan", "realesrgan (tile=32)"]
    assert sorted(df["variant"].fillna("")) == ["", "a60caa9c"]


def test_malformed_summaries_are_listed_as_unreadable_and_the_rest_is_built(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _summary(root, "realesrgan", 1, "demo", "full", 24.0, 4.0)
    _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0, status="skipped")
    bad = {
        "list": [1, 2],
        "metric": {
            "status": "done",
            "method": "x",
            "dataset": "demo",
            "protocol": "full",
            "steps": 1,
            "metrics": {"psnr": {"mean": "high"}},
        },
        "dataset": {
            "status": "done",
            "method": "x",
            "dataset": 5,
            "protocol": "full",
            "steps": 1,
            "metrics": {},
        },
        "status": {"status": "finished"},
    }
    for name, body in bad.items():
        (root / name).mkdir()
        (root / name / "summary.json").write_text(json.dumps(body))
    (root / "torn").mkdir()
    (root / "torn" / "summary.json").write_text('{"status": ')
    csv_path, _, md = write_leaderboard([root], tmp_path / "lb")
    md = _squeeze(md)  # tabulate pads columns
    df = pd.read_csv(csv_path)
    reasons = dict(zip(df["run_dir"].map(lambda p: Path(p).name), df["reason"], strict=True))
    assert (df["status"] == "unreadable").sum() == 5
    assert "not a JSON object but list" in reasons["list"]
    assert "metrics.psnr.mean is 'high', not a number" in reasons["metric"]
    assert "'dataset' is int 5" in reasons["dataset"] and "unknown status 'finished'" in reasons["status"]
    assert "Expecting value" in reasons["torn"]
    assert "| realesrgan | 1 | real | 24.00 ± 0.50 |" in md  # the table is still built
    assert "| demo | full | bicubic | 1 | skipped | bicubic skipped (test) |" in md


def test_second_best_is_marked_only_where_it_beats_every_row_below(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    best = [24.0 + o for o in OFFSETS]
    _summary(root, "a", 1, "demo", "full", 0, 4.0, psnr_images=best)
    _summary(root, "b", 1, "demo", "full", 0, 5.0, psnr_images=[v - 1.0 for v in best])
    _summary(root, "c", 1, "demo", "full", 0, 6.0, psnr_images=[v - 2.0 for v in best])
    # d: just below b, but not on every image: b is not significantly better than d
    d = [v - 1.0 + e for v, e in zip(best, [-0.3, 0.2, -0.3, 0.2, -0.3, 0.2, -0.3, 0.1], strict=True)]
    _summary(root, "d", 1, "demo", "full", 0, 7.0, psnr_images=d)
    df = pd.read_csv(write_leaderboard([root], tmp_path / "lb", plots=False)[0]).set_index("method")
    assert df.loc["a", "psnr_best_significant"] and not df.loc["b", "psnr_second_significant"]
    (root / "demo" / "full" / "d" / "steps1-seed0" / "summary.json").unlink()
    df = pd.read_csv(write_leaderboard([root], tmp_path / "lb2", plots=False)[0]).set_index("method")
    assert df.loc["b", "psnr_second_significant"] and not df.loc["c", "psnr_second_significant"]
    # niqe: a < b < c < (d gone) on every image the same way: a bold, b second
    assert df.loc["a", "niqe_best_significant"] and df.loc["b", "niqe_second_significant"]


def test_a_rewritten_summary_is_read_again_not_taken_from_the_index(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _summary(root, "a", 1, "demo", "full", 24.0, 4.0)
    cell = _summary(root, "b", 1, "demo", "full", 23.0, 7.0)
    assert pd.read_csv(write_leaderboard([root], tmp_path / "lb", plots=False)[0])["psnr"].max() == 24.0
    s = json.loads((cell / "summary.json").read_text())
    s["metrics"]["psnr"]["mean"] = 30.0  # e.g. a rescored or rerun cell
    (cell / "summary.json").write_text(json.dumps(s))
    df = pd.read_csv(write_leaderboard([root], tmp_path / "lb2", plots=False)[0]).set_index("method")
    assert df.loc["b", "psnr"] == 30.0


def test_names_read_from_a_summary_never_choose_where_a_plot_is_written(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    d = _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0)
    s = json.loads((d / "summary.json").read_text())
    s["dataset"] = "../../escaped"  # a hostile (or hand-edited) summary
    (d / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "deep" / "lb"
    write_leaderboard([root], out)
    pngs = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert pngs and all(p.parts[:3] == ("deep", "lb", "plots") for p in pngs), pngs
