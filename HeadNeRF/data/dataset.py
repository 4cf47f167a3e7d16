"""Lazy, validated reader of processed HDF5 files (the contract in ``layout.py``).

Design:
* Each file is validated once, in ``__init__``, in the main process; a bad file raises one
  :class:`~HeadNeRF.data.layout.DataFormatError` naming the file and the key.
* Only the small per-row index arrays are read up front; images are read per item.
* h5py handles are opened lazily **per process** (keyed on ``os.getpid()``), so the dataset
  is safe with ``DataLoader(num_workers>0)``: a handle opened before ``fork`` is never reused.
* Rows whose ``valid_mask`` is False are skipped. Rows without a gaze label (optional key
  ``gaze_valid`` False, e.g. ETH-XGaze test files) are kept unless ``require_gaze=True``; their
  item has ``gaze_valid`` False and ``gaze`` 0.

Item layout (one row; S = output image size):

=================  =============  ==================================================
key                shape / dtype  meaning
=================  =============  ==================================================
image              (3,S,S) f32    RGB in [0, 1]
head_mask          (1,S,S) f32    {0, 1}
eye_mask           (1,S,S) f32    {0, 1}, union of both periocular masks
lm2d               (68,2) f32     landmarks, pixels of the S-image
iris2d             (2,2) f32      iris centres, pixels of the S-image
gaze               (2,) f32       (pitch, yaw) rad, normalised camera frame (0 when gaze_valid is False)
gaze_valid         () bool        False for rows without a gaze label (optional key ``gaze_valid``)
head_pose          (2,) f32       (pitch, yaw) rad, normalised camera frame
R_w2c, t_w2c, K    (3,3) (3,) (3,3)  head frame -> camera; K in pixels of the S-image
shape_code         (Ds,) f32      identity ⊕ expression
appearance_code    (Da,) f32      albedo ⊕ illumination
subject, cam_index, frame_index, item_index   () int64
template_image     (3,S,S) f32    only with ``with_template``: the same subject and camera
                                  at its most frontal gaze (for the template-eye loss)
=================  =============  ==================================================
"""

import os
from typing import NamedTuple

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from .codes import split_code
from .layout import DataFormatError, Split, read_gaze_valid, subject_file_name, validate_file

__all__ = ["GazeDataset", "RowRef", "open_validated", "split_val_rows"]

WHICH = ("train", "val", "test", "all")


class RowRef(NamedTuple):
    """Where dataset item ``i`` lives: ``GazeDataset.rows[i]``."""

    subject: int
    row: int  # row in the subject's file
    cam: int
    frame: int
    template_row: int  # the same subject and camera at its most frontal gaze


def open_validated(path: str) -> tuple[h5py.File, dict]:
    """Open and validate one processed file. Raises DataFormatError (one line) on any problem."""
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(f"{path}: key '<file header>': expected an HDF5 file, found unreadable data "
                              f"({str(exc).splitlines()[0]}); the file is probably truncated or not HDF5") from None
    try:
        info = validate_file(f, path)
    except Exception:
        f.close()
        raise
    return f, info


