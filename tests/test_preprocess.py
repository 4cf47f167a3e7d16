"""Preprocessing (issue 9): every input format -> Gen_mask_lm_3DMM.py -> train_headnerf.py, with exact labels.

Fixtures (HeadNeRF.preprocess.fixtures) are synthetic renders with known labels in each input
format, plus real photos shipped by scikit-image and bad inputs. Everything stays tiny: a few rows.
"""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, tiny_config_dict

from HeadNeRF.data.dataset import GazeDataset
from HeadNeRF.data.layout import validate_file
from HeadNeRF.geometry.gaze import angular_error_deg, head_pose_from_rotation
from HeadNeRF.preprocess import cameras as cams
from HeadNeRF.preprocess import fixtures

SCRIPT = os.path.join(ROOT, "DataProcess", "Gen_mask_lm_3DMM.py")


def preprocess(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, SCRIPT, *args, "--no_progress"], check=False, capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    return res


def read_json(path):
    with open(path) as f:
        return json.load(f)


def outputs(save_dir):
    """The data files of a save_dir (without the run's lock file and its subjects.json manifest)."""
    return sorted(n for n in os.listdir(save_dir) if n not in (".lock", "subjects.json"))


def lines_with(text, word):
    return [ln for ln in text.splitlines() if word in ln]


def train_a_few_steps(dataset_dir, run_dir, tmp_path):
    cfg = tiny_config_dict(dataset_dir, run_dir, "HeadNeRF_Gaze", steps=2)
    path = tmp_path / "train.yml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, os.path.join(ROOT, "train_headnerf.py"), "--config_file", str(path),
                          "--no-progress"], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", "last.pt"))


def angles(a, b):
    return angular_error_deg(torch.as_tensor(np.asarray(a, np.float64)), torch.as_tensor(np.asarray(b, np.float64))).numpy()


# ------------------------------------------------------------------------------------------ pure parts
def test_camera_from_head_pose_reproduces_the_label():
    hp = np.array([[0.0, 0.0], [0.2, -0.3], [-0.25, 0.5], [0.4, 0.1]])
    target = cams.xgaze_face_center()
    R, t = cams.camera_from_head_pose(hp, target, 5.0)
    assert np.allclose(head_pose_from_rotation(torch.from_numpy(R)).numpy(), hp, atol=1e-9)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)
    # The target is on the optical axis at the given distance, and no roll: the camera's y axis is
    # perpendicular to the head's x axis (ETH-XGaze: down = forward x head_x).
    cam_pts = (R @ target) + t
    assert np.allclose(cam_pts[:, :2], 0, atol=1e-9) and np.allclose(cam_pts[:, 2], 5.0)
    assert np.allclose(R[:, 1, 0], 0, atol=1e-9)
    assert np.allclose(R[0], np.eye(3))


def test_nl3dmm_conversion_round_trip():
    rng = np.random.default_rng(0)
    R = torch.linalg.qr(torch.from_numpy(rng.normal(size=(3, 3, 3))))[0].numpy()
    R *= np.sign(np.linalg.det(R))[:, None, None]
    t = rng.normal(size=(3, 3))
    s, o = 0.8, np.array([0.1, -0.2, 0.3])
    R_nl, t_nl = R @ cams.NL3DMM_TO_HEAD, (t + R @ o) / s
    R2, t2 = cams.nl3dmm_to_head(R_nl, t_nl, s, o)
    assert np.allclose(R2, R) and np.allclose(t2, t)
    # A point of the head frame and its NL3DMM twin land on the same camera point.
    p = np.array([0.3, -0.4, 0.5])
    p_nl = cams.NL3DMM_TO_HEAD @ (p - o) / s
    assert np.allclose(R2[0] @ p + t2[0], s * (R_nl[0] @ p_nl + t_nl[0]))


