#!/usr/bin/env python
"""Render a subjects × cameras preview grid of the synthetic heads (first frame) to a PNG.

    python DataProcess/preview_grid.py --out docs/images/synthetic_preview.png   # 6 x 6 at 128 px
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for robustness

from HeadNeRF.data.synthetic.rig import MAX_CAMERAS  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="preview_6x6.png", help="output PNG path")
    p.add_argument("--num_subjects", type=int, default=6, help="rows: subjects 0..N-1")
    p.add_argument("--num_cameras", type=int, default=6, help=f"columns: rig cameras 0..C-1 (C <= {MAX_CAMERAS})")
    p.add_argument("--image_size", type=int, default=128, help="size of each tile in pixels")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same subjects as make_synthetic_dataset.py)")
    p.add_argument("--frame", type=int, default=0, help="which frame (head pose + gaze) to show")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="rendering device")
    args = p.parse_args(argv)
    if not 1 <= args.num_cameras <= MAX_CAMERAS:
        p.error(f"--num_cameras must be between 1 and {MAX_CAMERAS}, got {args.num_cameras}")
    for name in ("num_subjects", "image_size"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.frame < 0:
        p.error(f"--frame must be >= 0, got {args.frame}")

    import imageio.v2 as imageio

    from HeadNeRF.data.synthetic.writer import render_preview_grid

    grid = render_preview_grid(args.num_subjects, args.num_cameras, args.image_size, args.seed, args.device, args.frame)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    imageio.imwrite(args.out, grid)
    print(f"{args.num_subjects} subjects x {args.num_cameras} cameras -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
