"""Training the estimator, top to bottom: data -> model -> step -> held-out check -> checkpoint -> report.

Conventions are those of ``HeadNeRF/training.py`` (the NeRF's loop):

* **Data order** is a pure function of (seed, step) (``loop.StepBatchSampler``), the
  augmentation draws from one ``torch.Generator`` whose state is checkpointed, and the LR is a
  pure function of the step (linear warm-up, cosine decay): a resumed run gives the same
  weights as an uninterrupted one.
* **Subjects**: training uses every labelled row of the training subjects (all cameras and
  frames); the **held-out subjects** (``split.json``'s test subjects unless the config names
  others) are never trained on. They are scored every ``val_every`` steps for tensorboard only
  (nothing is selected on them: the model is the last step's), and fully in ``report.json``.
* **Bad steps**: a NaN/inf loss or gradient skips the step with a warning; ``max_bad_steps``
  in a row abort (:class:`~HeadNeRF.loop.TrainingAborted`) without a checkpoint of the bad state
  (``loop.GuardedStep``); ``train_step`` is one step, callable from tests.
* **Run directory** (``run_dir.py``, as the NeRF's): a new run refuses a directory that holds one;
  ``config.yaml``, ``git_hash.txt`` and ``report.json`` are written atomically; SIGINT/SIGTERM
  finish the current step, write a checkpoint, then exit.
* Checkpoints (``run_dir/checkpoints/last.pt``, atomic, ``weights_only``-loadable) hold the
  weights (with the input normalisation), the optimizer, the step, the RNG states, the resolved
  config and an ``estimator`` entry: depth, stem, input_size, mean/std, the eye branch's
  settings, the training data's stored image size and directory, and ``train_subjects`` (the
  subject ids it trained on: the evaluation refuses to judge a labelled subject the estimator
  has seen) -- what :func:`~HeadNeRF.estimator.model.load_estimator` reads.
* **Eye branch** (``model.eye_branch``): each training crop is centred either on the labelled
  eye landmarks with a little jitter (``eye_crop_label_prob``) or on the network's own
  eye-centre estimate, which is what :func:`estimate` uses on an image without landmarks (a
  NeRF render); the eye-centre regressor learns from ``lm2d`` (``eye_centre_weight``).
"""

import json
import math
import os
import sys
import time

import torch
import yaml
from tqdm import tqdm

from ..checkpoint import LAST_CHECKPOINT, CheckpointError, load_checkpoint, save_checkpoint
from ..config import ConfigError, to_dict
from ..data.layout import DataFormatError, Split
from ..geometry.gaze import angular_error_deg
from ..loop import GuardedStep, StepBatchSampler
from ..run_dir import checkpoint_on_signal, resolve_run_dir, start_run_dir, write_report
from .augment import augment_batch
from .config import EstimatorConfig
from .data import LabelledFaces, make_estimator_dataset
from .eyes import normalised_to_pixels, pixels_to_normalised
from .model import OUTPUT_NAMES, GazeEstimator, build_estimator, compose_gaze, estimate, eye_branch_spec, load_pretrained

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "error_summary",
    "evaluate_heldout",
    "lr_at",
    "prepare_data",
    "resolve_subjects",
    "train_estimator",
    "train_step",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lr_at(cfg: EstimatorConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then cosine to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * t))


def resolve_subjects(cfg: EstimatorConfig) -> tuple[list, list]:
    """(training subjects, held-out subjects) from the config and ``split.json``."""
    if not os.path.isdir(cfg.data.dataset_dir):
        raise DataFormatError(f"{cfg.data.dataset_dir}: dataset directory not found (for the synthetic set: "
                              "set data.generate_if_missing: true or run train_gaze_estimator.py --make_data_only)")
    split = Split.load(cfg.data.dataset_dir)
    heldout = list(cfg.data.heldout_subjects) or list(split.test_subjects)
    train = list(cfg.data.train_subjects) or [s for s in split.train_subjects + split.test_subjects if s not in heldout]
    overlap = sorted(set(train) & set(heldout))
    if overlap:
        raise ConfigError(f"data.train_subjects: subjects {overlap} are also held out")
    if not train:
        raise ConfigError(f"data.train_subjects: no training subjects left in {cfg.data.dataset_dir}")
    return train, heldout


