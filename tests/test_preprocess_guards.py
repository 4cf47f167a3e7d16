"""Preprocessing runs that a new user gets wrong (issue 15's battery): each gets one line and the right exit code,
and no work is lost or mixed up: a file as save_dir, re-runs after adding a person, a save_dir inside img_dir,
a truncated output, a subject without a usable face, two runs into one folder, kill -9 of a parallel run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import ROOT

from HeadNeRF.preprocess import fixtures
from HeadNeRF.run_lock import RunLock

SCRIPT = os.path.join(ROOT, "DataProcess", "Gen_mask_lm_3DMM.py")
FAST = ["--no_fit", "--no_progress", "--image_size", "64", "--photo_focal_factor", "2.05"]


def preprocess(*args, timeout=300):
    return subprocess.run([sys.executable, SCRIPT, *args, *FAST], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def source_of(path):
    with h5py.File(path, "r") as f:
        return str(f.attrs["source_file"])


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    """One folder of 2 synthetic photos with faces (person_a) and one of a photo without a face."""
    d = str(tmp_path_factory.mktemp("photos"))
    fixtures.write_photo_folder_fixture(d, rows=2, image_size=128, bad_images=True, real_photo=False)
    noface = os.path.join(d, "noface_only")
    os.makedirs(noface)
    shutil.copy(os.path.join(d, "person_z", "noface.png"), noface)
    return d


def test_save_dir_that_is_a_file_is_refused_before_any_work(tmp_path, person):
    target = tmp_path / "out.txt"
    target.write_text("x")
    t0 = time.time()
    res = preprocess("--img_dir", person, "--save_dir", str(target))
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "is an existing file" in res.stderr and time.time() - t0 < 20
    res = preprocess("--img_dir", person, "--save_dir", person)
    assert res.returncode == 2 and "must differ from --img_dir" in res.stderr and "Traceback" not in res.stderr


def test_new_person_is_processed_and_outputs_stay_keyed_to_their_input(tmp_path, person):
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    shutil.copytree(os.path.join(person, "person_a"), img_dir / "person_m")
    out = img_dir / "processed"  # save_dir inside img_dir: never read as an input subject
    res = preprocess("--img_dir", str(img_dir), "--save_dir", str(out))
    assert res.returncode == 0, res.stderr
    assert source_of(out / "subject0000.h5") == "person_m"
    first = (out / "subject0000.h5").stat().st_mtime_ns
    shutil.copytree(os.path.join(person, "person_a"), img_dir / "person_c")  # sorts before person_m
    res = preprocess("--img_dir", str(img_dir), "--save_dir", str(out))
    assert res.returncode == 0, res.stderr
    assert "1 written, 1 skipped" in res.stdout, res.stdout
    assert source_of(out / "subject0000.h5") == "person_m" and (out / "subject0000.h5").stat().st_mtime_ns == first
    assert source_of(out / "subject0001.h5") == "person_c"
    assert json.loads((out / "subjects.json").read_text()) == {"person_m": 0, "person_c": 1}
    assert "processed" not in res.stdout + res.stderr.replace(str(out), "")


def test_truncated_output_is_processed_again_never_dropped(tmp_path, person):
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    shutil.copytree(os.path.join(person, "person_a"), img_dir / "person_a")
    out = tmp_path / "out"
    assert preprocess("--img_dir", str(img_dir), "--save_dir", str(out)).returncode == 0
    data = (out / "subject0000.h5").read_bytes()
    (out / "subject0000.h5").write_bytes(data[: len(data) // 3])
    res = preprocess("--img_dir", str(img_dir), "--save_dir", str(out))
    assert res.returncode == 0, res.stderr
    assert "processing person_a again" in res.stderr and "1 written, 0 skipped" in res.stdout
    split = json.loads((out / "split.json").read_text())
    assert 0 in split["train_subjects"] + split["test_subjects"]


def test_subject_without_a_usable_face_is_named_and_fails_the_run(tmp_path, person):
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    shutil.copytree(os.path.join(person, "noface_only"), img_dir / "noface_only")
    res = preprocess("--img_dir", str(img_dir), "--save_dir", str(tmp_path / "out"))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "no usable face: noface_only" in res.stdout and "Traceback" not in res.stderr


def test_second_run_into_the_same_folder_refuses_naming_the_first(tmp_path, person):
    out = tmp_path / "out"
    with RunLock(str(out), "preprocessing run"):
        res = preprocess("--img_dir", person, "--save_dir", str(out))
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert f"pid {os.getpid()}" in res.stderr and "is in use by another preprocessing run" in res.stderr
    # The lock dies with its holder: a later run goes through.
    res = preprocess("--img_dir", os.path.join(person, "person_a"), "--save_dir", str(out))
    assert res.returncode == 0, res.stderr


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_kill_9_of_a_parallel_run_leaves_no_worker_behind(tmp_path, person):
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    for name in ("p1", "p2", "p3", "p4"):
        shutil.copytree(os.path.join(person, "person_a"), img_dir / name)
    proc = subprocess.Popen([sys.executable, SCRIPT, "--img_dir", str(img_dir), "--save_dir", str(tmp_path / "out"),
                             "--num_workers", "2", *FAST], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 180
        out = tmp_path / "out"
        while time.time() < deadline and proc.poll() is None and not list(out.glob("*.partial")):
            time.sleep(0.3)  # a worker has started on a subject: it is past its start-up
        kids = children_of(proc.pid)
        assert len(kids) >= 2 and proc.poll() is None, "the workers never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if alive(k)], "worker processes outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
    _ = np


def test_nan_labels_are_named_as_nan(tmp_path):
    from HeadNeRF.data.layout import DataFormatError, validate_file
    from HeadNeRF.preprocess.readers import InputError, read_labels_csv

    csv = tmp_path / "labels.csv"
    csv.write_text("file,gaze_pitch,gaze_yaw\nimg0.png,nan,0.1\n")
    with pytest.raises(InputError, match=r"labels.csv:2: angles must be finite numbers \(radians\), got nan,0.1"):
        read_labels_csv(str(csv))
    csv.write_text("img0.png,0.1\n")
    with pytest.raises(InputError, match="expected 2 or 4 angles"):
        read_labels_csv(str(csv))
    # A processed file with a NaN gaze: the message names NaN and the row, not a finite "range".
    src = tmp_path / "synthetic"
    from HeadNeRF.data.synthetic.writer import generate_dataset

    generate_dataset(str(src), num_subjects=1, num_cameras=1, num_frames=3, image_size=32, seed=0, progress=False,
                     preview=False, supersample=1)
    path = src / "subject0000.h5"
    with h5py.File(path, "r+") as f:
        gaze = f["face_gaze"][:]
        gaze[1, 0] = np.nan
        f["face_gaze"][...] = gaze
    with h5py.File(path, "r") as f, pytest.raises(DataFormatError, match=r"face_gaze.*NaN/inf values, first in row 1"):
        validate_file(f)


def test_left_by_a_dead_writer_keeps_live_writers_temporaries():
    from HeadNeRF.run_lock import left_by_a_dead_writer, writer_prefix

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert left_by_a_dead_writer(f".tmp_{int(dead.stdout)}_x.pt", ".tmp_")
    assert not left_by_a_dead_writer(f".tmp_{os.getppid()}_x.pt", ".tmp_")  # a live process (our parent)
    assert left_by_a_dead_writer(writer_prefix(".tmp_") + "x.pt", ".tmp_")  # our own leftover
    assert left_by_a_dead_writer(".tmp_k3j2.pt", ".tmp_")  # the older naming, without a pid
    assert not left_by_a_dead_writer("merged.png", ".tmp_")
