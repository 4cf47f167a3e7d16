#!/usr/bin/env python
"""Synthetic renderer throughput: images/s at 128² and 512² (CPU unless --device cuda).

Renders one subject from several rig cameras per call (as the dataset writer does: one call per
frame, all cameras batched) and reports images per second after one warm-up call.
"""

import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from HeadNeRF.data.synthetic import head_model as hm  # noqa: E402
from HeadNeRF.data.synthetic import rig  # noqa: E402

render_mod = importlib.import_module("HeadNeRF.data.synthetic.render")


def bench(image_size: int, num_views: int, repeats: int, device: str) -> float:
    code = hm.sample_code(np.random.default_rng(0))
    R, t, K = rig.normalized_cameras(np.arange(num_views), np.zeros((num_views, 2)), image_size)
    render_mod.render_view(code, R, t, K, image_size, torch.zeros(2), device=device)  # warm-up (mesh cache)
    start = time.perf_counter()
    for r in range(repeats):
        render_mod.render_view(code, R, t, K, image_size, torch.tensor([0.1 * r, -0.2]), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return num_views * repeats / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="rendering device")
    args = p.parse_args()
    mesh = hm.build_mesh(hm.sample_code(np.random.default_rng(0)))
    print(f"mesh: {len(mesh.verts)} vertices, {len(mesh.faces)} faces; torch threads {torch.get_num_threads()}")
    for size, views, repeats in ((64, 9, 3), (128, 9, 3), (512, 4, 2)):
        ips = bench(size, views, repeats, args.device)
        print(f"{size:4d}x{size:<4d} {views} views/call: {ips:6.2f} images/s ({1000 / ips:7.1f} ms/image)")


if __name__ == "__main__":
    main()
