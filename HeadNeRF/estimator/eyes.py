"""Eye crops: where the eyes are in a face image, and fixed-size upsampled patches around them.

A 64-px face shows each eye about 7 px wide: after a ResNet stem (1/4 resolution) an eye is two
feature cells, too few to read an iris. The estimator therefore also looks at both eyes through
**crops**: a box of fixed size (a fraction of the image width, the aspect of the crop) centred on
each eye, resampled bilinearly (``grid_sample``) to ``crop_hw`` pixels, e.g. 32×48: about 3.4×
upsampled at 64 px. The crop of the image-right eye is mirrored so that both crops show an eye
the same way round (one CNN reads both).

Coordinates: eye centres are ``(x, y)`` in **normalised image units** in [-1, 1] (``grid_sample``
with ``align_corners=False``: ``n = 2 p / S - 1`` for a pixel coordinate ``p`` whose pixel centres
sit at ``i + 0.5``, see docs/conventions.md). Eye order: ``[image-left eye, image-right eye]``
(iBUG landmarks 36-41, the subject's right eye, then 42-47).

A crop is centred on the mean of an eye's six contour landmarks, not on the iris: the box follows
the eye socket and the iris moves inside it, which is what the branch has to read.
"""

import torch
import torch.nn.functional as F

__all__ = [
    "EYE_LANDMARKS",
    "affine_centres",
    "crop_eyes",
    "eye_box_size",
    "eye_centres_from_landmarks",
    "flip_centres",
    "normalised_to_pixels",
    "pixels_to_normalised",
]

# iBUG 68-point indices of the two eye contours: image-left eye (subject's right), image-right eye
EYE_LANDMARKS = (tuple(range(36, 42)), tuple(range(42, 48)))


def pixels_to_normalised(points: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 2) pixel coordinates (x=col, y=row) of an S×S image -> normalised [-1, 1] units."""
    return 2.0 * points / size - 1.0


def normalised_to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 2) normalised [-1, 1] units -> pixel coordinates of an S×S image."""
    return (points + 1.0) * (size / 2.0)


def eye_centres_from_landmarks(lm2d: torch.Tensor, size: int) -> torch.Tensor:
    """Eye centres of 68 iBUG landmarks.

    Args:
        lm2d: (B, 68, 2) pixels (x=col, y=row) of an S×S image. size: S.
    Returns:
        (B, 2, 2) normalised [-1, 1] centres, [image-left eye, image-right eye]; NaN where a landmark is NaN.
    """
    if lm2d.ndim != 3 or lm2d.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must have shape (B, 68, 2), got {tuple(lm2d.shape)}")
    centres = torch.stack([lm2d[:, list(idx)].mean(1) for idx in EYE_LANDMARKS], 1)
    return pixels_to_normalised(centres.float(), size)


def flip_centres(centres: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) normalised centres of the mirrored image: x negated, the two eyes swapped."""
    flipped = centres * centres.new_tensor([-1.0, 1.0])
    return flipped.flip(1)


def affine_centres(centres: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Centres after ``grid_sample`` with theta = [[1/zoom, 0, shift_x], [0, 1/zoom, shift_y]].

    The output pixel at ``u`` samples the input at ``u / zoom + shift``, so an input point ``p``
    lands at ``(p - shift) * zoom``. centres: (B, 2, 2); zoom: (B,); shift: (B, 2) (normalised units).
    """
    return (centres - shift[:, None, :]) * zoom[:, None, None]


def eye_box_size(box_width: float, crop_hw: tuple) -> tuple:
    """(width, height) of the crop box in normalised units (the image is 2 wide) from its width as a
    fraction of the image width; the height keeps the crop's aspect (no distortion)."""
    w = 2.0 * box_width
    return w, w * crop_hw[0] / crop_hw[1]


def crop_eyes(images: torch.Tensor, centres: torch.Tensor, box_width: float, crop_hw: tuple) -> torch.Tensor:
    """Both eyes of each image, resampled to a fixed size, the image-right eye mirrored.

    Args:
        images: (B, C, S, S). centres: (B, 2, 2) normalised [-1, 1] (x, y), [image-left, image-right].
        box_width: the box's width as a fraction of the image width. crop_hw: (h, w) output pixels.
    Returns:
        (B, 2, C, h, w) crops (bilinear; outside the image: border pixels repeated).
    """
    if images.ndim != 4 or centres.shape != (images.shape[0], 2, 2):
        raise ValueError(f"crop_eyes expects images (B, C, S, S) and centres (B, 2, 2), got "
                         f"{tuple(images.shape)} and {tuple(centres.shape)}")
    B, C = images.shape[:2]
    h, w = int(crop_hw[0]), int(crop_hw[1])
    bw, bh = eye_box_size(box_width, (h, w))
    # an (h, w) grid of sample positions spanning the box, pixel centres of the crop (align_corners=False)
    xs = (torch.arange(w, device=images.device, dtype=images.dtype) + 0.5) / w - 0.5
    ys = (torch.arange(h, device=images.device, dtype=images.dtype) + 0.5) / h - 0.5
    gy, gx = torch.meshgrid(ys * bh, xs * bw, indexing="ij")
    offsets = torch.stack((gx, gy), -1)  # (h, w, 2)
    mirror = offsets.new_tensor([[1.0, 1.0], [-1.0, 1.0]])  # the second (image-right) eye read mirrored
    grid = centres.to(images.dtype)[:, :, None, None, :] + offsets[None, None] * mirror[None, :, None, None, :]
    grid = grid.reshape(B * 2, h, w, 2)
    crops = F.grid_sample(images.repeat_interleave(2, 0), grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
    return crops.reshape(B, 2, C, h, w)
