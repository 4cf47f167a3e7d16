"""Typed evaluation config (``Evaluation.py --config_file_path config/*_evaluation.yml``).

Loaded with :func:`HeadNeRF.config.load_yaml`: unknown keys are an error naming the nearest
valid key, types are checked, and the cross-field rules live in ``__post_init__``. The
``fit`` mapping holds :class:`HeadNeRF.fitting.FitConfig` fields; it is validated against
that dataclass by :func:`load_eval_config` (same unknown-key rule), so a typo there fails
before anything runs.
"""

import dataclasses

from ..config import ConfigError, check_field, from_dict, load_yaml
from ..fitting import FitConfig

__all__ = ["CODE_INITS", "REGIMES", "ControllabilityConfig", "EvalConfig", "MetricsConfig", "fit_config_for", "load_eval_config"]

REGIMES = ("codes", "finetune")  # latent codes only | codes + network fine-tuning for finetune_steps
CONTROLLABILITY_VIEWS = ("frontal", "input")  # ControllabilityConfig.view
CODE_INITS = ("mean", "landmarks", "dataset")  # the fit's starting code: the checkpoint's mean code | fitted to the
# input row's landmarks (a photo's start) | the row's stored code


@dataclasses.dataclass
class MetricsConfig:
    """Which image metrics run and where their backbone weights are (nothing is downloaded)."""

    # LPIPS (lpips package): the linear heads ship with the package; the backbone's ImageNet weights
    # (a torchvision state dict: alexnet-owt-7be5be79.pth, vgg16-397923af.pth, squeezenet1_1-b8a52dc0.pth)
    # come from this path. Empty = LPIPS skipped, and the report says why.
    lpips_net: str = "alex"  # alex | vgg | squeeze
    lpips_weights: str = ""
    # FID (torchmetrics). fid_backbone "torch_fidelity": the standard FID Inception
    # (pt_inception-2015-12-05-6726825d.pth; needs the torch-fidelity package), comparable with
    # published FIDs. "torchvision": a torchvision inception_v3 state dict (ImageNet); the numbers
    # are then NOT comparable with published ones (the report says so). Empty path = FID skipped.
    fid_backbone: str = "torch_fidelity"
    fid_weights: str = ""
    identity: bool = True  # dlib 128-d face-embedding cosine x100 (face_recognition_models, offline)
    identity_size: int = 256  # images are upscaled to this size before dlib (its HOG detector needs ~80 px faces)
    whiten_background: bool = True  # set the target's non-head pixels to white (GazeNeRF scores on white)

    def __post_init__(self):
        check_field(self.lpips_net in ("alex", "vgg", "squeeze"), "metrics.lpips_net",
               f"must be alex, vgg or squeeze, got {self.lpips_net!r}")
        check_field(self.fid_backbone in ("torch_fidelity", "torchvision"), "metrics.fid_backbone",
               f"must be torch_fidelity or torchvision, got {self.fid_backbone!r}")
        check_field(self.identity_size >= 32, "metrics.identity_size", f"must be >= 32, got {self.identity_size}")


@dataclasses.dataclass
class ControllabilityConfig:
    """Render each input at a pitch x yaw grid of requested gazes; the estimator reads them back."""

    enabled: bool = True
    inputs_per_subject: int = 2  # the first inputs of each subject's pairs (their fits are reused)
    pitch_range: list = dataclasses.field(default_factory=lambda: [-0.4, 0.4])  # radians, eye-in-head (head frame)
    yaw_range: list = dataclasses.field(default_factory=lambda: [-0.5, 0.5])
    resolution: list = dataclasses.field(default_factory=lambda: [5, 5])  # [pitch rows, yaw columns]
    # The camera the map is drawn in: "frontal" = the input's camera turned about the head to see it at head pose
    # (0, 0), both eyes in full view (the map measures the eyes, not the view); "input" = the input's own camera,
    # which for a near-profile input shows one eye a few pixels wide (the redirection pairs cover such views).
    view: str = "frontal"

    def __post_init__(self):
        check_field(self.inputs_per_subject >= 1, "controllability.inputs_per_subject", "must be >= 1")
        check_field(self.view in CONTROLLABILITY_VIEWS, "controllability.view",
                    f"must be one of {list(CONTROLLABILITY_VIEWS)}, got {self.view!r}")
        for k in ("pitch_range", "yaw_range"):
            v = getattr(self, k)
            check_field(len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                   and v[0] <= v[1], f"controllability.{k}", f"must be [low, high] in radians, got {v}")
            check_field(max(abs(float(x)) for x in v) < 1.5, f"controllability.{k}", f"must lie within ±1.5 rad, got {v}")
        r = self.resolution
        check_field(len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in r),
               "controllability.resolution", f"must be [rows, columns] of positive integers, got {r}")


