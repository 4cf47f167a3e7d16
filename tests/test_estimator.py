"""The gaze/head-pose estimator: it learns, resumes exactly, loads safely, refuses bad input in one line."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT

from HeadNeRF.checkpoint import CheckpointError
from HeadNeRF.config import ConfigError, from_dict, load_yaml
from HeadNeRF.estimator import (
    AugmentConfig,
    EstimatorConfig,
    GazeEstimator,
    LabelledFaces,
    estimate,
    load_estimator,
    make_estimator_dataset,
    train_estimator,
)
from HeadNeRF.estimator.augment import augment_batch
from HeadNeRF.estimator.eyes import (
    crop_eyes,
    eye_box_size,
    eye_centres_from_landmarks,
    flip_centres,
    normalised_to_pixels,
    pixels_to_normalised,
)
from HeadNeRF.loop import TrainingAborted

SCRIPT = os.path.join(ROOT, "train_gaze_estimator.py")
NO_AUGMENT = {"hflip": 0, "brightness": 0, "contrast": 0, "saturation": 0, "blur_prob": 0, "shift_px": 0,
              "scale": 0, "noise_std": 0}


def tiny_estimator_config(dataset_dir: str, run_dir: str, steps: int = 4, **over) -> dict:
    """ResNet-18 on 32-px resizes of the tiny dataset: a step takes a fraction of a second."""
    cfg = {"run_dir": run_dir, "seed": 0, "steps": steps, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1,
           "val_every": 2, "val_images": 4, "ckpt_every": 2, "log_every": 1, "num_threads": 1,
           "model": {"depth": 18, "input_size": 32, "stem": "standard"}, "data": {"dataset_dir": dataset_dir}}
    cfg.update(over)
    return cfg


EYE_BRANCH = {"eye_branch": True, "eye_crop_height": 16, "eye_crop_width": 24, "eye_channels": 8, "compose_gaze": True}
EYE_SPEC = {"crop_height": 16, "crop_width": 24, "box_width": 0.25, "channels": 8}


def run_script(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, SCRIPT, *args, "--no-progress"], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=ROOT, env=env)


def test_tiny_overfit_loss_drops(tiny_dataset):
    """4 images, no augmentation: the L1 loss of the four angles falls well below its start."""
    faces = LabelledFaces(tiny_dataset, [0], 32)
    torch.manual_seed(0)
    model = GazeEstimator(18, 32, "standard", mean=(0.7, 0.65, 0.6), std=(0.3, 0.35, 0.4))
    images = faces.images[:4].float() / 255
    labels = torch.cat((faces.gaze[:4], faces.head_pose[:4], faces.eye_in_head[:4]), 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss = (model(images) - labels).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert max(losses[-3:]) < 0.5 * losses[0], losses


def test_train_step_lowers_the_loss_and_a_nan_loss_is_skipped(tiny_dataset, monkeypatch):
    """estimator.train.train_step on one batch: repeated steps lower the loss; a NaN output leaves every weight
    as it was (the guard skips the step) and max_bad_steps in a row abort."""
    import warnings

    from HeadNeRF.estimator.train import train_step
    from HeadNeRF.loop import GuardedStep

    cfg = from_dict(EstimatorConfig, tiny_estimator_config(tiny_dataset, "unused", steps=100, augment=NO_AUGMENT))
    faces = LabelledFaces(tiny_dataset, [0], 32)
    torch.manual_seed(0)
    model = GazeEstimator(18, 32, "standard", mean=(0.7, 0.65, 0.6), std=(0.3, 0.35, 0.4)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    guarded_step = GuardedStep(optimizer, list(model.parameters()), cfg.grad_clip, 2, "unused", "lr")
    batch = torch.utils.data.default_collate([faces[i] for i in range(4)])
    gen = torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [train_step(model, batch, cfg, guarded_step, s, gen, "cpu")[0].item() for s in range(20)]
    assert max(losses[-3:]) < 0.5 * losses[0], losses
    assert not torch.equal(before["net.fc.weight"], model.state_dict()["net.fc.weight"])

    real = GazeEstimator.forward
    monkeypatch.setattr(GazeEstimator, "forward", lambda self, x, *a: real(self, x, *a) * float("nan"))
    trained = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    with pytest.warns(UserWarning, match="non-finite"):
        loss, _, taken = train_step(model, batch, cfg, guarded_step, 20, gen, "cpu")
    assert torch.isnan(loss) and not taken and guarded_step.bad_steps == 1
    # the weights are untouched (BatchNorm's running statistics move in any forward pass)
    assert all(torch.equal(trained[k], p) for k, p in model.named_parameters())
    with warnings.catch_warnings(), pytest.raises(TrainingAborted, match="2 consecutive"):
        warnings.simplefilter("ignore")
        train_step(model, batch, cfg, guarded_step, 21, gen, "cpu")


def test_train_report_checkpoint_and_api(tiny_dataset, tmp_path):
    cfg = from_dict(EstimatorConfig, tiny_estimator_config(tiny_dataset, str(tmp_path / "run")))
    report = train_estimator(cfg, progress=False)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["steps"] == 4 and saved["heldout_subjects"] == [1] and saved["heldout_images"] == 12
    assert 0 <= saved["gaze_error_deg"]["mean"] < 180 and saved["head_pose_error_deg"]["count"] == 12
    assert saved["eye_in_head_error_deg"]["count"] == 12
    assert report["gaze_error_deg"] == saved["gaze_error_deg"]
    assert os.path.isfile(tmp_path / "run" / "config.yaml") and os.listdir(tmp_path / "run" / "tb")
    # The checkpoint is plain data: it loads with weights_only and says what the estimator reads.
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    meta = state["estimator"]
    assert (meta["input_size"], meta["depth"], meta["train_image_size"]) == (32, 18, 64)
    assert len(meta["mean"]) == len(meta["std"]) == 3
    model, info = load_estimator(str(tmp_path / "run"))
    assert info.input_size == 32 and info.train_image_size == 64 and info.step == 4 and not model.training
    assert info.report["gaze_error_deg"] == saved["gaze_error_deg"]
    out = estimate(model, torch.rand(3, 3, 32, 32))
    assert out["gaze"].shape == out["head_pose"].shape == out["eye_in_head"].shape == (3, 2)
    assert torch.isfinite(out["gaze"]).all()
    # The same held-out error from the public API (the evaluation's noise floor).
    faces = LabelledFaces(tiny_dataset, [1], 32)
    from HeadNeRF.geometry.gaze import angular_error_deg

    err = angular_error_deg(estimate(model, faces.images.float() / 255)["gaze"], faces.gaze)
    assert err.mean().item() == pytest.approx(saved["gaze_error_deg"]["mean"], abs=1e-3)
    with pytest.raises(ValueError, match=r"^estimator was trained on 32 px images, got 64 px$"):
        estimate(model, torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="got 32x40 px"):
        estimate(model, torch.rand(1, 3, 32, 40))


def test_resume_is_exact(tiny_dataset, tmp_path):
    straight = from_dict(EstimatorConfig, tiny_estimator_config(tiny_dataset, str(tmp_path / "a"), steps=4))
    train_estimator(straight, progress=False)
    cut = from_dict(EstimatorConfig, tiny_estimator_config(tiny_dataset, str(tmp_path / "b"), steps=4))
    assert train_estimator(cut, progress=False, stop_after=2)["stopped"]
    assert not os.path.exists(tmp_path / "b" / "report.json")
    train_estimator(cut, resume=str(tmp_path / "b"), progress=False)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k
    ra = json.loads((tmp_path / "a" / "report.json").read_text())
    rb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert ra["gaze_error_deg"]["mean"] == pytest.approx(rb["gaze_error_deg"]["mean"], abs=1e-4)


def test_nan_loss_skips_then_aborts_without_bad_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    real = GazeEstimator.forward
    monkeypatch.setattr(GazeEstimator, "forward", lambda self, x, *a: real(self, x, *a) * float("nan") if self.training
                        else real(self, x, *a))
    cfg = from_dict(EstimatorConfig, tiny_estimator_config(tiny_dataset, str(tmp_path / "run"), steps=20,
                                                           max_bad_steps=3))
    with pytest.warns(UserWarning, match="non-finite"), pytest.raises(TrainingAborted, match="3 consecutive"):
        train_estimator(cfg, progress=False)
    # Skipped steps never touch the weights: whatever checkpoint exists holds finite weights.
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())


def test_eye_in_head_label_is_the_head_frame_gaze(tiny_dataset):
    """The auxiliary label is the gaze relative to the head: the same for every camera of a frame."""
    faces = LabelledFaces(tiny_dataset, [0], 32)
    with h5py.File(os.path.join(tiny_dataset, "subject0000.h5"), "r") as f:
        frames = np.asarray(f["frame_index"][:])[[r for _, r in faces.refs]]
    for frame in np.unique(frames):
        eye = faces.eye_in_head[torch.from_numpy(frames == frame)]
        assert torch.allclose(eye, eye[:1].expand_as(eye), atol=1e-4)
    assert not torch.allclose(faces.eye_in_head, faces.gaze, atol=1e-2)


def test_augmentation_mirrors_labels_and_stays_in_range():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16)
    labels = torch.tensor([[0.1, 0.2, -0.1, 0.3]]).repeat(4, 1)
    cfg = AugmentConfig(**{**NO_AUGMENT, "hflip": 1.0})
    out, lab = augment_batch(images, labels, cfg, gen)
    assert torch.equal(out, images.flip(-1)) and torch.allclose(lab, labels * torch.tensor([1, -1, 1, -1]))
    out, lab = augment_batch(images, labels, AugmentConfig(blur_prob=1.0, shift_px=2, noise_std=0.1), gen)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, images)


def test_rows_without_gaze_labels_are_skipped(tiny_dataset, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(tiny_dataset, d)
    with h5py.File(d / "subject0000.h5", "a") as f:
        n = f["valid_mask"].shape[0]
        valid = np.ones(n, dtype=bool)
        valid[[1, 5, 6]] = False
        f.create_dataset("gaze_valid", data=valid)
        f["face_gaze"][1] = 0.0  # unlabelled rows hold 0 (docs/data_format.md)
    full = LabelledFaces(tiny_dataset, [0], 32, preload=False)
    part = LabelledFaces(str(d), [0], 32, preload=False)
    assert len(part) == len(full) - 3
    assert not {r for _, r in part.refs} & {1, 5, 6}
    assert part.skipped_unlabelled == 0  # gaze_valid False rows never reach LabelledFaces (require_gaze=True)
    assert torch.equal(part[0]["image"], full[0]["image"])


def test_yaml_errors_are_one_line(tiny_dataset, tmp_path, write_config):
    bad = write_config({"model": {"dept": 18}})
    with pytest.raises(ConfigError, match=r"model\.dept: unknown key; did you mean 'model\.depth'\?"):
        load_yaml(bad, EstimatorConfig)
    with pytest.raises(ConfigError, match="model.depth"):
        from_dict(EstimatorConfig, {"model": {"depth": 20}})
    cfg = from_dict(EstimatorConfig, tiny_estimator_config(
        tiny_dataset, str(tmp_path / "run"), model={"depth": 18, "input_size": 32, "pretrained_path": "/nonexistent/r18.pth"}))
    with pytest.raises(ConfigError, match=r"pretrained_path: /nonexistent/r18.pth not found"):
        train_estimator(cfg, progress=False)
    assert not os.path.exists(tmp_path / "run")  # nothing written


def test_pretrained_weights_from_a_path(tmp_path):
    import torchvision

    from HeadNeRF.estimator.model import load_pretrained

    src = torchvision.models.resnet18(weights=None)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    model = GazeEstimator(18, 32, "small")
    skipped = load_pretrained(model, str(tmp_path / "r18.pth"))
    assert set(skipped) == {"conv1.weight", "fc.weight", "fc.bias"}  # the 3x3 stem and the 4-output head
    assert torch.equal(model.net.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ConfigError, match="does not fit a ResNet-18"):
        load_pretrained(GazeEstimator(18, 32), str(tmp_path / "r34.pth"))


def test_load_estimator_refuses_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_estimator(str(tmp_path / "nothing"))
    torch.save({"model": {}, "config": {"model": {"model_name": "HeadNeRF_Gaze"}}}, tmp_path / "nerf.pt")
    with pytest.raises(CheckpointError, match="not a gaze-estimator checkpoint"):
        load_estimator(str(tmp_path / "nerf.pt"))


def test_make_estimator_dataset_skips_and_continues(tmp_path):
    d = str(tmp_path / "set")
    out = make_estimator_dataset(d, num_subjects=3, num_cameras=1, num_frames=2, image_size=16, supersample=1,
                                 progress=False)
    assert not out["skipped"] and out["images"] == 6
    files = sorted(f for f in os.listdir(d) if f.endswith(".h5"))
    assert files == ["subject0000.h5", "subject0001.h5", "subject0002.h5"]
    assert make_estimator_dataset(d, num_subjects=3, num_cameras=1, num_frames=2, image_size=16, supersample=1,
                                  progress=False)["skipped"]
    # An interrupted run (no split.json, one subject missing) renders only the missing subject.
    before = os.path.getmtime(os.path.join(d, "subject0000.h5"))
    os.remove(os.path.join(d, "split.json"))
    os.remove(os.path.join(d, "subject0002.h5"))
    make_estimator_dataset(d, num_subjects=3, num_cameras=1, num_frames=2, image_size=16, supersample=1,
                           progress=False)
    assert os.path.getmtime(os.path.join(d, "subject0000.h5")) == before
    assert os.path.isfile(os.path.join(d, "subject0002.h5")) and os.path.isfile(os.path.join(d, "split.json"))


def test_shipped_configs_load():
    quick = load_yaml(os.path.join(ROOT, "config", "gaze_estimator_quickstart.yml"), EstimatorConfig)
    assert quick.model.input_size == 64  # the quickstart NeRF renders 64 px; the evaluation refuses other sizes
    assert quick.data.generate_if_missing and quick.data.synthetic.seed != 0  # not the NeRF quickstart's heads
    load_yaml(os.path.join(ROOT, "config", "gaze_estimator.yml"), EstimatorConfig)


def test_cli(tiny_dataset, tmp_path, write_config):
    assert "--auto_resume" in run_script("--help").stdout
    bad = run_script("--config_file", write_config({"model": {"dept": 18}}))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "did you mean" in bad.stderr
    missing = run_script("--config_file", write_config({"data": {"dataset_dir": str(tmp_path / "none")}}, "m.yml"))
    assert missing.returncode == 2 and "dataset directory not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    cfg = write_config(tiny_estimator_config(tiny_dataset, str(tmp_path / "run"), steps=2), "ok.yml")
    first = run_script("--config_file", cfg, "--auto_resume")
    assert first.returncode == 0, first.stderr
    again = run_script("--config_file", cfg)  # a finished run is never overwritten without --resume
    assert again.returncode == 2 and "already holds a run" in again.stderr
    reuse = run_script("--config_file", cfg, "--auto_resume")  # finished: only the report is rewritten
    assert reuse.returncode == 0 and "continuing the run" in reuse.stdout, reuse.stderr
    config_yaml = (tmp_path / "run" / "config.yaml").read_text()
    changed = tiny_estimator_config(tiny_dataset, str(tmp_path / "run"), steps=2)
    changed.update(lr=changed.get("lr", 2e-3) * 3, batch_size=changed.get("batch_size", 64) + 1, seed=7)
    changed.setdefault("augment", {})["hflip"] = 0.0
    refused = run_script("--config_file", write_config(changed, "changed.yml"), "--auto_resume")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    for key in ("lr ", "batch_size ", "seed ", "augment.hflip "):
        assert key in refused.stderr, (key, refused.stderr)
    assert (tmp_path / "run" / "config.yaml").read_text() == config_yaml  # the run's record is untouched


# ----------------------------------------------------------------------------------------------
# The eye branch


def test_crop_centred_on_eye_landmarks_contains_the_iris(tiny_dataset):
    """Real rows: each crop box around the six eye-contour landmarks holds that eye's iris centre,
    and the crop's darkest region (the iris) lies near the iris centre mapped into the crop."""
    with h5py.File(os.path.join(tiny_dataset, "subject0000.h5"), "r") as f:
        images = torch.from_numpy(f["face_patch"][:]).permute(0, 3, 1, 2).float() / 255
        lm, iris = torch.from_numpy(f["lm2d"][:]).float(), torch.from_numpy(f["iris2d"][:]).float()
    S = images.shape[-1]
    centres = eye_centres_from_landmarks(lm, S)
    crops = crop_eyes(images, centres, 0.25, (32, 48))
    assert crops.shape == (len(images), 2, 3, 32, 48)
    bw, bh = eye_box_size(0.25, (32, 48))
    # iris2d is [subject's right, subject's left] = [image-left, image-right]: the crops' order
    rel = (pixels_to_normalised(iris, S) - centres) / torch.tensor([bw, bh])
    assert rel.abs().max() < 0.4, rel.abs().max()  # inside the box, well away from its border
    # where the crop shows the iris: the darkest 3x3 neighbourhood of the crop's brightness
    dark = torch.nn.functional.avg_pool2d(1 - crops.mean(2).flatten(0, 1)[:, None], 5, 1, 2)[:, 0]
    where = dark.flatten(1).argmax(1)
    row, col = where // 48, where % 48
    expect = rel.flatten(0, 1) * torch.tensor([48.0, 32.0]) + torch.tensor([24.0, 16.0])
    expect[1::2, 0] = 48.0 - expect[1::2, 0]  # the image-right eye is shown mirrored
    dist = torch.hypot(col + 0.5 - expect[:, 0], row + 0.5 - expect[:, 1])
    assert dist.median() < 6.0, dist  # a few crop pixels (~1.5 image pixels) from the true iris


