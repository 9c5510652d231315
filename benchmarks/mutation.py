"""Mutation testing of the formula modules: how many deliberate one-token bugs the tests catch.

    .venv/bin/python benchmarks/mutation.py                       # every group, one worker
    .venv/bin/python benchmarks/mutation.py --group solvers --group losses --json results/bench/mutation.json
    .venv/bin/python benchmarks/mutation.py --list                # the groups, files and tests

For each group (:data:`GROUPS`: schedules, solvers, samplers, colour fix, metric settings, DM-SR losses) the
script copies the repository's tracked files to a scratch folder, configures `mutmut
<https://github.com/boxed/mutmut>`_ (``[tool.mutmut]`` in the copy's pyproject.toml: the group's files are
mutated, the group's test files run), runs ``mutmut run`` and reads its counts (``mutmut
export-cicd-stats``) and the diff of every surviving mutant (``mutmut show``).  mutmut runs, for each
mutant, only the tests that executed the mutated function in a first traced pass.  The working tree is
never touched.  Output: one table (group | mutants | killed | survived | no tests | timeout | kill rate |
minutes), the survivors' diffs with ``--show-survivors``, and the JSON record of everything with ``--json``.

Kill rate = killed / (killed + survived + no tests + timeout + suspicious); mutants mutmut could not run
(segfault) are reported apart.  Survivors that only rewrite the text of an error message on a ``raise``
line (:func:`message_only`) are counted too and left out of a second rate.  A surviving mutant is either
a missing test (add one) or an *equivalent* mutant (the change cannot alter any result);
benchmarks/README.md lists the ones judged equivalent.

Mutation runs are CPU-heavy: on a shared machine keep ``--max-children 1`` (the default) and run one
group at a time.  Needs ``mutmut`` (``pip install 'mutmut==3.8.1'``, the ``mutation`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Group:
    files: tuple[str, ...]  # modules to mutate
    tests: tuple[str, ...]  # test files (or node ids) mutmut may run for them
    what: str


GROUPS: dict[str, Group] = {
    "schedules": Group(
        ("srbench/diffusion/schedules.py", "methods/dossr/schedule.py"),
        ("tests/test_diffusion_plumbing.py", "tests/test_dossr_solvers.py", "tests/test_mutation_kills.py"),
        "ᾱ / VE-σ / ancestral tables (srbench), DoSSR's η schedule and respaced grid",
    ),
    "solvers": Group(
        ("methods/dossr/solvers.py",),
        ("tests/test_dossr_solvers.py", "tests/test_mutation_kills.py"),
        "DoS-SDE solvers of order 1-3 and x_θ from u",
    ),
    "samplers": Group(
        ("methods/dmsr/pipeline.py", "methods/stablesr/sampler.py"),
        ("tests/test_dmsr_pipeline.py", "tests/test_stablesr_sampler.py", "tests/test_mutation_kills.py"),
        "DM-SR's one-/multi-step pipeline (Eq. 1-2, §4.4), StableSR's DDPM sampler",
    ),
    "stablesr_sampler": Group(
        ("methods/stablesr/sampler.py",),
        ("tests/test_stablesr_sampler.py", "tests/test_stablesr_sampler_kills.py"),
        "StableSR's sampler alone: respacing, DDPM/DDIM steps, guidance, tile fusion, initial latent",
    ),
    "color": Group(
        ("srbench/diffusion/color.py",),
        ("tests/test_diffusion_plumbing.py", "tests/test_mutation_kills.py"),
        "wavelet / AdaIN / YCbCr colour fixes",
    ),
    "metrics": Group(
        ("srbench/metrics.py",),
        ("tests/test_metrics.py", "tests/test_metrics_batch.py", "tests/test_mutation_kills.py"),
        "metric settings (Y channel, border crop, pyiqa names and options) and scoring",
    ),
    "losses": Group(
        ("methods/dmsr/losses.py", "methods/dmsr/estimator.py"),
        (
            "tests/test_dmsr_train.py",
            "tests/test_dmsr_training_behaviour.py",
            "tests/test_dmsr_networks.py",
            "tests/test_mutation_kills.py",
            "tests/test_dmsr_losses_kills.py",
        ),
        "DM-SR losses (Eq. 4-8, surrogate gradients, LPIPS target) and the t̂ estimator (Eq. 10)",
    ),
}

#: lines never mutated: logging calls (their text changes no result)
DO_NOT_MUTATE = [r"^\s*log\.(debug|info|warning)\("]
_STRING = re.compile(r"""[rbuf]*("([^"\\]|\\.)*"|'([^'\\]|\\.)*')""")
_MESSAGE_CALL = re.compile(r"raise |(Error|Exception|Warning|Missing|Steps)\(|warnings\.warn\(|log\.\w+\(")


def message_only(diff: str) -> bool:
    """A mutant that only rewrites the text of an error / warning message on a ``raise`` line (string
    wrapped in "XX", case-changed, or replaced by None): the computation is the same, so it is counted
    apart from the formula mutants (tests match messages by regex search, which "XX...XX" still passes)."""
    minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("- ")]
    plus = [ln[1:] for ln in diff.splitlines() if ln.startswith("+ ")]
    if len(minus) != 1 or len(plus) != 1 or not _MESSAGE_CALL.search(minus[0]):
        return False
    a, b = _STRING.sub("S", minus[0]), _STRING.sub("S", plus[0])
    return a == b or a == b.replace("(None)", "(S)")


