"""Gaze controllability map: does the rendered gaze follow the requested one?

Needs no target image, so it also runs on subjects without gaze labels (ETH-XGaze test
subjects). For each selected input row, the ``codes`` fit (the same seeded fit the pairs
use) is rendered at every cell of a pitch × yaw grid of requested **eye-in-head** gazes
(``ControllabilityConfig``; head frame, so every view is asked for the same eyeball rotations,
inside the range the model was trained on, whatever the camera). The camera (``view``) is by
default the input's camera turned about the head to see it frontally (head pose (0, 0), same
distance, the eye mask from the head model's eye landmarks): the map asks whether the eyes follow
the request, and a near-profile input would otherwise show one eye a few pixels wide (measured on
the quickstart: the two profile inputs the protocol picks read 12.8° in their own view, where the
exact renders read back within 0.1°; other inputs read ~3°). ``view: input`` draws it in the input's
own camera. Each request is turned into the map camera's frame (``rotate_pitch_yaw(g, R_w2c)``), the
estimator reads each render, and the cell's error is the angle between the reading and that
camera-frame request. On synthetic subjects the exact readout (``readout.py``) also reads each
render in the map's view: requested vs read eye-in-head gaze per cell, no learned estimator. The map
is the mean over the inputs (the per-subject maps are kept too), drawn as a heat map PNG with the
mean error in the title.

Beside it, the **ignore-the-request** references: the same error for an answer that never
looks at the request, (a) the input's own gaze (its label, else the estimator's reading of the
input) and (b) the grid's centre, each compared with every cell's camera-frame request. A map
whose mean is near these says nothing about control: the requests span only some tens of
degrees, so even a constant answer scores "only" about half of that span.
"""

import warnings

import numpy as np
import torch

from tqdm import tqdm

from ..atomic_io import atomic_write
from ..fitting import eye_mask_for_view
from ..geometry.gaze import gaze_in_head_frame, rotate_pitch_yaw
from ..models import camera_for_head_pose
from . import metrics as M
from .protocol import dataset_item, estimator_reading, fit_input, render_at, row_estimate, row_readout

__all__ = ["controllability", "gaze_grid", "plot_controllability"]


def gaze_grid(pitch_range, yaw_range, resolution) -> torch.Tensor:
    """(rows, cols, 2) requested eye-in-head (pitch, yaw): pitch from high (top row) to low, yaw from low to high."""
    rows, cols = resolution
    pitch = torch.linspace(float(pitch_range[1]), float(pitch_range[0]), rows) if rows > 1 else \
        torch.tensor([(pitch_range[0] + pitch_range[1]) / 2.0])
    yaw = torch.linspace(float(yaw_range[0]), float(yaw_range[1]), cols) if cols > 1 else \
        torch.tensor([(yaw_range[0] + yaw_range[1]) / 2.0])
    return torch.stack(torch.meshgrid(pitch, yaw, indexing="ij"), -1)


def map_view(ctx, subject: int, row: int, fit) -> tuple[dict, object]:
    """The map's camera for an input row and its fit (``ControllabilityConfig.view``) as an item-like dict
    {R_w2c (3,3), t_w2c (3,), K (3,3), eye_mask (1,S,S)}, and its exact readout (None without one).

    "frontal": the eye mask comes from the head model's eye landmarks at the fit's code (synthetic layout; else
    the mean head), as any new view of a fit (``fitting.eye_mask_for_view``); the readout from the generator's."""
    item = dataset_item(ctx, subject, row)
    synthetic = subject in ctx.readout
    if ctx.cfg.controllability.view == "input":
        return item, row_readout(ctx, subject, row) if synthetic else None
    R, t = camera_for_head_pose(item["R_w2c"][None], item["t_w2c"][None], torch.zeros(1, 2))
    fitted = torch.cat((fit.shape_code, fit.appearance_code), -1).cpu().numpy() if synthetic else None
    view = {"R_w2c": R[0], "t_w2c": t[0], "K": item["K"],
            "eye_mask": eye_mask_for_view(R, t, item["K"][None], ctx.image_size, fitted)[0]}
    return view, row_readout(ctx, subject, row, view, "frontal") if synthetic else None


