"""Gaze controllability map: does the rendered gaze follow the requested one?

Needs no target image, so it also runs on subjects without gaze labels (ETH-XGaze test
subjects). For each selected input row, the ``codes`` fit (the same seeded fit the pairs
use) is rendered from the input's own camera at every cell of a pitch × yaw grid of requested
**eye-in-head** gazes (``ControllabilityConfig``; head frame, so every view is asked for the
same eyeball rotations, inside the range the model was trained on, whatever the camera). Each
request is turned into the input camera's frame (``rotate_pitch_yaw(g, R_w2c)``), the estimator
reads each render, and the cell's error is the angle between the reading and that camera-frame
request. The map is the mean
over the inputs (the per-subject maps are kept too), drawn as a heat map PNG with the mean
error in the title.

Beside it, the **ignore-the-request** references: the same error for an answer that never
looks at the request, (a) the input's own gaze (its label, else the estimator's reading of the
input) and (b) the grid's centre, each compared with every cell's camera-frame request. A map
whose mean is near these says nothing about control: the requests span only some tens of
degrees, so even a constant answer scores "only" about half of that span.
"""

import numpy as np
import torch

from . import metrics as M

__all__ = ["controllability", "gaze_grid", "plot_controllability"]


def gaze_grid(pitch_range, yaw_range, resolution) -> torch.Tensor:
    """(rows, cols, 2) requested eye-in-head (pitch, yaw): pitch from high (top row) to low, yaw from low to high."""
    rows, cols = resolution
    pitch = torch.linspace(float(pitch_range[1]), float(pitch_range[0]), rows) if rows > 1 else \
        torch.tensor([(pitch_range[0] + pitch_range[1]) / 2.0])
    yaw = torch.linspace(float(yaw_range[0]), float(yaw_range[1]), cols) if cols > 1 else \
        torch.tensor([(yaw_range[0] + yaw_range[1]) / 2.0])
    return torch.stack(torch.meshgrid(pitch, yaw, indexing="ij"), -1)


def controllability(ctx, inputs: list[tuple[int, int]], fit_cache: dict, progress: bool = True) -> dict:
    """Errors per grid cell for the given (subject, input_row) list.

    ``fit_cache``: {(subject, row): {"codes": FitResult}} reused when present (fits are made
    with ``protocol.fit_input`` otherwise). Returns a JSON-able dict: grid, per-input and mean maps,
    per-subject means, overall mean.
    """
    from tqdm import tqdm

    from ..geometry.gaze import rotate_pitch_yaw
    from .protocol import _item, _read, _row_reading, fit_input, render_at

    cc = ctx.cfg.controllability
    grid = gaze_grid(cc.pitch_range, cc.yaw_range, cc.resolution)
    rows, cols = grid.shape[:2]
    centre = torch.tensor([[(cc.pitch_range[0] + cc.pitch_range[1]) / 2.0, (cc.yaw_range[0] + cc.yaw_range[1]) / 2.0]])
    per_input = []
    for subject, row in tqdm(inputs, desc="controllability", disable=not progress, dynamic_ncols=True):
        fit = fit_cache.get((subject, row), {}).get("codes")
        if fit is None:
            fit = fit_input(ctx, subject, row, ["codes"])["codes"]
        item = _item(ctx, subject, row)
        err = np.zeros((rows, cols))
        requests = rotate_pitch_yaw(grid.reshape(-1, 2), item["R_w2c"][None]).reshape(rows, cols, 2)  # camera frame
        for i in range(rows):
            for j in range(cols):
                req = requests[i, j]
                read = _read(ctx, render_at(fit, item, req))
                err[i, j] = M.angle_error_deg(read["gaze"], req.double().tolist())
        own = item["gaze"].tolist() if ctx.subjects[subject].gaze_valid[row] else _row_reading(ctx, subject, row)["gaze"]
        centre_cam = rotate_pitch_yaw(centre, item["R_w2c"][None])[0].double().tolist()
        flat = requests.reshape(-1, 2).double().tolist()
        per_input.append({"subject": subject, "input_row": row, "errors_deg": err.tolist(), "mean_deg": float(err.mean()),
                          "ignore_request": {"input_gaze_deg": float(np.mean([M.angle_error_deg(own, q) for q in flat])),
                                             "grid_centre_deg": float(np.mean([M.angle_error_deg(centre_cam, q)
                                                                               for q in flat]))}})
    out = {"pitch": grid[:, 0, 0].tolist(), "yaw": grid[0, :, 1].tolist(), "inputs": per_input}
    if per_input:
        maps = np.array([p["errors_deg"] for p in per_input])
        out["mean_map_deg"] = maps.mean(0).tolist()
        out["mean_deg"] = float(maps.mean())
        out["ignore_request"] = {k: float(np.mean([p["ignore_request"][k] for p in per_input]))
                                 for k in ("input_gaze_deg", "grid_centre_deg")}
        out["per_subject_mean_deg"] = {
            str(s): float(np.mean([p["mean_deg"] for p in per_input if p["subject"] == s]))
            for s in sorted({p["subject"] for p in per_input})}
    return out


def plot_controllability(result: dict, path: str) -> None:
    """Heat map of the mean error per requested gaze (degrees), written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = np.array(result["mean_map_deg"])
    pitch, yaw = np.degrees(result["pitch"]), np.degrees(result["yaw"])
    fig, ax = plt.subplots(figsize=(1.1 * len(yaw) + 2.2, 0.9 * len(pitch) + 1.6))
    im = ax.imshow(err, cmap="magma_r", vmin=0)
    ax.set_xticks(range(len(yaw)), [f"{y:.0f}" for y in yaw])
    ax.set_yticks(range(len(pitch)), [f"{p:.0f}" for p in pitch])
    ax.set_xlabel("requested eye-in-head yaw (deg)")
    ax.set_ylabel("requested eye-in-head pitch (deg)")
    for i in range(err.shape[0]):
        for j in range(err.shape[1]):
            ax.text(j, i, f"{err[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if err[i, j] > 0.6 * max(err.max(), 1e-9) else "black")
    ign = result.get("ignore_request") or {}
    ref = (f"; ignoring the request: {ign['input_gaze_deg']:.1f}° (input's gaze), {ign['grid_centre_deg']:.1f}° (centre)"
           if ign else "")
    ax.set_title(f"gaze controllability: estimator vs request\nmean {result['mean_deg']:.2f}° over "
                 f"{len(result['inputs'])} inputs{ref}", fontsize=9)
    fig.colorbar(im, ax=ax, label="angular error (deg)")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    import os

    os.replace(tmp, path)
