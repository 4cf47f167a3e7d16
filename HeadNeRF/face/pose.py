"""Head pose and camera from 2-D landmarks: PnP against the synthetic head model's own landmarks.

The 3-D model points are ``head_model.landmarks_3d(decode(code))`` (mean code = zeros unless a
fitted code is given), so the recovered camera lives in the same head frame, in the same head
units, as the synthetic data (``docs/conventions.md``; ``MM_PER_HEAD_UNIT`` gives millimetres).
The pose is OpenCV's iterative (Levenberg-Marquardt) PnP started from EPnP; the result is
``R_w2c, t_w2c`` = head frame -> camera, OpenCV axes.

With ``lm478`` (the mediapipe mesh) the PnP uses dense model points instead: where each mesh point
lies on the synthetic mean head (``data/mesh_calibration.npz``, see ``calibrate.py``), keeping the
``PNP_FRACTION`` most reliable of the 468 face points. On synthetic renders this lowers the
rotation error of the 68-point PnP from ~7 to ~5 deg (docs/face_analysis.md), because many more
points average out mediapipe's per-point biases.

``method="hybrid"`` (the default with ``lm478``) averages that rotation with the rotation that
aligns mediapipe's own 3-D mesh (x, y, z) to the same model points (orthogonal Procrustes, turned
onto the viewing ray of the face), then re-solves the translation with the rotation fixed. The
2-D PnP alone tilts real faces by +10..20 deg of pitch (a real face's mesh does not sit on the
cartoon head the way it sits on the synthetic renders); mediapipe's 3-D shape is real-face shaped
and halves that bias, for ~0.5 deg more error on synthetic renders.
"""

from __future__ import annotations

import functools

import numpy as np

from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF.data.synthetic.head_model import CODE_DIM

__all__ = [
    "DEFAULT_HFOV_DEG",
    "PNP_FRACTION",
    "PNP_POINTS",
    "default_intrinsics",
    "head_pose_pnp",
    "mesh_model_points",
    "model_landmarks_3d",
]

# Photos with unknown focal length: a horizontal field of view of 50 deg on the longer side
# (focal = 1.07 x the longer side), typical of phone main cameras and portrait lenses.
DEFAULT_HFOV_DEG = 50.0

# Landmarks used for PnP: all 68 (the jaw line helps the yaw of turned faces; see docs/face_analysis.md).
PNP_POINTS = np.arange(68)
PNP_FRACTION = 0.6  # dense PnP: share of the 468 face mesh points used (most reliable first)


@functools.lru_cache(maxsize=1)
def _mesh_calibration():
    import os

    d = np.load(os.path.join(os.path.dirname(__file__), "data", "mesh_calibration.npz"))
    C, rel = d["canonical"].astype(np.float64), d["reliability"]
    sel = np.argsort(rel[:468])[: int(round(468 * PNP_FRACTION))]
    return C, np.sort(sel)


def mesh_model_points() -> tuple[np.ndarray, np.ndarray]:
    """(canonical (478, 3) head-frame points of the mediapipe mesh on the mean head, indices used by PnP)."""
    C, sel = _mesh_calibration()
    return C.copy(), sel.copy()


@functools.lru_cache(maxsize=64)
def _landmarks_3d_cached(code_bytes: bytes) -> np.ndarray:
    code = np.frombuffer(code_bytes, dtype=np.float32)
    return hm.landmarks_3d(head_params(code)).astype(np.float64)


def head_params(code):
    """decode(code) with the eyeball centres filled in (as build_mesh does; landmarks_3d needs them)."""
    import dataclasses

    P = hm.decode(np.asarray(code, np.float64))
    eyes = hm.eyeball_centers(P)
    return dataclasses.replace(P, eye_centers=tuple(tuple(float(v) for v in c) for c in eyes))


def model_landmarks_3d(code=None) -> np.ndarray:
    """(68, 3) float64 head-frame landmarks of the synthetic head model for ``code`` (None: mean code)."""

    c = np.zeros(CODE_DIM, np.float32) if code is None else np.asarray(code, dtype=np.float32).reshape(CODE_DIM)
    return _landmarks_3d_cached(c.tobytes()).copy()