def _nanmean(x) -> float | None:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def controllability(ctx, inputs: list[tuple[int, int]], fit_cache: dict, progress: bool = True) -> dict:
    """Errors per grid cell for the given (subject, input_row) list.

    ``fit_cache``: {(subject, row): {"codes": FitResult}} reused when present (fits are made
    with ``protocol.fit_input`` otherwise). Returns a JSON-able dict: grid, per-input and mean maps,
    per-subject means, overall mean (estimator; None without one), the ``readout`` maps on synthetic
    subjects (requested vs read eye-in-head gaze per cell), and the ``ignore_request`` references.
    """
    cc = ctx.cfg.controllability
    grid = gaze_grid(cc.pitch_range, cc.yaw_range, cc.resolution)
    rows, cols = grid.shape[:2]
    centre = torch.tensor([[(cc.pitch_range[0] + cc.pitch_range[1]) / 2.0, (cc.yaw_range[0] + cc.yaw_range[1]) / 2.0]])
    flat_head = grid.reshape(-1, 2).double()
    per_input = []
    for subject, row in tqdm(inputs, desc="controllability", disable=not progress, dynamic_ncols=True):
        fit = fit_cache.get((subject, row), {}).get("codes")
        if fit is None:
            fit = fit_input(ctx, subject, row, ["codes"])["codes"]
        item = dataset_item(ctx, subject, row)
        view, readout = map_view(ctx, subject, row, fit)
        requests = rotate_pitch_yaw(grid.reshape(-1, 2), view["R_w2c"][None])  # (rows*cols, 2) camera frame
        renders = [render_at(fit, view, req) for req in requests]  # (1, 3, S, S) each
        entry = {"subject": subject, "input_row": row, "view": ctx.cfg.controllability.view}
        if ctx.estimator is not None:
            err = [M.angle_error_deg(estimator_reading(ctx, im)["gaze"], req.double().tolist()) for im, req in zip(renders, requests)]
            entry["errors_deg"] = np.reshape(err, (rows, cols)).tolist()
            entry["mean_deg"] = float(np.mean(err))
        if readout is not None:  # the generator's gaze that draws each render, in the map's view
            reads = readout.read_batch([im[0].permute(1, 2, 0).clamp(0, 1) for im in renders])
            read = np.array([[float(x) for x in r["gaze_head"]] for r in reads])  # (rows*cols, 2), NaN: no eye visible
            err = [M.angle_error_deg(g, q) if np.isfinite(g).all() else np.nan for g, q in zip(read, flat_head.tolist())]
            entry["readout_read_head"] = read.reshape(rows, cols, 2).tolist()
            entry["readout_errors_deg"] = np.reshape(err, (rows, cols)).tolist()
            entry["readout_mean_deg"] = _nanmean(err)
        if ctx.subjects[subject].gaze_valid[row]:
            own = item["gaze"]
        else:
            own = torch.tensor(row_estimate(ctx, subject, row)["gaze"]) if ctx.estimator is not None else None
        if own is not None:  # the input's eyeball direction, seen from the map's camera
            own = rotate_pitch_yaw(gaze_in_head_frame(own.reshape(1, 2).float(), item["R_w2c"][None]),
                                   view["R_w2c"][None])[0].double().tolist()
        centre_cam = rotate_pitch_yaw(centre, view["R_w2c"][None])[0].double().tolist()
        flat = requests.double().tolist()
        entry["ignore_request"] = {  # rotations keep angles: the same in the head frame
            "input_gaze_deg": _nanmean([M.angle_error_deg(own, q) for q in flat]),
            "grid_centre_deg": _nanmean([M.angle_error_deg(centre_cam, q) for q in flat])}
        per_input.append(entry)
    out = {"pitch": grid[:, 0, 0].tolist(), "yaw": grid[0, :, 1].tolist(), "inputs": per_input, "mean_deg": None,
           "view": cc.view}
    if not per_input:
        return out
    subjects = sorted({p["subject"] for p in per_input})
    est = [p for p in per_input if "errors_deg" in p]
    if est:
        maps = np.array([p["errors_deg"] for p in est])
        out["mean_map_deg"] = maps.mean(0).tolist()
        out["mean_deg"] = float(maps.mean())
        out["per_subject_mean_deg"] = {str(s): float(np.mean([p["mean_deg"] for p in est if p["subject"] == s]))
                                       for s in subjects if any(p["subject"] == s for p in est)}
    ro = [p for p in per_input if "readout_errors_deg" in p]
    if ro:
        maps = np.array([p["readout_errors_deg"] for p in ro], dtype=float)
        reads = np.array([p["readout_read_head"] for p in ro], dtype=float)
        with warnings.catch_warnings():  # a cell no input's eyes were visible in stays NaN ("nan" in the map)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_map, mean_read = np.nanmean(maps, 0), np.nanmean(reads, 0)
        out["readout"] = {
            "mean_map_deg": mean_map.tolist(), "mean_deg": _nanmean(maps),
            "median_deg": float(np.nanmedian(maps)) if np.isfinite(maps).any() else None,
            "mean_read_head": mean_read.tolist(), "inputs": len(ro),
            "per_subject_mean_deg": {str(s): _nanmean([p["readout_mean_deg"] for p in ro if p["subject"] == s])
                                     for s in subjects if any(p["subject"] == s for p in ro)}}
    out["ignore_request"] = {k: _nanmean([p["ignore_request"][k] for p in per_input])
                             for k in ("input_gaze_deg", "grid_centre_deg")}
    return out