@dataclass
class Result:
    group: str
    files: list[str]
    tests: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    kill_rate: float | None = None
    message_mutants: int = 0  # survivors that only change a message text (see message_only)
    kill_rate_formulas: float | None = None  # the kill rate without them
    seconds: float = 0.0
    survivors: dict[str, str] = field(default_factory=dict)  # mutant name -> diff
    returncode: int = 0
    log_tail: str = ""


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(
        b"\0"
    )
    for rel in filter(None, (f.decode() for f in files)):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _configure(dest: Path, group: Group) -> list[str]:
    tests = [t for t in group.tests if (dest / t.split("::")[0]).exists()]  # e.g. before a file was added
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["srbench", "methods"]',
            f"only_mutate = {_toml_list(list(group.files))}",
            'also_copy = ["conf", "tests", "datasets", "benchmarks", "pyproject.toml"]',
            f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
            f"do_not_mutate_patterns = {_toml_list(DO_NOT_MUTATE)}",
            "",
        ]
    )
    with (dest / "pyproject.toml").open("a") as f:
        f.write(section)
    return tests


def _mutmut(dest: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/ first itself
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_group(name: str, scratch: Path, max_children: int, keep: bool) -> Result:
    group = GROUPS[name]
    res = Result(name, list(group.files), list(group.tests))
    dest = scratch / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _copy_tree(dest)
    res.tests = _configure(dest, group)
    t0 = time.perf_counter()
    proc = _mutmut(dest, "run", "--max-children", str(max_children))
    res.seconds = time.perf_counter() - t0
    res.returncode = proc.returncode
    res.log_tail = re.sub(r".\x08|\r", "", (proc.stdout + proc.stderr))[-3000:]
    _mutmut(dest, "export-cicd-stats")
    stats_file = dest / "mutants" / "mutmut-cicd-stats.json"
    if stats_file.is_file():
        res.counts = json.loads(stats_file.read_text())
        c = res.counts
        tried = sum(c.get(k, 0) for k in ("killed", "survived", "no_tests", "timeout", "suspicious"))
        res.kill_rate = c.get("killed", 0) / tried if tried else None
    listing = _mutmut(dest, "results").stdout
    for line in listing.splitlines():
        m = re.match(r"\s*(\S+): (survived|no tests|timeout|suspicious)", line)
        if m:
            show = _mutmut(dest, "show", m.group(1)).stdout.strip()
            res.survivors[m.group(1)] = f"[{m.group(2)}{', message' if message_only(show) else ''}]\n{show}"
            res.message_mutants += int(message_only(show))
    if res.counts:
        c = res.counts
        tried = sum(c.get(k, 0) for k in ("killed", "survived", "no_tests", "timeout", "suspicious"))
        tried -= res.message_mutants
        res.kill_rate_formulas = c.get("killed", 0) / tried if tried else None
    if not keep:
        shutil.rmtree(dest, ignore_errors=True)
    return res


def print_table(results: list[Result]) -> None:
    print(
        "| group | mutants | killed | survived | no tests | timeout | kill rate "
        "| message-only survivors | kill rate without them | minutes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    for r in results:
        c = r.counts
        print(
            f"| {r.group} | {c.get('total', 0)} | {c.get('killed', 0)} | {c.get('survived', 0)} | "
            f"{c.get('no_tests', 0)} | {c.get('timeout', 0)} | {pct(r.kill_rate)} | {r.message_mutants} | "
            f"{pct(r.kill_rate_formulas)} | {r.seconds / 60:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", action="append", choices=sorted(GROUPS), help="repeatable; default: all")
    p.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1: shared CPUs)")
    p.add_argument("--scratch", type=Path, default=None, help="where the copies go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies (mutmut browse / show)")
    p.add_argument("--show-survivors", action="store_true", help="print the diff of every surviving mutant")
    p.add_argument("--json", type=Path, default=None, help="write the results (counts, survivors) here")
    p.add_argument("--list", action="store_true", help="print the groups and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, g in GROUPS.items():
            print(f"{name}: {g.what}\n  mutate: {', '.join(g.files)}\n  tests:  {', '.join(g.tests)}")
        return 0
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutmut is not installed: pip install 'mutmut==3.8.1'", file=sys.stderr)
        return 2
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="srbench-mutation-"))
    results = []
    for name in args.group or list(GROUPS):
        print(f"== {name}: mutating {', '.join(GROUPS[name].files)}", flush=True)
        r = run_group(name, scratch, args.max_children, args.keep)
        results.append(r)
        print(
            f"   {r.counts or 'no counts (see the log tail in the JSON)'} in {r.seconds / 60:.1f} min",
            flush=True,
        )
    print_table(results)
    if args.show_survivors:
        for r in results:
            for mutant, diff in r.survivors.items():
                print(f"\n--- {r.group}: {mutant} {diff}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
            "max_children": args.max_children,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if all(r.counts for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
