"""Frames of a fitted subject for the photo command's animations: the gaze sweep, the head-pose sweep and
the latent interpolation (captioned uint8 frames, ``image_io.to_frame`` / ``label``)."""

import math

import torch

from ..image_io import label, to_frame
from .render import render_fit
from .result import FitResult

__all__ = ["gaze_sweep", "interpolation", "pose_sweep"]


def gaze_sweep(result: FitResult, targets: torch.Tensor | None = None, circle: int = 16, hold: int = 4,
               pitch: float = 0.3, yaw: float = 0.45, eye_code=None, full_frames: bool = False
               ) -> tuple[list, torch.Tensor]:
    """Frames of the fitted view with the eyes going round a circle (camera-frame pitch ``pitch`` sin,
    yaw ``yaw`` cos), then holding each of ``targets (N, 2)`` for ``hold`` frames.

    Speed: with a per-pixel model (``renders_pixel_subsets``) only the pixels of the fitted view's eye
    mask, dilated by 2 px, are re-rendered for each gaze and pasted into the fitted render (about a
    tenth of the rays); the model's gaze-dependent changes outside that region, if any, are not shown.
    ``full_frames=True`` renders every frame whole.

    Returns (frames (size, size, 3) uint8 with captions, gazes (F, 2) camera frame).
    """
    a = torch.arange(circle, dtype=torch.float32) * (2 * math.pi / circle)
    gazes = torch.stack((pitch * torch.sin(a), yaw * torch.cos(a)), -1)
    if targets is not None and len(targets):
        gazes = torch.cat((gazes, targets.float().repeat_interleave(hold, 0)))
    if full_frames or not result.model.renders_pixel_subsets:
        images = render_fit(result, gaze=gazes, eye_code=eye_code)
    else:
        region = torch.nn.functional.max_pool2d(result.eye_mask[:1].float(), 5, stride=1, padding=2)[0, 0]
        pixels = region.flatten().nonzero().squeeze(1)
        base = result.render if result.render is not None else render_fit(result)
        images = base[:1].expand(len(gazes), -1, -1, -1).flatten(2).clone()
        if pixels.numel():
            images[:, :, pixels] = render_fit(result, gaze=gazes, pixels=pixels)[:, :, 0, :]
        images = images.view(len(gazes), *base.shape[1:])
    frames = [label(to_frame(im), f"gaze p{g[0]:+.2f} y{g[1]:+.2f} rad") for im, g in zip(images, gazes.tolist())]
    return frames, gazes


def pose_sweep(result: FitResult, count: int = 16, yaw: float = 0.5, pitch: float = 0.25, eye_code=None) -> tuple[list, torch.Tensor]:
    """Frames with the head turning (ETH-XGaze head pose yaw ``yaw`` cos, pitch ``pitch`` sin: a loop around the
    fitted view's neighbourhood) while the eyes look at the camera (camera-frame gaze 0)."""
    a = torch.arange(count, dtype=torch.float32) * (2 * math.pi / count)
    poses = torch.stack((pitch * torch.sin(2 * a), yaw * torch.sin(a)), -1)
    images = render_fit(result, gaze=torch.zeros(count, 2), head_pose=poses, eye_code=eye_code)
    frames = [label(to_frame(im), f"head p{p[0]:+.2f} y{p[1]:+.2f} rad") for im, p in zip(images, poses.tolist())]
    return frames, poses


def interpolation(result: FitResult, target_codes: dict, count: int = 10) -> list:
    """Frames of the fitted view while the codes move linearly to ``target_codes`` and back."""
    w = torch.linspace(0, 1, count)
    w = torch.cat((w, w.flip(0)[1:-1]))[:, None]
    codes = {k: result.codes[k] * (1 - w) + target_codes[k].to(result.codes[k]) * w
             for k in ("shape_code", "appearance_code")}
    images = render_fit(result, codes=codes)
    return [label(to_frame(im), f"to target {float(x):.2f}") for im, x in zip(images, w[:, 0])]