def error_summary(errors: torch.Tensor) -> dict:
    """Mean/median/std/p90 of (N,) angular errors in degrees (NaN-free input)."""
    e = errors.double()
    return {"mean": e.mean().item(), "median": e.median().item(), "std": e.std().item() if len(e) > 1 else 0.0,
            "p90": e.quantile(0.9).item(), "count": len(e)}


def evaluate_heldout(model: GazeEstimator, faces: LabelledFaces, device, rows=None, with_landmarks: bool = False) -> dict:
    """Per-row gaze and head-pose angular errors (degrees) of ``model`` on ``faces`` rows (all by default).

    ``with_landmarks``: give the rows' labelled landmarks to an eye-branch estimator (eye crops at the
    labelled eyes) instead of letting it find the eyes itself, as it must on a render.
    Returns {"gaze": (N,), "head_pose": (N,), "subjects": (N,), "eye_in_head": (N,) or None} CPU tensors.
    """
    rows = list(range(len(faces))) if rows is None else list(rows)
    gaze_err, head_err, eye_err = [], [], []
    for i in range(0, len(rows), 256):
        idx = rows[i:i + 256]
        images = torch.stack([faces.image(j) for j in idx]).to(device).float() / 255.0
        landmarks = None
        if with_landmarks:  # estimate() takes 68 landmarks: give each eye's centre as its six contour points
            centres = normalised_to_pixels(faces.eye_centres[idx], faces.input_size)
            landmarks = torch.zeros(len(idx), 68, 2)
            landmarks[:, 36:42], landmarks[:, 42:48] = centres[:, :1], centres[:, 1:]
            landmarks = landmarks.to(device)
        out = estimate(model, images, landmarks=landmarks)
        gaze_err.append(angular_error_deg(out["gaze"].cpu(), faces.gaze[idx]))
        head_err.append(angular_error_deg(out["head_pose"].cpu(), faces.head_pose[idx]))
        if "eye_in_head" in out:
            eye_err.append(angular_error_deg(out["eye_in_head"].cpu(), faces.eye_in_head[idx]))
    return {"gaze": torch.cat(gaze_err), "head_pose": torch.cat(head_err), "subjects": faces.subjects[rows],
            "eye_in_head": torch.cat(eye_err) if eye_err else None}


def composed_label_error_deg(faces: LabelledFaces) -> float:
    """p90 angle (degrees) between the rows' gaze labels and their head pose (+) eye-in-head composition:
    about 0 for normalised rows (what ``model.compose_gaze`` relies on)."""
    rows = _spread(len(faces), 4096)
    err = angular_error_deg(compose_gaze(faces.head_pose[rows], faces.eye_in_head[rows]), faces.gaze[rows])
    return float(err.double().quantile(0.9))


def _spread(n: int, count: int) -> list:
    return list(range(n)) if n <= count else [(i * n) // count for i in range(count)]


def _stats(faces: LabelledFaces) -> tuple[list, list]:
    """Per-channel mean/std of (up to 4096 evenly spread) training images, in [0, 1] units."""
    rows = _spread(len(faces), 4096)
    x = torch.stack([faces.image(i) for i in rows]).float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [float(v) for v in mean], [float(v) for v in std]


def prepare_data(cfg: EstimatorConfig, progress: bool = True) -> tuple[LabelledFaces, LabelledFaces | None, str]:
    """(training faces, held-out faces or None, note). Makes the synthetic set first when the config asks."""
    d = cfg.data
    if d.generate_if_missing and not os.path.isfile(os.path.join(d.dataset_dir, "split.json")):
        s = d.synthetic
        if s.image_size != cfg.model.input_size:
            print(f"[estimator] note: the synthetic set is rendered at {s.image_size} px, the estimator reads "
                  f"{cfg.model.input_size} px (images are resized)")
        out = make_estimator_dataset(d.dataset_dir, s.num_subjects, s.num_cameras, s.num_frames, s.image_size, s.seed,
                                     s.supersample, s.workers, progress=progress)
        print(f"[estimator] made the synthetic set {d.dataset_dir}: {out['images']} images in {out['seconds']:.0f} s")
    train_subjects, heldout_subjects = resolve_subjects(cfg)
    train = LabelledFaces(d.dataset_dir, train_subjects, cfg.model.input_size, d.max_rows_per_subject, d.preload,
                          progress=progress, desc="loading training subjects")
    heldout, note = None, ""
    if heldout_subjects:
        try:
            heldout = LabelledFaces(d.dataset_dir, heldout_subjects, cfg.model.input_size, 0, d.preload,
                                    progress=progress, desc="loading held-out subjects")
        except DataFormatError as exc:
            note = f"no held-out error: {exc}"
    else:
        note = ("no held-out error: split.json has no test subjects and data.heldout_subjects is empty; "
                "name some subjects in data.heldout_subjects")
    return train, heldout, note


# Keys a continued run may change: where and how fast it runs, how often it logs, and how long it trains
# (a longer ``steps`` stretches the remaining cosine schedule). Everything else shapes the result.
RESUMABLE_CHANGES = ("run_dir", "device", "num_threads", "steps", "val_every", "val_images", "ckpt_every", "log_every",
                     "max_bad_steps")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_resume(state: dict, cfg: EstimatorConfig, path: str) -> None:
    """Refuse to continue a run with settings that change what it learns (lr, batch size, augmentation, seed, ...)."""
    if not isinstance(state.get("estimator"), dict):
        raise CheckpointError(f"{path}: not a gaze-estimator checkpoint (a NeRF checkpoint?)")
    saved, now = _flatten(state["config"]), _flatten(to_dict(cfg))
    diff = [k for k in now if k in saved and saved[k] != now[k] and k not in RESUMABLE_CHANGES]
    if diff:
        raise CheckpointError(f"{path}: the run was trained with other settings: "
                              + ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in diff)
                              + "; resume with the run's own config.yaml, or start a new run_dir")


