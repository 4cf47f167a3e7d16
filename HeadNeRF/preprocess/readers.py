"""Readers of the three input formats, and format detection.

* ``xgaze_h5``: the official ETH-XGaze normalised files ``subjectXXXX.h5`` (BGR ``face_patch``,
  ``face_head_pose``; ``face_gaze`` absent in test files; ``face_mat_norm``, ``frame_index`` and
  ``cam_index`` (N, 1); ``facial_landmarks`` sometimes absent).
* ``gazenerf_h5``: GazeNeRF / GazeGaussian preprocessed files ``xgaze_subjectXXXX.h5`` (BGR
  ``face_patch``, ``head_mask``, ``left_eye_mask``, ``right_eye_mask``, ``facial_landmarks``,
  ``latent_codes`` (N, 306), ``w2c_Rmat``, ``w2c_Tvec``, ``inmat``, ``pitchyaw_head``, ...).
* ``images``: a folder per subject of photos (jpg/png/...), optional ``labels.csv``.

Every problem with an input is an :class:`InputError` whose message is one line naming the file.
HDF5 files are opened once per subject and read in row chunks (a 10K-row subject never sits in memory).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re

import h5py
import numpy as np

__all__ = [
    "FORMATS",
    "GAZENERF_REQUIRED",
    "IMAGE_EXTENSIONS",
    "XGAZE_REQUIRED",
    "H5Subject",
    "InputError",
    "PhotoLabel",
    "SubjectSource",
    "detect_format",
    "list_photos",
    "list_subjects",
    "open_h5_subject",
    "read_labels_csv",
]

FORMATS = ("xgaze_h5", "gazenerf_h5", "images")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
XGAZE_REQUIRED = ("face_patch", "face_head_pose")
XGAZE_OPTIONAL = ("face_gaze", "face_mat_norm", "frame_index", "cam_index", "facial_landmarks")
GAZENERF_REQUIRED = ("face_patch", "head_mask", "left_eye_mask", "right_eye_mask", "facial_landmarks", "latent_codes",
                     "w2c_Rmat", "w2c_Tvec", "inmat")
GAZENERF_MARKERS = ("latent_codes", "w2c_Rmat", "head_mask")


class InputError(ValueError):
    """An input file or folder cannot be used. The message is one line and names it."""


@dataclasses.dataclass(frozen=True)
class SubjectSource:
    """One input subject: a file (h5 formats) or a folder (images)."""

    name: str  # file or folder name, e.g. "subject0003.h5"
    path: str
    subject_id: int  # number in the name (subject0003 -> 3), else the position in sorted order
    fmt: str


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def number_in(name: str) -> int | None:
    nums = re.findall(r"\d+", os.path.splitext(name)[0])
    return int(nums[-1]) if nums else None


def detect_format(img_dir: str) -> str:
    """'xgaze_h5', 'gazenerf_h5' or 'images' from the folder's contents. Raises InputError."""
    if not os.path.isdir(img_dir):
        raise InputError(f"{img_dir}: input folder not found")
    names = sorted(os.listdir(img_dir))
    h5s = [n for n in names if n.endswith((".h5", ".hdf5")) and os.path.isfile(os.path.join(img_dir, n))]
    for n in h5s:  # the first readable file decides
        try:
            with h5py.File(os.path.join(img_dir, n), "r") as f:
                keys = set(f.keys())
        except OSError:
            continue
        if any(k in keys for k in GAZENERF_MARKERS):
            return "gazenerf_h5"
        if "face_patch" in keys:
            return "xgaze_h5"
    if h5s:
        return "gazenerf_h5" if all(n.startswith("xgaze_") for n in h5s) else "xgaze_h5"
    dirs = [n for n in names if os.path.isdir(os.path.join(img_dir, n)) and not n.startswith(".")]
    if any(_is_image(n) for d in dirs for n in os.listdir(os.path.join(img_dir, d))) or any(_is_image(n) for n in names):
        return "images"
    raise InputError(f"{img_dir}: no .h5 files and no image folders found; pass --input_format "
                     f"({' | '.join(FORMATS)}) and check --img_dir")


def list_subjects(img_dir: str, fmt: str) -> list[SubjectSource]:
    """All subjects of the folder in sorted name order (what --sb/--se index)."""
    if fmt not in FORMATS:
        raise InputError(f"--input_format must be one of {FORMATS}, got {fmt!r}")
    names = sorted(os.listdir(img_dir))
    if fmt == "images":
        entries = [n for n in names if os.path.isdir(os.path.join(img_dir, n)) and not n.startswith(".")]
        if not entries and any(_is_image(n) for n in names):  # a single folder of photos = one subject
            return [SubjectSource(os.path.basename(os.path.normpath(img_dir)), img_dir, 0, fmt)]
    else:
        entries = [n for n in names if n.endswith((".h5", ".hdf5")) and not n.startswith(".")]
    out, used = [], set()
    for pos, n in enumerate(entries):
        sid = number_in(n) if fmt != "images" else None
        if sid is None or sid in used:
            sid = pos
            while sid in used:
                sid += 1
        used.add(sid)
        out.append(SubjectSource(n, os.path.join(img_dir, n), sid, fmt))
    return out


