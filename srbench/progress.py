"""Progress bars (tqdm) for the long parts of a run: images of a cell, sampler steps, sweep cells,
downloads and extraction.

Bars go to stderr and only when stderr is a terminal: CI logs, SLURM ``.out`` files and pipes get
none.  ``srbench --quiet`` (or ``SRBENCH_QUIET=1``, inherited by sweep workers) turns them off
everywhere.  A disabled bar costs nothing inside timed code: :func:`sampler_steps` then returns the
plain iterable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

QUIET_ENV = "SRBENCH_QUIET"
#: samplers with fewer steps than this show no bar of their own (the image bar is enough)
MIN_SAMPLER_STEPS = 20

T = TypeVar("T")


def set_quiet(quiet: bool = True) -> None:
    """Turn progress bars off (or back on) for this process and the workers it starts."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


def progress_enabled() -> bool:
    """True when bars are shown: not quiet, and stderr is an interactive terminal."""
    if is_quiet():
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress(iterable: Iterable[T] | None = None, *, disable_if: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar (``desc``, ``total``, ``unit``, ... as tqdm) that is off when :func:`progress_enabled`
    is False or ``disable_if`` (e.g. a ``--no-progress`` flag); usable as an iterator and as a context
    manager with ``update(n)``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=disable_if or not progress_enabled(), **kwargs)


def sampler_steps(iterable: Iterable[T], total: int, desc: str = "steps") -> Iterable[T]:
    """Wrap a sampler's step loop: a transient bar below the image bar for long samplers (>= 20
    steps), the iterable itself otherwise or when bars are off."""
    if total < MIN_SAMPLER_STEPS or not progress_enabled():
        return iterable
    return _transient(iterable, total, desc)


def _transient(iterable: Iterable[T], total: int, desc: str) -> Iterator[T]:
    bar = progress(iterable, total=total, desc=desc, unit="step", leave=False)  # below the image bar
    try:
        yield from bar
    finally:
        bar.close()


@contextlib.contextmanager
def image_progress(total: int, done: int, desc: str) -> Iterator[Any]:
    """The bar over a cell's images (ETA from the images timed so far), starting at ``done`` (a resumed
    cell); while it is shown, log lines print above it instead of breaking it.  ``update(1)`` per image."""
    bar = progress(total=total, initial=done, desc=desc, unit="img", leave=False)
    if bar.disable:
        with bar:
            yield bar
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with bar, logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield bar
