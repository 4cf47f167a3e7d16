"""Image-quality metrics used in validation and the training report."""

import torch

__all__ = ["masked_psnr"]


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB (peak 1.0) over the pixels where ``mask`` is 1, per image.

    Args:
        pred, target: (B, C, H, W) in [0, 1].
        mask: (B, 1, H, W) in {0, 1}, or None for the whole image.
    Returns:
        (B,) PSNR; images with an empty mask give NaN (there is nothing to score).
    """
    err = (pred - target).square()
    if mask is None:
        mask = torch.ones_like(err[:, :1])
    num = (err * mask).flatten(1).sum(1)
    den = mask.flatten(1).sum(1) * pred.shape[1]
    mse = num / den
    return torch.where(den > 0, -10.0 * torch.log10(mse.clamp_min(1e-10)), torch.full_like(mse, float("nan")))
