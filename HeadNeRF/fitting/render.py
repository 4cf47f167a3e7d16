"""Rendering a fitted subject anew: other gazes, head poses, cameras, codes (``render_fit``), and the eye
masks of views the dataset never had (``eye_mask_for_view``, from the synthetic head model's landmarks)."""

import dataclasses

import numpy as np
import torch

from ..data.synthetic import head_model as hm
from ..geometry.cameras import project_points
from ..geometry.gaze import gaze_in_head_frame
from ..models import camera_for_head_pose, eval_mode
from .result import FitResult

__all__ = ["eye_mask_for_view", "render_fit"]


def eye_mask_for_view(R_w2c: torch.Tensor, t_w2c: torch.Tensor, K: torch.Tensor, image_size: int,
                      code: np.ndarray | None = None) -> torch.Tensor:
    """Periocular eye masks for new views, from the synthetic head model's eye landmarks.

    The eye contours (iBUG 36-47) of the head model (``code``: a 43-d synthetic code, or the
    mean head) are projected, enlarged 1.5x about their centres (the periocular region around the
    opening, as the generator's masks) and dilated by ``max(2, S/40)`` px: IoU 0.83 with the dataset's
    own eye masks on the quickstart test subject.

    Args:
        R_w2c (B,3,3), t_w2c (B,3), K (B,3,3) in pixels of the ``image_size`` image.
    Returns:
        (B, 1, S, S) float {0, 1}.
    """
    import cv2  # heavy optional dependency: loaded when a new view needs eye masks

    code = np.zeros(hm.CODE_DIM, np.float32) if code is None else np.asarray(code, np.float32).reshape(-1)
    P = hm.decode(code)
    eye_c = hm.eyeball_centers(P)  # as build_mesh completes the parameters
    P = dataclasses.replace(P, eye_centers=tuple(tuple(float(v) for v in c) for c in eye_c))
    lm3d = torch.as_tensor(hm.landmarks_3d(P), dtype=torch.float32)
    B = R_w2c.shape[0]
    uv = project_points(lm3d[None].expand(B, -1, -1), R_w2c.float().cpu(), t_w2c.float().cpu(), K.float().cpu())
    S = int(image_size)
    radius = max(2, S // 40)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = np.zeros((B, S, S), np.uint8)
    for b in range(B):
        for lo in (36, 42):
            pts = uv[b, lo:lo + 6].numpy().astype(np.float64)
            c = pts.mean(0)
            pts = c + (pts - c) * np.array([1.5, 1.5])
            cv2.fillPoly(out[b], [np.round((pts - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        out[b] = cv2.dilate(out[b], kernel)
    return torch.as_tensor(out, dtype=torch.float32)[:, None].to(R_w2c.device)


def render_fit(result: FitResult, gaze: torch.Tensor | None = None, head_pose: torch.Tensor | None = None,
               camera: dict | None = None, codes: dict | None = None, eye_mask: torch.Tensor | None = None,
               batch: int = 8, eye_code: np.ndarray | None = None, gaze_head: torch.Tensor | None = None,
               pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Render the fitted subject.

    Args:
        gaze: (B, 2) camera-frame (pitch, yaw) of the rendered view (as the labels), or None (the fitted gaze's
            eyeball direction, i.e. the same head-frame gaze, in whatever view is rendered).
        head_pose: (B, 2) ETH-XGaze head (pitch, yaw) seen by the camera (``models.camera_for_head_pose``).
        camera: {"R_w2c" (B,3,3), "t_w2c" (B,3), "K" (B,3,3)[, "eye_mask" (B,1,S,S)]} instead of the fitted camera.
        codes: {"shape_code" (B,Ds), "appearance_code" (B,Da)} instead of the fitted codes (interpolations).
        eye_mask: (B,1,S,S); default: the target's for the fitted view, else ``eye_mask_for_view`` (``eye_code``:
            the 43-d synthetic code for its eye landmarks, or the mean head).
        batch: images per forward.
        gaze_head: (B, 2) head-frame (eyeball) gaze instead of ``gaze``.
        pixels: (K,) row-major pixel indices: render only those (per-pixel models), as (B, 3, 1, K) strips.
    Returns:
        (B, 3, S, S) in [0, 1], or (B, 3, 1, K) with ``pixels``.
    """
    cam = camera or result.camera
    sizes = [x.shape[0] for x in (gaze, head_pose, gaze_head) if x is not None] + [cam["R_w2c"].shape[0]]
    if codes is not None:
        sizes.append(codes["shape_code"].shape[0])
    B = max(sizes)
    dev = result.shape_code.device

    def ex(x):
        return x.to(dev).expand(B, *x.shape[1:])

    R, t, K = ex(cam["R_w2c"]), ex(cam["t_w2c"]), ex(cam["K"])
    if head_pose is not None:
        R, t = camera_for_head_pose(R, t, ex(head_pose.float()))
    fitted_view = camera is None and head_pose is None
    if eye_mask is None and camera is not None and "eye_mask" in camera:
        eye_mask = camera["eye_mask"]
    if eye_mask is None:
        eye_mask = result.eye_mask if fitted_view else eye_mask_for_view(R, t, K, result.eye_mask.shape[-1], eye_code)
    eye_mask = ex(eye_mask)
    if gaze_head is not None:
        gaze_head = ex(gaze_head.float())
    elif gaze is None:  # the fitted eyeball direction, seen from this view
        gaze_head = ex(gaze_in_head_frame(result.gaze, result.R_w2c))
    else:
        gaze_head = gaze_in_head_frame(ex(gaze.float()), R)
    c = codes or result.codes
    shape, app = ex(c["shape_code"]), ex(c["appearance_code"])
    # the fit's fixed eyeball centres belong to its codes; other codes (interpolations) place their own
    centers = ex(result.eye_centers) if result.eye_centers is not None and codes is None else None
    images = []
    with eval_mode(result.model):
        for i in range(0, B, batch):
            s = slice(i, i + batch)
            px = None if pixels is None else pixels.to(dev).reshape(1, -1).expand(shape[s].shape[0], -1)
            out = result.model(shape[s], app[s], R[s], t[s], K[s], gaze_head=gaze_head[s], eye_mask=eye_mask[s],
                               pixels=px, eye_centers=None if centers is None else centers[s])
            images.append(out["image"].clamp(0, 1))
    return torch.cat(images)
