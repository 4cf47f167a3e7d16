"""Typed configs loaded from YAML.

YAML is only the serialisation: every file is loaded with ``yaml.safe_load`` into nested
dataclasses. Unknown keys are an error that names the key and the nearest valid one; types
are checked (ints are accepted where floats are expected); ranges and cross-field rules
live in each dataclass's ``__post_init__``. The resolved config is written back with
:func:`to_dict` + ``yaml.safe_dump`` (plain types only, no ``!!python`` tags).
"""

import dataclasses
import difflib
import types
import typing

import yaml

__all__ = [
    "ConfigError",
    "check_field",
    "ModelConfig",
    "LossConfig",
    "DataConfig",
    "TrainConfig",
    "MODEL_NAMES",
    "from_dict",
    "to_dict",
    "load_yaml",
    "nested",
]

MODEL_NAMES = ("HeadNeRF", "HeadNeRF_Gaze", "GazeNeRF")


class ConfigError(ValueError):
    """A config value or key is wrong. The message is one line and names the key."""


def check_field(cond: bool, key: str, msg: str) -> None:
    """Raise ConfigError("key: msg") unless ``cond`` (the range and cross-field checks of every config class)."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclasses.dataclass
class ModelConfig:
    """The network. Defaults are the seed's sizes (32² features × 64 samples, 8×384 MLPs, 512² output)."""

    model_name: str = "HeadNeRF_Gaze"  # HeadNeRF (no gaze) | HeadNeRF_Gaze (seed) | GazeNeRF (two streams)
    featmap_size: int = 32  # rays per side: one ray per feature-map pixel
    featmap_channels: int = 256  # feature channels volume-rendered and fed to the 2-D renderer
    image_size: int = 512  # output RGB size; image_size / featmap_size must be a power of two
    num_samples: int = 64  # stratified samples per ray
    pe_freqs: int = 10  # positional-encoding frequencies of the point (2^0 .. 2^(n-1))
    mlp_width: int = 384
    mlp_depth: int = 8
    skip_layer: int = 4  # the point encoding and shape code are concatenated again after this layer
    gaze_mlp_width: int = 384
    gaze_mlp_depth: int = 8
    gaze_tile: int = 32  # (pitch, yaw) is repeated this many times (seed: 32 -> 64 channels)
    gaze_input: str = "tiled"  # HeadNeRF_Gaze's gaze MLP input: tiled (the seed's (pitch, yaw) × gaze_tile) |
    # eye_frame (each sample point in each eye's gaze-rotated frame, fields/gaze.py eye_frame_points)
    eye_frame_freqs: int = 4  # PE frequencies of the eye-frame directions (gaze_input eye_frame)
    eye_centers_from_code: bool = False  # eye_frame: the eyeball centres move with the shape code (a learned linear map)
    eye_centers_from_head_model: bool = False  # eye_frame: each image's eyeball centres from the head model at its shape
    # code, fixed (data/synthetic/eye_centers.py; exact for synthetic data, the head-model fit's for ETH-XGaze and photos)
    gaze_region_radius: float = 0.0  # eye_frame: > 0 runs the gaze MLP only on samples within this many eyeball radii of
    # an eye centre, its injections faded to 0 over the last half radius (models.py gaze_injections_near_eyes); 0 = all
    eye_polar_cells: int = 0  # eye_frame: a learned table over the angle from each eye's optical axis (fields/gaze.py
    # EyePolarTable) beside the eye-frame encoding; 0 = off
    gaze_appearance_input: bool = False  # HeadNeRF_Gaze: the appearance code among the gaze MLP's per-ray inputs (an iris
    # drawn by the gaze MLP can take the subject's colour); off = the seed's identity-blind gaze MLP
    gaze_view_input: bool = False  # HeadNeRF_Gaze: each ray's direction (head frame, PE) among the gaze MLP's per-ray
    # inputs: a view-dependent eye (the cornea's highlight) near the eyes only; off = the seed's view-blind field
    gaze_view_freqs: int = 6  # PE frequencies of that direction (6 against 3: the turned views' eyes, docs/evaluation.md)
    gaze_reflection_input: bool = False  # gaze_region_radius > 0: each near-eye sample's ray mirrored on its eyeball
    # sphere (fields/gaze.py eye_reflection_encoding) among the gaze MLP's per-sample inputs: a glossy eye's highlight
    gaze_pixel_coords: bool = True  # the pixel's (col, row) among the gaze MLP's per-ray inputs
    bound_radius: float = 1.6  # the head lies inside this sphere around the origin (head units); no samples outside
    template_gaze_noise: float = 0.08  # std of the noise on the zero template gaze while training
    feat_addition_alpha: float = 1.0  # blend of the gaze vs the template stream at render time
    renderer_min_channels: int = 32  # narrowest channel count of the 2-D upsampler
    triplane_resolution: int = 0  # learned tri-plane point features added to the PE (fields/triplane.py); 0 = off
    triplane_channels: int = 8  # features per plane
    density_grid_resolution: int = 0  # cached density grid guiding the samples (rendering/density_grid.py); 0 = off
    mlp_precision: str = "fp32"  # fp32 | bf16: the field MLPs' products under bf16 autocast (opt-in speed-up, not
    # bit-identical); volume rendering, the density grid and the 2-D renderer stay fp32. See models.py

    def __post_init__(self):
        check_field(self.model_name in MODEL_NAMES, "model_name", f"must be one of {list(MODEL_NAMES)}, got {self.model_name!r}")
        for k in ("featmap_size", "featmap_channels", "image_size", "num_samples", "mlp_width", "mlp_depth",
                  "gaze_mlp_width", "gaze_mlp_depth", "gaze_tile", "renderer_min_channels"):
            check_field(getattr(self, k) >= 1, k, f"must be >= 1, got {getattr(self, k)}")
        check_field(self.pe_freqs >= 0, "pe_freqs", "must be >= 0")
        check_field(self.gaze_input in ("tiled", "eye_frame"), "gaze_input",
                    f"must be tiled or eye_frame, got {self.gaze_input!r}")
        check_field(self.eye_frame_freqs >= 0, "eye_frame_freqs", "must be >= 0")
        check_field(self.eye_polar_cells == 0 or self.eye_polar_cells >= 2, "eye_polar_cells",
                    f"must be 0 (off) or >= 2, got {self.eye_polar_cells}")
        check_field(not self.eye_centers_from_head_model or self.gaze_input == "eye_frame", "eye_centers_from_head_model",
                    "needs gaze_input: eye_frame (the centres are those of the eye frames)")
        check_field(not (self.eye_centers_from_head_model and self.eye_centers_from_code), "eye_centers_from_head_model",
                    "and eye_centers_from_code are two sources of the same centres: set one of them")
        check_field(self.gaze_region_radius == 0 or (self.gaze_region_radius >= 1.5 and self.gaze_input == "eye_frame"),
                    "gaze_region_radius", f"must be 0 (everywhere) or >= 1.5 eyeball radii with gaze_input: eye_frame, got "
                    f"{self.gaze_region_radius} with gaze_input {self.gaze_input!r}")
        check_field(not self.gaze_appearance_input or self.model_name == "HeadNeRF_Gaze", "gaze_appearance_input",
                    f"is for model_name HeadNeRF_Gaze (its gaze MLP), got {self.model_name!r}")
        check_field(not self.gaze_view_input or (self.model_name == "HeadNeRF_Gaze" and self.num_samples >= 2),
                    "gaze_view_input", f"is for model_name HeadNeRF_Gaze with num_samples >= 2 (a ray's direction is "
                    f"read from its samples), got {self.model_name!r} with {self.num_samples}")
        check_field(self.gaze_view_freqs >= 0, "gaze_view_freqs", f"must be >= 0, got {self.gaze_view_freqs}")
        check_field(not self.gaze_reflection_input or (self.gaze_region_radius > 0 and self.num_samples >= 2),
                    "gaze_reflection_input", f"needs gaze_region_radius > 0 (the near-eye samples) and num_samples >= 2, "
                    f"got {self.gaze_region_radius} and {self.num_samples}")
        check_field(self.eye_polar_cells == 0 or self.gaze_input == "eye_frame", "eye_polar_cells",
                    "needs gaze_input: eye_frame (the table reads the eye-frame points)")
        check_field(self.mlp_precision in ("fp32", "bf16", "auto"), "mlp_precision",
                    f"must be fp32, bf16 or auto, got {self.mlp_precision!r}")
        check_field(self.triplane_resolution >= 0, "triplane_resolution", "must be >= 0 (0 = off)")
        check_field(self.triplane_channels >= 1, "triplane_channels", "must be >= 1")
        check_field(self.density_grid_resolution == 0 or self.density_grid_resolution >= 2, "density_grid_resolution",
               f"must be 0 (off) or >= 2, got {self.density_grid_resolution}")
        ratio = self.image_size // self.featmap_size
        check_field(self.image_size % self.featmap_size == 0 and ratio & (ratio - 1) == 0, "image_size",
               f"image_size/featmap_size must be a power of two, got {self.image_size}/{self.featmap_size}")
        check_field(0 <= self.skip_layer < self.mlp_depth, "skip_layer", f"must be in [0, mlp_depth), got {self.skip_layer}")
        check_field(self.bound_radius > 0, "bound_radius", "must be > 0")
        check_field(self.template_gaze_noise >= 0, "template_gaze_noise", "must be >= 0")
        check_field(0.0 <= self.feat_addition_alpha <= 1.0, "feat_addition_alpha", "must be in [0, 1]")


