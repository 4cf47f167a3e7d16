"""Typed config of the gaze/head-pose estimator (loaded with ``HeadNeRF.config.load_yaml``).

Same machinery as the NeRF's ``TrainConfig``: nested dataclasses, unknown keys rejected with
the nearest valid key, ranges checked in ``__post_init__`` (one-line :class:`ConfigError`).
"""

import dataclasses

from ..config import check_field

__all__ = [
    "DEPTHS",
    "STEMS",
    "AugmentConfig",
    "EstimatorConfig",
    "EstimatorDataConfig",
    "EstimatorModelConfig",
    "SyntheticSetConfig",
]

DEPTHS = (18, 34, 50)
# standard: ResNet's 7x7 stride-2 conv + max-pool (ImageNet layout, 1/4 resolution after the stem);
# no_maxpool: the same conv, no max-pool (1/2 resolution: more pixels on the eyes of a small image);
# small: a 3x3 stride-1 conv + max-pool (1/2 resolution, finer first filters; conv1 not pretrained).
STEMS = ("standard", "no_maxpool", "small")


@dataclasses.dataclass
class EstimatorModelConfig:
    """The network: a torchvision ResNet with a 4-output head (gaze pitch/yaw, head pitch/yaw)."""

    depth: int = 18  # 18 | 34 | 50
    input_size: int = 64  # square input size in pixels; images of another size are refused by estimate()
    stem: str = "no_maxpool"  # see STEMS
    pretrained_path: str = ""  # optional torchvision ImageNet state_dict (.pth) of the same depth; "" = random init
    # the eye branch (HeadNeRF/estimator/eyes.py): both eyes cropped, upsampled and read by a small CNN
    eye_branch: bool = False
    eye_crop_height: int = 32  # crop size in pixels (each eye)
    eye_crop_width: int = 48
    eye_box_width: float = 0.25  # the crop box's width as a fraction of the image width (height: the crop's aspect)
    eye_channels: int = 64  # width of the eye CNN (its last stage has twice as many)
    compose_gaze: bool = False  # gaze = head pose (+) eye-in-head (exact in a normalised camera) instead of a free output

    def __post_init__(self):
        check_field(self.depth in DEPTHS, "model.depth", f"must be one of {list(DEPTHS)}, got {self.depth}")
        check_field(self.input_size >= 16, "model.input_size", f"must be >= 16, got {self.input_size}")
        check_field(self.stem in STEMS, "model.stem", f"must be one of {list(STEMS)}, got {self.stem!r}")
        for k in ("eye_crop_height", "eye_crop_width"):
            check_field(getattr(self, k) >= 8, f"model.{k}", f"must be >= 8, got {getattr(self, k)}")
        check_field(0 < self.eye_box_width <= 1, "model.eye_box_width", f"must be in (0, 1], got {self.eye_box_width}")
        check_field(self.eye_channels >= 4, "model.eye_channels", f"must be >= 4, got {self.eye_channels}")


@dataclasses.dataclass
class SyntheticSetConfig:
    """The synthetic set made by ``make_estimator_dataset`` when ``data.generate_if_missing`` is true."""

    num_subjects: int = 200
    num_cameras: int = 4
    num_frames: int = 3
    image_size: int = 64
    seed: int = 1  # not the NeRF quickstart's seed 0: other identities than the heads the NeRF is evaluated on
    supersample: int = 2
    workers: int = 1  # rendering processes (pytorch3d's CPU rasteriser uses one core per process)

    def __post_init__(self):
        for k in ("num_subjects", "num_cameras", "num_frames", "supersample", "workers"):
            check_field(getattr(self, k) >= 1, f"data.synthetic.{k}", f"must be >= 1, got {getattr(self, k)}")
        check_field(self.num_subjects >= 2, "data.synthetic.num_subjects", "must be >= 2 (train and held-out subjects)")
        check_field(self.image_size >= 8, "data.synthetic.image_size", f"must be >= 8, got {self.image_size}")