def test_crop_geometry_of_a_dot_and_the_mirror():
    """A bright dot at a known pixel appears at the crop centre; a mirrored image cropped at the
    mirrored centres gives the same crops with the eyes swapped (exactly)."""
    S = 32
    img = torch.zeros(1, 3, S, S)
    img[0, :, 10, 7] = 1.0  # pixel (col 7, row 10): centre (7.5, 10.5)
    img[0, :, 12, 25] = 1.0  # pixel (col 25, row 12)
    centres = pixels_to_normalised(torch.tensor([[[7.5, 10.5], [25.5, 12.5]]]), S)
    crops = crop_eyes(img, centres, 0.25, (16, 24))  # box 8 px wide: 3x upsampled
    for eye in range(2):
        peak = crops[0, eye, 0].flatten().argmax()
        assert abs(int(peak // 24) + 0.5 - 8) <= 1.5 and abs(int(peak % 24) + 0.5 - 12) <= 1.5
    torch.testing.assert_close(normalised_to_pixels(centres, S), torch.tensor([[[7.5, 10.5], [25.5, 12.5]]]))
    rand = torch.rand(2, 3, S, S)
    c = torch.tensor([[[-0.4, -0.2], [0.35, -0.1]], [[-0.3, 0.0], [0.3, 0.05]]])
    torch.testing.assert_close(crop_eyes(rand.flip(-1), flip_centres(c), 0.25, (16, 24)),
                               crop_eyes(rand, c, 0.25, (16, 24)).flip(1))
    with pytest.raises(ValueError, match=r"centres \(B, 2, 2\)"):
        crop_eyes(rand, c[:, :1], 0.25, (16, 24))


def test_augmentation_moves_eye_centres_with_the_pixels():
    """After a random mirror / shift / zoom, the moved centre still points at the dot it marked."""
    S = 64
    img = torch.ones(8, 3, S, S)
    img[:, :, 20, 18] = 0.0  # a dark dot at pixel (18, 20) in every image; the other eye at the image centre
    centres = pixels_to_normalised(torch.tensor([[18.5, 20.5], [40.5, 20.5]]), S).expand(8, 2, 2).clone()
    cfg = AugmentConfig(**{**NO_AUGMENT, "hflip": 0.5, "shift_px": 3.0, "scale": 0.1})
    out, _, moved = augment_batch(img, torch.zeros(8, 4), cfg, torch.Generator().manual_seed(3), centres)
    found = out.mean(1).flatten(1).argmin(1)
    found_px = torch.stack((found % S, found // S), 1).float() + 0.5
    flipped = found_px[:, 0] > S / 2  # mirrored: the dot's eye is now the image-right one (slot 1)
    assert 0 < flipped.sum() < 8
    dot = torch.where(flipped[:, None], moved[:, 1], moved[:, 0])
    assert (normalised_to_pixels(dot, S) - found_px).abs().max() < 1.0


def test_eye_branch_reads_the_eye_pixels():
    """The eye features change when only pixels inside the eye boxes change, and not at all when
    only pixels far from the eyes change; the whole estimator's output changes with the eyes too."""
    torch.manual_seed(0)
    model = GazeEstimator(18, 32, "standard", eye_branch=EYE_SPEC).eval()
    centres = torch.tensor([[[-0.4, -0.2], [0.4, -0.2]]])
    base = torch.rand(1, 3, 32, 32)
    eyes_changed, chin_changed = base.clone(), base.clone()
    eyes_changed[..., 10:13, 5:9] = torch.rand(3, 3, 4)  # around pixel (9.6, 12.8) = the image-left eye centre
    chin_changed[..., 26:, 12:20] = 0.0
    with torch.no_grad():
        def eye_features(x):
            x = (x - model.mean) / model.std
            return model.eye_cnn(crop_eyes(x, centres, 0.25, model.crop_hw).flatten(0, 1))

        f0, f_eyes, f_chin = eye_features(base), eye_features(eyes_changed), eye_features(chin_changed)
        assert not torch.allclose(f0, f_eyes, rtol=1e-2, atol=1e-6)
        assert torch.equal(f0, f_chin)
        out0, out_eyes = model(base, centres), model(eyes_changed, centres)
    assert (out0[:, :6] - out_eyes[:, :6]).abs().max() > 0  # through the eye CNN (the face trunk sees it too)
    model.eye_cnn.layers[-1][0].weight.data.zero_()  # a blind eye branch: its features no longer vary
    with torch.no_grad():
        assert torch.equal(eye_features(base), eye_features(eyes_changed))


def test_eye_branch_trains_records_subjects_and_loads(tiny_dataset, tmp_path):
    cfg = from_dict(EstimatorConfig, tiny_estimator_config(
        tiny_dataset, str(tmp_path / "run"), model={"depth": 18, "input_size": 32, "stem": "standard", **EYE_BRANCH}))
    report = train_estimator(cfg, progress=False)
    assert report["eye_branch"]["crop_height"] == 16 and 0 <= report["eye_centre_error_px"] < 32
    assert report["with_landmark_crops"]["gaze_error_deg"]["count"] == 12
    assert report["eye_in_head_straight_ahead_error_deg"] > 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["estimator"]["train_subjects"] == [0] and state["estimator"]["heldout_subjects"] == [1]
    model, info = load_estimator(str(tmp_path / "run"))
    assert info.train_subjects == [0] and info.eye_branch == state["estimator"]["eye_branch"] and model.compose_gaze
    assert report["composed_label_error_deg_p90"] < 0.1
    faces = LabelledFaces(tiny_dataset, [1], 32)
    images = faces.images.float() / 255
    out = estimate(model, images)
    assert out["gaze"].shape == (12, 2) and out["eye_centres"].shape == (12, 2, 2)
    assert ((out["eye_centres"] >= -8) & (out["eye_centres"] <= 40)).all()
    # with landmarks, the crops sit at them: other crops, another reading
    lm = torch.zeros(12, 68, 2)
    lm[:, 36:48] = 2.0  # both eyes in the top-left corner
    assert not torch.allclose(estimate(model, images, landmarks=lm)["gaze"], out["gaze"])
    with pytest.raises(ValueError, match="landmarks must have shape"):
        estimate(model, images, landmarks=torch.zeros(12, 5, 2))


def test_old_checkpoint_without_train_subjects_or_eye_branch_loads(tmp_path):
    """A checkpoint written before the eye branch and train_subjects existed still loads and reads."""
    torch.manual_seed(0)
    old = GazeEstimator(18, 32, "standard")
    meta = {"depth": 18, "stem": "standard", "input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
            "train_image_size": 64, "dataset_dir": "data/x", "outputs": ["gaze_pitch", "gaze_yaw", "head_pitch",
                                                                          "head_yaw", "eye_pitch", "eye_yaw"]}
    os.makedirs(tmp_path / "checkpoints")
    torch.save({"model": old.state_dict(), "config": {"steps": 10}, "estimator": meta, "step": 10},
               tmp_path / "checkpoints" / "last.pt")
    model, info = load_estimator(str(tmp_path))
    assert info.train_subjects is None and info.eye_branch is None and model.eye_branch is None
    x = torch.rand(2, 3, 32, 32)
    out = estimate(model, x, landmarks=torch.zeros(2, 68, 2))  # landmarks are ignored without an eye branch
    with torch.no_grad():
        torch.testing.assert_close(out["gaze"], old.eval()(x)[:, :2])
    assert "eye_centres" not in out


def test_composed_gaze_is_exact_on_normalised_rows(tiny_dataset):
    """The head pose fixes a normalised camera's rotation (zero roll), so head pose (+) eye-in-head = gaze;
    a composing estimator's gaze output is exactly that composition of its own two other readings."""
    from HeadNeRF.estimator.model import compose_gaze, normalised_head_rotation
    from HeadNeRF.geometry.gaze import angular_error_deg

    with h5py.File(os.path.join(tiny_dataset, "subject0001.h5"), "r") as f:
        R = torch.from_numpy(f["cam_R_w2c"][:]).float()
        head = torch.from_numpy(f["face_head_pose"][:]).float()
    torch.testing.assert_close(normalised_head_rotation(head), R, atol=1e-5, rtol=0)
    faces = LabelledFaces(tiny_dataset, [1], 32)
    assert angular_error_deg(compose_gaze(faces.head_pose, faces.eye_in_head), faces.gaze).max() < 0.1
    # another head pose gives another gaze: the composition is not the identity
    assert angular_error_deg(compose_gaze(faces.head_pose * 0, faces.eye_in_head), faces.gaze).mean() > 5
    model = GazeEstimator(18, 32, "standard", eye_branch=EYE_SPEC, compose_gaze=True).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    torch.testing.assert_close(out[:, :2], compose_gaze(out[:, 2:4], out[:, 4:6]))


def test_sigterm_checkpoints_and_exits_with_128_plus_signal(tiny_dataset, tmp_path):
    """The estimator loop shares HeadNeRF.loop.StopOnSignal with the NeRF loop: SIGTERM ends it at a step
    boundary with a checkpoint that resumes."""
    import signal as sig

    cfg = from_dict(EstimatorConfig, tiny_estimator_config(tiny_dataset, str(tmp_path / "run"), steps=50))
    import HeadNeRF.loop as loop

    original = loop.StopOnSignal.install

    def install_then_signal(self):
        out = original(self)
        self._record(sig.SIGTERM, None)  # as if SIGTERM arrived during the first step
        return out

    loop.StopOnSignal.install = install_then_signal
    try:
        with pytest.raises(SystemExit) as info:
            train_estimator(cfg, progress=False)
    finally:
        loop.StopOnSignal.install = original
    assert info.value.code == 128 + sig.SIGTERM
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 1 and sig.getsignal(sig.SIGTERM) is not None