def _heat(ax, err: np.ndarray, pitch, yaw, title: str):
    im = ax.imshow(err, cmap="magma_r", vmin=0)
    ax.set_xticks(range(len(yaw)), [f"{y:.0f}" for y in yaw])
    ax.set_yticks(range(len(pitch)), [f"{p:.0f}" for p in pitch])
    ax.set_xlabel("requested eye-in-head yaw (deg)")
    ax.set_ylabel("requested eye-in-head pitch (deg)")
    top = np.nanmax(err) if np.isfinite(err).any() else 1.0
    for i in range(err.shape[0]):
        for j in range(err.shape[1]):
            ax.text(j, i, f"{err[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if err[i, j] > 0.6 * max(top, 1e-9) else "black")
    ax.set_title(title, fontsize=9)
    return im


def plot_controllability(result: dict, path: str) -> None:
    """Heat maps of the mean error per requested gaze (estimator and/or exact readout; degrees) and, with the
    readout, the requested vs read eye-in-head gazes; written to ``path`` (PNG)."""
    import matplotlib  # lazy: only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pitch, yaw = np.degrees(result["pitch"]), np.degrees(result["yaw"])
    ign = result.get("ignore_request") or {}
    def deg(x, digits=2):
        return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}°"

    ref = f"\nignoring the request: {deg(ign.get('input_gaze_deg'), 1)} (input's gaze), {deg(ign.get('grid_centre_deg'), 1)} (centre)"
    panels = []
    if result.get("mean_map_deg") is not None:
        panels.append(("heat", np.array(result["mean_map_deg"], dtype=float),
                       f"estimator vs request ({result.get('view', 'input')} view): mean {deg(result['mean_deg'])} over "
                       f"{len(result['inputs'])} inputs{ref}"))
    ro = result.get("readout")
    if ro:
        panels.append(("heat", np.array(ro["mean_map_deg"], dtype=float),
                       f"exact readout vs request ({result.get('view', 'input')} view): mean {deg(ro['mean_deg'])} over "
                       f"{ro['inputs']} inputs{ref}"))
        panels.append(("arrows", np.array(ro["mean_read_head"], dtype=float), "requested (o) -> read (x), eye-in-head"))
    w = 1.1 * len(yaw) + 2.6
    fig, axes = plt.subplots(1, len(panels), figsize=(w * len(panels), 0.9 * len(pitch) + 2.0), squeeze=False)
    for ax, (kind, data, title) in zip(axes[0], panels):
        if kind == "heat":
            fig.colorbar(_heat(ax, data, pitch, yaw, title), ax=ax, label="angular error (deg)")
        else:
            P, Y = np.meshgrid(pitch, yaw, indexing="ij")
            rp, ry = np.degrees(data[..., 0]), np.degrees(data[..., 1])
            for a, b, c, d in zip(Y.ravel(), P.ravel(), ry.ravel(), rp.ravel()):
                ax.plot([a, c], [b, d], color="tab:gray", lw=0.8)
            ax.scatter(Y.ravel(), P.ravel(), marker="o", facecolors="none", edgecolors="tab:blue", label="requested")
            ax.scatter(ry.ravel(), rp.ravel(), marker="x", color="tab:red", label="read (mean over inputs)")
            ax.set_xlabel("eye-in-head yaw (deg)")
            ax.set_ylabel("eye-in-head pitch (deg)")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