def _training_crop_centres(cfg: EstimatorConfig, centres: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Where each training image's eyes are cropped: (B, 2, 2) normalised centres, NaN = "where the network finds them".

    A share ``eye_crop_label_prob`` of the images is cropped at the labelled centres plus Gaussian
    jitter (``eye_crop_jitter_px``): the eye CNN learns on well-placed crops from the first step;
    the rest at the network's own estimate, as on a render, so that it also learns to read the
    crops it will get there.
    """
    B = centres.shape[0]
    use_label = torch.rand(B, generator=gen, device=centres.device) < cfg.eye_crop_label_prob
    jitter = torch.randn(centres.shape, generator=gen, device=centres.device) * (cfg.eye_crop_jitter_px * 2.0
                                                                                   / cfg.model.input_size)
    return torch.where(use_label[:, None, None], centres + jitter, torch.full_like(centres, float("nan")))


def train_step(model: GazeEstimator, batch: dict, cfg: EstimatorConfig, guarded_step: GuardedStep, step: int,
               gen: torch.Generator, device) -> tuple[torch.Tensor, dict, bool]:
    """One optimisation step on a collated ``batch`` of :class:`LabelledFaces` items.

    Sets the step's LR (:func:`lr_at`), augments, computes the L1 losses (and the eye-centre loss
    with the eye branch) and steps through ``guarded_step`` (a non-finite loss or gradient skips the
    step, weights untouched). Returns (loss, {term name: () tensor, "gaze_error_deg": mean angle of the
    augmented batch}, whether the step was taken).
    """
    images = batch["image"].to(device).float() / 255.0
    labels = torch.cat((batch["gaze"], batch["head_pose"], batch["eye_in_head"]), 1).to(device)
    for group in guarded_step.optimizer.param_groups:
        group["lr"] = lr_at(cfg, step)
    terms = {}
    if model.eye_branch is None:
        images, labels = augment_batch(images, labels, cfg.augment, gen)
        pred = model(images)
    else:
        images, labels, centres = augment_batch(images, labels, cfg.augment, gen, batch["eye_centres"].to(device))
        pred = model(images, _training_crop_centres(cfg, centres, gen))
        found = pred[:, len(OUTPUT_NAMES):].view(-1, 2, 2)
        known = torch.isfinite(centres).flatten(1).all(1)
        terms["eye_centre_l1"] = (found[known] - centres[known]).abs().mean() if known.any() else found.sum() * 0.0
    err = (pred[:, :len(OUTPUT_NAMES)] - labels).abs()
    terms.update(gaze_l1=err[:, :2].mean(), head_pose_l1=err[:, 2:4].mean(), eye_in_head_l1=err[:, 4:6].mean())
    loss = terms["gaze_l1"] + cfg.head_pose_weight * terms["head_pose_l1"] + cfg.eye_weight * terms["eye_in_head_l1"]
    if "eye_centre_l1" in terms:
        loss = loss + cfg.eye_centre_weight * terms["eye_centre_l1"]
    taken = guarded_step(loss, step)
    with torch.no_grad():
        terms["gaze_error_deg"] = angular_error_deg(pred[:, :2].detach(), labels[:, :2]).mean()
    return loss, terms, taken


def _log_step(writer, loss: torch.Tensor, terms: dict, lr: float, step: int) -> None:
    writer.add_scalar("loss/total", loss.item(), step)
    for name in ("gaze_l1", "head_pose_l1", "eye_in_head_l1", "eye_centre_l1"):
        if name in terms:
            writer.add_scalar(f"loss/{name}", terms[name].item(), step)
    writer.add_scalar("train/gaze_error_deg_augmented", terms["gaze_error_deg"].item(), step)
    writer.add_scalar("lr", lr, step)


def _log_heldout(model: GazeEstimator, heldout: LabelledFaces, device, rows: list, writer, step: int, bar) -> None:
    """Score ``rows`` of the held-out subjects (tensorboard and one line; nothing is selected on them)."""
    errs = evaluate_heldout(model, heldout, device, rows)
    model.train()
    writer.add_scalar("heldout/gaze_error_deg", errs["gaze"].mean().item(), step)
    writer.add_scalar("heldout/head_pose_error_deg", errs["head_pose"].mean().item(), step)
    bar.write(f"[estimator] step {step}: held-out gaze error {errs['gaze'].mean().item():.2f} deg, "
              f"head pose {errs['head_pose'].mean().item():.2f} deg, eye in head "
              f"{errs['eye_in_head'].mean().item():.2f} deg ({len(rows)} images)")


def _model_for_run(cfg: EstimatorConfig, state: dict | None, train_faces: LabelledFaces, resume: str | None):
    """A fresh estimator (normalised by the training images' statistics, or ImageNet's with pretrained
    weights), or the checkpoint's when resuming."""
    if state is None:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if cfg.model.pretrained_path else _stats(train_faces)
        model = build_estimator(cfg.model, mean, std)
        model.set_centre_prior(train_faces.eye_centres)
        return model
    model = GazeEstimator(cfg.model.depth, cfg.model.input_size, cfg.model.stem, eye_branch=eye_branch_spec(cfg.model),
                          compose_gaze=cfg.model.compose_gaze)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{resume}: weights do not fit this config ({str(exc).splitlines()[0][:200]})") from None
    return model


