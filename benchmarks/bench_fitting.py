"""Single-image fitting: the time of each stage of the whole command, and (``--quality``) its quality against
the generator's exact renders on the synthetic test subject.

Prints numbers only (no asserts). Usage:

    python benchmarks/bench_fitting.py [--model_path runs/quickstart] [--img PHOTO] [--repeats 1]
    python benchmarks/bench_fitting.py --quality [--dataset data/synthetic] [--finetune_steps 30]

Speed: runs ``FittingSingleImage.py`` as a subprocess (so start-up and imports count), on the
astronaut of scikit-image by default, ``--repeats`` times, and prints the subprocess's wall time
plus the per-stage wall and CPU seconds from its ``fit.json``. On a shared machine the wall
times depend on the other load; the CPU seconds do not (much).

Quality (``fitting.ground_truth_quality``): fit one image of each test subject (frontal camera,
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
    from HeadNeRF.fitting import FitConfig, ground_truth_quality, load_trained_model

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
    args = p.parse_args()
    if args.quality:
        if args.finetune_steps == 0:
            args.finetune_steps = 30
        bench_quality(args)
    else:
        bench_speed(args)


if __name__ == "__main__":
    main()
