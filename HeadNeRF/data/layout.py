"""The processed-HDF5 contract shared by preprocessing, synthetic generation, training and evaluation.

One file per subject, ``<dataset_dir>/subject<ID:04d>.h5``, plus ``<dataset_dir>/split.json``.
Every key of :data:`KEYS` must be present, whatever produced the file (our synthetic generator,
``DataProcess/Gen_mask_lm_3DMM.py`` on ETH-XGaze, GazeNeRF-format files or photos); the keys of
:data:`OPTIONAL_KEYS` (``gaze_valid``, ``invalid_reason``) may be present and are checked when they are. ``docs/data_format.md``
is the human-readable version of :data:`KEYS`; keep the two in sync.

N is the number of rows (images) in the file, S the square image size, D the latent-code
length. Images are **RGB**. Pixel coordinates follow ``HeadNeRF.geometry.cameras``
(pixel centres at +0.5). Angles are radians.
"""

import dataclasses
import json
import os

import numpy as np

from ..atomic_io import atomic_write_text

LAYOUT_VERSION = 1
SPLIT_FILE = "split.json"

# Latent-code blocks, in order, as stored in the ``latent_code`` attr ``code_slices``.
CODE_BLOCKS = ("identity", "expression", "albedo", "illumination")


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """What one HDF5 dataset must look like. ``shape`` uses "N", "S", "D" or ints."""

    shape: tuple
    dtypes: tuple  # allowed numpy dtype kinds/names, e.g. ("uint8",) or ("float32", "float64")
    description: str
    value_range: tuple | None = None  # inclusive (lo, hi) checked on a sample of rows


KEYS: dict[str, KeySpec] = {
    "face_patch": KeySpec(("N", "S", "S", 3), ("uint8",), "RGB image, head centred (normalised camera view)"),
    "mask": KeySpec(("N", "S", "S"), ("uint8",), "head mask, 0 or 255 (values >= 128 count as inside)"),
    "eye_mask": KeySpec(("N", "S", "S"), ("uint8",), "union of the two periocular eye masks, 0/255"),
    "left_eye_mask": KeySpec(("N", "S", "S"), ("uint8",), "periocular mask of the subject's left eye (image right), 0/255"),
    "right_eye_mask": KeySpec(("N", "S", "S"), ("uint8",), "periocular mask of the subject's right eye (image left), 0/255"),
    "lm2d": KeySpec(("N", 68, 2), ("float32", "float64"), "68 iBUG landmarks (x=col, y=row) in pixels"),
    "iris2d": KeySpec(("N", 2, 2), ("float32", "float64"), "iris centres in pixels: [subject's right, subject's left]"),
    "face_gaze": KeySpec(("N", 2), ("float32", "float64"), "gaze (pitch, yaw) in the normalised camera frame", (-np.pi, np.pi)),
    "face_head_pose": KeySpec(("N", 2), ("float32", "float64"), "head pose (pitch, yaw) in the normalised camera", (-np.pi, np.pi)),
    "cam_R_w2c": KeySpec(("N", 3, 3), ("float32", "float64"), "world(head frame)→camera rotation", (-1.0001, 1.0001)),
    "cam_t_w2c": KeySpec(("N", 3), ("float32", "float64"), "world(head frame)→camera translation (head units)"),
    "cam_K": KeySpec(("N", 3, 3), ("float32", "float64"), "intrinsics in pixels of face_patch"),
    "latent_code": KeySpec(("N", "D"), ("float32", "float64"), "latent-code initialisation: identity|expression|albedo|illumination"),
    "subject_index": KeySpec(("N",), ("int32", "int64"), "subject id"),
    "cam_index": KeySpec(("N",), ("int32", "int64"), "camera id (0-based)", (0, 255)),
    "frame_index": KeySpec(("N",), ("int32", "int64"), "frame id: rows with the same frame share gaze and head state"),
    "valid_mask": KeySpec(("N",), ("bool",), "False rows are skipped by every reader"),
}

# Optional per-row keys: readers use them when present and assume the default when absent.
#   gaze_valid (N,) bool: False for rows without a gaze label (ETH-XGaze test files, photos without
#       labels.csv); their face_gaze holds 0. Absent = every row has a gaze label.
#   invalid_reason (N,) variable-length utf-8 str: why a row has valid_mask False ('' for valid rows).
OPTIONAL_KEYS: dict[str, KeySpec] = {
    "gaze_valid": KeySpec(("N",), ("bool",), "True where face_gaze is a real label (absent = all True)"),
    "invalid_reason": KeySpec(("N",), ("object",), "why valid_mask is False ('' for valid rows), utf-8 strings"),
}

