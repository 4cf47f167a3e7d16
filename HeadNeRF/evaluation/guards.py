"""Guards that keep an evaluation honest: no test subject in training, no mixed results, one writer.

* :func:`check_training_subjects`: the NeRF and the estimator checkpoints say which subjects of
  which dataset they were trained on (the NeRF: its config's ``data.subjects``, else the
  ``train_subjects`` of its dataset's ``split.json``; the estimator: the ``train_subjects`` key of
  its checkpoint's ``estimator`` entry, with that entry's ``dataset_dir``). A labelled evaluated
  subject that either model trained on is refused: its "held-out" numbers would be training
  numbers. Subjects are compared by **content** (:func:`subject_fingerprint`: the first valid
  row's image and latent code), not by id, because ids are per dataset (subject 3 of the
  estimator's own synthetic set is another person than subject 3 of the NeRF's). A model whose
  training subjects cannot be found (an older estimator without ``train_subjects``, a moved
  dataset) is "unknown": a warning, not a refusal.
* :func:`code_version` and :func:`dataset_fingerprint`: part of the run key, so that a resumed
  run never appends records computed by other code or from other data to a results dir (paths
  alone would not notice a regenerated dataset or an edited module).
* :class:`ResultsLock`: an exclusive ``flock`` on ``results_dir/.lock`` held for the whole run;
  a second evaluation into the same dir refuses in one line naming the running process
  (without it both would compute every pair and append it twice).
"""

import hashlib
import os

import h5py
import numpy as np

from ..checkpoint import run_dir_of
from ..data.layout import Split, subject_file_name
from ..run_lock import RunLock, RunLockError
from .base import EvaluationError

__all__ = ["ResultsLock", "check_training_subjects", "code_version", "dataset_fingerprint", "subject_fingerprint",
           "training_subjects_of_estimator", "training_subjects_of_nerf"]

# the per-row keys whose content a record depends on (images, masks, labels, cameras, codes)
_ROW_KEYS = ("face_patch", "mask", "eye_mask", "face_gaze", "face_head_pose", "cam_R_w2c", "cam_t_w2c", "cam_K",
             "latent_code", "valid_mask", "gaze_valid", "frame_index", "cam_index")


# ---------------------------------------------------------------------------------- who trained on what

def subject_fingerprint(path: str) -> str | None:
    """A content fingerprint of one subject file: its first valid row's image and latent code (None if unreadable).

    Two files of the same person rendered/processed the same way share it; ids and paths play no part.
    """
    try:
        with h5py.File(path, "r") as f:
            valid = np.flatnonzero(np.asarray(f["valid_mask"][:], dtype=bool))
            if not len(valid):
                return None
            r = int(valid[0])
            h = hashlib.sha256()
            h.update(np.ascontiguousarray(f["face_patch"][r]).tobytes())
            h.update(np.ascontiguousarray(f["latent_code"][r]).astype(np.float32).tobytes())
            return h.hexdigest()
    except (OSError, KeyError, ValueError):
        return None


def _resolve_dir(path: str, run_file: str) -> str | None:
    """A dataset dir recorded in a checkpoint: as written (relative to the cwd), else relative to the
    repository the run lives in (``<repo>/runs/<run>/checkpoints/last.pt`` -> ``<repo>``)."""
    if not path:
        return None
    if os.path.isdir(path):
        return path
    if not os.path.isabs(path):
        run_dir = run_dir_of(run_file)
        for base in (os.path.dirname(os.path.dirname(run_dir)), os.path.dirname(run_dir)):
            cand = os.path.join(base, path)
            if os.path.isdir(cand):
                return cand
    return None


def training_subjects_of_nerf(state: dict, checkpoint_file: str) -> tuple[str | None, list | None]:
    """(dataset dir or None, subject ids or None) the NeRF checkpoint was trained on."""
    data = (state.get("config") or {}).get("data") or {}
    d = _resolve_dir(str(data.get("dataset_dir", "")), checkpoint_file)
    subjects = [int(s) for s in data.get("subjects") or []]
    if not subjects and d is not None:
        try:
            subjects = [int(s) for s in Split.load(d).train_subjects]
        except Exception:  # noqa: BLE001 - no readable split.json: unknown
            return d, None
    return d, (subjects or None)


