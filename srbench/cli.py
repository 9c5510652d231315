"""The ``srbench`` console script: a front door over Hydra runs and the subcommands.

``srbench [-m] KEY=VALUE ...``  run one cell (a sweep with ``-m``) through Hydra
``srbench COMMAND ...``          a subcommand (:data:`COMMANDS`: one entry each, its handler imported on use)
``srbench --help | --version``   this CLI's help page and version (``--hydra-help``: Hydra's own page)

Nothing heavy is imported before the command is known, so help, typos and shell completion answer fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one line for the help page, and ``"module:function"`` taking the
    remaining arguments and returning an exit code."""

    name: str
    help: str
    handler: str


#: every subcommand, in the order the help page lists them (adding one is one line here)
COMMANDS: tuple[Command, ...] = (
    Command(
        "leaderboard",
        "rank finished cells: leaderboard.csv/.md per dataset and protocol",
        "srbench.cli:_leaderboard",
    ),
    Command("score", "score a folder of SR images that srbench did not produce", "srbench.score:score_cli"),
    Command("report", "paper-ready tables, plots and an HTML page from results", "srbench.report:report_cli"),
    Command(
        "rescore", "add metrics to finished cells from their saved images", "srbench.rescore:rescore_cli"
    ),
    Command("data", "test sets: list, fetch, verify, where, prepare", "srbench.data.cli:data_cli"),
    Command("weights", "method weights: list, where, fetch", "srbench.weights:weights_cli"),
    Command(
        "bench",
        "latency and peak memory under the papers' protocol (128->512, batch 1)",
        "srbench.bench:bench_cli",
    ),
    Command(
        "compare",
        "a run's numbers beside the paper's table (same protocol only)",
        "srbench.reference.compare:compare_cli",
    ),
    Command("methods", "the registered methods, one line each", "srbench.cli:_methods"),
    Command("train", "train a method that has a trainer (DM-SR)", "srbench.cli:_train"),
)
COMMANDS_BY_NAME = {c.name: c for c in COMMANDS}
SUBCOMMANDS = tuple(COMMANDS_BY_NAME)
#: config groups shown on the help page, with what they choose
CONFIG_GROUPS = {
    "method": "the SR method (or an authors'-script preset)",
    "dataset": "the test set (paired / lr_only: your own folders)",
    "protocol": "how images are cropped and scored (the papers' settings)",
    "metrics": "which metrics",
    "experiment": "a paper's table as a sweep (with -m)",
}
QUIET_FLAGS = ("-q", "--quiet")
#: Hydra flags that take the next argument as their value
_HYDRA_VALUE_FLAGS = {
    *(
        "-cp",
        "--config-path",
        "-cn",
        "--config-name",
        "-cd",
        "--config-dir",
        "-c",
        "--cfg",
        "-p",
        "--package",
    ),
    *("-sc", "--shell-completion", "--experimental-rerun", "-i", "--info"),
}


def conf_dir() -> Path:
    """The Hydra config tree: ``$SRBENCH_CONF`` or the repository's ``conf/``."""
    env = os.environ.get("SRBENCH_CONF")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "config.yaml").is_file():
        from srbench.interface import SRBenchError

        raise SRBenchError(
            f"{path}: no config.yaml; install srbench editable (pip install -e .) or set SRBENCH_CONF"
        )
    return path


def missing_settings(cfg: Any) -> str | None:
    """One line naming the mandatory settings (``???`` in conf/) a run left unset, else None."""
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return None
    example = " ".join(f"{key}=..." for key in missing)
    return f"{', '.join(missing)} not set: add {example} to the command"


