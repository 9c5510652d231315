"""Every command README.md shows runs, offline on CPU, so the README and the CLI cannot drift apart.

The commands are parsed from the README itself: each ``bash`` code block (continuations joined, comments
dropped, ``a | b | c`` shorthand expanded, ``$(srbench ...)`` taken out of its shell line), every inline
code span that starts with ``srbench``, and the ``python`` blocks.  A command runs as written, in a
scratch folder, through ``srbench.cli.main`` in this process (one torch import for all of them); Hydra
runs get test-size settings appended (one image, fast metrics, no warm-up), which do not change what the
command means.  Placeholders (``NAME``, ``PATH…``, ``dataset.lr_dir=…``, a trailing ``...``) are filled
from :data:`PLACEHOLDERS`.

A command that cannot run here is in :data:`CHECKED_OTHERWISE` with the reason and what is checked
instead: those needing real weights or a data download must fail with their clear one-line error (and a
Hydra run's settings must still compose into a method that accepts them), network downloads and cluster
launchers are checked through ``--help`` / the composed config.  A subcommand named in prose (an inline
span such as ```srbench data fetch```) is checked with ``--help``.  The network is cut for the whole test
(a socket that connects raises), so a download the list forgot fails instead of downloading.  A new README
command that fails and is not in the list fails this test.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srbench.cli import COMMANDS_BY_NAME, main

README = Path(__file__).resolve().parent.parent / "README.md"

#: appended to every Hydra run (KEY=VALUE) command: small, not a different command
TEST_SIZE = ["dataset.limit=1", "metrics=fast", "warmup=0"]

#: README placeholders and what they stand for here (regex -> replacement)
PLACEHOLDERS = {
    r"\bNAME\b": "realesrgan",
    r"PATH…": "results/runs",
    r"dataset\.lr_dir=…": "dataset.lr_dir=data/realsr/LR",
    r"dataset\.hr_dir=…": "dataset.hr_dir=data/realsr/HR",
    r"(?<=\s)(\.\.\.|…)$": "method=bicubic dataset=demo",
    r"\bSR_DIR\b": "data/SR",  # SR images made elsewhere (srbench score, method=precomputed)
    r"\bHR_DIR\b|(?<=--hr )HR\b": "data/HR",
    r"\bLR_DIR\b|(?<=--lr )LR\b": "data/LR",
}

#: pointers a clear offline error gives (what to run or where to put a file)
OFFLINE_POINTER = re.compile(
    r"srbench weights (fetch|where)|srbench data fetch|manual download|HF_HUB_OFFLINE|no network"
    r"|not installed|neither a run directory nor a summary\.json"
)
WEIGHTS = "needs the method's real weights (gigabytes from the Hugging Face hub or Google Drive)"
DATA = "needs a test set downloaded by `srbench data fetch` (hundreds of MB)"

#: README commands that cannot run as written here: (how they are checked instead, why)
CHECKED_OTHERWISE: dict[str, tuple[str, str]] = {
    "bash scripts/quickstart.sh": (
        "shell-syntax",
        "sets up .venv with pip (network); its commands are below",
    ),
    ".venv/bin/python -m pytest -q": ("skip", "the test suite this test is part of"),
    "srbench method=invsr steps=1 method.color_fix=wavelet": ("offline", WEIGHTS),
    "srbench method=stablesr steps=200": ("offline", WEIGHTS),
    "srbench method=stablesr_tile steps=200": ("offline", WEIGHTS),
    "srbench method=dossr steps=5 method.order=3": ("offline", WEIGHTS),
    "srbench weights where dossr": (
        "offline",
        "DoSSR's checkpoint is a manual download: exit 1, with the link",
    ),
    "srbench -m method=invsr,stablesr,dossr,dmsr steps=1,2,5 dataset=realsr,realset80": ("offline", DATA),
    "srbench -m experiment=invsr_table2": ("offline", DATA),
    "srbench -m hydra/launcher=local_workers hydra.launcher.n_jobs=4 method=bicubic dataset=demo": (
        "config",
        "starts 4 worker processes (tests/test_sweeps.py runs the launcher with 2)",
    ),
    "srbench -m hydra/launcher=slurm hydra.launcher.partition=gpu method=bicubic dataset=demo": (
        "config",
        "needs a SLURM cluster",
    ),
    "srbench bench invsr": ("offline", WEIGHTS),
    "srbench bench invsr --dtype bf16 --attention sdpa --channels-last --compile --json "
    "results/bench/bench.jsonl": ("gpu", "bf16 needs CUDA: on CPU it is refused in one line"),
    "srbench bench dossr --size 128 --size 256 --size 512": ("offline", WEIGHTS),
    "srbench bench dossr --random-full-size --steps 5": (
        "help",
        "writes the released sizes with random weights (GBs) and runs them; tests/test_full_size.py builds "
        "them at test widths through the same code",
    ),
    "srbench data fetch realsr_crop128": ("help", "downloads the data set (network)"),
    "srbench data fetch realsr --force": ("help", "downloads the data set again (network)"),
    "srbench leaderbord": ("typo", "the README's example of a typo"),
    "srbench data verify realsr_crop128": ("offline", DATA),
    "srbench score $D/benchmark_realsr/results_osediff --name osediff --steps 1 --dataset realsr_crop128"
    "      --protocol stablesr_paper --metrics psnr,ssim,niqe dataset.root=$D/benchmark_realsr": (
        "help",
        "needs OSEDiff's released outputs (a copy of its repository's preset/datasets)",
    ),
    "srbench dataset=realsr_crop128 protocol=stablesr_paper method=realesrgan": ("offline", DATA),
    "srbench compare results/runs/realsr_crop128/stablesr_paper/realesrgan/steps1": (
        "offline",
        "compares the run of the command above, which needs the data set",
    ),
}
#: python blocks that are templates, not programs (matched by a line they contain)
PYTHON_TEMPLATES = {'@register_method("mymethod")': "the plugin template (its bodies are `...`)"}


# ---- parsing the README ----------------------------------------------------------------------
def code_blocks(text: str, lang: str) -> list[str]:
    """The bodies of the fenced blocks of ``lang`` (indented fences, e.g. inside a list, included)."""
    pattern = re.compile(rf"^(?P<indent>[ \t]*)```{lang}\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
    blocks = []
    for m in pattern.finditer(text):
        indent = len(m.group("indent"))
        blocks.append("\n".join(line[indent:] for line in m.group("body").splitlines()))
    return blocks


def _fill(command: str) -> str:
    for pattern, value in PLACEHOLDERS.items():
        command = re.sub(pattern, value, command)
    return command


def shell_commands(text: str) -> list[str]:
    """Commands of the bash blocks and the inline ``srbench ...`` spans, in README order."""
    return list(dict.fromkeys(c for c, _ in readme_commands(text)))


def readme_commands(text: str) -> list[tuple[str, bool]]:
    """(command, whether it is an inline span of prose) for every command, placeholders filled."""
    commands: list[tuple[str, bool]] = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if not line or line.startswith("#"):
                continue
            inner = re.search(r"\$\((srbench [^)]*)\)", line)
            if inner:
                line = inner.group(1)
            head, *alternatives = line.split(" | ")
            commands.append((head, False))
            prefix = " ".join(head.split()[:2])  # `srbench weights list | where NAME` -> srbench weights
            commands += [(f"{prefix} {alt.strip()}", False) for alt in alternatives]
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`(srbench(?: [^`]*)?)`", outside):
        commands.append((re.sub(r"\s+", " ", span).strip(), True))
    seen: dict[str, bool] = {}
    for command, inline in commands:
        key = _fill(command)
        seen[key] = seen.get(key, True) and inline  # a command also shown in a code block runs as one
    return list(seen.items())


#: subcommands whose first argument is an action (``srbench data fetch``)
ACTIONS = {"data", "weights", "train"}


def _mention(args: list[str]) -> list[str]:
    """A subcommand named in prose, as its help: ``data fetch realsr --force`` -> ``data fetch --help``."""
    words = args[:2] if args[0] in ACTIONS and len(args) > 1 and not args[1].startswith("-") else args[:1]
    return [*words, "--help"]


# ---- running ----------------------------------------------------------------------------------
def _is_hydra_run(args: list[str]) -> bool:
    """A cell or a sweep (KEY=VALUE settings, -m), not a subcommand, help or completion."""
    args = [a for a in args if a not in ("-q", "--quiet")]
    return bool(args) and (args[0] in ("-m", "--multirun") or "=" in args[0])


def _srbench(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    os.environ.pop("SRBENCH_SWEEP_ID", None)  # each command is its own sweep, as from a shell
    try:
        rc = main(list(args))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capfd.readouterr()
    return rc, out + err


def _check_composes(args: list[str]) -> None:
    """The settings of a Hydra run that cannot run here still compose, name options the method has and
    steps it can run (what a typo in the README would break)."""
    from hydra._internal.utils import get_args  # Hydra's own parsing of the command line

    from srbench.api import compose_run_config
    from srbench.registry import create_method

    parsed = get_args(args)
    sweep = {ov.split("=", 1)[0]: ov.split("=", 1)[1].split(",") for ov in parsed.overrides}
    first = [f"{k}={v[0]}" for k, v in sweep.items()]
    cfg = compose_run_config(first)
    from omegaconf import OmegaConf

    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    for steps in sweep.get("steps", [str(cfg.steps)]):
        create_method(method_cfg).check_steps(int(steps))


def _no_network(self: socket.socket, *args: object) -> None:
    raise OSError("network disabled in tests/test_readme.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    for sub in ("realsr/HR", "realsr/LR", "LR", "HR"):
        (root / "data" / sub).mkdir(parents=True)
    for i in range(2):
        hr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        lr = np.ascontiguousarray(hr[::4, ::4])
        Image.fromarray(hr).save(root / "data" / "realsr" / "HR" / f"img{i}_HR.png")
        Image.fromarray(lr).save(root / "data" / "realsr" / "LR" / f"img{i}_LR4.png")
        Image.fromarray(hr).save(root / "data" / "HR" / f"img{i}.png")
        Image.fromarray(lr).save(root / "data" / "LR" / f"img{i}.png")
        (root / "data" / "SR").mkdir(exist_ok=True)  # outputs "made elsewhere" for srbench score
        Image.fromarray(np.kron(lr, np.ones((4, 4, 1), dtype=np.uint8))).save(
            root / "data" / "SR" / f"img{i}.png"
        )
    Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)).save(root / "photo.png")
    (root / "offline").mkdir()
    return root


def test_readme_parser_finds_the_commands() -> None:
    commands = shell_commands(README.read_text())
    # the shorthand and the inline spans are expanded, the placeholders filled
    assert "srbench weights where realesrgan" in commands and "srbench weights fetch realesrgan" in commands
    assert "srbench -sc install=bash" in commands
    assert "srbench leaderboard results/runs" in commands
    assert not [c for c in commands if "…" in c or "NAME" in c]
    # every exception names a command the README still shows (a stale entry is an error too)
    assert not set(CHECKED_OTHERWISE) - set(commands), set(CHECKED_OTHERWISE) - set(commands)


@pytest.mark.slow
def test_every_readme_command_runs(
    workdir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("SRBENCH_QUIET", raising=False)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_network)
    with pytest.raises(OSError, match="network disabled"):  # so no README command can download anything
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    failures = []
    for command, inline in readme_commands(README.read_text()):
        words = shlex.split(command)
        mention = inline and words[1:2] and words[1] in COMMANDS_BY_NAME and command not in CHECKED_OTHERWISE
        mode, _why = CHECKED_OTHERWISE.get(command, ("mention" if mention else "run", ""))
        if mode == "skip":
            continue
        if mode == "shell-syntax":
            res = subprocess.run(
                ["bash", "-n", str(README.parent / words[1])], capture_output=True, text=True
            )
            if res.returncode != 0:
                failures.append(f"{command}: {res.stderr}")
            continue
        assert words[0] == "srbench", f"README command not handled by this test: {command}"
        args = words[1:]
        monkeypatch.chdir(workdir / "offline" if mode in ("offline", "gpu") else workdir)
        if mode == "help":
            args = [*args, "--help"]
        elif mode == "mention":
            args = _mention(args)
        elif mode == "config":  # the composed config (Hydra shows it for one run, not for -m)
            args = [*(a for a in args if a not in ("-m", "--multirun")), "--cfg", "hydra"]
        elif _is_hydra_run(args):
            args = [*args, *TEST_SIZE]
        if args[:1] == ["bench"] and mode == "run":
            args += ["--repeats", "1", "--warmup", "0", "--size", "32"]
        rc, out = _srbench(args, capfd)
        if "Traceback" in out:
            failures.append(f"{command}: printed a traceback:\n{out[-2000:]}")
        elif mode == "gpu":
            if rc == 0 or not re.search(r"CPU|CUDA", out):
                failures.append(f"{command}: expected a clear CPU/CUDA error, got rc={rc}:\n{out[-1500:]}")
        elif mode == "typo":
            if rc != 2 or "did you mean" not in out:
                failures.append(f"{command}: expected a suggestion, got rc={rc}:\n{out[-1500:]}")
        elif mode == "offline":
            if rc == 0 or not OFFLINE_POINTER.search(out):
                failures.append(f"{command}: expected a clear offline error, got rc={rc}:\n{out[-1500:]}")
            elif _is_hydra_run(words[1:]):
                _check_composes(words[1:])
        elif rc != 0:
            failures.append(f"{command} (as {args}): exit {rc}\n{out[-2000:]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_readme_python_examples_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    blocks = code_blocks(README.read_text(), "python")
    ran = 0
    for block in blocks:
        if any(marker in block for marker in PYTHON_TEMPLATES):
            continue
        assert len([ln for ln in block.splitlines() if ln.strip()]) <= 5, block  # "in five lines"
        exec(compile(block, "README.md", "exec"), {})
        ran += 1
    assert ran >= 2
    assert Image.open(workdir / "photo_x4.png").size == (64, 48)  # the upscaling example's output
