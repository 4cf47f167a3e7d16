"""Checkpoints: written atomically, read without pickle.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)``. Writing goes to a temporary file in the same
directory, is flushed to disk, then ``os.replace``-d over the target: an interrupted
write never leaves a half-written checkpoint under the real name.
"""

import os
import tempfile

import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "check_compatible"]


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or belongs to another model. One-line message."""


def save_checkpoint(state: dict, path: str) -> None:
    """Atomically write ``state`` to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint safely (no pickle). Raises CheckpointError with a one-line message."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle payloads refused by weights_only, ...
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a HeadNeRF checkpoint (expected keys 'model' and 'config')")
    return state


def check_compatible(state: dict, model_cfg: dict, path: str) -> None:
    """Refuse a checkpoint whose network differs from ``model_cfg`` (a dict of ModelConfig)."""
    saved = state["config"].get("model", {})
    if saved.get("model_name") != model_cfg.get("model_name"):
        raise CheckpointError(f"{path}: checkpoint is a {saved.get('model_name')!r} model, the config asks for "
                              f"{model_cfg.get('model_name')!r}; use a matching config or another checkpoint")
    diff = [k for k in model_cfg if k in saved and saved[k] != model_cfg[k] and k not in ("feat_addition_alpha", "mlp_precision")]
    if diff:
        raise CheckpointError(f"{path}: checkpoint network differs from the config in {diff} "
                              f"(checkpoint {[saved[k] for k in diff]}, config {[model_cfg[k] for k in diff]})")
