"""The photo command's output folder: a run writes into a hidden work folder inside ``save_root`` and
publishes only when everything succeeded (``fit.json`` last: a folder with a ``fit.json`` is complete);
an earlier run's outputs that this run did not write are removed; ``latent.pt`` holds plain tensors.
"""

import os
import shutil

import numpy as np
import torch

from ..atomic_io import atomic_write, atomic_write_json
from ..data.codes import join_code
from ..run_lock import left_by_a_dead_writer
from .inputs import FittingInputError
from .model_io import ModelInfo
from .result import FitResult

__all__ = ["KNOWN_OUTPUTS", "LATENT_FORMAT", "WORK_PREFIX", "check_save_root", "publish_outputs",
           "remove_dead_work_dirs", "remove_stale_outputs", "save_latent"]

LATENT_FORMAT = "HeadNeRF_Gaze latent v1"

# Everything the command may write into save_root; what this run does not write is removed at the
# end, so every output in the folder comes from the last run (an old interp.gif never stays beside new
# outputs). redirected/*.png are the photo's redirected frames.
KNOWN_OUTPUTS = ("merged.png", "gaze_sweep.gif", "gaze_sweep.mp4", "pose_sweep.gif", "pose_sweep.mp4", "interp.gif",
                 "latent.pt", "photo_gaze_sweep.gif", "photo_gaze_sweep.mp4", "photo_strip.png", "fit.json")
WORK_PREFIX = ".fitting_tmp_"


def check_save_root(save_root: str) -> None:
    """Refuse (before any work) a save_root that is an existing file."""
    if os.path.exists(save_root) and not os.path.isdir(save_root):
        raise FittingInputError(f"--save_root {save_root} is an existing file, not a folder; pass a folder path")


def remove_dead_work_dirs(save_root: str) -> list[str]:
    """Delete ``.fitting_tmp_<pid>_*`` folders of runs that were killed (their pid is gone)."""
    removed = []
    for name in os.listdir(save_root) if os.path.isdir(save_root) else []:
        if not left_by_a_dead_writer(name, WORK_PREFIX):
            continue  # not ours, or a live run's
        shutil.rmtree(os.path.join(save_root, name), ignore_errors=True)
        removed.append(name)
    return removed


def publish_outputs(work: str, save_root: str, outputs: list[str], report: dict, removed_before: list[str]) -> None:
    """Move a finished run's outputs from its work folder into save_root; fit.json last, since its presence
    marks a complete folder. An earlier run's outputs that this run did not write are removed and listed in
    ``report["removed_old_outputs"]`` (with ``removed_before``, e.g. killed runs' work folders)."""
    if any(name.startswith("redirected/") for name in outputs):
        os.makedirs(os.path.join(save_root, "redirected"), exist_ok=True)
    if os.path.isfile(os.path.join(save_root, "fit.json")):  # the folder is incomplete while outputs move
        os.unlink(os.path.join(save_root, "fit.json"))
    report["removed_old_outputs"] = remove_stale_outputs(save_root, outputs) + removed_before
    atomic_write_json(os.path.join(work, "fit.json"), report, indent=1)
    for name in outputs + ["fit.json"]:
        os.replace(os.path.join(work, name), os.path.join(save_root, name))


def remove_stale_outputs(save_root: str, keep: list[str]) -> list[str]:
    """Delete the command's outputs in save_root that are not in ``keep`` (written by an earlier run)."""
    keep_set, removed = set(keep), []
    for name in KNOWN_OUTPUTS:
        if name not in keep_set and os.path.isfile(os.path.join(save_root, name)):
            os.unlink(os.path.join(save_root, name))
            removed.append(name)
    folder = os.path.join(save_root, "redirected")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        rel = "redirected/" + name
        if rel not in keep_set and name.endswith(".png"):
            os.unlink(os.path.join(folder, name))
            removed.append(rel)
    return removed


def save_latent(path: str, result: FitResult, info: ModelInfo, warp=None, extra: dict | None = None) -> None:
    """latent.pt: plain tensors / numbers / strings only (``torch.load(..., weights_only=True)``)."""
    data = {
        "format": LATENT_FORMAT,
        "model_name": info.model_name, "image_size": int(info.image_size),
        "shape_code": result.shape_code[0].cpu(), "appearance_code": result.appearance_code[0].cpu(),
        "code": join_code(result.shape_code[0].cpu(), result.appearance_code[0].cpu(), info.code_slices),
        "code_slices": {k: list(v) for k, v in info.code_slices.items()},
        "R_w2c": result.R_w2c[0].cpu(), "t_w2c": result.t_w2c[0].cpu(), "K": result.K[0].cpu(),
        "gaze": result.gaze[0].cpu(), "camera_offset": result.camera_offset.cpu(),
        "eye_mask": result.eye_mask[0, 0].cpu().to(torch.uint8),
        "warp": torch.as_tensor(np.eye(3) if warp is None else np.asarray(warp), dtype=torch.float64),
    }
    data.update(extra or {})
    atomic_write(path, lambda p: torch.save(data, p))
