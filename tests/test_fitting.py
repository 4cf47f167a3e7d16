"""Single-image fitting: the fit itself, latent.pt, the command end to end, and every bad input."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_config_dict

from HeadNeRF.checkpoint import CheckpointError
from HeadNeRF.data.dataset import GazeDataset
from HeadNeRF.config import ConfigError
from HeadNeRF.fitting import (
    FitConfig,
    FittingInputError,
    PhotoFitConfig,
    TargetShapeError,
    fit_image,
    fit_single_image,
    join_code,
    load_photo_fit_config,
    load_target_embedding,
    load_trained_model,
    parse_gaze_targets,
    render_fit,
    save_latent,
    split_code,
    target_from_dataset_row,
)
from HeadNeRF.fitting.fit import MAX_BAD_STEPS, FitProblem, FitStage, fit_guard, fit_step
from HeadNeRF.loop import TrainingAborted

SCRIPT = os.path.join(ROOT, "FittingSingleImage.py")


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("FittingSingleImage", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _script_main():
    return _script().main


@pytest.fixture(scope="module")
def ckpt(tiny_dataset, tmp_path_factory) -> str:
    """A tiny per-pixel HeadNeRF_Gaze trained for a few steps (its checkpoint carries the fitting metadata)."""
    from HeadNeRF.config import TrainConfig, from_dict
    from HeadNeRF.training import train

    run = str(tmp_path_factory.mktemp("fitrun") / "run")
    cfg = tiny_config_dict(tiny_dataset, run, steps=6)
    cfg["model"]["featmap_size"] = 16  # per-pixel renderer: the fit renders pixel subsets
    cfg["rays_per_image"] = 96
    train(from_dict(TrainConfig, cfg), progress=False)
    return run


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    import imageio.v2 as imageio
    import skimage.data

    path = str(tmp_path_factory.mktemp("photos") / "astronaut.png")
    imageio.imwrite(path, skimage.data.astronaut())
    return path


def run_cli(*args, timeout=900):  # generous: a hang, not a loaded machine, should fail it
    return subprocess.run([sys.executable, SCRIPT, *args, "--no_progress"], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


# ----------------------------------------------------------------------------------------------
# The package


def test_checkpoint_metadata_and_loading(ckpt):
    state = torch.load(os.path.join(ckpt, "checkpoints", "last.pt"), weights_only=True)
    assert state["camera_convention"]["focal_factor"] == pytest.approx(2.05, abs=1e-4)
    assert state["camera_convention"]["distance"] == pytest.approx(5.0, abs=1e-3)
    assert state["code_mean"].shape == (43,)
    model, info = load_trained_model(ckpt)
    assert info.metadata_source == "checkpoint" and info.image_size == 16 and model.renders_pixel_subsets
    assert not any(p.requires_grad for p in model.parameters())
    code = torch.randn(43)
    torch.testing.assert_close(join_code(*split_code(code, info.code_slices), info.code_slices), code)


def test_old_checkpoint_without_metadata_falls_back(ckpt, tmp_path):
    state = torch.load(os.path.join(ckpt, "checkpoints", "last.pt"), weights_only=True)
    del state["camera_convention"], state["code_mean"]
    state["config"]["data"]["dataset_dir"] = str(tmp_path / "gone")
    torch.save(state, tmp_path / "old.pt")
    _, info = load_trained_model(str(tmp_path / "old.pt"))
    assert info.metadata_source == "defaults" and info.camera_convention["distance"] == 5.0


def test_another_model_or_size_is_refused(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="expected model_name='GazeNeRF'"):
        load_trained_model(ckpt, expect={"model_name": "GazeNeRF"})
    state = torch.load(os.path.join(ckpt, "checkpoints", "last.pt"), weights_only=True)
    state["config"]["model"]["mlp_width"] = 48  # weights of another size
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="weights do not fit") as exc:
        load_trained_model(str(tmp_path / "other.pt"))
    assert "\n" not in str(exc.value)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a HeadNeRF checkpoint"):
        load_trained_model(str(tmp_path / "foreign.pt"))


@pytest.mark.parametrize("per_pixel", [True, False])
def test_fit_lowers_the_loss_and_the_camera_refinement_stays_small(ckpt, tiny_dataset, per_pixel):
    model, info = load_trained_model(ckpt)
    ds = GazeDataset(tiny_dataset, "test", image_size=info.image_size)
    target = target_from_dataset_row(ds, 0, code=info.code_mean, code_init="mean")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FitConfig(steps=40, rays_per_step=128 if per_pixel else 0, finetune_steps=6, early_stop_patience=0)
    res = fit_image(model, target, cfg, progress=False)
    codes = res.losses["codes"]
    assert np.mean(codes[-5:]) < 0.8 * np.mean(codes[:5]), codes
    assert res.camera_offset[:3].norm() < 0.15 and res.camera_offset[3:].norm() < 0.3, res.camera_offset
    assert res.steps_run == {"codes": 40, "finetune": 6} and np.isfinite(res.psnr_head)
    # the loaded model is untouched; the fine-tuned copy kept its gaze MLP (the gaze pathway) frozen
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert res.model is not model
    for k, v in res.model.gaze_mlp.state_dict().items():
        torch.testing.assert_close(v, model.gaze_mlp.state_dict()[k])
    assert any(not torch.equal(v, before["trunk." + k]) for k, v in res.model.trunk.state_dict().items())
    # renders: the fitted view, new gazes, new head poses
    assert render_fit(res).shape == (1, 3, 16, 16)
    assert render_fit(res, gaze=torch.tensor([[0.3, 0.2], [0.0, -0.4]])).shape == (2, 3, 16, 16)
    assert render_fit(res, head_pose=torch.tensor([[0.1, 0.4]])).shape == (1, 3, 16, 16)


def test_camera_steps_hold_the_camera_after_n_code_steps(ckpt, tiny_dataset, monkeypatch):
    import HeadNeRF.fitting.fit as fit_module

    model, info = load_trained_model(ckpt)
    ds = GazeDataset(tiny_dataset, "test", image_size=info.image_size)
    target = target_from_dataset_row(ds, 0, code=info.code_mean, code_init="mean")
    trail = []  # the camera offset after each step

    def recording_step(net, problem, guarded_step, stage, step):
        loss = fit_step(net, problem, guarded_step, stage, step)
        trail.append(problem.cam.detach().clone())
        return loss

    monkeypatch.setattr(fit_module, "fit_step", recording_step)
    common = dict(steps=8, rays_per_step=128, early_stop_patience=0, lr_camera=0.05)
    held = fit_image(model, target, FitConfig(camera_steps=3, **common), progress=False)
    held_trail, trail[:] = list(trail), []
    fit_image(model, target, FitConfig(**common), progress=False)
    assert len(held_trail) == len(trail) == 8
    assert not torch.equal(held_trail[0], held_trail[2])  # refined in the first 3 steps
    assert all(torch.equal(c, held_trail[2]) for c in held_trail[3:])  # then held, while the codes go on
    assert not torch.equal(trail[2], trail[7])  # without camera_steps it keeps moving
    assert held.steps_run == {"codes": 8}
    with pytest.raises(ConfigError, match="camera_steps"):
        FitConfig(camera_steps=-1)


def test_early_stop_and_unknown_gaze_is_fitted(ckpt, tiny_dataset):
    model, info = load_trained_model(ckpt)
    ds = GazeDataset(tiny_dataset, "test", image_size=info.image_size)
    target = target_from_dataset_row(ds, 1)
    target.gaze_known, target.gaze = False, torch.zeros(1, 2)
    res = fit_image(model, target, FitConfig(steps=400, early_stop_patience=5, early_stop_delta=0.5), progress=False)
    assert res.steps_run["codes"] < 400
    assert "finetune" not in res.steps_run and res.model is model
    assert not torch.equal(res.gaze, torch.zeros(1, 2))  # the gaze was a free parameter


def test_fit_step_is_one_guarded_step(ckpt, tiny_dataset):
    """fit_step on its own: a finite step moves the codes and returns its loss; a NaN image skips steps
    (the codes stay put) until MAX_BAD_STEPS in a row abort, and fit_image then ends the stage with nothing."""
    model, info = load_trained_model(ckpt)
    ds = GazeDataset(tiny_dataset, "test", image_size=info.image_size)
    target = target_from_dataset_row(ds, 0, code=info.code_mean)
    cfg = FitConfig(steps=1, rays_per_step=64)
    problem = FitProblem.start(model, target, cfg)
    guard = fit_guard(torch.optim.Adam(problem.param_groups()))
    loss = fit_step(model, problem, guard, FitStage("codes", cfg.eye, False), step=0)
    assert np.isfinite(loss) and guard.bad_steps == 0 and problem.d_shape.abs().sum() > 0

    broken = dataclasses.replace(target, image=torch.full_like(target.image, float("nan")))
    problem = FitProblem.start(model, broken, cfg)
    guard = fit_guard(torch.optim.Adam(problem.param_groups()))
    with pytest.warns(UserWarning, match="non-finite"):
        for step in range(MAX_BAD_STEPS - 1):
            loss = fit_step(model, problem, guard, FitStage("codes", cfg.eye, False), step)
            assert loss is None and guard.bad_steps == step + 1
        with pytest.raises(TrainingAborted):
            fit_step(model, problem, guard, FitStage("codes", cfg.eye, False), MAX_BAD_STEPS)
        assert problem.d_shape.abs().sum() == 0  # no bad step reached the codes
        res = fit_image(model, broken, FitConfig(steps=20), progress=False)
    assert res.steps_run == {"codes": 0} and torch.equal(res.shape_code, broken.shape_code)


def test_fit_refuses_a_target_of_the_wrong_shape(ckpt, tiny_dataset):
    model, info = load_trained_model(ckpt)
    ds = GazeDataset(tiny_dataset, "test", image_size=info.image_size)
    target = target_from_dataset_row(ds, 0)
    for name, bad in (("image", target.image[0]), ("eye_mask", target.eye_mask[..., :8]), ("R_w2c", target.R_w2c[0])):
        wrong = dataclasses.replace(target, **{name: bad})
        with pytest.raises(TargetShapeError, match=rf"{name} has shape \({', '.join(map(str, bad.shape))}\), expected"):
            fit_image(model, wrong, FitConfig(steps=1), progress=False)


def test_photo_fit_config_file_and_flags(tmp_path):
    """config/fitting.yml is the defaults; unknown keys and empty files are refused in one line; a flag on the
    command line overrides its key, a flag left out leaves the file's value."""
    assert load_photo_fit_config(os.path.join(ROOT, "config", "fitting.yml")) == PhotoFitConfig()
    cfg_file = tmp_path / "fit.yml"
    cfg_file.write_text("gaze_targets: camera\nmp4: false\nfit:\n  steps: 7\n  finetune_steps: 3\n")
    script = _script()
    cfg = script.load_config(script.build_parser().parse_args(["--config", str(cfg_file), "--steps", "2",
                                                               "--img", "a.png", "--vgg_weights", "w.pth"]))
    assert (cfg.fit.steps, cfg.fit.finetune_steps, cfg.gaze_targets, cfg.mp4, cfg.img) == (2, 3, "camera", False, "a.png")
    assert (cfg.fit.vgg, cfg.fit.vgg_weights_path) == (0.1, "w.pth")
    cfg_file.write_text("fit:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match=r"fit.stepz: unknown key; did you mean 'fit.steps'") as exc:
        load_photo_fit_config(str(cfg_file))
    assert "\n" not in str(exc.value)
    cfg_file.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty config"):
        load_photo_fit_config(str(cfg_file))
    with pytest.raises(ConfigError, match="fit.steps: must be >= 0"):
        load_photo_fit_config(None, {"fit.steps": -1})
    with pytest.raises(ConfigError, match="device: cpu or cuda"):
        load_photo_fit_config(None, {"device": "tpu"})


def test_latent_round_trip_and_target_embedding_syntaxes(ckpt, tiny_dataset, tmp_path):
    model, info = load_trained_model(ckpt)
    ds = GazeDataset(tiny_dataset, "test", image_size=info.image_size)
    res = fit_image(model, target_from_dataset_row(ds, 0), FitConfig(steps=3), progress=False)
    path = str(tmp_path / "latent.pt")
    save_latent(path, res, info, warp=np.eye(3))
    data = torch.load(path, weights_only=True)
    assert set(data) >= {"shape_code", "appearance_code", "code", "R_w2c", "t_w2c", "K", "gaze", "warp"}
    emb = load_target_embedding(path, info)
    torch.testing.assert_close(emb["shape_code"], res.shape_code)
    torch.testing.assert_close(emb["appearance_code"], res.appearance_code)
    sid, row = ds.rows[2][:2]
    h5 = os.path.join(tiny_dataset, f"subject{sid:04d}.h5")
    emb = load_target_embedding(f"{h5}:{row}", info)
    torch.testing.assert_close(emb["shape_code"][0], ds[2]["shape_code"])
    with pytest.raises(FittingInputError, match="rows 0.."):
        load_target_embedding(f"{h5}:100000", info)
    with pytest.raises(FittingInputError, match="file not found"):
        load_target_embedding(str(tmp_path / "nope.pt"), info)
    assert parse_gaze_targets("0.2,-0.3; 0,0.4").flatten().tolist() == pytest.approx([0.2, -0.3, 0.0, 0.4])
    with pytest.raises(FittingInputError):
        parse_gaze_targets("0.2")


# ----------------------------------------------------------------------------------------------
# The command


def _check_outputs(out, with_interp: bool):
    import imageio.v2 as imageio

    names = set(os.listdir(out))
    expected = {"merged.png", "gaze_sweep.gif", "gaze_sweep.mp4", "pose_sweep.gif", "pose_sweep.mp4", "latent.pt",
                "fit.json", "redirected", "photo_strip.png", "photo_gaze_sweep.gif", "photo_gaze_sweep.mp4"} \
        | ({"interp.gif"} if with_interp else set())
    assert names == expected, names
    merged = imageio.imread(os.path.join(out, "merged.png"))
    assert merged.shape == (256, 768, 3)
    gif = imageio.mimread(os.path.join(out, "gaze_sweep.gif"))
    assert len(gif) > 10 and gif[0].shape[:2] == (256, 256)
    assert len(imageio.mimread(os.path.join(out, "pose_sweep.gif"))) > 10
    with open(os.path.join(out, "fit.json")) as f:
        report = json.load(f)
    assert set(report["seconds"]) >= {"load_model", "face_analysis", "fit_codes", "outputs", "total"}
    assert np.isfinite(report["fit"]["psnr_head"]) and len(report["face"]["head_pose_detected"]) == 2
    torch.load(os.path.join(out, "latent.pt"), weights_only=True)
    return report


def test_command_on_a_real_photo(ckpt, photo, tiny_dataset, tmp_path):
    """The astronaut (skimage), with gaze targets and a dataset-row target embedding."""
    out = tmp_path / "out"
    res = run_cli("--model_path", ckpt, "--img", photo, "--save_root", str(out), "--steps", "8",
                  "--finetune_steps", "2", "--gaze_targets", "0.2,0.3;0,-0.4",
                  "--target_embedding", os.path.join(tiny_dataset, "subject0001.h5") + ":1")
    assert res.returncode == 0, res.stderr
    report = _check_outputs(str(out), with_interp=True)
    assert report["face"]["num_faces"] == 1 and report["face"]["interocular_px"] > 12
    assert np.allclose(report["gaze_targets"], [[0.2, 0.3], [0.0, -0.4]])
    # the latent.pt of this fit is accepted back as a target embedding; a second run into the same folder
    # (fewer gaze targets, no MP4) leaves only its own outputs, and removes a killed run's work folder
    shutil.copy(out / "latent.pt", tmp_path / "latent.pt")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    os.makedirs(out / f".fitting_tmp_{int(dead.stdout)}_x")
    rc = _script_main()(["--model_path", ckpt, "--img", photo, "--save_root", str(out), "--steps", "2",
                         "--no_mp4", "--target_embedding", str(tmp_path / "latent.pt"), "--gaze_targets", "camera",
                         "--para_3dmm", str(tmp_path / "latent.pt"), "--no_progress", "--verbose"])
    assert rc == 0
    with open(out / "fit.json") as f:
        second = json.load(f)
    written = set(second["outputs"])
    assert "interp.gif" in written and not any(n.endswith(".mp4") for n in os.listdir(out))
    listed = {n for n in os.listdir(out) if not os.path.isdir(out / n)} | \
        {"redirected/" + n for n in os.listdir(out / "redirected")}
    assert listed == written, listed ^ written
    assert any(n.startswith(".fitting_tmp_") for n in second["removed_old_outputs"])


def test_command_on_a_synthetic_render_and_odd_image_formats(ckpt, tmp_path):
    """A synthetic head rendered at 256 px and saved as 16-bit greyscale PNG, then as RGBA."""
    import cv2

    from HeadNeRF.data.synthetic import render_view, sample_code
    from HeadNeRF.data.synthetic.rig import normalized_cameras
    code = sample_code(np.random.default_rng(5))
    R, t, K = normalized_cameras([0], [[0.0, 0.1]], 256)
    img = render_view(code, R, t, K, 256, torch.zeros(2))["image"][0]
    grey16 = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], -1)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    np.save(tmp_path / "code.npy", code)
    for name in ("grey16.png", "rgba.png"):
        out = tmp_path / f"out_{name}"
        fit_single_image(PhotoFitConfig(model_path=ckpt, img=str(tmp_path / name), save_root=str(out),
                                        progress=False, mp4=name == "rgba.png", fit=FitConfig(steps=3),
                                        para_3dmm="" if name == "grey16.png" else str(tmp_path / "code.npy")))
        assert "fit.json" in os.listdir(out) and "merged.png" in os.listdir(out)


