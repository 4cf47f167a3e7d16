"""Data for the estimator: labelled face images of chosen subjects, and its synthetic set.

* :class:`LabelledFaces` selects rows through :class:`~HeadNeRF.data.dataset.GazeDataset`
  (validation of every file, ``valid_mask``, subject choice), keeps only rows with a gaze label
  (``gaze_valid``, when the layout has it, and finite labels) and reads just the keys the
  estimator needs: ``face_patch``, ``face_gaze``, ``face_head_pose``, ``cam_R_w2c`` (for the
  eye-in-head label) and ``lm2d`` (the eye centres the eye branch is cropped at and learns to find). With ``preload`` all
  images are read once, in bulk, as uint8 at the input size (a 64² image is 12 kB); without it
  rows are read per item (large real sets).
* :func:`make_estimator_dataset` renders many synthetic identities with the synthetic
  generator's own pieces (``render_subject``, ``write_subject_file``, ``make_split``): each
  subject file is written atomically, so an interrupted run continues with the missing
  subjects, and a finished set (``split.json`` present) is reused as it is.
"""

import json
import multiprocessing as mp
import os
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..atomic_io import atomic_write, atomic_write_json
from ..data.dataset import GazeDataset
from ..data.layout import SPLIT_FILE, DataFormatError, subject_file_name
from ..geometry.gaze import gaze_in_head_frame
from .eyes import eye_centres_from_landmarks

__all__ = ["MARKER_FILE", "LabelledFaces", "make_estimator_dataset", "to_input"]

MARKER_FILE = "estimator_dataset.json"


