"""Where do the degrees of a redirection go? A breakdown of a trained model's exact-readout gaze error.

Prints numbers only (no asserts). Usage:

    python benchmarks/bench_redirection.py --model_path runs/quickstart [--dataset data/synthetic]
        [--sources 12] [--fit_cams 0] [--json out.json]

Every number is the exact gaze readout (``HeadNeRF.evaluation.readout``) of a render against the gaze it
was asked for; nothing here re-implements the readout. Groups of pairs (source row A, target gaze B):

* ``seen/heldout-frame``: A = held-out frames of training subjects (seen cameras), B = **every** other
  frame of A's subject and camera (training frames' gazes included), rendered with A's exact code;
* ``seen/train-frame``: A = training rows of the same subjects (the rows the model was fitted to);
* ``unseen/exact-code``: A = rows of the test subject, rendered with its exact generator code (no fit):
  the model's own generalisation to a new face, without any fitting error;
* ``unseen/fit-<init>``: ``evaluation.exact_render.ground_truth_quality`` (codes-only fit from the checkpoint's mean
  code or from the row's exact code) for each ``--fit_cams`` source camera: the fit's error on top.

For every group: the error of the redirected renders, by view (camera yaw bin), by the size of the
requested change (angle between A's and B's gaze), by subject; the **reconstruction** error (the model
rendered at A's own gaze, read against A's label: can it redraw a gaze it was given?); and the
**gain** of the change it draws: the least-squares slope of (read - A's gaze) on (B - A's gaze) per
component (1 = the full change, < 1 under-rotation), with the residual error after that linear map.
References beside each: copying A (read against B) and the readout's floor (the generator's exact
render of B read back).
"""

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAGNITUDE_BINS_DEG = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 180.0))


def magnitude_bin(deg: float) -> str:
    """Name of the :data:`MAGNITUDE_BINS_DEG` bin of a requested gaze change in degrees."""
    for lo, hi in MAGNITUDE_BINS_DEG:
        if lo <= deg < hi:
            return f"change {lo:g}-{hi:g}°" if hi < 180 else f"change >{lo:g}°"
    return "change ?"


def gain_fit(source, target, read):
    """Per-component least-squares gain of the drawn change on the requested one.

    Args: source, target, read: (n, 2) eye-in-head (pitch, yaw) rad: A's gaze, the request, the readout.
    Returns: {"gain_pitch", "gain_yaw", "residual_deg_mean"}: slope through the origin of (read - source) on
        (target - source) per component, and the mean angular error left after scaling the request by it.
    """
    import torch

    from HeadNeRF.geometry.gaze import angular_error_deg

    req, got = target - source, read - source
    ok = torch.isfinite(got).all(1)
    req, got, src = req[ok], got[ok], source[ok]
    if len(req) == 0:
        return {"gain_pitch": math.nan, "gain_yaw": math.nan, "residual_deg_mean": math.nan}
    gain = (req * got).sum(0) / req.square().sum(0).clamp_min(1e-12)  # (2,)
    resid = angular_error_deg(src + gain * req, src + got)
    return {"gain_pitch": float(gain[0]), "gain_yaw": float(gain[1]), "residual_deg_mean": float(resid.mean())}


def _stats(values) -> str:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return f"{v.mean():5.2f} / {np.median(v):5.2f} (n={len(v)})" if len(v) else "  nan (n=0)"


