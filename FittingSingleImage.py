#!/usr/bin/env python
"""Fit a trained gaze model to one ordinary photo, then re-render it with new gazes and head poses.

    python FittingSingleImage.py --model_path runs/quickstart --img photo.jpg --save_root out/

Everything optional is computed when absent: face detection, landmarks, masks, head pose,
the normalised crop in the checkpoint's camera convention and the initial latent codes
(HeadNeRF/face). Outputs in SAVE_ROOT: merged.png, gaze_sweep.gif/.mp4, pose_sweep.gif/.mp4,
interp.gif (with --target_embedding), latent.pt, fit.json, and the photo itself with only its eyes
redirected: redirected/*.png (original size), photo_gaze_sweep.gif/.mp4, photo_strip.png.
See docs/fitting.md and docs/photo_redirection.md.

Exit status: 0 done; 1 the photo cannot be fitted (no face, face too small); 2 bad input
(unreadable file, missing or foreign checkpoint, bad argument). Errors are one line on stderr.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model_path", required=True,
                   help="training checkpoint: a run directory (uses checkpoints/last.pt) or a .pt file")
    p.add_argument("--img", required=True,
                   help="the photo (any size; JPEG/PNG/...; greyscale, RGBA, 16-bit and EXIF-rotated images work)")
    p.add_argument("--save_root", required=True, help="output folder (created; existing files of the same names are "
                   "replaced only once the whole fit succeeded)")
    p.add_argument("--mask", help="optional head mask of the photo (same size as the photo, white = head); default: "
                   "computed from the face landmarks")
    p.add_argument("--para_3dmm", help="optional initial latent code in the checkpoint's layout (.npy, .txt, .json, "
                   "or .pt holding a tensor or a dict with 'code', e.g. a latent.pt); default: fitted by the face "
                   "package (synthetic 43-d layout) or the checkpoint's mean code")
    p.add_argument("--target_embedding", help="codes to interpolate to (interp.gif): a latent.pt of an earlier fit, "
                   "or a dataset row FILE.h5:ROW, e.g. data/synthetic/subject0003.h5:17")
    p.add_argument("--gaze_targets", help="extra gaze directions for gaze_sweep, \"pitch,yaw;pitch,yaw\" in radians in "
                   "the camera frame (0,0 = at the camera; +yaw = towards the image left, +pitch = up), e.g. "
                   "\"0.2,-0.3;0,0.4\"; the name camera means \"look into the lens\". They also name the photo's "
                   "redirected/*.png (default for those: image left, image right, up, down, camera)")
    p.add_argument("--finetune_steps", type=int, default=0,
                   help="steps of per-subject network fine-tuning after the code fit (GazeNeRF-style; the gaze pathway "
                   "is frozen and the eye region left out, so the eyes still move); default 0")
    p.add_argument("--steps", type=int, default=None, help="maximum steps of the code fit (default 100, early stop)")
    p.add_argument("--face_index", type=int, default=None,
                   help="which face when the photo has several (0 = largest; default: the largest)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--vgg_weights", help="torchvision vgg16 state dict: adds a perceptual loss (whole images, slower)")
    p.add_argument("--estimator", help="gaze estimator checkpoint (HeadNeRF/estimator.py): fit.json then reports the "
                   "gaze it reads from the redirected renders")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the fit's small matrix "
                   "products gain little from more, and on a shared machine 2 threads measured 2.3x slower)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel draws (default 0)")
    p.add_argument("--full_frames", action="store_true", help="render every gaze_sweep frame whole (default for "
                   "per-pixel models: only the dilated eye region is re-rendered per gaze and pasted into the fit, "
                   "about 6x faster; any gaze-dependent change the model makes elsewhere is then not shown)")
    p.add_argument("--no_mp4", action="store_true", help="write only the GIFs, not the .mp4 copies")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        silence_native_stderr()
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        print(f"--device: cpu or cuda, got {args.device!r}", file=sys.stderr)
        return 2
    if not os.path.exists(args.img):
        print(f"{args.img}: file not found", file=sys.stderr)
        return 2
    if os.path.exists(args.save_root) and not os.path.isdir(args.save_root):
        print(f"--save_root {args.save_root} is an existing file, not a folder; pass a folder path", file=sys.stderr)
        return 2
    import torch

    if args.threads < 1:
        print(f"--threads: must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from HeadNeRF.checkpoint import CheckpointError
    from HeadNeRF.config import ConfigError
    from HeadNeRF.face import FaceIndexError, ImageReadError, NoFaceError
    from HeadNeRF.fitting_outputs import FittingInputError, fit_single_image

    try:
        report = fit_single_image(args.model_path, args.img, args.save_root, mask=args.mask, para_3dmm=args.para_3dmm,
                                  target_embedding=args.target_embedding, gaze_targets=args.gaze_targets,
                                  finetune_steps=args.finetune_steps, face_index=args.face_index, device=args.device,
                                  steps=args.steps, vgg_weights=args.vgg_weights, progress=not args.no_progress,
                                  seed=args.seed, mp4=not args.no_mp4, estimator=args.estimator, args=vars(args),
                                  full_frames=args.full_frames)
    except NoFaceError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except FittingInputError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except (ImageReadError, CheckpointError, ConfigError, FaceIndexError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    s = report["seconds"]
    print(f"[fit] head PSNR {report['fit']['psnr_head']:.2f} dB; {s['total']:.1f} s (face {s['face_analysis']:.1f}, "
          f"init {s['code_init']:.1f}, fit {s['fit_codes']:.1f}, finetune {s['finetune']:.1f}, outputs "
          f"{s['outputs']:.1f}); wrote {', '.join(report['outputs'])} to {args.save_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
