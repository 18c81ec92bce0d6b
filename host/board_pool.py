"""One board per process: a lease on one of a host's serial ports, held by an OS file lock.

A sweep tells Ray how many boards a node has (the custom resource :data:`BOARD_RESOURCE`, one unit per board), so
Ray never runs more board trials on a node than it has boards; *which* board a trial gets is decided on the node
by :class:`BoardLease`: it takes the first port of the list whose lock file it can ``flock`` exclusively. The
kernel releases the lock when the holder exits, however it exits, so a crashed trial never keeps a board, and two
processes never hold the same port even if the resource count were wrong (the second one finds every port taken
and fails with an error naming them). Every lease is appended to ``leases.jsonl`` in the lock directory (port,
holder, process id, start and end times).

Members
-------
BOARD_RESOURCE
    Name of the Ray resource: ``"fxtrain_board"``.
BoardLease
    Context manager; ``.port`` is the leased port.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

__all__ = ["BOARD_RESOURCE", "BoardLease", "default_lock_dir"]

BOARD_RESOURCE = "fxtrain_board"


def default_lock_dir() -> Path:
    """``$FXTRAIN_BOARD_LOCKS`` or ``<tmp>/fxtrain-board-locks`` (node-local, like the boards)."""
    return Path(os.environ.get("FXTRAIN_BOARD_LOCKS", Path(tempfile.gettempdir()) / "fxtrain-board-locks"))


class BoardLease:
    """Exclusive use of one port of ``ports`` until :meth:`release` (or the end of the ``with`` block).

    Parameters
    ----------
    ports : list of str
        Serial ports (or any names) of the boards on this host.
    holder : str
        Who holds it (a trial id), for ``leases.jsonl``.
    lock_dir : path, optional
        Default :func:`default_lock_dir`.

    Raises RuntimeError if every port is taken.
    """

    def __init__(self, ports, holder: str = "", lock_dir=None):
        ports = [str(p) for p in ports]
        if not ports or any(not p for p in ports) or len(set(ports)) != len(ports):
            raise ValueError(f"Board ports must be distinct non-empty names, not {ports!r}")
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        self.holder = holder
        self.port, self._file, self._start = None, None, None
        for port in ports:
            handle = open(self.lock_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", port) + ".lock"), "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.port, self._file, self._start = port, handle, time.time()
            break
        if self.port is None:
            raise RuntimeError(f"Every board is taken ({', '.join(ports)} in {self.lock_dir}): more board "
                               f"trials run on this host than it has ports (check the {BOARD_RESOURCE} resource)")

    def release(self) -> None:
        if self._file is None:
            return
        record = {"port": self.port, "holder": self.holder, "pid": os.getpid(), "start": self._start,
                  "end": time.time()}
        with open(self.lock_dir / "leases.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
