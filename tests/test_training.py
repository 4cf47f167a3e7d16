"""End-to-end training: every model_name trains, resume is exact, bad input fails clearly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, tiny_config_dict
from HeadNeRF.checkpoint import load_checkpoint
from HeadNeRF.config import TrainConfig, from_dict
from HeadNeRF.training import TrainingAborted, train

SCRIPT = os.path.join(ROOT, "train_headnerf.py")


def run_script(*args, timeout=300):
    return subprocess.run([sys.executable, SCRIPT, *args, "--no-progress"], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("model_name", ["HeadNeRF", "HeadNeRF_Gaze", "GazeNeRF"])
def test_every_model_trains_a_few_steps(tiny_dataset, tmp_path, model_name):
    cfg = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, str(tmp_path / "run"), model_name, steps=3))
    report = train(cfg, progress=False)
    assert report["steps"] == 3
    assert os.path.isfile(tmp_path / "run" / "checkpoints" / "last.pt")
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["model_name"] == model_name and saved["psnr_head_heldout_frames"] > 0
    assert "eye_psnr_gain_db" in saved["gaze_redirection"]
    assert os.listdir(tmp_path / "run" / "tb")
    import imageio.v2 as imageio

    gif = imageio.mimread(tmp_path / "run" / "gaze_sweep.gif")
    assert gif[0].shape[:2] == (16, 16)
    # The GIF writer merges identical frames: without a gaze input every frame is the same.
    assert len(gif) == 1 if model_name == "HeadNeRF" else len(gif) > 1


@pytest.mark.parametrize("name", ["quickstart", "quickstart_HeadNeRF", "quickstart_GazeNeRF"])
def test_quickstart_configs_train_on_the_tiny_dataset(tiny_dataset, tmp_path, name):
    """The shipped quickstart configs themselves (pixel subsets, tri-planes), 2 steps, full-size model."""
    from HeadNeRF.config import load_yaml, to_dict

    d = to_dict(load_yaml(os.path.join(ROOT, "config", f"{name}.yml")))
    d.update(steps=2, val_every=2, val_images=2, run_dir=str(tmp_path / "run"))
    d["data"]["dataset_dir"] = tiny_dataset
    report = train(from_dict(TrainConfig, d), progress=False)
    assert report["steps"] == 2 and report["psnr_head_heldout_frames"] > 0


@pytest.mark.parametrize("model_name", ["HeadNeRF", "HeadNeRF_Gaze", "GazeNeRF"])
def test_one_image_overfit_loss_decreases(tiny_dataset, model_name):
    from HeadNeRF.data.dataset import GazeDataset
    from HeadNeRF.losses import total_loss
    from HeadNeRF.models import build_model
    from HeadNeRF.training import PerImageOffsets, forward_batch

    cfg = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, "unused", model_name))
    ds = GazeDataset(tiny_dataset, "train", image_size=cfg.model.image_size)
    torch.manual_seed(0)
    model = build_model(cfg.model, ds.shape_code_dim, ds.appearance_code_dim)
    batch = torch.utils.data.default_collate([ds[0]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    offsets = PerImageOffsets(len(ds), 1, False, False)
    losses = []
    for _ in range(40):
        out, _, _ = forward_batch(model, offsets, batch, training=False)
        loss, _ = total_loss(out, batch, cfg.loss_config)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_train_step_lowers_the_loss_and_a_nan_loss_is_skipped(tiny_dataset, monkeypatch):
    """training.train_step on one tiny batch: repeated steps lower the loss; a NaN loss leaves every weight
    as it was (the guard skips it) and max_bad_steps in a row abort."""
    import warnings

    import HeadNeRF.training as training
    from HeadNeRF.loop import GuardedStep

    cfg = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, "unused"))
    torch.manual_seed(0)
    parts = training.prepare(cfg)
    model, offsets = parts["model"], parts["offsets"]
    optimizer, _, params = training.make_optimizer(cfg, model, offsets)
    guarded_step = GuardedStep(optimizer, params, cfg.grad_clip, 2, "unused", "init_lr")
    batch = torch.utils.data.default_collate([parts["train_ds"][i] for i in range(2)])
    generator = torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [training.train_step(model, offsets, batch, cfg, guarded_step, s, generator)[0].item() for s in range(20)]
    assert max(losses[-3:]) < 0.7 * losses[0], losses
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    real = training.total_loss
    monkeypatch.setattr(training, "total_loss", lambda *a, **k: (real(*a, **k)[0] * float("nan"), {}))
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="non-finite"):
        loss = training.train_step(model, offsets, batch, cfg, guarded_step, 20, generator)[0]
    assert torch.isnan(loss) and guarded_step.bad_steps == 1
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())
    with warnings.catch_warnings(), pytest.raises(TrainingAborted, match="2 consecutive"):
        warnings.simplefilter("ignore")
        training.train_step(model, offsets, batch, cfg, guarded_step, 21, generator)


def test_resume_is_exact(tiny_dataset, tmp_path):
    straight = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, str(tmp_path / "a"), steps=4))
    train(straight, progress=False)
    half = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, str(tmp_path / "b"), steps=2))
    train(half, progress=False)
    rest = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, str(tmp_path / "b"), steps=4))
    train(rest, resume=str(tmp_path / "b"), progress=False)
    a = load_checkpoint(str(tmp_path / "a"))
    b = load_checkpoint(str(tmp_path / "b"))
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6), k


def test_nan_loss_skips_then_aborts_without_bad_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    import HeadNeRF.training as training

    real = training.total_loss

    def nan_loss(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        return loss * float("nan"), terms

    monkeypatch.setattr(training, "total_loss", nan_loss)
    cfg = from_dict(TrainConfig, {**tiny_config_dict(tiny_dataset, str(tmp_path / "run"), steps=20), "max_bad_steps": 3})
    with pytest.warns(UserWarning, match="non-finite"), pytest.raises(TrainingAborted, match="3 consecutive"):
        train(cfg, progress=False)
    # Skipped steps never touch the weights: whatever checkpoint exists holds finite, initial weights.
    state = load_checkpoint(str(tmp_path / "run"))
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    torch.manual_seed(cfg.seed)
    from HeadNeRF.models import build_model

    fresh = build_model(cfg.model, *state["code_dims"]).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in state["model"].items())


def test_cli_bad_inputs_fail_in_one_line(tiny_dataset, tmp_path, write_config):
    good = tiny_config_dict(tiny_dataset, str(tmp_path / "run"), steps=2)
    cases = {
        "typo": {**good, "init_lrr": 0.1},
        "type": {**good, "steps": "many"},
        "missing_data": {**good, "data": {"dataset_dir": str(tmp_path / "absent")}},
    }
    for name, cfg in cases.items():
        res = run_script("--config_file", write_config(cfg, f"{name}.yml"))
        assert res.returncode == 2, (name, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("train_headnerf.py: error:"), (name, res.stderr)
    assert not os.path.exists(tmp_path / "run")


def test_cli_other_layout_hdf5(tmp_path, write_config):
    import h5py

    from HeadNeRF.data.layout import Split

    d = tmp_path / "xgaze_raw"
    d.mkdir()
    with h5py.File(d / "subject0000.h5", "w") as f:  # an unprocessed ETH-XGaze-style file
        f["face_patch"] = torch.zeros(2, 8, 8, 3, dtype=torch.uint8).numpy()
        f["face_gaze"] = torch.zeros(2, 2).numpy()
    Split([0], [], [], []).save(str(d))
    res = run_script("--config_file", write_config(tiny_config_dict(str(d), str(tmp_path / "run"))))
    assert res.returncode == 2 and "subject0000.h5" in res.stderr and "key 'mask'" in res.stderr


def test_cli_dry_run_and_checkpoint_of_another_model(tiny_dataset, tmp_path, write_config):
    run = str(tmp_path / "run")
    res = run_script("--config_file", write_config(tiny_config_dict(tiny_dataset, run, "HeadNeRF", steps=2), "h.yml"))
    assert res.returncode == 0, res.stderr
    before = os.path.getmtime(os.path.join(run, "checkpoints", "last.pt"))
    other = write_config(tiny_config_dict(tiny_dataset, run, "GazeNeRF", steps=4), "g.yml")
    res = run_script("--config_file", other, "--resume", run)
    assert res.returncode == 2 and "HeadNeRF" in res.stderr and "GazeNeRF" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert os.path.getmtime(os.path.join(run, "checkpoints", "last.pt")) == before
    # Starting a new run over an existing one is refused too.
    res = run_script("--config_file", write_config(tiny_config_dict(tiny_dataset, run, "HeadNeRF"), "h2.yml"))
    assert res.returncode == 2 and "--resume" in res.stderr
    res = run_script("--config_file", other, "--dry-run", "--run_dir", str(tmp_path / "dry"))
    assert res.returncode == 0 and "model_name: GazeNeRF" in res.stdout
    assert not os.path.exists(tmp_path / "dry")


def test_sigint_saves_a_checkpoint_and_resume_continues(tiny_dataset, tmp_path, write_config):
    run = str(tmp_path / "run")
    cfg = {**tiny_config_dict(tiny_dataset, run, steps=100000), "ckpt_every": 100000, "val_every": 100000,
           "image_every": 100000}
    path = write_config(cfg)
    proc = subprocess.Popen([sys.executable, SCRIPT, "--config_file", path], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(run, "tb")):
        time.sleep(0.5)
    time.sleep(3)  # let it take some steps
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    state = load_checkpoint(run)
    assert state["step"] > 0
    res = run_script("--config_file", write_config({**cfg, "steps": state["step"] + 2}, "more.yml"), "--resume", run)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(run)["step"] == state["step"] + 2


def _free_port() -> int:
    """A TCP port nothing listens on now (a fixed port collided when two test suites ran on one machine)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes(tiny_dataset, tmp_path, write_config):
    run = str(tmp_path / "ddp")
    cfg = {**tiny_config_dict(tiny_dataset, run, steps=2), "batch_size": 1}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()),
                          SCRIPT, "--config_file", write_config(cfg), "--no-progress"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert load_checkpoint(run)["step"] == 2


