"""Fit a trained model to one image: latent codes, a camera refinement, optionally the network.

One module shared by ``FittingSingleImage.py`` (a photo) and evaluation (a dataset row).

Flow::

    load_trained_model(ckpt)                      -> model (frozen, eval), ModelInfo
    target_from_dataset_row(ds, i) | target_from_normalised_face(face, code, info) -> FitTarget
    fit_image(model, target, FitConfig)           -> FitResult
    render_fit(result, gaze=..., head_pose=..., camera=...) -> images

**Stage "codes"** optimises offsets of the shape and appearance codes, a camera refinement
(axis-angle ``w`` and translation ``dt``: ``R' = exp(w) R``, ``t' = exp(w) t + dt``, as
``training.PerImageOffsets``) and, when the target's gaze is unknown (a photo), the gaze
itself, against the masked photometric loss of ``losses.py`` (head MSE, non-head white, extra
eye weight, VGG when weights are given) plus small L2 penalties on the offsets. The network is
frozen. Per-pixel models (``model.renders_pixel_subsets``) render ``rays_per_step`` random
pixels per step (eye pixels likelier), others whole images. The learning rates decay as
``0.1^(step/steps)``; the stage stops early when the smoothed loss has not improved by
``early_stop_delta`` (relative) for ``early_stop_patience`` steps.

**Stage "finetune"** (``finetune_steps > 0``, GazeNeRF's per-subject fine-tuning) trains a
deep copy of the network together with the offsets. **The gaze pathway is kept able to move
the eyes**: the gaze-only parameters (HeadNeRF_Gaze's gaze MLP, GazeNeRF's eye stream) are
frozen, and the photometric loss ignores the eye region (``finetune_eye_weight = 0``), so the
gaze-independent trunk is never taught to paint this image's pupils at their current place
(which would leave "ghost" pupils when the gaze changes). The eyes therefore keep what the
frozen codes stage fitted; the rest of the head gains the fine-tuned detail.

Camera-frame vs head-frame gaze follows ``docs/conventions.md``: a FitTarget's ``gaze`` is in
the camera frame (like the labels) and is turned into the head frame with the target's
**unrefined** rotation, exactly as in training.
"""

import copy
import dataclasses
import math
import time

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint
from .data.codes import join_code, split_code
from .config import ConfigError, ModelConfig, from_dict
from .geometry.gaze import gaze_in_head_frame, head_pose_from_rotation, rotate_pitch_yaw
from .losses import VGGPerceptual, masked_error
from .metrics import masked_psnr
from .models import build_model, camera_for_head_pose, eval_mode

__all__ = [
    "DEFAULT_CAMERA_CONVENTION",
    "SYNTHETIC_CODE_SLICES",
    "FitConfig",
    "FitResult",
    "FitTarget",
    "ModelInfo",
    "eye_mask_for_view",
    "fit_image",
    "ground_truth_quality",
    "is_synthetic_layout",
    "join_code",
    "load_trained_model",
    "render_fit",
    "split_code",
    "target_from_dataset_row",
    "target_from_normalised_face",
]

# The synthetic rig's normalisation (rig.FOCAL_PER_PIXEL, rig.NORMALIZED_DISTANCE): the fallback for checkpoints
# written before ``camera_convention`` was saved.
DEFAULT_CAMERA_CONVENTION = {"focal_factor": 2.05, "distance": 5.0}


def _synthetic_slices() -> dict:
    from .data.synthetic.head_model import CODE_SLICES

    return {k: [int(a), int(b)] for k, (a, b) in CODE_SLICES.items()}


SYNTHETIC_CODE_SLICES = _synthetic_slices()


# ----------------------------------------------------------------------------------------------
# The model


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


