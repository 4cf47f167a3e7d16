"""Synthetic dataset: layout contract, determinism, labels, masks and the CLI (tiny and fast)."""

import importlib
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from HeadNeRF.data import layout
from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF.data.synthetic import rig
from HeadNeRF.data.synthetic.writer import generate_dataset, subject_frames
from HeadNeRF.geometry.gaze import pitch_yaw_to_vector, vector_to_pitch_yaw
from HeadNeRF.geometry.cameras import project_points

render_mod = importlib.import_module("HeadNeRF.data.synthetic.render")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = dict(num_subjects=2, num_cameras=4, num_frames=3, image_size=64, seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(str(root / "a"), progress=False, **ARGS)
    return root


def _load(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in layout.KEYS}


def test_files_follow_layout(dataset):
    d = dataset / "a"
    for i in range(ARGS["num_subjects"]):
        with h5py.File(d / layout.subject_file_name(i), "r") as f:
            info = layout.validate_file(f)
            assert info["N"] == ARGS["num_cameras"] * ARGS["num_frames"] and info["S"] == ARGS["image_size"]
            assert f.attrs["source"] == "synthetic" and f.attrs["subject_id"] == i
            assert f.attrs["layout_version"] == layout.LAYOUT_VERSION and f.attrs["image_size"] == 64
            assert json.loads(f["latent_code"].attrs["code_slices"]) == {k: list(v) for k, v in hm.CODE_SLICES.items()}
            assert f["face_patch"].chunks[0] == 1 and f["face_patch"].compression == "gzip"
            np.testing.assert_array_equal(f["frame_index"][()], np.repeat(np.arange(3), 4))
            np.testing.assert_array_equal(f["cam_index"][()], np.tile(np.arange(4), 3))
            assert f["valid_mask"][()].all()
    split = layout.Split.load(str(d))
    assert split.test_subjects == [1] and split.train_subjects == [0]
    assert 0 not in split.heldout_cameras and split.heldout_frames == [2]
    assert os.path.isfile(d / "preview.png")


def test_same_seed_same_arrays(dataset):
    generate_dataset(str(dataset / "b"), progress=False, **ARGS)
    for i in range(ARGS["num_subjects"]):
        a = _load(dataset / "a" / layout.subject_file_name(i))
        b = _load(dataset / "b" / layout.subject_file_name(i))
        for k in layout.KEYS:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_gaze_labels_are_the_optical_axis(dataset):
    for i in range(ARGS["num_subjects"]):
        rows = _load(dataset / "a" / layout.subject_file_name(i))
        _, _, gazes = subject_frames(ARGS["seed"], i, ARGS["num_frames"])
        axis = pitch_yaw_to_vector(torch.as_tensor(gazes[rows["frame_index"]]))
        R = torch.as_tensor(rows["cam_R_w2c"]).double()
        want = vector_to_pitch_yaw((R @ axis.double().unsqueeze(-1)).squeeze(-1)).numpy()
        np.testing.assert_allclose(rows["face_gaze"], want, atol=1e-5)
        # Gaze varies visibly between frames.
        assert np.ptp(gazes, axis=0).min() > 0.2


def test_iris_centres_inside_eye_masks(dataset):
    rows = _load(dataset / "a" / layout.subject_file_name(0))
    for n in range(len(rows["iris2d"])):
        for k, key in enumerate(("right_eye_mask", "left_eye_mask")):
            u, v = np.floor(rows["iris2d"][n, k]).astype(int)
            assert rows[key][n, v, u] == 255, (n, key)
        # subject's right eye is on the image left
        assert rows["iris2d"][n, 0, 0] < rows["iris2d"][n, 1, 0]


def test_head_inside_mask(dataset):
    rows = _load(dataset / "a" / layout.subject_file_name(1))
    non_white = (rows["face_patch"] < 255).any(-1)
    assert not (non_white & (rows["mask"] < 128)).any()
    assert (rows["eye_mask"] == np.maximum(rows["left_eye_mask"], rows["right_eye_mask"])).all()


def test_gaze_changes_only_eye_pixels():
    code, head_poses, _ = subject_frames(0, 0, 1)
    R, t, K = rig.normalized_cameras(np.arange(4), np.broadcast_to(head_poses[0], (4, 2)), 64)
    a = render_mod.render_view(code, R, t, K, 64, torch.tensor([0.3, -0.5]))
    b = render_mod.render_view(code, R, t, K, 64, torch.tensor([-0.3, 0.5]))
    diff = np.abs(a["image"].astype(int) - b["image"].astype(int)).max(-1)
    assert (a["eye_mask"] == b["eye_mask"]).all() and (a["mask"] == b["mask"]).all()
    assert not ((diff > 0) & (a["eye_mask"] == 0)).any()
    assert (diff > 40).any(axis=(1, 2)).all()  # every view sees the eyes move


def test_frontal_camera_centred_and_pixel_convention():
    code = subject_frames(0, 0, 1)[0]
    S = 64
    R, t, K = rig.normalized_cameras([0], np.zeros((1, 2)), S)
    np.testing.assert_allclose(R[0].numpy(), np.eye(3), atol=1e-6)  # frontal: R = I
    out = render_mod.render_view(code, R, t, K, S, torch.zeros(2))
    rows, cols = np.nonzero(out["mask"][0])
    assert abs(cols.mean() + 0.5 - S / 2) < 0.03 * S and abs(rows.mean() + 0.5 - S / 2) < 0.08 * S
    assert 0.6 < (rows.max() - rows.min()) / S < 0.98  # the head fills most of the patch
    # A rasterized surface point projects onto the centre of its pixel (pixel centres at +0.5).
    mesh = render_mod.mesh_for_code(code)
    verts, faces = torch.from_numpy(mesh.verts), torch.from_numpy(mesh.faces)
    p2f, bary, _ = render_mod.rasterize_views(verts, faces, R, t, K, S)
    for (v, u) in [(20, 30), (32, 32), (40, 25)]:
        f = p2f[0, v, u, 0]
        point = (verts[faces[f]] * bary[0, v, u, 0].unsqueeze(-1)).sum(0)
        uv = project_points(point.view(1, 1, 3), R, t, K)[0, 0]
        np.testing.assert_allclose(uv.numpy(), [u + 0.5, v + 0.5], atol=2e-3)


def test_render_api_matches_labels():
    code, head_poses, gazes = subject_frames(0, 0, 2)
    gaze_cam = np.array([0.1, -0.2], dtype=np.float32)
    out = render_mod.render(code, camera=[0, 2], gaze=gaze_cam, head_pose=head_poses[1], image_size=32)
    np.testing.assert_allclose(out["face_gaze"], np.broadcast_to(gaze_cam, (2, 2)), atol=1e-5)
    assert out["image"].shape == (2, 32, 32, 3) and out["lm2d"].shape == (2, 68, 2)


def test_model_inside_nerf_sphere():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mesh = hm.build_mesh(hm.sample_code(rng))
        assert np.linalg.norm(mesh.verts, axis=1).max() < 1.5
        assert mesh.faces.shape[0] < 10000


@pytest.mark.parametrize("bad", [["--num_cameras", "0"], ["--num_cameras", "19"], ["--image_size", "-5"]])
def test_cli_rejects_bad_values(tmp_path, bad):
    cmd = [sys.executable, os.path.join(REPO, "DataProcess", "make_synthetic_dataset.py"), "--save_dir", str(tmp_path)]
    res = subprocess.run(cmd + bad, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2
    assert "usage:" in res.stderr and "error:" in res.stderr
