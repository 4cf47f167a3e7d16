"""Emission–absorption volume rendering as pure functions.

    alpha_i   = 1 - exp(-sigma_i * delta_i)
    T_i       = prod_{j<i} (1 - alpha_j)          (exclusive cumulative product, T_0 = 1)
    w_i       = alpha_i * T_i
    value     = sum_i w_i * v_i                    (pre-multiplied: no division by opacity)
    depth     = sum_i w_i * t_i,  opacity = sum_i w_i

No activation, background or rescaling lives here (densities arrive already >= 0). Unlike
the seed we add no ``1e-10`` inside the product, so a fully opaque sample gives exactly zero
weight behind it (the analytic tests rely on this); ``torch.cumprod``'s backward handles the
resulting zeros.

Shapes are written ``(B, R, S)``; any leading dimensions work (the models pass the flat
``(N, S)`` of rays that hit the bound sphere).
"""

import torch

from ..shapes import ShapeError

__all__ = ["alpha_from_density", "transmittance_weights", "composite", "depth_and_opacity"]


def alpha_from_density(density: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """(B, R, S) densities >= 0 and (B, R, S) distances -> (B, R, S) opacities in [0, 1]."""
    if density.shape != deltas.shape:
        raise ShapeError(f"alpha_from_density: density and deltas must be one shape (B, R, S), got "
                         f"{tuple(density.shape)} and {tuple(deltas.shape)}")
    return -torch.expm1(-density * deltas)


def transmittance_weights(alpha: torch.Tensor) -> torch.Tensor:
    """(B, R, S) per-sample alpha -> (B, R, S) weights ``alpha_i * prod_{j<i}(1 - alpha_j)``."""
    transmittance = torch.cumprod(1.0 - alpha, dim=-1)
    transmittance = torch.cat((torch.ones_like(transmittance[..., :1]), transmittance[..., :-1]), dim=-1)
    return alpha * transmittance


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, R, S) weights, (B, R, S, C) per-sample values -> (B, R, C) weighted sums."""
    if values.shape[:-1] != weights.shape or values.dim() != weights.dim() + 1:
        raise ShapeError(f"composite: values must be weights' shape {tuple(weights.shape)} + (C,), got "
                         f"{tuple(values.shape)}")
    # matmul (…, 1, S) @ (…, S, C): a batched GEMV, no (B, R, S, C) temporary.
    return (weights.unsqueeze(-2) @ values).squeeze(-2)


def depth_and_opacity(weights: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R, S) weights and sample depths -> depth (B, R) = sum w t, opacity (B, R) = sum w."""
    if weights.shape != depths.shape:
        raise ShapeError(f"depth_and_opacity: weights and depths must be one shape (B, R, S), got "
                         f"{tuple(weights.shape)} and {tuple(depths.shape)}")
    return (weights * depths).sum(-1), weights.sum(-1)