def _metadata_from_dataset(config: dict) -> dict | None:
    """camera_convention / code_mean recomputed from the training data of an older checkpoint, or None."""
    try:
        from .data.dataset import GazeDataset
        from .data.statistics import data_metadata

        data = config.get("data", {})
        ds = GazeDataset(data["dataset_dir"], "train", subjects=data.get("subjects") or None)
        return data_metadata(ds)
    except Exception:  # noqa: BLE001 - missing, moved or unreadable data: fall back to the defaults
        return None


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
    source = "checkpoint"
    conv, mean = state.get("camera_convention"), state.get("code_mean")
    if conv is None or mean is None:
        meta = _metadata_from_dataset(state["config"])
        if meta is not None:
            source = "dataset"
            conv = conv if conv is not None else meta["camera_convention"]
            mean = mean if mean is not None else meta["code_mean"]
        else:
            source = "defaults"
            conv = conv if conv is not None else dict(DEFAULT_CAMERA_CONVENTION)
            mean = mean if mean is not None else torch.zeros(ds + da)
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    if mean.numel() != ds + da:
        raise CheckpointError(f"{path}: code_mean has {mean.numel()} values, the model takes {ds + da}")
    info = ModelInfo(path=path, model_name=cfg.model_name, model_cfg=dict(raw), image_size=cfg.image_size,
                     code_dims=(ds, da), code_slices=slices, camera_convention=dict(conv), code_mean=mean,
                     metadata_source=source, step=int(state.get("step", 0)))
    return model, info


# ----------------------------------------------------------------------------------------------
# What to fit


@dataclasses.dataclass
class FitTarget:
    """One image to fit, at the model's image size S (batch of 1).

    image (1,3,S,S) RGB [0,1]; head_mask, eye_mask (1,1,S,S) {0,1}; R_w2c (1,3,3), t_w2c (1,3),
    K (1,3,3) in pixels of S; shape_code (1,Ds), appearance_code (1,Da): the initial codes;
    gaze (1,2) camera-frame (pitch, yaw) (the label, or 0 when unknown: ``gaze_known=False``
    lets the fit estimate it); ``code_init`` names where the codes came from; ``warp`` (3,3) maps
    the original photo's pixels to the S-image (identity for dataset rows).
    """

    image: torch.Tensor
    head_mask: torch.Tensor
    eye_mask: torch.Tensor
    R_w2c: torch.Tensor
    t_w2c: torch.Tensor
    K: torch.Tensor
    shape_code: torch.Tensor
    appearance_code: torch.Tensor
    gaze: torch.Tensor
    gaze_known: bool = True
    code_init: str = "dataset"
    warp: torch.Tensor | None = None
    name: str = "image"

    def to(self, device) -> "FitTarget":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if torch.is_tensor(getattr(self, f.name))})


def target_from_dataset_row(dataset, index: int, code: torch.Tensor | None = None, code_init: str = "dataset"
                            ) -> FitTarget:
    """A FitTarget from ``GazeDataset`` item ``index`` (its label gaze; its stored code unless ``code (D,)`` is given)."""
    item = dataset[index]
    shape_code, app_code = item["shape_code"], item["appearance_code"]
    if code is not None:
        shape_code, app_code = split_code(torch.as_tensor(code, dtype=torch.float32), dataset.code_slices)
    sid, row = dataset.rows[index][:2]
    return FitTarget(image=item["image"][None], head_mask=item["head_mask"][None], eye_mask=item["eye_mask"][None],
                     R_w2c=item["R_w2c"][None], t_w2c=item["t_w2c"][None], K=item["K"][None],
                     shape_code=shape_code[None], appearance_code=app_code[None], gaze=item["gaze"][None],
                     gaze_known=True, code_init=code_init, warp=torch.eye(3),
                     name=f"subject{sid:04d}.h5:{row}")


