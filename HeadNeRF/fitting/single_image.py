"""What ``FittingSingleImage.py`` does with one photo: ``fit_single_image(PhotoFitConfig)``.

load the checkpoint -> read the photo -> face analysis and normalisation in the checkpoint's framing
(``HeadNeRF.face``) -> initial codes (the face package's fit of the synthetic head model when the
checkpoint uses that 43-d layout, else the checkpoint's ``code_mean``) -> ``fit_image`` -> outputs.

Outputs (all written into a hidden temporary folder inside ``save_root`` and published by
``outputs.publish_outputs`` only when everything succeeded; ``fit.json`` is moved last, so a folder
with a ``fit.json`` is complete):

* ``merged.png``: normalised input crop | fit | absolute difference, RGB, each upscaled to 256 px.
* ``gaze_sweep.gif`` / ``.mp4``: the eyes go round a circle, then look at each requested target.
* ``pose_sweep.gif`` / ``.mp4``: the head turns along a yaw/pitch path, eyes on the camera.
* ``interp.gif``: the latent interpolation to ``target_embedding`` (only with one).
* ``latent.pt``: plain tensors (codes, camera, photo->crop warp), ``weights_only`` loadable,
  accepted back by ``target_embedding``.
* ``fit.json``: arguments, config, timings per stage, losses per stage, PSNR, detected head pose.
* ``redirected/*.png``, ``photo_gaze_sweep.gif`` / ``.mp4``, ``photo_strip.png``: the photo itself at its
  original size with only the eyes redirected (``HeadNeRF.eyewarp``, docs/photo_redirection.md).

Errors a user can cause are raised by type, each with a one-line message: :class:`FittingInputError`
(a wrong argument or file), :class:`PhotoUnusableError` (the photo cannot be fitted: a face too small),
``CheckpointError``, ``ConfigError``, and the face package's ``NoFaceError`` / ``ImageReadError`` /
``FaceIndexError``. ``FittingSingleImage.py`` maps each type to its exit code.
"""

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from ..config import to_dict
from ..estimator import estimate, load_estimator
from ..eyewarp.outputs import write_photo_redirection
from ..face import analyse_and_normalise, fit_latent_codes, load_image_rgb
from ..geometry.gaze import angular_error_deg
from ..image_io import label, to_frame, write_animation, write_png
from ..metrics import whiten_background
from ..run_lock import writer_prefix
from .config import PhotoFitConfig
from .fit import fit_image
from .inputs import FittingInputError, load_code_file, load_target_embedding, load_user_mask, parse_gaze_targets
from .model_io import ModelInfo, is_synthetic_layout, load_trained_model
from .outputs import WORK_PREFIX, check_save_root, publish_outputs, remove_dead_work_dirs, save_latent
from .render import render_fit
from .result import FitResult
from .sweeps import gaze_sweep, interpolation, pose_sweep
from .targets import FitTarget, target_from_normalised_face

__all__ = ["PhotoUnusableError", "fit_single_image"]


class PhotoUnusableError(FittingInputError):
    """The photo itself cannot be fitted (a face too small, ...): exit code 1, like "no face found"."""