@dataclasses.dataclass
class EstimatorDataConfig:
    dataset_dir: str = "data/estimator_synthetic"
    train_subjects: list = dataclasses.field(default_factory=list)  # empty = split.json's train subjects minus heldout
    heldout_subjects: list = dataclasses.field(default_factory=list)  # report subjects; empty = split.json's test subjects
    max_rows_per_subject: int = 0  # 0 = all
    preload: bool = True  # read every training image into memory once (fast; set false for large real sets)
    num_workers: int = 0  # DataLoader workers when preload is false
    generate_if_missing: bool = False  # make the synthetic set below in dataset_dir when it has no split.json
    synthetic: SyntheticSetConfig = dataclasses.field(default_factory=SyntheticSetConfig)

    def __post_init__(self):
        check_field(self.max_rows_per_subject >= 0, "data.max_rows_per_subject", "must be >= 0")
        check_field(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        overlap = sorted(set(self.train_subjects) & set(self.heldout_subjects))
        check_field(not overlap, "data.heldout_subjects", f"subjects {overlap} are also in data.train_subjects")


@dataclasses.dataclass
class AugmentConfig:
    """Per-image random changes of the training batches (all drawn from the checkpointed generator).

    They aim at the NeRF renders the estimator will read: slightly blurrier, shifted by a pixel,
    with small colour differences. Set a value to 0 to turn that change off.
    """

    hflip: float = 0.5  # probability of a mirror image (label yaws negated: exact for a normalised camera)
    brightness: float = 0.15  # multiplicative factor in [1 - b, 1 + b]
    contrast: float = 0.15  # blend with the image mean, factor in [1 - c, 1 + c]
    saturation: float = 0.15  # blend with the grey image, factor in [1 - s, 1 + s]
    blur_prob: float = 0.3  # probability of a Gaussian blur ...
    blur_sigma: float = 0.8  # ... with sigma uniform in [0.2, blur_sigma] pixels
    shift_px: float = 1.0  # translation uniform in [-shift_px, shift_px] pixels (sub-pixel, bilinear)
    scale: float = 0.03  # zoom factor in [1 - scale, 1 + scale]
    noise_std: float = 0.01  # additive Gaussian pixel noise

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_field(getattr(self, f.name) >= 0, f"augment.{f.name}", f"must be >= 0, got {getattr(self, f.name)}")
        for k in ("hflip", "blur_prob"):
            check_field(getattr(self, k) <= 1, f"augment.{k}", f"is a probability, must be <= 1, got {getattr(self, k)}")
        for k in ("brightness", "contrast", "saturation", "scale"):
            check_field(getattr(self, k) < 1, f"augment.{k}", f"must be < 1, got {getattr(self, k)}")
        check_field(self.blur_sigma == 0 or self.blur_sigma >= 0.2, "augment.blur_sigma", "must be 0 (off) or >= 0.2")


@dataclasses.dataclass
class EstimatorConfig:
    model: EstimatorModelConfig = dataclasses.field(default_factory=EstimatorModelConfig)
    data: EstimatorDataConfig = dataclasses.field(default_factory=EstimatorDataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    run_dir: str = "runs/gaze_estimator"
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr * min_lr_ratio at the last step
    min_lr_ratio: float = 0.01
    head_pose_weight: float = 0.5  # weight of the head-pose L1 term (the gaze term has weight 1)
    eye_weight: float = 1.0  # weight of the eye-in-head L1 term (gaze in the head frame: it makes the net read the eyes)
    # eye branch only: the network also regresses the two eye centres (from lm2d), and crops where it finds them
    eye_centre_weight: float = 1.0  # weight of the eye-centre L1 term (normalised image units)
    eye_crop_label_prob: float = 0.5  # share of training crops centred on the labelled landmarks (+ jitter), the
    #                                   rest on the network's own eye-centre estimate (what estimate() uses on renders)
    eye_crop_jitter_px: float = 1.0  # std of the Gaussian jitter of label-centred training crops, pixels
    val_every: int = 250  # steps between held-out evaluations (tensorboard only: nothing is selected on them)
    val_images: int = 256
    ckpt_every: int = 250
    log_every: int = 20
    max_bad_steps: int = 10  # consecutive NaN/inf losses before training aborts
    grad_clip: float = 5.0  # 0 = off
    device: str = "cpu"
    num_threads: int = 0  # torch CPU threads; 0 = torch's default

    def __post_init__(self):
        for k in ("steps", "batch_size", "val_every", "val_images", "ckpt_every", "log_every", "max_bad_steps"):
            check_field(getattr(self, k) >= 1, k, f"must be >= 1, got {getattr(self, k)}")
        check_field(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check_field(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check_field(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check_field(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check_field(self.head_pose_weight >= 0, "head_pose_weight", "must be >= 0")
        check_field(self.eye_weight >= 0, "eye_weight", "must be >= 0")
        check_field(self.eye_centre_weight >= 0, "eye_centre_weight", "must be >= 0")
        check_field(0 <= self.eye_crop_label_prob <= 1, "eye_crop_label_prob", "is a probability, must be in [0, 1]")
        check_field(self.eye_crop_jitter_px >= 0, "eye_crop_jitter_px", "must be >= 0")
        check_field(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check_field(self.num_threads >= 0, "num_threads", "must be >= 0")
        check_field(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"), "device",
               f"cpu or cuda, got {self.device!r}")

