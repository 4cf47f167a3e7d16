"""The NeRF's training loop, top to bottom: data -> model -> step -> validate -> checkpoint -> report.

``train(cfg)`` is what ``train_headnerf.py`` calls: read it first; ``train_step`` is one optimisation
step (callable from tests), and the helpers around them are small and each does one thing.

* **Data order** is a pure function of (seed, step) (``loop.StepBatchSampler``): a resumed run
  sees exactly the batches the uninterrupted run would have seen.
* **Pixel subsets** (``rays_per_image > 0``, per-pixel renderer only): each step draws that
  many distinct pixels per image (eye pixels ``eye_ray_weight`` times likelier), renders only
  them, and computes every loss on the (B, ·, 1, K) strips (``gather_pixels``).
* **Randomness inside the model** (stratified jitter, template-gaze noise) and the pixel draws
  come from one ``torch.Generator`` whose state is checkpointed, so resume is exact.
* **LR schedule**: ``ReduceLROnPlateau`` on the validation loss, checked every
  ``val_every`` steps (the seed's "epochs"): after ``lr_patience`` validations without
  improvement the LR is multiplied by ``lr_decay_factor``.
* **Bad steps**: a NaN/inf loss or gradient skips the step with a warning (weights untouched);
  ``max_bad_steps`` in a row aborts with a message and *no* checkpoint of the bad state (``loop.GuardedStep``).
* **Run directory** (``run_dir.py``): a new run refuses a directory that holds one; ``config.yaml``,
  ``git_hash.txt`` and ``report.json`` are written atomically; SIGINT/SIGTERM finish the current
  step, write a checkpoint, then exit.
* **Multi-process**: under ``torchrun`` the model is wrapped in DistributedDataParallel
  (gloo on CPU, nccl on CUDA); rank 0 alone validates, logs and writes files.

Nothing in the package imports this module: it is the top of the NeRF's side (``train_headnerf.py``).
"""

import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from .atomic_io import atomic_write
from .checkpoint import LAST_CHECKPOINT, CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, to_dict
from .data.dataset import GazeDataset, split_val_rows
from .data.statistics import data_metadata
from .evaluation.exact_render import dataset_redirection
from .geometry.gaze import gaze_in_head_frame
from .loop import GuardedStep, StepBatchSampler, TrainingAborted, to_device
from .losses import VGGPerceptual, total_loss
from .metrics import masked_psnr, whiten_background
from .models import build_model, eval_mode, resolve_mlp_precision
from .rendering.pixels import gather_pixels, sample_pixels
from .run_dir import checkpoint_on_signal, resolve_run_dir, start_run_dir, write_report

__all__ = ["train", "train_step", "TrainingAborted", "PerImageOffsets", "prepare", "forward_batch", "validate",
           "redirection_report"]

# ----------------------------------------------------------------------------------------------
# Small pieces


class PerImageOffsets(torch.nn.Module):
    """Optional learnable per-training-image latent offsets and camera refinements, initialised at 0.

    Camera refinement: ``R' = exp(w) R``, ``t' = exp(w) t + dt`` (a small rotation in the camera frame).
    """

    def __init__(self, num_images: int, code_dim: int, learn_latent: bool, learn_camera: bool):
        super().__init__()
        self.latent = torch.nn.Parameter(torch.zeros(num_images, code_dim)) if learn_latent else None
        self.camera = torch.nn.Parameter(torch.zeros(num_images, 6)) if learn_camera else None

    def forward(self, batch: dict):
        """Returns (shape_code, appearance_code, R_w2c, t_w2c, latent_offsets or None, camera_offsets or None)."""
        shape_code, app_code, R, t = batch["shape_code"], batch["appearance_code"], batch["R_w2c"], batch["t_w2c"]
        lat = cam = None
        if self.latent is not None:
            lat = self.latent[batch["item_index"]]
            ds = shape_code.shape[-1]
            shape_code, app_code = shape_code + lat[:, :ds], app_code + lat[:, ds:]
        if self.camera is not None:
            from pytorch3d.transforms import axis_angle_to_matrix  # only runs that refine cameras need it

            cam = self.camera[batch["item_index"]]
            dR = axis_angle_to_matrix(cam[:, :3])
            R, t = dR @ R, (dR @ t.unsqueeze(-1)).squeeze(-1) + cam[:, 3:]
        return shape_code, app_code, R, t, lat, cam


