"""The GazeNeRF protocol: fit each input once, render it at each target's gaze and head pose, score.

For every pair (``pairs.py``) of a test subject:

1. **Fit the input** with the fitting module that ``FittingSingleImage.py`` uses
   (``HeadNeRF.fitting.fit_image``), once per input row and regime, and reuse the fit for all
   of that input's targets:

   * ``codes``: latent codes and a camera refinement only (the network frozen);
   * ``finetune``: the ``codes`` fit, then ``finetune_steps`` of network fine-tuning starting
     from it (``fit_image`` with ``steps: 0`` on a target whose codes and camera are the codes
     fit's; the codes stage is not run twice).

2. **Render** the fit at the target's gaze (its label; for a row without a label, the
   estimator's reading of the target: "estimator-only" pairs) seen from the **target row's
   camera** (its head pose) with the target's eye mask, like GazeNeRF, which feeds the
   target's camera and gaze.

3. **Score** the render against the target image (whitened outside the target's head mask):
   SSIM, PSNR (whole and head), L1, LPIPS, identity, and gaze / head-pose angular errors of
   the estimator on the render against the estimator on the target ("as the papers measure
   it") and against the target's labels where the row has them. Baselines are scored the
   same way: **copy_input** (the input image itself as the answer), **no redirection** (per
   regime: the same fit rendered from the target camera with the input's eye-in-head gaze kept:
   the head pose comes free with the target camera, so only beating this row shows that the
   eyes moved) and the **floor** (the estimator on the target against the target's label).
   Identity gets two reference rows: the same subject from the target camera at another gaze
   (what the metric gives the right person) and another subject from the same camera (what it
   gives the wrong person); without a clear gap between them the metric says nothing here.

Each input's fit starts from the checkpoint's mean code (``code_init: mean``), from the
shape code fitted to the input row's own 68 landmarks with the mean appearance
(``code_init: landmarks``: what ``FittingSingleImage.py`` starts a photo from with the synthetic
layout; the row's landmarks play the face analysis's), or from the row's stored code
(``code_init: dataset``: on synthetic data the generator's code, which the target row shares:
privileged).

Determinism (a re-run continues where the last stopped and ends with the same numbers):
the model's state is restored from a pristine copy before each fit; each input's fit seed is
derived from (seed, subject, input_row); the estimator, LPIPS and dlib run on one image at a
time, so no result depends on batch composition or on which pairs were already done.
"""

import copy
import dataclasses
import hashlib
import math
import os
import re

import numpy as np
import torch

from ..checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from ..config import ConfigError, to_dict
from ..data.layout import DataFormatError, read_row
from ..data.codes import split_code
from ..data.dataset import GazeDataset
from ..estimator import estimate, load_estimator
from ..fitting import fit_image, is_synthetic_layout, load_trained_model, render_fit, target_from_dataset_row
from ..geometry.gaze import gaze_in_head_frame
from . import metrics as M
from .base import EvaluationError, candidates, no_redirection
from .config import EvalConfig, fit_config_for
from .guards import (
    check_training_subjects,
    code_version,
    dataset_fingerprint,
    training_subjects_of_estimator,
    training_subjects_of_nerf,
)
from .pairs import (
    Pair,
    PairsError,
    SubjectRows,
    eval_subjects,
    generate_pairs,
    load_pairs_file,
    pairs_digest,
    read_subject_rows,
)
from .readout import GazeReadout, view_bin, view_yaw_deg

__all__ = ["Context", "EvaluationError", "candidates", "fit_input", "input_seed", "no_redirection", "prepare",
           "score_pair"]

def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _checkpoint_file(path: str, what: str, hint: str) -> str:
    file = checkpoint_path(path)
    if not os.path.isfile(file):
        raise EvaluationError(f"{what} {path}: checkpoint not found ({hint})")
    return file


def input_seed(seed: int, subject: int, input_row: int) -> int:
    """The fit seed of one input: independent of which other pairs run (resumable)."""
    return int(np.random.SeedSequence([int(seed), int(subject), int(input_row)]).generate_state(1)[0])