@dataclasses.dataclass
class EvalConfig:
    """One evaluation run. Paths are relative to the working directory."""

    checkpoint: str = "runs/quickstart"  # NeRF run dir (its checkpoints/last.pt) or a .pt file
    # estimator run dir or .pt (train_gaze_estimator.py). "" = none: allowed on synthetic data with labels only, where
    # the exact gaze readout measures gaze (the estimator-based gaze/head columns are then empty).
    estimator_checkpoint: str = "runs/gaze_estimator_quickstart"
    dataset_dir: str = "data/synthetic"
    subjects: list = dataclasses.field(default_factory=list)  # subject ids to evaluate; empty = split.json's test_subjects
    results_dir: str = "runs/evaluation"
    # Pairs: from a file ("subject input_row target_row" per line, rows of subjectXXXX.h5), or drawn
    # deterministically from `seed` (GazeNeRF: 100 pairs per subject, one target per input).
    pairs_file: str = ""
    pairs_per_subject: int = 100
    inputs_per_subject: int = 0  # distinct inputs the pairs share (each is fitted once); 0 = one input per pair
    same_camera: bool = False  # targets from the input's camera only (gaze redirection without head-pose change)
    seed: int = 0  # pairs and per-input fitting seeds derive from it
    regimes: list = dataclasses.field(default_factory=lambda: list(REGIMES))
    # Where each input's fit starts: "mean" = the checkpoint's mean code; "landmarks" = the shape code fitted to
    # the input row's 68 landmarks (as FittingSingleImage.py starts a photo; synthetic 43-d layout only) with the
    # mean appearance; "dataset" = the row's stored latent code. On synthetic data that code is the generator's, shared with the
    # target row of the same subject: privileged information a photo never has (the report says so).
    code_init: str = "mean"
    finetune_steps: int = 75  # network fine-tuning steps of the "finetune" regime (GazeNeRF's README: 75)
    fit: dict = dataclasses.field(default_factory=dict)  # HeadNeRF.fitting.FitConfig fields (not finetune_steps)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    controllability: ControllabilityConfig = dataclasses.field(default_factory=ControllabilityConfig)
    grid_pairs: int = 8  # pairs shown in grid.png (input | target | render per regime)
    device: str = "cpu"
    num_threads: int = 0  # torch CPU threads; 0 = torch's default. Results are reproducible for a fixed value.

    def __post_init__(self):
        for k in ("checkpoint", "dataset_dir", "results_dir"):
            check_field(bool(getattr(self, k)), k, "must not be empty")
        check_field(self.pairs_per_subject >= 1, "pairs_per_subject", f"must be >= 1, got {self.pairs_per_subject}")
        check_field(self.inputs_per_subject >= 0, "inputs_per_subject", "must be >= 0 (0 = one input per pair)")
        check_field(bool(self.regimes) and all(r in REGIMES for r in self.regimes) and len(set(self.regimes)) == len(self.regimes),
               "regimes", f"must be a non-empty subset of {list(REGIMES)}, got {self.regimes}")
        check_field(self.code_init in CODE_INITS, "code_init", f"must be one of {list(CODE_INITS)}, got {self.code_init!r}")
        check_field(self.finetune_steps >= 1 or "finetune" not in self.regimes, "finetune_steps",
               "must be >= 1 when the 'finetune' regime is on")
        check_field(all(isinstance(s, int) and not isinstance(s, bool) for s in self.subjects), "subjects",
               f"must be a list of integer subject ids, got {self.subjects}")
        check_field("finetune_steps" not in self.fit, "fit.finetune_steps",
               "set the top-level finetune_steps instead (the 'codes' regime uses 0, 'finetune' uses finetune_steps)")
        check_field(self.grid_pairs >= 0, "grid_pairs", "must be >= 0")
        check_field(self.num_threads >= 0, "num_threads", "must be >= 0")
        check_field(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"), "device", f"cpu or cuda, got {self.device!r}")


def fit_config_for(cfg: EvalConfig, regime: str, seed: int):
    """The FitConfig of one regime, with a per-input seed (``fit`` fields + finetune steps + seed)."""

    raw = dict(cfg.fit)
    raw["finetune_steps"] = cfg.finetune_steps if regime == "finetune" else 0
    raw["seed"] = int(seed)
    return from_dict(FitConfig, raw, prefix="fit.")


def load_eval_config(path: str) -> EvalConfig:
    """Load and validate a YAML evaluation config, including its ``fit`` block.

    Raises:
        ConfigError: one line naming the file and the offending key.
    """
    cfg = load_yaml(path, EvalConfig)
    try:
        fit_config_for(cfg, "finetune", cfg.seed)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg
