"""Batch augmentation of training images, drawn from one ``torch.Generator`` (so resume is exact).

Every function takes and returns (B, 3, S, S) float RGB in [0, 1]; the random factors are per
image. Geometric changes are small (a pixel of shift, a few % of zoom) because the labels are
directions in the normalised camera frame: a 1-pixel shift at 64 px (focal 131 px) is a 0.4°
camera rotation, left uncorrected. The mirror image is exact: it negates both yaws.
Eye centres (``eyes.py``, normalised units), when given, move with the image: mirrored (and the
two eyes swapped), shifted and zoomed exactly as the pixels are, so a crop at the moved centres
still holds the iris.
"""

import torch
import torch.nn.functional as F

from .config import AugmentConfig
from .eyes import affine_centres, flip_centres

__all__ = ["augment_batch", "mirror_labels"]


def _uniform(gen, n, lo, hi, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def mirror_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, 2k) (pitch, yaw) pairs (gaze, head pose, eye in head) of a mirrored image: every yaw negated."""
    sign = labels.new_ones(labels.shape[-1])
    sign[1::2] = -1.0
    return labels * sign


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur with ``sigma (B,)`` pixels (5-tap kernels)."""
    B, C, H, W = images.shape
    x = torch.arange(-2, 3, device=images.device, dtype=images.dtype)
    k = torch.exp(-0.5 * (x[None] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, 5)
    flat = F.pad(images.reshape(1, B * C, H, W), (2, 2, 2, 2), mode="replicate")
    flat = F.conv2d(flat, k[:, None, None, :], groups=B * C)
    flat = F.conv2d(flat, k[:, None, :, None], groups=B * C)
    return flat.reshape(B, C, H, W)


def augment_batch(images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig,
                  gen: torch.Generator, eye_centres: torch.Tensor | None = None) -> tuple:
    """Random per-image mirror, zoom/shift, colour jitter, blur and noise.

    Args:
        images: (B, 3, S, S) in [0, 1]. labels: (B, 2k) (pitch, yaw) pairs, radians (see model.OUTPUT_NAMES).
        eye_centres: optional (B, 2, 2) normalised eye centres, moved with the pixels.
    Returns:
        (images (B, 3, S, S) in [0, 1], labels (B, 2k)), and the moved eye centres (B, 2, 2) when given.
    """
    B, _, S, _ = images.shape
    dev = images.device
    if cfg.hflip > 0:
        flip = torch.rand(B, generator=gen, device=dev) < cfg.hflip
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        labels = torch.where(flip[:, None], mirror_labels(labels), labels)
        if eye_centres is not None:
            eye_centres = torch.where(flip[:, None, None], flip_centres(eye_centres), eye_centres)
    if cfg.shift_px > 0 or cfg.scale > 0:
        zoom = _uniform(gen, B, 1 - cfg.scale, 1 + cfg.scale, dev)
        shift = _uniform(gen, (B, 2), -cfg.shift_px, cfg.shift_px, dev) * (2.0 / S)  # pixels -> [-1, 1] units
        theta = torch.zeros(B, 2, 3, device=dev, dtype=images.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        # white outside, like the renders' background: sample 1 - image with zero padding
        images = 1.0 - F.grid_sample(1.0 - images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if eye_centres is not None:
            eye_centres = affine_centres(eye_centres, zoom, shift)
    if cfg.brightness > 0:
        images = images * _uniform(gen, B, 1 - cfg.brightness, 1 + cfg.brightness, dev)[:, None, None, None]
    if cfg.contrast > 0:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        c = _uniform(gen, B, 1 - cfg.contrast, 1 + cfg.contrast, dev)[:, None, None, None]
        images = mean + c * (images - mean)
    if cfg.saturation > 0:
        grey = (images * images.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
        s = _uniform(gen, B, 1 - cfg.saturation, 1 + cfg.saturation, dev)[:, None, None, None]
        images = grey + s * (images - grey)
    if cfg.blur_prob > 0 and cfg.blur_sigma > 0:
        blur = torch.rand(B, generator=gen, device=dev) < cfg.blur_prob
        sigma = _uniform(gen, B, 0.2, cfg.blur_sigma, dev)
        images = torch.where(blur[:, None, None, None], _gaussian_blur(images, sigma), images)
    if cfg.noise_std > 0:
        images = images + cfg.noise_std * torch.randn(images.shape, generator=gen, device=dev, dtype=images.dtype)
    if eye_centres is not None:
        return images.clamp(0, 1), labels, eye_centres
    return images.clamp(0, 1), labels