@dataclasses.dataclass
class Context:
    """Everything an evaluation loads once."""

    cfg: EvalConfig
    model: torch.nn.Module
    info: object  # fitting.ModelInfo
    pristine: dict  # the model's state_dict, restored before every fit
    estimator: torch.nn.Module | None  # None: no estimator (synthetic data, exact readout only)
    est_info: object  # estimator.EstimatorInfo or None
    dataset: object  # GazeDataset over the evaluated subjects at the model's image size
    index_of: dict  # (subject, row) -> dataset index
    subjects: dict  # subject -> SubjectRows
    pairs: list
    lpips: object  # callable or None
    fid: object  # FIDFeatures or None
    identity: object  # IdentityEmbedder or None
    skipped: dict  # metric -> reason (or description when used)
    checkpoint_file: str
    estimator_file: str
    sha256: dict
    device: str
    training_check: dict = dataclasses.field(default_factory=dict)  # {"NeRF": note, "estimator": note}
    readout: dict = dataclasses.field(default_factory=dict)  # {subject: readout supersample}: synthetic subjects only
    cache: dict = dataclasses.field(default_factory=dict)  # per-row estimator readings / embeddings / features

    @property
    def image_size(self) -> int:
        return int(self.info.image_size)


def prepare(cfg: EvalConfig, progress: bool = True) -> Context:
    """Load and check everything before any pair runs. Raises EvaluationError (one line)."""

    device = cfg.device
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ckpt = _checkpoint_file(cfg.checkpoint, "checkpoint", "train one with train_headnerf.py, or fix `checkpoint`")
    est_ckpt = _checkpoint_file(cfg.estimator_checkpoint, "estimator_checkpoint",
                                "train one with train_gaze_estimator.py, fix `estimator_checkpoint`, or set it to \"\" "
                                "on synthetic data (the exact readout measures gaze)") if cfg.estimator_checkpoint else ""
    try:
        model, info = load_trained_model(ckpt, device=device)
        estimator, est_info = load_estimator(est_ckpt, device=device) if est_ckpt else (None, None)
    except CheckpointError as exc:
        raise EvaluationError(str(exc)) from None
    S = int(info.image_size)
    if est_info is not None and int(est_info.input_size) != S:
        raise EvaluationError(
            f"estimator {est_ckpt} was trained on {est_info.input_size} px images, the NeRF renders {S} px; "
            f"train an estimator with input_size {S} (the evaluation never resizes renders for the estimator)")
    try:
        subject_ids = eval_subjects(cfg.dataset_dir, cfg.subjects)
        subjects = {s: read_subject_rows(cfg.dataset_dir, s) for s in subject_ids}
        if cfg.pairs_file:
            pairs = load_pairs_file(cfg.pairs_file, subjects)
        else:
            pairs = generate_pairs(list(subjects.values()), cfg.pairs_per_subject, cfg.inputs_per_subject, cfg.seed,
                                   cfg.same_camera)
        dataset = GazeDataset(cfg.dataset_dir, which="all", subjects=subject_ids, image_size=S)
    except (PairsError, DataFormatError) as exc:
        raise EvaluationError(str(exc)) from None
    index_of = {(r.subject, r.row): i for i, r in enumerate(dataset.rows)}
    if dataset.shape_code_dim != info.code_dims[0] or dataset.appearance_code_dim != info.code_dims[1]:
        raise EvaluationError(f"{cfg.dataset_dir}: latent codes are {dataset.shape_code_dim}+{dataset.appearance_code_dim}-d, "
                              f"the model {ckpt} takes {info.code_dims[0]}+{info.code_dims[1]}")
    if cfg.code_init == "landmarks" and not is_synthetic_layout(info.code_slices):
        raise EvaluationError(f"code_init: landmarks fits the synthetic head model's 43-d code; the model {ckpt} uses "
                              f"{info.code_slices}. Use code_init: mean")
    readout, readout_note = _readout_subjects(cfg.dataset_dir, subjects, dataset.code_slices, S)
    if estimator is None:
        if not readout:
            raise EvaluationError(f"estimator_checkpoint is empty and {cfg.dataset_dir} is not synthetic data (no exact "
                                  "gaze readout): nothing would measure gaze; give an estimator checkpoint")
        unlabelled = sorted({(p.subject, r) for p in pairs for r in (p.input_row, p.target_row)
                             if not subjects[p.subject].gaze_valid[r]})
        if unlabelled:
            raise EvaluationError(f"estimator_checkpoint is empty, but {len(unlabelled)} evaluated rows have no gaze label "
                                  f"(e.g. subject {unlabelled[0][0]} row {unlabelled[0][1]}): their gaze comes from the "
                                  "estimator; give one")
    training_check = _check_training_subjects(cfg, ckpt, est_ckpt, subjects)
    skipped = {"estimator": (f"gaze/head-pose estimator {est_ckpt} ({est_info.input_size} px)" if estimator is not None
                             else "skipped: estimator_checkpoint is empty (gaze is measured by the exact readout only; "
                                  "no estimator-based gaze/head columns)"),
               "readout": readout_note}
    lpips_fn, skipped["lpips"] = M.build_lpips(cfg.metrics.lpips_net, cfg.metrics.lpips_weights, device)
    fid, skipped["fid"] = M.build_fid_features(cfg.metrics.fid_backbone, cfg.metrics.fid_weights, device)
    identity = None
    if cfg.metrics.identity:
        identity = M.IdentityEmbedder(cfg.metrics.identity_size)
        skipped["identity"] = (f"dlib ResNet 128-d embeddings on images upscaled to {cfg.metrics.identity_size} px; "
                               "the whole image is the face box when dlib's HOG detector finds no face")
    else:
        skipped["identity"] = "skipped: metrics.identity is false"
    shas = {"checkpoint": sha256_file(ckpt), "estimator_checkpoint": sha256_file(est_ckpt) if est_ckpt else None}
    for k, p in (("lpips_weights", cfg.metrics.lpips_weights), ("fid_weights", cfg.metrics.fid_weights)):
        if p and os.path.isfile(p):
            shas[k] = sha256_file(p)
    pristine = copy.deepcopy(model.state_dict())
    return Context(cfg=cfg, model=model, info=info, pristine=pristine, estimator=estimator, est_info=est_info,
                   dataset=dataset, index_of=index_of, subjects=subjects, pairs=pairs, lpips=lpips_fn, fid=fid,
                   identity=identity, skipped=skipped, checkpoint_file=ckpt, estimator_file=est_ckpt, sha256=shas,
                   device=device, training_check=training_check, readout=readout)