def _assert_clean(save_root):
    """Nothing that looks complete: no fit.json, no outputs, no temporary folders left behind."""
    assert not os.path.exists(save_root) or os.listdir(save_root) == []


def test_bad_inputs_fail_in_one_line(ckpt, photo, tmp_path, capsys):
    import imageio.v2 as imageio

    out = str(tmp_path / "out")
    blank = str(tmp_path / "blank.png")
    imageio.imwrite(blank, np.full((200, 300, 3), 200, np.uint8))
    res = run_cli("--model_path", ckpt, "--img", blank, "--save_root", out)
    assert res.returncode == 1 and res.stderr == f"no face found in {blank}\n", res.stderr
    _assert_clean(out)

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    main = _script_main()  # in-process (the subprocess above checked the real stderr)
    capsys.readouterr()

    def run(*args):
        rc = main([*args, "--save_root", out, "--no_progress", "--verbose"])
        return rc, capsys.readouterr().err

    for bad in (corrupt, text, tmp_path / "missing.png"):
        rc, err = run("--model_path", ckpt, "--img", str(bad))
        assert rc == 2 and err.count("\n") == 1 and str(bad) in err, err
        _assert_clean(out)
    rc, err = run("--model_path", str(tmp_path / "nope"), "--img", photo)
    assert rc == 2 and "checkpoint not found" in err and err.count("\n") == 1, err
    torch.save({"shape_code": torch.zeros(3)}, tmp_path / "latent_like.pt")
    rc, err = run("--model_path", str(tmp_path / "latent_like.pt"), "--img", photo)
    assert rc == 2 and "not a HeadNeRF checkpoint" in err and err.count("\n") == 1, err
    rc, err = run("--model_path", ckpt, "--img", photo, "--gaze_targets", "0.1")
    assert rc == 2 and "--gaze_targets" in err and err.count("\n") == 1, err
    rc, err = run("--model_path", ckpt, "--img", photo, "--gaze_targets", "nan,0")
    assert rc == 2 and "must be finite numbers" in err and err.count("\n") == 1, err
    rc, err = run("--model_path", ckpt, "--img", photo, "--steps", "-1")
    assert rc == 2 and err == "fit.steps: must be >= 0, got -1\n", err
    rc, err = run("--img", photo)
    assert rc == 2 and "--model_path is required" in err and err.count("\n") == 1, err
    rc, err = run("--model_path", ckpt, "--img", photo, "--face_index", "5")
    assert rc == 2 and "--face_index 5: 1 face found" in err and err.count("\n") == 1, err
    _assert_clean(out)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rc = main(["--model_path", ckpt, "--img", photo, "--save_root", str(a_file), "--no_progress", "--verbose"])
    err = capsys.readouterr().err
    assert rc == 2 and "is an existing file" in err and err.count("\n") == 1 and a_file.read_text() == "x", err


