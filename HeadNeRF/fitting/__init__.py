"""Fitting a trained model to one image (a dataset row or a photo), and the photo command built on it.

Owns: loading a trained model for fitting (``model_io``), what a fit fits (``targets``), the fit's
settings (``config``: ``FitConfig``, ``PhotoFitConfig``), the fit itself (``fit``: ``fit_image`` as a
loop of ``fit_step``), its outcome (``result``) and rendering it anew (``render``), and the photo
command (``single_image``) with its inputs (``inputs``), frames (``sweeps``) and output folder
(``outputs``).

Flow::

    load_trained_model(ckpt)                      -> model (frozen, eval), ModelInfo
    target_from_dataset_row(ds, i) | target_from_normalised_face(face, code, info) -> FitTarget
    fit_image(model, target, FitConfig)           -> FitResult
    render_fit(result, gaze=..., head_pose=..., camera=...) -> images

May import: the floors (``config``, ``checkpoint``, ``atomic_io``, ``image_io``, ``run_lock``, ``loop``,
``metrics``, ``losses``, ``geometry``, ``rendering``, ``data``), ``models``, and for the photo command
``face``, ``eyewarp`` and ``estimator``. Never ``training`` or ``evaluation`` (evaluation stands on
this package: its exact-render measurement of a fit is ``evaluation.exact_render.ground_truth_quality``).
"""

from ..data.codes import join_code, split_code
from .config import FitConfig, PhotoFitConfig, load_photo_fit_config
from .fit import fit_image, fit_step
from .inputs import FittingInputError, load_code_file, load_target_embedding, parse_gaze_targets
from .model_io import (
    DEFAULT_CAMERA_CONVENTION,
    SYNTHETIC_CODE_SLICES,
    ModelInfo,
    is_synthetic_layout,
    load_trained_model,
)
from .outputs import remove_stale_outputs, save_latent
from .render import eye_mask_for_view, render_fit
from .result import FitResult
from .single_image import PhotoUnusableError, fit_single_image
from .targets import FitTarget, TargetShapeError, target_from_dataset_row, target_from_normalised_face

__all__ = [
    "DEFAULT_CAMERA_CONVENTION",
    "SYNTHETIC_CODE_SLICES",
    "FitConfig",
    "FitResult",
    "FitTarget",
    "FittingInputError",
    "ModelInfo",
    "PhotoFitConfig",
    "PhotoUnusableError",
    "TargetShapeError",
    "eye_mask_for_view",
    "fit_image",
    "fit_single_image",
    "fit_step",
    "is_synthetic_layout",
    "join_code",
    "load_code_file",
    "load_photo_fit_config",
    "load_target_embedding",
    "load_trained_model",
    "parse_gaze_targets",
    "remove_stale_outputs",
    "render_fit",
    "save_latent",
    "split_code",
    "target_from_dataset_row",
    "target_from_normalised_face",
]
