"""Single-image fitting: the time of each stage of the whole command, and (``--quality``) its quality against
the generator's exact renders on the synthetic test subject.

Prints numbers only (no asserts). Usage:

    python benchmarks/bench_fitting.py [--model_path runs/quickstart] [--img PHOTO] [--repeats 1]
    python benchmarks/bench_fitting.py --quality [--dataset data/synthetic] [--finetune_steps 30]
    python benchmarks/bench_fitting.py --warp [--dataset data/synthetic] [--model_path runs/quickstart]

Warp (``--warp``, issue 16): the photo eye warp (``HeadNeRF.eyewarp``) on same-camera redirection pairs of
the synthetic test subject at 64 and 256 px, against the generator's exact renders: eye PSNR and the exact
gaze readout's error per redirection bin, next to copying the input and (with a checkpoint) the NeRF fit
(codes only, codes + fine-tuning); then the warp's time per frame on a 1024 px photo. With ``--estimator
RUN`` (a gaze/head-pose estimator run, e.g. runs/gaze_estimator_quickstart) a second warp row,
``warp_estimator_pose``, takes the head pose from the estimator instead of the landmark PnP (rotation and,
through the layout's normalised camera, translation: ``evaluation.photo_warp.estimator_head_pose``), and
each source view's pose error of both against the true camera is printed.

Speed: runs ``FittingSingleImage.py`` as a subprocess (so start-up and imports count), on the
astronaut of scikit-image by default, ``--repeats`` times, and prints the subprocess's wall time
plus the per-stage wall and CPU seconds from its ``fit.json``. On a shared machine the wall
times depend on the other load; the CPU seconds do not (much).

Quality (``evaluation.exact_render.ground_truth_quality``): fit one image of each test subject (frontal camera,
first frame) from the checkpoint's mean code ("mean", what a photo without a usable code gets)
and from the row's exact generator code ("row", privileged), with and without fine-tuning, and
compare (a) the same view, (b) the same view at every other frame's gaze (eye region, gain over
copying the input; and the gaze each render shows, read exactly by ``evaluation.readout``, against
the requested one, beside copying the input, the fit not redirected and the readout's floor on the
exact renders) and (c) the other cameras of the same frame, with the generator's renders.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_speed(args) -> None:
    img = args.img
    tmp = tempfile.mkdtemp(prefix="bench_fitting_")
    if img is None:
        import imageio.v2 as imageio
        import skimage.data

        img = os.path.join(tmp, "astronaut.png")
        imageio.imwrite(img, skimage.data.astronaut())
    for r in range(args.repeats):
        out = os.path.join(tmp, f"out{r}")
        cmd = [sys.executable, str(ROOT / "FittingSingleImage.py"), "--model_path", args.model_path, "--img", img,
               "--save_root", out, "--no_progress", "--finetune_steps", str(args.finetune_steps),
               "--device", args.device, "--gaze_targets", "0.2,0.3;0,-0.4"]
        t = time.perf_counter()
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if res.returncode != 0:
            print(f"FAILED ({res.returncode}): {res.stderr.strip()}")
            return
        with open(os.path.join(out, "fit.json")) as f:
            report = json.load(f)
        s, c = report["seconds"], report.get("cpu_seconds", {})
        startup = wall - s["total"]
        print(f"run {r}: whole command {wall:.1f} s wall (start-up and imports {startup:.1f} s)")
        for k in ("load_model", "face_analysis", "code_init", "fit", "outputs", "total"):
            print(f"  {k:14s} {s.get(k, float('nan')):6.2f} s wall  {c.get(k, float('nan')):6.2f} s CPU")
        print(f"  fit steps {report['fit']['steps_run']}, head PSNR {report['fit']['psnr_head']:.2f} dB")


def bench_quality(args) -> None:
    import torch

    from HeadNeRF.data.dataset import GazeDataset
    from HeadNeRF.evaluation.exact_render import ground_truth_quality
    from HeadNeRF.fitting import FitConfig, load_trained_model

    torch.set_num_threads(args.threads)
    model, info = load_trained_model(args.model_path, args.device)
    subjects = sorted({r.subject for r in GazeDataset(args.dataset, "test").rows})
    rows = []
    for sid in subjects:
        for init in ("mean", "row"):
            for ft in (0, args.finetune_steps):
                q = ground_truth_quality(model, info, args.dataset, subject=sid, init=init,
                                         cfg=FitConfig(finetune_steps=ft), progress=False)
                q["finetune_steps"] = ft
                rows.append(q)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in q.items()}), flush=True)
    nan = float("nan")
    print("\n| subject | init | fine-tune | (a) same view, head PSNR | (b) other gazes, eye PSNR: fit / copy input / gain "
          "| (b) gaze error ° (exact readout, mean): fit / copy input / fit not redirected / floor | check "
          "| (c) other cameras, head PSNR (exact code, no fit) | fit s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for q in rows:
        print(f"| {q['subject']} | {q['init']} | {q['finetune_steps']} | {q['a_same_view_psnr_head']:.2f} | "
              f"{q.get('b_eye_psnr_model', nan):.2f} / {q.get('b_eye_psnr_copy_input', nan):.2f} / "
              f"{q.get('b_eye_psnr_gain_db', nan):+.2f} dB ({q.get('b_pairs', 0)} gazes) | "
              f"{q.get('b_gaze_error_deg_model_mean', nan):.1f} / {q.get('b_gaze_error_deg_copy_input_mean', nan):.1f} / "
              f"{q.get('b_gaze_error_deg_no_redirection_mean', nan):.1f} / {q.get('b_gaze_error_deg_floor_mean', nan):.2f} | "
              f"{'met' if q.get('b_check_met') else 'NOT met'} | "
              f"{q.get('c_other_views_psnr_head', nan):.2f} ({q.get('c_exact_code_no_fit_psnr_head', nan):.2f}; "
              f"{q.get('c_views', 0)} views) | {q['fit_seconds']:.1f} |")


def bench_warp_speed(size: int = 1024, frames: int = 16) -> dict:
    """Seconds per redirected frame of the photo warp on the astronaut upscaled to ``size``^2 (face analysis
    and the eye model excluded; they are timed separately)."""
    import cv2
    import numpy as np
    import skimage.data

    from HeadNeRF.eyewarp import prepare, redirect
    from HeadNeRF.face import analyse_and_normalise

    img = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_CUBIC)
    t = time.perf_counter()
    face, a = analyse_and_normalise(img, 64)
    t_face = time.perf_counter() - t
    t = time.perf_counter()
    red = prepare(img, a.lm478, face.K_image, face.R_image, face.t_image, face.cam_R_w2c)
    t_model = time.perf_counter() - t
    gazes = [(0.2 * np.sin(x), 0.3 * np.cos(x)) for x in np.arange(frames) * 2 * np.pi / frames]
    t = time.perf_counter()
    for g in gazes:
        redirect(img, red, np.array(g))
    per = (time.perf_counter() - t) / frames
    return {"size": size, "face_analysis_s": t_face, "eye_model_s": t_model, "per_frame_s": per, "frames": frames}


def _nerf_methods(args):
    """NeRF fit columns: fit the 64 px dataset row of each pair's source once (codes only; codes + fine-tuning),
    render the requested eye-in-head gaze, resize to the pair's size."""
    import cv2
    import numpy as np
    import torch

    from HeadNeRF.data.dataset import GazeDataset
    from HeadNeRF.fitting import FitConfig, fit_image, load_trained_model, render_fit, target_from_dataset_row

    model, info = load_trained_model(args.model_path, args.device)
    ds = GazeDataset(args.dataset, "test", image_size=info.image_size)
    index = {(r.subject, r.row): i for i, r in enumerate(ds.rows)}
    sid = ds.rows[0].subject
    fits = {}

    def method(ft):
        def run(p):
            key = (p.row, ft)
            if key not in fits:
                target = target_from_dataset_row(ds, index[(sid, p.row)], code=info.code_mean,
                                                 code_init="checkpoint code_mean")
                torch.manual_seed(0)
                fits[key] = fit_image(model, target, FitConfig(finetune_steps=ft), progress=False)
            img = render_fit(fits[key], gaze_head=torch.tensor(p.gaze_out_head, dtype=torch.float32)[None])[0]
            arr = (img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            S = p.image_in.shape[0]
            return arr if arr.shape[0] == S else cv2.resize(arr, (S, S), interpolation=cv2.INTER_CUBIC)
        return run

    return {"nerf_codes": method(0), f"nerf_finetune{args.finetune_steps}": method(args.finetune_steps)}


def _print_pose_errors(pairs, head_pose) -> None:
    """Pose error against the true camera of each distinct source view, landmark PnP vs ``head_pose``: rotation
    (deg) and translation (relative to its length)."""
    import numpy as np

    from HeadNeRF.evaluation.photo_warp import analyse_synthetic

    def angle(A, B):
        return float(np.degrees(np.arccos(np.clip((np.trace(A.T @ B) - 1) / 2, -1, 1))))

    errors = {"pnp": [], "estimator": []}
    for p in {p.row: p for p in pairs}.values():
        try:
            poses = {"pnp": analyse_synthetic(p.image_in, p.K)[1:], "estimator": head_pose(p.image_in)}
        except Exception:  # noqa: BLE001 - a missed face is left out of this average (the table counts it)
            continue
        for k, (R, t) in poses.items():
            errors[k].append((angle(R, p.R), float(np.linalg.norm(t - p.t) / np.linalg.norm(p.t))))
    if errors["pnp"]:
        print(f"{pairs[0].image_in.shape[0]} px pose error vs the true camera, {len(errors['pnp'])} views: "
              + ", ".join(f"{k} rotation {np.mean([e[0] for e in v]):.2f} mean / {np.max([e[0] for e in v]):.2f} max deg, "
                          f"translation {100 * np.mean([e[1] for e in v]):.1f} %" for k, v in errors.items()))


def bench_warp(args) -> None:
    import numpy as np
    import torch

    from HeadNeRF.evaluation.photo_warp import evaluate_pairs, make_pairs, summarise

    torch.set_num_threads(args.threads)
    rows = []
    methods = {}  # one NeRF fit per source row, shared by the sizes
    if args.model_path and os.path.exists(args.model_path):
        methods = _nerf_methods(args)
    else:
        print(f"no checkpoint at {args.model_path}: the NeRF-fit columns are left out")
    warps = {"warp": None}  # the landmark PnP pose
    if args.estimator:
        from HeadNeRF.estimator.model import load_estimator
        from HeadNeRF.evaluation.photo_warp import estimator_head_pose

        estimator, _ = load_estimator(args.estimator)

        def head_pose(image):
            return estimator_head_pose(estimator, image)
        warps["warp_estimator_pose"] = head_pose
    for size in args.warp_sizes:
        pairs = make_pairs(args.dataset, size, rows=args.warp_rows, deltas_deg=[7.5, 12.5, 17.5, 22.5],
                           directions=args.warp_directions, seed=0)
        if "warp_estimator_pose" in warps:
            _print_pose_errors(pairs, warps["warp_estimator_pose"])
        rows += evaluate_pairs(pairs, methods, warps=warps)
    table = summarise(rows)
    print("\n| size | method | redirection | pairs (refused) | eye PSNR dB | readout gaze error mean / median deg |")
    print("|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['size']} | {t['method']} | {t['bin']} deg | {t['pairs']} ({t['refused']}) | {t['eye_psnr']:.2f} | "
              f"{t['gaze_error_mean']:.1f} / {t['gaze_error_median']:.1f} |")
    warp = [r for r in rows if r["method"] in warps and not r["refused"]]
    print(f"\nwarp outside the periocular region identical to the input: {sum(r['outside_identical'] for r in warp)}"
          f"/{len(warp)} pairs")
    for size in args.warp_sizes:
        for method in warps:
            sel = [r for r in warp if r["size"] == size and r["delta_deg"] < 20 and r["method"] == method]
            if sel:
                print(f"{size} px, redirections < 20 deg: {method} mean gaze error "
                      f"{np.mean([r['gaze_error_deg'] for r in sel]):.1f} deg on {len(sel)} pairs (target <= 4)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows": rows, "table": table}, f, indent=1)
    sp = bench_warp_speed()
    print(f"\nspeed at {sp['size']}^2: {sp['per_frame_s'] * 1000:.1f} ms per redirected frame (mean of {sp['frames']}); "
          f"eye model {sp['eye_model_s'] * 1000:.0f} ms once; face analysis {sp['face_analysis_s']:.2f} s (excluded)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_path", default="runs/quickstart", help="checkpoint (run dir or .pt)")
    p.add_argument("--img", help="photo for the speed run (default: skimage's astronaut)")
    p.add_argument("--repeats", type=int, default=1, help="speed runs")
    p.add_argument("--finetune_steps", type=int, default=0,
                   help="fine-tuning steps (speed run; --quality adds a run with this many, default 30 there)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quality", action="store_true", help="measure quality on the synthetic test subjects instead")
    p.add_argument("--dataset", default="data/synthetic", help="synthetic dataset for --quality")
    p.add_argument("--threads", type=int, default=2, help="torch threads for --quality")
    p.add_argument("--warp", action="store_true", help="measure the photo eye warp on synthetic pairs (issue 16)")
    p.add_argument("--warp_rows", type=int, nargs="+", default=[0, 8, 16, 24, 32, 40, 48, 56],
                   help="--warp: source rows of the test subject (default: camera 0, frames 0-7)")
    p.add_argument("--warp_sizes", type=int, nargs="+", default=[64, 256], help="--warp: image sizes")
    p.add_argument("--warp_directions", type=int, default=3, help="--warp: random directions per bin and row")
    p.add_argument("--json_out", help="--warp: also write every pair's numbers here")
    p.add_argument("--estimator", help="--warp: a gaze/head-pose estimator run (or .pt) whose head pose the warp "
                   "also runs with (row warp_estimator_pose), e.g. runs/gaze_estimator_quickstart")
    args = p.parse_args()
    if args.warp:
        if args.finetune_steps == 0:
            args.finetune_steps = 30
        bench_warp(args)
    elif args.quality:
        if args.finetune_steps == 0:
            args.finetune_steps = 30
        bench_quality(args)
    else:
        bench_speed(args)


if __name__ == "__main__":
    main()
