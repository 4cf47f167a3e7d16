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

__all__ = ["RunLock", "RunLockError", "left_by_a_dead_writer", "writer_prefix"]


def writer_prefix(prefix: str) -> str:
    """The name prefix of a temporary this process writes: ``<prefix><pid>_`` (see :func:`left_by_a_dead_writer`)."""
    return f"{prefix}{os.getpid()}_"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def left_by_a_dead_writer(name: str, prefix: str) -> bool:
    """Whether ``name`` (``<prefix><pid>_...``, from :func:`writer_prefix`) is a temporary that nobody is writing.

    True when its writer's pid is gone, when it is this process's own leftover, or when the name carries
    no pid (the older naming); False for another live process's temporary and for names without ``prefix``.
    A run killed mid-write (``kill -9``) leaves such files; the next run removes them.
    """
    if not name.startswith(prefix):
        return False
    head = name[len(prefix):].split("_", 1)[0]
    return not (head.isdigit() and int(head) != os.getpid() and _alive(int(head)))


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
