"""Typed settings of the fit (:class:`FitConfig`) and of the photo command (:class:`PhotoFitConfig`).

Loaded like every other config of the package (``HeadNeRF.config.load_yaml``: unknown keys are
refused in one line naming the nearest valid key, an empty file is refused). ``config/fitting.yml``
is the shipped default of ``FittingSingleImage.py --config``; its values equal the defaults here.
"""

import dataclasses

from ..config import ConfigError, check_field, load_yaml

__all__ = ["EYE_CENTER_MODES", "FitConfig", "PhotoFitConfig", "load_photo_fit_config"]

EYE_CENTER_MODES = ("code", "start")  # FitConfig.eye_centers


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
    camera_steps: int = 0  # with fit_camera: refine the camera only in the first N code steps, then hold it (0 = every step)
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
    finetune_eye_weight: float = 0.0  # photometric weight of the eye region while fine-tuning (see fitting.fit)
    freeze_gaze_pathway: bool = True
    # eye_frame models: where the eyeball centres are while the code moves. "code" = the centres of the code
    # the fit is at (they move with every step); "start" = the centres of the starting code (a photo's or a
    # row's landmark fit), fixed: the landmarks place the eyes, the photometric loss cannot drag them.
    eye_centers: str = "code"
    seed: int = 0

    def __post_init__(self):
        for k in ("steps", "rays_per_step", "finetune_steps", "early_stop_patience", "camera_steps"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k}: must be >= 0, got {getattr(self, k)}")
        if self.vgg > 0 and not self.vgg_weights_path:
            raise ConfigError("vgg: the VGG loss needs vgg_weights_path (no weights ship offline)")
        if self.photometric not in ("mse", "l1"):
            raise ConfigError(f"photometric: mse or l1, got {self.photometric!r}")
        if self.eye_centers not in EYE_CENTER_MODES:
            raise ConfigError(f"eye_centers: one of {list(EYE_CENTER_MODES)}, got {self.eye_centers!r}")


@dataclasses.dataclass
class PhotoFitConfig:
    """Settings of ``FittingSingleImage.py`` (``fitting.single_image.fit_single_image``).

    The three paths may come from the YAML or the command line; everything else has a default. See
    ``config/fitting.yml`` for what each key does.
    """

    model_path: str = ""  # a run directory (its checkpoints/last.pt) or a checkpoint file
    img: str = ""  # the photo
    save_root: str = ""  # output folder
    mask: str = ""  # optional head mask of the photo (white = head); "" = from the landmarks
    para_3dmm: str = ""  # optional initial latent code file; "" = the face package's fit or the code_mean
    target_embedding: str = ""  # codes to interpolate to (interp.gif): a latent.pt or FILE.h5:ROW
    gaze_targets: str = ""  # "pitch,yaw;pitch,yaw" (radians, camera frame) or "camera"
    face_index: int | None = None  # which face when there are several; None = the largest
    device: str = "cpu"
    threads: int = 2  # torch CPU threads (1 on a machine shared with other jobs)
    estimator: str = ""  # optional gaze estimator checkpoint: read back the redirected gazes
    full_frames: bool = False  # render every gaze_sweep frame whole (else only the eye region per gaze)
    mp4: bool = True  # also write .mp4 copies of the animations
    progress: bool = True  # progress bars
    min_interocular_px: float = 12.0  # eye-centre distance in the photo below which there is too little face
    # the photo's fit starts from the face package's landmark fit: its eyeball centres stay put (FitConfig.eye_centers)
    fit: FitConfig = dataclasses.field(default_factory=lambda: FitConfig(eye_centers="start"))

    def __post_init__(self):
        check_field(self.device == "cpu" or self.device.startswith("cuda"), "device",
                    f"cpu or cuda, got {self.device!r}")
        check_field(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        check_field(self.min_interocular_px >= 0, "min_interocular_px", "must be >= 0")


def load_photo_fit_config(path: str | None = None, overrides: dict | None = None) -> PhotoFitConfig:
    """The YAML at ``path`` (or the defaults), then ``overrides`` on top.

    Args:
        overrides: {key: value} (``"fit.<key>"`` for the fit's keys; None values set nothing), e.g. the
            command line's flags.
    Raises:
        ConfigError: one line, for an unknown key or a bad value (in the file: prefixed with its path).
    """
    cfg = load_yaml(path, PhotoFitConfig) if path else PhotoFitConfig()
    top, fit = {}, {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        name, section = (key[4:], fit) if key.startswith("fit.") else (key, top)
        fields = {f.name for f in dataclasses.fields(FitConfig if section is fit else PhotoFitConfig)}
        if name not in fields or name == "fit":
            raise ConfigError(f"{key}: unknown key")
        section[name] = value
    try:
        fit_cfg = dataclasses.replace(cfg.fit, **fit)
    except ConfigError as exc:
        raise ConfigError(f"fit.{exc}") from None
    return dataclasses.replace(cfg, fit=fit_cfg, **top)
