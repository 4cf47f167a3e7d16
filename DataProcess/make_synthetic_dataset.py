#!/usr/bin/env python
"""Generate the synthetic multi-view gaze dataset (ETH-XGaze-like) in the processed-HDF5 layout.

Example (what training uses):
    python DataProcess/make_synthetic_dataset.py --save_dir data/synthetic \
        --num_subjects 4 --num_cameras 9 --num_frames 12 --image_size 64 --seed 0

Writes subject%04d.h5 files, split.json and preview.png into --save_dir. With --preview_only it
renders a subjects × cameras grid PNG (first frame) instead of the dataset.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for robustness

from HeadNeRF.data.synthetic.rig import MAX_CAMERAS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--save_dir", required=True, help="output directory (created if missing)")
    p.add_argument("--num_subjects", type=int, default=4, help="number of synthetic subjects (one HDF5 file each)")
    p.add_argument("--num_cameras", type=int, default=9,
                   help=f"rig cameras per frame, 1..{MAX_CAMERAS}; the first C of the rig (frontal first)")
    p.add_argument("--num_frames", type=int, default=12, help="frames per subject (each: new head pose and gaze)")
    p.add_argument("--image_size", type=int, default=64, help="square patch size S in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--supersample", type=int, default=2,
                   help="anti-aliasing: render N times larger and box-filter down (1 = off)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for rasterization and shading")
    p.add_argument("--preview_only", action="store_true",
                   help="only render a subjects x cameras grid (first frame) to <save_dir>/preview_grid.png")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.num_cameras <= MAX_CAMERAS:
        parser.error(f"--num_cameras must be between 1 and {MAX_CAMERAS} (the rig has {MAX_CAMERAS} cameras), "
                     f"got {args.num_cameras}")
    for name in ("num_subjects", "num_frames", "image_size", "supersample"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.image_size < 8:
        parser.error(f"--image_size must be at least 8 pixels, got {args.image_size}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda requested but torch.cuda.is_available() is False")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from HeadNeRF.data.synthetic.writer import generate_dataset, render_preview_grid

    os.makedirs(args.save_dir, exist_ok=True)
    start = time.time()
    if args.preview_only:
        import imageio.v2 as imageio

        grid = render_preview_grid(args.num_subjects, args.num_cameras, args.image_size, args.seed, args.device,
                                   supersample=args.supersample)
        path = os.path.join(args.save_dir, "preview_grid.png")
        imageio.imwrite(path, grid)
        print(f"preview grid ({args.num_subjects} subjects x {args.num_cameras} cameras) -> {path} "
              f"({time.time() - start:.1f} s)")
        return 0
    out = generate_dataset(args.save_dir, args.num_subjects, args.num_cameras, args.num_frames, args.image_size,
                           args.seed, progress=not args.no_progress, device=args.device,
                           supersample=args.supersample)
    n_img = args.num_subjects * args.num_cameras * args.num_frames
    print(f"wrote {len(out['files'])} subject files ({n_img} images, {args.image_size}x{args.image_size}) "
          f"to {os.path.abspath(args.save_dir)} in {time.time() - start:.1f} s")
    print(f"split: {out['split']}")
    print(f"preview: {out['preview']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