class Stopwatch:
    """Wall and CPU seconds per named stage (each ``lap`` measures since the previous one)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds, self.cpu = {}, {}
        self.wall_mark, self.cpu_mark = self.start, time.process_time()

    def lap(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.seconds[name], self.cpu[name] = w - self.wall_mark, c - self.cpu_mark
        self.wall_mark, self.cpu_mark = w, c


@dataclasses.dataclass
class Photo:
    """The loaded inputs of one command: model, photo, its face and the codes the fit starts from."""

    model: torch.nn.Module
    info: ModelInfo
    image: np.ndarray  # (H, W, 3) uint8
    analysis: object  # face.FaceAnalysis (photo pixels)
    face: object  # face.NormalisedFace at the model's image size
    interocular_px: float
    gaze_targets: torch.Tensor  # (N, 2) camera frame
    target_codes: dict | None  # --target_embedding's codes
    estimator: tuple | None  # (model, info) of --estimator
    code: torch.Tensor | None = None  # (D,) initial code
    code_init: str = ""


def interocular_px(lm68: np.ndarray) -> float:
    """Distance in pixels between the two eye centres (mean of iBUG 36-41 and 42-47)."""
    lm = np.asarray(lm68, np.float64)
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def load_photo(cfg: PhotoFitConfig, clock: Stopwatch) -> Photo:
    """Checkpoint, code files, estimator, then the photo's face analysis (laps "load_model", "face_analysis")."""
    check_save_root(cfg.save_root)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise FittingInputError("--device cuda: no CUDA device is available; use --device cpu")
    if not os.path.exists(cfg.img):
        raise FittingInputError(f"{cfg.img}: file not found")
    targets = parse_gaze_targets(cfg.gaze_targets)
    model, info = load_trained_model(cfg.model_path, cfg.device)
    target_codes = load_target_embedding(cfg.target_embedding, info) if cfg.target_embedding else None
    user_code = load_code_file(cfg.para_3dmm, info) if cfg.para_3dmm else None
    est = load_estimator(cfg.estimator, cfg.device) if cfg.estimator else None
    clock.lap("load_model")
    image = load_image_rgb(cfg.img)  # ImageReadError: one line
    conv = info.camera_convention
    face, analysis = analyse_and_normalise(image, info.image_size, face_index=cfg.face_index, name=cfg.img,
                                           focal_factor=float(conv["focal_factor"]), distance=float(conv["distance"]))
    iod = interocular_px(analysis.lm68)
    if iod < cfg.min_interocular_px:
        raise PhotoUnusableError(f"{cfg.img}: face too small to fit (eyes {iod:.1f} px apart, need >= "
                                 f"{cfg.min_interocular_px:.0f} px)")
    if cfg.mask:
        face.mask = load_user_mask(cfg.mask, image.shape, face, info.image_size)
    clock.lap("face_analysis")
    return Photo(model=model, info=info, image=image, analysis=analysis, face=face, interocular_px=iod,
                 gaze_targets=targets, target_codes=target_codes, estimator=est, code=user_code)


def initial_target(cfg: PhotoFitConfig, photo: Photo) -> FitTarget:
    """The fit's target with its initial code: ``para_3dmm``'s, the face package's fit (synthetic 43-d layout)
    or the checkpoint's ``code_mean``; sets ``photo.code`` / ``photo.code_init``."""
    info = photo.info
    if photo.code is not None:
        photo.code_init = f"--para_3dmm {cfg.para_3dmm}"
    elif is_synthetic_layout(info.code_slices):
        photo.code = torch.as_tensor(fit_latent_codes([photo.face])[0], dtype=torch.float32)
        photo.code_init = "face package fit"
    else:
        photo.code, photo.code_init = info.code_mean.clone(), "checkpoint code_mean"
    return target_from_normalised_face(photo.face, photo.code, info, name=cfg.img, code_init=photo.code_init)


def write_fit_files(work: str, cfg: PhotoFitConfig, photo: Photo, target: FitTarget, result: FitResult
                    ) -> tuple[list, dict, torch.Tensor]:
    """merged.png, the sweeps, interp.gif, latent.pt and the photo's redirected eyes, into ``work``.
    Returns (the written names, the photo redirection's report, the gaze sweep's gazes (F, 2))."""
    eye_code = photo.code.numpy() if is_synthetic_layout(photo.info.code_slices) else None
    inp, head, fit = target.image[0].cpu(), target.head_mask[0].cpu(), result.render[0].cpu()
    diff = (fit - whiten_background(inp, head)).abs()
    write_png(os.path.join(work, "merged.png"), np.concatenate([label(to_frame(inp), "input crop"),
                                                                label(to_frame(fit), "fit"),
                                                                label(to_frame(diff), "|difference|")], 1))
    outputs = ["merged.png"]
    frames, gazes = gaze_sweep(result, photo.gaze_targets, eye_code=eye_code, full_frames=cfg.full_frames)
    outputs += [os.path.basename(p) for p in write_animation(os.path.join(work, "gaze_sweep"), frames, mp4=cfg.mp4)]
    frames_p, _poses = pose_sweep(result, eye_code=eye_code)
    outputs += [os.path.basename(p) for p in write_animation(os.path.join(work, "pose_sweep"), frames_p, mp4=cfg.mp4)]
    if photo.target_codes is not None:
        write_animation(os.path.join(work, "interp"), interpolation(result, photo.target_codes), mp4=False)
        outputs.append("interp.gif")
    save_latent(os.path.join(work, "latent.pt"), result, photo.info, photo.face.warp,
                {"source_image": os.path.abspath(cfg.img), "code_init": photo.code_init})
    outputs.append("latent.pt")
    photo_files, photo_report = write_photo_redirection(work, photo.image, photo.analysis, photo.face,
                                                        photo.gaze_targets.numpy(), mp4=cfg.mp4)
    return outputs + photo_files, photo_report, gazes