def target_from_normalised_face(face, code, info: ModelInfo, name: str = "image", code_init: str = "face") -> FitTarget:
    """A FitTarget from a ``HeadNeRF.face.NormalisedFace`` (already at ``info.image_size``) and a (D,) code.

    The gaze is unknown (0, ``gaze_known=False``): the fit estimates it.
    """
    S = info.image_size
    patch = np.asarray(face.face_patch)
    if patch.shape[:2] != (S, S):
        raise ValueError(f"normalised face is {patch.shape[0]} px, the model needs {S} px")
    def f32(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    def mask(m):
        return (f32(m) >= 128).float()[None, None]

    code = f32(code).reshape(-1)
    shape_code, app_code = split_code(code, info.code_slices)
    return FitTarget(image=f32(patch).permute(2, 0, 1)[None] / 255.0, head_mask=mask(face.mask),
                     eye_mask=mask(face.eye_mask), R_w2c=f32(face.cam_R_w2c)[None], t_w2c=f32(face.cam_t_w2c)[None],
                     K=f32(face.cam_K)[None], shape_code=shape_code[None], appearance_code=app_code[None],
                     gaze=torch.zeros(1, 2), gaze_known=False, code_init=code_init, warp=f32(face.warp), name=name)


# ----------------------------------------------------------------------------------------------
# The fit


@dataclasses.dataclass
class FitConfig:
    """Settings of :func:`fit_image` (defaults: the quickstart model on a CPU within the command's 60 s)."""

    steps: int = 100  # codes stage, at most (early stop)
    rays_per_step: int = 512  # pixels per step for per-pixel models; 0 = whole images always
    eye_ray_weight: float = 4.0  # eye pixels are this many times likelier to be drawn
    lr_shape: float = 0.05
    lr_appearance: float = 0.05
    lr_camera: float = 0.003
    lr_gaze: float = 0.03
    fit_camera: bool = True
    fit_gaze: bool | None = None  # None: only when the target's gaze is unknown (photos)
    head: float = 1.0  # photometric weights, as LossConfig
    nonhead: float = 1.0
    eye: float = 3.0
    photometric: str = "mse"
    vgg: float = 0.0  # perceptual loss weight (needs vgg_weights_path; whole images)
    vgg_weights_path: str = ""
    code_reg: float = 1e-3  # weight of the mean square of the code offsets
    camera_reg: float = 1.0  # weight of the mean square of the camera refinement (rad, head units)
    gaze_reg: float = 0.02  # prior towards looking at the camera (photos: the gaze is a free parameter)
    early_stop_patience: int = 25
    early_stop_delta: float = 2e-3  # relative improvement of the smoothed loss that resets the patience
    finetune_steps: int = 0
    finetune_lr: float = 2e-3
    finetune_triplane_lr_scale: float = 10.0  # tri-plane features take larger steps, as in training
    finetune_eye_weight: float = 0.0  # photometric weight of the eye region while fine-tuning (see module doc)
    freeze_gaze_pathway: bool = True
    seed: int = 0

    def __post_init__(self):
        for k in ("steps", "rays_per_step", "finetune_steps", "early_stop_patience"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k}: must be >= 0, got {getattr(self, k)}")
        if self.vgg > 0 and not self.vgg_weights_path:
            raise ConfigError("vgg: the VGG loss needs vgg_weights_path (no weights ship offline)")
        if self.photometric not in ("mse", "l1"):
            raise ConfigError(f"photometric: mse or l1, got {self.photometric!r}")


@dataclasses.dataclass
class FitResult:
    """The fitted subject (batch of 1) and how the fit went.

    ``losses``: {stage: [loss per step]}; ``seconds``: {stage: s}; ``psnr_head``: dB of the final
    full-image render on the head mask (vs the target whitened outside it); ``model``: the
    fine-tuned copy, or the original model when ``finetune_steps == 0``.
    """

    shape_code: torch.Tensor
    appearance_code: torch.Tensor
    R_w2c: torch.Tensor
    t_w2c: torch.Tensor
    K: torch.Tensor
    gaze: torch.Tensor
    losses: dict
    psnr_head: float
    seconds: dict
    model: torch.nn.Module
    eye_mask: torch.Tensor
    camera_offset: torch.Tensor  # (6,) the refinement (axis-angle, translation)
    steps_run: dict = dataclasses.field(default_factory=dict)
    head_pose: torch.Tensor | None = None  # (2,) ETH-XGaze head (pitch, yaw) of the fitted camera
    render: torch.Tensor | None = None  # (1,3,S,S) the final render of the target view

    @property
    def camera(self) -> dict:
        return {"R_w2c": self.R_w2c, "t_w2c": self.t_w2c, "K": self.K}

    @property
    def codes(self) -> dict:
        return {"shape_code": self.shape_code, "appearance_code": self.appearance_code}


def _refined_camera(R, t, cam):
    from pytorch3d.transforms import axis_angle_to_matrix

    dR = axis_angle_to_matrix(cam[:, :3])
    return dR @ R, (dR @ t.unsqueeze(-1)).squeeze(-1) + cam[:, 3:]


def _gaze_param_modules(model) -> list:
    """The parameters that only the gaze pathway uses (frozen while fine-tuning)."""
    mods = [getattr(model, n) for n in ("gaze_mlp", "eye_stream") if hasattr(model, n)]
    return [p for m in mods for p in m.parameters()]


class _EarlyStop:
    def __init__(self, patience: int, delta: float):
        self.patience, self.delta, self.best, self.since, self.ema = patience, delta, math.inf, 0, None

    def __call__(self, value: float) -> bool:
        self.ema = value if self.ema is None else 0.9 * self.ema + 0.1 * value
        if self.ema < self.best * (1 - self.delta):
            self.best, self.since = self.ema, 0
        else:
            self.since += 1
        return self.patience > 0 and self.since >= self.patience


def _photometric(pred, tgt: dict, cfg: FitConfig, vgg, eye_weight: float, exclude_eyes: bool) -> dict:
    head, eye = tgt["head_mask"], tgt["eye_mask"]
    gt = tgt["image"] * head + (1.0 - head)
    head_pixels = head * (1.0 - eye) if exclude_eyes else head
    terms = {"head": cfg.head * masked_error(pred, gt, head_pixels, cfg.photometric),
             "nonhead": cfg.nonhead * masked_error(pred, torch.ones_like(pred), 1.0 - head, "mse")}
    if eye_weight > 0:
        terms["eye"] = eye_weight * masked_error(pred, gt, eye, cfg.photometric)
    if vgg is not None and pred.shape[-2] > 1:
        terms["vgg"] = cfg.vgg * vgg(pred * (1 - eye) + gt * eye if exclude_eyes else pred, gt)
    return terms


_MAX_BAD_STEPS = 5  # consecutive non-finite losses or gradients that end a fitting stage


def fit_image(model, target: FitTarget, cfg: FitConfig | None = None, progress: bool = True) -> FitResult:
    """Fit ``model`` to ``target`` (see the module docstring); ``model`` itself is never modified."""
    cfg = cfg or FitConfig()
    device = next(model.parameters()).device
    target = target.to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    vgg = VGGPerceptual(cfg.vgg_weights_path).to(device) if cfg.vgg > 0 else None
    per_pixel = model.renders_pixel_subsets and cfg.rays_per_step > 0 and vgg is None
    S = target.image.shape[-1]
    if per_pixel and cfg.rays_per_step >= S * S:
        per_pixel = False
    fit_gaze = (not target.gaze_known) if cfg.fit_gaze is None else cfg.fit_gaze
    d_shape = torch.zeros_like(target.shape_code, requires_grad=True)
    d_app = torch.zeros_like(target.appearance_code, requires_grad=True)
    cam = torch.zeros(1, 6, device=device, requires_grad=cfg.fit_camera)
    gaze = target.gaze.clone().requires_grad_(fit_gaze)
    maps = {"image": target.image, "head_mask": target.head_mask, "eye_mask": target.eye_mask}

    def forward(net, pixels):
        R, t = _refined_camera(target.R_w2c, target.t_w2c, cam) if cfg.fit_camera else (target.R_w2c, target.t_w2c)
        gaze_head = gaze_in_head_frame(gaze, target.R_w2c)
        out = net(target.shape_code + d_shape, target.appearance_code + d_app, R, t, target.K, gaze_head=gaze_head,
                  eye_mask=target.eye_mask, training=False, pixels=pixels)
        return out["image"]

    def run_stage(name, net, params_groups, steps, eye_weight, exclude_eyes, on_step=None):
        opt = torch.optim.Adam(params_groups)
        base = [g["lr"] for g in opt.param_groups]
        stop = _EarlyStop(cfg.early_stop_patience, cfg.early_stop_delta)
        history, bad_steps = [], 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"fit {name}", dynamic_ncols=True, leave=False)
        try:
            for it in range(steps):
                for g, lr in zip(opt.param_groups, base):
                    g["lr"] = lr * 0.1 ** (it / max(steps, 1))
                pixels = None
                tgt = maps
                if per_pixel:
                    from .rendering.pixels import gather_pixels, sample_pixels

                    pixels = sample_pixels(target.eye_mask, cfg.rays_per_step, cfg.eye_ray_weight, gen)
                    tgt = gather_pixels(maps, pixels)
                pred = forward(net, pixels)
                terms = _photometric(pred, tgt, cfg, vgg, eye_weight, exclude_eyes)
                terms["code_reg"] = cfg.code_reg * torch.cat((d_shape, d_app), -1).square().mean()
                if cfg.fit_camera:
                    terms["camera_reg"] = cfg.camera_reg * cam.square().mean()
                if fit_gaze:
                    terms["gaze_reg"] = cfg.gaze_reg * gaze.square().mean()
                loss = sum(terms.values())
                opt.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(loss))
                if finite:
                    loss.backward()
                    finite = all(bool(torch.isfinite(p.grad).all()) for g in opt.param_groups for p in g["params"]
                                 if p.grad is not None)
                if not finite:  # never let one bad step poison the codes: skip it, give up after a few in a row
                    bad_steps += 1
                    if bad_steps >= _MAX_BAD_STEPS:
                        break
                    continue
                bad_steps = 0
                opt.step()
                if on_step is not None:
                    on_step()
                history.append(loss.item())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{history[-1]:.4f}")
                if stop(history[-1]):
                    break
        finally:
            if bar is not None:
                bar.close()
        return history

    losses, seconds, steps_run = {}, {}, {}
    groups = [{"params": [d_shape], "lr": cfg.lr_shape}, {"params": [d_app], "lr": cfg.lr_appearance}]
    if cfg.fit_camera:
        groups.append({"params": [cam], "lr": cfg.lr_camera})
    if fit_gaze:
        groups.append({"params": [gaze], "lr": cfg.lr_gaze})

    def clamp_gaze():
        if fit_gaze:
            with torch.no_grad():
                gaze.clamp_(-1.2, 1.2)

    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        if cfg.steps > 0:
            losses["codes"] = run_stage("codes", model, groups, cfg.steps, cfg.eye, False, clamp_gaze)
            steps_run["codes"] = len(losses["codes"])
        seconds["codes"] = time.perf_counter() - t0
        net = model
        if cfg.finetune_steps > 0:
            t1 = time.perf_counter()
            net = copy.deepcopy(model)
            frozen = {id(p) for p in _gaze_param_modules(net)} if cfg.freeze_gaze_pathway else set()
            planes = {id(p) for n, p in net.named_parameters() if n.startswith("triplane.")}
            for p in net.parameters():
                p.requires_grad_(id(p) not in frozen)
            ft_groups = [{"params": [p for p in net.parameters() if id(p) not in frozen | planes],
                          "lr": cfg.finetune_lr}]
            if planes:
                ft_groups.append({"params": [p for p in net.parameters() if id(p) in planes],
                                  "lr": cfg.finetune_lr * cfg.finetune_triplane_lr_scale})
            ft_groups += [dict(g, lr=g["lr"] * 0.2) for g in groups]
            losses["finetune"] = run_stage("finetune", net, ft_groups, cfg.finetune_steps, cfg.finetune_eye_weight,
                                           True, clamp_gaze)
            steps_run["finetune"] = len(losses["finetune"])
            for p in net.parameters():
                p.requires_grad_(False)
            net.eval()
            seconds["finetune"] = time.perf_counter() - t1
    finally:
        model.train(was_training)
    with torch.no_grad():
        R, t = _refined_camera(target.R_w2c, target.t_w2c, cam) if cfg.fit_camera else (target.R_w2c, target.t_w2c)
        R, t = R.detach(), t.detach()
        result = FitResult(shape_code=(target.shape_code + d_shape).detach(),
                           appearance_code=(target.appearance_code + d_app).detach(), R_w2c=R, t_w2c=t,
                           K=target.K.clone(), gaze=gaze.detach().clone(), losses=losses, psnr_head=float("nan"),
                           seconds=seconds, model=net, eye_mask=target.eye_mask.clone(),
                           camera_offset=cam.detach().reshape(-1).clone(), steps_run=steps_run,
                           head_pose=head_pose_from_rotation(R)[0].cpu())
        # head-frame gaze from the unrefined rotation, as in the fit
        gaze_head = gaze_in_head_frame(result.gaze, target.R_w2c)
        result.gaze = rotate_pitch_yaw(gaze_head, R)  # the same eyeball direction in the refined camera's frame
        result.render = render_fit(result)
        head = target.head_mask
        gt = target.image * head + (1 - head)
        result.psnr_head = float(masked_psnr(result.render, gt, head)[0])
    result.seconds["total"] = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------------------------
