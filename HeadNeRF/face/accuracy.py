"""Accuracy measures against the synthetic generator's exact labels (used by tests and benchmarks)."""

from __future__ import annotations

import numpy as np

__all__ = ["interocular", "iris_error_pct", "landmark_error_pct", "mask_iou", "rotation_error_deg"]


def interocular(lm68: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...,) distance between the two eye centres (mean of points 36-41 and 42-47), px."""
    lm = np.asarray(lm68, np.float64)
    return np.linalg.norm(lm[..., 36:42, :].mean(-2) - lm[..., 42:48, :].mean(-2), axis=-1)


def landmark_error_pct(pred: np.ndarray, true: np.ndarray, reduce: str = "median") -> np.ndarray:
    """Per-image landmark error in % of the true interocular distance.

    pred, true: (..., 68, 2). reduce: "median" or "mean" over the 68 points, or "none" -> (..., 68)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    e = np.linalg.norm(pred - true, axis=-1) / interocular(true)[..., None] * 100.0
    if reduce == "none":
        return e
    return np.median(e, -1) if reduce == "median" else e.mean(-1)


def iris_error_pct(pred: np.ndarray, true: np.ndarray, lm68_true: np.ndarray) -> np.ndarray:
    """(..., 2, 2) iris centres -> (..., 2) error in % of the interocular distance."""
    e = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64), axis=-1)
    return e / interocular(lm68_true)[..., None] * 100.0


def mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of two masks (uint8 0/255 or bool; values >= 128 count as inside). 1.0 when both are empty."""
    p = np.asarray(pred)
    q = np.asarray(true)
    p = p >= 128 if p.dtype != bool else p
    q = q >= 128 if q.dtype != bool else q
    union = np.logical_or(p, q).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, q).sum() / union)


def rotation_error_deg(R_pred: np.ndarray, R_true: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (...,) angle of R_pred R_true^T in degrees."""
    A, B = np.asarray(R_pred, np.float64), np.asarray(R_true, np.float64)
    c = (np.trace(A @ np.swapaxes(B, -1, -2), axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
