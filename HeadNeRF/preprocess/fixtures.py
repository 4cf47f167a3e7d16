"""Small inputs in every supported format, with their exact labels (tests, benchmarks, evaluation).

* :func:`write_xgaze_fixture`: official ETH-XGaze layout (``subjectXXXX.h5``: exactly the official
  keys, BGR ``face_patch``, float64 labels, ``frame_index``/``cam_index`` (N, 1) int64, every dataset
  chunked one row per chunk, lzf-compressed and resizable as ETH-XGaze's writer does). Rows are
  synthetic heads rendered through ETH-XGaze's normalised camera (focal 960*S/224 at 600 mm,
  ``cameras.camera_from_head_pose``); one train-style subject (with ``face_gaze``) and one test-style
  subject (without ``face_gaze`` or ``facial_landmarks``) that also holds a real photo (the
  astronaut of ``skimage.data``, cropped like a normalised patch).
* :func:`write_gazenerf_fixture`: GazeNeRF-format ``xgaze_subjectXXXX.h5`` (BGR patch, masks,
  landmarks in integer-pixel convention, random 306-d codes, NL3DMM cameras made from the exact
  ones with a known scale and origin offset, ``pitchyaw_head``).
* :func:`write_photo_folder_fixture`: ``person_a/`` (renders saved as png and jpg + ``labels.csv``)
  and ``person_b/`` (a no-face image, a greyscale and an RGBA render, the astronaut photo).

Each writer returns a manifest ``{subject file/folder name: {key: exact per-row arrays}}`` with
the generator's exact labels (face_gaze, face_head_pose, cam_R_w2c, cam_t_w2c, cam_K, lm2d, iris2d,
mask, eye_mask, code, names) in the conventions of the processed layout.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch

from HeadNeRF.geometry.gaze import head_pose_from_rotation, pitch_yaw_to_vector, rotate_pitch_yaw, vector_to_pitch_yaw
from HeadNeRF.data.synthetic.render import render_view
from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF.data.synthetic import rig

from . import cameras as cams

__all__ = [
    "GAZENERF_FIXTURE_OFFSET",
    "GAZENERF_FIXTURE_SCALE",
    "astronaut_patch",
    "render_rows",
    "write_gazenerf_fixture",
    "write_photo_folder_fixture",
    "write_xgaze_fixture",
]

GAZENERF_FIXTURE_SCALE = 1.0 / 1.1  # head units per NL3DMM unit used by the fixture
GAZENERF_FIXTURE_OFFSET = (0.0, 0.05, 0.1)  # our origin in the NL3DMM frame, head units


def _sample_poses(rng, n, head_deg=(15.0, 20.0), gaze=(0.4, 0.5)):
    head = np.stack([rng.uniform(-1, 1, n) * np.deg2rad(head_deg[0]), rng.uniform(-1, 1, n) * np.deg2rad(head_deg[1])], 1)
    g = np.stack([rng.uniform(-1, 1, n) * gaze[0], rng.uniform(-1, 1, n) * gaze[1]], 1)
    return head, g


def render_rows(code, R, t, K, image_size, gaze_head, supersample=1) -> dict:
    """Render rows one camera at a time (each row has its own gaze) -> render_view's dict stacked, plus labels."""

    outs = []
    for i in range(len(R)):
        outs.append(render_view(code, torch.as_tensor(R[i:i + 1], dtype=torch.float32),
                                torch.as_tensor(t[i:i + 1], dtype=torch.float32),
                                torch.as_tensor(K[i:i + 1], dtype=torch.float32), image_size,
                                torch.as_tensor(gaze_head[i], dtype=torch.float32), supersample=supersample))
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    Rt = torch.as_tensor(np.asarray(R, np.float64))
    gh = torch.as_tensor(np.asarray(gaze_head, np.float64))
    out["face_gaze"] = vector_to_pitch_yaw((Rt @ pitch_yaw_to_vector(gh).unsqueeze(-1)).squeeze(-1)).numpy()
    out["face_head_pose"] = head_pose_from_rotation(Rt).numpy()
    out.update(cam_R_w2c=np.asarray(R, np.float64), cam_t_w2c=np.asarray(t, np.float64), cam_K=np.asarray(K, np.float64),
               gaze_head=np.asarray(gaze_head, np.float64), code=np.asarray(code))
    return out


def astronaut_patch(size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: skimage's astronaut photo cropped around the face like a normalised patch."""
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut()[55:175, 165:285], (size, size), interpolation=cv2.INTER_AREA)


def _add(f: h5py.File, key: str, value: np.ndarray) -> None:
    """As ETH-XGaze's writer: one row per chunk, lzf, resizable along rows; dtype of the numpy value."""
    value = np.asarray(value)
    f.create_dataset(key, data=value, chunks=(1,) + value.shape[1:], compression="lzf",
                     maxshape=(None,) + value.shape[1:])


