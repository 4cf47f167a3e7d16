"""The trained model a fit starts from: its checkpoint loaded frozen, and what it says about its data.

``load_trained_model(path)`` -> (model in eval mode, every parameter frozen; :class:`ModelInfo`).
Checkpoints older than the ``camera_convention`` / ``code_mean`` keys get them recomputed from the
training data named in their config, or the synthetic rig's defaults.
"""

import dataclasses

import torch

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import ConfigError, ModelConfig, from_dict
from ..data.dataset import GazeDataset
from ..data.statistics import data_metadata
from ..data.synthetic.head_model import CODE_SLICES
from ..models import build_model

__all__ = ["DEFAULT_CAMERA_CONVENTION", "SYNTHETIC_CODE_SLICES", "ModelInfo", "is_synthetic_layout",
           "load_trained_model"]

# The synthetic rig's normalisation (rig.FOCAL_PER_PIXEL, rig.NORMALIZED_DISTANCE): the fallback for checkpoints
# written before ``camera_convention`` was saved.
DEFAULT_CAMERA_CONVENTION = {"focal_factor": 2.05, "distance": 5.0}

SYNTHETIC_CODE_SLICES = {k: [int(a), int(b)] for k, (a, b) in CODE_SLICES.items()}


@dataclasses.dataclass
class ModelInfo:
    """What a checkpoint says about its model and its training data.

    ``code_mean`` is (D,) in ``code_slices`` order; ``metadata_source`` says where
    ``camera_convention`` / ``code_mean`` came from: "checkpoint", "dataset" (recomputed from the
    training data named in the config, for checkpoints older than these keys) or "defaults"
    (the synthetic rig's convention and a zero code).
    """

    path: str
    model_name: str
    model_cfg: dict
    image_size: int
    code_dims: tuple
    code_slices: dict
    camera_convention: dict
    code_mean: torch.Tensor
    metadata_source: str = "checkpoint"
    step: int = 0

    @property
    def code_dim(self) -> int:
        return int(sum(self.code_dims))


def is_synthetic_layout(code_slices: dict) -> bool:
    """True when the code layout is the synthetic head model's 43-d one (the face package fits that)."""
    return {k: list(v) for k, v in code_slices.items()} == SYNTHETIC_CODE_SLICES


def metadata_from_dataset(config: dict) -> dict | None:
    """camera_convention / code_mean recomputed from the training data of an older checkpoint, or None."""
    try:
        data = config.get("data", {})
        ds = GazeDataset(data["dataset_dir"], "train", subjects=data.get("subjects") or None)
        return data_metadata(ds)
    except Exception:  # noqa: BLE001 - missing, moved or unreadable data: fall back to the defaults
        return None


def model_config_of(state: dict, path: str, expect: dict | None) -> tuple[ModelConfig, dict]:
    """The checkpoint's validated ModelConfig and its raw dict; CheckpointError (one line) when it has none,
    it is invalid, or it differs from ``expect``."""
    raw = state["config"].get("model") if isinstance(state["config"], dict) else None
    if not isinstance(raw, dict) or "code_dims" not in state or "code_slices" not in state:
        raise CheckpointError(f"{path}: not a HeadNeRF training checkpoint (no model config / code_dims / code_slices)")
    try:
        cfg = from_dict(ModelConfig, raw)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: checkpoint model config is invalid ({exc})") from None
    if expect:
        diff = {k: (raw.get(k), v) for k, v in expect.items() if raw.get(k) != v}
        if diff:
            have = ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items())
            want = ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items())
            raise CheckpointError(f"{path}: checkpoint has {have}, expected {want}")
    return cfg, raw


def camera_convention_and_code_mean(state: dict, code_dim: int) -> tuple[dict, torch.Tensor, str]:
    """(camera_convention, code_mean, metadata_source): the checkpoint's own, else recomputed, else defaults."""
    conv, mean = state.get("camera_convention"), state.get("code_mean")
    if conv is not None and mean is not None:
        return conv, mean, "checkpoint"
    meta = metadata_from_dataset(state["config"])
    if meta is not None:
        return (conv if conv is not None else meta["camera_convention"],
                mean if mean is not None else meta["code_mean"], "dataset")
    return (conv if conv is not None else dict(DEFAULT_CAMERA_CONVENTION),
            mean if mean is not None else torch.zeros(code_dim), "defaults")


def load_trained_model(path: str, device="cpu", expect: dict | None = None):
    """Load a training checkpoint (a run dir or a .pt) with ``weights_only=True``.

    Args:
        path: ``runs/<x>`` (its ``checkpoints/last.pt``) or a checkpoint file.
        expect: optional model-config values the checkpoint must have (e.g. ``{"model_name":
            "HeadNeRF_Gaze", "image_size": 64}``); a mismatch is refused in one line.
    Returns:
        (model in eval mode with frozen parameters, ModelInfo).
    Raises:
        CheckpointError: one line (missing, unreadable, another kind of checkpoint, weights that do not
            fit their config, or a mismatch with ``expect``).
    """
    state = load_checkpoint(path)
    cfg, raw = model_config_of(state, path, expect)
    ds, da = (int(x) for x in state["code_dims"])
    model = build_model(cfg, ds, da)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the checkpoint's own {cfg.model_name} config "
                              f"({str(exc).splitlines()[0][:160]})") from None
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    slices = {k: [int(a), int(b)] for k, (a, b) in state["code_slices"].items()}
    conv, mean, source = camera_convention_and_code_mean(state, ds + da)
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    if mean.numel() != ds + da:
        raise CheckpointError(f"{path}: code_mean has {mean.numel()} values, the model takes {ds + da}")
    info = ModelInfo(path=path, model_name=cfg.model_name, model_cfg=dict(raw), image_size=cfg.image_size,
                     code_dims=(ds, da), code_slices=slices, camera_convention=dict(conv), code_mean=mean,
                     metadata_source=source, step=int(state.get("step", 0)))
    return model, info
