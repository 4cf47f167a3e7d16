"""The gaze/head-pose estimator network, its checkpoint loader and the one inference call.

* :class:`GazeEstimator`: a torchvision ResNet (18/34/50) whose last layer outputs 4 numbers,
  ``(gaze pitch, gaze yaw, head pitch, head yaw)`` in radians, in the **normalised camera
  frame** of the processed layout (``face_gaze``, ``face_head_pose``). The input is an RGB image
  in [0, 1]; the per-channel normalisation (mean/std) is part of the module (buffers), so
  callers never normalise themselves.
* :func:`load_estimator`: run dir or ``.pt`` -> (model in eval mode, :class:`EstimatorInfo`);
  ``torch.load(weights_only=True)``; one-line :class:`~HeadNeRF.checkpoint.CheckpointError`.
* :func:`estimate`: images (B, 3, S, S) -> {"gaze": (B, 2), "head_pose": (B, 2)}. It refuses
  images whose size is not the training input size (never resizes silently).
"""

import dataclasses

import torch
import torchvision

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import ConfigError
from .config import EstimatorModelConfig

__all__ = [
    "OUTPUT_NAMES",
    "EstimatorInfo",
    "GazeEstimator",
    "build_estimator",
    "estimate",
    "load_estimator",
    "load_pretrained",
]

# gaze and head pose in the normalised camera frame, then the eyeball's rotation in the head frame
# (the gaze relative to the head: an auxiliary target that no head-pose reading can satisfy, so the
# network must look at the eyes; see docs/estimator.md)
OUTPUT_NAMES = ("gaze_pitch", "gaze_yaw", "head_pitch", "head_yaw", "eye_pitch", "eye_yaw")
_RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}


class GazeEstimator(torch.nn.Module):
    """ResNet regressor. ``forward(images (B, 3, S, S) in [0, 1]) -> (B, num_outputs)`` radians (OUTPUT_NAMES)."""

    def __init__(self, depth: int = 18, input_size: int = 64, stem: str = "no_maxpool",
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_outputs: int = len(OUTPUT_NAMES)):
        super().__init__()
        self.depth, self.input_size, self.stem = int(depth), int(input_size), stem
        net = _RESNETS[self.depth](weights=None)
        if stem == "small":
            net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        elif stem == "no_maxpool":
            net.maxpool = torch.nn.Identity()
        net.fc = torch.nn.Linear(net.fc.in_features, num_outputs)
        torch.nn.init.zeros_(net.fc.bias)
        torch.nn.init.normal_(net.fc.weight, std=0.01)  # start near the zero (frontal) prediction
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def build_estimator(cfg: EstimatorModelConfig, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> GazeEstimator:
    """A fresh estimator for ``cfg`` (ImageNet weights from ``cfg.pretrained_path`` when set)."""
    model = GazeEstimator(cfg.depth, cfg.input_size, cfg.stem, mean, std)
    if cfg.pretrained_path:
        load_pretrained(model, cfg.pretrained_path)
    return model


def load_pretrained(model: GazeEstimator, path: str) -> list:
    """Copy a torchvision ImageNet ResNet state_dict into ``model.net`` (fc and mismatched conv1 skipped).

    Returns the names of the skipped tensors. Raises ConfigError (one line) for a missing or
    unreadable file or a state_dict of another depth.
    """
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"model.pretrained_path: {path} not found (ImageNet weights cannot be downloaded here: "
                          f"copy torchvision's resnet{model.depth} .pth there, or set pretrained_path: \"\")")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise ConfigError(f"model.pretrained_path: {path} is not a readable weights file "
                          f"({str(exc).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained_path: {path} does not hold a state_dict")
    own = model.net.state_dict()
    skipped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    loadable = {k: v for k, v in state.items() if k not in skipped}
    missing = [k for k in own if k not in loadable and not k.startswith("fc.") and not k.startswith("conv1.")]
    foreign = [k for k in skipped if not k.startswith("fc.") and not k.startswith("conv1.")]
    if missing or foreign:
        what = f"{len(missing)} tensors missing, e.g. {missing[0]}" if missing else \
            f"{len(foreign)} tensors it does not have, e.g. {foreign[0]}"
        raise ConfigError(f"model.pretrained_path: {path} does not fit a ResNet-{model.depth} ({what}); "
                          "use weights of the same depth")
    model.net.load_state_dict(loadable, strict=False)
    return skipped


