"""One run at a time per output folder: an advisory lock file that dies with its process.

Two processes writing into one folder (two preprocessing runs into one save_dir, two evaluations
into one results_dir) delete or duplicate each other's work. :class:`RunLock` takes an exclusive
``fcntl.flock`` on ``<folder>/.lock`` and writes the holder's PID and command line into it; the
kernel drops the lock when the holder exits, even on ``kill -9``, so a stale lock never blocks
a later run. A second run refuses with one line naming the running process.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time

__all__ = ["RunLock", "RunLockError"]


class RunLockError(RuntimeError):
    """Another live process holds the folder. One-line message naming it."""


class RunLock:
    """Context manager: ``with RunLock(folder, "preprocessing"): ...``."""

    def __init__(self, folder: str, what: str = "run", name: str = ".lock"):
        self.folder, self.what = folder, what
        self.path = os.path.join(folder, name)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            finally:
                os.close(fd)
            raise RunLockError(f"{self.folder} is in use by another {self.what} ({holder}); "
                               "wait for it to finish or use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}"
                  .encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