def to_input(patches: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, size, size) uint8 (area-downsampled / bilinear-upsampled, rounded)."""
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2)
    if x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x.float(), size=(size, size), mode=mode).round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


class LabelledFaces(torch.utils.data.Dataset):
    """Labelled rows of ``subjects``.

    Item: {"image": (3, s, s) uint8, "gaze": (2,), "head_pose": (2,), "eye_in_head": (2,), "eye_centres": (2, 2),
    "subject": ()}; ``eye_in_head`` is the gaze in the head frame, ``rotate_pitch_yaw(gaze, R_w2c.T)``;
    ``eye_centres`` the two eye centres of ``lm2d`` in normalised image units (``eyes.py``; NaN when
    the row has no finite landmarks).

    Attributes:
        refs: list of (subject, row) per item. stored_size: image size in the files.
        skipped_unlabelled: rows marked labelled whose gaze/head-pose label is not finite, dropped here (rows
            with ``gaze_valid`` False are already left out by ``GazeDataset(require_gaze=True)``).
    """

    def __init__(self, dataset_dir: str, subjects: list, input_size: int, max_rows_per_subject: int = 0,
                 preload: bool = True, progress: bool = False, desc: str = "loading"):
        # require_gaze: rows with gaze_valid False (unlabelled, e.g. ETH-XGaze test files) never reach us
        base = GazeDataset(dataset_dir, "all", subjects=list(subjects), max_rows_per_subject=max_rows_per_subject,
                           require_gaze=True)
        self.input_size, self.stored_size, self.paths = int(input_size), base.stored_size, dict(base.paths)
        self.dataset_dir = dataset_dir
        by_subject: dict[int, list] = {}
        for ref in base.rows:
            by_subject.setdefault(ref.subject, []).append(ref.row)
        refs, gaze, head, eye, centres, images, self.skipped_unlabelled = [], [], [], [], [], [], 0
        for sid in tqdm(list(by_subject), desc=desc, unit="subject", disable=not progress, leave=False):
            rows = np.array(sorted(by_subject[sid]))  # h5py reads lists of increasing indices
            with h5py.File(self.paths[sid], "r") as f:
                g = np.asarray(f["face_gaze"][:], dtype=np.float32)[rows]
                h = np.asarray(f["face_head_pose"][:], dtype=np.float32)[rows]
                R = np.asarray(f["cam_R_w2c"][:], dtype=np.float32)[rows]
                ok = np.isfinite(g).all(1) & np.isfinite(h).all(1)
                if "gaze_valid" in f:
                    ok &= np.asarray(f["gaze_valid"][:], dtype=bool)[rows]
                self.skipped_unlabelled += int((~ok).sum())
                rows, g, h, R = rows[ok], g[ok], h[ok], R[ok]
                if "lm2d" in f and len(rows):
                    lm = np.asarray(f["lm2d"][rows.tolist()], dtype=np.float32)
                else:
                    lm = np.full((len(rows), 68, 2), np.nan, dtype=np.float32)
                stored = int(f["face_patch"].shape[1])  # landmarks are pixels of the stored image
                if len(rows) and preload:
                    images.append(to_input(f["face_patch"][rows.tolist()], self.input_size))
            refs += [(int(sid), int(r)) for r in rows]
            gaze.append(g)
            head.append(h)
            # the gaze in the head frame (the eyeball's rotation relative to the head), as training.py
            eye.append(gaze_in_head_frame(torch.from_numpy(g), torch.from_numpy(R)).numpy())
            centres.append(eye_centres_from_landmarks(torch.from_numpy(lm), stored).numpy())
        if not refs:
            raise DataFormatError(f"{dataset_dir}: no rows with gaze labels among subjects {sorted(by_subject)} "
                                  f"({self.skipped_unlabelled} rows without a label)")
        self.refs = refs
        self.gaze = torch.from_numpy(np.concatenate(gaze))
        self.head_pose = torch.from_numpy(np.concatenate(head))
        self.eye_in_head = torch.from_numpy(np.concatenate(eye)).float()
        self.eye_centres = torch.from_numpy(np.concatenate(centres)).float()  # normalised: the same at any size
        self.subjects = torch.tensor([s for s, _ in refs])
        self.images = torch.cat(images) if preload else None
        self._files: dict = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.refs)

    def image(self, index: int) -> torch.Tensor:
        """(3, s, s) uint8 image of item ``index``."""
        if self.images is not None:
            return self.images[index]
        if self._pid != os.getpid():  # a DataLoader worker: open its own handles
            self._files, self._pid = {}, os.getpid()
        sid, row = self.refs[index]
        if sid not in self._files:
            self._files[sid] = h5py.File(self.paths[sid], "r")
        return to_input(self._files[sid]["face_patch"][row][None], self.input_size)[0]

    def __getitem__(self, index: int) -> dict:
        return {"image": self.image(index), "gaze": self.gaze[index], "head_pose": self.head_pose[index],
                "eye_in_head": self.eye_in_head[index], "eye_centres": self.eye_centres[index],
                "subject": self.subjects[index]}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, None
        return state


# ----------------------------------------------------------------------------------------------
# The synthetic set


def _subject_complete(path: str, rows: int) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f["face_patch"].shape[0] == rows and f["valid_mask"].shape[0] == rows
    except (OSError, KeyError):
        return False


def _render_one(args) -> str:
    """Render and atomically write one subject file (runs in a worker process when workers > 1)."""
    subject, save_dir, num_cameras, num_frames, image_size, seed, supersample, threads = args
    if threads:
        torch.set_num_threads(threads)
    # the synthetic renderer loads pytorch3d: imported only when a set is made, not by load_estimator/estimate
    from ..data.synthetic.writer import render_subject, write_subject_file

    path = os.path.join(save_dir, subject_file_name(subject))
    data = render_subject(subject, num_cameras, num_frames, image_size, seed, supersample=supersample)
    atomic_write(path, lambda tmp: write_subject_file(tmp, subject, image_size, data, supersample))
    return path


def make_estimator_dataset(save_dir: str, num_subjects: int = 200, num_cameras: int = 4, num_frames: int = 3,
                           image_size: int = 64, seed: int = 1, supersample: int = 2, workers: int = 1,
                           progress: bool = True) -> dict:
    """Render a synthetic set with many identities for the estimator (skipped when it exists).

    Subjects, cameras, frames, split and images are those of ``generate_dataset`` with the
    same arguments (same seed -> same files); ``split.json`` is written last, so its presence
    means the set is complete. Returns {"dir", "skipped", "seconds", "images"}.
    """
    # the synthetic renderer loads pytorch3d: imported only when a set is made, not by load_estimator/estimate
    from ..data.synthetic.rig import MAX_CAMERAS
    from ..data.synthetic.writer import make_split

    if not 1 <= num_cameras <= MAX_CAMERAS:
        raise ValueError(f"num_cameras must be in [1, {MAX_CAMERAS}], got {num_cameras}")
    if min(num_subjects, num_frames, image_size, supersample, workers) <= 0:
        raise ValueError("num_subjects, num_frames, image_size, supersample and workers must be positive")
    params = {"num_subjects": num_subjects, "num_cameras": num_cameras, "num_frames": num_frames,
              "image_size": image_size, "seed": seed, "supersample": supersample}
    if os.path.isfile(os.path.join(save_dir, SPLIT_FILE)):
        marker = os.path.join(save_dir, MARKER_FILE)
        if os.path.isfile(marker):
            with open(marker) as f:
                made = json.load(f).get("params", {})
            if made and made != params:
                print(f"[estimator data] note: {save_dir} was made with {made}, not {params}; reusing it as it is "
                      "(delete the directory to remake it)")
        return {"dir": save_dir, "skipped": True, "seconds": 0.0, "images": None}
    os.makedirs(save_dir, exist_ok=True)
    start = time.time()
    rows = num_cameras * num_frames
    todo = [s for s in range(num_subjects) if not _subject_complete(os.path.join(save_dir, subject_file_name(s)), rows)]
    jobs = [(s, save_dir, num_cameras, num_frames, image_size, seed, supersample, 1 if workers > 1 else 0) for s in todo]
    bar = tqdm(total=num_subjects, initial=num_subjects - len(todo), desc="estimator set", unit="subject",
               disable=not progress, dynamic_ncols=True)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_render_one, jobs):
                bar.update(1)
    else:
        for job in jobs:
            _render_one(job)
            bar.update(1)
    bar.close()
    make_split(num_subjects, num_cameras, num_frames).save(save_dir)
    seconds = time.time() - start
    atomic_write_json(os.path.join(save_dir, MARKER_FILE),
                      {"params": params, "seconds": round(seconds, 1), "rendered_subjects": len(todo)}, indent=1)
    return {"dir": save_dir, "skipped": False, "seconds": seconds, "images": num_subjects * rows}
