"""Checks the command-line scripts share before any heavy import (standard library only: a wrong command
fails in a fraction of a second). Each returns the problem as one line without a prefix, or None; the
script prints it in its own style and exits with 2.

Floor module: imports nothing of the package.
"""

import os

__all__ = ["missing_path", "output_folder_is_a_file"]


def missing_path(path: str, what: str = "file") -> str | None:
    """``"<path>: <what> not found"`` when nothing exists at ``path`` (``what``: "file", "input folder", ...)."""
    return None if os.path.exists(path) else f"{path}: {what} not found"


def output_folder_is_a_file(path: str, flag: str) -> str | None:
    """A one-line refusal when the output folder given by ``flag`` (e.g. ``--save_dir``) is an existing file."""
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{flag} {path} is an existing file, not a folder; pass a folder path"
    return None
