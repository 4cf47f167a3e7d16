"""What ``FittingSingleImage.py`` does with one photo, and the files it writes.

``fit_single_image(...)`` runs: load the checkpoint -> read the photo -> face analysis and
normalisation in the checkpoint's framing (``HeadNeRF.face``) -> initial codes (the face
package's fit of the synthetic head model when the checkpoint uses that 43-d layout, else the
checkpoint's ``code_mean``) -> ``fitting.fit_image`` -> outputs.

Outputs (all written into a hidden temporary folder inside ``save_root`` and moved into place
with ``os.replace`` only when everything succeeded; ``fit.json`` is moved last, so a folder
with a ``fit.json`` is complete):

* ``merged.png``: normalised input crop | fit | absolute difference, RGB, each upscaled to 256 px.
* ``gaze_sweep.gif`` / ``.mp4``: the eyes go round a circle, then look at each requested target.
* ``pose_sweep.gif`` / ``.mp4``: the head turns along a yaw/pitch path, eyes on the camera.
* ``interp.gif``: the latent interpolation to ``--target_embedding`` (only with one).
* ``latent.pt``: plain tensors (codes, camera, photo->crop warp), ``weights_only`` loadable,
  accepted back by ``--target_embedding``.
* ``fit.json``: arguments, timings per stage, losses per stage, PSNR, detected head pose.
* ``redirected/*.png``, ``photo_gaze_sweep.gif`` / ``.mp4``, ``photo_strip.png``: the photo itself at its
  original size with only the eyes redirected (``HeadNeRF.eyewarp``, docs/photo_redirection.md).

Errors a user can cause (unreadable photo, no face, a face too small, a missing or foreign
checkpoint, a bad code file) are raised as :class:`FittingInputError` / ``CheckpointError`` /
``NoFaceError`` / ``ImageReadError`` with a one-line message; the script prints it.
"""

import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from .fitting import (
    FitConfig,
    ModelInfo,
    fit_image,
    is_synthetic_layout,
    join_code,
    load_trained_model,
    render_fit,
    split_code,
)
from .run_lock import left_by_a_dead_writer, writer_prefix

__all__ = [
    "LATENT_FORMAT",
    "MIN_INTEROCULAR_PX",
    "FittingInputError",
    "fit_single_image",
    "gaze_sweep",
    "load_code_file",
    "load_target_embedding",
    "parse_gaze_targets",
    "pose_sweep",
    "save_latent",
    "to_frame",
    "write_animation",
]

MIN_INTEROCULAR_PX = 12.0  # eye-centre distance in the photo below which there is too little face to fit
FRAME_SIZE = 256  # output frames are upscaled to this (pixel-exact nearest neighbour when S divides it)
LATENT_FORMAT = "HeadNeRF_Gaze latent v1"


class FittingInputError(ValueError):
    """A user input the fit cannot use (a wrong argument or file: exit code 2). One-line message."""

    exit_code = 2


class PhotoUnusableError(FittingInputError):
    """The photo itself cannot be fitted (a face too small, ...): exit code 1, like "no face found"."""

    exit_code = 1


# Everything the command may write into save_root; what this run does not write is removed at the
# end, so every output in the folder comes from the last run (an old interp.gif never stays beside new
# outputs). redirected/*.png are the photo's redirected frames.
KNOWN_OUTPUTS = ("merged.png", "gaze_sweep.gif", "gaze_sweep.mp4", "pose_sweep.gif", "pose_sweep.mp4", "interp.gif",
                 "latent.pt", "photo_gaze_sweep.gif", "photo_gaze_sweep.mp4", "photo_strip.png", "fit.json")
WORK_PREFIX = ".fitting_tmp_"


def check_save_root(save_root: str) -> None:
    """Refuse (before any work) a save_root that is an existing file."""
    if os.path.exists(save_root) and not os.path.isdir(save_root):
        raise FittingInputError(f"--save_root {save_root} is an existing file, not a folder; pass a folder path")


def remove_dead_work_dirs(save_root: str) -> list[str]:
    """Delete ``.fitting_tmp_<pid>_*`` folders of runs that were killed (their pid is gone)."""
    removed = []
    for name in os.listdir(save_root) if os.path.isdir(save_root) else []:
        if not left_by_a_dead_writer(name, WORK_PREFIX):
            continue  # not ours, or a live run's
        shutil.rmtree(os.path.join(save_root, name), ignore_errors=True)
        removed.append(name)
    return removed