def default_intrinsics(height: int, width: int) -> np.ndarray:
    """(3, 3) float64 K for a photo of unknown focal length: focal from DEFAULT_HFOV_DEG over the
    longer side, square pixels, principal point at the image centre (W/2, H/2)."""
    f = 0.5 * max(height, width) / np.tan(np.deg2rad(DEFAULT_HFOV_DEG) / 2)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1.0]], dtype=np.float64)


def _procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation R minimising ||(dst - mean) - s R (src - mean)|| (orthogonal Procrustes, no reflection)."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    U, _, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _ray_rotation(K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Smallest rotation taking the optical axis (0, 0, 1) onto the viewing ray of pixel uv."""
    d = np.linalg.inv(K) @ np.array([uv[0], uv[1], 1.0])
    d /= np.linalg.norm(d)
    v = np.cross([0.0, 0.0, 1.0], d)
    s, c = np.linalg.norm(v), d[2]
    if s < 1e-9:
        return np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * ((1 - c) / s ** 2)


def _translation_given_rotation(R: np.ndarray, obj: np.ndarray, img: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Least-squares t for u = K (R X + t) with R fixed (linear in t)."""
    q = (img - K[:2, 2]) / np.diag(K)[:2]  # normalised image coordinates
    RX = obj @ R.T
    A = np.zeros((2 * len(obj), 3))
    b = np.zeros(2 * len(obj))
    A[0::2, 0], A[0::2, 2], b[0::2] = 1.0, -q[:, 0], q[:, 0] * RX[:, 2] - RX[:, 0]
    A[1::2, 1], A[1::2, 2], b[1::2] = 1.0, -q[:, 1], q[:, 1] * RX[:, 2] - RX[:, 1]
    return np.linalg.lstsq(A, b, rcond=None)[0]


def head_pose_pnp(lm68: np.ndarray, K: np.ndarray, code=None, points=None, lm478=None,
                  method: str = "hybrid") -> tuple[np.ndarray, np.ndarray]:
    """Head pose by PnP.

    Args:
        lm68: (68, 2) iBUG landmarks (x, y) px. K: (3, 3) intrinsics of that image (px).
        code: latent code whose landmarks_3d are the model points (None: mean code).
        points: indices of the landmarks to use (default PNP_POINTS).
        lm478: optional (478, 2|3) mediapipe mesh of the same face: dense PnP against the mesh's
            points on the mean synthetic head (more accurate; ``code`` is then ignored).
        method: with lm478 (3 columns), "hybrid" (default) or "dense" (see the module docstring).
    Returns:
        R_w2c (3, 3) float64, t_w2c (3,) float64: head frame -> camera (OpenCV axes), head units.
    """
    import cv2

    if lm478 is not None:
        C, sel = _mesh_calibration()
        obj = C[sel]
        img = np.asarray(lm478, dtype=np.float64)[sel, :2]
    else:
        idx = PNP_POINTS if points is None else np.asarray(points)
        obj = model_landmarks_3d(code)[idx]
        img = np.asarray(lm68, dtype=np.float64).reshape(68, 2)[idx]
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok or tvec[2, 0] <= 0:  # fall back to a frontal guess at the distance implied by the size
        span = np.ptp(img[:, 0])
        d = K[0, 0] * np.ptp(obj[:, 0]) / max(span, 1e-6)
        rvec, tvec = np.zeros((3, 1)), np.array([[0.0], [0.0], [d]])
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec=rvec, tvec=tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    R, _ = cv2.Rodrigues(rvec)
    if lm478 is not None and method == "hybrid" and np.asarray(lm478).shape[1] == 3:
        mesh3d = np.asarray(lm478, dtype=np.float64)[sel]
        R3 = _ray_rotation(K, img.mean(0)) @ _procrustes(obj, mesh3d)
        U, _, Vt = np.linalg.svd(R + R3)  # chordal mean of the two rotations
        R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        return R, _translation_given_rotation(R, obj, img, K)
    elif method not in ("hybrid", "dense"):
        raise ValueError(f"unknown head-pose method {method!r}")
    return R, tvec.reshape(3)