# Rendering the fit


def eye_mask_for_view(R_w2c: torch.Tensor, t_w2c: torch.Tensor, K: torch.Tensor, image_size: int,
                      code: np.ndarray | None = None) -> torch.Tensor:
    """Periocular eye masks for new views, from the synthetic head model's eye landmarks.

    The eye contours (iBUG 36-47) of the head model (``code``: a 43-d synthetic code, or the
    mean head) are projected, enlarged 1.5x about their centres (the periocular region around the
    opening, as the generator's masks) and dilated by ``max(2, S/40)`` px: IoU 0.83 with the dataset's
    own eye masks on the quickstart test subject.

    Args:
        R_w2c (B,3,3), t_w2c (B,3), K (B,3,3) in pixels of the ``image_size`` image.
    Returns:
        (B, 1, S, S) float {0, 1}.
    """
    import cv2

    from .data.synthetic import head_model as hm
    from .geometry.cameras import project_points

    code = np.zeros(hm.CODE_DIM, np.float32) if code is None else np.asarray(code, np.float32).reshape(-1)
    P = hm.decode(code)
    eye_c = hm._eye_centers(P)  # as build_mesh completes the parameters
    P = dataclasses.replace(P, eye_centers=tuple(tuple(float(v) for v in c) for c in eye_c))
    lm3d = torch.as_tensor(hm.landmarks_3d(P), dtype=torch.float32)
    B = R_w2c.shape[0]
    uv = project_points(lm3d[None].expand(B, -1, -1), R_w2c.float().cpu(), t_w2c.float().cpu(), K.float().cpu())
    S = int(image_size)
    radius = max(2, S // 40)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = np.zeros((B, S, S), np.uint8)
    for b in range(B):
        for lo in (36, 42):
            pts = uv[b, lo:lo + 6].numpy().astype(np.float64)
            c = pts.mean(0)
            pts = c + (pts - c) * np.array([1.5, 1.5])
            cv2.fillPoly(out[b], [np.round((pts - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        out[b] = cv2.dilate(out[b], kernel)
    return torch.as_tensor(out, dtype=torch.float32)[:, None].to(R_w2c.device)


def render_fit(result: FitResult, gaze: torch.Tensor | None = None, head_pose: torch.Tensor | None = None,
               camera: dict | None = None, codes: dict | None = None, eye_mask: torch.Tensor | None = None,
               batch: int = 8, eye_code: np.ndarray | None = None, gaze_head: torch.Tensor | None = None,
               pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Render the fitted subject.

    Args:
        gaze: (B, 2) camera-frame (pitch, yaw) of the rendered view (as the labels), or None (the fitted gaze's
            eyeball direction, i.e. the same head-frame gaze, in whatever view is rendered).
        head_pose: (B, 2) ETH-XGaze head (pitch, yaw) seen by the camera (``models.camera_for_head_pose``).
        camera: {"R_w2c" (B,3,3), "t_w2c" (B,3), "K" (B,3,3)[, "eye_mask" (B,1,S,S)]} instead of the fitted camera.
        codes: {"shape_code" (B,Ds), "appearance_code" (B,Da)} instead of the fitted codes (interpolations).
        eye_mask: (B,1,S,S); default: the target's for the fitted view, else ``eye_mask_for_view`` (``eye_code``:
            the 43-d synthetic code for its eye landmarks, or the mean head).
        batch: images per forward.
        gaze_head: (B, 2) head-frame (eyeball) gaze instead of ``gaze``.
        pixels: (K,) row-major pixel indices: render only those (per-pixel models), as (B, 3, 1, K) strips.
    Returns:
        (B, 3, S, S) in [0, 1], or (B, 3, 1, K) with ``pixels``.
    """
    cam = camera or result.camera
    sizes = [x.shape[0] for x in (gaze, head_pose, gaze_head) if x is not None] + [cam["R_w2c"].shape[0]]
    if codes is not None:
        sizes.append(codes["shape_code"].shape[0])
    B = max(sizes)
    dev = result.shape_code.device

    def ex(x):
        return x.to(dev).expand(B, *x.shape[1:])

    R, t, K = ex(cam["R_w2c"]), ex(cam["t_w2c"]), ex(cam["K"])
    if head_pose is not None:
        R, t = camera_for_head_pose(R, t, ex(head_pose.float()))
    fitted_view = camera is None and head_pose is None
    if eye_mask is None and camera is not None and "eye_mask" in camera:
        eye_mask = camera["eye_mask"]
    if eye_mask is None:
        eye_mask = result.eye_mask if fitted_view else eye_mask_for_view(R, t, K, result.eye_mask.shape[-1], eye_code)
    eye_mask = ex(eye_mask)
    if gaze_head is not None:
        gaze_head = ex(gaze_head.float())
    elif gaze is None:  # the fitted eyeball direction, seen from this view
        gaze_head = ex(gaze_in_head_frame(result.gaze, result.R_w2c))
    else:
        gaze_head = gaze_in_head_frame(ex(gaze.float()), R)
    c = codes or result.codes
    shape, app = ex(c["shape_code"]), ex(c["appearance_code"])
    images = []
    with eval_mode(result.model):
        for i in range(0, B, batch):
            s = slice(i, i + batch)
            px = None if pixels is None else pixels.to(dev).reshape(1, -1).expand(shape[s].shape[0], -1)
            out = result.model(shape[s], app[s], R[s], t[s], K[s], gaze_head=gaze_head[s], eye_mask=eye_mask[s],
                               pixels=px)
            images.append(out["image"].clamp(0, 1))
    return torch.cat(images)


# ----------------------------------------------------------------------------------------------
# Quality against the generator's exact renders (synthetic test subjects)


def ground_truth_quality(model, info: ModelInfo, dataset_dir: str, subject: int | None = None, source_cam: int = 0,
                         source_frame: int | None = None, init: str = "mean", cfg: FitConfig | None = None,
                         progress: bool = False, readout: bool = True) -> dict:
    """Fit one image of a synthetic test subject, then compare new renders with the generator's exact ones.

    The source is the row of ``subject`` (default: the first test subject) seen by ``source_cam`` at
    ``source_frame`` (default: that camera's first frame). ``init``: "mean" starts from the checkpoint's
    ``code_mean`` (what a photo without a usable code gets), "row" from the row's stored code (the exact
    generator code: privileged). Then:

    * (a) the same view: head-region PSNR of the fit;
    * (b) the same view at every other frame's eyeball gaze: eye-region PSNR (union of both eye masks) of
      the render and of the unchanged input against the generator's render of that gaze, and the gain;
      with ``readout``, also the exact gaze readout's errors in degrees (``b_gaze_error_deg_*``: the fit,
      the unchanged input, the fit not redirected, and the floor on the exact renders) and ``b_check``;
    * (c) the other cameras of the same frame (their exact dataset cameras and eye masks): head-region
      PSNR, next to the same model rendered with the exact code and no fit (its own ceiling).

    Returns a dict of means (and the counts).
    """
    import h5py

    from .data.dataset import GazeDataset
    from .data.synthetic import render_view

    ds = GazeDataset(dataset_dir, "test", subjects=[subject] if subject is not None else None,
                     image_size=info.image_size)
    sid = ds.rows[0].subject if subject is None else subject
    mine = [i for i, r in enumerate(ds.rows) if r.subject == sid]
    frames_of_cam = sorted(ds.rows[i].frame for i in mine if ds.rows[i].cam == source_cam)
    if not frames_of_cam:
        raise ValueError(f"subject {sid} has no row of camera {source_cam}")
    frame = frames_of_cam[0] if source_frame is None else source_frame
    src = next(i for i in mine if ds.rows[i].cam == source_cam and ds.rows[i].frame == frame)
    with h5py.File(ds.paths[sid], "r") as f:
        if f.attrs.get("source") != "synthetic":
            raise ValueError(f"{ds.paths[sid]}: ground-truth quality needs synthetic data (source "
                             f"{f.attrs.get('source')!r})")
        supersample = int(f.attrs.get("supersample", 1))
        true_code = np.asarray(f["latent_code"][ds.rows[src].row], dtype=np.float32)
    if init == "mean":
        target = target_from_dataset_row(ds, src, code=info.code_mean, code_init="checkpoint code_mean")
    elif init == "row":
        target = target_from_dataset_row(ds, src, code_init="dataset row code (exact)")
    else:
        raise ValueError(f"init: 'mean' or 'row', got {init!r}")
    device = next(model.parameters()).device
    res = fit_image(model, target, cfg, progress=progress)
    out = {"subject": int(sid), "source_row": ds.rows[src].row, "source_cam": source_cam, "source_frame": frame,
           "init": init, "steps_run": res.steps_run, "fit_seconds": res.seconds.get("total"),
           "a_same_view_psnr_head": res.psnr_head}

    # (b) same camera, other frames' eyeball gaze
    b_rows = [i for i in mine if ds.rows[i].cam == source_cam and ds.rows[i].frame != frame]
    if b_rows:
        items = [ds[i] for i in b_rows]
        gaze_head = gaze_in_head_frame(torch.stack([it["gaze"] for it in items]), torch.stack([it["R_w2c"] for it in items]))
        n = len(b_rows)
        src_item = ds[src]
        gt = render_view(true_code, src_item["R_w2c"][None].expand(n, 3, 3), src_item["t_w2c"][None].expand(n, 3),
                         src_item["K"][None].expand(n, 3, 3), info.image_size, gaze_head, supersample=supersample)
        gt_img = torch.as_tensor(np.asarray(gt["image"])).permute(0, 3, 1, 2).float().div(255).to(device)
        gt_eye = (torch.as_tensor(np.asarray(gt["eye_mask"])) >= 128).float()[:, None].to(device)
        pred = render_fit(res, gaze_head=gaze_head.to(device))
        eye = ((gt_eye + src_item["eye_mask"][None].to(device)) > 0).float()
        p_model = masked_psnr(pred, gt_img, eye)
        p_copy = masked_psnr(target.image.to(device).expand_as(gt_img), gt_img, eye)
        out.update(b_pairs=n, b_eye_psnr_model=float(p_model.mean()), b_eye_psnr_copy_input=float(p_copy.mean()),
                   b_eye_psnr_gain_db=float((p_model - p_copy).mean()))
        if readout:
            # Exact gaze readout (evaluation.readout): the gaze of each render, against the requested one.
            from .evaluation.readout import GazeReadout, readout_errors_deg, redirection_readout_summary

            ro = GazeReadout(true_code, src_item["R_w2c"], src_item["t_w2c"], src_item["K"], info.image_size, supersample)
            own = render_fit(res, gaze_head=gaze_in_head_frame(src_item["gaze"][None], src_item["R_w2c"][None]).to(device))
            errors = {name: readout_errors_deg(ro, imgs, gaze_head) for name, imgs in (
                ("model", pred), ("copy_input", target.image.to(device)[:1]), ("no_redirection", own), ("floor", gt_img))}
            out.update({f"b_{k}": v for k, v in redirection_readout_summary(errors).items()})

    # (c) same frame, other cameras
    c_rows = [i for i in mine if ds.rows[i].frame == frame and ds.rows[i].cam != source_cam]
    if c_rows:
        items = torch.utils.data.default_collate([ds[i] for i in c_rows])
        items = {k: v.to(device) for k, v in items.items() if torch.is_tensor(v)}
        cam = {k: items[k] for k in ("R_w2c", "t_w2c", "K", "eye_mask")}
        head = items["head_mask"]
        gt = items["image"] * head + (1 - head)
        pred = render_fit(res, camera=cam)
        gaze_head = gaze_in_head_frame(items["gaze"], items["R_w2c"])
        shape, app = split_code(torch.as_tensor(true_code, device=device), info.code_slices)
        with eval_mode(model):
            exact = model(shape.expand(len(c_rows), -1), app.expand(len(c_rows), -1), cam["R_w2c"], cam["t_w2c"],
                          cam["K"], gaze_head=gaze_head, eye_mask=cam["eye_mask"])["image"]
        out.update(c_views=len(c_rows), c_other_views_psnr_head=float(masked_psnr(pred, gt, head).nanmean()),
                   c_exact_code_no_fit_psnr_head=float(masked_psnr(exact, gt, head).nanmean()))
    return out
