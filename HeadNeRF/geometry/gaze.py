"""Gaze and head-pose angles (ETH-XGaze convention) and their rotations.

A gaze (or head) direction is a unit 3-vector ``v = (x, y, z)`` in an OpenCV-style
frame (x right, y down, z forward, away from the viewer). ETH-XGaze writes it as two
angles in radians:

    pitch = asin(-y)            (positive: looking up)
    yaw   = atan2(-x, -z)       (positive: looking towards the image's left)

so ``(0, 0)`` is a gaze straight back at the camera (``v = (0, 0, -1)``). The inverse is

    v = (-cos(pitch) sin(yaw), -sin(pitch), -cos(pitch) cos(yaw)).

Head pose uses ETH-XGaze's other formula, on the head's rotation ``R`` (head frame →
camera frame): ``pitch = asin(R[1, 2])``, ``yaw = atan2(R[0, 2], R[2, 2])``; the head's
+z axis points from the face towards the back of the head, so a frontal head gives (0, 0).

All functions are pure, batched over leading dimensions, and differentiable.
"""

import torch

__all__ = [
    "pitch_yaw_to_vector",
    "vector_to_pitch_yaw",
    "head_pose_from_rotation",
    "gaze_rotation",
    "rotate_pitch_yaw",
    "gaze_in_head_frame",
    "angular_error_deg",
]


def pitch_yaw_to_vector(pitch_yaw: torch.Tensor) -> torch.Tensor:
    """(..., 2) pitch/yaw in radians -> (..., 3) unit gaze vector (OpenCV axes).

    Example:
        >>> pitch_yaw_to_vector(torch.zeros(2))
        tensor([-0., -0., -1.])
    """
    pitch, yaw = pitch_yaw.unbind(-1)
    return torch.stack(
        (-torch.cos(pitch) * torch.sin(yaw), -torch.sin(pitch), -torch.cos(pitch) * torch.cos(yaw)), dim=-1
    )


def vector_to_pitch_yaw(vector: torch.Tensor) -> torch.Tensor:
    """(..., 3) gaze vector (any length > 0) -> (..., 2) pitch/yaw in radians."""
    v = torch.nn.functional.normalize(vector, dim=-1)
    x, y, z = v.unbind(-1)
    return torch.stack((torch.asin((-y).clamp(-1.0, 1.0)), torch.atan2(-x, -z)), dim=-1)


def head_pose_from_rotation(R_head2cam: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) head→camera rotation -> (..., 2) head pitch/yaw (ETH-XGaze formula)."""
    return torch.stack(
        (torch.asin(R_head2cam[..., 1, 2].clamp(-1.0, 1.0)), torch.atan2(R_head2cam[..., 0, 2], R_head2cam[..., 2, 2])),
        dim=-1,
    )


def gaze_rotation(pitch_yaw: torch.Tensor) -> torch.Tensor:
    """(..., 2) -> (..., 3, 3) rotation taking the neutral gaze (0, 0, -1) onto the gaze vector.

    ``R = R_y(-yaw) @ R_x(pitch)`` in OpenCV axes, i.e. the rotation an eyeball performs
    when it turns from looking straight ahead to ``pitch_yaw``. ``gaze_rotation(g) @ (0,0,-1)``
    equals ``pitch_yaw_to_vector(g)`` exactly.
    """
    pitch, yaw = pitch_yaw.unbind(-1)
    cp, sp, cy, sy = torch.cos(pitch), torch.sin(pitch), torch.cos(yaw), torch.sin(yaw)
    one, zero = torch.ones_like(cp), torch.zeros_like(cp)
    # R_x(pitch): rotating (0,0,-1) about x by +pitch tilts it to y = -sin(pitch) (up).
    Rx = torch.stack((one, zero, zero, zero, cp, sp, zero, -sp, cp), dim=-1).unflatten(-1, (3, 3))
    # R_y(-yaw): rotating about y moves x to -cos(pitch) sin(yaw).
    Ry = torch.stack((cy, zero, sy, zero, one, zero, -sy, zero, cy), dim=-1).unflatten(-1, (3, 3))
    return Ry @ Rx


def rotate_pitch_yaw(pitch_yaw: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Express a direction given as (..., 2) pitch/yaw in another frame: angles of ``R @ v``.

    Used to move gaze between a camera frame and the head frame:
    ``gaze_head = rotate_pitch_yaw(gaze_cam, R_w2c.transpose(-1, -2))``.
    """
    v = pitch_yaw_to_vector(pitch_yaw)
    return vector_to_pitch_yaw((R @ v.unsqueeze(-1)).squeeze(-1))


def gaze_in_head_frame(gaze_cam: torch.Tensor, R_w2c: torch.Tensor) -> torch.Tensor:
    """(..., 2) gaze in a camera frame (the labels' convention) -> (..., 2) gaze in the head (world) frame.

    The one named conversion between the two frames (``R_w2c``: (..., 3, 3) head frame -> camera)."""
    return rotate_pitch_yaw(gaze_cam, R_w2c.transpose(-1, -2))


def angular_error_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3-D angle in degrees between two (..., 2) pitch/yaw directions."""
    va, vb = pitch_yaw_to_vector(a), pitch_yaw_to_vector(b)
    cos = (va * vb).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))
