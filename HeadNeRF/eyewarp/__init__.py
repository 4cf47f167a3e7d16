"""Photoreal gaze redirection of ordinary photos: a model-based warp of the photo's own eye pixels.

``eyeball.py`` (eye model from the face analysis), ``model_eye.py`` (the synthetic heads' eyes fitted with
our head model: current gaze, centres, lid openings, catch-light), ``warp.py`` (the backward warp of one eye),
``redirect.py`` (targets -> images, refusals), ``outputs.py`` (the files FittingSingleImage.py writes).
See docs/photo_redirection.md.

May import: ``face``, ``geometry``, ``data`` (the synthetic head model for its eye geometry) and
``image_io`` (frame writers). Its synthetic measurement (exact readout against the generator) lives
above it, in ``evaluation/photo_warp.py``; ``fitting`` calls ``outputs.write_photo_redirection``.
"""

from .eyeball import HEAD_MODEL, HUMAN, EyeAnatomy, Eyeball, estimate_eyeballs
from .redirect import PhotoRedirection, RedirectConfig, changed_region, prepare, redirect

__all__ = ["HEAD_MODEL", "HUMAN", "EyeAnatomy", "Eyeball", "PhotoRedirection", "RedirectConfig", "changed_region",
           "estimate_eyeballs", "prepare", "redirect"]
