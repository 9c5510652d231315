"""``srbench report``: the paper's table (markdown, LaTeX), curves, visual comparisons and one HTML page,
built from real cells: 8 photos (64-px HR crops, LR by PIL bicubic), bicubic, nearest at 1 and 2 "steps"
(the test plugin slow_nearest) and an external folder of magenta images (the worst row on every image)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srbench.data.demo import centre_crop, load_photo
from srbench.report import report_cli, write_report
from srbench.runner import _METHODS, cell_dir, run_cell
from srbench.score import compose

PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "gravel", "immunohistochemistry", "rocket", "page")
MAGENTA = (255, 0, 255)
TABLE_HEAD = (0x1F, 0x4E, 0x79)  # the HTML tables' header colour


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    data, runs = tmp / "data", tmp / "runs"
    for sub in ("LR", "HR"):
        (data / sub).mkdir(parents=True)
    for name in PHOTOS:
        hr = Image.fromarray(centre_crop(load_photo(name), 64))
        hr.save(data / "HR" / f"{name}.png")
        hr.resize((16, 16), Image.BICUBIC).save(data / "LR" / f"{name}.png")
    magenta = tmp / "magenta"
    magenta.mkdir()
    for name in PHOTOS:
        Image.new("RGB", (64, 64), MAGENTA).save(magenta / f"{name}.png")
    common = ["dataset=paired", "dataset.name=photos", f"dataset.lr_dir={data / 'LR'}"]
    common += [f"dataset.hr_dir={data / 'HR'}", "metrics.names=[psnr,ssim]", f"out_dir={runs}"]
    nearest = ["method=bicubic", "method.name=slow_nearest", "plugins=[tests.sweep_plugins]"]
    nearest += ["run_name=nearest", "+method.real=true", "+method.darken_per_step=0.1"]
    _METHODS.clear()
    for over in (
        ["method=bicubic"],
        [*nearest, "steps=1"],
        [*nearest, "steps=2"],
        ["method=precomputed", f"method.dir={magenta}", "run_name=magenta"],
    ):
        cfg = compose([*over, *common])
        assert run_cell(cfg, cell_dir(cfg, runs)).status == "done"
    return runs


def test_report_tables_mark_only_significant_best_and_second(results: Path, tmp_path: Path) -> None:
    rep = write_report([results], tmp_path / "rep", images=["rocket"])
    md, tex = rep.markdown.read_text(), rep.latex.read_text()
    squeezed = re.sub(r" {2,}", " ", md)
    # bicubic beats every row on all 8 images (p = 2/256 each, Holm <= 0.023): bold; nearest at 1 step beats
    # nearest at 2 steps (darker) and magenta on all 8: underlined; the others are never marked
    lines = squeezed.splitlines()
    bicubic = next(ln for ln in lines if ln.startswith("| bicubic |"))
    nearest1 = next(ln for ln in lines if re.match(r"\| nearest \(.*\) \| 1 \|", ln))
    rest = [ln for ln in lines if ln.startswith(("| magenta [external] |", "| nearest")) and ln != nearest1]
    assert bicubic.count("**") == 4 and "<u>" not in bicubic  # PSNR and SSIM bold
    assert nearest1.count("<u>") == 2 and "**" not in nearest1
    assert len(rest) == 2 and not any("**" in ln or "<u>" in ln for ln in rest)
    assert "PSNR ↑" in md and "SSIM ↑" in md and "Protocol `full`" in md
    assert "photos: 8 images" in md and "Steps per row (1, 2)" in md and "weights: real" in md
    assert "Scored by srbench from released outputs: magenta" in md
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\textbf{", "\\underline{", "$\\uparrow$"):
        assert rule in tex, rule
    assert "\\caption{Protocol full" in tex and "magenta [external]" in tex

    assert [p.name for p in rep.steps_plots] == ["steps__photos__full.png"]  # nearest ran at 1 and 2 steps
    assert [p.name for p in rep.latency_plots] == ["photos__full.png"]
    (grid,) = rep.grids
    assert grid.name == "photos__full__rocket.png"
    arr = np.asarray(Image.open(grid).convert("RGB"))
    assert (np.abs(arr.astype(int) - MAGENTA).sum(axis=2) < 30).sum() > 1000  # the magenta column is there


def test_report_picks_the_most_discriminative_images_and_writes_one_html_page(
    results: Path, tmp_path: Path
) -> None:
    assert report_cli([str(results), "--out", str(tmp_path / "rep"), "--n-images", "1"]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3  # steps, latency, one grid: all embedded
    assert "http://" not in html and "https://" not in html  # opens offline
    assert 'class="dataframe sortable"' in html and html.count("<tr>") > 32  # 4 methods x 8 images
    assert "font-weight: bold" in html and "text-decoration: underline" in html


@pytest.mark.browser
def test_the_html_page_renders_in_a_headless_browser(results: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it from Debian where apt-get works)")
    write_report([results], tmp_path / "rep", images=["rocket"])
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += [f"--screenshot={shot}", "--window-size=1400,4200", (tmp_path / "rep" / "report.html").as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-2000:]
    arr = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    near = lambda colour: (np.abs(arr - colour).sum(axis=2) < 24).sum()  # noqa: E731
    assert near(TABLE_HEAD) > 2000, "no table header drawn"  # the tables' header rows
    assert near(MAGENTA) > 500, "the comparison grid image was not drawn"  # the external column of the grid
