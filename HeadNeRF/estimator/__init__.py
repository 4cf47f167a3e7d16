"""The gaze/head-pose estimator: a ResNet reading gaze and head pose off a face image.

Public API (used by the evaluation)::

    from HeadNeRF.estimator import load_estimator, estimate
    model, info = load_estimator("runs/gaze_estimator_quickstart")   # run dir or .pt
    out = estimate(model, images)   # images (B, 3, info.input_size, info.input_size) RGB in [0, 1]
    out["gaze"], out["head_pose"]   # (B, 2) (pitch, yaw) radians, normalised camera frame

Modules: ``config`` (typed YAML), ``model`` (network, loader, ``estimate``), ``data`` (labelled
rows, the synthetic set), ``augment`` (batch augmentation), ``train`` (loop and report).
``train_gaze_estimator.py`` is the command line. See docs/estimator.md.

May import: ``checkpoint``, ``config``, ``data``, ``geometry``, ``loop``. Nothing above it: the
evaluation and the photo fit import the estimator, never the other way round.
"""

from .config import (
           AugmentConfig,
           EstimatorConfig,
           EstimatorDataConfig,
           EstimatorModelConfig,
           SyntheticSetConfig,
)
from .data import LabelledFaces, make_estimator_dataset
from .model import (
           OUTPUT_NAMES,
           EstimatorInfo,
           GazeEstimator,
           build_estimator,
           estimate,
           load_estimator,
)
from .train import train_estimator

__all__ = [
           "OUTPUT_NAMES",
           "AugmentConfig",
           "EstimatorConfig",
           "EstimatorDataConfig",
           "EstimatorInfo",
           "EstimatorModelConfig",
           "GazeEstimator",
           "LabelledFaces",
           "SyntheticSetConfig",
           "build_estimator",
           "estimate",
           "load_estimator",
           "make_estimator_dataset",
           "train_estimator",
]