class GazeDataset(torch.utils.data.Dataset):
    """Rows of one dataset directory, filtered by ``split.json``.

    Args:
        dataset_dir: folder with ``subjectXXXX.h5`` files and ``split.json``.
        which: "train" (train subjects, not held-out cameras/frames), "val" (train subjects,
            held-out cameras or frames), "test" (test subjects) or "all".
        subjects: restrict to these subject ids (default: what ``which`` selects).
        image_size: resize images/masks/K/landmarks to this size (default: stored size).
        max_rows_per_subject: keep at most this many rows per subject (0 = all).
        with_template: also return ``template_image`` (see module docstring).
        require_gaze: skip rows without a gaze label (``gaze_valid`` False); the gaze estimator
            trains with True. Default False: such rows are kept (item ``gaze_valid`` False).
    """

    def __init__(self, dataset_dir: str, which: str = "train", subjects=None, image_size: int | None = None,
                 max_rows_per_subject: int = 0, with_template: bool = False, require_gaze: bool = False,
                 cache_items: bool = False):
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {which!r}")
        if not os.path.isdir(dataset_dir):
            raise DataFormatError(f"{dataset_dir}: dataset directory not found (make one with "
                                  f"`python DataProcess/make_synthetic_dataset.py --save_dir {dataset_dir}`)")
        self.dataset_dir = dataset_dir
        self.split = Split.load(dataset_dir)
        if subjects:
            subject_ids = list(subjects)
        elif which == "test":
            subject_ids = list(self.split.test_subjects)
        elif which == "all":
            subject_ids = list(self.split.train_subjects) + list(self.split.test_subjects)
        else:
            subject_ids = list(self.split.train_subjects)
        if not subject_ids:
            raise DataFormatError(f"{dataset_dir}: no subjects selected for '{which}' (check split.json)")

        self.paths, self.code_slices, self.rows, stored_sizes = {}, None, [], set()
        self.gaze_valid: dict[int, np.ndarray] = {}  # subject -> (N,) bool
        heldout_cams, heldout_frames = set(self.split.heldout_cameras), set(self.split.heldout_frames)
        for sid in subject_ids:
            path = os.path.join(dataset_dir, subject_file_name(sid))
            f, info = open_validated(path)
            with f:
                if self.code_slices is None:
                    self.code_slices = info["code_slices"]
                elif info["code_slices"] != self.code_slices:
                    raise DataFormatError(f"{path}: key 'latent_code': expected code_slices {self.code_slices} "
                                          f"(as in the other subjects), found {info['code_slices']}")
                stored_sizes.add(info["S"])
                valid = np.asarray(f["valid_mask"][:], dtype=bool)
                cams = np.asarray(f["cam_index"][:])
                frames = np.asarray(f["frame_index"][:])
                gaze = np.asarray(f["face_gaze"][:], dtype=np.float64)
                gaze_valid = read_gaze_valid(f)
            self.gaze_valid[sid] = gaze_valid
            heldout = np.isin(cams, list(heldout_cams)) | np.isin(frames, list(heldout_frames))
            keep = valid.copy()
            if require_gaze:
                keep &= gaze_valid
            if which == "train":
                keep &= ~heldout
            elif which == "val":
                keep &= heldout
            rows = np.flatnonzero(keep)
            if max_rows_per_subject:
                rows = rows[:max_rows_per_subject]
            self.paths[sid] = path
            # The template row per camera: the most frontal gaze among this subject's valid rows.
            template = {}
            for cam in np.unique(cams[valid]):
                cand = np.flatnonzero(valid & (cams == cam) & gaze_valid)  # unlabelled rows hold gaze 0: not "frontal"
                if len(cand) == 0:
                    cand = np.flatnonzero(valid & (cams == cam))
                template[int(cam)] = int(cand[np.argmin(np.abs(gaze[cand]).sum(1))])
            self.rows += [RowRef(sid, int(r), int(cams[r]), int(frames[r]), template.get(int(cams[r]), int(r)))
                          for r in rows]
        if not self.rows:
            raise DataFormatError(f"{dataset_dir}: no valid rows for '{which}' with subjects {subject_ids}"
                                  + (" (require_gaze=True: rows without a gaze label are skipped)" if require_gaze else ""))
        if len(stored_sizes) != 1 and image_size is None:
            raise DataFormatError(f"{dataset_dir}: subjects have different image sizes {sorted(stored_sizes)}; pass image_size")
        self.stored_size = stored_sizes.pop() if len(stored_sizes) == 1 else None
        self.image_size = image_size or self.stored_size
        self.with_template = with_template
        # cache_items: each item is read from HDF5 once and kept (a dict of tensors per row, ~82 kB at 64 px): a
        # small dataset read every epoch (the quickstart: 3-4 ms of h5py calls per item, ~12 s of a run) stops
        # paying for it. Callers must not modify an item's tensors in place (collate copies them).
        self._cache: dict | None = {} if cache_items else None
        self._files: dict = {}
        self._pid = None

        s = self.code_slices
        self.shape_code_dim = (s["identity"][1] - s["identity"][0]) + (s["expression"][1] - s["expression"][0])
        self.appearance_code_dim = (s["albedo"][1] - s["albedo"][0]) + (s["illumination"][1] - s["illumination"][0])

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self, sid) -> h5py.File:
        if self._pid != os.getpid():  # new worker process: never reuse a handle from the parent
            self._files, self._pid = {}, os.getpid()
        if sid not in self._files:
            self._files[sid] = h5py.File(self.paths[sid], "r")
        return self._files[sid]

    def split_code(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D) latent code -> (shape_code (..., Ds), appearance_code (..., Da))."""
        return split_code(code, self.code_slices)

    def _image(self, arr: np.ndarray) -> torch.Tensor:
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
        if img.shape[-1] != self.image_size:
            img = F.interpolate(img[None], size=(self.image_size,) * 2, mode="area" if img.shape[-1] > self.image_size
                                else "bilinear", antialias=False)[0]
        return img

    def _mask(self, arr: np.ndarray) -> torch.Tensor:
        m = (torch.from_numpy(np.asarray(arr)) >= 128).float()[None]
        if m.shape[-1] != self.image_size:
            m = (F.interpolate(m[None], size=(self.image_size,) * 2, mode="area" if m.shape[-1] > self.image_size
                               else "nearest")[0] >= 0.5).float()
        return m

    def __getitem__(self, index: int) -> dict:
        if self._cache is None:
            return self._read_item(index)
        if index not in self._cache:
            self._cache[index] = self._read_item(index)
        return dict(self._cache[index])

    def _read_item(self, index: int) -> dict:
        sid, row, cam, frame, template_row = self.rows[index]
        f = self._file(sid)
        scale = self.image_size / f["face_patch"].shape[1]
        K = torch.from_numpy(np.asarray(f["cam_K"][row], dtype=np.float32))
        K[:2] *= scale  # pixel-centre convention: resizing scales continuous pixel coordinates
        code = torch.from_numpy(np.asarray(f["latent_code"][row], dtype=np.float32))
        shape_code, appearance_code = self.split_code(code)
        item = {
            "image": self._image(f["face_patch"][row]),
            "head_mask": self._mask(f["mask"][row]),
            "eye_mask": self._mask(f["eye_mask"][row]),
            "lm2d": torch.from_numpy(np.asarray(f["lm2d"][row], dtype=np.float32)) * scale,
            "iris2d": torch.from_numpy(np.asarray(f["iris2d"][row], dtype=np.float32)) * scale,
            "gaze": torch.from_numpy(np.asarray(f["face_gaze"][row], dtype=np.float32)),
            "gaze_valid": torch.tensor(bool(self.gaze_valid[sid][row])),
            "head_pose": torch.from_numpy(np.asarray(f["face_head_pose"][row], dtype=np.float32)),
            "R_w2c": torch.from_numpy(np.asarray(f["cam_R_w2c"][row], dtype=np.float32)),
            "t_w2c": torch.from_numpy(np.asarray(f["cam_t_w2c"][row], dtype=np.float32)),
            "K": K,
            "shape_code": shape_code,
            "appearance_code": appearance_code,
            "subject": torch.tensor(sid),
            "cam_index": torch.tensor(cam),
            "frame_index": torch.tensor(frame),
            "item_index": torch.tensor(index),
        }
        if self.with_template:
            item["template_image"] = self._image(f["face_patch"][template_row])
        return item

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self):  # DataLoader workers get a copy without open handles
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, None
        return state


def split_val_rows(val_ds: GazeDataset) -> tuple[list, list]:
    """Indices of a "val" dataset's held-out-frame rows (seen cameras) and of its held-out-camera rows."""
    cams = set(val_ds.split.heldout_cameras)
    frames_rows = [i for i, r in enumerate(val_ds.rows) if r.cam not in cams]
    cam_rows = [i for i, r in enumerate(val_ds.rows) if r.cam in cams]
    return frames_rows, cam_rows
