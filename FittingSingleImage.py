#!/usr/bin/env python
"""Fit a trained gaze model to one ordinary photo, then re-render it with new gazes and head poses.

    python FittingSingleImage.py --model_path runs/quickstart --img photo.jpg --save_root out/
    python FittingSingleImage.py --config config/fitting.yml --img photo.jpg --save_root out/ --steps 50

Everything optional is computed when absent: face detection, landmarks, masks, head pose,
the normalised crop in the checkpoint's camera convention and the initial latent codes
(HeadNeRF/face). Outputs in SAVE_ROOT: merged.png, gaze_sweep.gif/.mp4, pose_sweep.gif/.mp4,
interp.gif (with --target_embedding), latent.pt, fit.json, and the photo itself with only its eyes
redirected: redirected/*.png (original size), photo_gaze_sweep.gif/.mp4, photo_strip.png.
Settings come from --config (a YAML of ``HeadNeRF.fitting.PhotoFitConfig``; config/fitting.yml is the
shipped default, every key commented; without --config the same defaults apply); a flag given on the
command line overrides its config key. See docs/fitting.md and docs/photo_redirection.md.

Exit status: 0 done; 1 the photo cannot be fitted (no face, face too small); 2 bad input
(unreadable file, missing or foreign checkpoint, bad argument). Errors are one line on stderr.
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", help="YAML settings (HeadNeRF.fitting.PhotoFitConfig; see config/fitting.yml, every key "
                   "commented); the flags below override its keys (config key in brackets)")
    p.add_argument("--model_path", help="[model_path] training checkpoint: a run directory (uses checkpoints/last.pt) or "
                   "a .pt file; required here or in the config")
    p.add_argument("--img", help="[img] the photo (any size; JPEG/PNG/...; greyscale, RGBA, 16-bit and EXIF-rotated "
                   "images work); required here or in the config")
    p.add_argument("--save_root", help="[save_root] output folder (created; existing files of the same names are "
                   "replaced only once the whole fit succeeded); required here or in the config")
    p.add_argument("--mask", help="[mask] optional head mask of the photo (same size as the photo, white = head); "
                   "default: computed from the face landmarks")
    p.add_argument("--para_3dmm", help="[para_3dmm] optional initial latent code in the checkpoint's layout (.npy, .txt, "
                   ".json, or .pt holding a tensor or a dict with 'code', e.g. a latent.pt); default: fitted by the face "
                   "package (synthetic 43-d layout) or the checkpoint's mean code")
    p.add_argument("--target_embedding", help="[target_embedding] codes to interpolate to (interp.gif): a latent.pt of "
                   "an earlier fit, or a dataset row FILE.h5:ROW, e.g. data/synthetic/subject0003.h5:17")
    p.add_argument("--gaze_targets", help="[gaze_targets] extra gaze directions for gaze_sweep, \"pitch,yaw;pitch,yaw\" "
                   "in radians in the camera frame (0,0 = at the camera; +yaw = towards the image left, +pitch = up), "
                   "e.g. \"0.2,-0.3;0,0.4\"; the name camera means \"look into the lens\". They also name the photo's "
                   "redirected/*.png (default for those: image left, image right, up, down, camera)")
    p.add_argument("--finetune_steps", type=int, help="[fit.finetune_steps] steps of per-subject network fine-tuning "
                   "after the code fit (GazeNeRF-style; the gaze pathway is frozen and the eye region left out, so the "
                   "eyes still move); default 0")
    p.add_argument("--steps", type=int, help="[fit.steps] maximum steps of the code fit (default 100, early stop)")
    p.add_argument("--face_index", type=int,
                   help="[face_index] which face when the photo has several (0 = largest; default: the largest)")
    p.add_argument("--device", help="[device] cpu or cuda (default cpu)")
    p.add_argument("--vgg_weights", help="[fit.vgg_weights_path] torchvision vgg16 state dict: adds a perceptual loss "
                   "(weight fit.vgg, 0.1 when the config leaves it 0; whole images, slower)")
    p.add_argument("--estimator", help="[estimator] gaze estimator checkpoint (HeadNeRF/estimator): fit.json then "
                   "reports the gaze it reads from the redirected renders")
    p.add_argument("--threads", type=int, help="[threads] torch CPU threads (default 2: the astronaut's code fit 4.3-5.9 s "
                   "-> 3.6-4.4 s on 2 free cores; use 1 on a machine busy with other jobs, where 2 threads "
                   "wait for each other: measured 2.3x slower there)")
    p.add_argument("--seed", type=int, help="[fit.seed] seed of the pixel draws (default 0)")
    p.add_argument("--full_frames", action="store_true", default=None, help="[full_frames: true] render every "
                   "gaze_sweep frame whole (default for per-pixel models: only the dilated eye region is re-rendered "
                   "per gaze and pasted into the fit, about 6x faster; any gaze-dependent change the model makes "
                   "elsewhere is then not shown)")
    p.add_argument("--no_mp4", action="store_true", help="[mp4: false] write only the GIFs, not the .mp4 copies")
    p.add_argument("--no_progress", action="store_true", help="[progress: false] no progress bars")
    p.add_argument("--verbose", action="store_true", help="keep the native libraries' log lines (mediapipe/TFLite "
                   "write to stderr; by default they are silenced so that an error is exactly one line)")
    return p


def silence_native_stderr() -> None:
    """Send what C/C++ code writes to file descriptor 2 (mediapipe, TFLite, absl) to /dev/null, while Python's
    sys.stderr (our one-line errors, progress bars, warnings) keeps writing to the real stderr."""
    sys.stderr.flush()
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(real, "w", buffering=1)


def overrides_from(args) -> dict:
    """The config keys the command line sets (flags left out set nothing)."""
    keys = ("model_path", "img", "save_root", "mask", "para_3dmm", "target_embedding", "gaze_targets", "face_index",
            "device", "estimator", "threads", "full_frames")
    out = {k: getattr(args, k) for k in keys}
    out.update({"fit.steps": args.steps, "fit.finetune_steps": args.finetune_steps, "fit.seed": args.seed,
                "fit.vgg_weights_path": args.vgg_weights, "mp4": False if args.no_mp4 else None,
                "progress": False if args.no_progress else None})
    return out


def load_config(args):
    """The PhotoFitConfig of this command: --config (or the defaults) with the flags on top."""
    from HeadNeRF.fitting import load_photo_fit_config  # torch and the package load after --help / argument errors

    cfg = load_photo_fit_config(args.config, overrides_from(args))
    if args.vgg_weights and cfg.fit.vgg == 0:
        cfg.fit = dataclasses.replace(cfg.fit, vgg=0.1)
    return cfg


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        silence_native_stderr()
    import torch

    from HeadNeRF.checkpoint import CheckpointError
    from HeadNeRF.config import ConfigError
    from HeadNeRF.face import FaceIndexError, ImageReadError, NoFaceError
    from HeadNeRF.fitting import FittingInputError, PhotoUnusableError, fit_single_image

    # Exit status by exception type (first match): 1 the photo cannot be fitted, 2 a bad input.
    exit_codes = ((NoFaceError, 1), (PhotoUnusableError, 1), (FittingInputError, 2), (ImageReadError, 2),
                  (CheckpointError, 2), (ConfigError, 2), (FaceIndexError, 2))
    try:
        cfg = load_config(args)
        torch.set_num_threads(cfg.threads)
        report = fit_single_image(cfg, args=vars(args))
    except tuple(cls for cls, _ in exit_codes) as exc:
        print(str(exc), file=sys.stderr)
        return next(code for cls, code in exit_codes if isinstance(exc, cls))
    s = report["seconds"]
    print(f"[fit] head PSNR {report['fit']['psnr_head']:.2f} dB; {s['total']:.1f} s (face {s['face_analysis']:.1f}, "
          f"init {s['code_init']:.1f}, fit {s['fit_codes']:.1f}, finetune {s['finetune']:.1f}, outputs "
          f"{s['outputs']:.1f}); wrote {', '.join(report['outputs'])} to {cfg.save_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