class H5Subject:
    """An open input HDF5 file checked for the keys of its format; rows are read in chunks.

    Raises InputError (one line) for an unreadable/truncated file, missing keys or no rows.
    """

    def __init__(self, path: str, required: tuple, fmt: str):
        self.path, self.fmt = path, fmt
        try:
            self.f = h5py.File(path, "r")
        except OSError as exc:
            size = os.path.getsize(path) if os.path.exists(path) else 0
            why = "empty file" if size == 0 else f"not a readable HDF5 file ({str(exc).splitlines()[0]}); truncated?"
            raise InputError(f"{path}: {why}") from None
        try:
            self._check(required)
        except Exception:
            self.f.close()
            raise

    def _check(self, required):
        keys = set(self.f.keys())
        missing = [k for k in required if k not in keys]
        if missing:
            raise InputError(f"{self.path}: not a {self.fmt} file: missing keys {missing} (found {sorted(keys)})")
        n = self.f["face_patch"].shape[0] if self.f["face_patch"].ndim else 0
        if n == 0:
            raise InputError(f"{self.path}: no rows (face_patch has shape {self.f['face_patch'].shape})")
        shape = self.f["face_patch"].shape
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise InputError(f"{self.path}: face_patch must be (N, S, S, 3) BGR uint8, found shape {shape}")
        for k in keys:
            ds = self.f[k]
            if not isinstance(ds, h5py.Dataset) or not ds.shape:
                continue
            if ds.shape[0] != n and k in required + XGAZE_OPTIONAL + ("pitchyaw_head", "face_head_pose"):
                raise InputError(f"{self.path}: key '{k}' has {ds.shape[0]} rows, face_patch has {n}")
            try:  # a truncated file fails here, not after an hour of processing
                ds[0]
                ds[ds.shape[0] - 1]
            except (OSError, ValueError, KeyError) as exc:
                raise InputError(f"{self.path}: key '{k}' cannot be read ({str(exc).splitlines()[0]}); "
                                 "the file is probably truncated") from None
        self.n = int(n)
        self.size = int(shape[1])

    def has(self, key: str) -> bool:
        return key in self.f

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of a dataset. Raises InputError on a read error (truncated data)."""
        try:
            return np.asarray(self.f[key][start:stop])
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{self.path}: key '{key}' rows {start}:{stop} cannot be read "
                             f"({str(exc).splitlines()[0]}); the file is probably truncated") from None

    def read_index(self, key: str) -> np.ndarray:
        """(N,) int64 index key ((N,) or (N, 1) in the file); arange(N) when the key is absent."""
        if key not in self.f:
            return np.arange(self.n, dtype=np.int64) if key == "frame_index" else np.zeros(self.n, dtype=np.int64)
        return self.read(key).reshape(self.n, -1)[:, 0].astype(np.int64)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_h5_subject(path: str, fmt: str) -> H5Subject:
    return H5Subject(path, XGAZE_REQUIRED if fmt == "xgaze_h5" else GAZENERF_REQUIRED, fmt)


@dataclasses.dataclass
class PhotoLabel:
    """One labels.csv row: gaze (pitch, yaw) and optional head pose, radians, in the photo's camera frame."""

    gaze: tuple[float, float]
    head_pose: tuple[float, float] | None = None


def read_labels_csv(path: str) -> dict[str, PhotoLabel]:
    """labels.csv -> {file name: PhotoLabel}. Columns: file, gaze_pitch, gaze_yaw[, head_pitch, head_yaw].

    A header row is optional (detected when the second field is not a number). Angles are radians in
    the ETH-XGaze convention (pitch = asin(-y), yaw = atan2(-x, -z)) in the photo's own camera frame.
    Raises InputError naming the file and line of a malformed row.
    """
    out = {}
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            try:
                vals = [float(v) for v in row[1:] if v != ""]
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise InputError(f"{path}:{lineno}: expected 'file, gaze_pitch, gaze_yaw[, head_pitch, head_yaw]', "
                                 f"got {','.join(row)}") from None
            if len(vals) not in (2, 4):
                raise InputError(f"{path}:{lineno}: expected 2 or 4 angles (radians) after the file name, "
                                 f"got {len(vals)}")
            if not np.all(np.isfinite(vals)):
                raise InputError(f"{path}:{lineno}: angles must be finite numbers (radians), got {','.join(row[1:])}")
            out[row[0]] = PhotoLabel((vals[0], vals[1]), (vals[2], vals[3]) if len(vals) == 4 else None)
    return out


def list_photos(folder: str) -> list[str]:
    """Image file names of a subject folder, sorted."""
    return sorted(n for n in os.listdir(folder) if _is_image(n) and os.path.isfile(os.path.join(folder, n)))
