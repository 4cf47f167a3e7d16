"""Face analysis shared by preprocessing (issue 9) and single-photo fitting (issue 10).

Photo -> :func:`load_image_rgb` -> :func:`analyse_face` (mediapipe 478 points, iBUG-68, iris) ->
:func:`head_pose_pnp` (PnP against the synthetic head model's landmarks) -> :func:`normalise_face`
(ETH-XGaze-style warp into the training framing, masks) -> :func:`fit_latent_codes` (the "3DMM"
step: the synthetic head model's code). Design and accuracy: docs/face_analysis.md.

May import: ``data`` (the synthetic head model: its landmarks and renders), ``geometry``,
``atomic_io``; mediapipe, dlib and cv2 are imported lazily where used. Nothing above it
(``preprocess``, the photo fit and ``eyewarp`` import ``face``).
"""

from .detect import FaceAnalysis, analyse_face, close  # noqa: F401
from .errors import FaceIndexError, ImageReadError, NoFaceError
from .image_io import load_image_rgb
from .masks import face_masks
from .normalise import NormalisedFace, analyse_and_normalise, normalise_face
from .pose import default_intrinsics, head_pose_pnp
from .latent_fit import fit_latent_codes

__all__ = [
    "FaceAnalysis",
    "ImageReadError",
    "FaceIndexError",
    "NoFaceError",
    "NormalisedFace",
    "analyse_and_normalise",
    "analyse_face",
    "default_intrinsics",
    "face_masks",
    "fit_latent_codes",
    "head_pose_pnp",
    "load_image_rgb",
    "normalise_face",
]

