"""Cameras of the input formats, expressed in our head frame (``docs/conventions.md``).

ETH-XGaze normalised patches (``xgaze_h5``)
-------------------------------------------
The official patch is kept as it is (no re-normalisation: the 224/448 patches are tight face crops,
and re-framing them to the synthetic framing would leave most of the head outside the data). Its
camera is ETH-XGaze's normalised camera, written in head units:

* ``K = intrinsics_matrix(960 * S / 224, S)`` (focal 960 px at 224 px, principal point at the centre);
* distance ``600 mm / MM_PER_HEAD_UNIT`` from the **XGaze face centre** (the mean of the 4 eye
  corners and the 2 nose corners, landmarks 36, 39, 42, 45, 31, 35 of the synthetic head model's
  mean-code 3-D landmarks: the point ETH-XGaze centres its patches on);
* rotation from the file's ``face_head_pose`` label: a normalised camera has no roll relative to the
  head (its x axis is the head's x axis projected), so (pitch, yaw) of the head fixes it completely
  (:func:`camera_from_head_pose`), and ``head_pose_from_rotation(R) == face_head_pose`` exactly.

GazeNeRF / HeadNeRF NL3DMM cameras (``gazenerf_h5``)
-----------------------------------------------------
The NL3DMM world (HeadNeRF's fitting frame) has the head at the origin with +y **up** and the face
looking towards **+z** (HeadNeRF's base camera is ``c2w R = diag(1, -1, -1)`` at ``(0, 0, d)``); its
cameras are OpenCV cameras (x right, y down, z forward). Our head frame has +y down and the face
looking towards -z: ``p_ours = s * D @ p_nl + o`` with ``D = diag(1, -1, -1)``. So

    R_ours = R_nl @ D,    t_ours = s * t_nl - R_ours @ o.

The scale ``s`` (head units per NL3DMM unit; both heads are about 2 units wide, so ~1) and the
origin offset ``o`` are fitted per subject (:func:`align_nl3dmm_cameras`): the synthetic head
model's mean 3-D landmarks, seen through the converted cameras, must land on the file's 2-D
landmarks. The rotation is carried over unchanged. ``inmat`` is taken to be in pixels of an image
of side ``2 * cx`` with HeadNeRF's integer pixel coordinates (no +0.5): it is shifted by +0.5 and
scaled to the written patch (:func:`nl3dmm_intrinsics`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from HeadNeRF.geometry.cameras import MM_PER_HEAD_UNIT, intrinsics_matrix, look_at_w2c, project_points
from HeadNeRF.data.synthetic import head_model as hm

__all__ = [
    "MM_PER_HEAD_UNIT",
    "NL3DMM_TO_HEAD",
    "XGAZE_DISTANCE_MM_224",
    "XGAZE_FOCAL_224",
    "align_nl3dmm_cameras",
    "camera_from_head_pose",
    "mean_landmarks_3d",
    "nl3dmm_intrinsics",
    "nl3dmm_to_head",
    "xgaze_distance",
    "xgaze_face_center",
    "xgaze_intrinsics",
]

XGAZE_FOCAL_224 = 960.0  # px, for a 224 px patch (448 px: the same camera, 2x the pixels)
XGAZE_DISTANCE_MM_224 = 600.0  # mm from the face centre (448 px files: 300 mm at focal 960, the same view)
NL3DMM_TO_HEAD = np.diag([1.0, -1.0, -1.0])  # D: NL3DMM world axes -> our head-frame axes
XGAZE_CENTER_LANDMARKS = (36, 39, 42, 45, 31, 35)  # eye corners and nose corners (ETH-XGaze face centre)


def xgaze_intrinsics(image_size: int, batch: int = 1) -> np.ndarray:
    """(batch, 3, 3) K of the ETH-XGaze normalised camera at patch size S (focal 960 * S / 224)."""
    return intrinsics_matrix(XGAZE_FOCAL_224 * image_size / 224.0, image_size, batch=batch).numpy().astype(np.float64)


def xgaze_distance() -> float:
    """Distance of the ETH-XGaze normalised camera from the face centre, in head units (600 mm)."""
    return XGAZE_DISTANCE_MM_224 / MM_PER_HEAD_UNIT


@functools.lru_cache(maxsize=1)
def mean_landmarks_3d() -> np.ndarray:
    """(68, 3) the synthetic head model's 3-D landmarks for the mean (zero) code, head frame."""

    return hm.landmarks_3d(hm.decode(np.zeros(hm.CODE_DIM, dtype=np.float32))).astype(np.float64)


def xgaze_face_center() -> np.ndarray:
    """(3,) head-frame point ETH-XGaze centres its patches on (mean of eye and nose corners)."""
    return mean_landmarks_3d()[list(XGAZE_CENTER_LANDMARKS)].mean(0)