def _readout_subjects(dataset_dir: str, subjects: dict, code_slices: dict, image_size: int) -> tuple[dict, str]:
    """({subject: supersample of the readout at the model's size} for the subjects the exact readout can read, note).

    Only synthetic subjects: the readout re-renders the row with the generator, which needs the generator's
    code (``source == "synthetic"`` and the synthetic code layout). The dataset's images are box-filtered
    ``supersample`` times; resized by an integer factor f (area) they are box-filtered ``supersample * f`` times.
    """

    if not is_synthetic_layout(code_slices):
        return {}, "skipped: the dataset's latent codes are not the synthetic generator's (real data: estimator only)"
    out, approx = {}, []
    for s, rows in subjects.items():
        if rows.source != "synthetic":
            continue
        info = read_row(rows.path, 0)
        ss, stored = info["supersample"], info["image_size"]
        if stored % image_size:
            approx.append(s)
        out[s] = max(1, ss * stored // image_size)
    if not out:
        return {}, "skipped: no evaluated subject is synthetic (real data: estimator only)"
    note = (f"exact gaze readout (HeadNeRF.evaluation.readout: the generator re-rendered at each candidate gaze, eye "
            f"pixels compared) for subjects {sorted(out)}")
    if approx:
        note += f"; subjects {approx} are stored at a size that is not a multiple of {image_size} px: approximate"
    return out, note


def _check_training_subjects(cfg: EvalConfig, ckpt: str, est_ckpt: str, subjects: dict) -> dict:
    """Refuse a NeRF or estimator trained on a labelled evaluated subject (``guards``); notes for the report."""
    labelled = [s for s, r in subjects.items() if r.gaze_valid.any()]
    notes = {}
    for what, file, reader in (("NeRF", ckpt, training_subjects_of_nerf),
                               ("estimator", est_ckpt, training_subjects_of_estimator)):
        if not file:
            notes[what] = "none used"
            continue
        if not labelled:
            notes[what] = "no labelled evaluated subject: nothing to check"
            continue
        try:
            state = load_checkpoint(file)
        except CheckpointError as exc:
            raise EvaluationError(str(exc)) from None
        train_dir, train_subjects = reader(state, file)
        del state
        notes[what] = check_training_subjects(what, file, train_dir, train_subjects, cfg.dataset_dir, labelled)
    return notes


def run_key(ctx: Context) -> dict:
    """What the per-pair records depend on; a results dir holding records of another key is refused."""
    cfg = to_dict(ctx.cfg)
    rows: dict = {}
    for p in ctx.pairs:
        rows.setdefault(p.subject, set()).update((p.input_row, p.target_row))
    return {
        "code_version": code_version(),
        "checkpoint_sha256": ctx.sha256["checkpoint"],
        "estimator_sha256": ctx.sha256["estimator_checkpoint"],
        "metric_weights_sha256": {k: v for k, v in ctx.sha256.items() if k in ("lpips_weights", "fid_weights")},
        "dataset_dir": os.path.abspath(ctx.cfg.dataset_dir),
        "dataset_content": dataset_fingerprint(ctx.cfg.dataset_dir, rows),
        "pairs": pairs_digest(ctx.pairs),
        "code_init": cfg["code_init"],
        "readout": {str(k): v for k, v in sorted(ctx.readout.items())},  # subjects read exactly, their supersample
        "regimes": cfg["regimes"],
        "finetune_steps": cfg["finetune_steps"] if "finetune" in cfg["regimes"] else None,
        "fit": cfg["fit"],
        "seed": cfg["seed"],
        "metrics": cfg["metrics"],
        "device": cfg["device"],
        "num_threads": cfg["num_threads"],
    }


# ----------------------------------------------------------------------------------------- rows

def dataset_item(ctx: Context, subject: int, row: int) -> dict:
    key = ("item", subject, row)
    if key not in ctx.cache:
        if (subject, row) not in ctx.index_of:
            raise EvaluationError(f"{ctx.subjects[subject].path}: row {row} is not a readable valid row")
        ctx.cache[key] = ctx.dataset[ctx.index_of[(subject, row)]]
    return ctx.cache[key]


def _whitened(ctx: Context, item: dict) -> torch.Tensor:
    img = item["image"][None]
    if ctx.cfg.metrics.whiten_background:
        img = M.whiten_background(img, item["head_mask"][None])
    return img


def estimator_reading(ctx: Context, image: torch.Tensor) -> dict:
    """Estimator reading of one (1, 3, S, S) image: {"gaze": [p, y], "head_pose": [p, y]} (float64 lists)."""
    if ctx.estimator is None:  # no estimator (synthetic data, exact readout only): no reading, NaN metrics
        return {"gaze": None, "head_pose": None}
    out = estimate(ctx.estimator, image.to(ctx.device).float())
    return {"gaze": out["gaze"][0].double().cpu().tolist(), "head_pose": out["head_pose"][0].double().cpu().tolist()}


def row_estimate(ctx: Context, subject: int, row: int) -> dict:
    key = ("read", subject, row)
    if key not in ctx.cache:
        ctx.cache[key] = estimator_reading(ctx, _whitened(ctx, dataset_item(ctx, subject, row)))
    return ctx.cache[key]


def _row_embedding(ctx: Context, subject: int, row: int):
    key = ("emb", subject, row)
    if key not in ctx.cache:
        ctx.cache[key] = ctx.identity(_whitened(ctx, dataset_item(ctx, subject, row))[0])
    return ctx.cache[key]


def _row_features(ctx: Context, subject: int, row: int) -> np.ndarray:
    key = ("fid", subject, row)
    if key not in ctx.cache:
        ctx.cache[key] = ctx.fid(_whitened(ctx, dataset_item(ctx, subject, row)))[0]
    return ctx.cache[key]


# ---------------------------------------------------------------------------------- exact readout

def row_readout(ctx: Context, subject: int, row: int, view: dict | None = None, view_name: str = "row"):
    """The exact readout of one synthetic row (generator code) in its own view, or in ``view`` ({R_w2c (3,3),
    t_w2c (3,), K (3,3)} at the model's size, cached as ``view_name``: the same name must mean the same camera)."""
    key = ("readout", subject, row, view_name)
    if key not in ctx.cache:
        code = read_row(ctx.subjects[subject].path, row, ("latent_code",))["latent_code"]
        cam = dataset_item(ctx, subject, row) if view is None else view
        ctx.cache[key] = GazeReadout(code, cam["R_w2c"], cam["t_w2c"], cam["K"], ctx.image_size,
                                     supersample=ctx.readout[subject])
    return ctx.cache[key]


def eye_in_head(gaze_cam, R_w2c: torch.Tensor) -> list[float]:
    """A camera-frame (pitch, yaw) of a view with rotation R_w2c (3, 3) -> the head-frame (eye-in-head) gaze."""
    g = torch.as_tensor(gaze_cam, dtype=torch.float64).reshape(1, 2)
    return gaze_in_head_frame(g, R_w2c.double().reshape(1, 3, 3))[0].tolist()


def read_exact(ctx: Context, subject: int, row: int, image: torch.Tensor, requested_head) -> dict:
    """Exact readout of a (1, 3, S, S) image as seen in row's view, against a requested eye-in-head gaze (2,).

    Returns {"gaze_readout": [p, y] head frame, "gaze_readout_residual", "gaze_err_readout": degrees} (NaN when
    no eye is visible in that view).
    """
    r = row_readout(ctx, subject, row).read(image[0].permute(1, 2, 0).clamp(0, 1))
    g = [float(x) for x in r["gaze_head"]]
    ok = r["eyes_visible"] > 0
    return {"gaze_readout": g if ok else None, "gaze_readout_residual": float(r["residual"]),
            "gaze_err_readout": M.angle_error_deg(g, requested_head) if ok else math.nan,
            "eyes_visible": int(r["eyes_visible"])}


def label(rows: SubjectRows, row: int) -> dict:
    """The row's labels: gaze (None without a gaze label) and head pose."""
    return {"gaze": rows.gaze[row].tolist() if rows.gaze_valid[row] else None, "head_pose": rows.head_pose[row].tolist()}


# ------------------------------------------------------------------------------------------ fit

def fit_input(ctx: Context, subject: int, input_row: int, regimes, progress: bool = False) -> dict:
    """Fit one input row for each regime. Returns {regime: FitResult}."""

    seed = input_seed(ctx.cfg.seed, subject, input_row)
    ctx.model.load_state_dict(ctx.pristine)  # no fit ever depends on an earlier one (density grid, buffers)
    torch.manual_seed(seed)
    target = target_from_dataset_row(ctx.dataset, ctx.index_of[(subject, input_row)])
    if ctx.cfg.code_init in ("mean", "landmarks"):  # not the row's own code: start where a photo would
        shape_code, app_code = split_code(ctx.info.code_mean, ctx.info.code_slices)
        if ctx.cfg.code_init == "landmarks":
            shape_code = landmark_shape_code(dataset_item(ctx, subject, input_row))
        target = dataclasses.replace(target, shape_code=shape_code[None].clone(), appearance_code=app_code[None].clone(),
                                     code_init=ctx.cfg.code_init)
    if not ctx.subjects[subject].gaze_valid[input_row]:  # no label: the fit estimates the gaze, from the estimator's reading
        read = row_estimate(ctx, subject, input_row)
        target = dataclasses.replace(target, gaze=torch.tensor([read["gaze"]], dtype=torch.float32), gaze_known=False)
    fits = {"codes": fit_image(ctx.model, target, fit_config_for(ctx.cfg, "codes", seed), progress=progress)}
    if "finetune" in regimes:
        ctx.model.load_state_dict(ctx.pristine)
        torch.manual_seed(seed + 1)
        c = fits["codes"]
        start = dataclasses.replace(target, shape_code=c.shape_code, appearance_code=c.appearance_code,
                                    R_w2c=c.R_w2c, t_w2c=c.t_w2c, gaze=c.gaze, eye_centers=c.eye_centers)
        ft_cfg = dataclasses.replace(fit_config_for(ctx.cfg, "finetune", seed + 1), steps=0)
        fits["finetune"] = fit_image(ctx.model, start, ft_cfg, progress=progress)
    ctx.model.load_state_dict(ctx.pristine)
    return {r: fits[r] for r in regimes}


def landmark_shape_code(item: dict) -> torch.Tensor:
    """(Ds,) the head model's identity ⊕ expression fitted to a dataset item's 68 landmarks with its camera
    (``face.latent_fit.fit_shape`` on this one row): the shape code a photo's fit starts from
    (``code_init: landmarks``; synthetic 43-d layout only)."""
    from ..face.latent_fit import fit_shape  # numpy Gauss-Newton; only this code_init needs it

    shape, _, _, _ = fit_shape(item["lm2d"][None].numpy(), item["R_w2c"][None].numpy(), item["t_w2c"][None].numpy(),
                               item["K"][None].numpy(), identity_rows=1)
    return torch.as_tensor(shape[0], dtype=torch.float32)


def render_at(fit, item: dict, gaze) -> torch.Tensor:
    """Render a fit from a row's camera (with its eye mask) at a camera-frame gaze (2,). -> (1, 3, S, S).

    ``gaze`` None keeps the fit's own eyeball direction (its eye-in-head gaze, the input's): the no-redirection row.
    """

    cam = {"R_w2c": item["R_w2c"][None], "t_w2c": item["t_w2c"][None], "K": item["K"][None],
           "eye_mask": item["eye_mask"][None]}
    g = None if gaze is None else torch.as_tensor(gaze, dtype=torch.float32).reshape(1, 2)
    return render_fit(fit, gaze=g, camera=cam).detach().cpu()


# ---------------------------------------------------------------------------------------- score

def _score_image(ctx: Context, pred: torch.Tensor, target_img: torch.Tensor, target_mask: torch.Tensor,
                 target_read: dict, target_label: dict, target_emb) -> tuple[dict, np.ndarray | None]:
    m = {k: float(v[0]) for k, v in M.image_metrics(pred, target_img, target_mask).items()}
    m["lpips"] = float(ctx.lpips(pred, target_img)[0]) if ctx.lpips is not None else math.nan
    read = estimator_reading(ctx, pred)
    m["gaze_pred"] = read["gaze"]
    m["head_pred"] = read["head_pose"]
    m["gaze_err_est"] = M.angle_error_deg(read["gaze"], target_read["gaze"])
    m["head_err_est"] = M.angle_error_deg(read["head_pose"], target_read["head_pose"])
    m["gaze_err_label"] = M.angle_error_deg(read["gaze"], target_label["gaze"])
    m["head_err_label"] = M.angle_error_deg(read["head_pose"], target_label["head_pose"])
    if ctx.identity is not None:
        emb, found = ctx.identity(pred[0])
        m["id_sim"] = M.identity_similarity(emb, target_emb[0])
        m["id_face_found"] = bool(found)
    else:
        m["id_sim"], m["id_face_found"] = math.nan, None
    feats = ctx.fid(pred)[0] if ctx.fid is not None else None
    return m, feats


def score_pair(ctx: Context, pair: Pair, fits: dict) -> tuple[dict, dict, dict]:
    """Score one pair. Returns (record, images {name: (1,3,S,S)}, FID features {name: (2048,)})."""
    rows = ctx.subjects[pair.subject]
    inp, tgt = dataset_item(ctx, pair.subject, pair.input_row), dataset_item(ctx, pair.subject, pair.target_row)
    t_label, i_label = label(rows, pair.target_row), label(rows, pair.input_row)
    t_read = row_estimate(ctx, pair.subject, pair.target_row)
    i_read = row_estimate(ctx, pair.subject, pair.input_row)
    requested = t_label["gaze"] if t_label["gaze"] is not None else t_read["gaze"]
    t_img, t_mask = _whitened(ctx, tgt), tgt["head_mask"][None]
    t_emb = _row_embedding(ctx, pair.subject, pair.target_row) if ctx.identity is not None else None
    a = i_label["gaze"] if (i_label["gaze"] is not None and t_label["gaze"] is not None) else i_read["gaze"]
    b = t_label["gaze"] if (i_label["gaze"] is not None and t_label["gaze"] is not None) else t_read["gaze"]
    record = {
        "pair": pair.index, "key": pair.key, "subject": pair.subject, "input_row": pair.input_row,
        "target_row": pair.target_row, "source": rows.source,
        "input_frame": int(rows.frames[pair.input_row]), "target_frame": int(rows.frames[pair.target_row]),
        "input_cam": int(rows.cams[pair.input_row]), "target_cam": int(rows.cams[pair.target_row]),
        # how turned the target camera is, seen from the face: where a mean's degrees are (report: per target view)
        "target_view": view_bin(float(view_yaw_deg(tgt["R_w2c"], tgt["t_w2c"]))),
        "gaze_labelled": t_label["gaze"] is not None,
        "requested_gaze": [float(x) for x in requested],
        "requested_from": "label" if t_label["gaze"] is not None else "estimator",
        "redirection_deg": M.angle_error_deg(a, b),
        "redirection_from": "labels" if i_label["gaze"] is not None and t_label["gaze"] is not None else "estimator",
        "head_change_deg": M.angle_error_deg(i_label["head_pose"], t_label["head_pose"]),
        "target_read": t_read,
        "floor": {"gaze_err_label": M.angle_error_deg(t_read["gaze"], t_label["gaze"]),
                  "head_err_label": M.angle_error_deg(t_read["head_pose"], t_label["head_pose"])},
    }
    images = {"input": _whitened(ctx, inp), "target": t_img}
    feats = {}
    if ctx.fid is not None:
        feats["target"] = _row_features(ctx, pair.subject, pair.target_row)
    for regime, fit in fits.items():
        for name, gaze in ((regime, requested), (no_redirection(regime), None)):
            pred = render_at(fit, tgt, gaze)
            images[name] = pred
            record[name], f = _score_image(ctx, pred, t_img, t_mask, t_read, t_label, t_emb)
            if f is not None:
                feats[name] = f
        record[regime]["fit_psnr_head"] = float(fit.psnr_head)
        record[regime]["fit_seconds"] = float(fit.seconds.get("total", math.nan))
    record["id_reference"] = identity_references(ctx, pair.subject, pair.target_row) if ctx.identity is not None else None
    record["copy_input"], f = _score_image(ctx, images["input"], t_img, t_mask, t_read, t_label, t_emb)
    if f is not None:
        feats["copy_input"] = f
    if pair.subject in ctx.readout:  # synthetic: what gaze does the generator need to draw each answer?
        req_head = eye_in_head(requested, tgt["R_w2c"])
        record["requested_gaze_head"] = req_head
        for name in candidates(list(fits)):
            if name == "copy_input":  # another view: read in its own (input) view, i.e. the input's eye-in-head gaze
                record[name].update(read_exact(ctx, pair.subject, pair.input_row, images["input"], req_head))
            else:
                record[name].update(read_exact(ctx, pair.subject, pair.target_row, images[name], req_head))
        record["floor"].update(read_exact(ctx, pair.subject, pair.target_row, t_img, req_head))
    return record, images, feats


# ------------------------------------------------------------------------------ identity references

def _other_subjects(ctx: Context, subject: int) -> list[int]:
    """Subjects of the dataset dir (its subject files) other than ``subject``, sorted."""
    key = ("other_subjects",)
    if key not in ctx.cache:
        ids = []
        for name in os.listdir(ctx.cfg.dataset_dir):
            m = re.fullmatch(r"subject(\d+)\.h5", name)
            if m:
                ids.append(int(m.group(1)))
        ctx.cache[key] = sorted(ids)
    return [s for s in ctx.cache[key] if s != subject]


def _reference_item(ctx: Context, subject: int, row: int) -> dict | None:
    """A row of any subject of the dataset dir at the model's size (evaluated subjects use the main index)."""

    if (subject, row) in ctx.index_of:
        return dataset_item(ctx, subject, row)
    key = ("ref_ds", subject)
    if key not in ctx.cache:
        try:
            ds = GazeDataset(ctx.cfg.dataset_dir, which="all", subjects=[subject], image_size=ctx.image_size)
            ctx.cache[key] = (ds, {r.row: i for i, r in enumerate(ds.rows)})
        except (DataFormatError, OSError, ValueError):
            ctx.cache[key] = None
    if ctx.cache[key] is None or row not in ctx.cache[key][1]:
        return None
    ds, idx = ctx.cache[key]
    return ds[idx[row]]


def _reference_rows(ctx: Context, subject: int, target_row: int) -> dict:
    """{"same_subject": (subject, row) | None, "other_subject": (subject, row) | None} for one target row.

    Same subject: the target's camera, another frame (another gaze). Other subject: the target's camera, the
    same frame index when it has one. Drawn from (seed, subject, target_row): independent of the other pairs.
    """
    rows = ctx.subjects[subject]
    cam, frame = rows.cams[target_row], rows.frames[target_row]
    rng = np.random.default_rng([int(ctx.cfg.seed), int(subject), int(target_row), 7])
    same = np.flatnonzero(rows.valid & (rows.cams == cam) & (rows.frames != frame))
    out = {"same_subject": (subject, int(rng.choice(same))) if len(same) else None, "other_subject": None}
    others = _other_subjects(ctx, subject)
    for s in [others[i] for i in rng.permutation(len(others))]:
        try:
            o = ctx.subjects[s] if s in ctx.subjects else read_subject_rows(ctx.cfg.dataset_dir, s)
        except PairsError:
            continue
        cand = np.flatnonzero(o.valid & (o.cams == cam) & (o.frames == frame))
        if not len(cand):
            cand = np.flatnonzero(o.valid & (o.cams == cam))
        if len(cand):
            out["other_subject"] = (s, int(rng.choice(cand)))
            break
    return out


def identity_references(ctx: Context, subject: int, target_row: int) -> dict:
    """The identity metric between the target and (a) the same subject from the same camera at another gaze,
    (b) another subject from the same camera: {"same_subject"|"other_subject": {"subject", "row", "id_sim",
    "id_face_found"} or None}. If (a) and (b) score alike, the metric measures the view, not the person."""
    key = ("id_ref", subject, target_row)
    if key not in ctx.cache:
        t_emb = _row_embedding(ctx, subject, target_row)[0]
        out = {}
        for name, sr in _reference_rows(ctx, subject, target_row).items():
            item = _reference_item(ctx, *sr) if sr is not None else None
            if item is None:
                out[name] = None
                continue
            emb, found = ctx.identity(_whitened(ctx, item)[0])
            out[name] = {"subject": sr[0], "row": sr[1], "id_sim": M.identity_similarity(emb, t_emb),
                         "id_face_found": bool(found)}
        ctx.cache[key] = out
    return ctx.cache[key]


def check_inputs_readable(ctx: Context) -> None:
    """Every pair's rows must be in the dataset index (valid rows); a clear error otherwise."""
    for p in ctx.pairs:
        for r in (p.input_row, p.target_row):
            if (p.subject, r) not in ctx.index_of:
                raise EvaluationError(f"{ctx.subjects[p.subject].path}: pair {p.index} names row {r}, "
                                      "which is not a valid row")


def config_error(exc: Exception) -> EvaluationError:
    return EvaluationError(str(exc)) if isinstance(exc, (ConfigError, CheckpointError, DataFormatError)) else exc