def forward_batch(model, offsets: PerImageOffsets, batch: dict, training: bool, generator=None,
                  render_template: bool = False, render_background: bool = False, pixels=None):
    """Run the model on a dataset batch (only at ``pixels (B, K)`` if given; the eye mask is
    then the whole image's). Returns (outputs, latent_offsets, camera_offsets)."""
    shape_code, app_code, R, t, lat, cam = offsets(batch)
    gaze_head = gaze_in_head_frame(batch["gaze"], batch["R_w2c"])
    out = model(shape_code, app_code, R, t, batch["K"], gaze_head=gaze_head, eye_mask=batch["eye_mask"],
                training=training, render_template=render_template, render_background=render_background,
                generator=generator, pixels=pixels)
    return out, lat, cam


def train_step(net, offsets: PerImageOffsets, batch: dict, cfg: TrainConfig, guarded_step: GuardedStep, step: int,
               generator: torch.Generator | None = None, vgg=None) -> tuple[torch.Tensor, dict, dict, dict]:
    """One optimisation step on a collated ``batch`` already on the model's device.

    Draws the pixel subset (``cfg.rays_per_image``), renders, computes ``total_loss`` and steps through
    ``guarded_step`` (a non-finite loss or gradient skips the step, weights untouched). Returns (loss,
    loss terms, outputs, the batch as the losses read it: (B, ·, 1, K) strips with pixel subsets).
    """
    pixels = None
    if cfg.rays_per_image:  # a random pixel subset of each image; the losses then read strips
        pixels = sample_pixels(batch["eye_mask"], cfg.rays_per_image, cfg.eye_ray_weight, generator)
    loss_cfg = cfg.loss_config
    want_template = cfg.model.model_name == "HeadNeRF_Gaze" and (loss_cfg.template > 0 or loss_cfg.template_eye > 0)
    out, lat, cam = forward_batch(net, offsets, batch, training=True, generator=generator,
                                  render_template=want_template, render_background=loss_cfg.background > 0,
                                  pixels=pixels)
    if pixels is not None:
        batch = gather_pixels(batch, pixels)
    loss, terms = total_loss(out, batch, loss_cfg, vgg, lat, cam)
    guarded_step(loss, step)
    return loss, terms, out, batch


# ----------------------------------------------------------------------------------------------
# Setup


def setup_distributed(device: str):
    """(rank, world_size, torch.device). Initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is available; use --device cpu")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return rank, world, torch.device(device)


def prepare(cfg: TrainConfig, resume: str | None = None):
    """Everything that can fail on bad input, done before any file is written.

    Returns a dict with datasets, model, offsets, optimizer, scheduler, checkpoint state (or None).
    """

    loss_cfg = cfg.loss_config
    # A gaze-conditioned model must not learn "unlabelled = gaze 0": rows without a gaze label
    # (gaze_valid False, e.g. ETH-XGaze test files or unlabelled photos) train only the HeadNeRF baseline.
    require_gaze = cfg.model.model_name != "HeadNeRF"
    train_ds = GazeDataset(cfg.data.dataset_dir, "train", subjects=cfg.data.subjects or None,
                           image_size=cfg.model.image_size, max_rows_per_subject=cfg.data.max_rows_per_subject,
                           with_template=loss_cfg.template_eye > 0, require_gaze=require_gaze,
                           cache_items=cfg.data.cache_in_memory)
    val_ds = GazeDataset(cfg.data.dataset_dir, "val", subjects=cfg.data.subjects or None,
                         image_size=cfg.model.image_size, require_gaze=require_gaze, cache_items=cfg.data.cache_in_memory)
    vgg = VGGPerceptual(loss_cfg.vgg_weights_path) if loss_cfg.vgg > 0 else None
    state = None
    if resume:
        state = load_checkpoint(resume)
        check_compatible(state, to_dict(cfg.model), resume)
    model = build_model(cfg.model, train_ds.shape_code_dim, train_ds.appearance_code_dim)
    offsets = PerImageOffsets(len(train_ds), train_ds.shape_code_dim + train_ds.appearance_code_dim,
                              cfg.learn_latent_offsets, cfg.learn_camera_refinement)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            offsets.load_state_dict(state["offsets"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{resume}: weights do not fit this config ({str(exc).splitlines()[0][:200]})") from None
    return {"train_ds": train_ds, "val_ds": val_ds, "vgg": vgg, "model": model, "offsets": offsets, "state": state}


def make_optimizer(cfg: TrainConfig, model, offsets: PerImageOffsets):
    """(Adam, its plateau schedule, the parameters it steps). The tri-plane features (and the eye polar
    table, also a grid of free features) take ``triplane_lr_scale`` times larger steps; the schedule scales every group by the same factor."""
    params = list(model.parameters()) + list(offsets.parameters())
    planes = [p for name, p in model.named_parameters() if name.startswith(("triplane.", "eye_polar."))]
    others = [p for p in params if all(p is not q for q in planes)]
    groups = [{"params": others, "lr": cfg.init_lr}]
    if planes:
        groups.append({"params": planes, "lr": cfg.init_lr * cfg.triplane_lr_scale})
    optimizer = torch.optim.Adam(groups, lr=cfg.init_lr)
    # min_lr scales with the group
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.lr_decay_factor,
                                                           patience=cfg.lr_patience,
                                                           min_lr=[cfg.min_lr * g["lr"] / cfg.init_lr for g in groups])
    return optimizer, scheduler, params


def restore_state(state: dict, optimizer, scheduler, generator: torch.Generator, rank: int) -> tuple[int, float]:
    """Put a checkpoint's optimiser, schedule and random streams back. Returns (step, best validation loss)."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    saved_gens = state["rng"]["generator"]
    generator.set_state(saved_gens[rank % len(saved_gens)].cpu())
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"]), float(state["best_val"])