def test_report_rows_are_spread_over_the_held_out_set():
    from HeadNeRF.training import _spread

    rows = list(range(100, 184))  # e.g. 84 held-out rows, subjects in blocks
    assert _spread(rows, 200) == rows
    picked = _spread(rows, 8)
    assert len(picked) == 8 and len(set(picked)) == 8 and picked[0] == 100
    assert picked[-1] >= 170  # reaches the last block, not only the first rows
    assert all(b - a in (10, 11) for a, b in zip(picked, picked[1:]))


@pytest.mark.parametrize("model_name,expect_kept", [("HeadNeRF_Gaze", False), ("HeadNeRF", True)])
def test_rows_without_gaze_label_train_only_the_gaze_free_baseline(tiny_dataset, tmp_path, model_name, expect_kept):
    import shutil

    import h5py
    import numpy as np

    from HeadNeRF.training import prepare

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    with h5py.File(data / "subject0000.h5", "r+") as f:  # the training subject: first two rows unlabelled
        gaze_valid = np.ones(len(f["valid_mask"]), dtype=bool)
        gaze_valid[:2] = False
        f["gaze_valid"] = gaze_valid
    cfg = from_dict(TrainConfig, tiny_config_dict(str(data), str(tmp_path / "run"), model_name))
    full = from_dict(TrainConfig, tiny_config_dict(tiny_dataset, str(tmp_path / "run"), model_name))
    n_all = len(prepare(full)["train_ds"])
    parts = prepare(cfg)
    kept_rows = {r.row for r in parts["train_ds"].rows if r.subject == 0}
    assert (0 in kept_rows and 1 in kept_rows) == expect_kept
    assert len(parts["train_ds"]) == (n_all if expect_kept else n_all - 2)


def test_keep_freed_memory_changes_no_result():
    """The opt-in allocator setting (HeadNeRF/memory.py): in effect on Linux/glibc, idempotent, and a
    computation gives bit-identical results under it."""
    from HeadNeRF.memory import keep_freed_memory

    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(3000, 64, generator=g), torch.randn(64, 64, generator=g)
    before = torch.relu(a @ w).sum(0)
    applied = keep_freed_memory()
    assert applied or not sys.platform.startswith("linux")  # glibc Linux: mallopt is there
    assert keep_freed_memory() == applied
    assert torch.equal(torch.relu(a @ w).sum(0), before)
