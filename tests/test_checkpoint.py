"""Checkpoint files: atomic writes and safe, one-line refusals of files this project did not write."""

import os
import pickle

import pytest
import torch

from HeadNeRF.checkpoint import (
    LAST_CHECKPOINT,
    CheckpointError,
    check_compatible,
    checkpoint_path,
    load_checkpoint,
    load_safely,
    run_dir_of,
    save_checkpoint,
)


class _Payload:  # a pickled object: weights_only loading must refuse it
    pass


def test_round_trip_and_directory_form(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "config": {"model": {"model_name": "HeadNeRF_Gaze"}}, "step": 4}
    save_checkpoint(state, str(tmp_path / "checkpoints" / "last.pt"))
    loaded = load_checkpoint(str(tmp_path))
    assert loaded["step"] == 4 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp_")]


def test_checkpoint_path_and_run_dir_of_are_inverse(tmp_path):
    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    file = checkpoint_path(str(run))
    assert file == os.path.join(str(run), LAST_CHECKPOINT) and run_dir_of(file) == str(run)
    other = str(tmp_path / "elsewhere.pt")
    assert checkpoint_path(other) == other  # a file is taken as itself (it need not exist yet)


@pytest.mark.parametrize("kind", ["pickle", "garbage", "truncated", "text"])
def test_bad_files_never_advise_turning_the_safety_off(tmp_path, kind):
    path = tmp_path / "bad.pt"
    if kind == "pickle":
        torch.save({"model": _Payload(), "config": {}}, str(path))
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}, "config": {}}, str(path))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_text("model: not a checkpoint\n")
    with pytest.raises(CheckpointError) as info:
        load_safely(str(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "weights_only=False" not in message and "weights_only" not in message
    if kind == "pickle":
        assert "not a file this project wrote" in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))


def test_an_estimator_checkpoint_is_named_when_a_nerf_is_expected():
    state = {"model": {}, "config": {"model": {"depth": 18}}, "estimator": {"outputs": ["gaze"]}}
    with pytest.raises(CheckpointError, match="gaze-estimator checkpoint"):
        check_compatible(state, {"model_name": "HeadNeRF_Gaze"}, "runs/est/checkpoints/last.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_plain_pickle_is_refused_in_one_line(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model": _Payload(), "config": 2}))
    with pytest.raises(CheckpointError) as info:
        load_safely(str(path))
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_a_killed_writers_temporary_is_removed_by_the_next_save(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp_{int(dead.stdout)}_abc.pt"  # a writer that died mid-write
    legacy = tmp_path / ".tmpxyz.pt"  # not ours: left alone
    old_style = tmp_path / ".tmp_k3j2.pt"  # the earlier naming (no pid): removed
    live = tmp_path / f".tmp_{os.getppid()}_def.pt"  # a live process (our parent) may still be writing it
    for p in (stale, legacy, old_style, live):
        p.write_bytes(b"partial")
    save_checkpoint({"model": {}, "config": {}}, str(tmp_path / "last.pt"))
    assert not stale.exists() and not old_style.exists()
    assert legacy.exists() and live.exists() and (tmp_path / "last.pt").exists()