def _describe(cfg: EstimatorConfig, model: GazeEstimator, train_faces: LabelledFaces, heldout, run_dir: str) -> int:
    """Print what is about to train (and warn about labels that break ``compose_gaze``). Returns the parameter count."""
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[estimator] ResNet-{cfg.model.depth} ({cfg.model.stem} stem, {cfg.model.input_size} px"
          f"{', eye branch' if model.eye_branch else ''}): "
          f"{n_params / 1e6:.2f} M parameters; {len(train_faces)} training images of "
          f"{len(set(train_faces.subjects.tolist()))} subjects, "
          f"{len(heldout) if heldout else 0} held-out images; run dir {run_dir}")
    if train_faces.skipped_unlabelled:
        print(f"[estimator] skipped {train_faces.skipped_unlabelled} training rows without a gaze label")
    label_gap = composed_label_error_deg(train_faces)
    if cfg.model.compose_gaze and label_gap > 1.0:
        print(f"[estimator] warning: model.compose_gaze assumes ETH-XGaze-normalised rows (zero roll), but composing "
              f"these labels' head pose and eye-in-head misses their gaze by {label_gap:.1f} deg (p90)")
    return n_params


def _checkpoint_meta(cfg: EstimatorConfig, model: GazeEstimator, train_faces: LabelledFaces, heldout) -> dict:
    """The checkpoint's ``estimator`` entry: what ``load_estimator`` and the evaluation read."""
    return {"depth": cfg.model.depth, "stem": cfg.model.stem, "input_size": cfg.model.input_size,
            "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
            "train_image_size": int(train_faces.stored_size or cfg.model.input_size),
            "dataset_dir": cfg.data.dataset_dir, "outputs": list(OUTPUT_NAMES), "eye_branch": model.eye_branch,
            "compose_gaze": cfg.model.compose_gaze,
            "train_subjects": sorted(int(s) for s in set(train_faces.subjects.tolist())),
            "heldout_subjects": sorted(int(s) for s in set(heldout.subjects.tolist())) if heldout is not None else [],
            "frame": "normalised camera (layout face_gaze / face_head_pose), radians"}