def camera_from_head_pose(head_pose: np.ndarray, target: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Roll-free normalised camera whose head pose is ``head_pose``.

    Args:
        head_pose: (N, 2) (pitch, yaw) of the head->camera rotation (ETH-XGaze formula).
        target: (3,) head-frame point on the optical axis. distance: camera to target (head units).
    Returns:
        R_w2c (N, 3, 3), t_w2c (N, 3) float64 with ``head_pose_from_rotation(R_w2c) == head_pose``.

    The camera's z axis in head coordinates is ``(-sin y, -cos y sin p, cos y cos p)``: with the
    camera's x axis in the head's x-z plane (no roll), R[1, 2] = sin p and atan2(R[0, 2], R[2, 2]) = y.
    """
    hp = np.asarray(head_pose, dtype=np.float64).reshape(-1, 2)
    p, y = hp[:, 0], hp[:, 1]
    forward = np.stack((-np.sin(y), -np.cos(y) * np.sin(p), np.cos(y) * np.cos(p)), -1)
    tgt = np.broadcast_to(np.asarray(target, dtype=np.float64), forward.shape)
    center = tgt - distance * forward
    R, t = look_at_w2c(torch.from_numpy(center), torch.from_numpy(tgt.copy()),
                       torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(len(hp), 3))
    return R.numpy(), t.numpy()


def nl3dmm_to_head(R_nl: np.ndarray, t_nl: np.ndarray, scale: float = 1.0, offset=(0.0, 0.0, 0.0)):
    """NL3DMM world->camera (N,3,3), (N,3) -> our head frame->camera (see module docstring)."""
    R = np.asarray(R_nl, dtype=np.float64) @ NL3DMM_TO_HEAD
    t = scale * np.asarray(t_nl, dtype=np.float64).reshape(-1, 3) - R @ np.asarray(offset, dtype=np.float64)
    return R, t


def nl3dmm_intrinsics(inmat: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 3, 3) HeadNeRF intrinsics (integer pixel coordinates) -> ours, in pixels of the ``image_size`` patch.

    The fitting image's side is taken to be ``2 * cx`` (HeadNeRF puts the principal point at the
    centre); within 10% of ``image_size`` it is the patch itself (no rescale), otherwise K is scaled
    by ``image_size / (2 cx)`` (e.g. a fit at half resolution)."""
    K = np.array(inmat, dtype=np.float64).reshape(-1, 3, 3)
    ratio = image_size / np.maximum(2.0 * K[:, 0, 2:3], 1e-6)  # (N, 1) patch side / fitting image side
    ratio = np.where(np.abs(ratio - 1.0) < 0.1, 1.0, ratio)  # cx = S/2 - 0.5 or S//2: the patch itself
    K[:, :2, 2] += 0.5
    K[:, :2, :] *= ratio[:, :, None]
    return K


def align_nl3dmm_cameras(R: np.ndarray, t_nl: np.ndarray, K: np.ndarray, lm2d: np.ndarray,
                         max_rows: int = 64) -> tuple[float, np.ndarray, float]:
    """Fit (s, o) so that our mean 3-D landmarks through (R, s t_nl - R o, K) land on ``lm2d``.

    Args:
        R (N, 3, 3) converted rotations, t_nl (N, 3) NL3DMM translations, K (N, 3, 3), lm2d (N, 68, 2)
        in pixels of the same image. Rows with non-finite values are ignored.
    Returns:
        (scale, offset (3,), median reprojection error in px). Falls back to (1, 0, nan) when no row fits.
    """
    from scipy.optimize import least_squares

    ok = np.isfinite(R).all((1, 2)) & np.isfinite(t_nl).all(1) & np.isfinite(K).all((1, 2)) & np.isfinite(lm2d).all((1, 2))
    idx = np.flatnonzero(ok)[:max_rows]
    if len(idx) == 0:
        return 1.0, np.zeros(3), float("nan")
    Rr, tr, Kr, lr = (torch.from_numpy(np.asarray(a, dtype=np.float64)[idx]) for a in (R, t_nl, K, lm2d))
    P = torch.from_numpy(mean_landmarks_3d()).expand(len(idx), 68, 3)

    def residual(x):
        t = x[0] * tr - (Rr @ torch.from_numpy(x[1:4]).view(1, 3, 1)).squeeze(-1)
        return (project_points(P, Rr, t, Kr) - lr).reshape(-1).numpy()

    try:
        sol = least_squares(residual, np.array([1.0, 0.0, 0.0, 0.0]), x_scale=np.array([0.3, 0.3, 0.3, 0.3]),
                            loss="soft_l1", max_nfev=200)
    except (ValueError, np.linalg.LinAlgError):
        return 1.0, np.zeros(3), float("nan")
    err = np.linalg.norm(residual(sol.x).reshape(-1, 2), axis=-1)
    if not np.all(np.isfinite(sol.x)) or not 0.2 < sol.x[0] < 5.0:
        return 1.0, np.zeros(3), float(np.median(err))
    return float(sol.x[0]), sol.x[1:4].copy(), float(np.median(err))
