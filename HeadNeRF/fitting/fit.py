"""The fit: latent codes, a camera refinement and optionally the network, against one image.

``fit_image(model, target, FitConfig)`` runs up to two stages, each a plain loop of
:func:`fit_step` (callable from tests) under ``loop.py``'s guarded step:

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

A non-finite loss or gradient skips its step (``loop.GuardedStep``, the same step both training loops take);
``MAX_BAD_STEPS`` in a row end the stage with what it had.

Camera-frame vs head-frame gaze follows ``docs/conventions.md``: a FitTarget's ``gaze`` is in
the camera frame (like the labels) and is turned into the head frame with the target's
**unrefined** rotation, exactly as in training.
"""

import copy
import dataclasses
import math
import time

import torch
from pytorch3d.transforms import axis_angle_to_matrix
from tqdm import tqdm

from ..geometry.gaze import gaze_in_head_frame, head_pose_from_rotation, rotate_pitch_yaw
from ..loop import GuardedStep, TrainingAborted
from ..losses import VGGPerceptual, masked_error
from ..metrics import masked_psnr, whiten_background
from ..rendering.pixels import gather_pixels, sample_pixels
from .config import FitConfig
from .render import render_fit
from .result import FitResult
from .targets import FitTarget, check_target_shapes

__all__ = ["MAX_BAD_STEPS", "FitProblem", "FitStage", "fit_guard", "fit_image", "fit_step"]

MAX_BAD_STEPS = 5  # consecutive non-finite losses or gradients that end a fitting stage


