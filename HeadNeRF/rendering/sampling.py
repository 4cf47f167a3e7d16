"""Stratified samples along each ray between its own near and far distances.

The chord ``[near, far]`` is split into ``S`` equal bins. Evaluation samples the left edge
of every bin (the seed's deterministic layout); training draws one uniform sample per bin
(stratified jitter). ``deltas`` are true distances to the next sample and, for the last
sample, to ``far`` — so without jitter ``deltas`` sum to the chord length exactly and a
uniform density integrates in closed form.

Shapes: per-ray ``(..., )``, e.g. ``(B, R)`` or the flat ``(N,)`` of rays that hit the bound
sphere; per-sample ``(..., S)``.
"""

import torch

__all__ = ["stratified_samples"]


def stratified_samples(
    near: torch.Tensor,
    far: torch.Tensor,
    num_samples: int,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample depths in ``[near, far)`` and the distance each sample stands for.

    Args:
        near, far: (B, R) distances along unit-direction rays, ``far >= near``.
        num_samples: S, samples per ray.
        training: jitter each sample uniformly inside its bin.
        generator: optional torch.Generator for the jitter (reproducible training).
    Returns:
        depths: (B, R, S) increasing along S.
        deltas: (B, R, S) ``depths[i+1] - depths[i]``, last one ``far - depths[-1]``.
    """
    S = num_samples
    offsets = torch.arange(S, device=near.device, dtype=near.dtype)  # (S,)
    if training:
        jitter = torch.rand(near.shape + (S,), generator=generator, device=near.device, dtype=near.dtype)
        fractions = (offsets + jitter) / S  # (B, R, S)
    else:
        fractions = offsets / S  # left bin edges
    length = (far - near).unsqueeze(-1)
    depths = near.unsqueeze(-1) + fractions * length
    deltas = torch.diff(depths, dim=-1, append=far.unsqueeze(-1))
    return depths, deltas
