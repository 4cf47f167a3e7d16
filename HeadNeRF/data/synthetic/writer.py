"""Writing the synthetic dataset in the processed-HDF5 layout (``HeadNeRF.data.layout``).

Design decisions
----------------
* **Determinism.** Subject ``i`` draws everything (code, head poses, gazes) from
  ``np.random.default_rng([seed, i])``; rendering has no randomness. The same seed therefore
  writes identical arrays, and a subject does not change when ``num_subjects`` grows.
* **One render call per frame** (all cameras of a frame in one batch) and rows ordered
  frame-major (frame 0 cams 0..C-1, frame 1, ...). Datasets are chunked one row per chunk and
  gzip-compressed, as the training reader reads single rows.
* **Split.** The last subject(s) are test subjects (1 for ≤4 subjects, ~20% otherwise), one
  held-out camera (the last one, never camera 0) when C ≥ 3, and the last ~20% of frames (at
  least 1 when F ≥ 2) are held out for validation.
"""

from __future__ import annotations

import json
import math
import os

import h5py
import numpy as np
import torch
from tqdm import tqdm

from HeadNeRF.data import layout
from HeadNeRF.geometry.gaze import head_pose_from_rotation, pitch_yaw_to_vector, vector_to_pitch_yaw

from . import head_model as hm
from . import rig
from .render import render_view

__all__ = ["generate_dataset", "render_subject", "subject_frames", "make_split", "render_preview_grid", "subject_rng"]


def subject_rng(seed: int, subject: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(subject)])


