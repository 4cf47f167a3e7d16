"""Exact-render measurements of gaze redirection on synthetic rows: one implementation for training and fitting.

A synthetic row carries the generator's own code, so the generator can draw the exact image of the
same subject and camera at any other eyeball gaze. :func:`redirection_measurement` compares a model's
redirected renders with those exact renders on the union of both eye masks (eye-region PSNR, beside
copying the input unchanged: the gain), and with the exact gaze readout (``readout``) reads the gaze
of every render (the model's, the unchanged input's, the model not redirected, and the exact renders
themselves: the readout's floor).

Two callers:

* :func:`dataset_redirection`: the training report's ``redirect`` block (``training.redirection_report``):
  a trained model rendered with each row's stored code, at every other held-out frame's gaze;
* :func:`ground_truth_quality`: a fit of one test row (``fitting.fit_image``) redrawn at the other frames'
  gazes (b) and from the other cameras (c) (``benchmarks/bench_fitting.py --quality``).

May import: ``data``, ``geometry``, ``metrics``, ``models``, ``fitting`` and this package's ``readout``.
"""

import h5py
import numpy as np
import torch

from ..data.codes import split_code
from ..data.dataset import GazeDataset
from ..data.layout import read_row
from ..data.synthetic import render_view
from ..fitting import FitConfig, ModelInfo, fit_image, is_synthetic_layout, render_fit, target_from_dataset_row
from ..geometry.gaze import gaze_in_head_frame
from ..metrics import masked_psnr, whiten_background
from ..models import eval_mode
from .readout import (GazeReadout, readout_errors_deg, redirection_readout_summary, summarise_errors, view_bin,
                      view_yaw_deg)

__all__ = ["dataset_redirection", "exact_renders", "ground_truth_quality", "redirection_measurement"]