def redirect_rows(model, ds, rows, device, targets_per_source: int | None = None) -> list[dict]:
    """Redirect each dataset row in ``rows`` (indices into ``ds``) to every other frame's gaze of its subject
    and camera, with the row's exact code, and read every render. Returns one dict per (A, B) pair with
    the readouts of the model, of copying A, of the model at A's own gaze and of the exact target."""
    import h5py
    import numpy as np
    import torch

    from HeadNeRF.data.synthetic import render_view
    from HeadNeRF.evaluation.readout import GazeReadout, view_yaw_deg
    from HeadNeRF.geometry.gaze import angular_error_deg
    from HeadNeRF.models import eval_mode
    from HeadNeRF.geometry.gaze import gaze_in_head_frame
    from HeadNeRF.loop import to_device as _to

    train_frames = set(range(10_000)) - set(ds.split.heldout_frames)
    pairs = []
    for i in rows:
        sid, row, cam, frame, _ = ds.rows[i]
        with h5py.File(ds.paths[sid], "r") as f:
            supersample = int(f.attrs.get("supersample", 1))
            cams, frames = np.asarray(f["cam_index"][:]), np.asarray(f["frame_index"][:])
            valid = np.asarray(f["valid_mask"][:], dtype=bool)
            targets = [int(r) for r in np.flatnonzero(valid & (cams == cam) & (frames != frame))]
            if targets_per_source is not None and len(targets) > targets_per_source:  # evenly over the frames
                targets = [targets[(k * len(targets)) // targets_per_source] for k in range(targets_per_source)]
            if not targets:
                continue
            code = f["latent_code"][row]
            gaze_b = torch.as_tensor(np.asarray(f["face_gaze"][targets], dtype=np.float32))
            R_b = torch.as_tensor(np.asarray(f["cam_R_w2c"][targets], dtype=np.float32))
            frames_b = [int(frames[r]) for r in targets]
        n = len(targets)
        a = ds[i]
        gaze_b = gaze_in_head_frame(gaze_b, R_b)  # (n, 2)
        gaze_a = gaze_in_head_frame(a["gaze"][None], a["R_w2c"][None])  # (1, 2)
        exact = render_view(code, a["R_w2c"][None].expand(n, 3, 3), a["t_w2c"][None].expand(n, 3),
                            a["K"][None].expand(n, 3, 3), ds.image_size, gaze_b, supersample=supersample)
        exact = torch.as_tensor(np.asarray(exact["image"])).float().div(255)  # (n, S, S, 3)
        A = {k: v.expand(n, *v.shape[1:]) for k, v in _to(torch.utils.data.default_collate([a]), device).items()
             if torch.is_tensor(v)}
        gazes = torch.cat([gaze_b, gaze_a]).to(device)  # the last render: A's own gaze
        with eval_mode(model), torch.no_grad():
            out = model(torch.cat([A["shape_code"], A["shape_code"][:1]]),
                        torch.cat([A["appearance_code"], A["appearance_code"][:1]]),
                        torch.cat([A["R_w2c"], A["R_w2c"][:1]]), torch.cat([A["t_w2c"], A["t_w2c"][:1]]),
                        torch.cat([A["K"], A["K"][:1]]), gaze_head=gazes,
                        eye_mask=torch.cat([A["eye_mask"], A["eye_mask"][:1]]))["image"]
        renders = out.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu()
        ro = GazeReadout(code, a["R_w2c"], a["t_w2c"], a["K"], ds.image_size, supersample)
        images = torch.cat([renders, a["image"].permute(1, 2, 0)[None], exact])
        reads = torch.stack([r["gaze_head"] for r in ro.read_batch(images)])
        model_read, own_read, copy_read, exact_read = reads[:n], reads[n], reads[n + 1], reads[n + 2:]
        yaw = float(view_yaw_deg(a["R_w2c"], a["t_w2c"]))
        change = angular_error_deg(gaze_a.expand(n, 2), gaze_b)
        err = angular_error_deg(model_read, gaze_b)
        copy_err = angular_error_deg(copy_read[None].expand(n, 2), gaze_b)
        floor = angular_error_deg(exact_read, gaze_b)
        recon = float(angular_error_deg(own_read[None], gaze_a))
        copy_recon = float(angular_error_deg(copy_read[None], gaze_a))
        for j in range(n):
            pairs.append({"subject": int(sid), "cam": int(cam), "frame": int(frame), "target_frame": frames_b[j],
                          "target_is_train_frame": frames_b[j] in train_frames, "view_yaw_deg": yaw,
                          "change_deg": float(change[j]), "source": gaze_a[0].tolist(), "target": gaze_b[j].tolist(),
                          "read": model_read[j].tolist(), "error_deg": float(err[j]),
                          "copy_error_deg": float(copy_err[j]), "floor_deg": float(floor[j]),
                          "recon_error_deg": recon, "copy_recon_deg": copy_recon})
    return pairs


def spread_over_views(ds, rows: list, count: int) -> list:
    """At most ``count`` of ``rows`` (indices into ``ds``): the cameras in turn, and within each camera a stride
    through its (subject, frame)-ordered rows that moves on to the next subject each time (the dataset's rows
    are frame-major, so an even stride over them can land on one or two cameras, or on one subject)."""
    if len(rows) <= count:
        return sorted(rows)
    by_cam: dict[int, list] = {}
    for i in sorted(rows, key=lambda i: (ds.rows[i].cam, ds.rows[i].subject, ds.rows[i].frame)):
        by_cam.setdefault(ds.rows[i].cam, []).append(i)
    cams = sorted(by_cam)
    picked = []
    for k in range(count):
        group = by_cam[cams[k % len(cams)]]
        stride = len(group) // len({ds.rows[i].subject for i in group}) + 1
        picked.append(group[(k * stride) % len(group)])
    return sorted(set(picked))


def summarise(name: str, pairs: list[dict]) -> dict:
    """Print and return the breakdown of one group of pairs."""
    import torch

    from HeadNeRF.evaluation.readout import view_bin

    def col(key, sel=None):
        return [p[key] for p in pairs if sel is None or sel(p)]

    print(f"\n== {name}: {len(pairs)} pairs, mean / median °", flush=True)
    out = {"pairs": len(pairs)}
    for key, label in (("error_deg", "redirected"), ("copy_error_deg", "copy A"), ("floor_deg", "floor")):
        print(f"  {label:28s} {_stats(col(key))}")
    recon = {(p["subject"], p["cam"], p["frame"]): (p["recon_error_deg"], p["copy_recon_deg"]) for p in pairs}
    print(f"  {'reconstruction (own gaze)':28s} {_stats([v[0] for v in recon.values()])}   "
          f"dataset image read vs its label {_stats([v[1] for v in recon.values()])}")
    groups = {"view": lambda p: view_bin(p["view_yaw_deg"]), "change": lambda p: magnitude_bin(p["change_deg"]),
              "subject": lambda p: f"subject {p['subject']}",
              "target": lambda p: "target gaze of a training frame" if p["target_is_train_frame"] else
              "target gaze of a held-out frame"}
    for gname, key in groups.items():
        for k in sorted({key(p) for p in pairs}):
            sel = [p for p in pairs if key(p) == k]
            print(f"  {k:34s} {_stats([p['error_deg'] for p in sel])}  copy {_stats([p['copy_error_deg'] for p in sel])}")
            out[f"{gname}: {k}"] = [p["error_deg"] for p in sel]
    g = gain_fit(*(torch.tensor([p[k] for p in pairs]) for k in ("source", "target", "read")))
    print(f"  gain of the drawn change: pitch {g['gain_pitch']:.2f}, yaw {g['gain_yaw']:.2f}; "
          f"error left after that linear map {g['residual_deg_mean']:.2f}° mean")
    out.update(g)
    for key in ("error_deg", "copy_error_deg", "floor_deg", "recon_error_deg"):
        vals = [p[key] for p in pairs if math.isfinite(p[key])]
        out[f"{key}_mean"] = sum(vals) / max(len(vals), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default="runs/quickstart")
    p.add_argument("--dataset", default="data/synthetic")
    p.add_argument("--sources", type=int, default=12, help="source rows per seen group (spread over the subjects)")
    p.add_argument("--unseen_sources", type=int, default=8, help="source rows of the test subject (exact code)")
    p.add_argument("--fit_cams", type=int, nargs="*", default=[0], help="source cameras of the codes-only fits")
    p.add_argument("--targets", type=int, default=None, help="target gazes per source (default: every other frame)")
    p.add_argument("--groups", nargs="*", default=["seen/heldout-frame", "seen/train-frame", "unseen/exact-code", "fit"],
                   help="which groups to measure (fit: the codes-only fits)")
    p.add_argument("--fit_inits", nargs="*", default=["mean", "row"], help="code inits of the fits (mean, row)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the per-pair records here")
    args = p.parse_args()

    import torch

    from HeadNeRF.data.dataset import GazeDataset
    from HeadNeRF.data.dataset import split_val_rows
    from HeadNeRF.evaluation.exact_render import ground_truth_quality
    from HeadNeRF.fitting import FitConfig, load_trained_model

    torch.set_num_threads(args.threads)
    model, info = load_trained_model(args.model_path, "cpu")
    val = GazeDataset(args.dataset, "val", image_size=info.image_size)
    train = GazeDataset(args.dataset, "train", image_size=info.image_size)
    test = GazeDataset(args.dataset, "test", image_size=info.image_size)
    frame_rows, _ = split_val_rows(val)
    groups = {
        "seen/heldout-frame": (val, spread_over_views(val, frame_rows, args.sources)),
        "seen/train-frame": (train, spread_over_views(train, list(range(len(train))), args.sources // 2)),
        "unseen/exact-code": (test, spread_over_views(test, list(range(len(test))), args.unseen_sources)),
    }
    records, summary = {}, {}
    for name, (ds, rows) in groups.items():
        if name not in args.groups:
            continue
        records[name] = redirect_rows(model, ds, rows, "cpu", args.targets)
        summary[name] = summarise(name, records[name])
    for init in args.fit_inits if "fit" in args.groups else ():
        for cam in args.fit_cams:
            q = ground_truth_quality(model, info, args.dataset, init=init, source_cam=cam, cfg=FitConfig())
            name = f"unseen/fit-{init}/cam{cam}"
            summary[name] = {k: v for k, v in q.items() if k.startswith(("b_gaze", "a_", "c_", "b_eye"))}
            print(f"\n== {name} (codes-only fit): redirected {q.get('b_gaze_error_deg_model_mean', math.nan):.2f} / "
                  f"{q.get('b_gaze_error_deg_model_median', math.nan):.2f}, not redirected "
                  f"{q.get('b_gaze_error_deg_no_redirection_mean', math.nan):.2f}, copy "
                  f"{q.get('b_gaze_error_deg_copy_input_mean', math.nan):.2f}, floor "
                  f"{q.get('b_gaze_error_deg_floor_mean', math.nan):.2f}; same-view head PSNR "
                  f"{q['a_same_view_psnr_head']:.2f} dB", flush=True)
    if args.json:
        from HeadNeRF.atomic_io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"summary": summary, "pairs": records}, indent=1))


if __name__ == "__main__":
    main()
