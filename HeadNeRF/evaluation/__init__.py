"""Gaze-redirection evaluation: the GazeNeRF protocol, reproducible and resumable.

Modules (one idea each):

* ``base``: the floor: ``EvaluationError`` and the names of what is scored (``candidates``);
* ``config``: the typed YAML config (``EvalConfig``; ``fit`` holds ``fitting.FitConfig`` fields);
* ``pairs``: deterministic input -> target pairs per test subject (or a pairs file);
* ``metrics``: SSIM/PSNR/L1 (torchmetrics), LPIPS (lpips), FID (torchmetrics), dlib identity, angles;
* ``protocol``: fit each input once per regime (``fitting.fit_image``), render at the target's
  gaze and camera (``fitting.render_fit``), score against the target and the baselines (copy the
  input, no redirection, the floor, identity references);
* ``readout``: the exact gaze readout of synthetic rows (the generator re-rendered at candidate gazes);
* ``guards``: no evaluated subject in either model's training set, the run key's code version and
  dataset content, the results-dir lock;
* ``controllability``: requested-gaze grid vs the estimator's and the readout's reading, beside the
  ignore-the-request references (no target image needed);
* ``report``: the resumable ``per_pair.jsonl``, aggregation, ``report.md`` and figures;
* ``run``: ``evaluate(cfg)``, what ``Evaluation.py`` calls.

Inside the package the arrows go down: ``run`` -> ``controllability`` -> ``protocol`` ->
``guards``/``pairs``/``readout``/``metrics``/``config``; ``report`` and ``guards`` -> ``base``. The package may import
``fitting`` (lazily: fitting's ground-truth check imports ``readout``), ``estimator``, ``data``,
``geometry``, ``checkpoint``, ``config``, ``metrics``, ``atomic_io``, ``run_lock``.

Usage::

    from HeadNeRF.evaluation import load_eval_config, evaluate
    result = evaluate(load_eval_config("config/quickstart_evaluation.yml"))
"""

from .config import ControllabilityConfig, EvalConfig, MetricsConfig, load_eval_config
from .pairs import Pair, PairsError, generate_pairs, load_pairs_file
from .base import EvaluationError
from .run import evaluate

__all__ = [
           "ControllabilityConfig",
           "EvalConfig",
           "EvaluationError",
           "MetricsConfig",
           "Pair",
           "PairsError",
           "evaluate",
           "generate_pairs",
           "load_eval_config",
           "load_pairs_file",
]
