"""Input -> target pairs of the GazeNeRF protocol, per test subject.

A pair names two rows of one subject's processed file (``subjectXXXX.h5``): the **input**
that is fitted, and the **target** whose gaze and camera (head pose) the fit is rendered at
and whose image it is scored against. Pairs come from a pairs file, or are drawn
deterministically from a seed:

* ``inputs_per_subject`` distinct input rows are drawn (without replacement) from the
  subject's valid rows with ``numpy.random.default_rng([seed, subject])``; 0 means one input
  per pair, GazeNeRF's layout (100 inputs, one fixed target each);
* the pairs are spread over the inputs round-robin; each input's targets are drawn without
  replacement from the valid rows of **another frame** (another gaze; with ``same_camera``
  also the input's camera).

So the same seed gives the same pairs, whatever else the run does. Pairs file format: one
pair per line, ``subject input_row target_row`` (whitespace or commas; ``#`` starts a
comment); rows are row indices of the subject's HDF5 file (0-based, invalid rows refused).
"""

import dataclasses
import hashlib
import json
import os

import h5py
import numpy as np

from ..atomic_io import atomic_write_text
from ..data.layout import Split, subject_file_name

__all__ = [
    "Pair",
    "PairsError",
    "SubjectRows",
    "eval_subjects",
    "generate_pairs",
    "load_pairs_file",
    "read_subject_rows",
    "write_pairs_file",
]


class PairsError(ValueError):
    """Pairs cannot be made or read (missing rows, a subject without valid rows). One line."""


@dataclasses.dataclass(frozen=True)
class Pair:
    index: int  # position in the run's pair list (the key of per_pair.jsonl)
    subject: int
    input_row: int
    target_row: int

    @property
    def key(self) -> str:
        return f"{self.index}:{self.subject}:{self.input_row}:{self.target_row}"


@dataclasses.dataclass
class SubjectRows:
    """The per-row index arrays of one subject file (no images)."""

    subject: int
    path: str
    source: str  # file attr: 'synthetic' | 'xgaze' | 'photo' | 'gazenerf'
    valid: np.ndarray  # (N,) bool: valid_mask
    gaze_valid: np.ndarray  # (N,) bool: the row has a gaze label (optional key `gaze_valid`; absent = all True)
    frames: np.ndarray  # (N,) int
    cams: np.ndarray  # (N,) int
    gaze: np.ndarray  # (N, 2) float64 label (meaningless where not gaze_valid)
    head_pose: np.ndarray  # (N, 2) float64

    @property
    def valid_rows(self) -> np.ndarray:
        return np.flatnonzero(self.valid)


def eval_subjects(dataset_dir: str, subjects: list) -> list[int]:
    """The subjects to evaluate: ``subjects`` or split.json's test subjects."""
    if subjects:
        return [int(s) for s in subjects]
    split = Split.load(dataset_dir)
    if not split.test_subjects:
        raise PairsError(f"{dataset_dir}/split.json: no test_subjects; list the subjects in the config's `subjects`")
    return [int(s) for s in split.test_subjects]


def read_subject_rows(dataset_dir: str, subject: int) -> SubjectRows:
    """Read one subject's row index. Raises PairsError when the file is missing or has no valid row."""
    path = os.path.join(dataset_dir, subject_file_name(subject))
    if not os.path.isfile(path):
        raise PairsError(f"{path}: subject {subject} has no file in {dataset_dir}")
    with h5py.File(path, "r") as f:
        valid = np.asarray(f["valid_mask"][:], dtype=bool)
        n = len(valid)
        gaze_valid = np.asarray(f["gaze_valid"][:], dtype=bool) if "gaze_valid" in f else np.ones(n, dtype=bool)
        src = f.attrs.get("source", "unknown")
        rows = SubjectRows(
            subject=int(subject), path=path, source=src.decode() if isinstance(src, bytes) else str(src),
            valid=valid, gaze_valid=gaze_valid & valid,
            frames=np.asarray(f["frame_index"][:], dtype=np.int64), cams=np.asarray(f["cam_index"][:], dtype=np.int64),
            gaze=np.asarray(f["face_gaze"][:], dtype=np.float64), head_pose=np.asarray(f["face_head_pose"][:], dtype=np.float64))
    if not valid.any():
        raise PairsError(f"{path}: subject {subject} has no valid rows (valid_mask is False in all {n} rows)")
    return rows


