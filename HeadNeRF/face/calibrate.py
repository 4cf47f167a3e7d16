"""Calibration of the face analysis on synthetic renders (regenerates ``data/mesh_calibration.npz``).

``python -m HeadNeRF.face.calibrate [--renders 120] [--seed 100]`` renders random synthetic subjects
from random rig cameras and head poses (224 and 256 px), runs mediapipe on them and derives:

* ``canonical`` (478, 3): where each mediapipe mesh point lies on the synthetic head, in the head
  frame: the median, over near-frontal renders (|yaw| < 25 deg), of the head-surface point seen
  through that pixel (rasterised with the true camera). These are the dense 3-D model points of
  ``head_pose_pnp(..., lm478=...)``: the synthetic head model's own surface, in head units.
* ``reliability`` (478,): median distance (fraction of the interocular distance) between a
  mediapipe point and the projection of its canonical point with the true camera; PnP uses the
  most reliable ``PNP_FRACTION`` of the 468 face points.
* ``mapping_error`` (68,): for the 478->68 table (``landmarks68.MP_TO_IBUG68``), the median error
  of each iBUG point in % of the interocular distance (documented in docs/face_analysis.md).

The 478->68 table itself was chosen with :func:`choose_mapping` on the same kind of renders (for each
iBUG point the single mediapipe point, or the mean of 2-3, with the lowest median error) and is
fixed in ``landmarks68.py``.
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

from HeadNeRF.atomic_io import atomic_write
from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF.data.synthetic import render, rig
from HeadNeRF.data.synthetic.render import single_thread, mesh_for_code, rasterize_views

from .detect import box_area, run_mesh
from .landmarks68 import landmarks68_from_mesh

__all__ = ["choose_mapping", "collect", "fit_canonical", "main"]


def collect(num: int, seed: int = 100, progress: bool = True) -> list[dict]:
    """Render ``num`` random views and run mediapipe; returns records (ok, lm478, lm2d, R, t, K, pos, ...)."""
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    recs = []
    for i in tqdm(range(num), disable=not progress, desc="calibration renders"):
        S = 224 if i % 2 == 0 else 256
        cam = int(rng.integers(0, rig.MAX_CAMERAS))
        code = hm.sample_code(rng)
        head, _ = rig.sample_frames(rng, 4)
        out = render(code, cam, rng.normal(0, 0.2, 2).astype(np.float32), head[0], S, supersample=2)
        meshes = run_mesh(out["image"][0])
        if not meshes:
            recs.append(dict(ok=False, S=S, cam=cam))
            continue
        lm = max(meshes, key=box_area)
        mesh = mesh_for_code(code)
        with single_thread():
            p2f, bary, _ = rasterize_views(
                torch.from_numpy(mesh.verts), torch.from_numpy(mesh.faces), torch.from_numpy(out["cam_R_w2c"]),
                torch.from_numpy(out["cam_t_w2c"]), torch.from_numpy(out["cam_K"]), S,
                cull_normals=torch.from_numpy(mesh.cull_normals), faces_per_pixel=1)
        u = np.clip(lm[:, 0].astype(int), 0, S - 1)
        v = np.clip(lm[:, 1].astype(int), 0, S - 1)
        f = p2f[0, v, u, 0].numpy()
        b = bary[0, v, u, 0].numpy()
        pos = (mesh.verts[mesh.faces[np.maximum(f, 0)]] * b[..., None]).sum(1)
        pos[f < 0] = np.nan
        recs.append(dict(ok=True, S=S, cam=cam, code=code, lm478=lm, lm2d=out["lm2d"][0], R=out["cam_R_w2c"][0],
                         t=out["cam_t_w2c"][0], K=out["cam_K"][0], pos=pos))
    return recs


def _iod(lm):
    return np.linalg.norm(lm[..., 36:42, :].mean(-2) - lm[..., 42:48, :].mean(-2), axis=-1)


def choose_mapping(recs: list[dict], top: int = 12) -> list[tuple[int, ...]]:
    """For each iBUG point, the mediapipe point (or mean of 2-3) with the lowest median error."""
    recs = [r for r in recs if r["ok"]]
    L = np.stack([r["lm478"][:, :2] for r in recs]).astype(np.float64)
    G = np.stack([r["lm2d"] for r in recs]).astype(np.float64)
    iod = _iod(G)

    def err(p, i):
        return float(np.median(np.linalg.norm(p - G[:, i], axis=1) / iod * 100))

    table = []
    for i in range(68):
        med = np.median(np.linalg.norm(L - G[:, i:i + 1], axis=2) / iod[:, None] * 100, 0)
        cand = np.argsort(med)[:top]
        best = ((int(cand[0]),), med[cand[0]])
        for a, b in itertools.combinations(cand, 2):  # a pair must gain 0.3 %, a triple 0.5 %
            m = err((L[:, a] + L[:, b]) / 2, i)
            if m < best[1] - 0.3:
                best = ((int(a), int(b)), m)
        for a, b, c in itertools.combinations(cand[:8], 3):
            m = err((L[:, a] + L[:, b] + L[:, c]) / 3, i)
            if m < best[1] - 0.5:
                best = ((int(a), int(b), int(c)), m)
        table.append(best[0])
    return table


def fit_canonical(recs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(canonical (478, 3), reliability (478,)) from the records (see the module docstring)."""
    recs = [r for r in recs if r["ok"]]
    yaw = np.array([np.degrees(np.arctan2(r["R"][0, 2], r["R"][2, 2])) for r in recs])
    P = np.stack([r["pos"] for r in recs])
    C = np.nanmedian(P[np.abs(yaw) < 25], 0)
    res = []
    for r in recs:
        K = r["K"].astype(np.float64)
        Pc = C @ r["R"].T + r["t"]
        uv = Pc[:, :2] / Pc[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
        res.append(np.linalg.norm(uv - r["lm478"][:, :2], axis=1) / _iod(r["lm2d"]))
    return C.astype(np.float32), np.median(np.stack(res), 0).astype(np.float32)


def mapping_errors(recs: list[dict]) -> np.ndarray:
    """(68,) median error (% interocular) of each iBUG point of the fixed table."""

    recs = [r for r in recs if r["ok"]]
    G = np.stack([r["lm2d"] for r in recs]).astype(np.float64)
    P = np.stack([landmarks68_from_mesh(r["lm478"]) for r in recs]).astype(np.float64)
    return np.median(np.linalg.norm(P - G, axis=2) / _iod(G)[:, None] * 100, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate HeadNeRF/face/data/mesh_calibration.npz from synthetic renders.")
    ap.add_argument("--renders", type=int, default=120, help="number of random synthetic views to render")
    ap.add_argument("--seed", type=int, default=100, help="random seed of the subjects, cameras and head poses")
    ap.add_argument("--print_mapping", action="store_true", help="also print the data-driven 478->68 table")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data", "mesh_calibration.npz"),
                    help="output .npz path")
    args = ap.parse_args(argv)
    recs = collect(args.renders, args.seed)
    if args.print_mapping:
        print(choose_mapping(recs))
    C, rel = fit_canonical(recs)
    atomic_write(args.out, lambda tmp: np.savez(
        tmp, canonical=C, reliability=rel, mapping_error=mapping_errors(recs).astype(np.float32),
        num_renders=len(recs), num_detected=sum(r["ok"] for r in recs), seed=args.seed))
    print(f"wrote {args.out} ({sum(r['ok'] for r in recs)}/{len(recs)} renders with a face)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