def train_estimator(cfg: EstimatorConfig, resume: str | None = None, dry_run: bool = False,
                    progress: bool = True, stop_after: int | None = None) -> dict:
    """Train ``cfg``; returns the report dict (also written to ``run_dir/report.json``).

    ``stop_after``: stop with a checkpoint once this many steps are done (the LR schedule still
    follows ``cfg.steps``; ``--resume`` continues exactly). The report is written only when the
    run reaches ``cfg.steps``.
    """
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is available; use --device cpu")
    device = torch.device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = resolve_run_dir(cfg.run_dir, resume)
    state = load_checkpoint(resume) if resume else None
    if state is not None:
        _check_resume(state, cfg, resume)
    elif cfg.model.pretrained_path:  # a missing or foreign weights file fails before the data is loaded
        load_pretrained(GazeEstimator(cfg.model.depth, cfg.model.input_size, cfg.model.stem), cfg.model.pretrained_path)
    t_data = time.time()
    train_faces, heldout, note = prepare_data(cfg, progress)
    data_seconds = time.time() - t_data
    if len(train_faces) < cfg.batch_size:
        raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {len(train_faces)} labelled training images")
    torch.manual_seed(cfg.seed)
    model = _model_for_run(cfg, state, train_faces, resume)
    n_params = _describe(cfg, model, train_faces, heldout, run_dir)
    if dry_run:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return {"dry_run": True, "parameters": n_params}

    model.to(device)
    optimizer, gen, step, train_seconds = _optimisation(cfg, model, state, device)
    meta = _checkpoint_meta(cfg, model, train_faces, heldout)
    start_run_dir(run_dir, to_dict(cfg))
    writer = _tensorboard_writer(run_dir)

    def save() -> None:
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "config": to_dict(cfg), "estimator": meta, "train_seconds": train_seconds,
                         "rng": {"torch": torch.get_rng_state(), "generator": gen.get_state().cpu()}},
                        os.path.join(run_dir, LAST_CHECKPOINT))

    guarded_step = GuardedStep(optimizer, list(model.parameters()), cfg.grad_clip, cfg.max_bad_steps, run_dir, "lr")
    end = cfg.steps if stop_after is None else max(step, min(cfg.steps, stop_after))
    loader = torch.utils.data.DataLoader(train_faces, batch_sampler=StepBatchSampler(train_faces, cfg.batch_size,
                                                                                     cfg.seed, step, end),
                                         num_workers=0 if cfg.data.preload else cfg.data.num_workers)
    val_rows = _spread(len(heldout), cfg.val_images) if heldout is not None else []
    bar = tqdm(total=end, initial=step, desc="train estimator", dynamic_ncols=True, file=sys.stdout,
               disable=not progress or step >= cfg.steps)
    t_last = time.time()
    model.train()
    with checkpoint_on_signal(run_dir, "estimator", save) as at_step_end, bar:
        for batch in loader:
            loss, terms, taken = train_step(model, batch, cfg, guarded_step, step, gen, device)
            step += 1
            now = time.time()
            train_seconds, t_last = train_seconds + now - t_last, now
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
            if step % cfg.log_every == 0 and taken:
                _log_step(writer, loss, terms, optimizer.param_groups[0]["lr"], step)
            if val_rows and (step % cfg.val_every == 0 or step == cfg.steps):
                _log_heldout(model, heldout, device, val_rows, writer, step, bar)
                t_last = time.time()  # held-out scoring is not training time
            if step % cfg.ckpt_every == 0 or step == end:
                save()
            at_step_end(step)
    writer.close()
    if step < cfg.steps:
        print(f"[estimator] stopped at step {step} of {cfg.steps}; continue with --resume {run_dir}")
        return {"steps": step, "stopped": True}
    report = _report(cfg, model, train_faces, heldout, note, device, step, train_seconds,
                     os.path.join(run_dir, LAST_CHECKPOINT))
    report["data_seconds"] = round(data_seconds, 1)  # making (if asked) and loading the data, this invocation
    _publish_report(run_dir, report, note)
    return report