@dataclasses.dataclass
class EstimatorInfo:
    """What a checkpoint says about its estimator."""

    input_size: int  # images given to estimate() must be input_size x input_size
    depth: int
    stem: str
    mean: list  # per-channel normalisation (already applied inside the model)
    std: list
    train_image_size: int  # stored image size of the training data (before resizing to input_size)
    dataset_dir: str
    step: int  # optimisation steps done
    steps: int  # steps the config asked for
    path: str  # the checkpoint file
    report: dict | None = None  # the run's report.json (held-out error) when it sits in the run dir


def load_estimator(path: str, device="cpu") -> tuple[GazeEstimator, EstimatorInfo]:
    """Load an estimator checkpoint (a run dir or a ``.pt`` file) for inference.

    Returns (model in eval mode on ``device``, info). Raises CheckpointError (one line) for a
    missing file, an unreadable one, or a checkpoint that is not an estimator's.
    """
    import json
    import os

    state = load_checkpoint(path)
    file = os.path.join(path, "checkpoints", "last.pt") if os.path.isdir(path) else path
    meta = state.get("estimator")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: not a gaze-estimator checkpoint (no 'estimator' entry; a NeRF checkpoint?); "
                              "train one with train_gaze_estimator.py")
    try:
        model = GazeEstimator(meta["depth"], meta["input_size"], meta["stem"], meta["mean"], meta["std"],
                              len(meta.get("outputs", OUTPUT_NAMES)))
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{file}: estimator weights do not load ({str(exc).splitlines()[0][:200]})") from None
    report = None
    report_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(file))), "report.json")
    if os.path.isfile(report_path):
        try:
            with open(report_path) as f:
                report = json.load(f)
        except ValueError:
            report = None
    info = EstimatorInfo(input_size=int(meta["input_size"]), depth=int(meta["depth"]), stem=str(meta["stem"]),
                         mean=list(meta["mean"]), std=list(meta["std"]),
                         train_image_size=int(meta.get("train_image_size", meta["input_size"])),
                         dataset_dir=str(meta.get("dataset_dir", "")), step=int(state.get("step", 0)),
                         steps=int(state["config"].get("steps", 0)), path=file, report=report)
    return model.to(device).eval(), info


@torch.no_grad()
def estimate(model: GazeEstimator, images: torch.Tensor, batch_size: int = 256) -> dict:
    """Gaze and head pose of face images in the normalised camera frame.

    Args:
        images: (B, 3, S, S) float RGB in [0, 1], S == model.input_size, on the model's device.
    Returns:
        {"gaze": (B, 2), "head_pose": (B, 2)} (pitch, yaw) radians, normalised camera frame, and, for
        estimators with the auxiliary output, "eye_in_head" (B, 2): the gaze in the head frame.
    Raises:
        ValueError: one line, for a wrong shape or an input size other than the training one.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"estimate() expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h != model.input_size or w != model.input_size:
        got = f"{h} px" if h == w else f"{h}x{w} px"
        raise ValueError(f"estimator was trained on {model.input_size} px images, got {got}")
    was_training = model.training
    model.eval()
    try:
        out = torch.cat([model(images[i:i + batch_size].float()) for i in range(0, len(images), batch_size)]) \
            if len(images) else images.new_zeros(0, model.net.fc.out_features)
    finally:
        model.train(was_training)
    result = {"gaze": out[:, :2], "head_pose": out[:, 2:4]}
    if out.shape[1] >= 6:
        result["eye_in_head"] = out[:, 4:6]
    return result