@dataclasses.dataclass
class LossConfig:
    """Weights of each loss term (0 turns a term off). See HeadNeRF/losses.py."""

    photometric: str = "mse"  # mse | l1, on head pixels
    head: float = 1.0  # masked photometric loss inside the head mask
    nonhead: float = 1.0  # non-head pixels of the render must be background (white)
    background: float = 1.0  # the rendered background feature map alone must be white
    eye: float = 10.0  # extra photometric weight inside the eye masks
    eye_per_image: bool = False  # the eye term averages each image's eye pixels, then the images (turned views' small eyes weigh as much)
    template: float = 0.5  # template (gaze = 0) render vs the frame, outside the eyes
    template_eye: float = 0.0  # template render vs the subject/camera's most frontal-gaze frame, inside the eyes
    vgg: float = 0.0  # perceptual loss; needs vgg_weights_path (no weights ship offline)
    vgg_weights_path: str = ""
    latent_reg: float = 0.001  # mean square of the per-image latent offsets
    camera_reg: float = 0.001  # mean square of the per-image camera refinements

    def __post_init__(self):
        check_field(self.photometric in ("mse", "l1"), "loss_config.photometric", f"must be mse or l1, got {self.photometric!r}")
        for f in dataclasses.fields(self):
            if f.type is float:
                check_field(getattr(self, f.name) >= 0, f"loss_config.{f.name}", f"weights must be >= 0, got {getattr(self, f.name)}")
        check_field(self.vgg == 0 or bool(self.vgg_weights_path), "loss_config.vgg",
               "the VGG loss needs loss_config.vgg_weights_path (ImageNet VGG16 weights cannot be downloaded offline); set vgg: 0 or give the path")


