"""The gaze/head-pose estimator network, its checkpoint loader and the one inference call.

* :class:`GazeEstimator`: a torchvision ResNet (18/34/50) whose last layer outputs gaze and head
  pose ``(pitch, yaw)`` in radians, in the **normalised camera frame** of the processed layout
  (``face_gaze``, ``face_head_pose``), and the gaze in the head frame (OUTPUT_NAMES). The input
  is an RGB image in [0, 1]; the per-channel normalisation (mean/std) is part of the module
  (buffers), so callers never normalise themselves. With the **eye branch** it also finds the
  two eye centres, crops both eyes (``eyes.py``) and reads them with a small CNN whose features
  join the face features: at 64 px the ResNet alone barely resolves an iris.
* :func:`load_estimator`: run dir or ``.pt`` -> (model in eval mode, :class:`EstimatorInfo`);
  ``torch.load(weights_only=True)``; one-line :class:`~HeadNeRF.checkpoint.CheckpointError`.
* :func:`estimate`: images (B, 3, S, S) [+ optional landmarks] -> {"gaze": (B, 2), "head_pose": (B, 2), ...}.
  It refuses images whose size is not the training input size (never resizes silently).
"""

import dataclasses
import json
import os

import torch
import torchvision

from ..checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from ..config import ConfigError
from ..geometry.gaze import rotate_pitch_yaw
from .config import EstimatorModelConfig
from .eyes import crop_eyes, eye_centres_from_landmarks, normalised_to_pixels

__all__ = [
    "EYE_CENTRE_NAMES",
    "OUTPUT_NAMES",
    "EyeCNN",
    "EstimatorInfo",
    "GazeEstimator",
    "build_estimator",
    "compose_gaze",
    "estimate",
    "eye_branch_spec",
    "load_estimator",
    "load_pretrained",
    "normalised_head_rotation",
]

# gaze and head pose in the normalised camera frame, then the eyeball's rotation in the head frame
# (the gaze relative to the head: an auxiliary target that no head-pose reading can satisfy, so the
# network must look at the eyes; see docs/estimator.md)
OUTPUT_NAMES = ("gaze_pitch", "gaze_yaw", "head_pitch", "head_yaw", "eye_pitch", "eye_yaw")
# with the eye branch, four more columns: the two eye centres it found (normalised image units, eyes.py)
EYE_CENTRE_NAMES = ("eye0_x", "eye0_y", "eye1_x", "eye1_y")
_RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}


def normalised_head_rotation(head_pose: torch.Tensor) -> torch.Tensor:
    """(..., 2) head (pitch, yaw) -> (..., 3, 3) head->camera rotation of a **normalised** camera.

    ETH-XGaze normalisation turns the camera so that the head's x axis has no y component
    (zero roll), so the rotation is fixed by the head pose alone: third column
    ``(cos p sin y, sin p, cos p cos y)`` (the inverse of ``head_pose_from_rotation``), first
    column ``(cos y, 0, -sin y)``. On the layout's rows it equals ``cam_R_w2c`` to 1e-7.
    """
    pitch, yaw = head_pose.unbind(-1)
    z = torch.stack((pitch.cos() * yaw.sin(), pitch.sin(), pitch.cos() * yaw.cos()), -1)
    x = torch.stack((yaw.cos(), torch.zeros_like(yaw), -yaw.sin()), -1)
    return torch.stack((x, torch.linalg.cross(z, x), z), -1)


def compose_gaze(head_pose: torch.Tensor, eye_in_head: torch.Tensor) -> torch.Tensor:
    """(B, 2) head pose and (B, 2) gaze in the head frame -> (B, 2) gaze in the normalised camera frame."""
    return rotate_pitch_yaw(eye_in_head, normalised_head_rotation(head_pose))


def _conv_bn(cin: int, cout: int, stride: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout),
                               torch.nn.ReLU(inplace=True))


