"""Atomic file writes: the one way this package puts a finished file under its real name.

Every writer goes to a temporary in the target's own directory, named ``.tmp_<pid>_<random><ext>``
(``run_lock.writer_prefix``), flushes it to disk, then ``os.replace``-s it over the target. A run
killed mid-write therefore never leaves a half-written file under the real name; its temporary is
recognisably a dead writer's (``run_lock.left_by_a_dead_writer``) and later runs remove it
(:func:`remove_stale_temporaries`).

Floor module: imports only the standard library, numpy and ``run_lock``.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable

import numpy as np

from .run_lock import left_by_a_dead_writer, writer_prefix

__all__ = ["TMP_PREFIX", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "json_safe",
           "remove_stale_temporaries"]

TMP_PREFIX = ".tmp_"


def remove_stale_temporaries(directory: str, suffix: str = "") -> list[str]:
    """Delete ``.tmp_<pid>_*<suffix>`` files in ``directory`` whose writer is gone. Returns the removed paths.

    Temporaries of live processes are kept (another run may be writing them).
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if not (name.endswith(suffix) and left_by_a_dead_writer(name, TMP_PREFIX)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
    return removed


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the finished temporary onto ``path`` (fsynced, usual permissions).

    ``write`` receives the temporary's path (same directory and extension as ``path``, so writers that
    pick the format by extension, like ``cv2.imwrite`` or imageio, still work). On any error the
    temporary is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=writer_prefix(TMP_PREFIX), suffix=ext, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def atomic_write_text(path: str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(x):
    """NaN -> None, ±inf -> "inf"/"-inf", numpy scalars -> Python, tuples -> lists (strict JSON)."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def atomic_write_json(path: str, obj, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as strict JSON (see :func:`json_safe`) with a final newline."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")