def nested(config_class):
    """A nested config field whose default is ``config_class()`` (its own defaults); YAML fills it as a block."""
    return dataclasses.field(default_factory=config_class)


@dataclasses.dataclass
class DataConfig:
    dataset_dir: str = "data/synthetic"
    subjects: list = dataclasses.field(default_factory=list)  # subject ids to train on; empty = split.json's train_subjects
    max_rows_per_subject: int = 0  # 0 = all
    num_workers: int = 0
    cache_in_memory: bool = False  # keep every item read (training and validation sets) in memory: small datasets only

    def __post_init__(self):
        check_field(self.max_rows_per_subject >= 0, "data.max_rows_per_subject", "must be >= 0")
        check_field(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclasses.dataclass
class TrainConfig:
    """One training run of ``train_headnerf.py``: the network, its losses, its data and the loop's settings."""

    model: ModelConfig = nested(ModelConfig)  # the network; a checkpoint records it and resuming checks it
    loss_config: LossConfig = nested(LossConfig)
    data: DataConfig = nested(DataConfig)
    run_dir: str = "runs/headnerf"
    seed: int = 0
    steps: int = 1000  # optimisation steps
    batch_size: int = 2
    # Pixels rendered per training image; 0 = whole images. > 0 needs a per-pixel renderer
    # (model.featmap_size == model.image_size) and no VGG loss (it needs whole images).
    rays_per_image: int = 0
    eye_ray_weight: float = 1.0  # with rays_per_image: an eye pixel is this many times likelier to be drawn
    init_lr: float = 1e-4
    triplane_lr_scale: float = 1.0  # the tri-plane features train at init_lr x this (explicit grids like larger steps)
    lr_patience: int = 2  # validations without improvement before the LR is multiplied by lr_decay_factor
    lr_decay_factor: float = 0.5
    min_lr: float = 1e-6
    val_every: int = 200  # steps between validations ("epochs" of the plateau schedule)
    val_images: int = 8  # held-out images per validation
    report_images: int = 128  # held-out images (evenly spread) per row of the final report; all when fewer
    ckpt_every: int = 200
    log_every: int = 20
    image_every: int = 200  # steps between tensorboard image grids
    learn_latent_offsets: bool = False  # per-image latent offsets, initialised at zero (codes come from the HDF5)
    learn_camera_refinement: bool = False  # per-image small rotation + translation refinement
    max_bad_steps: int = 10  # consecutive NaN/inf losses before training aborts
    grad_clip: float = 1.0  # 0 = off
    device: str = "cpu"
    num_threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self):
        for k in ("steps", "batch_size", "val_every", "ckpt_every", "log_every", "image_every", "val_images", "max_bad_steps",
                  "report_images"):
            check_field(getattr(self, k) >= 1, k, f"must be >= 1, got {getattr(self, k)}")
        check_field(self.rays_per_image >= 0, "rays_per_image", "must be >= 0")
        check_field(self.eye_ray_weight > 0, "eye_ray_weight", f"must be > 0, got {self.eye_ray_weight}")
        if self.rays_per_image > 0:
            check_field(self.model.featmap_size == self.model.image_size, "rays_per_image",
                   f"training on pixel subsets needs a per-pixel renderer: set model.featmap_size = "
                   f"model.image_size (now {self.model.featmap_size} and {self.model.image_size}), or rays_per_image: 0")
            check_field(self.rays_per_image <= self.model.image_size ** 2, "rays_per_image",
                   f"must be <= image_size² = {self.model.image_size ** 2}")
            check_field(self.loss_config.vgg == 0, "rays_per_image",
                   "the VGG loss needs whole images; set rays_per_image: 0 or loss_config.vgg: 0")
        check_field(self.init_lr > 0, "init_lr", f"must be > 0, got {self.init_lr}")
        check_field(self.triplane_lr_scale > 0, "triplane_lr_scale", f"must be > 0, got {self.triplane_lr_scale}")
        check_field(0 < self.lr_decay_factor <= 1, "lr_decay_factor", f"must be in (0, 1], got {self.lr_decay_factor}")
        check_field(self.lr_patience >= 0, "lr_patience", "must be >= 0")
        check_field(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check_field(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"), "device", f"cpu or cuda, got {self.device!r}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp`` (bool/int/float/str/list/dataclass)."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key + ".")
    origin = typing.get_origin(tp)
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return list(value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {tp}, got {type(value).__name__} {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


# Keys older configs may still hold, with why they went and what to do instead.
REMOVED_KEYS = {
    "loss_config.gaze_functional": "removed (it was never implemented: training renders random pixel subsets, so a "
                                   "gaze estimator never sees a whole image per step); delete the line",
    "loss_config.gaze_estimator_path": "removed with loss_config.gaze_functional; delete the line",
}


def from_dict(cls, raw: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys (with a suggestion)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if f"{prefix}{key}" in REMOVED_KEYS:
            raise ConfigError(f"{prefix}{key}: {REMOVED_KEYS[prefix + key]}")
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys: {sorted(fields)}"
            raise ConfigError(f"{prefix}{key}: unknown key{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(prefix + str(exc)) from None
        raise


def to_dict(cfg) -> dict:
    """Plain-type dict of a config dataclass (safe for ``yaml.safe_dump`` and checkpoints)."""
    return dataclasses.asdict(cfg)


def load_yaml(path: str, cls=TrainConfig):
    """Load and validate a YAML config file into ``cls``.

    Raises:
        ConfigError: one line naming the file and the offending key.
    """
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        raise ConfigError(f"{path}: empty config (no keys, or only comments); copy one from config/ and edit it")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys, got a {type(raw).__name__}")
    try:
        return from_dict(cls, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