class EyeCNN(torch.nn.Module):
    """Small CNN for one eye crop: (N, 3, h, w) -> (N, 2 * channels) (global average of the last stage)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = int(channels)
        self.layers = torch.nn.Sequential(
            _conv_bn(3, c // 2, 1), _conv_bn(c // 2, c, 2), _conv_bn(c, c, 1),  # h/2
            _conv_bn(c, c, 2), _conv_bn(c, c, 1),  # h/4
            _conv_bn(c, 2 * c, 2), _conv_bn(2 * c, 2 * c, 1))  # h/8
        self.out_features = 2 * c

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.layers(crops).mean(dim=(2, 3))


class GazeEstimator(torch.nn.Module):
    """ResNet regressor, optionally with an eye branch.

    ``forward(images (B, 3, S, S) in [0, 1], eye_centres=None) -> (B, num_outputs)`` radians
    (OUTPUT_NAMES), followed, with the eye branch, by the 4 eye-centre columns (EYE_CENTRE_NAMES).

    Eye branch: the ResNet's pooled features also regress the two eye centres; both eyes are
    cropped (``eyes.crop_eyes``) at ``eye_centres`` (B, 2, 2) normalised units where given and
    finite, else at the network's own (detached) estimate; a small CNN reads the crops and its
    features join the face features before the last layer.

    ``compose_gaze``: the gaze output is not read directly but composed from the head pose and
    the eye-in-head outputs (:func:`compose_gaze`, exact for normalised images): the gaze is then
    only as wrong as those two readings, and every gaze gradient reaches the eye reading.
    """

    def __init__(self, depth: int = 18, input_size: int = 64, stem: str = "no_maxpool",
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_outputs: int = len(OUTPUT_NAMES),
                 eye_branch: dict | None = None, compose_gaze: bool = False):
        super().__init__()
        if compose_gaze and num_outputs < 6:
            raise ValueError("compose_gaze needs the eye-in-head outputs (6 outputs)")
        self.compose_gaze = bool(compose_gaze)
        self.depth, self.input_size, self.stem = int(depth), int(input_size), stem
        self.num_outputs = int(num_outputs)
        net = _RESNETS[self.depth](weights=None)
        if stem == "small":
            net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        elif stem == "no_maxpool":
            net.maxpool = torch.nn.Identity()
        features = net.fc.in_features
        self.eye_branch = dict(eye_branch) if eye_branch else None
        if self.eye_branch is None:
            net.fc = torch.nn.Linear(features, num_outputs)
            head = net.fc
        else:
            net.fc = torch.nn.Identity()
            self.centre_head = torch.nn.Linear(features, len(EYE_CENTRE_NAMES))
            torch.nn.init.zeros_(self.centre_head.weight)
            with torch.no_grad():  # start at typical eye positions of a normalised face (set_centre_prior refines)
                self.centre_head.bias.copy_(torch.tensor([-0.2, -0.15, 0.2, -0.15]))
            self.eye_cnn = EyeCNN(int(self.eye_branch["channels"]))
            head = self.head = torch.nn.Linear(features + 2 * self.eye_cnn.out_features, num_outputs)
        torch.nn.init.zeros_(head.bias)
        torch.nn.init.normal_(head.weight, std=0.01)  # start near the zero (frontal) prediction
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def crop_hw(self) -> tuple:
        return int(self.eye_branch["crop_height"]), int(self.eye_branch["crop_width"])

    def set_centre_prior(self, centres: torch.Tensor) -> None:
        """Start the eye-centre regressor at the mean of ``centres`` (N, 2, 2) normalised (NaN rows ignored)."""
        ok = torch.isfinite(centres).flatten(1).all(1)
        if self.eye_branch is not None and ok.any():
            with torch.no_grad():
                self.centre_head.bias.copy_(centres[ok].mean(0).flatten())

    def forward(self, images: torch.Tensor, eye_centres: torch.Tensor | None = None) -> torch.Tensor:
        out = self._forward(images, eye_centres)
        if self.compose_gaze:
            out = torch.cat((compose_gaze(out[:, 2:4], out[:, 4:6]), out[:, 2:]), 1)
        return out

    def _forward(self, images: torch.Tensor, eye_centres: torch.Tensor | None) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.eye_branch is None:
            return self.net(x)
        feats = self.net(x)
        found = self.centre_head(feats)  # (B, 4)
        centres = found.detach().view(-1, 2, 2)
        if eye_centres is not None:
            given = eye_centres.to(centres)
            centres = torch.where(torch.isfinite(given).all(-1, keepdim=True).all(-2, keepdim=True), given, centres)
        crops = crop_eyes(x, centres, float(self.eye_branch["box_width"]), self.crop_hw)  # (B, 2, 3, h, w)
        eyes = self.eye_cnn(crops.flatten(0, 1)).reshape(len(x), -1)
        return torch.cat((self.head(torch.cat((feats, eyes), 1)), found), 1)


def eye_branch_spec(cfg: EstimatorModelConfig) -> dict | None:
    """The eye branch's settings as stored in checkpoints (None without an eye branch)."""
    if not cfg.eye_branch:
        return None
    return {"crop_height": cfg.eye_crop_height, "crop_width": cfg.eye_crop_width, "box_width": cfg.eye_box_width,
            "channels": cfg.eye_channels}