def fit_report(cfg: PhotoFitConfig, photo: Photo, result: FitResult, clock: Stopwatch, args: dict | None) -> dict:
    """The fit.json dict (without ``outputs`` / ``photo_redirection`` / ``estimator``)."""
    info, face, analysis = photo.info, photo.face, photo.analysis
    return {
        "arguments": args or {},
        "config": to_dict(cfg),
        "model": {"path": cfg.model_path, "model_name": info.model_name, "image_size": info.image_size,
                  "step": info.step, "camera_convention": info.camera_convention,
                  "metadata_source": info.metadata_source},
        "face": {"num_faces": int(analysis.num_faces), "box": [float(v) for v in analysis.box],
                 "interocular_px": photo.interocular_px, "head_pose_detected": [float(v) for v in face.face_head_pose],
                 "code_init": photo.code_init, "user_mask": bool(cfg.mask)},
        "fit": {"psnr_head": result.psnr_head, "steps_run": result.steps_run,
                "loss_first_last": {k: [v[0], v[-1]] for k, v in result.losses.items() if v},
                "losses": {k: [round(x, 6) for x in v] for k, v in result.losses.items()},
                "camera_offset": [float(v) for v in result.camera_offset],
                "fitted_gaze": [float(v) for v in result.gaze[0]],
                "fitted_head_pose": [float(v) for v in result.head_pose]},
        "gaze_targets": photo.gaze_targets.tolist(),
    }


def fit_single_image(cfg: PhotoFitConfig, args: dict | None = None) -> dict:
    """The whole command (see the module docstring). Returns the fit.json dict."""
    for key in ("model_path", "img", "save_root"):
        if not getattr(cfg, key):
            raise FittingInputError(f"--{key} is required (or {key}: in the --config file)")
    clock = Stopwatch()
    photo = load_photo(cfg, clock)
    target = initial_target(cfg, photo)
    clock.lap("code_init")
    torch.manual_seed(cfg.fit.seed)
    result = fit_image(photo.model, target, cfg.fit, progress=cfg.progress)
    clock.lap("fit")
    clock.seconds["fit_codes"] = result.seconds.get("codes", 0.0)
    clock.seconds["finetune"] = result.seconds.get("finetune", 0.0)
    os.makedirs(cfg.save_root, exist_ok=True)
    stale_work = remove_dead_work_dirs(cfg.save_root)
    work = tempfile.mkdtemp(prefix=writer_prefix(WORK_PREFIX), dir=cfg.save_root)
    try:
        outputs, photo_report, gazes = write_fit_files(work, cfg, photo, target, result)
        estimated = None if photo.estimator is None else estimate_sweep(*photo.estimator, result, gazes,
                                                                         photo.gaze_targets)
        clock.lap("outputs")
        clock.seconds["total"] = time.perf_counter() - clock.start
        clock.cpu["total"] = sum(clock.cpu.values())
        report = fit_report(cfg, photo, result, clock, args)
        report.update(photo_redirection=photo_report, seconds={k: round(v, 3) for k, v in clock.seconds.items()},
                      cpu_seconds={k: round(v, 3) for k, v in clock.cpu.items()}, outputs=outputs + ["fit.json"])
        if estimated is not None:
            report["estimator"] = estimated
        publish_outputs(work, cfg.save_root, outputs, report, stale_work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def estimate_sweep(est_model, est_info, result: FitResult, gazes: torch.Tensor, targets: torch.Tensor) -> dict:
    """Gaze read back by the estimator from the redirected renders of each requested direction."""
    size = int(getattr(est_info, "input_size", result.render.shape[-1]))
    if size != result.render.shape[-1]:
        return {"skipped": f"estimator takes {size} px images, the model renders {result.render.shape[-1]} px"}
    asked = torch.cat((gazes[:16:2], targets.float())) if len(targets) else gazes[:16:2]
    images = render_fit(result, gaze=asked)
    read = estimate(est_model, images)["gaze"].cpu()
    err = angular_error_deg(read, asked)
    return {"requested": asked.tolist(), "estimated": read.tolist(), "angular_error_deg": err.tolist(),
            "mean_angular_error_deg": float(err.mean())}