SOURCES = ("synthetic", "xgaze", "gazenerf", "photo")

# File-level attributes.
ATTRS = {
    "layout_version": "int, equals LAYOUT_VERSION",
    "source": "'synthetic' | 'xgaze' | 'gazenerf' | 'photo'",
    "subject_id": "int",
    "image_size": "int S",
}
# ``latent_code`` carries attr ``code_slices``: JSON {block: [start, stop]} for CODE_BLOCKS.


class DataFormatError(ValueError):
    """A processed HDF5 file or split file does not follow the contract. The message is one line."""


def subject_file_name(subject_id: int) -> str:
    return f"subject{int(subject_id):04d}.h5"


def _fail(path, key, expected, found) -> DataFormatError:
    return DataFormatError(f"{path}: key '{key}': expected {expected}, found {found}")


def code_slices(h5file, path="<file>") -> dict[str, tuple[int, int]]:
    """Parse the ``code_slices`` attr of ``latent_code`` into {block: (start, stop)}."""
    raw = h5file["latent_code"].attrs.get("code_slices")
    if raw is None:
        raise _fail(path, "latent_code.attrs['code_slices']", "JSON {block: [start, stop]}", "nothing")
    try:
        slices = {k: (int(v[0]), int(v[1])) for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, IndexError) as exc:
        raise _fail(path, "latent_code.attrs['code_slices']", "JSON {block: [start, stop]}", repr(raw)) from exc
    missing = [b for b in CODE_BLOCKS if b not in slices]
    if missing:
        raise _fail(path, "latent_code.attrs['code_slices']", f"blocks {list(CODE_BLOCKS)}", f"missing {missing}")
    return slices


def h5py_string_kind(ds):
    """'vlen' when an h5py dataset holds variable-length strings, 'fixed' for fixed-length bytes, else None."""
    import h5py

    if h5py.check_string_dtype(ds.dtype) is not None:
        return "vlen"
    return "fixed" if ds.dtype.kind == "S" else None


def read_row(path: str, row: int, keys: tuple[str, ...] = ()) -> dict:
    """One row of a subject file, the one way to read a row outside ``GazeDataset``.

    Args:
        path: a subject file (``subject<ID:04d>.h5``).
        row: the row index (0 <= row < N).
        keys: per-row keys of :data:`KEYS` to read at ``row`` (e.g. ``("latent_code", "cam_R_w2c")``);
            empty reads only the file's attributes.
    Returns:
        {key: float32 array of that row, "source": the file's ``source`` attr (str, "" when absent),
        "supersample": its ``supersample`` attr (int, 1 when absent), "image_size": S}.
    """
    import h5py  # lazy: the layout's names are imported by light modules (configs, splits) too

    with h5py.File(path, "r") as f:
        out = {k: np.asarray(f[k][row], dtype=np.float32) for k in keys}
        out["source"] = str(f.attrs.get("source", ""))
        out["supersample"] = int(f.attrs.get("supersample", 1))
        out["image_size"] = int(f["face_patch"].shape[1])
    return out


def read_gaze_valid(h5file) -> np.ndarray:
    """(N,) bool: ``gaze_valid`` when the file has it, else all True."""
    n = h5file["valid_mask"].shape[0]
    if "gaze_valid" in h5file:
        return np.asarray(h5file["gaze_valid"][:], dtype=bool)
    return np.ones(n, dtype=bool)


def read_invalid_reason(h5file) -> list[str]:
    """N strings: ``invalid_reason`` when the file has it, else '' for valid rows and 'invalid' for the others."""
    if "invalid_reason" in h5file:
        return [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in h5file["invalid_reason"][:]]
    return ["" if v else "invalid" for v in np.asarray(h5file["valid_mask"][:], dtype=bool)]


