"""Pinhole cameras in OpenCV convention.

* Axes: x right, y down, z forward (the camera looks along +z).
* Extrinsics are **world→camera**: ``x_cam = R_w2c @ x_world + t_w2c``. The camera centre
  is ``-R_w2c.T @ t_w2c``. Functions whose name says ``cam2world`` return the inverse.
* Intrinsics ``K`` are in pixels of the image they belong to. Pixel ``(col, row)`` covers
  ``[col, col+1) x [row, row+1)``; its centre is ``(col + 0.5, row + 0.5)``. A principal
  point of ``(S/2, S/2)`` therefore lies exactly in the middle of an S×S image.
* Shapes: ``R (B, 3, 3)``, ``t (B, 3)``, ``K (B, 3, 3)``, points ``(B, N, 3)``.

In this project "world" is the **head frame** (see ``docs/conventions.md``): the head sits
at the origin, +x towards the image right of a frontal camera, +y down, +z from the face
to the back of the head. A frontal camera at distance d has ``R = I, t = (0, 0, d)``.
"""

import torch

# Physical scale of the head frame: millimetres per head unit. The synthetic eye-centre distance
# (0.57 head units) then matches the mean human interpupillary distance (~63 mm), and ETH-XGaze's
# normalised camera (600 mm) sits at 600 / 110 = 5.45 head units (docs/conventions.md).
MM_PER_HEAD_UNIT = 110.0

__all__ = [
    "MM_PER_HEAD_UNIT",
    "intrinsics_matrix",
    "scale_intrinsics",
    "camera_center",
    "cam2world",
    "look_at_w2c",
    "normalized_camera_w2c",
    "project_points",
]


def intrinsics_matrix(focal: torch.Tensor | float, image_size: int, batch: int = 1) -> torch.Tensor:
    """K (batch, 3, 3) with focal length ``focal`` px and the principal point at the image centre."""
    f = torch.as_tensor(focal, dtype=torch.float32).expand(batch)
    K = torch.zeros(batch, 3, 3)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = image_size / 2.0
    K[:, 1, 2] = image_size / 2.0
    K[:, 2, 2] = 1.0
    return K


def scale_intrinsics(K: torch.Tensor, scale: float) -> torch.Tensor:
    """K for the same camera after resizing the image by ``scale`` (pixel-centre exact).

    With pixel centres at +0.5, resizing maps a continuous pixel coordinate u to u*scale,
    so the first two rows of K are simply multiplied.
    """
    K = K.clone()
    K[..., :2, :] *= scale
    return K


def camera_center(R_w2c: torch.Tensor, t_w2c: torch.Tensor) -> torch.Tensor:
    """(B, 3) camera centre in world coordinates."""
    return -(R_w2c.transpose(-1, -2) @ t_w2c.unsqueeze(-1)).squeeze(-1)


def cam2world(R_w2c: torch.Tensor, t_w2c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R_c2w (B,3,3), camera centre (B,3)) from world→camera extrinsics."""
    return R_w2c.transpose(-1, -2), camera_center(R_w2c, t_w2c)


def look_at_w2c(center: torch.Tensor, target: torch.Tensor, right_hint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World→camera (R, t) for a camera at ``center`` looking at ``target``.

    Follows ETH-XGaze's normalisation: the camera z axis points at the target and its x axis
    is as close as possible to ``right_hint`` (the head's +x axis in normalisation, so the
    normalised image has no roll relative to the head).

    Args:
        center, target, right_hint: (B, 3) world coordinates / direction.
    Returns:
        R_w2c (B, 3, 3), t_w2c (B, 3).
    """
    z = torch.nn.functional.normalize(target - center, dim=-1)
    y = torch.nn.functional.normalize(torch.cross(z, right_hint, dim=-1), dim=-1)
    x = torch.cross(y, z, dim=-1)
    R = torch.stack((x, y, z), dim=-2)  # rows are the camera axes in world coordinates
    t = -(R @ center.unsqueeze(-1)).squeeze(-1)
    return R, t


def normalized_camera_w2c(
    physical_center: torch.Tensor, face_center: torch.Tensor, head_x_axis: torch.Tensor, distance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ETH-XGaze data normalisation as a virtual camera.

    The normalised camera looks from the physical camera's direction at the face centre,
    from a fixed ``distance``, with its x axis aligned to the head's x axis.

    Args:
        physical_center: (B, 3) physical camera centres (world).
        face_center: (B, 3) the point the patch is centred on (world).
        head_x_axis: (B, 3) the head's +x axis in world coordinates.
        distance: distance of the normalised camera from the face centre (world units).
    Returns:
        R_w2c (B, 3, 3), t_w2c (B, 3) of the normalised camera.
    """
    direction = torch.nn.functional.normalize(face_center - physical_center, dim=-1)
    center = face_center - distance * direction
    return look_at_w2c(center, face_center, head_x_axis)


def project_points(points: torch.Tensor, R_w2c: torch.Tensor, t_w2c: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Project world points (B, N, 3) to continuous pixel coordinates (B, N, 2) (u right, v down)."""
    cam = points @ R_w2c.transpose(-1, -2) + t_w2c.unsqueeze(-2)  # (B, N, 3)
    uvw = cam @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]
