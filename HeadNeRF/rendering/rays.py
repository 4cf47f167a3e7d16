"""Rays through pixel centres, and where they cross the head's bound sphere.

One ray per pixel of an ``h × w`` grid (the feature map), row-major: ray ``r`` belongs to
pixel ``(col, row) = (r % w, r // w)`` and passes through its centre ``(col + 0.5, row + 0.5)``
(the seed used pixel corners; see ``HeadNeRF/geometry/cameras.py`` for the convention).

``K`` must be given **in pixels of that grid**: callers holding K for the output image
rescale it first with ``scale_intrinsics(K, h / image_size)``.

``rays_through`` takes arbitrary image points instead of the whole grid: training on random
pixel subsets (``TrainConfig.rays_per_image``) builds its rays with it.

Shapes: ``R_w2c (B, 3, 3)``, ``t_w2c (B, 3)``, ``K (B, 3, 3)``; rays ``(B, R, 3)`` with
``R = h * w``; per-ray scalars ``(B, R)``.
"""

import torch

from ..geometry.cameras import camera_center
from ..shapes import check_shape

__all__ = ["pixel_centers", "pixel_index_centers", "pixel_strip", "generate_rays", "rays_through", "ray_sphere_bounds"]


def pixel_centers(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(h*w, 2) pixel centres ``(u, v) = (col + 0.5, row + 0.5)``, row-major.

    Example:
        >>> pixel_centers(2, 2)
        tensor([[0.5000, 0.5000],
                [1.5000, 0.5000],
                [0.5000, 1.5000],
                [1.5000, 1.5000]])
    """
    rows, cols = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack((cols.reshape(-1), rows.reshape(-1)), dim=-1) + 0.5


def generate_rays(
    R_w2c: torch.Tensor, t_w2c: torch.Tensor, K: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through the pixel centres of an ``h × w`` grid.

    Args:
        R_w2c: (B, 3, 3) world→camera rotation.
        t_w2c: (B, 3) world→camera translation.
        K: (B, 3, 3) intrinsics in pixels of the ``h × w`` grid.
    Returns:
        origins (B, R, 3): the camera centre, repeated per ray.
        directions (B, R, 3): unit directions, so ``origin + t * dir`` is at distance ``t``.
    """
    check_shape("generate_rays", "R_w2c", R_w2c, ("B", 3, 3))
    uv = pixel_centers(h, w, R_w2c.device, R_w2c.dtype).unsqueeze(0).expand(R_w2c.shape[0], h * w, 2)
    return rays_through(R_w2c, t_w2c, K, uv)


def pixel_index_centers(pixels: torch.Tensor, w: int, dtype=torch.float32) -> torch.Tensor:
    """(B, R) long row-major pixel indices of a grid ``w`` wide -> (B, R, 2) centres ``(col + 0.5, row + 0.5)``.

    Example:
        >>> pixel_index_centers(torch.tensor([[0, 5]]), 4)
        tensor([[[0.5000, 0.5000],
                 [1.5000, 1.5000]]])
    """
    return torch.stack((pixels % w, torch.div(pixels, w, rounding_mode="floor")), dim=-1).to(dtype) + 0.5


def pixel_strip(maps: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B or 1, C, H, W) maps at ``pixels (B, K)`` (row-major indices) -> (B, C, 1, K) strips.

    A batch-1 map (e.g. a learned background) is shared by every image.
    """
    B, C = pixels.shape[0], maps.shape[1]
    flat = maps.flatten(2).expand(B, C, -1)
    return flat.gather(2, pixels.unsqueeze(1).expand(-1, C, -1)).unsqueeze(2)


def rays_through(
    R_w2c: torch.Tensor, t_w2c: torch.Tensor, K: torch.Tensor, uv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through the image points ``uv (B, R, 2)`` (pixels of the grid ``K`` is given in).

    Returns origins (B, R, 3) and unit directions (B, R, 3), like ``generate_rays``.
    """
    dims = check_shape("rays_through", "uv", uv, ("B", "R", 2))
    check_shape("rays_through", "R_w2c", R_w2c, ("B", 3, 3), dims)
    check_shape("rays_through", "t_w2c", t_w2c, ("B", 3), dims)
    check_shape("rays_through", "K", K, ("B", 3, 3), dims)
    B, R = uv.shape[:2]
    uv1 = torch.cat((uv, torch.ones_like(uv[..., :1])), dim=-1)  # (B, R, 3)
    # Camera-frame direction K^-1 (u, v, 1); solve instead of inverting K explicitly.
    dirs_cam = torch.linalg.solve(K, uv1.transpose(-1, -2))  # (B, 3, R)
    dirs_world = (R_w2c.transpose(-1, -2) @ dirs_cam).transpose(-1, -2)  # (B, R, 3)
    directions = torch.nn.functional.normalize(dirs_world, dim=-1)
    origins = camera_center(R_w2c, t_w2c).unsqueeze(1).expand(B, R, 3)
    return origins, directions


def ray_sphere_bounds(
    origins: torch.Tensor, directions: torch.Tensor, radius: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry/exit distances of unit-direction rays through the sphere ``|x| <= radius``.

    Solves ``|o + t d|^2 = r^2`` for ``t``. A camera inside the sphere gets ``near = 0``.

    Args:
        origins, directions: (B, R, 3); directions must be unit length.
    Returns:
        near, far: (B, R) distances along the ray (0 where the ray misses).
        hit: (B, R) bool, the ray's chord inside the sphere has positive length in front of the camera.
    """
    b = (origins * directions).sum(-1)  # (B, R) o·d
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    # sqrt only where disc > 0 (the double-where keeps the gradient finite: sqrt'(0) = inf would turn the
    # zero gradient of a missing ray into NaN, e.g. when fitting a camera refinement)
    inside = disc > 0
    root = torch.where(inside, torch.where(inside, disc, torch.ones_like(disc)).sqrt(), torch.zeros_like(disc))
    far = -b + root
    near = (-b - root).clamp_min(0.0)
    hit = inside & (far > near)
    zero = torch.zeros_like(near)
    return torch.where(hit, near, zero), torch.where(hit, far, zero), hit