def _targets_for(rows: SubjectRows, input_row: int, same_camera: bool) -> np.ndarray:
    cand = rows.valid & (rows.frames != rows.frames[input_row])
    if same_camera:
        cand &= rows.cams == rows.cams[input_row]
    return np.flatnonzero(cand)


def generate_pairs(subject_rows: list[SubjectRows], pairs_per_subject: int, inputs_per_subject: int, seed: int,
                   same_camera: bool = False) -> list[Pair]:
    """Deterministic pairs (see the module docstring). Raises PairsError when a subject cannot give any pair."""
    pairs: list[Pair] = []
    for rows in subject_rows:
        rng = np.random.default_rng([int(seed), int(rows.subject)])
        valid = rows.valid_rows
        # inputs that have at least one target
        usable = np.array([r for r in valid if len(_targets_for(rows, int(r), same_camera))], dtype=np.int64)
        if not len(usable):
            what = "another frame of the same camera" if same_camera else "another frame"
            raise PairsError(f"{rows.path}: subject {rows.subject} has no valid input row with a target in {what}")
        n_inputs = inputs_per_subject or pairs_per_subject
        inputs = rng.choice(usable, size=min(n_inputs, len(usable)), replace=False)
        per_input = [pairs_per_subject // len(inputs) + (i < pairs_per_subject % len(inputs)) for i in range(len(inputs))]
        for inp, count in zip(inputs, per_input):
            if count == 0:
                continue
            cand = _targets_for(rows, int(inp), same_camera)
            for tgt in rng.choice(cand, size=min(count, len(cand)), replace=False):
                pairs.append(Pair(len(pairs), rows.subject, int(inp), int(tgt)))
    return pairs


def load_pairs_file(path: str, subject_rows: dict[int, SubjectRows]) -> list[Pair]:
    """Read a pairs file and check every row exists and is valid. Raises PairsError (one line)."""
    if not os.path.isfile(path):
        raise PairsError(f"{path}: pairs file not found")
    pairs = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.split("#", 1)[0].replace(",", " ").split()
            if not text:
                continue
            try:
                subject, inp, tgt = (int(x) for x in text)
            except ValueError:
                raise PairsError(f"{path}:{lineno}: expected 'subject input_row target_row' (3 integers), "
                                 f"got {line.strip()!r}") from None
            if subject not in subject_rows:
                raise PairsError(f"{path}:{lineno}: subject {subject} is not evaluated (subjects: {sorted(subject_rows)})")
            rows = subject_rows[subject]
            for name, r in (("input_row", inp), ("target_row", tgt)):
                if not 0 <= r < len(rows.valid):
                    raise PairsError(f"{path}:{lineno}: {name} {r} does not exist in {rows.path} ({len(rows.valid)} rows)")
                if not rows.valid[r]:
                    raise PairsError(f"{path}:{lineno}: {name} {r} of {rows.path} is not a valid row (valid_mask False)")
            pairs.append(Pair(len(pairs), subject, inp, tgt))
    if not pairs:
        raise PairsError(f"{path}: no pairs in the file")
    return pairs


def write_pairs_file(path: str, pairs: list[Pair], header: str = "") -> None:
    """Write pairs in the pairs-file format (atomically)."""
    text = "".join(f"# {h}\n" for h in header.splitlines()) if header else ""
    text += "# subject input_row target_row\n" + "".join(f"{p.subject} {p.input_row} {p.target_row}\n" for p in pairs)
    atomic_write_text(path, text)


def pairs_digest(pairs: list[Pair]) -> str:
    """A short stable fingerprint of a pair list (part of the run key)."""
    return hashlib.sha256(json.dumps([[p.subject, p.input_row, p.target_row] for p in pairs]).encode()).hexdigest()[:16]