def subject_frames(seed: int, subject: int, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random draws of one subject: code (D,), head poses (F, 2) in the rig, gazes (F, 2) in the head frame."""
    rng = subject_rng(seed, subject)
    code = hm.sample_code(rng)
    head_poses, gazes = rig.sample_frames(rng, num_frames)
    return code, head_poses, gazes


def render_subject(subject: int, num_cameras: int, num_frames: int, image_size: int, seed: int,
                   device: str = "cpu", on_frame=None, supersample: int = 2) -> dict[str, np.ndarray]:
    """All rows of one subject as a dict keyed like ``layout.KEYS`` (N = num_frames * num_cameras)."""
    code, head_poses, gazes = subject_frames(seed, subject, num_frames)
    cams = np.arange(num_cameras)
    rows: dict[str, list] = {k: [] for k in layout.KEYS}
    for frame in range(num_frames):
        R, t, K = rig.normalized_cameras(cams, np.broadcast_to(head_poses[frame], (num_cameras, 2)), image_size)
        gaze_head = torch.as_tensor(gazes[frame]).expand(num_cameras, 2)
        out = render_view(code, R, t, K, image_size, gaze_head, device=device, supersample=supersample)
        axis = pitch_yaw_to_vector(gaze_head)
        rows["face_patch"].append(out["image"])
        for k in ("mask", "eye_mask", "left_eye_mask", "right_eye_mask", "lm2d", "iris2d"):
            rows[k].append(out[k])
        rows["face_gaze"].append(vector_to_pitch_yaw((R @ axis.unsqueeze(-1)).squeeze(-1)).numpy())
        rows["face_head_pose"].append(head_pose_from_rotation(R).numpy())
        rows["cam_R_w2c"].append(R.numpy())
        rows["cam_t_w2c"].append(t.numpy())
        rows["cam_K"].append(K.numpy())
        rows["latent_code"].append(np.broadcast_to(code, (num_cameras, len(code))))
        rows["subject_index"].append(np.full(num_cameras, subject, dtype=np.int64))
        rows["cam_index"].append(cams.astype(np.int64))
        rows["frame_index"].append(np.full(num_cameras, frame, dtype=np.int64))
        rows["valid_mask"].append(rig.face_visible(R, t).numpy())
        if on_frame is not None:
            on_frame()
    data = {k: np.concatenate(v) for k, v in rows.items()}
    for k, v in data.items():
        if v.dtype.kind == "f":
            data[k] = v.astype(np.float32)
    return data


def write_subject_file(path: str, subject: int, image_size: int, data: dict[str, np.ndarray],
                       supersample: int = 1) -> None:
    """Write one subject's rows to ``path`` (chunked one row per chunk, gzip).

    The ``supersample`` attr records the anti-aliasing factor so that exact ground-truth
    renders (evaluation, the training report) can match the stored images.
    """
    with h5py.File(path, "w") as f:
        f.attrs["layout_version"] = layout.LAYOUT_VERSION
        f.attrs["source"] = "synthetic"
        f.attrs["subject_id"] = int(subject)
        f.attrs["image_size"] = int(image_size)
        f.attrs["supersample"] = int(supersample)
        for key in layout.KEYS:
            arr = np.ascontiguousarray(data[key])
            chunks = (1,) + arr.shape[1:] if arr.shape[0] > 0 else None
            f.create_dataset(key, data=arr, chunks=chunks, compression="gzip", compression_opts=4)
        f["latent_code"].attrs["code_slices"] = json.dumps({k: list(v) for k, v in hm.CODE_SLICES.items()})


def make_split(num_subjects: int, num_cameras: int, num_frames: int) -> layout.Split:
    """Test subjects at the end, the last camera and the last ~20% of frames held out (see module docstring)."""
    subjects = list(range(num_subjects))
    n_test = 0 if num_subjects < 2 else (1 if num_subjects <= 4 else max(1, round(0.2 * num_subjects)))
    cams = [num_cameras - 1] if num_cameras >= 3 else []
    n_frames = 0 if num_frames < 2 else max(1, int(math.floor(0.2 * num_frames)))
    return layout.Split(
        train_subjects=subjects[: num_subjects - n_test], test_subjects=subjects[num_subjects - n_test:],
        heldout_cameras=cams, heldout_frames=list(range(num_frames - n_frames, num_frames)),
    )


def render_preview_grid(num_subjects: int, num_cameras: int, image_size: int, seed: int, device: str = "cpu",
                        frame: int = 0, supersample: int = 2) -> np.ndarray:
    """(num_subjects * S, num_cameras * S, 3) uint8 grid: subject rows × camera columns, one frame."""
    rows = []
    for subject in range(num_subjects):
        code, head_poses, gazes = subject_frames(seed, subject, frame + 1)
        cams = np.arange(num_cameras)
        R, t, K = rig.normalized_cameras(cams, np.broadcast_to(head_poses[frame], (num_cameras, 2)), image_size)
        out = render_view(code, R, t, K, image_size, torch.as_tensor(gazes[frame]), device=device,
                          supersample=supersample)
        rows.append(np.concatenate(list(out["image"]), axis=1))
    return np.concatenate(rows, axis=0)


def generate_dataset(save_dir: str, num_subjects: int, num_cameras: int, num_frames: int, image_size: int,
                     seed: int, progress: bool = True, device: str = "cpu", preview: bool = True,
                     supersample: int = 2) -> dict:
    """Render and write the synthetic dataset.

    Writes ``save_dir/subject%04d.h5`` for each subject, ``split.json`` and ``preview.png``
    (subjects × cameras, first frame). ``supersample``: anti-aliasing factor (see render_view).
    Returns {"files": [...], "split": path, "preview": path or None}.
    """
    if not 1 <= num_cameras <= rig.MAX_CAMERAS:
        raise ValueError(f"num_cameras must be in [1, {rig.MAX_CAMERAS}], got {num_cameras}")
    if min(num_subjects, num_frames, image_size) <= 0:
        raise ValueError("num_subjects, num_frames and image_size must be positive")
    os.makedirs(save_dir, exist_ok=True)
    files = []
    bar = tqdm(total=num_subjects * num_frames, desc="rendering frames", unit="frame", disable=not progress)
    previews = []
    for subject in range(num_subjects):
        data = render_subject(subject, num_cameras, num_frames, image_size, seed, device,
                              on_frame=lambda: bar.update(1), supersample=supersample)
        path = os.path.join(save_dir, layout.subject_file_name(subject))
        write_subject_file(path, subject, image_size, data, supersample)
        files.append(path)
        previews.append(np.concatenate(list(data["face_patch"][:num_cameras]), axis=1))
    bar.close()
    make_split(num_subjects, num_cameras, num_frames).save(save_dir)
    preview_path = None
    if preview:
        import imageio.v2 as imageio

        preview_path = os.path.join(save_dir, "preview.png")
        imageio.imwrite(preview_path, np.concatenate(previews, axis=0))
    return {"files": files, "split": os.path.join(save_dir, layout.SPLIT_FILE), "preview": preview_path}
