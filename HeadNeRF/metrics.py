"""Image-quality metrics shared by validation, the training report, the fit and the evaluation.

:func:`whiten_background` is the package's one whitened target (``image * mask + (1 - mask)``).

:func:`masked_psnr` is the package's one head PSNR: training's held-out PSNR, the fit's ``psnr_head``
and the evaluation's ``psnr_head`` column all call it.
"""

import math

import torch

__all__ = ["masked_psnr", "whiten_background"]


def whiten_background(image: torch.Tensor, head_mask: torch.Tensor) -> torch.Tensor:
    """The whitened target: pixels outside ``head_mask`` (B, 1, H, W) in [0, 1] set to white.

    The NeRF is trained, fitted and scored against images whose non-head pixels are white (the
    renderer composites onto a white background; GazeNeRF scores on white). (B, C, H, W) -> same.
    """
    return image * head_mask + (1.0 - head_mask)


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB (peak 1.0) over the pixels where ``mask`` is 1, per image, in the inputs' dtype.

    The mean squared error is summed over the masked pixels and all channels, divided by
    (masked pixels x channels). Identical images (zero error) give +inf dB; an empty mask gives NaN
    (there is nothing to score). Callers that score against [0, 1] images clamp before calling.

    Args:
        pred, target: (B, C, H, W) in [0, 1].
        mask: (B, 1, H, W) in {0, 1}, or None for the whole image.
    Returns:
        (B,) PSNR.
    """
    if pred.dim() != 4 or target.dim() != 4 or pred.shape[1:] != target.shape[1:]:
        raise ValueError(f"masked_psnr: pred and target must be (B, C, H, W) images of one size, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    err = (pred - target).square()
    if mask is None:
        mask = torch.ones_like(err[:, :1])
    num = (err * mask).flatten(1).sum(1)
    den = mask.flatten(1).sum(1) * pred.shape[1]
    mse = num / den.clamp_min(1)
    psnr = torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-30)), torch.full_like(mse, math.inf))
    return torch.where(den > 0, psnr, torch.full_like(mse, math.nan))
