"""A training run's directory: where it is, what it holds first, what it holds last.

Both training loops (the NeRF's ``training.py``, the estimator's ``estimator/train.py``) use it:

* :func:`resolve_run_dir` -- the run directory of a new run (the config's ``run_dir``) or of a
  resumed one (``--resume RUN_DIR`` or a checkpoint file inside it), refusing to start a new run
  in a directory that already holds one (nothing is overwritten).
* :func:`start_run_dir` -- ``checkpoints/``, the resolved ``config.yaml`` and ``git_hash.txt``
  (the code the run was trained with), each written atomically.
* :func:`checkpoint_on_signal` -- SIGINT/SIGTERM finish the current step, write the checkpoint,
  say where it went and how to continue, and exit with ``128 + signum``.
* :func:`write_report` -- ``report.json``, atomically, strict JSON.

Floor module: imports only the standard library, yaml and the floor modules ``atomic_io``,
``checkpoint``, ``config`` and ``loop``.
"""

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator

import yaml

from .atomic_io import atomic_write_json, atomic_write_text
from .checkpoint import LAST_CHECKPOINT, checkpoint_path
from .config import ConfigError
from .loop import StopOnSignal

__all__ = ["CONFIG_FILE", "GIT_HASH_FILE", "REPORT_FILE", "checkpoint_on_signal", "git_hash", "resolve_run_dir",
           "start_run_dir", "write_report"]

CONFIG_FILE = "config.yaml"
GIT_HASH_FILE = "git_hash.txt"
REPORT_FILE = "report.json"


def resolve_run_dir(run_dir: str, resume: str | None = None) -> str:
    """The run's directory: ``resume`` (a run directory, or a checkpoint file in its ``checkpoints/``) or ``run_dir``.

    Raises ConfigError (one line) when a new run (no ``resume``) would start in a directory that
    already holds a run's checkpoint.
    """
    if resume:
        return resume if os.path.isdir(resume) else os.path.dirname(os.path.dirname(resume))
    if os.path.exists(checkpoint_path(run_dir)):
        raise ConfigError(f"run_dir: {run_dir} already holds a run; pass --resume {run_dir} to continue it, "
                          "or choose another run_dir (nothing was overwritten)")
    return run_dir


def git_hash() -> str:
    """The commit of the code being run ("unknown" outside a git checkout)."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_run_dir(run_dir: str, config: dict) -> None:
    """Make ``run_dir/checkpoints`` and write the resolved ``config.yaml`` and ``git_hash.txt`` (atomically)."""
    os.makedirs(os.path.join(run_dir, os.path.dirname(LAST_CHECKPOINT)), exist_ok=True)
    atomic_write_text(os.path.join(run_dir, CONFIG_FILE), yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(os.path.join(run_dir, GIT_HASH_FILE), git_hash() + "\n")


def write_report(run_dir: str, report: dict) -> str:
    """Atomically write ``run_dir/report.json`` (strict JSON: NaN -> null). Returns its path."""
    path = os.path.join(run_dir, REPORT_FILE)
    atomic_write_json(path, report, indent=1)
    return path


@contextlib.contextmanager
def checkpoint_on_signal(run_dir: str, who: str, save: Callable[[], None],
                         announce: bool = True) -> Iterator[Callable[[int], None]]:
    """SIGINT/SIGTERM end the loop at a step boundary, with a checkpoint.

    Yields ``at_step_end(step)``, to call once per step: after a signal it calls ``save()``, prints
    (when ``announce``; DDP ranks > 0 stay quiet) where the checkpoint went and how to continue, and
    exits with ``128 + signum``. The old signal handlers are restored when the block ends.
    """
    stop = StopOnSignal().install()

    def at_step_end(step: int) -> None:
        message = (f"\n[{who}] signal {{signum}} received: checkpoint written at step {step} to "
                   f"{os.path.join(run_dir, LAST_CHECKPOINT)}; continue with --resume {run_dir}") if announce else None
        stop.exit_if_requested(save, message)

    try:
        yield at_step_end
    finally:
        stop.restore()