def publish_outputs(work: str, save_root: str, outputs: list[str], report: dict, removed_before: list[str]) -> None:
    """Move a finished run's outputs from its work folder into save_root; fit.json last, since its presence
    marks a complete folder. An earlier run's outputs that this run did not write are removed and listed in
    ``report["removed_old_outputs"]`` (with ``removed_before``, e.g. killed runs' work folders)."""
    if any(name.startswith("redirected/") for name in outputs):
        os.makedirs(os.path.join(save_root, "redirected"), exist_ok=True)
    if os.path.isfile(os.path.join(save_root, "fit.json")):  # the folder is incomplete while outputs move
        os.unlink(os.path.join(save_root, "fit.json"))
    report["removed_old_outputs"] = remove_stale_outputs(save_root, outputs) + removed_before
    with open(os.path.join(work, "fit.json"), "w") as f:
        json.dump(report, f, indent=1)
    for name in outputs + ["fit.json"]:
        os.replace(os.path.join(work, name), os.path.join(save_root, name))


def remove_stale_outputs(save_root: str, keep: list[str]) -> list[str]:
    """Delete the command's outputs in save_root that are not in ``keep`` (written by an earlier run)."""
    keep_set, removed = set(keep), []
    for name in KNOWN_OUTPUTS:
        if name not in keep_set and os.path.isfile(os.path.join(save_root, name)):
            os.unlink(os.path.join(save_root, name))
            removed.append(name)
    folder = os.path.join(save_root, "redirected")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        rel = "redirected/" + name
        if rel not in keep_set and name.endswith(".png"):
            os.unlink(os.path.join(folder, name))
            removed.append(rel)
    return removed


# ----------------------------------------------------------------------------------------------
# Inputs


def parse_gaze_targets(text: str | None) -> torch.Tensor:
    """``"p,y;p,y"`` (radians, camera frame, as the labels) -> (N, 2). Empty/None -> (0, 2).
    The named target ``camera`` ("look into the lens") is (0, 0)."""
    if not text or not text.strip():
        return torch.zeros(0, 2)
    out = []
    for part in text.split(";"):
        if not part.strip():
            continue
        if part.strip().lower() == "camera":
            out.append((0.0, 0.0))
            continue
        try:
            p, y = (float(v) for v in part.split(","))
        except ValueError:
            raise FittingInputError(f"--gaze_targets: {part.strip()!r} is not 'pitch,yaw' (radians), "
                                    "e.g. \"0.2,-0.3;0,0.4\"") from None
        if not (math.isfinite(p) and math.isfinite(y)):
            raise FittingInputError(f"--gaze_targets: {part.strip()!r}: angles must be finite numbers (radians)")
        if abs(p) > 1.2 or abs(y) > 1.2:
            raise FittingInputError(f"--gaze_targets: {part.strip()!r} is outside ±1.2 rad")
        out.append((p, y))
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 2)


def _code_from_obj(obj, path: str) -> torch.Tensor:
    if isinstance(obj, dict):
        for key in ("code", "latent_code"):
            if key in obj:
                return torch.as_tensor(obj[key], dtype=torch.float32).reshape(-1)
        raise FittingInputError(f"{path}: no 'code' entry")
    return torch.as_tensor(np.asarray(obj), dtype=torch.float32).reshape(-1)


def load_code_file(path: str, info: ModelInfo) -> torch.Tensor:
    """A (D,) latent code in the checkpoint's layout from .npy / .pt (tensor, or a dict with 'code', e.g. latent.pt)
    / .txt / .json (numbers)."""
    if not os.path.isfile(path):
        raise FittingInputError(f"{path}: code file not found")
    try:
        if path.endswith(".npy"):
            code = _code_from_obj(np.load(path, allow_pickle=False), path)
        elif path.endswith((".pt", ".pth")):
            code = _code_from_obj(torch.load(path, map_location="cpu", weights_only=True), path)
        elif path.endswith(".json"):
            with open(path) as f:
                code = _code_from_obj(json.load(f), path)
        else:
            code = torch.as_tensor(np.loadtxt(path, dtype=np.float32).reshape(-1))
    except FittingInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
        raise FittingInputError(f"{path}: cannot read a latent code ({str(exc).splitlines()[0][:160]})") from None
    if code.numel() != info.code_dim:
        raise FittingInputError(f"{path}: code has {code.numel()} values, the checkpoint's model takes {info.code_dim} "
                                f"({info.code_slices})")
    if not torch.isfinite(code).all():
        raise FittingInputError(f"{path}: code has non-finite values")
    return code


