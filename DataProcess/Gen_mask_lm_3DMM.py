#!/usr/bin/env python
"""Preprocess ETH-XGaze files, GazeNeRF-format files or photo folders into the processed HDF5 layout.

Example:
    python DataProcess/Gen_mask_lm_3DMM.py --img_dir /data/xgaze_224/train --save_dir data/xgaze \
        --sb 0 --se 10 --split_file /data/xgaze_224/train_test_split.json --num_workers 2

Writes save_dir/subjectXXXX.h5 (docs/data_format.md) and save_dir/split.json. Runs offline and
resumes: finished subjects are skipped on a re-run (see docs/preprocessing.md).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from HeadNeRF.cli_checks import output_folder_is_a_file  # noqa: E402 - after the repo root is on the path

FORMATS = ("xgaze_h5", "gazenerf_h5", "images")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img_dir", required=True,
                   help="input folder: subjectXXXX.h5 files (xgaze_h5), xgaze_subjectXXXX.h5 files (gazenerf_h5), "
                        "or one sub-folder of photos per subject (images)")
    p.add_argument("--save_dir", required=True, help="output folder (created if missing)")
    p.add_argument("--sb", type=int, default=0,
                   help="first subject to process: index into the input subjects in sorted name order, "
                        "INCLUSIVE (default 0)")
    p.add_argument("--se", type=int, default=None,
                   help="end of the subject range: index in sorted name order, EXCLUSIVE, i.e. subjects "
                        "sb..se-1 are processed, as Python's range(sb, se) and the seed's script (default: to the "
                        "last subject; a value beyond the last subject is clamped with a note)")
    p.add_argument("--input_format", choices=FORMATS, default=None,
                   help="input format; detected from the files when omitted (h5 keys: latent_codes/w2c_Rmat -> "
                        "gazenerf_h5, face_patch -> xgaze_h5; sub-folders of images -> images)")
    p.add_argument("--image_size", type=int, default=None,
                   help="output patch size S in px (default: the input patch size for h5 inputs, i.e. 224/448 for "
                        "ETH-XGaze and 512 for GazeNeRF files; 256 for photos)")
    p.add_argument("--num_workers", type=int, default=1, help="subjects processed in parallel processes (1 = in this process)")
    p.add_argument("--split_file", default=None,
                   help="ETH-XGaze's train_test_split.json: subjects in 'train' become training subjects, the others "
                        "test subjects (default: subjects without gaze labels are test subjects)")
    p.add_argument("--chunk_rows", type=int, default=256,
                   help="rows read from an input file at once (bounds memory for 10K-row subjects; the latent fit "
                        "covers all rows of a subject, sharing its identity)")
    p.add_argument("--photo_focal_factor", type=float, default=None,
                   help="photos only: focal length = factor x max(height, width) px (default: the face package's "
                        "default intrinsics for unknown cameras)")
    p.add_argument("--no_fit", action="store_true",
                   help="skip the latent-code fit (latent_code = the mean code); for quick checks only")
    p.add_argument("--no_appearance_fit", action="store_true",
                   help="fit only identity and expression (from the landmarks); albedo and illumination stay at the "
                        "mean code. Saves the colour fit's fixed cost per subject (~66 renders of the head model)")
    p.add_argument("--overwrite", action="store_true", help="re-process subjects whose output file already exists")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Cheap checks first (no torch import): a wrong command fails in a fraction of a second.
    if args.se is not None and args.se <= args.sb:
        parser.error(f"--se must be greater than --sb (--se is exclusive), got --sb {args.sb} --se {args.se}")
    problem = (None if os.path.isdir(args.img_dir) else f"{args.img_dir}: input folder not found") \
        or output_folder_is_a_file(args.save_dir, "--save_dir")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from HeadNeRF.preprocess import InputError, PreprocessConfig, run

    try:
        cfg = PreprocessConfig(img_dir=args.img_dir, save_dir=args.save_dir, sb=args.sb, se=args.se,
                               input_format=args.input_format, image_size=args.image_size,
                               num_workers=args.num_workers, split_file=args.split_file, chunk_rows=args.chunk_rows,
                               photo_focal_factor=args.photo_focal_factor, fit_codes=not args.no_fit,
                               fit_appearance=not args.no_appearance_fit,
                               overwrite=args.overwrite, progress=not args.no_progress)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        summary = run(cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished subjects are kept; re-run the same command to resume", file=sys.stderr)
        return 130
    for line in summary.lines():
        print(line)
    if not summary.written and not summary.skipped:
        return 1
    return 1 if summary.failed or summary.no_face else 0


if __name__ == "__main__":
    sys.exit(main())