def _optimisation(cfg: EstimatorConfig, model: GazeEstimator, state: dict | None, device):
    """(AdamW, the augmentation's generator, step, training seconds so far): fresh, or the checkpoint's."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1000 + 17)
    if state is None:
        return optimizer, gen, 0, 0.0
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["generator"].cpu())
    torch.set_rng_state(state["rng"]["torch"])
    return optimizer, gen, int(state["step"]), float(state.get("train_seconds", 0.0))


def _publish_report(run_dir: str, report: dict, note: str) -> None:
    write_report(run_dir, report)
    summary = {k: report.get(k) for k in ("gaze_error_deg", "head_pose_error_deg")}
    print("[estimator] held-out report: " + json.dumps(summary if report.get("gaze_error_deg") else note))
    print(f"[estimator] outputs: {os.path.join(run_dir, LAST_CHECKPOINT)}, {run_dir}/report.json, tensorboard {run_dir}/tb")


def _tensorboard_writer(run_dir: str):
    from torch.utils.tensorboard import SummaryWriter  # tensorboard takes seconds to import: only a training run needs it

    return SummaryWriter(os.path.join(run_dir, "tb"))


def _report(cfg, model, train_faces, heldout, note, device, step, train_seconds, ckpt_path) -> dict:
    """The run's report.json: held-out angular errors and what they were measured on."""
    report = {"steps": step, "train_seconds": round(train_seconds, 1), "eye_branch": model.eye_branch,
              "compose_gaze": model.compose_gaze, "composed_label_error_deg_p90": composed_label_error_deg(train_faces),
              "images_per_second": round(step * cfg.batch_size / max(train_seconds, 1e-9), 1),
              "depth": cfg.model.depth, "stem": cfg.model.stem, "input_size": cfg.model.input_size,
              "dataset_dir": cfg.data.dataset_dir, "checkpoint": ckpt_path,
              "train_images": len(train_faces), "train_subjects": len(set(train_faces.subjects.tolist())),
              "skipped_unlabelled_rows": train_faces.skipped_unlabelled}
    seen = evaluate_heldout(model, train_faces, device, _spread(len(train_faces), 512))
    report["train_gaze_error_deg"] = error_summary(seen["gaze"])  # no augmentation: the generalisation gap
    if heldout is None:
        report.update(gaze_error_deg=None, head_pose_error_deg=None, note=note)
        return report
    errs = evaluate_heldout(model, heldout, device)
    mean_label = train_faces.gaze.mean(0, keepdim=True)
    report.update(
        heldout_subjects=sorted(set(heldout.subjects.tolist())), heldout_images=len(heldout),
        gaze_error_deg=error_summary(errs["gaze"]), head_pose_error_deg=error_summary(errs["head_pose"]),
        eye_in_head_error_deg=error_summary(errs["eye_in_head"]),
        per_subject_gaze_error_deg={str(s): errs["gaze"][errs["subjects"] == s].mean().item()
                                    for s in sorted(set(errs["subjects"].tolist()))},
        # context: always answering the training set's mean gaze
        mean_gaze_baseline_error_deg=angular_error_deg(mean_label.expand_as(heldout.gaze), heldout.gaze).mean().item(),
        # the eye-in-head error of constant answers: "straight ahead" (0, 0) and the training set's mean
        eye_in_head_straight_ahead_error_deg=angular_error_deg(torch.zeros_like(heldout.eye_in_head),
                                                               heldout.eye_in_head).mean().item(),
        eye_in_head_mean_answer_error_deg=angular_error_deg(
            train_faces.eye_in_head.mean(0, keepdim=True).expand_as(heldout.eye_in_head), heldout.eye_in_head).mean().item(),
        skipped_unlabelled_heldout_rows=heldout.skipped_unlabelled)
    if model.eye_branch is not None:  # the report's numbers crop where the network finds the eyes (as on renders)
        rows = _spread(len(heldout), 2048)
        found = torch.cat([estimate(model, torch.stack([heldout.image(j) for j in rows[i:i + 256]]).to(device).float()
                                    / 255)["eye_centres"].cpu() for i in range(0, len(rows), 256)])
        centre_err = pixels_to_normalised(found, model.input_size) - heldout.eye_centres[rows]
        report["eye_centre_error_px"] = (centre_err.norm(dim=-1) * model.input_size / 2).nanmean().item()
        lm = evaluate_heldout(model, heldout, device, rows, with_landmarks=True)
        report["with_landmark_crops"] = {"gaze_error_deg": error_summary(lm["gaze"]),
                                         "eye_in_head_error_deg": error_summary(lm["eye_in_head"])}
    return report