def test_stale_outputs_of_an_earlier_run_are_removed(tmp_path):
    from HeadNeRF.fitting import remove_stale_outputs

    for name in ("merged.png", "interp.gif", "notes.txt"):
        (tmp_path / name).write_text("old")
    (tmp_path / "redirected").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "redirected" / name).write_text("old")
    removed = remove_stale_outputs(str(tmp_path), ["merged.png", "redirected/a.png"])
    assert sorted(removed) == ["interp.gif", "redirected/b.png"]
    assert sorted(os.listdir(tmp_path)) == ["merged.png", "notes.txt", "redirected"]  # not ours: kept
    assert os.listdir(tmp_path / "redirected") == ["a.png"]


def test_face_too_small_and_bad_codes(ckpt, photo, tmp_path):
    from HeadNeRF.fitting import PhotoUnusableError

    out = str(tmp_path / "out")
    cfg = PhotoFitConfig(model_path=ckpt, img=photo, save_root=out, progress=False, fit=FitConfig(steps=1))
    with pytest.raises(PhotoUnusableError, match="face too small to fit"):
        fit_single_image(dataclasses.replace(cfg, min_interocular_px=1000.0))
    _assert_clean(out)
    np.save(tmp_path / "short.npy", np.zeros(5, np.float32))
    with pytest.raises(FittingInputError, match="code has 5 values"):
        fit_single_image(dataclasses.replace(cfg, para_3dmm=str(tmp_path / "short.npy")))
    _assert_clean(out)