def refined_camera(R: torch.Tensor, t: torch.Tensor, cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R (1,3,3), t (1,3) refined by ``cam`` (1,6) = (axis-angle, translation): (exp(w) R, exp(w) t + dt)."""
    dR = axis_angle_to_matrix(cam[:, :3])
    return dR @ R, (dR @ t.unsqueeze(-1)).squeeze(-1) + cam[:, 3:]


def gaze_pathway_parameters(model) -> list:
    """The parameters that only the gaze pathway uses (frozen while fine-tuning)."""
    mods = [getattr(model, n) for n in ("gaze_mlp", "eye_stream") if hasattr(model, n)]
    return [p for m in mods for p in m.parameters()]


class EarlyStop:
    """True once the smoothed loss (EMA 0.9) has not improved by ``delta`` (relative) for ``patience`` steps."""

    def __init__(self, patience: int, delta: float):
        self.patience, self.delta, self.best, self.since, self.ema = patience, delta, math.inf, 0, None

    def __call__(self, value: float) -> bool:
        self.ema = value if self.ema is None else 0.9 * self.ema + 0.1 * value
        if self.ema < self.best * (1 - self.delta):
            self.best, self.since = self.ema, 0
        else:
            self.since += 1
        return self.patience > 0 and self.since >= self.patience


@dataclasses.dataclass
class FitStage:
    """What differs between the stages: the eye region's photometric weight, and whether the head term
    and the VGG term leave the eyes out (fine-tuning)."""

    name: str
    eye_weight: float
    exclude_eyes: bool


@dataclasses.dataclass
class FitProblem:
    """One fit's target, settings and free variables (batch of 1).

    d_shape (1,Ds), d_app (1,Da): code offsets; cam (1,6): camera refinement; gaze (1,2): camera-frame
    gaze (a variable only when ``fit_gaze``); ``generator`` draws the per-pixel subsets; ``eye_centers``
    (1,2,3): the starting code's eyeball centres, held fixed (``FitConfig.eye_centers: start``).
    """

    target: FitTarget
    cfg: FitConfig
    d_shape: torch.Tensor
    d_app: torch.Tensor
    cam: torch.Tensor
    gaze: torch.Tensor
    fit_gaze: bool
    per_pixel: bool
    generator: torch.Generator
    vgg: torch.nn.Module | None = None
    eye_centers: torch.Tensor | None = None  # (1,2,3) fixed centres (FitConfig.eye_centers "start"), else None

    @classmethod
    def start(cls, model, target: FitTarget, cfg: FitConfig) -> "FitProblem":
        """Zero offsets, the target's gaze, the seeded pixel generator (``target`` already on the model's device)."""
        device = target.image.device
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed)
        vgg = VGGPerceptual(cfg.vgg_weights_path).to(device) if cfg.vgg > 0 else None
        S = target.image.shape[-1]
        per_pixel = model.renders_pixel_subsets and cfg.rays_per_step > 0 and vgg is None and cfg.rays_per_step < S * S
        fit_gaze = (not target.gaze_known) if cfg.fit_gaze is None else cfg.fit_gaze
        eye_frame = getattr(model, "eye_frame", False)
        centers = target.eye_centers if eye_frame else None
        if centers is None and eye_frame and cfg.eye_centers == "start":
            centers = model.image_eye_centers(target.shape_code).detach()
        return cls(target=target, cfg=cfg, d_shape=torch.zeros_like(target.shape_code, requires_grad=True),
                   d_app=torch.zeros_like(target.appearance_code, requires_grad=True),
                   cam=torch.zeros(1, 6, device=device, requires_grad=cfg.fit_camera),
                   gaze=target.gaze.clone().requires_grad_(fit_gaze), fit_gaze=fit_gaze, per_pixel=per_pixel,
                   generator=gen, vgg=vgg, eye_centers=centers)

    def param_groups(self) -> list[dict]:
        """The free variables' optimiser groups at their configured learning rates."""
        cfg = self.cfg
        groups = [{"params": [self.d_shape], "lr": cfg.lr_shape}, {"params": [self.d_app], "lr": cfg.lr_appearance}]
        if cfg.fit_camera:
            groups.append({"params": [self.cam], "lr": cfg.lr_camera})
        if self.fit_gaze:
            groups.append({"params": [self.gaze], "lr": cfg.lr_gaze})
        return groups

    def camera(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (refined, when ``fit_camera``) R (1,3,3), t (1,3)."""
        t = self.target
        return refined_camera(t.R_w2c, t.t_w2c, self.cam) if self.cfg.fit_camera else (t.R_w2c, t.t_w2c)

    def render(self, net, pixels: torch.Tensor | None) -> torch.Tensor:
        """(1,3,S,S), or (1,3,1,K) for ``pixels`` (1,K): the target view with the current variables."""
        t = self.target
        R, tr = self.camera()
        gaze_head = gaze_in_head_frame(self.gaze, t.R_w2c)  # the unrefined rotation, as in training
        out = net(t.shape_code + self.d_shape, t.appearance_code + self.d_app, R, tr, t.K, gaze_head=gaze_head,
                  eye_mask=t.eye_mask, training=False, pixels=pixels, eye_centers=self.eye_centers)
        return out["image"]

    def draw(self) -> tuple[torch.Tensor | None, dict]:
        """This step's pixels (1,K) and the target maps at them (all pixels: None and the whole maps)."""
        t = self.target
        maps = {"image": t.image, "head_mask": t.head_mask, "eye_mask": t.eye_mask}
        if not self.per_pixel:
            return None, maps
        pixels = sample_pixels(t.eye_mask, self.cfg.rays_per_step, self.cfg.eye_ray_weight, self.generator)
        return pixels, gather_pixels(maps, pixels)

    def loss_terms(self, pred: torch.Tensor, tgt: dict, stage: FitStage) -> dict:
        """Photometric terms (head, non-head white, eye, VGG) and the variables' L2 penalties."""
        cfg, head, eye = self.cfg, tgt["head_mask"], tgt["eye_mask"]
        gt = whiten_background(tgt["image"], head)
        head_pixels = head * (1.0 - eye) if stage.exclude_eyes else head
        terms = {"head": cfg.head * masked_error(pred, gt, head_pixels, cfg.photometric),
                 "nonhead": cfg.nonhead * masked_error(pred, torch.ones_like(pred), 1.0 - head, "mse")}
        if stage.eye_weight > 0:
            terms["eye"] = stage.eye_weight * masked_error(pred, gt, eye, cfg.photometric)
        if self.vgg is not None and pred.shape[-2] > 1:
            terms["vgg"] = cfg.vgg * self.vgg(pred * (1 - eye) + gt * eye if stage.exclude_eyes else pred, gt)
        terms["code_reg"] = cfg.code_reg * torch.cat((self.d_shape, self.d_app), -1).square().mean()
        if cfg.fit_camera:
            terms["camera_reg"] = cfg.camera_reg * self.cam.square().mean()
        if self.fit_gaze:
            terms["gaze_reg"] = cfg.gaze_reg * self.gaze.square().mean()
        return terms


def fit_guard(optimizer) -> GuardedStep:
    """The fit's guarded step over every parameter of ``optimizer``: no clipping, ``MAX_BAD_STEPS`` skips in a row
    abort (its ``bad_steps`` counts them)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return GuardedStep(optimizer, params, 0.0, MAX_BAD_STEPS, "(a fit: no run directory)", "the fit's learning rates")


def fit_step(net, problem: FitProblem, guarded_step: GuardedStep, stage: FitStage, step: int) -> float | None:
    """One guarded optimisation step of ``problem`` through ``net`` (``guarded_step``: :func:`fit_guard`).

    Returns the loss, or None when the step was skipped for a non-finite loss or gradient. Raises
    ``loop.TrainingAborted`` at ``MAX_BAD_STEPS`` skips in a row.
    """
    if stage.name == "codes" and step == problem.cfg.camera_steps > 0:
        # FitConfig.camera_steps: the camera is held from here on; without its gradient path (every sample's encoding,
        # the tri-plane reads, layer 0) a step is ~30 % cheaper
        problem.cam.requires_grad_(False)
    pixels, tgt = problem.draw()
    loss = sum(problem.loss_terms(problem.render(net, pixels), tgt, stage).values())
    if not guarded_step(loss, step):
        return None
    if problem.fit_gaze:
        with torch.no_grad():
            problem.gaze.clamp_(-1.2, 1.2)
    return loss.item()


def run_stage(net, problem: FitProblem, groups: list[dict], steps: int, stage: FitStage, progress: bool) -> list:
    """Up to ``steps`` fit steps with decaying learning rates and the early stop. Returns the loss per step taken."""
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    stop = EarlyStop(problem.cfg.early_stop_patience, problem.cfg.early_stop_delta)
    guarded_step, history = fit_guard(opt), []
    bar = tqdm(total=steps, desc=f"fit {stage.name}", dynamic_ncols=True, leave=False) if progress else None
    try:
        for it in range(steps):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * 0.1 ** (it / max(steps, 1))
            try:
                loss = fit_step(net, problem, guarded_step, stage, it)
            except TrainingAborted:  # never let bad steps poison the codes: the stage ends with what it had
                break
            if loss is None:
                continue
            history.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if stop(loss):
                break
    finally:
        if bar is not None:
            bar.close()
    return history


def finetune_copy(model, groups: list[dict], cfg: FitConfig) -> tuple[torch.nn.Module, list[dict]]:
    """A trainable deep copy of ``model`` (gaze pathway frozen when ``freeze_gaze_pathway``) and its optimiser
    groups: the network, the tri-plane features at ``finetune_triplane_lr_scale`` x, and the variables at 0.2 x
    their ``groups`` learning rate (the codes stage's optimiser shares those dicts, so that is 0.2 x the rate
    the codes stage ended with)."""
    net = copy.deepcopy(model)
    frozen = {id(p) for p in gaze_pathway_parameters(net)} if cfg.freeze_gaze_pathway else set()
    planes = {id(p) for n, p in net.named_parameters() if n.startswith("triplane.")}
    for p in net.parameters():
        p.requires_grad_(id(p) not in frozen)
    ft_groups = [{"params": [p for p in net.parameters() if id(p) not in frozen | planes], "lr": cfg.finetune_lr}]
    if planes:
        ft_groups.append({"params": [p for p in net.parameters() if id(p) in planes],
                          "lr": cfg.finetune_lr * cfg.finetune_triplane_lr_scale})
    return net, ft_groups + [dict(g, lr=g["lr"] * 0.2) for g in groups]


def fitted_result(problem: FitProblem, net, losses: dict, seconds: dict, steps_run: dict) -> FitResult:
    """The fitted subject: codes, refined camera, the gaze seen from it, the final render and its head PSNR."""
    target = problem.target
    with torch.no_grad():
        R, t = (x.detach() for x in problem.camera())
        result = FitResult(shape_code=(target.shape_code + problem.d_shape).detach(),
                           appearance_code=(target.appearance_code + problem.d_app).detach(), R_w2c=R, t_w2c=t,
                           K=target.K.clone(), gaze=problem.gaze.detach().clone(), losses=losses,
                           psnr_head=float("nan"), seconds=seconds, model=net, eye_mask=target.eye_mask.clone(),
                           camera_offset=problem.cam.detach().reshape(-1).clone(), steps_run=steps_run,
                           head_pose=head_pose_from_rotation(R)[0].cpu(), eye_centers=problem.eye_centers)
        # head-frame gaze from the unrefined rotation, as in the fit
        gaze_head = gaze_in_head_frame(result.gaze, target.R_w2c)
        result.gaze = rotate_pitch_yaw(gaze_head, R)  # the same eyeball direction in the refined camera's frame
        result.render = render_fit(result)
        head = target.head_mask
        result.psnr_head = float(masked_psnr(result.render, whiten_background(target.image, head), head)[0])
    return result


def fit_image(model, target: FitTarget, cfg: FitConfig | None = None, progress: bool = True) -> FitResult:
    """Fit ``model`` to ``target`` (see the module docstring); ``model`` itself is never modified.

    Raises:
        TargetShapeError: the target is not one image (names the tensor, expected and actual shape).
    """
    cfg = cfg or FitConfig()
    check_target_shapes(target)
    problem = FitProblem.start(model, target.to(next(model.parameters()).device), cfg)
    losses, seconds, steps_run = {}, {}, {}
    groups = problem.param_groups()
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        if cfg.steps > 0:
            losses["codes"] = run_stage(model, problem, groups, cfg.steps, FitStage("codes", cfg.eye, False), progress)
            steps_run["codes"] = len(losses["codes"])
        seconds["codes"] = time.perf_counter() - t0
        net = model
        if cfg.finetune_steps > 0:
            t1 = time.perf_counter()
            net, ft_groups = finetune_copy(model, groups, cfg)
            stage = FitStage("finetune", cfg.finetune_eye_weight, True)
            losses["finetune"] = run_stage(net, problem, ft_groups, cfg.finetune_steps, stage, progress)
            steps_run["finetune"] = len(losses["finetune"])
            for p in net.parameters():
                p.requires_grad_(False)
            net.eval()
            seconds["finetune"] = time.perf_counter() - t1
    finally:
        model.train(was_training)
    result = fitted_result(problem, net, losses, seconds, steps_run)
    result.seconds["total"] = time.perf_counter() - t0
    return result
