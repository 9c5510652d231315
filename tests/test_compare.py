"""Paper reference tables and `srbench compare`: matching, deltas, never across protocols."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from srbench.metrics import metric_specs
from srbench.reference.compare import (
    COLUMNS,
    compare_cli,
    compare_summary,
    format_markdown,
    load_reference,
    lower_better,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_reference_tables_are_well_formed() -> None:
    rows = load_reference()
    assert len(rows) > 500
    protocols = {p.stem for p in (CONF / "protocol").glob("*.yaml")}
    known_metrics = set(metric_specs()) | {"fid"}
    seen = set()
    for r in rows:
        assert r.protocol in protocols, r
        assert r.metric in known_metrics, r
        assert lower_better(r.metric) is not None
        key = (r.paper, r.table, r.method, r.steps, r.dataset, r.protocol, r.setting, r.metric)
        assert key not in seen, f"duplicate reference row {key}"
        seen.add(key)

    # spot checks against the papers (research/*.md)
    def value(**kw: Any) -> float:
        hits = [r for r in rows if all(getattr(r, k) == v for k, v in kw.items())]
        assert len(hits) == 1, (kw, hits)
        return hits[0].value

    assert value(method="invsr", dataset="imagenet_test", steps=1, setting="", metric="psnr") == 24.14
    assert value(method="invsr", dataset="realsr", metric="musiq") == 67.4586
    assert value(method="dmsr", dataset="realset80", steps=1, metric="liqe", table="Tab. 1") == 4.652
    assert value(method="invsr", dataset="realsr_crop128", protocol="dmsr_paper", metric="psnr-rgb") == 23.74
    assert (
        value(method="stablesr", dataset="drealsr_crop128", protocol="stablesr_paper", metric="ssim")
        == 0.7536
    )
    assert value(method="dossr", dataset="realsr_crop128", steps=5, metric="maniqa") == 0.5781
    assert value(method="osediff", dataset="drealsr_crop128", metric="maniqa-pipal") == 0.5895


def _summary(**over: Any) -> dict[str, Any]:
    s = {
        "status": "done",
        "method": "invsr-wavelet",
        "method_name": "invsr",
        "steps": 1,
        "dataset": "imagenet_test",
        "protocol": "invsr_paper",
        "weights": {"label": "real"},
        "metrics": {
            "psnr": {"mean": 24.0, "ci95": 0.1, "n": 3000, "lower_better": False},
            "lpips-vgg": {"mean": 0.2400, "ci95": 0.002, "n": 3000, "lower_better": True},
            "dists": {"mean": 0.1, "ci95": 0.01, "n": 3000, "lower_better": True},
        },
    }
    return s | over


def test_deltas_directions_and_missing_metrics() -> None:
    c = compare_summary(_summary(), load_reference())
    by = {ln.metric: ln for ln in c.lines}
    assert set(by) == {"psnr", "ssim", "lpips-vgg", "niqe", "pi", "clipiqa", "musiq"}  # the {200} row only
    assert by["psnr"].paper_value == 24.14 and by["psnr"].delta == pytest.approx(-0.14)
    assert by["psnr"].verdict == "worse" and by["psnr"].rel_pct == pytest.approx(-0.58, abs=0.01)
    assert by["lpips-vgg"].delta == pytest.approx(0.24 - 0.2517) and by["lpips-vgg"].verdict == "better"
    assert by["ssim"].ours is None and by["ssim"].verdict == "n/a"
    assert c.run_only == ["dists"]
    md = format_markdown(c)
    assert "| psnr ↑ | 24.00 ± 0.10 | 24.14 | -0.14 | -0.6% | worse |" in md
    assert "not measured in this run: ssim, niqe, pi, clipiqa, musiq" in md
    assert "| lpips-vgg ↓ | 0.2400 ± 0.0020 | 0.2517 | -0.0117 | -4.6% | better |" in md
    assert "NOT results" not in md


def test_never_compares_across_protocols_or_steps() -> None:
    refs = load_reference()
    other = compare_summary(_summary(protocol="full"), refs)
    assert not other.lines and "invsr_paper" in other.other_protocols
    assert "rerun with protocol=invsr_paper" in other.message
    steps = compare_summary(_summary(steps=2), refs)
    assert not steps.lines and 1 in steps.other_steps and 5 in steps.other_steps
    # the DM-SR paper's InvSR numbers are only used under the DM-SR protocol
    dm = compare_summary(_summary(dataset="realsr_crop128", protocol="dmsr_paper"), refs)
    assert dm.lines and {ln.paper for ln in dm.lines} == {"DM-SR (under review)"}
    st = compare_summary(_summary(dataset="realsr_crop128", protocol="stablesr_paper"), refs)
    assert not st.lines  # StableSR's paper has no InvSR row


def test_settings_and_method_override() -> None:
    refs = load_reference()
    all_rows = compare_summary(_summary(), refs, setting="*")
    assert {ln.setting for ln in all_rows.lines} == {
        "",
        "timesteps={250}",
        "timesteps={150}",
        "timesteps={100}",
    }
    tau = compare_summary(_summary(), refs, setting="timesteps={100}")
    assert {ln.paper_value for ln in tau.lines if ln.metric == "psnr"} == {24.66}
    s = _summary(
        method="mine", method_name="mine", dataset="realsr_crop128", protocol="dossr_paper", steps=200
    )
    as_stablesr = compare_summary(s, refs, method="stablesr")
    assert {ln.metric for ln in as_stablesr.lines} >= {"psnr", "maniqa"}


def _write_run(root: Path, summary: dict[str, Any]) -> Path:
    d = root / summary["dataset"] / summary["protocol"] / summary["method"] / f"steps{summary['steps']}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "runs", _summary(weights={"label": "random"}))
    _write_run(tmp_path / "runs", _summary(method="bicubic", method_name="bicubic", protocol="rgb"))
    assert compare_cli([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "imagenet_test / protocol `invsr_paper`" in out and "NOT results" in out
    assert "no paper numbers for bicubic" in out
    assert compare_cli([str(tmp_path / "runs"), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run_dir,method,method_name,steps,dataset,protocol,weights,metric,ours")
    assert len(lines) == 1 + 7
    extra = tmp_path / "mine.csv"
    extra.write_text(",".join(COLUMNS) + "\nMy paper,T1,bicubic,1,imagenet_test,rgb,,psnr,20.5,\n")
    assert compare_cli([str(tmp_path / "runs"), "--reference", str(extra), "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert {r["paper"] for r in recs} == {"InvSR (CVPR 2025)", "My paper"}
    assert compare_cli([str(tmp_path / "nothing")]) == 2
    only_other = tmp_path / "r2"
    _write_run(only_other, _summary(protocol="full"))
    assert compare_cli([str(only_other)]) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert compare_cli([str(tmp_path / "runs"), "--reference", str(bad)]) == 2