def test_fit_can_hold_the_starting_codes_eye_centres(tiny_dataset):
    """FitConfig.eye_centers "start": an eye_frame model renders every step, the fitted view and the redirected
    views with the starting code's eyeball centres while the code moves; "code" lets them follow the code."""
    from HeadNeRF.data.synthetic.eye_centers import head_model_shape_dim
    from HeadNeRF.models import build_model
    from tests.test_models import tiny_cfg

    torch.manual_seed(0)
    model = build_model(tiny_cfg(gaze_input="eye_frame", eye_frame_freqs=2, eye_centers_from_head_model=True,
                                 gaze_region_radius=3.0), head_model_shape_dim(), 21).eval()
    ds = GazeDataset(tiny_dataset, "test", image_size=16)
    target = target_from_dataset_row(ds, 0)
    start_centres = model.image_eye_centers(target.shape_code)
    cfg = FitConfig(steps=4, rays_per_step=64, early_stop_patience=0, lr_shape=0.5, eye_centers="start")
    held = fit_image(model, target, cfg, progress=False)
    assert not torch.allclose(held.shape_code, target.shape_code)  # the code moved ...
    torch.testing.assert_close(held.eye_centers, start_centres, rtol=0, atol=0)  # ... the centres did not
    assert (model.image_eye_centers(held.shape_code) - start_centres).abs().max() > 0
    gaze = torch.tensor([[0.3, -0.2]])
    with torch.no_grad():
        R, t = held.R_w2c, held.t_w2c
        from HeadNeRF.geometry.gaze import gaze_in_head_frame
        expected = model(held.shape_code, held.appearance_code, R, t, held.K, gaze_head=gaze_in_head_frame(gaze, R),
                         eye_mask=held.eye_mask, eye_centers=start_centres)["image"]
    torch.testing.assert_close(render_fit(held, gaze=gaze), expected.clamp(0, 1))
    follow = fit_image(model, target, dataclasses.replace(cfg, eye_centers="code"), progress=False)
    assert follow.eye_centers is None
    with pytest.raises(ConfigError, match="eye_centers"):
        FitConfig(eye_centers="fixed")