def validate_file(h5file, path: str | None = None) -> dict:
    """Check an open ``h5py.File`` against :data:`KEYS`. Returns {"N", "S", "D", "code_slices"}.

    Raises:
        DataFormatError: naming the file, the key, what was expected and what was found.
    """
    path = path or getattr(h5file, "filename", "<file>")
    dims: dict[str, int] = {}
    for key, spec in KEYS.items():
        if key not in h5file:
            raise _fail(path, key, f"a dataset of shape {spec.shape} ({spec.description})", "no such key")
        ds = h5file[key]
        if not hasattr(ds, "shape"):
            raise _fail(path, key, "a dataset", "a group")
        if len(ds.shape) != len(spec.shape):
            raise _fail(path, key, f"{len(spec.shape)}-D array of shape {spec.shape}", f"{len(ds.shape)}-D shape {ds.shape}")
        for want, got in zip(spec.shape, ds.shape):
            if isinstance(want, int):
                if want != got:
                    raise _fail(path, key, f"shape {spec.shape}", f"shape {ds.shape}")
            elif dims.setdefault(want, got) != got:
                raise _fail(path, key, f"{want}={dims[want]} (as in earlier keys), shape {spec.shape}", f"shape {ds.shape}")
        if ds.dtype.name not in spec.dtypes:
            raise _fail(path, key, f"dtype {' or '.join(spec.dtypes)}", f"dtype {ds.dtype.name}")
        if ds.shape[0] > 0:
            try:  # touch the first and last rows: a truncated file fails here, not deep inside a DataLoader
                ds[0]
                ds[ds.shape[0] - 1]
            except (OSError, ValueError, KeyError) as exc:
                raise _fail(path, key, "readable data", f"a read error ({str(exc).splitlines()[0]}); the file is probably truncated") from None
        if spec.value_range is not None and ds.shape[0] > 0:
            sample = np.asarray(ds[: min(ds.shape[0], 64)])
            lo, hi = spec.value_range
            finite = np.isfinite(sample)
            if not np.all(finite):
                rows = np.flatnonzero(~finite.reshape(finite.shape[0], -1).all(1))
                raise _fail(path, key, f"finite values in [{lo:.4g}, {hi:.4g}]",
                            f"{int((~finite).sum())} NaN/inf values, first in row {int(rows[0])}")
            if sample.min() < lo or sample.max() > hi:
                raise _fail(path, key, f"finite values in [{lo:.4g}, {hi:.4g}]",
                            f"range [{sample.min():.4g}, {sample.max():.4g}]")
    for key, spec in OPTIONAL_KEYS.items():
        if key not in h5file:
            continue
        ds = h5file[key]
        if not hasattr(ds, "shape") or tuple(ds.shape) != (dims["N"],):
            raise _fail(path, key, f"a dataset of shape (N,) = ({dims['N']},) ({spec.description})",
                        f"shape {getattr(ds, 'shape', 'a group')}")
        if key == "gaze_valid" and ds.dtype.name != "bool":
            raise _fail(path, key, "dtype bool", f"dtype {ds.dtype.name}")
        if key == "invalid_reason" and h5py_string_kind(ds) is None:
            raise _fail(path, key, "variable-length utf-8 strings", f"dtype {ds.dtype}")
    if dims.get("S", 0) <= 0:
        raise _fail(path, "face_patch", "a non-empty S×S image", f"S={dims.get('S')}")
    slices = code_slices(h5file, path)
    stop = max(s[1] for s in slices.values())
    if stop > dims["D"]:
        raise _fail(path, "latent_code.attrs['code_slices']", f"slices within D={dims['D']}", f"a slice ending at {stop}")
    return {"N": dims["N"], "S": dims["S"], "D": dims["D"], "code_slices": slices}


@dataclasses.dataclass
class Split:
    """Which data is for training and which is held out (``split.json``).

    * ``train_subjects`` / ``test_subjects``: subject ids (test subjects are never trained on).
    * ``heldout_cameras`` / ``heldout_frames``: for train subjects, rows whose camera or frame is
      listed here form the validation set; the rest is training data.
    """

    train_subjects: list
    test_subjects: list
    heldout_cameras: list
    heldout_frames: list

    @classmethod
    def load(cls, dataset_dir: str) -> "Split":
        path = os.path.join(dataset_dir, SPLIT_FILE)
        if not os.path.isfile(path):
            raise DataFormatError(f"{path}: no split file; every dataset directory needs {SPLIT_FILE} "
                                  "(make_synthetic_dataset.py and Gen_mask_lm_3DMM.py write one)")
        try:
            with open(path) as f:
                raw = json.load(f)
        except ValueError as exc:
            raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(fields))
        missing = [k for k in fields if k not in raw]
        if unknown or missing:
            raise DataFormatError(f"{path}: expected keys {fields}, missing {missing}, unknown {unknown}")
        if not all(isinstance(raw[k], list) and all(isinstance(v, int) for v in raw[k]) for k in fields):
            raise DataFormatError(f"{path}: every entry must be a list of integers")
        return cls(**{k: raw[k] for k in fields})

    def save(self, dataset_dir: str) -> None:
        """Write ``dataset_dir/split.json`` atomically."""
        atomic_write_text(os.path.join(dataset_dir, SPLIT_FILE), json.dumps(dataclasses.asdict(self), indent=1))