def _hydra_app() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from srbench.sweep import LAST_SWEEP, record_outcome

    # loading bars of huggingface_hub/transformers ("Loading weights 36/36") are not events of a run
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    LAST_SWEEP.clear()  # an earlier sweep in this process (Python API, tests) is not this one

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> str:
        from srbench.claim import CellRefused  # (imported here: completion and help need no torch)
        from srbench.interface import ConfigError
        from srbench.lock import CellBusy
        from srbench.runner import cell_dir, run_cell

        hc = HydraConfig.get()
        single = hc.mode == RunMode.RUN
        run_dir, cell = None, " ".join(hc.overrides.task) or "(defaults)"  # until the cell is known
        unset = missing_settings(cfg)
        if unset is not None:  # nothing is written anywhere
            record_outcome(cfg.out_dir, {"cell": cell, "status": "failed", "reason": unset})
            print(f"[failed] {cell}: {unset}", flush=True)
            if single:
                raise SystemExit(1)
            return "failed"
        _assign_gpu(cfg, int(hc.job.num) if not single else 0)
        out_dir = Path(cfg.out_dir).resolve()
        try:
            # the cell's directory derives from its identity (srbench/identity.py); Hydra's own output
            # folder only holds its logs, so no invocation writes into a cell before run_cell claims it
            run_dir = cell_dir(cfg, out_dir)
            cell = str(run_dir.relative_to(out_dir))
            outcome = run_cell(cfg, run_dir)
            status, reason = outcome.status, outcome.reason
        except (KeyboardInterrupt, SystemExit):
            raise
        except (CellRefused, CellBusy) as exc:  # nothing was written into the cell
            status, reason = "refused", str(exc)
        except ConfigError as exc:  # a bad setting, named: nothing was written
            if single:  # srbench's one-line error
                print(f"srbench: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            status, reason = "failed", str(exc)
        except Exception as exc:  # a failed cell must not stop the sweep; run_cell recorded it if it started
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        record_outcome(cfg.out_dir, {"cell": cell, "status": status, "reason": reason})
        # one line per cell, whatever happened (a failure is not logged again; the sweep summary lists it),
        # above any progress bar
        from tqdm import tqdm

        tqdm.write(f"[{status}] {run_dir or cell}" + (f": {reason}" if reason else ""), file=sys.stdout)
        sys.stdout.flush()
        if single and status in ("failed", "refused"):
            raise SystemExit(1)
        return status

    app()
    if LAST_SWEEP.get("failed"):
        raise SystemExit(1)


def _assign_gpu(cfg: Any, job_num: int) -> None:
    """With device=auto and several GPUs, job N of a sweep takes cuda:(N mod count): with as many
    local workers as GPUs (hydra/launcher=local_workers), each worker has one GPU."""
    import torch
    from omegaconf import open_dict

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if str(cfg.get("device", "auto")) == "auto" and count > 1:
        with open_dict(cfg):
            cfg.device = f"cuda:{job_num % count}"


def _leaderboard(argv: list[str]) -> int:
    from srbench.leaderboard import write_leaderboard

    p = argparse.ArgumentParser(prog="srbench leaderboard", description="Aggregate run summaries.")
    p.add_argument("paths", nargs="+", help="run directories or summary.json files (searched recursively)")
    p.add_argument("--out", default=None, help="where to write leaderboard.csv/.md (default: the first PATH)")
    p.add_argument("--quiet", action="store_true", help="do not print the markdown table")
    args = p.parse_args(argv)
    try:
        csv_path, md_path, md = write_leaderboard(args.paths, args.out)
    except FileNotFoundError as exc:
        print(f"srbench leaderboard: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(md)
    print(f"wrote {csv_path} and {md_path}")
    return 0


def _methods(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="srbench methods",
        description="The registered methods (built-ins and srbench.methods entry points), one line each; "
        "run one with `srbench method=NAME`, options in conf/method/NAME.yaml.",
    ).parse_args(argv)
    from srbench.registry import get_method_class, list_methods

    for name in list_methods():
        cls = get_method_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:12s} {doc[0] if doc else ''}")
    return 0


def _train(argv: list[str]) -> int:
    trainers = {"dmsr": "methods.dmsr.train"}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: srbench train METHOD [args...]   (trainers: {', '.join(trainers)})")
        return 0 if argv else 2
    if argv[0] not in trainers:
        print(f"srbench train: no trainer for '{argv[0]}' (trainers: {', '.join(trainers)})", file=sys.stderr)
        return 2
    return int(importlib.import_module(trainers[argv[0]]).train_cli(argv[1:]))


# ---- help, version, typos --------------------------------------------------------------------
def version_line() -> str:
    from srbench import __version__

    return f"srbench {__version__} (Python {sys.version.split()[0]}, {Path(__file__).resolve().parent})"


def _group_options(group: str) -> list[str]:
    try:
        folder = conf_dir() / group
    except Exception:  # no config tree: the page still lists the commands
        return []
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def help_page() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = [
        "usage: srbench [-m] [KEY=VALUE ...]     run one cell, or a sweep with -m (Hydra overrides)",
        "       srbench COMMAND [ARGS ...]        a subcommand; srbench COMMAND --help for its options",
        "",
        "srbench benchmarks diffusion-prior super-resolution methods side by side: one interface, one",
        "protocol, one metric suite.",
        "",
        "commands:",
        *(f"  {c.name:{width}s}  {c.help}" for c in COMMANDS),
        "",
        "run settings (KEY=VALUE; several values with -m make a sweep):",
    ]
    for group, what in CONFIG_GROUPS.items():
        options = ", ".join(_group_options(group)) or "(none)"
        lines.append(f"  {group + '=':12s}{what}:")
        lines += textwrap.wrap(options, width=98, initial_indent=" " * 14, subsequent_indent=" " * 14)
    lines += [
        "  steps=N seed=N device=auto|cpu|cuda dtype=auto|fp32|fp16|bf16 out_dir=DIR save_images=true|false",
        "  method.KEY=VALUE  a method option (conf/method/NAME.yaml); method.tiny=true: tiny random weights",
        "  hydra/launcher=local_workers|slurm   run a sweep's cells in parallel (see the README)",
        "",
        "options:",
        "  -h, --help       this page (--hydra-help: Hydra's own flags; --cfg job: the composed config)",
        "  -V, --version    srbench's version",
        "  -q, --quiet      no progress bars (they are off anyway when stderr is not a terminal)",
        "",
        'shell completion (commands and KEY=VALUE): eval "$(srbench -sc install=bash)"  (bash and zsh)',
        "",
        "examples:",
        "  srbench method=realesrgan dataset=demo",
        "  srbench -m method=invsr method.tiny=true steps=1,2,3 dataset=demo   # offline, random weights",
        "  srbench leaderboard results/runs",
    ]
    return "\n".join(lines)


def _config_names() -> list[str]:
    """Every name a bare word might have meant as a setting: ``method=invsr`` for ``invsr``."""
    return [f"{g}={o}" for g in CONFIG_GROUPS for o in _group_options(g)]


def unknown_word_message(word: str) -> str:
    """The one-line answer to a bare word that is neither a command nor KEY=VALUE."""
    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean `srbench {close[0]}`?"
    else:
        by_value = {s.split("=", 1)[1]: s for s in _config_names()}
        value = difflib.get_close_matches(word, list(by_value), n=1, cutoff=0.75)
        hint = (
            f"did you mean `srbench {by_value[value[0]]}`?"
            if value
            else f"commands: {', '.join(SUBCOMMANDS)}; run settings are KEY=VALUE (e.g. method=bicubic)"
        )
    return f"srbench: '{word}' is not a command or a KEY=VALUE setting; {hint} (srbench --help)"


def _bare_words(argv: list[str]) -> list[str]:
    """Arguments Hydra would reject as overrides (no '=', not a flag, not a flag's value)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _HYDRA_VALUE_FLAGS:
            skip = arg not in ("-i", "--info")  # --info takes an optional value
            continue
        if arg.startswith("-") or arg.startswith("~") or "=" in arg:
            continue
        if arg in ("all", "job", "hydra", "config", "defaults", "defaults-tree", "plugins", "searchpath"):
            continue  # values of --cfg / --info
        out.append(arg)
    return out


# ---- shell completion -------------------------------------------------------------------------
def _method_names() -> list[str]:
    names = set()
    for path in (conf_dir() / "method").glob("*.yaml"):
        m = re.search(r"^name:\s*(\S+)", path.read_text(), re.M)
        if m:
            names.add(m.group(1))
    return sorted(names)


def _dataset_names() -> list[str]:
    return [d for d in _group_options("dataset") if d not in ("demo", "paired", "lr_only")]


def _command_words(cmd: str, done: list[str]) -> list[str]:
    """Candidates for the next word after ``srbench CMD *done``; paths are left to the shell."""
    words = ["--help"]
    if cmd == "weights":
        words += ["list", "where", "fetch"] if not done else _method_names() if done[0] != "list" else []
    elif cmd == "data":
        actions = ["list", "fetch", "verify", "where", "prepare"]
        words += actions if not done else _dataset_names() if done[0] in ("fetch", "verify", "where") else []
    elif cmd == "bench":
        words += [*_method_names(), "--tiny", "--steps", "--size", "--dtype", "--device", "--json"]
    elif cmd == "train" and not done:
        words += ["dmsr"]
    return words


def _hydra_candidates(shell: str) -> list[str]:
    import contextlib
    import io

    buf = io.StringIO()
    saved = sys.argv
    sys.argv = [saved[0], "-sc", f"query={shell}"]
    try:
        with contextlib.redirect_stdout(buf):
            _hydra_app()
    except SystemExit:
        pass
    finally:
        sys.argv = saved
    return buf.getvalue().split()


def complete(shell: str = "bash") -> list[str]:
    """Completion candidates for ``$COMP_LINE`` up to ``$COMP_POINT`` (what Hydra's bash/zsh script
    passes): commands and Hydra's KEY=VALUE candidates for the first word, the command's own words
    after a command, Hydra's candidates after a setting."""
    line = os.environ.get("COMP_LINE", "")
    line = line[: int(os.environ.get("COMP_POINT", len(line)))]
    words = line.split()
    if words and re.search(r"python[\d.]*$", words[0]):  # python -m srbench.cli ...
        words = words[3:] if words[1:2] == ["-m"] else words[2:]
    else:
        words = words[1:]
    new_word = line.endswith(" ") or not words
    current = "" if new_word else words[-1]
    done = [w for w in (words if new_word else words[:-1]) if w not in QUIET_FLAGS]
    if done and done[0] in COMMANDS_BY_NAME:
        candidates = _command_words(done[0], done[1:])
    elif not done and not current.startswith("-") and "=" not in current:
        candidates = list(SUBCOMMANDS) + _hydra_candidates(shell)
    elif not done and current.startswith("-"):
        candidates = ["--help", "--version", "--quiet", "--multirun", "--hydra-help", "--cfg", "--info"]
    else:
        candidates = _hydra_candidates(shell)
    return [c for c in candidates if c.startswith(current)]


def _completion_query(argv: list[str]) -> str | None:
    """The shell of a Hydra completion query (``-sc query=bash``) that srbench answers, else None."""
    if len(argv) == 2 and argv[0] in ("-sc", "--shell-completion"):
        m = re.fullmatch(r"query=(bash|zsh)", argv[1])
        return m.group(1) if m else None
    return None


# ---- dispatch ---------------------------------------------------------------------------------
def _resolve_handler(cmd: Command) -> Any:
    """The command's function (every command's module ships with srbench: an import error is a bug)."""
    module, _, func = cmd.handler.partition(":")
    return getattr(importlib.import_module(module), func)


def run_command(cmd: Command, argv: list[str]) -> int:
    handler = _resolve_handler(cmd)
    try:
        return int(handler(argv) or 0)
    except Exception as exc:
        from srbench.interface import SRBenchError  # imported here: torch only when needed

        if not isinstance(exc, SRBenchError):
            raise
        print(f"srbench {cmd.name}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and argv[0] in QUIET_FLAGS:  # global: before the command
        argv.pop(0)
        from srbench.progress import set_quiet

        set_quiet()
    first = argv[0] if argv else ""
    if first in ("-h", "--help"):
        print(help_page())
        return 0
    if first in ("-V", "--version"):
        print(version_line())
        return 0
    shell = _completion_query(argv)
    if shell is not None:
        print(" ".join(complete(shell)))
        return 0
    if first in COMMANDS_BY_NAME:
        return run_command(COMMANDS_BY_NAME[first], argv[1:])
    # a Hydra run: KEY=VALUE overrides and Hydra's flags
    if any(a in ("-h", "--help") for a in argv):
        print(help_page())
        return 0
    if any(a in QUIET_FLAGS for a in argv):
        from srbench.progress import set_quiet

        set_quiet()
        argv = [a for a in argv if a not in QUIET_FLAGS]
    bare = _bare_words(argv)
    if bare:
        print(unknown_word_message(bare[0]), file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *argv]
    _hydra_app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
