"""One process per cell: a lease on ``<cell>/.lock`` held for the whole cell (filelock's SoftFileLease).

The lock is a marker file created with O_EXCL (atomic on local disks and on NFS, Lustre and GPFS, where
``flock`` may be node-local) that records the holder's PID, host and process start time, and that the holder
refreshes every ``LEASE_S / 3`` seconds from a heartbeat thread.  A contender takes the lock over when

* the holder ran on this host and that process is gone (PID not alive, or reused by a younger process), at
  once: the usual case after ``kill -9`` or a crash; or
* the holder ran on another host (a SLURM node) and the marker has not been refreshed for ``LEASE_S``, as
  observed on the contender's own clock: the node died or the job was killed without cleanup.

A second process asking for a held cell gets :class:`CellBusy`, one line naming the holder, or with
``wait_for_lock=true`` waits for it.  If the heartbeat ever loses the lease (the marker removed by hand, or a
holder frozen past ``LEASE_S`` and taken over), :meth:`CellLock.check` stops the cell before its next write.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srbench.interface import SRBenchError

log = logging.getLogger("srbench")

LOCK_FILE = ".lock"
#: seconds without a heartbeat after which another host may take a cell over; every process must agree
LEASE_S = 120.0


class CellBusy(SRBenchError):
    """Another live process holds this cell."""


class LockLost(SRBenchError):
    """This process no longer holds its cell's lock; it stops before writing again."""


def _holder(owner: Any) -> str:
    if owner is None:
        return "another process"
    return f"pid {owner.pid} on host {owner.hostname}"


class CellLock:
    """``with CellLock(run_dir, wait=False):`` hold the cell or raise :class:`CellBusy`."""

    def __init__(self, run_dir: str | Path, *, wait: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.wait = wait
        self.lost: str | None = None
        self._lease: Any = None

    def _on_compromise(self, compromise: Any) -> None:
        self.lost = f"{compromise.reason}" + (f" ({compromise.error})" if compromise.error else "")

    def __enter__(self) -> CellLock:
        from filelock import SoftFileLease, Timeout

        self.run_dir.mkdir(parents=True, exist_ok=True)
        lease = SoftFileLease(
            self.path,
            lease_duration=LEASE_S,
            timeout=0,
            mode=0o666,  # the umask applies
            poll_interval=0.5,
            on_compromise=self._on_compromise,
        )
        before = lease.owner
        try:
            lease.acquire()
        except Timeout:
            holder = _holder(lease.owner)
            if not self.wait:
                raise CellBusy(
                    f"{self.run_dir}: this cell is being run by {holder} (lock {self.path}); "
                    "pass wait_for_lock=true to wait for it"
                ) from None
            log.info("waiting for %s to finish %s", holder, self.run_dir)
            lease.acquire(timeout=-1)
        if before is not None and before.pid != lease.owner.pid:
            log.warning("took over the lock of %s on %s: that process is gone", _holder(before), self.run_dir)
        self._lease = lease
        return self

    def check(self) -> None:
        """Raise :class:`LockLost` when the heartbeat found the lease taken away."""
        if self.lost:
            raise LockLost(f"{self.run_dir}: lost this cell's lock ({self.lost}); stopping before writing")

    def __exit__(self, *exc: object) -> None:
        if self._lease is not None:
            try:
                self._lease.release()
            except Exception as err:  # a lost lease: nothing of ours to remove
                log.warning("%s: releasing the cell lock: %s", self.run_dir, err)
            self._lease = None
