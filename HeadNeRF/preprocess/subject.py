"""Turning one input subject into the rows of one processed file (``docs/data_format.md``).

One function per input format; each returns a :class:`SubjectRows` (the arrays for
``HeadNeRF.data.subject_file.write_subject_file``) and never raises for a bad **row**: a row that
fails (no face, landmarks outside the image, a diverging fit, an unreadable photo) gets
``valid_mask`` False and its ``invalid_reason``. Only a bad **file** (wrong keys, no rows,
truncated) raises :class:`~HeadNeRF.preprocess.readers.InputError`, which skips the subject.

Formats
-------
* ``xgaze_h5``: the patch is kept with its ETH-XGaze camera (``cameras`` module); faces are analysed
  on the patch (landmarks, iris, masks) and the latent code is fitted once per subject (identity
  shared by all its rows, see :class:`PendingFaces`).
  ``face_gaze`` (camera frame of the normalised camera) is copied; without it (test files) the row
  gets ``face_gaze`` 0 and ``gaze_valid`` False.
* ``gazenerf_h5``: nothing is re-analysed: masks, landmarks, NL3DMM codes (306 = 100|79|100|27) and
  cameras are carried over (``cameras.nl3dmm_to_head``); the gaze label is ``face_gaze`` when the
  file has it (camera frame), else ``pitchyaw_head`` (ETH-XGaze head frame, whose axes are ours)
  rotated into the camera. Iris centres are not in the format: the centre of each eye's six
  landmarks stands in for them.
* ``images``: each photo is analysed and normalised into the synthetic training framing
  (``HeadNeRF.face.analyse_and_normalise``); labels.csv gaze (photo camera frame) is rotated into
  the normalised camera with the rotation part of the normalisation warp.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable

import cv2
import numpy as np
import torch

from HeadNeRF.data import layout
from HeadNeRF.geometry.gaze import angular_error_deg, head_pose_from_rotation, rotate_pitch_yaw
from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF import face
from HeadNeRF.face.latent_fit import FitOptions

from . import cameras as cams
from .readers import InputError, PhotoLabel, list_photos, open_h5_subject, read_labels_csv

__all__ = ["GAZENERF_CODE_SLICES", "ProcessOptions", "SubjectRows", "process_gazenerf", "process_photos", "process_xgaze"]

GAZENERF_CODE_SLICES = {"identity": (0, 100), "expression": (100, 179), "albedo": (179, 279), "illumination": (279, 306)}
GAZEGAUSSIAN_CODE_DIM = 144
GAZEGAUSSIAN_CODE_SLICES = {"identity": (0, 80), "expression": (80, 144), "albedo": (144, 145), "illumination": (145, 146)}
PHOTO_DEFAULT_SIZE = 256
MAX_PNP_DISAGREEMENT_DEG = 30.0  # xgaze: landmarks whose PnP pose is this far from the label = a bad detection


@dataclasses.dataclass
class ProcessOptions:
    image_size: int | None = None  # output S (None: keep the input size; photos: 256)
    chunk_rows: int = 256  # rows read from an input file at once (the latent fit covers the whole subject)
    photo_focal_factor: float | None = None  # photos: focal = factor * max(H, W); None: face.default_intrinsics
    fit_codes: bool = True  # False: latent_code = the mean (zero) code (fast; for tests of the plumbing)
    fit_appearance: bool = True  # False: shape (identity, expression) from the landmarks only; albedo and
    #                              illumination stay at the mean code (saves the per-subject colour fit)


@dataclasses.dataclass
class SubjectRows:
    data: dict  # key -> (N, ...) arrays for layout.KEYS + gaze_valid + invalid_reason
    code_slices: dict
    source: str
    attrs: dict  # extra file attributes
    notes: list  # one-line notes for the log (greyscale converted, several faces, resized, ...)
    stats: dict  # numbers for the summary (e.g. median label/landmark disagreements)

    @property
    def invalid(self) -> Counter:
        return Counter(r for r in self.data["invalid_reason"] if r)


def memory_images(n: int, size: int) -> dict:
    """In-memory image arrays of n rows (the default image store; white patches, empty masks)."""
    out = {"face_patch": np.full((n, size, size, 3), 255, np.uint8)}
    for k in ("mask", "eye_mask", "left_eye_mask", "right_eye_mask"):
        out[k] = np.zeros((n, size, size), np.uint8)
    return out


def _alloc(n: int, size: int, code_dim: int, image_store: Callable | None = None) -> dict:
    """Rows with safe defaults (an invalid row must still pass layout.validate_file).

    ``image_store(n, size)`` returns the row-assignable image arrays (numpy, or the datasets of a
    ``SubjectFileWriter`` so that images stream to disk); default :func:`memory_images`."""
    R = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    t = np.tile([0.0, 0.0, 5.0], (n, 1))
    K = cams.xgaze_intrinsics(size, n) if n else np.zeros((0, 3, 3))
    return {
        **(image_store or memory_images)(n, size),
        "lm2d": np.zeros((n, 68, 2), np.float32), "iris2d": np.zeros((n, 2, 2), np.float32),
        "face_gaze": np.zeros((n, 2), np.float32), "face_head_pose": np.zeros((n, 2), np.float32),
        "cam_R_w2c": R.astype(np.float32), "cam_t_w2c": t.astype(np.float32), "cam_K": K.astype(np.float32),
        "latent_code": np.zeros((n, code_dim), np.float32),
        "subject_index": np.zeros(n, np.int64), "cam_index": np.zeros(n, np.int64), "frame_index": np.arange(n, dtype=np.int64),
        "valid_mask": np.zeros(n, bool), "gaze_valid": np.zeros(n, bool), "invalid_reason": ["not processed"] * n,
    }


def _resize_image(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _resize_mask(m: np.ndarray, size: int) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3:  # (S, S, 1) or (S, S, 3) masks: any channel
        m = m.max(-1)
    m = (m.astype(np.float32) * (255.0 if m.max(initial=0) <= 1 else 1.0))
    if m.shape[0] != size:
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA if m.shape[0] > size else cv2.INTER_LINEAR)
    return np.where(m >= 128, 255, 0).astype(np.uint8)


def _center_square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop resized to size (the face_patch of a photo row that failed)."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return _resize_image(np.ascontiguousarray(img[y0:y0 + s, x0:x0 + s]), size)


def _inside(points: np.ndarray, size: int, margin: float = 0.0) -> bool:
    """The inner 51 landmarks (brows, eyes, nose, mouth) lie in the image (+ margin); the jaw may leave
    it (ETH-XGaze's tight patches cut the chin). All 68 must be finite."""
    points = np.asarray(points)
    inner = points[17:] if len(points) == 68 else points
    return bool(np.all(np.isfinite(points)) and np.all(inner >= -margin) and np.all(inner <= size + margin))


def _fit_codes(faces: list, opts: ProcessOptions) -> np.ndarray:
    if not faces:
        return np.zeros((0, hm.CODE_DIM), np.float32)
    if not opts.fit_codes:
        return np.zeros((len(faces), hm.CODE_DIM), np.float32)

    return np.asarray(face.fit_latent_codes(faces, options=FitOptions(fit_appearance=opts.fit_appearance)),
                      dtype=np.float32)


def _store_face(d: dict, i: int, nf, patch: bool = True) -> None:
    if patch:
        d["face_patch"][i] = nf.face_patch
    for k in ("mask", "eye_mask", "left_eye_mask", "right_eye_mask"):
        d[k][i] = getattr(nf, k)
    d["lm2d"][i], d["iris2d"][i] = nf.lm2d, nf.iris2d
    d["cam_R_w2c"][i], d["cam_t_w2c"][i], d["cam_K"][i] = nf.cam_R_w2c, nf.cam_t_w2c, nf.cam_K
    d["face_head_pose"][i] = head_pose_from_rotation(torch.as_tensor(np.asarray(nf.cam_R_w2c, np.float64))).numpy()


class PendingFaces(list):
    """(row, NormalisedFace) pairs of one subject waiting for the latent fit, kept light.

    The fit needs the images of only a few rows (the colour fit uses the most frontal
    ``appearance_rows``, by ``|face_head_pose|``); every ``strip_every`` additions the patch and
    masks of the rows that can no longer be among the ``keep`` most frontal are dropped, so a
    10K-row subject is fitted in one go (identity shared by all its rows) without holding its images.
    """

    def __init__(self, keep: int = 8, strip_every: int = 256):
        super().__init__()
        self.keep, self.strip_every = keep, strip_every

    def append(self, item) -> None:
        super().append(item)
        if len(self) % self.strip_every == 0:
            self.strip()

    def strip(self) -> None:
        if len(self) <= self.keep:
            return
        score = np.array([np.abs(np.asarray(nf.face_head_pose, np.float64)).sum() for _, nf in self])
        keep = set(np.argsort(score, kind="stable")[:self.keep].tolist())
        for j, (r, nf) in enumerate(self):
            if j not in keep and nf.face_patch is not None:
                self[j] = (r, dataclasses.replace(nf, face_patch=None, mask=None, eye_mask=None, left_eye_mask=None,
                                                  right_eye_mask=None))


def _finish_codes(d: dict, pending: list, opts: ProcessOptions) -> float:
    """Fit the latent codes of the pending (row, NormalisedFace) pairs; a failing fit invalidates its rows.

    Returns the seconds the fit took."""
    if not pending:
        return 0.0
    t0 = time.perf_counter()
    rows = [r for r, _ in pending]
    try:
        codes = _fit_codes([nf for _, nf in pending], opts)
        bad = ~np.isfinite(codes).all(1)
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        codes, bad = np.zeros((len(rows), d["latent_code"].shape[1]), np.float32), np.ones(len(rows), bool)
        reason = f"latent fit failed ({str(exc).splitlines()[0][:80]})"
    else:
        reason = "latent fit diverged (non-finite code)"
    for j, r in enumerate(rows):
        if bad[j]:
            d["valid_mask"][r], d["invalid_reason"][r] = False, reason
        else:
            d["latent_code"][r] = codes[j]
            d["valid_mask"][r], d["invalid_reason"][r] = True, ""
    pending.clear()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- xgaze
def process_xgaze(path: str, subject_id: int, opts: ProcessOptions, on_image: Callable = lambda: None,
                  image_store: Callable | None = None) -> SubjectRows:
    """An official ETH-XGaze normalised file -> rows (see module docstring)."""
    notes = []
    with open_h5_subject(path, "xgaze_h5") as src:
        n, in_size = src.n, src.size
        S = int(opts.image_size or in_size)
        if S != in_size:
            notes.append(f"{path}: {in_size} px patches resized to {S} px")
        d = _new_rows(src, S, hm.CODE_DIM, subject_id, image_store)
        has_gaze = src.has("face_gaze")
        if not has_gaze:
            notes.append(f"{path}: no face_gaze (a test file): rows are written with gaze_valid False")
        K = cams.xgaze_intrinsics(S)[0]
        target, dist = cams.xgaze_face_center(), cams.xgaze_distance()
        disagreement, pending = [], PendingFaces()
        for start in range(0, n, opts.chunk_rows):
            stop = min(n, start + opts.chunk_rows)
            patches = src.read("face_patch", start, stop)
            head = src.read("face_head_pose", start, stop).astype(np.float64).reshape(-1, 2)
            gaze = src.read("face_gaze", start, stop).astype(np.float64).reshape(-1, 2) if has_gaze else None
            R_all, t_all = cams.camera_from_head_pose(head, target, dist)
            for j in range(stop - start):
                i = start + j
                rgb = _resize_image(np.ascontiguousarray(patches[j][..., ::-1]), S)
                d["face_patch"][i] = rgb
                d["cam_R_w2c"][i], d["cam_t_w2c"][i], d["cam_K"][i] = R_all[j], t_all[j], K
                d["face_head_pose"][i] = head_pose_from_rotation(torch.from_numpy(R_all[j])).numpy()
                if gaze is not None and np.all(np.isfinite(gaze[j])):
                    d["face_gaze"][i], d["gaze_valid"][i] = gaze[j], True
                on_image()
                if not np.all(np.isfinite(head[j])):
                    d["invalid_reason"][i] = "non-finite face_head_pose label"
                    continue
                try:
                    fa = face.analyse_face(rgb, name=f"{os.path.basename(path)} row {i}")
                except face.NoFaceError:
                    d["invalid_reason"][i] = "no face found"
                    continue
                if not _inside(fa.lm68, S, margin=0.05 * S):
                    d["invalid_reason"][i] = "landmarks outside the image"
                    continue
                R_pnp, t_pnp = face.head_pose_pnp(fa.lm68, K, lm478=fa.lm478)
                err = float(angular_error_deg(head_pose_from_rotation(torch.as_tensor(np.asarray(R_pnp, np.float64))),
                                              torch.from_numpy(d["face_head_pose"][i].astype(np.float64))))
                disagreement.append(err)
                if err > MAX_PNP_DISAGREEMENT_DEG:
                    d["invalid_reason"][i] = f"landmarks disagree with the head-pose label ({err:.0f} deg)"
                    continue
                masks = face.face_masks(rgb, fa, K=K, pose=(R_pnp, t_pnp), patch_size=S)
                nf = face.NormalisedFace(
                    face_patch=rgb, mask=masks["mask"], eye_mask=masks["eye_mask"], left_eye_mask=masks["left_eye_mask"],
                    right_eye_mask=masks["right_eye_mask"], lm2d=np.asarray(fa.lm68, np.float32),
                    iris2d=np.asarray(fa.iris2d, np.float32), cam_R_w2c=R_all[j].astype(np.float32),
                    cam_t_w2c=t_all[j].astype(np.float32), cam_K=K.astype(np.float32),
                    face_head_pose=d["face_head_pose"][i].copy(), warp=np.eye(3))
                _store_face(d, i, nf, patch=False)  # the patch is already stored
                pending.append((i, nf))
        fit_s = _finish_codes(d, pending, opts)
    stats = {"pnp_vs_label_deg_median": float(np.median(disagreement)) if disagreement else float("nan"),
             "fit_s": fit_s}
    return SubjectRows(d, dict(hm.CODE_SLICES), "xgaze", {"source_file": os.path.basename(path)}, notes, stats)


# ------------------------------------------------------------------------------------------ gazenerf
def _eye_center(lm: np.ndarray, idx: slice) -> np.ndarray:
    return lm[:, idx].mean(1)


def _new_rows(src, S: int, code_dim: int, subject_id: int, image_store: Callable | None) -> dict:
    """The rows of one subject read from ``src`` (``_alloc``), with its subject, frame and camera indices filled."""
    d = _alloc(src.n, S, code_dim, image_store)
    d["subject_index"][:] = subject_id
    d["frame_index"], d["cam_index"] = src.read_index("frame_index"), src.read_index("cam_index")
    return d


def _gazenerf_codes(src, path: str, notes: list) -> tuple[np.ndarray, dict]:
    """(N, D) float32 latent codes of a GazeNeRF-format file and their slices (NL3DMM, or GazeGaussian padded)."""
    n = src.n
    codes = src.read("latent_codes").astype(np.float32).reshape(n, -1)
    code_slices = dict(GAZENERF_CODE_SLICES)
    if codes.shape[1] == GAZEGAUSSIAN_CODE_DIM:  # GazeGaussian: identity 80 | expression 64, no appearance
        codes = np.concatenate([codes, np.zeros((n, 2), np.float32)], 1)
        code_slices = dict(GAZEGAUSSIAN_CODE_SLICES)
        notes.append(f"{path}: GazeGaussian codes (80|64): two zero columns appended as albedo|illumination")
    elif codes.shape[1] != GAZENERF_CODE_SLICES["illumination"][1]:
        raise InputError(f"{path}: latent_codes must have 306 columns (NL3DMM 100|79|100|27) or 144 (GazeGaussian "
                         f"80|64), found {codes.shape[1]}")
    return codes, code_slices


def _gazenerf_gaze(src, path: str, R: np.ndarray, notes: list) -> tuple[np.ndarray | None, str]:
    """((N, 2) camera-frame gaze or None, the key it came from) of a GazeNeRF-format file with cameras R (N, 3, 3)."""
    n = src.n
    if src.has("face_gaze"):
        return src.read("face_gaze").astype(np.float64).reshape(n, 2), "face_gaze"
    if src.has("pitchyaw_head"):
        gh = torch.from_numpy(src.read("pitchyaw_head").astype(np.float64).reshape(n, 2))
        return rotate_pitch_yaw(gh, torch.from_numpy(R)).numpy(), "pitchyaw_head"
    notes.append(f"{path}: no face_gaze or pitchyaw_head: rows are written with gaze_valid False")
    return None, "none"


def process_gazenerf(path: str, subject_id: int, opts: ProcessOptions, on_image: Callable = lambda: None,
                     image_store: Callable | None = None) -> SubjectRows:
    """A GazeNeRF-format file -> rows, nothing re-analysed (see module docstring and ``cameras``)."""
    with open_h5_subject(path, "gazenerf_h5") as src:
        notes, n, in_size = [], src.n, src.size
        S = int(opts.image_size or in_size)
        scale = S / in_size
        codes, code_slices = _gazenerf_codes(src, path, notes)
        d = _new_rows(src, S, codes.shape[1], subject_id, image_store)
        d["latent_code"][:] = codes
        lm = src.read("facial_landmarks").astype(np.float64).reshape(n, 68, 2) + 0.5  # integer px -> pixel centres
        R_nl = src.read("w2c_Rmat").astype(np.float64).reshape(n, 3, 3)
        t_nl = src.read("w2c_Tvec").astype(np.float64).reshape(n, 3)
        K_in = cams.nl3dmm_intrinsics(src.read("inmat"), in_size)  # pixels of the input patch
        R = R_nl @ cams.NL3DMM_TO_HEAD
        s, o, reproj = cams.align_nl3dmm_cameras(R, t_nl, K_in, lm)
        R, t = cams.nl3dmm_to_head(R_nl, t_nl, s, o)
        K = K_in.copy()
        K[:, :2] *= scale
        gaze, gaze_from = _gazenerf_gaze(src, path, R, notes)
        head_file = src.read("face_head_pose").astype(np.float64).reshape(n, 2) if src.has("face_head_pose") else None
        finite = (np.isfinite(R).all((1, 2)) & np.isfinite(t).all(1) & np.isfinite(K).all((1, 2))
                  & np.isfinite(lm).all((1, 2)) & np.isfinite(codes).all(1))
        for start in range(0, n, opts.chunk_rows):
            stop = min(n, start + opts.chunk_rows)
            patches = src.read("face_patch", start, stop)
            masks = {k: src.read(k, start, stop) for k in ("head_mask", "left_eye_mask", "right_eye_mask")}
            for j in range(stop - start):
                i = start + j
                d["face_patch"][i] = _resize_image(np.ascontiguousarray(patches[j][..., ::-1]), S)
                head_m = _resize_mask(masks["head_mask"][j], S)
                a, b = _resize_mask(masks["left_eye_mask"][j], S), _resize_mask(masks["right_eye_mask"][j], S)
                # Which mask is the subject's left eye is decided by position (image right = subject's left).
                cx = [np.argwhere(m > 0)[:, 1].mean() if m.any() else np.nan for m in (a, b)]
                if np.isfinite(cx).all() and cx[0] < cx[1]:
                    a, b = b, a
                d["mask"][i], d["left_eye_mask"][i], d["right_eye_mask"][i] = head_m, a, b
                d["eye_mask"][i] = np.maximum(a, b)
                on_image()
                if not finite[i]:
                    d["invalid_reason"][i] = "non-finite camera, landmarks or code"
                    continue
                d["lm2d"][i] = lm[i] * scale
                d["iris2d"][i] = np.stack((_eye_center(lm[i:i + 1], slice(36, 42))[0],
                                           _eye_center(lm[i:i + 1], slice(42, 48))[0])) * scale
                d["cam_R_w2c"][i], d["cam_t_w2c"][i], d["cam_K"][i] = R[i], t[i], K[i]
                d["face_head_pose"][i] = head_pose_from_rotation(torch.from_numpy(R[i])).numpy()
                if gaze is not None and np.all(np.isfinite(gaze[i])):
                    d["face_gaze"][i], d["gaze_valid"][i] = gaze[i], True
                if not _inside(d["lm2d"][i], S, margin=0.05 * S):
                    d["invalid_reason"][i] = "landmarks outside the image"
                    continue
                if not head_m.any():
                    d["invalid_reason"][i] = "empty head mask"
                    continue
                d["valid_mask"][i], d["invalid_reason"][i] = True, ""
    stats = {"nl3dmm_scale": s, "nl3dmm_offset": [float(v) for v in o], "landmark_reprojection_px": reproj}
    if head_file is not None:
        ok = d["valid_mask"]
        if ok.any():
            err = angular_error_deg(torch.from_numpy(head_file[ok]), torch.from_numpy(d["face_head_pose"][ok].astype(np.float64)))
            stats["head_pose_vs_file_deg_median"] = float(err.median())
    attrs = {"source_file": os.path.basename(path), "gaze_label_from": gaze_from, "nl3dmm_scale": s,
             "nl3dmm_offset": np.asarray(o, np.float64)}
    return SubjectRows(d, code_slices, "gazenerf", attrs, notes, stats)


# -------------------------------------------------------------------------------------------- photos
def _image_mode_note(path: str) -> str | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            mode = im.mode
    except Exception:  # noqa: BLE001 - the real reader reports unreadable files
        return None
    if mode in ("L", "LA", "1", "I", "I;16", "I;16B", "F", "P") and mode != "P":
        return f"{path}: greyscale image ({mode}) converted to RGB"
    if mode in ("RGBA", "LA", "PA") or (mode == "P"):
        return f"{path}: {mode} image composited on white / converted to RGB"
    return None


def rotation_from_warp(warp: np.ndarray, K_image: np.ndarray, K_patch: np.ndarray) -> np.ndarray | None:
    """The rotation (physical camera -> normalised camera) inside ``warp = K_patch @ Z @ R @ K_image^-1``.

    Z = diag(1, 1, z) is the ETH-XGaze zoom (or the identity); rows of ``K_patch^-1 warp K_image``
    are rows of R up to a common scale (the third one scaled by z), so each row is normalised.
    Returns None when the result is not a rotation (a warp that is not of this form).
    """
    M = np.linalg.inv(K_patch) @ np.asarray(warp, np.float64) @ K_image
    M = M / np.linalg.norm(M, axis=1, keepdims=True)
    if np.linalg.det(M) < 0:
        M = -M
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    if np.abs(R - M).max() > 0.05:
        return None
    return R


def process_photos(folder: str, subject_id: int, opts: ProcessOptions, on_image: Callable = lambda: None,
                   image_store: Callable | None = None) -> SubjectRows:
    """A folder of photos (+ optional labels.csv) -> rows."""

    names = list_photos(folder)
    if not names:
        raise InputError(f"{folder}: no images (expected jpg, png, ...)")
    labels_path = os.path.join(folder, "labels.csv")
    labels: dict[str, PhotoLabel] = read_labels_csv(labels_path) if os.path.isfile(labels_path) else {}
    notes = []
    if labels:
        unknown = sorted(set(labels) - set(names))
        if unknown:
            notes.append(f"{labels_path}: {len(unknown)} labels for files that are not here (e.g. {unknown[0]})")
    S = int(opts.image_size or PHOTO_DEFAULT_SIZE)
    n = len(names)
    d = _alloc(n, S, hm.CODE_DIM, image_store)
    d["subject_index"][:] = subject_id
    head_err, pending, sizes = [], PendingFaces(), set()
    for i, name in enumerate(names):
        path = os.path.join(folder, name)
        on_image()
        note = _image_mode_note(path)
        if note:
            notes.append(note)
        try:
            img = face.load_image_rgb(path)
        except face.ImageReadError as exc:
            notes.append(str(exc))
            d["invalid_reason"][i] = "cannot read image"
            continue
        sizes.add(img.shape[:2])
        H, W = img.shape[:2]
        if opts.photo_focal_factor:
            K_img = np.array([[opts.photo_focal_factor * max(H, W), 0, W / 2], [0, opts.photo_focal_factor * max(H, W), H / 2],
                              [0, 0, 1]], np.float64)
        else:
            K_img = np.asarray(face.default_intrinsics(H, W), np.float64)
        try:
            nf, fa = face.analyse_and_normalise(img, S, K_image=K_img, name=path)
        except face.NoFaceError:
            notes.append(f"{path}: no face found (row written with valid_mask False)")
            d["invalid_reason"][i] = "no face found"
            d["face_patch"][i] = _center_square(img, S)
            continue
        if fa.num_faces > 1:
            notes.append(f"{path}: {fa.num_faces} faces, took the largest")
        _store_face(d, i, nf)
        if not _inside(nf.lm2d, S, margin=0.05 * S):
            d["invalid_reason"][i] = "landmarks outside the image"
            continue
        label = labels.get(name)
        if label is not None:
            if getattr(nf, "R_image", None) is not None:  # head->photo camera known: exact
                R_pn = np.asarray(nf.cam_R_w2c, np.float64) @ np.asarray(nf.R_image, np.float64).T
            else:
                R_pn = rotation_from_warp(nf.warp, K_img, np.asarray(nf.cam_K, np.float64))
            if R_pn is None:
                d["invalid_reason"][i] = "normalisation warp is not a rotation (cannot convert the label)"
                continue
            g = rotate_pitch_yaw(torch.tensor(label.gaze, dtype=torch.float64), torch.from_numpy(R_pn))
            d["face_gaze"][i], d["gaze_valid"][i] = g.numpy(), True
            if label.head_pose is not None:  # check only: our head pose comes from the landmarks
                R_phys = R_pn.T @ np.asarray(nf.cam_R_w2c, np.float64)
                head_err.append(float(angular_error_deg(head_pose_from_rotation(torch.from_numpy(R_phys)),
                                                        torch.tensor(label.head_pose, dtype=torch.float64))))
        pending.append((i, nf))
    fit_s = _finish_codes(d, pending, opts)
    if len(sizes) > 1:
        notes.append(f"{folder}: photos of {len(sizes)} different sizes; each is normalised to {S} px")
    d["frame_index"] = np.arange(n, dtype=np.int64)
    stats = {"head_pose_vs_label_deg_median": float(np.median(head_err)) if head_err else float("nan"), "fit_s": fit_s}
    attrs = {"source_file": os.path.basename(os.path.normpath(folder)), "photo_names": "\n".join(names)}
    return SubjectRows(d, dict(hm.CODE_SLICES), "photo", attrs, notes, stats)


PROCESSORS = {"xgaze_h5": process_xgaze, "gazenerf_h5": process_gazenerf, "images": process_photos}
_ = layout  # the layout these rows follow