def exact_renders(code, source: dict, gaze_head: torch.Tensor, image_size: int, supersample: int, device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's renders of ``code`` in the source's camera at each eyeball gaze.

    Args:
        code: (D,) generator code. source: a dataset item (``R_w2c`` (3,3), ``t_w2c`` (3,), ``K`` (3,3)).
        gaze_head: (n, 2) head-frame gazes.
    Returns:
        images (n, 3, S, S) float [0, 1] and eye masks (n, 1, S, S) {0, 1}, on ``device``.
    """
    n = gaze_head.shape[0]
    out = render_view(code, source["R_w2c"][None].expand(n, 3, 3), source["t_w2c"][None].expand(n, 3),
                      source["K"][None].expand(n, 3, 3), image_size, gaze_head, supersample=supersample)
    images = torch.as_tensor(np.asarray(out["image"])).permute(0, 3, 1, 2).float().div(255).to(device)
    eyes = (torch.as_tensor(np.asarray(out["eye_mask"])) >= 128).float()[:, None].to(device)
    return images, eyes


def redirection_measurement(render_at, source: dict, code, gaze_head: torch.Tensor, image_size: int,
                            supersample: int, device, readout: bool = True) -> dict:
    """One source redirected to ``gaze_head`` (n, 2), against the generator's exact renders.

    Args:
        render_at: ``(m, 2) head-frame gazes -> (m, 3, S, S)`` renders of the source's subject and camera.
        source: the source's dataset item (``image`` (3,S,S), ``eye_mask`` (1,S,S), ``gaze`` (2,) camera
            frame, ``R_w2c``, ``t_w2c``, ``K``). code: its (D,) generator code.
    Returns:
        {"model_psnr": (n,), "copy_psnr": (n,)} eye-region PSNR of the renders and of the unchanged input,
        and with ``readout`` "errors": {"model", "copy_input", "no_redirection", "floor": n degrees each}.
    """
    n = gaze_head.shape[0]
    exact, exact_eye = exact_renders(code, source, gaze_head, image_size, supersample, device)
    image = source["image"][None].to(device).expand(n, -1, -1, -1)
    pred = render_at(gaze_head.to(device))
    eye = ((exact_eye + source["eye_mask"][None].to(device)) > 0).float()
    out = {"model_psnr": masked_psnr(pred, exact, eye), "copy_psnr": masked_psnr(image, exact, eye)}
    if readout:
        # The model asked for the source's own gaze: what "ignoring the request" looks like for this model.
        own = render_at(gaze_in_head_frame(source["gaze"][None], source["R_w2c"][None]).to(device))
        ro = GazeReadout(code, source["R_w2c"], source["t_w2c"], source["K"], image_size, supersample)
        out["errors"] = {name: readout_errors_deg(ro, imgs, gaze_head) for name, imgs in (
            ("model", pred), ("copy_input", image[:1]), ("no_redirection", own), ("floor", exact))}
    return out


def same_camera_targets(path: str, row: int, cam: int, frame: int, heldout_frames: set) -> tuple | None:
    """Rows B of the source's subject file: every other held-out frame of camera ``cam`` (when it has none,
    every other frame). Returns (source code (D,), B's head-frame gazes (n, 2)), or None without any B."""
    # Selecting B needs whole columns (camera, frame, validity), so this reads the file itself.
    with h5py.File(path, "r") as f:
        cams, frames = np.asarray(f["cam_index"][:]), np.asarray(f["frame_index"][:])
        valid = np.asarray(f["valid_mask"][:], dtype=bool)
        others = np.flatnonzero(valid & (cams == cam) & (frames != frame))
        # increasing row indices (flatnonzero order), as h5py's list indexing requires
        targets = [int(r) for r in others if int(frames[r]) in heldout_frames] or [int(r) for r in others]
        if not targets:
            return None
        code = f["latent_code"][row]
        gaze_b = torch.as_tensor(np.asarray(f["face_gaze"][targets], dtype=np.float32))
        R_b = torch.as_tensor(np.asarray(f["cam_R_w2c"][targets], dtype=np.float32))
    return code, gaze_in_head_frame(gaze_b, R_b)


def row_renderer(model, item: dict, n: int, device):
    """``render_at`` for ``model`` with the row's stored codes, camera and eye mask (up to ``n`` gazes)."""
    A = {k: v.to(device, non_blocking=True).expand(n, *v.shape) for k, v in item.items() if torch.is_tensor(v)}

    def render_at(gaze_head: torch.Tensor) -> torch.Tensor:
        m = gaze_head.shape[0]
        with eval_mode(model):
            return model(A["shape_code"][:m], A["appearance_code"][:m], A["R_w2c"][:m], A["t_w2c"][:m], A["K"][:m],
                         gaze_head=gaze_head, eye_mask=A["eye_mask"][:m])["image"]
    return render_at


def dataset_redirection(model, val_ds: GazeDataset, sources: list, device, readout: bool = True) -> dict | None:
    """Each source row redirected, with its stored code, to every same-camera target B (:func:`same_camera_targets`).

    Returns the means over all pairs: {"pairs", "eye_psnr_model", "eye_psnr_copy_input", "eye_psnr_gain_db"} and
    with ``readout`` (only when the rows' codes are the generator's own) "readout":
    ``evaluation.readout.redirection_readout_summary`` of the four readings, and "readout_by_view": the same readings
    per bin of the source camera's yaw seen from the face (``readout.view_bin``: {bin: {reading:
    ``summarise_errors``}}; where a mean's degrees are: a near-profile view's one small eye reads worst); None for
    non-synthetic data or no pair.
    """
    if not sources:
        return None
    first = read_row(val_ds.paths[val_ds.rows[sources[0]].subject], 0)
    if first["source"] != "synthetic":
        return None
    supersample = first["supersample"]  # render the target exactly as the stored images were
    # The readout redraws a row from its code: only when the codes are the generator's own.
    readout = readout and val_ds.code_slices is not None and is_synthetic_layout(val_ds.code_slices)
    heldout_frames = set(val_ds.split.heldout_frames)
    model_psnr, copy_psnr = [], []
    errors: dict[str, list] = {"model": [], "copy_input": [], "no_redirection": [], "floor": []}
    by_view: dict[str, dict[str, list]] = {}  # the same readings split by how turned the source camera is
    for i in sources:
        sid, row, cam, frame, _ = val_ds.rows[i]
        found = same_camera_targets(val_ds.paths[sid], row, cam, frame, heldout_frames)
        if found is None:
            continue
        code, gaze_head_b = found
        a = val_ds[i]
        m = redirection_measurement(row_renderer(model, a, len(gaze_head_b), device), a, code, gaze_head_b,
                                    val_ds.image_size, supersample, device, readout)
        model_psnr += m["model_psnr"].tolist()
        copy_psnr += m["copy_psnr"].tolist()
        view = view_bin(float(view_yaw_deg(a["R_w2c"], a["t_w2c"])))
        for name, values in m.get("errors", {}).items():
            errors[name] += values
            by_view.setdefault(view, {}).setdefault(name, []).extend(values)
    if not model_psnr:
        return None
    mean_model, mean_copy = sum(model_psnr) / len(model_psnr), sum(copy_psnr) / len(copy_psnr)
    report = {"pairs": len(model_psnr), "eye_psnr_model": mean_model, "eye_psnr_copy_input": mean_copy,
              "eye_psnr_gain_db": mean_model - mean_copy}
    if readout:
        report["readout"] = redirection_readout_summary(errors)
        report["readout_by_view"] = {view: {name: summarise_errors(e) for name, e in readings.items()}
                                     for view, readings in sorted(by_view.items())}
    return report


def quality_source(ds: GazeDataset, subject: int | None, source_cam: int, source_frame: int | None) -> dict:
    """The source row of :func:`ground_truth_quality`: {"sid", "mine" (the subject's indices), "frame", "index",
    "supersample", "code" (D,) float32}. Raises ValueError (one line) for a camera without rows or non-synthetic data."""
    sid = ds.rows[0].subject if subject is None else subject
    mine = [i for i, r in enumerate(ds.rows) if r.subject == sid]
    frames_of_cam = sorted(ds.rows[i].frame for i in mine if ds.rows[i].cam == source_cam)
    if not frames_of_cam:
        raise ValueError(f"subject {sid} has no row of camera {source_cam}")
    frame = frames_of_cam[0] if source_frame is None else source_frame
    src = next(i for i in mine if ds.rows[i].cam == source_cam and ds.rows[i].frame == frame)
    row = read_row(ds.paths[sid], ds.rows[src].row, ("latent_code",))
    if row["source"] != "synthetic":
        raise ValueError(f"{ds.paths[sid]}: ground-truth quality needs synthetic data (source {row['source']!r})")
    return {"sid": sid, "mine": mine, "frame": frame, "index": src, "supersample": row["supersample"],
            "code": row["latent_code"]}


def other_views_quality(model, res, ds: GazeDataset, rows: list, true_code, info: ModelInfo, device) -> dict:
    """(c) the fit rendered from the cameras of ``rows`` (same frame) against their images: head-region PSNR,
    next to the same model rendered with the exact code and no fit (its own ceiling)."""
    items = torch.utils.data.default_collate([ds[i] for i in rows])
    items = {k: v.to(device) for k, v in items.items() if torch.is_tensor(v)}
    cam = {k: items[k] for k in ("R_w2c", "t_w2c", "K", "eye_mask")}
    head = items["head_mask"]
    gt = whiten_background(items["image"], head)
    pred = render_fit(res, camera=cam)
    gaze_head = gaze_in_head_frame(items["gaze"], items["R_w2c"])
    shape, app = split_code(torch.as_tensor(true_code, device=device), info.code_slices)
    with eval_mode(model):
        exact = model(shape.expand(len(rows), -1), app.expand(len(rows), -1), cam["R_w2c"], cam["t_w2c"],
                      cam["K"], gaze_head=gaze_head, eye_mask=cam["eye_mask"])["image"]
    return {"c_views": len(rows), "c_other_views_psnr_head": float(masked_psnr(pred, gt, head).nanmean()),
            "c_exact_code_no_fit_psnr_head": float(masked_psnr(exact, gt, head).nanmean())}


def ground_truth_quality(model, info: ModelInfo, dataset_dir: str, subject: int | None = None, source_cam: int = 0,
                         source_frame: int | None = None, init: str = "mean", cfg: FitConfig | None = None,
                         progress: bool = False, readout: bool = True) -> dict:
    """Fit one image of a synthetic test subject, then compare new renders with the generator's exact ones.

    The source is the row of ``subject`` (default: the first test subject) seen by ``source_cam`` at
    ``source_frame`` (default: that camera's first frame). ``init``: "mean" starts from the checkpoint's
    ``code_mean`` (what a photo without a usable code gets), "row" from the row's stored code (the exact
    generator code: privileged). Then:

    * (a) the same view: head-region PSNR of the fit;
    * (b) the same view at every other frame's eyeball gaze (:func:`redirection_measurement`): eye-region PSNR
      of the render and of the unchanged input against the generator's render of that gaze, and the gain;
      with ``readout``, also the exact gaze readout's errors in degrees (``b_gaze_error_deg_*``: the fit,
      the unchanged input, the fit not redirected, and the floor on the exact renders) and ``b_check``;
    * (c) the other cameras of the same frame (:func:`other_views_quality`).

    Returns a dict of means (and the counts).
    """
    ds = GazeDataset(dataset_dir, "test", subjects=[subject] if subject is not None else None,
                     image_size=info.image_size)
    s = quality_source(ds, subject, source_cam, source_frame)
    sid, mine, frame, src = s["sid"], s["mine"], s["frame"], s["index"]
    if init not in ("mean", "row"):
        raise ValueError(f"init: 'mean' or 'row', got {init!r}")
    target = (target_from_dataset_row(ds, src, code=info.code_mean, code_init="checkpoint code_mean") if init == "mean"
              else target_from_dataset_row(ds, src, code_init="dataset row code (exact)"))
    device = next(model.parameters()).device
    res = fit_image(model, target, cfg, progress=progress)
    out = {"subject": int(sid), "source_row": ds.rows[src].row, "source_cam": source_cam, "source_frame": frame,
           "init": init, "steps_run": res.steps_run, "fit_seconds": res.seconds.get("total"),
           "a_same_view_psnr_head": res.psnr_head}
    b_rows = [i for i in mine if ds.rows[i].cam == source_cam and ds.rows[i].frame != frame]
    if b_rows:
        items = [ds[i] for i in b_rows]
        gaze_head = gaze_in_head_frame(torch.stack([it["gaze"] for it in items]), torch.stack([it["R_w2c"] for it in items]))
        m = redirection_measurement(lambda g: render_fit(res, gaze_head=g), ds[src], s["code"], gaze_head,
                                    info.image_size, s["supersample"], device, readout)
        p_model, p_copy = m["model_psnr"], m["copy_psnr"]
        out.update(b_pairs=len(b_rows), b_eye_psnr_model=float(p_model.mean()),
                   b_eye_psnr_copy_input=float(p_copy.mean()), b_eye_psnr_gain_db=float((p_model - p_copy).mean()))
        if readout:
            out.update({f"b_{k}": v for k, v in redirection_readout_summary(m["errors"]).items()})
    c_rows = [i for i in mine if ds.rows[i].frame == frame and ds.rows[i].cam != source_cam]
    if c_rows:
        out.update(other_views_quality(model, res, ds, c_rows, s["code"], info, device))
    return out