def save_state(path: str, cfg: TrainConfig, model, offsets, optimizer, scheduler, generator: torch.Generator,
               step: int, best: float, train_ds: GazeDataset, metadata: dict, rank: int, world: int) -> None:
    """Write the checkpoint (rank 0), with every rank's random stream so that resume is exact on all of them."""
    gens = [generator.get_state().cpu()]
    if world > 1:
        gens = [torch.empty_like(gens[0]) for _ in range(world)]
        dist.all_gather_object(gens, generator.get_state().cpu())
    if rank == 0:
        save_checkpoint({"model": model.state_dict(), "offsets": offsets.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "step": step, "best_val": best, "config": to_dict(cfg),
                         "rng": {"torch": torch.get_rng_state(), "generator": gens},
                         "code_dims": [train_ds.shape_code_dim, train_ds.appearance_code_dim],
                         "code_slices": {k: list(v) for k, v in train_ds.code_slices.items()},
                         **metadata}, path)


# ----------------------------------------------------------------------------------------------
# Validation, logging and the final report


def validate(model, val_ds: GazeDataset, cfg: TrainConfig, device, rows=None) -> dict:
    """Head-region MSE/PSNR of the model on held-out rows (deterministic, no jitter)."""
    rows = list(range(min(len(val_ds), cfg.val_images))) if rows is None else rows
    psnr, mse = [], []
    zero = PerImageOffsets(0, 0, False, False)
    with eval_mode(model):
        for i in range(0, len(rows), cfg.batch_size):
            batch = to_device(torch.utils.data.default_collate([val_ds[j] for j in rows[i:i + cfg.batch_size]]), device)
            out, _, _ = forward_batch(model, zero, batch, training=False)
            head = batch["head_mask"]
            gt = whiten_background(batch["image"], head)
            psnr.append(masked_psnr(out["image"], gt, head))
            mse.append(((out["image"] - gt).square() * head).flatten(1).sum(1)
                       / (head.flatten(1).sum(1) * 3).clamp_min(1))
    psnr, mse = torch.cat(psnr), torch.cat(mse)
    return {"val_loss": mse.mean().item(), "psnr_head": psnr.nanmean().item()}


def validate_on_rank0(model, val_ds: GazeDataset, cfg: TrainConfig, device, rank: int, world: int) -> float:
    """The validation loss, computed on rank 0 and shared with every rank (each steps its schedule on it)."""
    val = torch.tensor([validate(model, val_ds, cfg, device)["val_loss"] if rank == 0 else 0.0])
    if world > 1:
        dist.broadcast(val, 0)
    return val.item()


def log_step(writer, loss: torch.Tensor, terms: dict, lr: float, out: dict, batch: dict, step: int) -> None:
    """Tensorboard scalars of a training step: the loss and its terms, the LR and the batch's head PSNR."""
    writer.add_scalar("loss/total", loss.item(), step)
    for k, v in terms.items():
        writer.add_scalar(f"loss/{k}", v.item(), step)
    writer.add_scalar("lr", lr, step)
    with torch.no_grad():
        head = batch["head_mask"]
        gt = whiten_background(batch["image"], head)
        writer.add_scalar("psnr/train_head", masked_psnr(out["image"].detach(), gt, head).nanmean().item(), step)


def tensorboard_writer(run_dir: str):
    """A tensorboard ``SummaryWriter`` logging to ``run_dir/tb``."""
    from torch.utils.tensorboard import SummaryWriter  # tensorboard takes seconds to import: only a training run needs it

    return SummaryWriter(os.path.join(run_dir, "tb"))


