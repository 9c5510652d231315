"""The cell lock: a live holder is named in a one-line refusal; a dead holder's lock is taken over."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from srbench.lock import LEASE_S, LOCK_FILE, CellBusy, CellLock

REPO = Path(__file__).resolve().parent.parent
HOLD = (
    "import sys, time; from srbench.lock import CellLock; lock = CellLock(sys.argv[1]).__enter__(); "
    "print('held', flush=True); time.sleep(600)"
)


def _holder(run_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "cell"
    holder = _holder(run)
    try:
        with pytest.raises(CellBusy) as err:
            CellLock(run).__enter__()
        message = str(err.value)
        assert (
            f"pid {holder.pid} on host {socket.gethostname()}" in message and "wait_for_lock=true" in message
        )
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_FILE).exists()  # kill -9 leaves the marker behind ...
    with caplog.at_level(logging.WARNING, logger="srbench"), CellLock(run) as lock:  # ... and it is stale
        lock.check()
        assert f"took over the lock of pid {holder.pid}" in caplog.text
    assert not (run / LOCK_FILE).exists()  # released: nothing left in the cell


def test_a_waiting_process_gets_the_cell_when_the_holder_ends(tmp_path: Path) -> None:
    run = tmp_path / "cell"
    holder = _holder(run)
    start = time.monotonic()
    threading.Thread(target=holder.wait, daemon=True).start()  # reaped when it ends, as a shell would
    try:
        killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill -TERM {holder.pid}"])
        with CellLock(run, wait=True):  # the holder dies without releasing: its PID is gone, so it is stale
            waited = time.monotonic() - start
        assert 0.9 <= waited < LEASE_S  # by its PID, not by the lease expiry meant for other hosts
    finally:
        holder.kill()
        killer.wait()
