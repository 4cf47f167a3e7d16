#!/usr/bin/env python
"""Preprocessing accuracy against the synthetic generator's exact labels, and throughput per stage.

Synthetic heads are rendered at 224 and 256 px (``--sizes``) in the official ETH-XGaze layout
(``fixtures.write_xgaze_fixture``: ETH-XGaze's normalised camera) and as a photo folder
(``fixtures.write_photo_folder_fixture``: the synthetic training framing). For every row:

* detection rate (mediapipe finds the face);
* head-pose error: xgaze rows: PnP of the detected landmarks with the XGaze camera vs the exact
  rotation (the written camera itself comes from the file's label, exact by construction); photo
  rows: the written normalised camera vs the exact one (rotation angle and head-pose angle);
* 68-landmark error (median over points, then over rows; % of the true interocular distance) and
  iris-centre error (same unit);
* head-mask and eye-mask IoU against the exact masks;
* the latent fit's landmark reprojection error (RMS px and % interocular, after the fit);
* images/s per stage (detection, masks, PnP, normalisation, the latent fit's per-row and fixed
  per-subject cost, writing) and end to end (``HeadNeRF.preprocess.run`` on the fixture folders),
  plus the end-to-end rate projected for a 900-row subject (GazeNeRF's rows per subject) with the
  fit amortised.

    OMP_NUM_THREADS=1 python benchmarks/bench_preprocess.py --rows 12 --subjects 2
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch


def _pct(x):
    return f"{np.median(x):.2f}" if len(x) else "n/a"


def bench_size(size: int, rows: int, subjects: int, work: str, fit_appearance: bool) -> dict:
    from HeadNeRF import face
    from HeadNeRF.face.accuracy import interocular, iris_error_pct, landmark_error_pct, mask_iou, rotation_error_deg
    from HeadNeRF.face.latent_fit import FitOptions
    from HeadNeRF.geometry.gaze import angular_error_deg, head_pose_from_rotation
    from HeadNeRF.preprocess import PreprocessConfig, fixtures, run
    from HeadNeRF.preprocess import cameras as cams

    xdir, pdir = os.path.join(work, f"xgaze{size}"), os.path.join(work, f"photos{size}")
    t0 = time.perf_counter()
    xman = fixtures.write_xgaze_fixture(xdir, rows=rows, image_size=size, test_subject=False, num_subjects=subjects,
                                        supersample=2)
    pman = fixtures.write_photo_folder_fixture(pdir, rows=rows, image_size=size, bad_images=False, real_photo=False,
                                               num_subjects=subjects, supersample=2)
    render_s = time.perf_counter() - t0
    r = {"size": size, "rows": 0, "detected": 0, "pnp_deg": [], "lm_pct": [], "iris_pct": [], "head_iou": [],
         "eye_iou": [], "t_detect": 0.0, "t_masks": 0.0, "t_pnp": 0.0, "t_norm": 0.0, "n_norm": 0,
         "photo_rot_deg": [], "photo_head_deg": [], "photo_rows": 0, "photo_detected": 0,
         "fit_rms_px": [], "fit_rms_pct": [], "t_fit": [], "fit_rows": [], "render_s": render_s}
    K = cams.xgaze_intrinsics(size)[0]
    face.analyse_face(next(iter(xman.values()))["image"][0])  # warm-up: mediapipe graph initialisation
    for name, ex in xman.items():  # ---- ETH-XGaze layout: stages on the patch itself
        faces = []
        for i in range(len(ex["image"])):
            img = ex["image"][i]
            r["rows"] += 1
            t = time.perf_counter()
            try:
                fa = face.analyse_face(img, name=f"{name}:{i}")
            except face.NoFaceError:
                r["t_detect"] += time.perf_counter() - t
                continue
            r["t_detect"] += time.perf_counter() - t
            r["detected"] += 1
            t = time.perf_counter()
            R_pnp, t_pnp = face.head_pose_pnp(fa.lm68, K, lm478=fa.lm478)
            r["t_pnp"] += time.perf_counter() - t
            r["pnp_deg"].append(float(rotation_error_deg(R_pnp, ex["cam_R_w2c"][i])))
            t = time.perf_counter()
            m = face.face_masks(img, fa, K=K, pose=(R_pnp, t_pnp), patch_size=size)
            r["t_masks"] += time.perf_counter() - t
            r["head_iou"].append(mask_iou(m["mask"], ex["mask"][i]))
            r["eye_iou"].append(mask_iou(m["eye_mask"], ex["eye_mask"][i]))
            r["lm_pct"].append(float(landmark_error_pct(fa.lm68, ex["lm2d"][i])))
            r["iris_pct"] += iris_error_pct(fa.iris2d, ex["iris2d"][i], ex["lm2d"][i]).tolist()
            R_lab = ex["cam_R_w2c"][i]
            faces.append(face.NormalisedFace(
                face_patch=img, mask=m["mask"], eye_mask=m["eye_mask"], left_eye_mask=m["left_eye_mask"],
                right_eye_mask=m["right_eye_mask"], lm2d=fa.lm68, iris2d=fa.iris2d, cam_R_w2c=R_lab,
                cam_t_w2c=ex["cam_t_w2c"][i], cam_K=K, face_head_pose=head_pose_from_rotation(torch.from_numpy(R_lab)).numpy(),
                warp=np.eye(3)))
        if faces:
            t = time.perf_counter()
            _, (_, _, rms) = face.fit_latent_codes(faces, options=FitOptions(fit_appearance=fit_appearance),
                                                       return_cameras=True)
            r["t_fit"].append(time.perf_counter() - t)
            r["fit_rows"].append(len(faces))
            iod = interocular(np.stack([f.lm2d for f in faces]))
            r["fit_rms_px"] += list(np.asarray(rms, np.float64))
            r["fit_rms_pct"] += list(np.asarray(rms, np.float64) / iod * 100)
    for name, ex in pman.items():  # ---- photo folder: detection + normalisation into the training framing
        if "image" not in ex:
            continue
        for i in range(len(ex["image"])):
            img = ex["image"][i]
            r["photo_rows"] += 1
            Kp = np.array([[2.05 * size, 0, size / 2], [0, 2.05 * size, size / 2], [0, 0, 1]])
            t = time.perf_counter()
            try:
                nf, _ = face.analyse_and_normalise(img, size, K_image=Kp, name=f"{name}:{i}")
            except face.NoFaceError:
                continue
            r["t_norm"] += time.perf_counter() - t
            r["n_norm"] += 1
            r["photo_detected"] += 1
            r["photo_rot_deg"].append(float(rotation_error_deg(nf.cam_R_w2c, ex["cam_R_w2c"][i])))
            hp = head_pose_from_rotation(torch.as_tensor(np.asarray(nf.cam_R_w2c, np.float64)))
            r["photo_head_deg"].append(float(angular_error_deg(hp, torch.from_numpy(ex["face_head_pose"][i]))))
    # ---- end to end through the runner (both formats), written files included
    for fmt, d, extra in (("xgaze", xdir, {}), ("photo", pdir, {"photo_focal_factor": 2.05})):
        out = os.path.join(work, f"out_{fmt}{size}")
        t = time.perf_counter()
        s = run(PreprocessConfig(d, out, progress=False, fit_appearance=fit_appearance, **extra), log=lambda m: None)
        r[f"e2e_{fmt}_s"] = time.perf_counter() - t
        r[f"e2e_{fmt}_rows"] = s.rows
        r[f"e2e_{fmt}_valid"] = s.valid_rows
        r[f"e2e_{fmt}_fit_s"] = sum(st.get("fit_s", 0.0) for st in s.stats.values())
        r[f"e2e_{fmt}_subjects"] = max(1, len(s.stats))
    return r


def report(results: list, fit_appearance: bool) -> str:
    lines = ["| measure | " + " | ".join(f"{r['size']} px" for r in results) + " |",
             "|---|" + "---|" * len(results)]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("XGaze layout: detection rate", lambda r: f"{r['detected']}/{r['rows']}")
    row("XGaze layout: head pose (PnP) error, median deg", lambda r: _pct(r["pnp_deg"]))
    row("XGaze layout: 68-landmark error, median % IOD", lambda r: _pct(r["lm_pct"]))
    row("XGaze layout: iris-centre error, median % IOD", lambda r: _pct(r["iris_pct"]))
    row("XGaze layout: head-mask IoU, median", lambda r: _pct(r["head_iou"]))
    row("XGaze layout: eye-mask IoU, median", lambda r: _pct(r["eye_iou"]))
    row("latent fit: landmark reprojection RMS, median px", lambda r: _pct(r["fit_rms_px"]))
    row("latent fit: landmark reprojection RMS, median % IOD", lambda r: _pct(r["fit_rms_pct"]))
    row("photo folder: detection rate", lambda r: f"{r['photo_detected']}/{r['photo_rows']}")
    row("photo folder: normalised camera rotation error, median deg", lambda r: _pct(r["photo_rot_deg"]))
    row("photo folder: head-pose error, median deg", lambda r: _pct(r["photo_head_deg"]))

    def per(t, n):
        return f"{n / t:.1f}" if t > 0 else "n/a"

    row("images/s: detection (mediapipe 478 + iris)", lambda r: per(r["t_detect"], r["rows"]))
    row("images/s: PnP", lambda r: per(r["t_pnp"], r["detected"]))
    row("images/s: masks", lambda r: per(r["t_masks"], r["detected"]))
    row("images/s: detect + normalise (photo)", lambda r: per(r["t_norm"], r["n_norm"]))
    row("latent fit: seconds per subject (rows)", lambda r: ", ".join(f"{t:.1f} ({n})" for t, n in zip(r["t_fit"], r["fit_rows"])))
    row("images/s end to end, XGaze layout (this run)", lambda r: per(r["e2e_xgaze_s"], r["e2e_xgaze_rows"]))
    row("images/s end to end, photo folder (this run)", lambda r: per(r["e2e_photo_s"], r["e2e_photo_rows"]))

    def projected(fmt):
        # per-row cost = the end-to-end time minus the latent fits of the same run, spread over its rows;
        # a 900-row subject then pays that per row plus one fit (the fit's cost hardly grows with rows).
        def f(r):
            fixed = r[f"e2e_{fmt}_fit_s"] / r[f"e2e_{fmt}_subjects"]
            per_row = max(1e-6, (r[f"e2e_{fmt}_s"] - r[f"e2e_{fmt}_fit_s"]) / max(1, r[f"e2e_{fmt}_rows"]))
            return f"{900 / (900 * per_row + fixed):.1f} ({per_row * 1000:.0f} ms/row + {fixed:.1f} s/subject)"
        return f

    row("images/s end to end, XGaze layout, projected 900-row subject", projected("xgaze"))
    row("images/s end to end, photo folder, projected 900-row subject", projected("photo"))
    renders = ", ".join(f"{r['render_s']:.0f}" for r in results)
    head = (f"colour fit: {'on' if fit_appearance else 'off'}; rows: {results[0]['rows']} per size "
            f"(rendering the fixtures took {renders} s, not counted)")
    return head + "\n\n" + "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 256], help="patch sizes to render and measure")
    p.add_argument("--rows", type=int, default=12, help="rows per synthetic subject")
    p.add_argument("--subjects", type=int, default=2, help="synthetic subjects per format and size")
    p.add_argument("--no_appearance_fit", action="store_true", help="measure without the latent colour fit")
    p.add_argument("--keep", default=None, help="keep the fixtures and outputs in this folder (default: a temp dir)")
    args = p.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "2"))))
    work = args.keep or tempfile.mkdtemp(prefix="bench_preprocess_")
    os.makedirs(work, exist_ok=True)
    try:
        results = [bench_size(s, args.rows, args.subjects, work, not args.no_appearance_fit) for s in args.sizes]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, not args.no_appearance_fit))


if __name__ == "__main__":
    main()
