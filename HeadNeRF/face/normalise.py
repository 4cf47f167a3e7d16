"""ETH-XGaze-style normalisation of a photo into the training framing.

The real camera (K_image, pose from :func:`head_pose_pnp`) is rotated and zoomed so that it looks
at ``head_model.FACE_CENTER`` from ``distance`` head units with its x axis along the head's +x
(``geometry.cameras.normalized_camera_w2c``, the synthetic rig's normalised cameras), and given
``K = intrinsics_matrix(focal_factor * S, S)``. The image is warped by the homography

    W = K_n · diag(1, 1, distance / d) · R_n R^T · K_image^-1      (continuous pixel coordinates)

(d: distance of the face centre from the real camera), exact for points at the face centre's
depth, as in ETH-XGaze. cv2 works in pixel-index coordinates (centres at integers), so it gets
``T(-0.5) W T(+0.5)``. Landmarks are warped with W; the masks are computed on the patch itself
(so the eye-mask dilation is ``max(2, S // 40)`` like the synthetic masks). Large photos are
area-downsampled before the warp so the patch is not aliased.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from HeadNeRF.data.synthetic.head_model import FACE_CENTER
from HeadNeRF.geometry.cameras import intrinsics_matrix, normalized_camera_w2c
from HeadNeRF.geometry.gaze import head_pose_from_rotation

from .detect import FaceAnalysis, analyse_face, apply_homography
from .masks import face_masks
from .pose import default_intrinsics, head_pose_pnp

__all__ = ["NormalisedFace", "analyse_and_normalise", "normalise_face", "normalising_camera", "warp_for_cv2"]


@dataclasses.dataclass
class NormalisedFace:
    """One face in the layout's per-row terms, at size S (docs/data_format.md).

    face_patch (S, S, 3) uint8 RGB; mask, eye_mask, left_eye_mask, right_eye_mask (S, S) uint8 0/255;
    lm2d (68, 2) float32; iris2d (2, 2) float32 [subject's right, left]; cam_R_w2c (3, 3), cam_t_w2c (3,),
    cam_K (3, 3) float32 (head frame -> normalised camera); face_head_pose (2,) float32 (pitch, yaw);
    warp (3, 3) float64 image px -> patch px (continuous coordinates).
    Extras: analysis (FaceAnalysis in patch pixels), R_image, t_image (head frame -> real camera),
    K_image (3, 3).
    """

    face_patch: np.ndarray
    mask: np.ndarray
    eye_mask: np.ndarray
    left_eye_mask: np.ndarray
    right_eye_mask: np.ndarray
    lm2d: np.ndarray
    iris2d: np.ndarray
    cam_R_w2c: np.ndarray
    cam_t_w2c: np.ndarray
    cam_K: np.ndarray
    face_head_pose: np.ndarray
    warp: np.ndarray
    analysis: FaceAnalysis | None = None
    R_image: np.ndarray | None = None
    t_image: np.ndarray | None = None
    K_image: np.ndarray | None = None


def normalising_camera(R_w2c: np.ndarray, t_w2c: np.ndarray, K_image: np.ndarray, image_size: int,
                       focal_factor: float = 2.05, distance: float = 5.0):
    """The normalised camera of a real one and the image warp.

    Args: R_w2c (3, 3), t_w2c (3,): head frame -> real camera; K_image (3, 3); image_size S.
    Returns: R_n (3, 3), t_n (3,), K_n (3, 3) float64 and W (3, 3) float64 (image px -> patch px).
    """

    R = np.asarray(R_w2c, np.float64)
    t = np.asarray(t_w2c, np.float64).reshape(3)
    center = -R.T @ t
    fc = np.asarray(FACE_CENTER, np.float64)
    Rn, tn = normalized_camera_w2c(torch.tensor(center[None], dtype=torch.float64),
                                   torch.tensor(fc[None], dtype=torch.float64),
                                   torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), float(distance))
    Rn, tn = Rn[0].numpy(), tn[0].numpy()
    Kn = intrinsics_matrix(float(focal_factor) * image_size, image_size)[0].double().numpy()
    d = float(np.linalg.norm(R @ fc + t))
    W = Kn @ np.diag([1.0, 1.0, float(distance) / d]) @ (Rn @ R.T) @ np.linalg.inv(np.asarray(K_image, np.float64))
    return Rn, tn, Kn, W / W[2, 2]


def warp_for_cv2(W: np.ndarray) -> np.ndarray:
    """Continuous-coordinate homography -> the matrix cv2.warpPerspective expects (pixel indices)."""

    def T(s):
        return np.array([[1, 0, s], [0, 1, s], [0, 0, 1.0]])

    return T(-0.5) @ W @ T(0.5)


def _warp_image(image: np.ndarray, W: np.ndarray, size: int) -> np.ndarray:
    import cv2

    # local zoom at the patch centre (patch px per image px)
    Winv = np.linalg.inv(W)
    c = np.array([[size / 2, size / 2], [size / 2 + 1, size / 2], [size / 2, size / 2 + 1]])
    src = apply_homography(Winv, c).astype(np.float64)
    px = max(np.linalg.norm(src[1] - src[0]), np.linalg.norm(src[2] - src[0]))  # image px per patch px
    if px > 1.5:  # shrink the photo first (area filter), then warp at ~1.5 image px per patch px
        s = 1.5 / px
        h, w = image.shape[:2]
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        W = W @ np.diag([w / nw, h / nh, 1.0])
    return cv2.warpPerspective(image, warp_for_cv2(W), (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


def normalise_face(image_rgb: np.ndarray, analysis: FaceAnalysis, K_image: np.ndarray, image_size: int,
                   focal_factor: float = 2.05, distance: float = 5.0, code=None) -> NormalisedFace:
    """Normalise one analysed face into the training framing (see the module docstring).

    Args:
        image_rgb: (H, W, 3) uint8. analysis: its FaceAnalysis. K_image: (3, 3) intrinsics of the image.
        image_size: S. focal_factor, distance: the checkpoint's camera convention (K00/S, |t|).
        code: latent code whose 68 landmarks serve as PnP model points (default: None = dense PnP of
            the mesh against the mean head, see head_pose_pnp).
    """

    S = int(image_size)
    K_image = np.asarray(K_image, np.float64)
    R, t = head_pose_pnp(analysis.lm68, K_image, code=code, lm478=analysis.lm478 if code is None else None)
    Rn, tn, Kn, W = normalising_camera(R, t, K_image, S, focal_factor, distance)
    patch = _warp_image(np.asarray(image_rgb, np.uint8), W, S)
    a_patch = analysis.transformed(W)
    masks = face_masks(patch, a_patch, K=Kn, pose=(Rn, tn), patch_size=S, code=code)
    hp = head_pose_from_rotation(torch.tensor(Rn)).numpy()
    return NormalisedFace(
        face_patch=patch, mask=masks["mask"], eye_mask=masks["eye_mask"], left_eye_mask=masks["left_eye_mask"],
        right_eye_mask=masks["right_eye_mask"], lm2d=a_patch.lm68.astype(np.float32),
        iris2d=a_patch.iris2d.astype(np.float32), cam_R_w2c=Rn.astype(np.float32), cam_t_w2c=tn.astype(np.float32),
        cam_K=Kn.astype(np.float32), face_head_pose=hp.astype(np.float32), warp=W, analysis=a_patch,
        R_image=R, t_image=t, K_image=K_image,
    )


def analyse_and_normalise(image_rgb: np.ndarray, image_size: int, K_image=None, face_index=None, name: str = "image",
                          focal_factor: float = 2.05, distance: float = 5.0):
    """Photo -> (NormalisedFace, FaceAnalysis). K_image defaults to ``default_intrinsics``.
    Raises NoFaceError when there is no face."""
    analysis = analyse_face(image_rgb, face_index=face_index, name=name)
    H, W = np.asarray(image_rgb).shape[:2]
    K = default_intrinsics(H, W) if K_image is None else K_image
    return normalise_face(image_rgb, analysis, K, image_size, focal_factor, distance), analysis
