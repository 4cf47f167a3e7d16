"""An ETH-XGaze-like capture rig for the synthetic heads.

Design decisions
----------------
* **Rig frame = the head frame of an un-rotated head.** Physical cameras sit on a sphere of
  radius ``PHYSICAL_DISTANCE`` around the face centre of the un-rotated head; camera ``c`` is in the direction
  ``pitch_yaw_to_vector(CAMERA_ANGLES[c])`` (pitch > 0: above the eyes, yaw > 0: towards the
  subject's right, i.e. image left). ``CAMERA_ANGLES_DEG`` is ordered frontal first, then
  spreading out, so ``--num_cameras C`` takes a well-spread subset; the extremes are ±65° yaw
  (combined with the head's ±20° yaw, more would show the back of the head: see below).
* **Per frame**, the head turns by ``R_head = gaze_rotation(head_pose)`` (head → rig; pitch
  ±15°, yaw ±20°, inside the ellipse of these ranges) and the eyes look at ``gaze_head`` (head frame; pitch ±0.45 rad, yaw
  ±0.6 rad). Both are drawn with Latin-hypercube stratification over the frames of a subject so
  that even 3 frames differ visibly.
* **Normalised cameras** follow ETH-XGaze: from the physical camera's direction, looking at
  ``head_model.FACE_CENTER`` (near the head centre, so the whole head is centred), at
  ``NORMALIZED_DISTANCE``, x axis aligned with the head's x axis. Stored extrinsics are
  head frame → normalised camera; ``K = intrinsics_matrix(FOCAL_PER_PIXEL * S, S)`` makes the
  head (hair to chin) fill about 85% of the patch.
* With these ranges the face direction (head -z) is never more than 86.2° from a normalised
  camera (checked on a grid of head poses), so every (frame, camera) pair shows the face and is
  valid; ``valid_mask`` is still computed (angle < 100°) as a safety net.
"""

from __future__ import annotations

import numpy as np
import torch

from HeadNeRF.geometry.cameras import intrinsics_matrix, normalized_camera_w2c
from HeadNeRF.geometry.gaze import gaze_rotation, pitch_yaw_to_vector

from .head_model import FACE_CENTER

__all__ = ["CAMERA_ANGLES_DEG", "MAX_CAMERAS", "PHYSICAL_DISTANCE", "NORMALIZED_DISTANCE", "FOCAL_PER_PIXEL",
           "HEAD_PITCH_RANGE", "HEAD_YAW_RANGE", "GAZE_PITCH_RANGE", "GAZE_YAW_RANGE",
           "head_rotation", "normalized_cameras", "sample_frames", "face_visible"]

# (pitch, yaw) in degrees of each physical camera as seen from the head; frontal first.
CAMERA_ANGLES_DEG = np.array([
    (0, 0), (0, 30), (0, -30), (22, 0), (-22, 0), (12, 55), (12, -55), (-20, 30), (-20, -30),
    (0, 65), (0, -65), (26, 32), (26, -32), (-18, 52), (-18, -52), (18, 64), (18, -64), (36, 0),
], dtype=np.float64)
MAX_CAMERAS = len(CAMERA_ANGLES_DEG)  # 18
PHYSICAL_DISTANCE = 10.0  # head radii (~1 m for a 10 cm head radius)
NORMALIZED_DISTANCE = 5.0
FOCAL_PER_PIXEL = 2.05  # focal length in units of the patch size S
HEAD_PITCH_RANGE = np.deg2rad(15.0)
HEAD_YAW_RANGE = np.deg2rad(20.0)
GAZE_PITCH_RANGE = 0.45
GAZE_YAW_RANGE = 0.6


def head_rotation(head_pose: torch.Tensor) -> torch.Tensor:
    """(..., 2) head (pitch, yaw) in the rig -> (..., 3, 3) head→rig rotation (face turns to that direction)."""
    return gaze_rotation(torch.as_tensor(head_pose, dtype=torch.float32))


def normalized_cameras(cam_index, head_pose, image_size: int):
    """Normalised cameras of the given rig cameras for the given head poses.

    Args:
        cam_index: (B,) ints in [0, MAX_CAMERAS). head_pose: (B, 2) head (pitch, yaw) in the rig.
    Returns:
        R_w2c (B, 3, 3), t_w2c (B, 3), K (B, 3, 3) float32 tensors (head frame → normalised camera).
    """
    cam_index = np.asarray(cam_index, dtype=np.int64).reshape(-1)
    angles = torch.as_tensor(np.deg2rad(CAMERA_ANGLES_DEG[cam_index]), dtype=torch.float32)
    # Cameras aim at the face centre of the un-rotated head, so camera 0 with head pose (0, 0)
    # gives exactly R = I (the frontal camera of the head-frame convention).
    cam_rig = torch.tensor(FACE_CENTER, dtype=torch.float32) + PHYSICAL_DISTANCE * pitch_yaw_to_vector(angles)
    R_head = head_rotation(torch.as_tensor(np.array(head_pose, dtype=np.float32)).reshape(-1, 2))
    R_head = R_head.expand(len(cam_index), 3, 3)
    cam_head = (R_head.transpose(-1, -2) @ cam_rig.unsqueeze(-1)).squeeze(-1)  # rig -> head frame
    B = len(cam_index)
    face = torch.tensor(FACE_CENTER, dtype=torch.float32).expand(B, 3)
    x_axis = torch.tensor([1.0, 0.0, 0.0]).expand(B, 3)
    R, t = normalized_camera_w2c(cam_head, face, x_axis, NORMALIZED_DISTANCE)
    K = intrinsics_matrix(FOCAL_PER_PIXEL * image_size, image_size, batch=B)
    return R, t, K


def face_visible(R_w2c: torch.Tensor, t_w2c: torch.Tensor, max_angle_deg: float = 100.0) -> torch.Tensor:
    """(B,) bool: angle between the face direction (-z of the head) and the direction to the camera is small."""
    cam = -(R_w2c.transpose(-1, -2) @ t_w2c.unsqueeze(-1)).squeeze(-1)
    cos = torch.nn.functional.normalize(cam, dim=-1)[:, 2] * -1.0
    return cos > np.cos(np.deg2rad(max_angle_deg))


def _stratified(rng: np.random.Generator, n: int, half_range: float) -> np.ndarray:
    """n samples in [-half_range, half_range], one per stratum, in random order."""
    u = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n
    return ((2 * u - 1) * half_range).astype(np.float32)


def sample_frames(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Head poses (F, 2) in the rig and gazes (F, 2) in the head frame, stratified over the frames."""
    head = np.stack([_stratified(rng, num_frames, HEAD_PITCH_RANGE), _stratified(rng, num_frames, HEAD_YAW_RANGE)], 1)
    # Keep head poses inside the ellipse of the two ranges: the box corners (full pitch and full
    # yaw at once) combined with an extreme camera would show only the chin / back of the head.
    radius = np.hypot(head[:, 0] / HEAD_PITCH_RANGE, head[:, 1] / HEAD_YAW_RANGE)
    head = (head / np.maximum(radius, 1.0)[:, None]).astype(np.float32)
    gaze = np.stack([_stratified(rng, num_frames, GAZE_PITCH_RANGE), _stratified(rng, num_frames, GAZE_YAW_RANGE)], 1)
    return head, gaze