def test_help_says_se_is_exclusive():
    res = subprocess.run([sys.executable, SCRIPT, "--help"], check=False, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "EXCLUSIVE" in text and "range(sb, se)" in text
    for flag in ("--img_dir", "--save_dir", "--sb", "--se", "--input_format", "--image_size", "--num_workers",
                 "--split_file", "--chunk_rows", "--photo_focal_factor", "--no_fit", "--overwrite", "--no_progress"):
        assert flag in text


def test_usage_errors_are_one_line(tmp_path):
    res = preprocess("--img_dir", str(tmp_path / "missing"), "--save_dir", str(tmp_path / "out"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "not found" in res.stderr
    res = preprocess("--img_dir", str(tmp_path), "--save_dir", str(tmp_path / "out"), "--sb", "3", "--se", "2")
    assert res.returncode == 2 and "--se must be greater than --sb" in res.stderr


# -------------------------------------------------------------------------------------- GazeNeRF format
@pytest.fixture(scope="module")
def gazenerf_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("gazenerf_in")
    manifest = fixtures.write_gazenerf_fixture(str(d), rows=3, image_size=64, num_subjects=3)
    return str(d), manifest


def test_gazenerf_end_to_end(gazenerf_input, tmp_path):
    src, manifest = gazenerf_input
    out = str(tmp_path / "out")
    res = preprocess("--img_dir", src, "--save_dir", out, "--se", "2")
    assert res.returncode == 0, res.stderr
    assert "rows written: 6 (6 valid, 0 invalid)" in res.stdout
    for k, name in enumerate(sorted(manifest)[:2]):
        exact = manifest[name]
        with h5py.File(os.path.join(out, f"subject{k:04d}.h5")) as f:
            validate_file(f)
            assert f.attrs["source"] == "gazenerf" and f["latent_code"].shape == (3, 306)
            assert np.array_equal(f["face_patch"][:], exact["image"])  # BGR -> RGB
            assert np.array_equal(f["left_eye_mask"][:], exact["left_eye_mask"])  # fixed by position
            assert np.allclose(f["lm2d"][:], exact["lm2d"], atol=1e-4)
            assert np.allclose(f["cam_R_w2c"][:], exact["cam_R_w2c"], atol=1e-5)
            assert np.allclose(f["cam_K"][:], exact["cam_K"], atol=1e-3)
            # scale and origin come from a landmark fit with the mean head: close, not exact
            t, t_exact = f["cam_t_w2c"][:], exact["cam_t_w2c"]
            assert np.abs(t[:, :2] - t_exact[:, :2]).max() < 0.01 and np.abs(t[:, 2] / t_exact[:, 2] - 1).max() < 0.03
            assert abs(f.attrs["nl3dmm_scale"] - fixtures.GAZENERF_FIXTURE_SCALE) < 0.03
            assert angles(f["face_gaze"][:], exact["face_gaze"]).max() < 1e-3
            assert angles(f["face_head_pose"][:], exact["face_head_pose"]).max() < 1e-3
            assert f["gaze_valid"][:].all()
    split = read_json(os.path.join(out, "split.json"))
    assert split["train_subjects"] == [0] and split["test_subjects"] == [1]
    train_a_few_steps(out, str(tmp_path / "run"), tmp_path)


KILLED_RUN = """
import os, sys
from HeadNeRF.preprocess import PreprocessConfig, run, runner
count = [0]
def on_image():  # dies like kill -9 (no cleanup at all) in the middle of the third subject
    count[0] += 1
    if count[0] == 8:
        os._exit(9)
runner._MAIN_PROGRESS.update_one = on_image
run(PreprocessConfig(sys.argv[1], sys.argv[2], progress=False))
"""


def test_kill_during_a_subject_then_resume(gazenerf_input, tmp_path):
    src, _ = gazenerf_input
    out = str(tmp_path / "out")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, src, out], check=False, capture_output=True,
                            text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert killed.returncode == 9, killed.stderr[-1000:]
    # Two finished subjects, the third only as its partial file.
    assert outputs(out) == ["subject0000.h5", "subject0001.h5", "subject0002.h5.partial"]
    done = os.path.join(out, "subject0000.h5")
    mtime = os.stat(done).st_mtime_ns
    res = preprocess("--img_dir", src, "--save_dir", out)
    assert res.returncode == 0, res.stderr
    assert os.stat(done).st_mtime_ns == mtime  # finished subjects are not redone
    assert len(lines_with(res.stderr, "already done")) == 2
    assert len(lines_with(res.stderr, "left over")) == 1
    assert not os.path.exists(os.path.join(out, "subject0002.h5.partial"))
    with h5py.File(os.path.join(out, "subject0002.h5")) as f:
        validate_file(f)
    assert "1 written, 2 skipped" in res.stdout
    assert read_json(os.path.join(out, "split.json"))["test_subjects"] == [2]


def test_sb_se_semantics(gazenerf_input, tmp_path):
    from HeadNeRF.preprocess import PreprocessConfig, run

    src, _ = gazenerf_input
    out = str(tmp_path / "a")
    s = run(PreprocessConfig(src, out, sb=1, se=2, progress=False), log=lambda m: None)
    assert outputs(out) == ["split.json", "subject0001.h5"] and s.written == [1]
    msgs = []
    out = str(tmp_path / "b")
    s = run(PreprocessConfig(src, out, sb=1, se=10, progress=False), log=msgs.append)
    assert s.written == [1, 2]
    assert len([m for m in msgs if "--se 10 is beyond the last subject" in m]) == 1
    with pytest.raises(ValueError, match="beyond the last subject"):
        run(PreprocessConfig(src, out, sb=3, progress=False), log=msgs.append)


def test_bad_h5_files_one_line_each(gazenerf_input, tmp_path):
    src, _ = gazenerf_input
    d = tmp_path / "in"
    shutil.copytree(src, d)
    (d / "xgaze_subject0005.h5").write_bytes(b"")  # empty
    data = (d / "xgaze_subject0001.h5").read_bytes()
    (d / "xgaze_subject0006.h5").write_bytes(data[: len(data) // 2])  # truncated
    with h5py.File(d / "xgaze_subject0007.h5", "w") as f:  # wrong keys
        f["something"] = np.zeros(3)
    with h5py.File(d / "xgaze_subject0008.h5", "w") as f:  # no rows
        for k in ("face_patch", "head_mask", "left_eye_mask", "right_eye_mask"):
            f.create_dataset(k, shape=(0, 8, 8, 3) if k == "face_patch" else (0, 8, 8), dtype=np.uint8)
        for k in ("facial_landmarks", "latent_codes", "w2c_Rmat", "w2c_Tvec", "inmat"):
            f.create_dataset(k, shape=(0, 3), dtype=np.float32)
    out = str(tmp_path / "out")
    res = preprocess("--img_dir", str(d), "--save_dir", out, "--num_workers", "2")  # bad files inside workers
    assert res.returncode == 1  # some subjects failed, the rest was written
    errors = lines_with(res.stderr, "error:")
    assert len(errors) == 4, res.stderr
    for name, word in (("0005", "empty file"), ("0006", "truncated"), ("0007", "missing keys"), ("0008", "no rows")):
        assert len([e for e in errors if f"xgaze_subject{name}.h5" in e and word in e]) == 1, (name, errors)
    assert "Traceback" not in res.stderr
    assert sorted(n for n in os.listdir(out) if n.endswith(".h5")) == ["subject0000.h5", "subject0001.h5", "subject0002.h5"]
    # The workers wrote what one process writes.
    from HeadNeRF.preprocess import PreprocessConfig, run

    run(PreprocessConfig(src, str(tmp_path / "one"), se=1, progress=False), log=lambda m: None)
    with h5py.File(os.path.join(out, "subject0000.h5")) as a, h5py.File(tmp_path / "one" / "subject0000.h5") as b:
        for k in ("face_patch", "mask", "cam_t_w2c", "face_gaze", "latent_code"):
            assert np.array_equal(a[k][:], b[k][:])


def test_gazegaussian_codes(tmp_path):
    from HeadNeRF.preprocess import PreprocessConfig, run

    fixtures.write_gazenerf_fixture(str(tmp_path / "in"), rows=2, image_size=32, num_subjects=1, code_dim=144)
    msgs = []
    s = run(PreprocessConfig(str(tmp_path / "in"), str(tmp_path / "out"), progress=False), log=msgs.append)
    assert s.written == [0] and len([m for m in msgs if "GazeGaussian codes" in m]) == 1
    with h5py.File(tmp_path / "out" / "subject0000.h5") as f:
        info = validate_file(f)
        assert info["D"] == 146 and info["code_slices"]["expression"] == (80, 144)


# ------------------------------------------------------------------------------------- ETH-XGaze format
@pytest.fixture(scope="module")
def xgaze_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("xgaze_in")
    manifest = fixtures.write_xgaze_fixture(str(d), rows=3, image_size=224)
    return str(d), manifest


def test_xgaze_fixture_has_the_official_layout(xgaze_input):
    src, _ = xgaze_input
    with h5py.File(os.path.join(src, "subject0000.h5")) as f:
        assert set(f.keys()) == {"face_patch", "face_gaze", "face_head_pose", "face_mat_norm", "frame_index",
                                 "cam_index", "facial_landmarks"}
        assert f["face_patch"].dtype == np.uint8 and f["face_patch"].shape[1:] == (224, 224, 3)
        assert f["face_patch"].compression == "lzf" and f["face_patch"].chunks == (1, 224, 224, 3)
        assert f["frame_index"].shape == (3, 1) and f["face_gaze"].dtype == np.float64
    with h5py.File(os.path.join(src, "subject0001.h5")) as f:
        assert "face_gaze" not in f and "facial_landmarks" not in f


def test_xgaze_end_to_end(xgaze_input, tmp_path):
    src, manifest = xgaze_input
    split_file = tmp_path / "train_test_split.json"
    split_file.write_text(json.dumps({"train": ["subject0000.h5"], "test": ["subject0001.h5"]}))
    out = str(tmp_path / "out")
    # Subject 0 with the full latent fit (colour fit included); then the rest of the folder into the
    # same output, without the colour fit (cheaper): subject 0 is skipped, the split covers both.
    res = preprocess("--img_dir", src, "--save_dir", out, "--split_file", str(split_file), "--se", "1")
    assert res.returncode == 0, res.stderr
    assert read_json(os.path.join(out, "split.json"))["train_subjects"] == [0]
    res = preprocess("--img_dir", src, "--save_dir", out, "--split_file", str(split_file), "--no_appearance_fit")
    assert res.returncode == 0, res.stderr
    assert len(lines_with(res.stderr, "no face_gaze")) == 1 and len(lines_with(res.stderr, "already done")) == 1
    exact = manifest["subject0000.h5"]
    with h5py.File(os.path.join(out, "subject0000.h5")) as f:
        validate_file(f)
        assert f.attrs["source"] == "xgaze" and f["valid_mask"][:].all()
        assert np.array_equal(f["face_patch"][:], exact["image"])  # BGR -> RGB, same size
        assert angles(f["face_gaze"][:], exact["face_gaze"]).max() < 1e-4
        assert angles(f["face_head_pose"][:], exact["face_head_pose"]).max() < 1e-4
        assert np.abs(f["cam_R_w2c"][:] - exact["cam_R_w2c"]).max() < 1e-5
        assert np.allclose(f["cam_K"][:], exact["cam_K"], atol=1e-3)
        assert np.abs(f["cam_t_w2c"][:] - exact["cam_t_w2c"]).max() < 1e-4
        iod = np.linalg.norm(exact["lm2d"][:, 36:42].mean(1) - exact["lm2d"][:, 42:48].mean(1), axis=-1)
        inner_err = np.linalg.norm(f["lm2d"][:][:, 17:] - exact["lm2d"][:, 17:], axis=-1).mean(1) / iod
        assert np.median(inner_err) < 0.15
        assert f["gaze_valid"][:].all()
        codes = f["latent_code"][:]
        assert np.isfinite(codes).all() and np.abs(codes[:, 22:]).max() > 0  # albedo/illumination were fitted
    with h5py.File(os.path.join(out, "subject0001.h5")) as f:
        validate_file(f)
        assert not f["gaze_valid"][:].any() and np.all(f["face_gaze"][:] == 0)
        assert f["valid_mask"][:3].all()  # the synthetic rows; the astronaut row (3) may or may not be found
    split = read_json(os.path.join(out, "split.json"))
    assert split["train_subjects"] == [0] and split["test_subjects"] == [1]
    assert len(GazeDataset(out, "test", require_gaze=False)) >= 3
    with pytest.raises(Exception, match="require_gaze"):
        GazeDataset(out, "test", require_gaze=True)
    assert bool(GazeDataset(out, "test")[0]["gaze_valid"]) is False
    train_a_few_steps(out, str(tmp_path / "run"), tmp_path)


def test_xgaze_bad_files_and_mixed_sizes(xgaze_input, tmp_path):
    src, _ = xgaze_input
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(os.path.join(src, "subject0000.h5"), d / "subject0000.h5")
    fixtures.write_xgaze_fixture(str(d), rows=1, image_size=112, test_subject=False, first_subject=3)
    with h5py.File(d / "subject0004.h5", "w") as f:  # wrong keys: no face_head_pose
        f.create_dataset("face_patch", data=np.zeros((2, 32, 32, 3), np.uint8))
    (d / "subject0005.h5").write_bytes(b"")
    out = str(tmp_path / "out")
    res = preprocess("--img_dir", str(d), "--save_dir", out, "--no_fit")
    assert res.returncode == 1
    assert len(lines_with(res.stderr, "mixed patch sizes")) == 1
    assert len([ln for ln in lines_with(res.stderr, "error:") if "subject0004.h5" in ln and "face_head_pose" in ln]) == 1
    assert len([ln for ln in lines_with(res.stderr, "error:") if "subject0005.h5" in ln and "empty" in ln]) == 1
    with h5py.File(os.path.join(out, "subject0003.h5")) as f:
        assert f["face_patch"].shape[1] == 224  # resized to the first subject's size
        assert f["cam_K"][0, 0, 0] == pytest.approx(960.0, rel=1e-4)


# ---------------------------------------------------------------------------------------- photo folders
@pytest.fixture(scope="module")
def photo_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos_in")
    manifest = fixtures.write_photo_folder_fixture(str(d), rows=3, image_size=192)
    return str(d), manifest


def test_photo_folder_end_to_end(photo_input, tmp_path):
    src, manifest = photo_input
    out = str(tmp_path / "out")
    res = preprocess("--img_dir", src, "--save_dir", out, "--image_size", "128", "--photo_focal_factor", "2.05",
                     "--no_appearance_fit")  # the colour fit is exercised by the ETH-XGaze test
    assert res.returncode == 0, res.stderr
    err = res.stderr
    assert len([ln for ln in err.splitlines() if "broken.jpg" in ln]) == 1
    assert len([ln for ln in err.splitlines() if "grey.png" in ln and "greyscale" in ln]) == 1
    assert len([ln for ln in err.splitlines() if "rgba.png" in ln and "RGBA" in ln]) == 1
    assert len([ln for ln in err.splitlines() if "noface.png" in ln and "no face" in ln]) == 1
    assert "Traceback" not in err
    exact = manifest["person_a"]
    with h5py.File(os.path.join(out, "subject0000.h5")) as f:
        validate_file(f)
        assert f.attrs["source"] == "photo" and f["valid_mask"][:].all() and f["gaze_valid"][:].all()
        # Labels are in the photo camera's frame; the normalised camera of a synthetic render is nearly
        # the render camera itself, so the converted labels stay close to the exact ones.
        assert np.median(angles(f["face_gaze"][:], exact["face_gaze"])) < 5.0
        assert np.median(angles(f["face_head_pose"][:], exact["face_head_pose"])) < 5.0
    with h5py.File(os.path.join(out, "subject0001.h5")) as f:
        validate_file(f)
        names = f.attrs["photo_names"].split("\n")
        reasons = dict(zip(names, [r.decode() for r in f["invalid_reason"][:]]))
        assert reasons["broken.jpg"] == "cannot read image" and reasons["noface.png"] == "no face found"
        assert reasons["grey.png"] == "" and reasons["rgba.png"] == ""
        assert not f["gaze_valid"][:].any()
    assert "invalid" in lines_with(res.stdout, "rows written")[0]
    train_a_few_steps(out, str(tmp_path / "run"), tmp_path)