def write_xgaze_fixture(out_dir: str, rows: int = 3, image_size: int = 224, seed: int = 0, test_subject: bool = True,
                        num_subjects: int = 1, real_photo: bool = True, with_landmarks: bool = True,
                        supersample: int = 1, first_subject: int = 0) -> dict:
    """Official-layout ETH-XGaze files; see the module docstring. Returns the manifest.

    Writes ``num_subjects`` train-style subjects (``subject{first_subject + k:04d}.h5``, with
    ``face_gaze``) and, with ``test_subject``, one more test-style subject (no ``face_gaze``, no
    ``facial_landmarks``; its last row is the astronaut photo when ``real_photo``).
    """
    os.makedirs(out_dir, exist_ok=True)
    target, dist = cams.xgaze_face_center(), cams.xgaze_distance()
    manifest = {}
    kinds = ["train"] * num_subjects + (["test"] if test_subject else [])
    for k, kind in enumerate(kinds):
        sid = first_subject + k
        rng = np.random.default_rng([seed, sid])
        code = hm.sample_code(rng)
        head, gaze_head = _sample_poses(rng, rows)
        R, t = cams.camera_from_head_pose(head, target, dist)
        K = cams.xgaze_intrinsics(image_size, rows)
        out = render_rows(code, R, t, K, image_size, gaze_head, supersample)
        patches = out["image"]
        head_label = out["face_head_pose"]
        photo = kind == "test" and real_photo
        if photo:
            patches = np.concatenate([patches, astronaut_patch(image_size)[None]])
            head_label = np.concatenate([head_label, np.zeros((1, 2))])
        n = len(patches)
        name = f"subject{sid:04d}.h5"
        with h5py.File(os.path.join(out_dir, name), "w") as f:
            _add(f, "face_patch", np.ascontiguousarray(patches[..., ::-1]))  # BGR
            if kind == "train":
                _add(f, "face_gaze", out["face_gaze"].astype(np.float64))
            _add(f, "face_head_pose", head_label.astype(np.float64))
            _add(f, "face_mat_norm", np.broadcast_to(np.eye(3), (n, 3, 3)).astype(np.float64))
            _add(f, "frame_index", (np.arange(n) // 3).reshape(n, 1).astype(np.int64))
            _add(f, "cam_index", (np.arange(n) % 3).reshape(n, 1).astype(np.int64))
            if with_landmarks and kind == "train":
                _add(f, "facial_landmarks", (out["lm2d"] - 0.5).astype(np.float64))
        out["names"] = [f"row{i}" for i in range(rows)]
        out["has_photo"] = photo
        out["kind"] = kind
        manifest[name] = out
    return manifest


def _render_rig_subject(rng, rows: int, image_size: int, supersample: int) -> tuple:
    """A random subject (code and poses drawn from ``rng``) seen by rig cameras 0, 1, 2, 0, ...

    Returns (gaze_head (rows, 2), cam_idx (rows,), R (rows, 3, 3), t (rows, 3), K (rows, 3, 3), ``render_rows`` output).
    """
    code = hm.sample_code(rng)
    head, gaze_head = _sample_poses(rng, rows)
    cam_idx = np.arange(rows) % 3
    R, t, K = (x.numpy().astype(np.float64) for x in rig.normalized_cameras(cam_idx, head, image_size))
    return gaze_head, cam_idx, R, t, K, render_rows(code, R, t, K, image_size, gaze_head, supersample)


def write_gazenerf_fixture(out_dir: str, rows: int = 3, image_size: int = 64, seed: int = 1, num_subjects: int = 2,
                           supersample: int = 1, code_dim: int = 306) -> dict:
    """GazeNeRF-format files from synthetic renders in the synthetic training framing; returns the manifest.

    ``code_dim`` 144 writes GazeGaussian-style codes (identity 80 | expression 64)."""
    os.makedirs(out_dir, exist_ok=True)
    manifest = {}
    s, o = GAZENERF_FIXTURE_SCALE, np.asarray(GAZENERF_FIXTURE_OFFSET)
    for sid in range(num_subjects):
        rng = np.random.default_rng([seed, sid])
        gaze_head, cam_idx, R, t, K, out = _render_rig_subject(rng, rows, image_size, supersample)
        # Our camera -> NL3DMM convention: p_ours = s D p_nl + o  =>  R_nl = R D, t_nl = (t + R o) / s.
        R_nl = R @ cams.NL3DMM_TO_HEAD
        t_nl = (t + R @ o) / s
        inmat = K.copy()
        inmat[:, :2, 2] -= 0.5  # HeadNeRF's integer pixel coordinates
        name = f"xgaze_subject{sid:04d}.h5"
        with h5py.File(os.path.join(out_dir, name), "w") as f:
            _add(f, "face_patch", np.ascontiguousarray(out["image"][..., ::-1]))
            _add(f, "head_mask", out["mask"])
            # GazeNeRF names the eye masks by image side; write them the other way round on purpose.
            _add(f, "left_eye_mask", out["right_eye_mask"])
            _add(f, "right_eye_mask", out["left_eye_mask"])
            _add(f, "facial_landmarks", (out["lm2d"] - 0.5).astype(np.float64))
            _add(f, "latent_codes", rng.normal(0, 1, (rows, code_dim)).astype(np.float32))
            _add(f, "w2c_Rmat", R_nl.astype(np.float32))
            _add(f, "w2c_Tvec", t_nl.reshape(rows, 3, 1).astype(np.float32))
            _add(f, "c2w_Rmat", np.swapaxes(R_nl, 1, 2).astype(np.float32))
            _add(f, "c2w_Tvec", (-np.swapaxes(R_nl, 1, 2) @ t_nl[..., None]).astype(np.float32))
            _add(f, "inmat", inmat.astype(np.float32))
            _add(f, "inv_inmat", np.linalg.inv(inmat).astype(np.float32))
            _add(f, "pitchyaw_head", gaze_head.astype(np.float64))
            _add(f, "face_head_pose", out["face_head_pose"].astype(np.float64))
            _add(f, "frame_index", np.arange(rows).reshape(rows, 1).astype(np.int64))
            _add(f, "cam_index", cam_idx.reshape(rows, 1).astype(np.int64))
        manifest[name] = out
    return manifest


def write_photo_folder_fixture(out_dir: str, rows: int = 3, image_size: int = 192, seed: int = 2,
                               bad_images: bool = True, real_photo: bool = True, supersample: int = 1,
                               num_subjects: int = 1) -> dict:
    """Photo folders (``person_a``... with labels.csv; ``person_z`` with the bad/unlabelled cases); returns the manifest.

    Labels are in the render camera's frame (the photo's camera), radians: gaze always, head pose too.
    Renders use the synthetic framing (focal 2.05 * size), so run the preprocessing with
    ``--photo_focal_factor 2.05`` to give it the true camera.
    """
    import imageio.v2 as imageio
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    manifest = {}
    for k in range(num_subjects):
        folder = f"person_{chr(ord('a') + k)}"
        rng = np.random.default_rng([seed, k])
        gaze_head, cam_idx, R, t, K, out = _render_rig_subject(rng, rows, image_size, supersample)
        d = os.path.join(out_dir, folder)
        os.makedirs(d, exist_ok=True)
        names = []
        lines = ["file,gaze_pitch,gaze_yaw,head_pitch,head_yaw"]
        for i in range(rows):
            name = f"img{i:03d}." + ("png" if i % 2 == 0 else "jpg")
            imageio.imwrite(os.path.join(d, name), out["image"][i], **({"quality": 95} if name.endswith("jpg") else {}))
            names.append(name)
            g, h = out["face_gaze"][i], out["face_head_pose"][i]
            lines.append(f"{name},{g[0]:.6f},{g[1]:.6f},{h[0]:.6f},{h[1]:.6f}")
        with open(os.path.join(d, "labels.csv"), "w") as f:
            f.write("\n".join(lines) + "\n")
        out["names"] = names
        manifest[folder] = out
    if bad_images or real_photo:
        d = os.path.join(out_dir, "person_z")
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng([seed, 99])
        code = hm.sample_code(rng)
        R, t, K = (x.numpy().astype(np.float64) for x in rig.normalized_cameras([0, 1], np.zeros((2, 2)), image_size))
        out = render_rows(code, R, t, K, image_size, np.zeros((2, 2)), supersample)
        names = []
        if bad_images:
            grey = Image.fromarray(out["image"][0]).convert("L")
            grey.save(os.path.join(d, "grey.png"))
            rgba = np.concatenate([out["image"][1], np.where(out["mask"][1] > 0, 255, 0).astype(np.uint8)[..., None]], -1)
            Image.fromarray(rgba, "RGBA").save(os.path.join(d, "rgba.png"))
            yy, xx = np.mgrid[0:image_size, 0:image_size]
            noface = np.stack([(xx * 255 // image_size), (yy * 255 // image_size), np.full_like(xx, 128)], -1).astype(np.uint8)
            imageio.imwrite(os.path.join(d, "noface.png"), noface)
            with open(os.path.join(d, "broken.jpg"), "wb") as f:
                f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
            names += ["broken.jpg", "grey.png", "noface.png", "rgba.png"]
        if real_photo:
            import skimage.data

            imageio.imwrite(os.path.join(d, "astronaut.jpg"), skimage.data.astronaut(), quality=95)
            names.insert(0, "astronaut.jpg")
        manifest["person_z"] = {"names": sorted(names), "render": out}
    _ = rotate_pitch_yaw
    return manifest
