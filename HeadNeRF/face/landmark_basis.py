"""A linear (in tanh space) model of the synthetic head's 68 landmarks, for fast shape fitting.

``head_model.landmarks_3d`` solves a fixed-point problem per point (~0.1 s per call), too slow for
Jacobians inside the per-row fit. Most identity/expression coefficients enter the geometry as
``base + amplitude * tanh(c)``, so the landmarks are close to linear in ``u = tanh(c)``:

    landmarks_3d(c) ≈ L0 + sum_k B_k u_k,      k over identity ⊕ expression (22 coefficients)

with ``B_k`` from central differences at u_k = ±0.5. The basis is computed once per process on
first use (≈ 45 evaluations) and cached in memory and in ``$XDG_CACHE_HOME/headnerf/`` keyed by a
hash of ``head_model.py``, ``pose.py`` and this file. ``tests/test_face.py`` checks the approximation error.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from HeadNeRF.atomic_io import atomic_write
from HeadNeRF.data.synthetic.head_model import CODE_SLICES
from HeadNeRF.data.synthetic import head_model as hm

from . import pose
from .pose import head_params

__all__ = ["landmark_basis", "landmarks_linear", "shape_dims"]

_BASIS = None


def shape_dims() -> tuple[int, int]:
    """(start, end) of identity ⊕ expression in the latent code."""

    return CODE_SLICES["identity"][0], CODE_SLICES["expression"][1]


def _cache_path() -> str:
    h = hashlib.sha1()
    for path in (hm.__file__, pose.__file__, __file__):  # the model and the code that evaluates it
        with open(path, "rb") as f:
            h.update(f.read())
    h = h.hexdigest()[:12]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "headnerf", f"landmark_basis_{h}.npz")


def _compute() -> tuple[np.ndarray, np.ndarray]:
    s0, s1 = shape_dims()
    code = np.zeros(hm.CODE_DIM, np.float64)
    L0 = hm.landmarks_3d(head_params(code))
    B = np.zeros((s1 - s0, 68, 3))
    a = np.arctanh(0.5)
    for k in range(s0, s1):
        cp, cm = code.copy(), code.copy()
        cp[k], cm[k] = a, -a
        B[k - s0] = (hm.landmarks_3d(head_params(cp)) - hm.landmarks_3d(head_params(cm))) / 1.0
    return L0, B


def landmark_basis() -> tuple[np.ndarray, np.ndarray]:
    """(L0 (68, 3), B (22, 68, 3)) float64: the linear landmark model (see module docstring)."""
    global _BASIS
    if _BASIS is None:
        path = _cache_path()
        try:
            d = np.load(path)
            _BASIS = (d["L0"], d["B"])
        except (OSError, KeyError, ValueError):
            _BASIS = _compute()
            try:
                atomic_write(path, lambda tmp: np.savez(tmp, L0=_BASIS[0], B=_BASIS[1]))
            except OSError:
                pass
    return _BASIS


def landmarks_linear(shape_code: np.ndarray) -> np.ndarray:
    """(..., 22) identity ⊕ expression coefficients -> (..., 68, 3) landmarks (linear model)."""
    L0, B = landmark_basis()
    u = np.tanh(np.asarray(shape_code, np.float64))
    return L0 + np.einsum("...k,kpc->...pc", u, B)