def training_subjects_of_estimator(state: dict, checkpoint_file: str) -> tuple[str | None, list | None]:
    """(dataset dir or None, subject ids or None) of an estimator checkpoint (``estimator.train_subjects``)."""
    meta = state.get("estimator") or {}
    subjects = meta.get("train_subjects")
    d = _resolve_dir(str(meta.get("dataset_dir", "")), checkpoint_file)
    return d, ([int(s) for s in subjects] if subjects is not None else None)


def check_training_subjects(what: str, checkpoint_file: str, train_dir: str | None, train_subjects: list | None,
                            eval_dir: str, labelled_subjects: list) -> str:
    """Refuse a model trained on a labelled evaluated subject; return a one-line note for the report.

    Raises:
        EvaluationError: one line naming the model, the subject(s) and where they were trained.
    """
    if train_subjects is None or train_dir is None:
        why = "records no training subjects" if train_subjects is None else "names a training dataset that is not found"
        return (f"unknown: the {what} checkpoint {checkpoint_file} {why}; cannot check that it never saw the "
                f"evaluated subjects {labelled_subjects}")
    eval_prints = {s: subject_fingerprint(os.path.join(eval_dir, subject_file_name(s))) for s in labelled_subjects}
    train_prints = {}
    same_dir = os.path.realpath(train_dir) == os.path.realpath(eval_dir)
    for s in train_subjects:
        p = subject_fingerprint(os.path.join(train_dir, subject_file_name(s)))
        if p is not None:
            train_prints[p] = s
    seen = []
    for s, p in eval_prints.items():
        if (same_dir and s in train_subjects) or (p is not None and p in train_prints):
            seen.append((s, train_prints.get(p, s)))
    if seen:
        names = ", ".join(f"{s}" + (f" (its subject {t})" if t != s else "") for s, t in seen)
        raise EvaluationError(f"the {what} {checkpoint_file} was trained on evaluated subject(s) {names} of {train_dir}; "
                            "evaluate on subjects it never saw (config `subjects`) or retrain it without them")
    return (f"checked: the {what} trained on subjects {train_subjects} of {train_dir}, none of them is an evaluated "
            f"labelled subject (compared by content)")


# ---------------------------------------------------------------------------------- what records depend on

def code_version() -> str:
    """sha256 over the ``HeadNeRF`` package's Python sources (paths and contents, sorted): the code that computes
    every record. Any edit of the package makes a results dir of an older version refuse to resume."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        files += [os.path.join(d, n) for n in names if n.endswith(".py")]
    for path in sorted(files):
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def dataset_fingerprint(dataset_dir: str, rows_by_subject: dict) -> str:
    """sha256 of the content of the rows an evaluation reads: every per-row key of ``_ROW_KEYS`` (those present)
    at the given rows of each subject file, plus the files' ``source`` attribute and code layout.

    ``rows_by_subject``: {subject: iterable of row indices}. Reads only those rows (an ETH-XGaze subject file
    is gigabytes; the pairs' rows are a few hundred megabytes at most).
    """
    h = hashlib.sha256()
    for s in sorted(rows_by_subject):
        rows = sorted({int(r) for r in rows_by_subject[s]})
        with h5py.File(os.path.join(dataset_dir, subject_file_name(s)), "r") as f:
            h.update(f"subject {s} rows {rows} source {f.attrs.get('source', '')!s}".encode())
            h.update(str(f["latent_code"].attrs.get("code_slices", "")).encode())
            for k in _ROW_KEYS:
                if k in f:
                    h.update(k.encode())
                    for r in rows:
                        h.update(np.ascontiguousarray(f[k][r]).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ lock

class ResultsLock(RunLock):
    """An exclusive lock on ``results_dir/.lock`` (``with ResultsLock(dir): ...``): the package's
    :class:`~HeadNeRF.run_lock.RunLock`, refusing with this package's one-line error."""

    def __init__(self, results_dir: str):
        super().__init__(results_dir, "evaluation")

    def __enter__(self):
        try:
            return self.acquire()
        except RunLockError as exc:
            raise EvaluationError(str(exc)) from None
