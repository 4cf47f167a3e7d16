"""Learned tri-plane point features, an optional addition to the positional encoding.

    features(x) = [P_xy(x, y), P_xz(x, z), P_yz(y, z)]     each bilinearly sampled, C channels

Three axis-aligned ``C × R × R`` feature planes cover the bound sphere's square
``[-bound_radius, bound_radius]²``; a point outside reads the border (``padding_mode="border"``).
The planes are shared by all subjects (identity still enters the MLPs through the codes), so
they learn the layout common to all heads while the MLPs stay small.

Why: a pure PE + MLP field learns slowly: on 2 CPU cores the quickstart MLP spends its whole
10-minute budget still blurry (train PSNR ≈ held-out PSNR, i.e. under-fitting, not
over-fitting). Explicit plane features, as in EG3D's tri-planes or TensoRF, give each region
its own parameters and converge in far fewer steps, at the cost of one ``grid_sample`` per
batch of points. Off (``ModelConfig.triplane_resolution = 0``) in the seed-size configs.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TriplaneEncoding"]

# (a, b) coordinate pairs of the three planes: xy, xz, yz
PLANE_AXES = ((0, 1), (0, 2), (1, 2))


class TriplaneEncoding(nn.Module):
    """(..., 3) points -> (..., 3 * channels) plane features.

    Args:
        resolution: R, texels per plane side.
        channels: C, features per plane.
        bound_radius: half-side of the square each plane covers (head units).
        init_std: standard deviation of the random initial features.
    """

    def __init__(self, resolution: int, channels: int, bound_radius: float, init_std: float = 0.1):
        super().__init__()
        self.channels, self.bound_radius = channels, bound_radius
        self.planes = nn.Parameter(init_std * torch.randn(3, channels, resolution, resolution))

    @property
    def out_dim(self) -> int:
        return 3 * self.channels

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        shape = points.shape[:-1]
        p = points.reshape(1, -1, 1, 3) / self.bound_radius  # grid_sample coordinates in [-1, 1]
        grids = torch.cat([p[..., [a, b]] for a, b in PLANE_AXES])  # (3, M, 1, 2)
        feats = F.grid_sample(self.planes, grids, mode="bilinear", padding_mode="border", align_corners=False)
        # (3, C, M, 1) -> (M, 3, C) -> (..., 3C)
        return feats.squeeze(-1).permute(2, 0, 1).reshape(*shape, self.out_dim)