def build_estimator(cfg: EstimatorModelConfig, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> GazeEstimator:
    """A fresh estimator for ``cfg`` (ImageNet weights from ``cfg.pretrained_path`` when set)."""
    model = GazeEstimator(cfg.depth, cfg.input_size, cfg.stem, mean, std, eye_branch=eye_branch_spec(cfg),
                          compose_gaze=cfg.compose_gaze)
    if cfg.pretrained_path:
        load_pretrained(model, cfg.pretrained_path)
    return model


def load_pretrained(model: GazeEstimator, path: str) -> list:
    """Copy a torchvision ImageNet ResNet state_dict into ``model.net`` (fc and mismatched conv1 skipped).

    Returns the names of the skipped tensors. Raises ConfigError (one line) for a missing or
    unreadable file or a state_dict of another depth.
    """
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
    train_subjects: list | None = None  # subject ids it trained on (None: an old checkpoint that did not record them)
    eye_branch: dict | None = None  # the eye branch's settings (None: face image only)


def load_estimator(path: str, device="cpu") -> tuple[GazeEstimator, EstimatorInfo]:
    """Load an estimator checkpoint (a run dir or a ``.pt`` file) for inference.

    Returns (model in eval mode on ``device``, info). Raises CheckpointError (one line) for a
    missing file, an unreadable one, or a checkpoint that is not an estimator's.
    """
    state = load_checkpoint(path)
    file = checkpoint_path(path)
    meta = state.get("estimator")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: not a gaze-estimator checkpoint (no 'estimator' entry; a NeRF checkpoint?); "
                              "train one with train_gaze_estimator.py")
    try:
        model = GazeEstimator(meta["depth"], meta["input_size"], meta["stem"], meta["mean"], meta["std"],
                              len(meta.get("outputs", OUTPUT_NAMES)), eye_branch=meta.get("eye_branch"),
                              compose_gaze=bool(meta.get("compose_gaze", False)))
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
                         steps=int(state["config"].get("steps", 0)), path=file, report=report,
                         train_subjects=[int(s) for s in meta["train_subjects"]] if "train_subjects" in meta else None,
                         eye_branch=meta.get("eye_branch"))
    return model.to(device).eval(), info


@torch.no_grad()
def estimate(model: GazeEstimator, images: torch.Tensor, batch_size: int = 256, landmarks: torch.Tensor | None = None) -> dict:
    """Gaze and head pose of face images in the normalised camera frame.

    Args:
        images: (B, 3, S, S) float RGB in [0, 1], S == model.input_size, on the model's device.
        landmarks: optional (B, 68, 2) iBUG landmarks in pixels of these images: an eye-branch
            estimator then crops the eyes around them; without them (a render) it crops where its
            own eye-centre regressor finds the eyes. Ignored by estimators without an eye branch.
    Returns:
        {"gaze": (B, 2), "head_pose": (B, 2)} (pitch, yaw) radians, normalised camera frame; for
        estimators with the auxiliary output, "eye_in_head" (B, 2): the gaze in the head frame; with
        the eye branch, "eye_centres" (B, 2, 2): the eye centres it found, pixels (x, y), [image-left, image-right].
    Raises:
        ValueError: one line, for a wrong shape or an input size other than the training one.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"estimate() expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h != model.input_size or w != model.input_size:
        got = f"{h} px" if h == w else f"{h}x{w} px"
        raise ValueError(f"estimator was trained on {model.input_size} px images, got {got}")
    centres = None
    if landmarks is not None and model.eye_branch is not None:
        if landmarks.shape[0] != images.shape[0]:
            raise ValueError(f"estimate(): {landmarks.shape[0]} landmark sets for {images.shape[0]} images")
        centres = eye_centres_from_landmarks(landmarks, model.input_size).to(images.device)
    width = model.num_outputs + (len(EYE_CENTRE_NAMES) if model.eye_branch is not None else 0)
    was_training = model.training
    model.eval()
    try:
        out = torch.cat([model(images[i:i + batch_size].float()) if centres is None else
                         model(images[i:i + batch_size].float(), centres[i:i + batch_size])
                         for i in range(0, len(images), batch_size)]) if len(images) else images.new_zeros(0, width)
    finally:
        model.train(was_training)
    result = {"gaze": out[:, :2], "head_pose": out[:, 2:4]}
    if model.num_outputs >= 6:
        result["eye_in_head"] = out[:, 4:6]
    if model.eye_branch is not None:
        result["eye_centres"] = normalised_to_pixels(out[:, model.num_outputs:model.num_outputs + 4].view(-1, 2, 2),
                                                     model.input_size)
    return result
