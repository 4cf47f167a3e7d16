"""Writing one subject's rows in the processed-HDF5 layout (``HeadNeRF.data.layout``), atomically.

Shared by preprocessing (``HeadNeRF.preprocess``); the synthetic generator's
``writer.write_subject_file`` writes the same layout (it could call :func:`write_subject_file`).

* Every key of ``layout.KEYS`` is required; ``gaze_valid`` and ``invalid_reason``
  (``layout.OPTIONAL_KEYS``) are written when given.
* Datasets are chunked one row per chunk and gzip-compressed (random access reads one image).
* :func:`write_subject_file_atomic` and :class:`SubjectFileWriter` (which streams the images to
  disk row by row) write ``<path>.partial`` and rename it onto ``path`` when complete, so an
  interrupted run (even ``kill -9``) never leaves a half-written ``subjectXXXX.h5``.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from . import layout

__all__ = ["IMAGE_KEYS", "SubjectFileWriter", "partial_path", "write_subject_file", "write_subject_file_atomic"]

IMAGE_KEYS = ("face_patch", "mask", "eye_mask", "left_eye_mask", "right_eye_mask")


def partial_path(path: str) -> str:
    """The temporary name a subject file is written under (never matches ``subject*.h5``)."""
    return path + ".partial"


def write_subject_file(path: str, data: dict, code_slices: dict, source: str, subject_id: int,
                       extra_attrs: dict | None = None) -> None:
    """Write one subject file.

    Args:
        data: {key: (N, ...) array} for every key of ``layout.KEYS`` plus optional ``gaze_valid`` (N,) bool
            and ``invalid_reason`` (N strings).
        code_slices: {block: (start, stop)} for ``layout.CODE_BLOCKS``.
        source: one of ``layout.SOURCES``. extra_attrs: more file attributes (JSON-able scalars/strings).
    """
    if source not in layout.SOURCES:
        raise ValueError(f"source must be one of {layout.SOURCES}, got {source!r}")
    missing = [k for k in layout.KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    S = int(np.asarray(data["face_patch"]).shape[1]) if np.asarray(data["face_patch"]).ndim == 4 else 0
    with h5py.File(path, "w") as f:
        _write_into(f, data, code_slices, source, subject_id, extra_attrs, S)


def _write_into(f: h5py.File, data: dict, code_slices: dict, source: str, subject_id: int, extra_attrs, S: int):
    """Attributes and every key of ``data`` that ``f`` does not hold yet."""
    f.attrs["layout_version"] = layout.LAYOUT_VERSION
    f.attrs["source"] = source
    f.attrs["subject_id"] = int(subject_id)
    f.attrs["image_size"] = S
    for k, v in (extra_attrs or {}).items():
        f.attrs[k] = v
    for key in list(layout.KEYS) + ["gaze_valid"]:
        if key not in data or key in f:
            continue
        arr = np.ascontiguousarray(data[key])
        chunks = (1,) + arr.shape[1:] if arr.shape[0] > 0 else None
        f.create_dataset(key, data=arr, chunks=chunks, compression="gzip", compression_opts=4)
    if "invalid_reason" in data:
        reasons = [str(r) for r in data["invalid_reason"]]
        f.create_dataset("invalid_reason", data=np.array(reasons, dtype=object), dtype=h5py.string_dtype("utf-8"))
    f["latent_code"].attrs["code_slices"] = json.dumps({k: [int(a), int(b)] for k, (a, b) in code_slices.items()})


def write_subject_file_atomic(path: str, data: dict, code_slices: dict, source: str, subject_id: int,
                              extra_attrs: dict | None = None) -> None:
    """:func:`write_subject_file` to ``partial_path(path)``, then ``os.replace`` onto ``path``."""
    tmp = partial_path(path)
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        write_subject_file(tmp, data, code_slices, source, subject_id, extra_attrs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class SubjectFileWriter:
    """Streaming, atomic writer of one subject file: images go to disk row by row.

    Usage::

        with SubjectFileWriter(path) as w:
            images = w.create_images(n, S)   # {key: h5py dataset} for IMAGE_KEYS, rows assignable
            images["face_patch"][i] = rgb    # ... while processing
            w.finish(data, code_slices, source, subject_id, attrs)  # the other keys; rename onto path

    Everything is written to ``partial_path(path)``; it is renamed onto ``path`` only by
    :meth:`finish`. Leaving the ``with`` block without ``finish`` (an error, Ctrl-C) removes it;
    ``kill -9`` leaves it behind, and the next writer of the same subject replaces it.
    """

    def __init__(self, path: str):
        self.path, self.tmp, self.f = path, partial_path(path), None

    def __enter__(self):
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        self.f = h5py.File(self.tmp, "w")
        return self

    def create_images(self, n: int, size: int) -> dict:
        out = {}
        for key in IMAGE_KEYS:
            shape = (n, size, size, 3) if key == "face_patch" else (n, size, size)
            out[key] = self.f.create_dataset(key, shape=shape, dtype=np.uint8, chunks=(1,) + shape[1:] if n else None,
                                             compression="gzip", compression_opts=4,
                                             fillvalue=255 if key == "face_patch" else 0)
        return out

    def finish(self, data: dict, code_slices: dict, source: str, subject_id: int, extra_attrs: dict | None = None):
        if source not in layout.SOURCES:
            raise ValueError(f"source must be one of {layout.SOURCES}, got {source!r}")
        S = int(self.f["face_patch"].shape[1]) if "face_patch" in self.f else int(np.asarray(data["face_patch"]).shape[1])
        _write_into(self.f, data, code_slices, source, subject_id, extra_attrs, S)
        self.f.close()
        self.f = None
        os.replace(self.tmp, self.path)

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()
            self.f = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
