"""``split.json`` for a preprocessed folder, from the subject files that are in it.

* With ETH-XGaze's ``train_test_split.json`` (``{"train": [...], "test": [...], "test_specific": [...]}``,
  or GazeNeRF's ``"val"``/``"val_gaze"`` lists; entries like ``"subject0003.h5"``): subjects listed
  under ``train`` are training subjects, subjects in any other list are test subjects; subjects it
  does not list are training subjects when they have gaze labels (one note line).
* Without it: subjects without any gaze label (ETH-XGaze test files, photos without labels.csv) are
  test subjects; if every subject is labelled, the last one (≤ 4 subjects) or the last ~20% are
  (as ``make_synthetic_dataset.py``). A single labelled subject is a training subject.
* Held out for validation (training subjects only): the largest camera index when there are ≥ 3
  cameras, and the last ~20% of the frame indices (at least one when there are ≥ 2 frames).
The split is rebuilt from all finished ``subjectXXXX.h5`` files at the end of every run, so runs
over different --sb/--se ranges into the same folder end with one consistent split.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re

import h5py
import numpy as np

from HeadNeRF.data import layout

from .readers import InputError

__all__ = ["build_split", "read_official_split"]


def read_official_split(path: str) -> dict[int, str]:
    """{subject number: list name} from a train_test_split.json. Raises InputError (one line)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the split file ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise InputError(f"{path}: expected {{\"train\": [\"subject0000.h5\", ...], \"test\": [...]}}")
    out = {}
    for name, entries in raw.items():
        for e in entries:
            nums = re.findall(r"\d+", str(e))
            if nums:
                out.setdefault(int(nums[-1]), name)
    return out


def _subject_info(path: str) -> dict | None:
    try:
        with h5py.File(path, "r") as f:
            valid = np.asarray(f["valid_mask"][:], bool)
            gv = layout.read_gaze_valid(f)
            return {"id": int(f.attrs["subject_id"]), "labelled": bool((valid & gv).any()),
                    "cams": set(np.asarray(f["cam_index"][:])[valid].tolist()),
                    "frames": set(np.asarray(f["frame_index"][:])[valid].tolist())}
    except (OSError, KeyError, ValueError):
        return None


def build_split(save_dir: str, official: dict[int, str] | None = None, log=print) -> layout.Split | None:
    """Write ``save_dir/split.json`` for the subject files there; returns it (None when there are none)."""
    infos = []
    for path in sorted(glob.glob(os.path.join(save_dir, "subject*.h5"))):
        info = _subject_info(path)
        if info is None:
            log(f"error: {path} is unreadable (truncated?) and is left out of split.json; "
                "re-run the command to process it again")
        else:
            infos.append(info)
    if not infos:
        return None
    train, test = [], []
    if official:
        for info in infos:
            which = official.get(info["id"])
            if which is None:
                log(f"note: subject {info['id']} is not in the split file; "
                    f"{'training' if info['labelled'] else 'test'} subject")
                (train if info["labelled"] else test).append(info["id"])
            else:
                (train if which == "train" else test).append(info["id"])
    else:
        labelled = [i["id"] for i in infos if i["labelled"]]
        test = [i["id"] for i in infos if not i["labelled"]]
        if not test and len(labelled) >= 2:
            n_test = 1 if len(labelled) <= 4 else max(1, round(0.2 * len(labelled)))
            labelled, test = labelled[:-n_test], labelled[-n_test:]
        train = labelled
    if not train:
        log("note: no subject has gaze labels: every subject is a test subject (fitting and evaluation only)")
    tr = [i for i in infos if i["id"] in train]
    all_cams = sorted(set().union(*[i["cams"] for i in tr])) if tr else []
    all_frames = sorted(set().union(*[i["frames"] for i in tr])) if tr else []
    heldout_cams = [all_cams[-1]] if len(all_cams) >= 3 else []
    n_frames = 0 if len(all_frames) < 2 else max(1, math.floor(0.2 * len(all_frames)))
    split = layout.Split(train_subjects=sorted(train), test_subjects=sorted(test),
                         heldout_cameras=[int(c) for c in heldout_cams],
                         heldout_frames=[int(f) for f in all_frames[len(all_frames) - n_frames:]])
    split.save(save_dir)
    return split
