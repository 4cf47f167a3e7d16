"""Training on pixel subsets: draw pixels per image (eye pixels likelier) and cut a batch down to them.

Used by the NeRF training loop and the fit (both render only the drawn pixels of a per-pixel
renderer); every per-pixel loss reads the (B, C, 1, K) strips exactly as it reads whole images.
"""

import torch

from .rays import pixel_strip

__all__ = ["PIXEL_KEYS", "sample_pixels", "gather_pixels"]


PIXEL_KEYS = ("image", "head_mask", "eye_mask", "template_image")  # per-pixel maps of a batch


def sample_pixels(eye_mask: torch.Tensor, count: int, eye_weight: float, generator=None) -> torch.Tensor:
    """Draw ``count`` distinct pixels per image, eye pixels ``eye_weight`` times likelier.

    Args:
        eye_mask: (B, 1, S, S) in [0, 1].
    Returns:
        (B, count) long row-major pixel indices.
    """
    weights = 1.0 + (eye_weight - 1.0) * eye_mask.flatten(1)  # (B, S*S)
    return torch.multinomial(weights, count, replacement=False, generator=generator)


def gather_pixels(batch: dict, pixels: torch.Tensor) -> dict:
    """The batch with its per-pixel maps (B, C, S, S) replaced by (B, C, 1, K) strips at ``pixels (B, K)``.

    Every per-pixel loss then reads the strips exactly as it reads whole images.
    """
    out = dict(batch)
    for key in PIXEL_KEYS:
        if key in batch:
            out[key] = pixel_strip(batch[key], pixels)
    return out
