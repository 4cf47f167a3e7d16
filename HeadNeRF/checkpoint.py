"""Checkpoints: written atomically, read without pickle.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)``. Writing goes to a temporary file in the same
directory, is flushed to disk, then ``os.replace``-d over the target: an interrupted
write never leaves a half-written checkpoint under the real name.
"""

import os

import torch

from .atomic_io import atomic_write, remove_stale_temporaries as _remove_stale

__all__ = ["CheckpointError", "LAST_CHECKPOINT", "checkpoint_path", "run_dir_of", "remove_stale_temporaries", "save_checkpoint",
           "load_safely", "load_checkpoint", "check_compatible"]


LAST_CHECKPOINT = os.path.join("checkpoints", "last.pt")  # a run directory's checkpoint, relative to the run


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or belongs to another model. One-line message."""


def checkpoint_path(run_or_file: str) -> str:
    """A run directory -> its ``checkpoints/last.pt``; anything else is taken as the checkpoint file itself."""
    return os.path.join(run_or_file, LAST_CHECKPOINT) if os.path.isdir(run_or_file) else run_or_file


def run_dir_of(checkpoint_file: str) -> str:
    """The run directory of a run's checkpoint file (``<run>/checkpoints/last.pt`` -> ``<run>``, absolute):
    the inverse of :func:`checkpoint_path` for a run directory."""
    run = os.path.abspath(checkpoint_file)
    for _ in LAST_CHECKPOINT.split(os.sep):
        run = os.path.dirname(run)
    return run


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete ``.tmp_<pid>_*.pt`` files of writers that are gone (a run killed mid-write leaves one,
    up to the checkpoint's size). Temporaries of live processes are kept. Returns the removed paths."""
    return _remove_stale(directory, ".pt")


def save_checkpoint(state: dict, path: str) -> None:
    """Atomically write ``state`` to ``path`` (temporaries of killed earlier writers are removed first)."""
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_safely(path: str, what: str = "checkpoint", map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with a one-line :class:`CheckpointError` on failure.

    torch's own message for a refused pickle payload advises re-running with ``weights_only=False``;
    that advice turns the safety off for an untrusted file, so it is never repeated here: the
    message says whether the file is missing, corrupt or not a file this project wrote.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle payloads refused by weights_only, text files, ...
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
            reason = "it holds Python objects that a safe load refuses: not a file this project wrote"
        elif "zip" in text.lower() or "central directory" in text or "EOF" in text or "magic number" in text:
            reason = "the file is corrupt or truncated, or not a torch file"
        else:
            reason = f"not a torch file this project wrote ({text.splitlines()[0][:120] if text else type(exc).__name__})"
        raise CheckpointError(f"{path}: cannot read this {what}: {reason}") from None


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint safely (no pickle). Raises CheckpointError with a one-line message."""
    path = checkpoint_path(path)
    state = load_safely(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a HeadNeRF checkpoint (expected keys 'model' and 'config')")
    return state


def check_compatible(state: dict, model_cfg: dict, path: str) -> None:
    """Refuse a checkpoint whose network differs from ``model_cfg`` (a dict of ModelConfig)."""
    saved = state["config"].get("model") if isinstance(state.get("config"), dict) else None
    if not isinstance(saved, dict) or "model_name" not in saved:
        kind = ("a gaze-estimator checkpoint (train_gaze_estimator.py)" if "estimator" in state
                else "not a NeRF checkpoint")
        raise CheckpointError(f"{path}: this file is {kind} (no 'model.model_name' in its config); "
                              "pass a run of train_headnerf.py")
    if saved.get("model_name") != model_cfg.get("model_name"):
        raise CheckpointError(f"{path}: checkpoint is a {saved.get('model_name')!r} model, the config asks for "
                              f"{model_cfg.get('model_name')!r}; use a matching config or another checkpoint")
    diff = [k for k in model_cfg if k in saved and saved[k] != model_cfg[k] and k not in ("feat_addition_alpha", "mlp_precision")]
    if diff:
        raise CheckpointError(f"{path}: checkpoint network differs from the config in {diff} "
                              f"(checkpoint {[saved[k] for k in diff]}, config {[model_cfg[k] for k in diff]})")