def _spread(rows: list, count: int) -> list:
    """At most ``count`` of ``rows``, evenly spaced (every subject and frame range, not the first few)."""
    if len(rows) <= count:
        return list(rows)
    return [rows[(i * len(rows)) // count] for i in range(count)]


def redirection_report(model, val_ds: GazeDataset, device, max_sources: int = 16, readout: bool = True) -> dict | None:
    """Gaze redirection against the generator's exact render (synthetic data only): the report's ``redirect``.

    Sources A: up to ``max_sources`` held-out-frame rows (seen cameras), spread over the
    subjects. Targets B: **every** other held-out frame of the same subject and camera (no
    choice of "good" pairs; when a camera has no other held-out frame, every other frame).
    For each pair, render A's identity and camera at B's eyeball gaze and compare, on the
    union of both eye masks, with the generator's exact render of A at that gaze. The
    baseline copies A unchanged. Returns the means over all pairs.

    With ``readout`` (the rows carry the generator's own codes), the gaze of each render is read
    exactly (``evaluation.readout``: the generator gaze that best redraws it) and compared with B's
    gaze: ``readout`` holds the mean/median errors in degrees of the model, of copying A and of the model
    rendered at A's own gaze (the "ignore the request" references) and of the exact targets themselves
    (the readout's floor), and
    ``check``: "met" when the model's mean error is at most half of both the copy's and the model's own
    render at A's gaze ("no_redirection": a gaze-blind model equals it by construction), else "NOT met".
    The measurement is ``evaluation.exact_render.dataset_redirection``.
    """
    frame_rows, _ = split_val_rows(val_ds)
    # spread over the subjects, not the first subject's frames
    return dataset_redirection(model, val_ds, _spread(frame_rows, max_sources), device, readout)

def _image_grid(model, val_ds: GazeDataset, device, n_sweep: int = 5) -> torch.Tensor:
    """(3, H, W) grid: GT | render | renders of the same view at a sweep of gaze yaws."""
    import torchvision

    with eval_mode(model):
        item = to_device(torch.utils.data.default_collate([val_ds[0]]), device)
        tiles = [item["image"][0]]
        out, _, _ = forward_batch(model, PerImageOffsets(0, 0, False, False), item, training=False)
        tiles.append(out["image"][0])
        for yaw in torch.linspace(-0.6, 0.6, n_sweep):
            gaze = torch.tensor([[0.0, float(yaw)]], device=device)
            sweep = model(item["shape_code"], item["appearance_code"], item["R_w2c"], item["t_w2c"], item["K"],
                          gaze_head=gaze, eye_mask=item["eye_mask"])
            tiles.append(sweep["image"][0])
    return torchvision.utils.make_grid(torch.stack(tiles).clamp(0, 1).cpu(), nrow=len(tiles), padding=2, pad_value=1)


def write_gaze_sweep_gif(model, val_ds: GazeDataset, device, path: str, frames: int = 24) -> None:
    """A GIF of the first held-out view with the gaze moving around a circle (pitch 0.3, yaw 0.5 rad)."""
    import imageio.v2 as imageio
    import numpy as np

    item = to_device(torch.utils.data.default_collate([val_ds[0]]), device)
    images = []
    with eval_mode(model):
        for k in range(frames):
            angle = 2 * math.pi * k / frames
            gaze = torch.tensor([[0.3 * math.sin(angle), 0.5 * math.cos(angle)]], device=device)
            out = model(item["shape_code"], item["appearance_code"], item["R_w2c"], item["t_w2c"], item["K"],
                        gaze_head=gaze, eye_mask=item["eye_mask"])
            images.append((out["image"][0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8))
    atomic_write(path, lambda tmp: imageio.mimsave(tmp, images, duration=0.08, loop=0))


def final_report(model, val_ds: GazeDataset, cfg: TrainConfig, device, run_dir: str, report: dict) -> dict:
    """Rank 0 at the end: head PSNR on spread held-out frames and cameras, the redirection report,
    the gaze-sweep GIF; ``report`` is completed and written to ``run_dir/report.json``."""
    frame_rows, cam_rows = split_val_rows(val_ds)
    frame_rows, cam_rows = _spread(frame_rows, cfg.report_images), _spread(cam_rows, cfg.report_images)
    report["report_images"] = {"heldout_frames": len(frame_rows), "heldout_cameras": len(cam_rows)}
    if frame_rows:
        report["psnr_head_heldout_frames"] = validate(model, val_ds, cfg, device, frame_rows)["psnr_head"]
    if cam_rows:
        report["psnr_head_heldout_cameras"] = validate(model, val_ds, cfg, device, cam_rows)["psnr_head"]
    redirect = redirection_report(model, val_ds, device)
    if redirect is not None:
        report["gaze_redirection"] = redirect
        if "readout" in redirect:
            print(f"[train] exact gaze readout check: {redirect['readout']['check']}")
            print("[train] exact gaze readout by source view (model / not redirected, mean °, pairs): " + "; ".join(
                f"{view} {r['model'].get('mean_deg', math.nan):.2f} / {r['no_redirection'].get('mean_deg', math.nan):.2f} "
                f"({r['model']['n']})" for view, r in redirect["readout_by_view"].items()))
    write_gaze_sweep_gif(model, val_ds, device, os.path.join(run_dir, "gaze_sweep.gif"))
    write_report(run_dir, report)
    print("[train] report: " + json.dumps(report))
    print(f"[train] outputs: {os.path.join(run_dir, LAST_CHECKPOINT)}, {run_dir}/report.json, {run_dir}/gaze_sweep.gif, "
          f"tensorboard {run_dir}/tb")
    return report


# ----------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, resume: str | None = None, dry_run: bool = False, progress: bool = True) -> dict:
    """Train ``cfg``; returns the final report dict (also written to ``run_dir/report.json``)."""
    rank, world, device = setup_distributed(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = resolve_run_dir(cfg.run_dir, resume)
    torch.manual_seed(cfg.seed)
    parts = prepare(cfg, resume)
    train_ds, val_ds, model, offsets, state = (parts[k] for k in ("train_ds", "val_ds", "model", "offsets", "state"))
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print(f"[train] {cfg.model.model_name}: {n_params / 1e6:.2f} M parameters; {len(train_ds)} training and "
              f"{len(val_ds)} validation images from {cfg.data.dataset_dir}; run dir {run_dir}")
    if dry_run:
        if rank == 0:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return {"dry_run": True, "parameters": n_params}

    model.to(device)
    offsets.to(device)
    optimizer, scheduler, params = make_optimizer(cfg, model, offsets)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed * 1000 + rank)
    metadata = data_metadata(train_ds) if rank == 0 else {}
    step, best = restore_state(state, optimizer, scheduler, generator, rank) if state is not None else (0, math.inf)
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    writer = None
    if rank == 0:
        start_run_dir(run_dir, to_dict(cfg))
        writer = tensorboard_writer(run_dir)

    def save() -> None:
        save_state(os.path.join(run_dir, LAST_CHECKPOINT), cfg, model, offsets, optimizer, scheduler, generator, step,
                   best, train_ds, metadata, rank, world)

    guarded_step = GuardedStep(optimizer, params, cfg.grad_clip, cfg.max_bad_steps, run_dir, "init_lr", world > 1)
    loader = DataLoader(train_ds, batch_sampler=StepBatchSampler(train_ds, cfg.batch_size, cfg.seed, step, cfg.steps,
                                                                 rank, world),
                        num_workers=cfg.data.num_workers, persistent_workers=False, pin_memory=device.type == "cuda")
    t_start = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True, file=sys.stdout,
               disable=rank != 0 or not progress)
    with checkpoint_on_signal(run_dir, "train", save, announce=rank == 0) as at_step_end, bar:
        for batch in loader:
            loss, terms, out, batch = train_step(net, offsets, to_device(batch, device), cfg, guarded_step, step,
                                                 generator, parts["vgg"])
            step += 1
            lr = optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
            if writer is not None and step % cfg.log_every == 0:
                log_step(writer, loss, terms, lr, out, batch, step)
            if step % cfg.val_every == 0 or step == cfg.steps:
                val_loss = validate_on_rank0(model, val_ds, cfg, device, rank, world)
                scheduler.step(val_loss)
                best = min(best, val_loss)
                if writer is not None:
                    writer.add_scalar("val/loss", val_loss, step)
                    writer.add_scalar("val/psnr_head", -10 * math.log10(max(val_loss, 1e-10)), step)
            if writer is not None and step % cfg.image_every == 0:
                writer.add_image("val/gt_render_gaze_sweep", _image_grid(model, val_ds, device), step)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save()
            at_step_end(step)

    report = {"steps": step, "train_seconds": round(time.time() - t_start, 1), "model_name": cfg.model.model_name,
              "mlp_precision": resolve_mlp_precision(cfg.model.mlp_precision, device.type)}
    if rank == 0:
        final_report(model, val_ds, cfg, device, run_dir, report)
        writer.close()
    if world > 1:
        dist.barrier()
    return report