def load_target_embedding(spec: str, info: ModelInfo) -> dict:
    """``--target_embedding``: a ``latent.pt`` of an earlier fit, or a dataset row ``path/subjectXXXX.h5:ROW``.

    Returns {"shape_code" (1, Ds), "appearance_code" (1, Da), "source": str}.
    """
    path, row = spec, None
    if not os.path.isfile(spec) and ":" in spec:
        path, _, r = spec.rpartition(":")
        try:
            row = int(r)
        except ValueError:
            raise FittingInputError(f"--target_embedding: {spec!r}: the row after ':' must be an integer") from None
    if not os.path.isfile(path):
        raise FittingInputError(f"--target_embedding: {path}: file not found (give a latent.pt or FILE.h5:ROW)")
    if row is not None or path.endswith((".h5", ".hdf5")):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                n = f["latent_code"].shape[0]
                row = 0 if row is None else row
                if not 0 <= row < n:
                    raise FittingInputError(f"--target_embedding: {path} has rows 0..{n - 1}, not {row}")
                code = torch.as_tensor(np.asarray(f["latent_code"][row], dtype=np.float32))
                slices = json.loads(f["latent_code"].attrs["code_slices"])
        except FittingInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
            raise FittingInputError(f"--target_embedding: {path}: not a processed dataset file "
                                    f"({str(exc).splitlines()[0][:160]})") from None
        if {k: list(v) for k, v in slices.items()} != info.code_slices:
            raise FittingInputError(f"--target_embedding: {path}: code layout {slices} differs from the checkpoint's "
                                    f"{info.code_slices}")
        shape, app = split_code(code, info.code_slices)
        return {"shape_code": shape[None], "appearance_code": app[None], "source": f"{path}:{row}"}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
        raise FittingInputError(f"--target_embedding: {path}: not a latent.pt ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or "shape_code" not in obj or "appearance_code" not in obj:
        raise FittingInputError(f"--target_embedding: {path}: not a latent.pt (no shape_code / appearance_code)")
    shape = torch.as_tensor(obj["shape_code"], dtype=torch.float32).reshape(1, -1)
    app = torch.as_tensor(obj["appearance_code"], dtype=torch.float32).reshape(1, -1)
    if (shape.shape[1], app.shape[1]) != tuple(info.code_dims):
        raise FittingInputError(f"--target_embedding: {path}: codes of sizes {shape.shape[1]}+{app.shape[1]}, the "
                                f"checkpoint's model takes {info.code_dims[0]}+{info.code_dims[1]}")
    return {"shape_code": shape, "appearance_code": app, "source": path}


def load_user_mask(path: str, image_shape: tuple, face, size: int) -> np.ndarray:
    """A head mask of the photo (any image; >= 128 inside) warped into the normalised crop: (S, S) uint8 0/255."""
    import cv2

    from .face import load_image_rgb
    from .face.normalise import warp_for_cv2

    m = load_image_rgb(path).mean(-1)  # raises ImageReadError (one line)
    if m.shape[:2] != tuple(image_shape[:2]):
        raise FittingInputError(f"--mask: {path} is {m.shape[1]}x{m.shape[0]} px, the photo "
                                f"{image_shape[1]}x{image_shape[0]} px")
    warped = cv2.warpPerspective((m >= 128).astype(np.float32), warp_for_cv2(np.asarray(face.warp, np.float64)),
                                 (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return ((warped >= 0.5) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Frames and files


def to_frame(image: torch.Tensor, size: int = FRAME_SIZE) -> np.ndarray:
    """(3, S, S) [0, 1] -> (size, size, 3) uint8, nearest-neighbour upscaled (pixels stay visible, pupils too)."""
    import cv2

    arr = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    if arr.shape[0] == size:
        return arr
    interp = cv2.INTER_NEAREST if size % arr.shape[0] == 0 else cv2.INTER_CUBIC
    return cv2.resize(arr, (size, size), interpolation=interp)


def label(frame: np.ndarray, text: str) -> np.ndarray:
    """A small caption at the bottom of a frame (white box, black text)."""
    import cv2

    frame = frame.copy()
    h = frame.shape[0]
    cv2.rectangle(frame, (0, h - 16), (frame.shape[1], h), (255, 255, 255), -1)
    cv2.putText(frame, text, (3, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return frame


def _atomic(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=ext, dir=d)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_png(path: str, rgb: np.ndarray) -> None:
    import imageio.v2 as imageio

    _atomic(path, lambda p: imageio.imwrite(p, rgb, format="png"))


def write_animation(stem: str, frames: list, fps: float = 8.0, mp4: bool = True) -> list:
    """``stem.gif`` (looping) and, with ``mp4``, ``stem.mp4`` (H.264 via imageio-ffmpeg). Returns the paths."""
    import imageio.v2 as imageio

    paths = [stem + ".gif"]
    _atomic(paths[0], lambda p: imageio.mimsave(p, frames, format="gif", duration=1000.0 / fps, loop=0))
    if mp4:
        paths.append(stem + ".mp4")

        def _mp4(p):
            with imageio.get_writer(p, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                    pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error") as w:
                for fr in frames:
                    w.append_data(fr)

        _atomic(paths[1], _mp4)
    return paths


def gaze_sweep(result, targets: torch.Tensor | None = None, circle: int = 16, hold: int = 4,
               pitch: float = 0.3, yaw: float = 0.45, eye_code=None, full_frames: bool = False
               ) -> tuple[list, torch.Tensor]:
    """Frames of the fitted view with the eyes going round a circle (camera-frame pitch ``pitch`` sin,
    yaw ``yaw`` cos), then holding each of ``targets (N, 2)`` for ``hold`` frames.

    Speed: with a per-pixel model (``renders_pixel_subsets``) only the pixels of the fitted view's eye
    mask, dilated by 2 px, are re-rendered for each gaze and pasted into the fitted render (about a
    tenth of the rays); the model's gaze-dependent changes outside that region, if any, are not shown.
    ``full_frames=True`` renders every frame whole.

    Returns (frames (size, size, 3) uint8 with captions, gazes (F, 2) camera frame).
    """
    a = torch.arange(circle, dtype=torch.float32) * (2 * math.pi / circle)
    gazes = torch.stack((pitch * torch.sin(a), yaw * torch.cos(a)), -1)
    if targets is not None and len(targets):
        gazes = torch.cat((gazes, targets.float().repeat_interleave(hold, 0)))
    if full_frames or not result.model.renders_pixel_subsets:
        images = render_fit(result, gaze=gazes, eye_code=eye_code)
    else:
        region = torch.nn.functional.max_pool2d(result.eye_mask[:1].float(), 5, stride=1, padding=2)[0, 0]
        pixels = region.flatten().nonzero().squeeze(1)
        base = result.render if result.render is not None else render_fit(result)
        images = base[:1].expand(len(gazes), -1, -1, -1).flatten(2).clone()
        if pixels.numel():
            images[:, :, pixels] = render_fit(result, gaze=gazes, pixels=pixels)[:, :, 0, :]
        images = images.view(len(gazes), *base.shape[1:])
    frames = [label(to_frame(im), f"gaze p{g[0]:+.2f} y{g[1]:+.2f} rad") for im, g in zip(images, gazes.tolist())]
    return frames, gazes


def pose_sweep(result, count: int = 16, yaw: float = 0.5, pitch: float = 0.25, eye_code=None) -> tuple[list, torch.Tensor]:
    """Frames with the head turning (ETH-XGaze head pose yaw ``yaw`` cos, pitch ``pitch`` sin: a loop around the
    fitted view's neighbourhood) while the eyes look at the camera (camera-frame gaze 0)."""
    a = torch.arange(count, dtype=torch.float32) * (2 * math.pi / count)
    poses = torch.stack((pitch * torch.sin(2 * a), yaw * torch.sin(a)), -1)
    images = render_fit(result, gaze=torch.zeros(count, 2), head_pose=poses, eye_code=eye_code)
    frames = [label(to_frame(im), f"head p{p[0]:+.2f} y{p[1]:+.2f} rad") for im, p in zip(images, poses.tolist())]
    return frames, poses


def interpolation(result, target_codes: dict, count: int = 10) -> list:
    """Frames of the fitted view while the codes move linearly to ``target_codes`` and back."""
    w = torch.linspace(0, 1, count)
    w = torch.cat((w, w.flip(0)[1:-1]))[:, None]
    codes = {k: result.codes[k] * (1 - w) + target_codes[k].to(result.codes[k]) * w
             for k in ("shape_code", "appearance_code")}
    images = render_fit(result, codes=codes)
    return [label(to_frame(im), f"to target {float(x):.2f}") for im, x in zip(images, w[:, 0])]


def save_latent(path: str, result, info: ModelInfo, warp=None, extra: dict | None = None) -> None:
    """latent.pt: plain tensors / numbers / strings only (``torch.load(..., weights_only=True)``)."""
    data = {
        "format": LATENT_FORMAT,
        "model_name": info.model_name, "image_size": int(info.image_size),
        "shape_code": result.shape_code[0].cpu(), "appearance_code": result.appearance_code[0].cpu(),
        "code": join_code(result.shape_code[0].cpu(), result.appearance_code[0].cpu(), info.code_slices),
        "code_slices": {k: list(v) for k, v in info.code_slices.items()},
        "R_w2c": result.R_w2c[0].cpu(), "t_w2c": result.t_w2c[0].cpu(), "K": result.K[0].cpu(),
        "gaze": result.gaze[0].cpu(), "camera_offset": result.camera_offset.cpu(),
        "eye_mask": result.eye_mask[0, 0].cpu().to(torch.uint8),
        "warp": torch.as_tensor(np.eye(3) if warp is None else np.asarray(warp), dtype=torch.float64),
    }
    data.update(extra or {})
    _atomic(path, lambda p: torch.save(data, p))


# ----------------------------------------------------------------------------------------------
# The command


def _interocular(lm68: np.ndarray) -> float:
    lm = np.asarray(lm68, np.float64)
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def fit_single_image(model_path: str, img: str, save_root: str, mask: str | None = None, para_3dmm: str | None = None,
                     target_embedding: str | None = None, gaze_targets: str | None = None, finetune_steps: int = 0,
                     face_index: int | None = None, device: str = "cpu", steps: int | None = None,
                     vgg_weights: str | None = None, progress: bool = True, seed: int = 0, mp4: bool = True,
                     estimator: str | None = None, args: dict | None = None, full_frames: bool = False) -> dict:
    """The whole command (see the module docstring). Returns the fit.json dict."""
    t_start = time.perf_counter()
    seconds, cpu = {}, {}
    clock = {"wall": t_start, "cpu": time.process_time()}

    def lap(name):  # wall and CPU seconds since the previous lap
        w, c = time.perf_counter(), time.process_time()
        seconds[name], cpu[name] = w - clock["wall"], c - clock["cpu"]
        clock.update(wall=w, cpu=c)

    check_save_root(save_root)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FittingInputError("--device cuda: no CUDA device is available; use --device cpu")
    targets = parse_gaze_targets(gaze_targets)
    if finetune_steps < 0 or (steps is not None and steps < 0):
        raise FittingInputError("--steps / --finetune_steps must be >= 0")

    model, info = load_trained_model(model_path, device)
    target_codes = load_target_embedding(target_embedding, info) if target_embedding else None
    user_code = load_code_file(para_3dmm, info) if para_3dmm else None
    est = None
    if estimator:
        from .estimator import load_estimator

        est = load_estimator(estimator, device)
    lap("load_model")

    from .face import analyse_and_normalise, load_image_rgb

    image = load_image_rgb(img)  # ImageReadError: one line
    conv = info.camera_convention
    face, analysis = analyse_and_normalise(image, info.image_size, face_index=face_index, name=img,
                                           focal_factor=float(conv["focal_factor"]), distance=float(conv["distance"]))
    iod = _interocular(analysis.lm68)
    if iod < MIN_INTEROCULAR_PX:
        raise PhotoUnusableError(f"{img}: face too small to fit (eyes {iod:.1f} px apart, need >= "
                                f"{MIN_INTEROCULAR_PX:.0f} px)")
    if mask:
        face.mask = load_user_mask(mask, image.shape, face, info.image_size)
    lap("face_analysis")

    if user_code is not None:
        code, code_init = user_code, f"--para_3dmm {para_3dmm}"
    elif is_synthetic_layout(info.code_slices):
        from .face import fit_latent_codes

        code, code_init = torch.as_tensor(fit_latent_codes([face])[0], dtype=torch.float32), "face package fit"
    else:
        code, code_init = info.code_mean.clone(), "checkpoint code_mean"
    from .fitting import target_from_normalised_face

    target = target_from_normalised_face(face, code, info, name=img, code_init=code_init)
    lap("code_init")

    cfg = FitConfig(finetune_steps=finetune_steps, seed=seed)
    if steps is not None:
        cfg.steps = steps
    if vgg_weights:
        cfg.vgg, cfg.vgg_weights_path = 0.1, vgg_weights
        FitConfig.__post_init__(cfg)
    torch.manual_seed(seed)
    result = fit_image(model, target, cfg, progress=progress)
    lap("fit")
    seconds["fit_codes"] = result.seconds.get("codes", 0.0)
    seconds["finetune"] = result.seconds.get("finetune", 0.0)

    os.makedirs(save_root, exist_ok=True)
    stale_work = remove_dead_work_dirs(save_root)
    work = tempfile.mkdtemp(prefix=writer_prefix(WORK_PREFIX), dir=save_root)
    try:
        eye_code = code.numpy() if is_synthetic_layout(info.code_slices) else None
        inp = target.image[0].cpu()
        head = target.head_mask[0].cpu()
        fit = result.render[0].cpu()
        diff = (fit - (inp * head + (1 - head))).abs()
        write_png(os.path.join(work, "merged.png"), np.concatenate([label(to_frame(inp), "input crop"),
                                                                    label(to_frame(fit), "fit"),
                                                                    label(to_frame(diff), "|difference|")], 1))
        outputs = ["merged.png"]
        frames, gazes = gaze_sweep(result, targets, eye_code=eye_code, full_frames=full_frames)
        outputs += [os.path.basename(p) for p in write_animation(os.path.join(work, "gaze_sweep"), frames, mp4=mp4)]
        frames_p, _poses = pose_sweep(result, eye_code=eye_code)
        outputs += [os.path.basename(p) for p in write_animation(os.path.join(work, "pose_sweep"), frames_p, mp4=mp4)]
        if target_codes is not None:
            write_animation(os.path.join(work, "interp"), interpolation(result, target_codes), mp4=False)
            outputs.append("interp.gif")
        save_latent(os.path.join(work, "latent.pt"), result, info, face.warp,
                    {"source_image": os.path.abspath(img), "code_init": code_init})
        outputs.append("latent.pt")
        from .eyewarp.outputs import write_photo_redirection  # the photo's own eyes, redirected (issue 16)

        photo_files, photo_report = write_photo_redirection(work, image, analysis, face, targets.numpy(), mp4=mp4)
        outputs += photo_files
        estimated = None
        if est is not None:
            estimated = _estimate_sweep(est[0], est[1], result, gazes, targets)
        lap("outputs")
        seconds["total"] = time.perf_counter() - t_start
        cpu["total"] = sum(cpu.values())
        report = {
            "arguments": args or {},
            "model": {"path": model_path, "model_name": info.model_name, "image_size": info.image_size,
                      "step": info.step, "camera_convention": info.camera_convention,
                      "metadata_source": info.metadata_source},
            "face": {"num_faces": int(analysis.num_faces), "box": [float(v) for v in analysis.box],
                     "interocular_px": iod, "head_pose_detected": [float(v) for v in face.face_head_pose],
                     "code_init": code_init, "user_mask": bool(mask)},
            "fit": {"psnr_head": result.psnr_head, "steps_run": result.steps_run,
                    "loss_first_last": {k: [v[0], v[-1]] for k, v in result.losses.items() if v},
                    "losses": {k: [round(x, 6) for x in v] for k, v in result.losses.items()},
                    "camera_offset": [float(v) for v in result.camera_offset],
                    "fitted_gaze": [float(v) for v in result.gaze[0]],
                    "fitted_head_pose": [float(v) for v in result.head_pose]},
            "gaze_targets": targets.tolist(),
            "photo_redirection": photo_report,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
            "outputs": outputs + ["fit.json"],
        }
        if estimated is not None:
            report["estimator"] = estimated
        publish_outputs(work, save_root, outputs, report, stale_work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _estimate_sweep(est_model, est_info, result, gazes: torch.Tensor, targets: torch.Tensor) -> dict:
    """Gaze read back by the estimator from the redirected renders of each requested direction."""
    from .estimator import estimate
    from .geometry.gaze import angular_error_deg

    size = int(getattr(est_info, "input_size", result.render.shape[-1]))
    if size != result.render.shape[-1]:
        return {"skipped": f"estimator takes {size} px images, the model renders {result.render.shape[-1]} px"}
    asked = torch.cat((gazes[:16:2], targets.float())) if len(targets) else gazes[:16:2]
    images = render_fit(result, gaze=asked)
    read = estimate(est_model, images)["gaze"].cpu()
    err = angular_error_deg(read, asked)
    return {"requested": asked.tolist(), "estimated": read.tolist(), "angular_error_deg": err.tolist(),
            "mean_angular_error_deg": float(err.mean())}
