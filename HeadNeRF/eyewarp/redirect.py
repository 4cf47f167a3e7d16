"""Redirect the eyes of one photo: gaze targets -> redirected images, with one-line notes for what it cannot do.

Requested gazes are (pitch, yaw) radians in the **normalised camera frame** of the photo's face
(the frame of ``--gaze_targets`` and of the NeRF sweep; ``(0, 0)`` looks at the camera), turned
into the photo's real camera frame with ``R_image @ R_norm.T`` (the normalised camera is the real
one rotated to look at the face centre). Both eyes get the same (parallel) direction, as in the
synthetic data.

What it refuses (``notes``, one line each; nothing crashes and no partial image looks complete):

* an eye that is closed, too small, or hidden by the head (profile): that eye is left as it is
  and, when the other eye can be warped, the images say "one eye only" in the notes;
* both eyes unusable: no redirected images at all;
* a target beyond the supported range: a rotation of more than ``max_rotation_deg`` from the
  current gaze, or a gaze more than ``max_eye_in_head_deg`` from the head's forward direction:
  that target gets no image.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from HeadNeRF.geometry.gaze import pitch_yaw_to_vector, vector_to_pitch_yaw

from .eyeball import ANATOMIES, HUMAN, EyeAnatomy, Eyeball, estimate_eyeballs
from .warp import periocular_mask, warp_eye

__all__ = ["PhotoRedirection", "RedirectConfig", "prepare", "redirect"]


@dataclasses.dataclass
class RedirectConfig:
    """Limits and priors of the photo redirection.

    anatomy: "human" (photos) or "head_model" (the synthetic heads). max_rotation_deg: largest
    rotation from the current gaze. max_eye_in_head_deg: largest angle between the target and the
    head's forward direction. min_eye_width_px, min_open_ratio, max_view_angle_deg: see
    ``estimate_eyeballs``.
    """

    anatomy: str = "human"
    max_rotation_deg: float = 30.0
    max_eye_in_head_deg: float = 40.0
    min_eye_width_px: float = 6.0
    min_open_ratio: float = 0.12
    max_view_angle_deg: float = 60.0

    def __post_init__(self):
        if self.anatomy not in ANATOMIES:
            raise ValueError(f"anatomy: one of {sorted(ANATOMIES)}, got {self.anatomy!r}")
        for name in ("max_rotation_deg", "max_eye_in_head_deg", "min_eye_width_px", "max_view_angle_deg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")

    @property
    def eye_anatomy(self) -> EyeAnatomy:
        return ANATOMIES.get(self.anatomy, HUMAN)


@dataclasses.dataclass
class PhotoRedirection:
    """The eye model of one photo: eyes [right, left], the normalised->real rotation, notes so far."""

    eyes: list[Eyeball]
    R_norm_to_real: np.ndarray
    R_head: np.ndarray
    K: np.ndarray
    config: RedirectConfig
    notes: list[str]

    @property
    def usable(self) -> list[Eyeball]:
        return [e for e in self.eyes if e.status is None]

    def current_gaze(self) -> dict:
        """Current gaze of each usable eye, (pitch, yaw) radians in the normalised camera frame."""
        out = {}
        for e in self.usable:
            g = self.R_norm_to_real.T @ e.gaze
            out[e.side] = [float(v) for v in vector_to_pitch_yaw(torch.tensor(g, dtype=torch.float64)).tolist()]
        return out


def prepare(image: np.ndarray, lm478: np.ndarray, K: np.ndarray, R_image: np.ndarray, t_image: np.ndarray,
            R_norm: np.ndarray, config: RedirectConfig | None = None) -> PhotoRedirection:
    """Estimate the eyeballs of one face.

    Args:
        image: (H, W, 3) uint8 photo. lm478: (478, 2|3) its mediapipe points (photo px). K: (3, 3).
        R_image (3, 3), t_image (3,): head -> real camera. R_norm (3, 3): head -> normalised camera
            (``NormalisedFace.cam_R_w2c``).
    """
    cfg = config or RedirectConfig()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    eyes = estimate_eyeballs(lm478, R_image, t_image, K, image, cfg.eye_anatomy, cfg.min_eye_width_px,
                             cfg.min_open_ratio, cfg.max_view_angle_deg)
    R_nr = np.asarray(R_image, np.float64) @ np.asarray(R_norm, np.float64).T
    notes = [e.status for e in eyes if e.status is not None]
    good = [e for e in eyes if e.status is None]
    if len(good) == 1:
        notes.append(f"only the {good[0].side} eye is redirected")
    elif not good:
        notes.append("no eye can be redirected: no redirected images written")
    return PhotoRedirection(eyes, R_nr, np.asarray(R_image, np.float64), np.asarray(K, np.float64), cfg, notes)


def _check_target(red: PhotoRedirection, g_real: np.ndarray, label: str) -> str | None:
    cfg = red.config
    forward = -red.R_head[:, 2]
    in_head = math.degrees(math.acos(float(np.clip(g_real @ forward, -1, 1))))
    if in_head > cfg.max_eye_in_head_deg:
        return (f"target {label}: {in_head:.0f} deg from the head's forward direction, beyond the "
                f"{cfg.max_eye_in_head_deg:.0f} deg the warp supports: not written")
    for e in red.usable:
        rot = math.degrees(math.acos(float(np.clip(g_real @ e.gaze, -1, 1))))
        if rot > cfg.max_rotation_deg:
            return (f"target {label}: the {e.side} eye would turn {rot:.0f} deg, beyond the "
                    f"{cfg.max_rotation_deg:.0f} deg the warp supports: not written")
    return None


def redirect(image: np.ndarray, red: PhotoRedirection, gaze_norm: np.ndarray, label: str = ""
             ) -> tuple[np.ndarray | None, str | None]:
    """One redirected photo.

    Args: image (H, W, 3) uint8; red: from :func:`prepare`; gaze_norm (2,) pitch, yaw (normalised frame).
    Returns (image (H, W, 3) uint8 or None, note or None): None and a one-line note when refused.
    """
    if not red.usable:
        return None, f"target {label}: no eye can be redirected"
    g = pitch_yaw_to_vector(torch.as_tensor(np.asarray(gaze_norm, np.float64).reshape(2))).numpy()
    g_real = red.R_norm_to_real @ g
    note = _check_target(red, g_real, label or f"({gaze_norm[0]:+.2f}, {gaze_norm[1]:+.2f})")
    if note:
        return None, note
    out = np.array(image[..., :3], copy=True)
    for e in red.usable:
        warp_eye(image, out, e, g_real, red.K)
    return out, None


def changed_region(image_shape: tuple, red: PhotoRedirection) -> np.ndarray:
    """(H, W) bool: the periocular region the redirection may change."""
    return periocular_mask(image_shape, red.usable)
