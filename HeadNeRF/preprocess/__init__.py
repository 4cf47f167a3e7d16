"""Preprocessing: ETH-XGaze files, GazeNeRF-format files and photo folders -> the processed layout.

``DataProcess/Gen_mask_lm_3DMM.py`` is the command; :func:`run` is what it calls. See
``docs/preprocessing.md`` for the formats, the camera conventions and the decisions.

Modules: ``readers`` (input formats, detection), ``cameras`` (input cameras -> our head frame),
``subject`` (one subject -> rows), ``split`` (split.json), ``runner`` (selection, resume, workers,
summary), ``fixtures`` (small inputs of every format for tests and benchmarks).

May import: ``data`` (layout, writers, the synthetic head for fixtures), ``face``, ``geometry``,
``atomic_io``, ``run_lock``. Nothing imports ``preprocess`` but the command and its tests.
"""

from .readers import FORMATS, InputError, detect_format, list_subjects
from .runner import PreprocessConfig, RunSummary, run

__all__ = ["FORMATS", "InputError", "PreprocessConfig", "RunSummary", "detect_format", "list_subjects", "run"]
