"""The photo-redirection files ``FittingSingleImage.py`` writes (next to the NeRF outputs).

* ``redirected/<name>.png``: the photo at its original size with only the eyes redirected, one per
  requested gaze (``--gaze_targets``; without it: the five of ``DEFAULT_TARGETS``);
* ``photo_gaze_sweep.gif`` / ``.mp4``: the face crop while the eyes go round a circle, then hold
  each target;
* ``photo_strip.png``: face crops side by side, original | each requested gaze, captioned;
* the report (``fit.json["photo_redirection"]``): eye model, current gaze, timings, and the notes
  (one line each: what was refused or only partly done; also printed on stderr).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from ..image_io import label, write_animation, write_png
from .redirect import PhotoRedirection, RedirectConfig, changed_region, prepare, redirect

__all__ = ["DEFAULT_TARGETS", "face_crop_box", "target_name", "write_photo_redirection"]

# (name, (pitch, yaw) rad, normalised camera frame; +yaw = towards the image left, +pitch = up)
DEFAULT_TARGETS = (("look_image_left", (0.0, 0.3)), ("look_image_right", (0.0, -0.3)), ("look_up", (0.25, 0.0)),
                   ("look_down", (-0.25, 0.0)), ("camera", (0.0, 0.0)))
SWEEP_FRAMES = 16
SWEEP_PITCH, SWEEP_YAW = 0.2, 0.3  # the photo sweep's circle (rad), inside the warp's range
CROP_SIZE = 256  # sweep frames and strip tiles are face crops resized to this height


def target_name(gaze: tuple) -> str:
    """File stem of a requested gaze (pitch, yaw): ``gaze_p+0.20_y-0.30`` or ``camera`` for (0, 0)."""
    p, y = float(gaze[0]), float(gaze[1])
    if p == 0.0 and y == 0.0:
        return "camera"
    return f"gaze_p{p:+.2f}_y{y:+.2f}"


def face_crop_box(lm478: np.ndarray, shape: tuple) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) around the eyes and brows: 1.6x the mesh width, centred on the eyes."""
    xy = np.asarray(lm478)[:, :2]
    w = float(xy[:, 0].max() - xy[:, 0].min())
    c = xy[[33, 263, 468, 473]].mean(0)
    half = max(8.0, 0.8 * w)
    H, W = shape[:2]
    x0, y0 = int(max(0, math.floor(c[0] - half))), int(max(0, math.floor(c[1] - 0.8 * half)))
    x1, y1 = int(min(W, math.ceil(c[0] + half))), int(min(H, math.ceil(c[1] + 1.2 * half)))
    return x0, y0, x1, y1


def _crop(image: np.ndarray, box, height: int = CROP_SIZE) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    c = image[y0:y1, x0:x1]
    s = height / c.shape[0]
    w = max(16, int(round(c.shape[1] * s / 16)) * 16)  # even sizes for H.264
    return cv2.resize(c, (w, height), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def write_photo_redirection(work: str, image: np.ndarray, analysis, face, targets, mp4: bool = True,
                            config: RedirectConfig | None = None, progress_stream=None) -> tuple[list, dict]:
    """Write the photo-redirection files into ``work``; returns (relative file names, report dict).

    An unexpected failure inside (a bug, an odd face) does not stop the command: it becomes one note and
    no photo file is listed (files not listed are never moved out of the temporary folder).
    """
    progress_stream = progress_stream or sys.stderr  # looked up per call: the stream may be swapped (tests)
    try:
        return _write_photo_redirection(work, image, analysis, face, targets, mp4, config, progress_stream)
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback, by design (issue 16)
        note = f"photo redirection failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        print(f"[photo] {note}", file=progress_stream)
        return [], {"notes": [note], "written": []}


def _write_photo_redirection(work, image, analysis, face, targets, mp4, config, progress_stream) -> tuple[list, dict]:
    """See :func:`write_photo_redirection`.

    Args:
        work: output folder. image: (H, W, 3) uint8 photo. analysis: its ``FaceAnalysis`` (photo px).
        face: its ``NormalisedFace`` (R_image, t_image, K_image, cam_R_w2c). targets: (N, 2) requested gazes
            (normalised frame) or empty for ``DEFAULT_TARGETS``.
    Never raises for a face it cannot redirect: the notes say why and the affected files are not written.
    """
    t0 = time.perf_counter()
    targets = np.asarray(targets, np.float64).reshape(-1, 2)
    named = [(target_name(g), tuple(g)) for g in targets] if len(targets) else list(DEFAULT_TARGETS)
    red: PhotoRedirection = prepare(image, analysis.lm478, face.K_image, face.R_image, face.t_image, face.cam_R_w2c,
                                    config)
    t_prep = time.perf_counter() - t0
    notes = list(red.notes)
    files, written, frame_seconds = [], [], []
    box = face_crop_box(analysis.lm478, image.shape)
    if red.usable:
        os.makedirs(os.path.join(work, "redirected"), exist_ok=True)
    for name, g in named:
        t = time.perf_counter()
        out, note = redirect(image, red, np.array(g), label=name)
        frame_seconds.append(time.perf_counter() - t)
        if out is None:
            if note and note not in notes:
                notes.append(note)
            continue
        rel = os.path.join("redirected", name + ".png")
        write_png(os.path.join(work, rel), out)
        files.append(rel)
        written.append((name, out))
    if written:
        tiles = [label(_crop(image, box), "original")] + [label(_crop(o, box), n.replace("_", " ")) for n, o in written]
        write_png(os.path.join(work, "photo_strip.png"), np.concatenate(tiles, 1))
        files.append("photo_strip.png")
        a = np.arange(SWEEP_FRAMES) * (2 * math.pi / SWEEP_FRAMES)
        circle = [(SWEEP_PITCH * math.sin(x), SWEEP_YAW * math.cos(x)) for x in a]
        frames = []
        for g in circle + [g for _, g in named for _ in range(2)]:
            t = time.perf_counter()
            out, _note = redirect(image, red, np.array(g))
            frame_seconds.append(time.perf_counter() - t)
            if out is not None:
                frames.append(label(_crop(out, box), f"gaze p{g[0]:+.2f} y{g[1]:+.2f} rad"))
        if frames:
            files += [os.path.basename(p) for p in write_animation(os.path.join(work, "photo_gaze_sweep"), frames,
                                                                    mp4=mp4)]
    for n in notes:
        print(f"[photo] {n}", file=progress_stream)
    region = changed_region(image.shape, red) if red.usable else np.zeros(image.shape[:2], bool)
    report = {
        "anatomy": red.config.anatomy,
        "eyes": [{"side": e.side, "status": e.status, "radius_px": round(float(e.radius), 2),
                  "width_px": round(float(e.width_px), 2), "lid_gap_px": round(float(e.height_px), 2),
                  "iris_edge_contrast": round(float(e.fit_contrast), 2)} for e in red.eyes],
        "current_gaze": red.current_gaze(),
        "targets": {n: [float(v) for v in g] for n, g in named},
        "written": [n for n, _ in written],
        "notes": notes,
        "periocular_pixels": int(region.sum()),
        "seconds": {"eye_model": round(t_prep, 3), "per_frame_mean": round(float(np.mean(frame_seconds)), 4)
                    if frame_seconds else None, "total": round(time.perf_counter() - t0, 3)},
    }
    return files, report
