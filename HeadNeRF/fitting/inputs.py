"""The photo command's inputs: gaze targets, latent-code files, target embeddings and a user head mask.

Every reader turns a bad input into :class:`FittingInputError` with a one-line message (exit code 2
in ``FittingSingleImage.py``).
"""

import json
import math
import os

import h5py
import numpy as np
import torch

from ..data.codes import split_code
from ..face import load_image_rgb
from ..face.normalise import warp_for_cv2
from .model_io import ModelInfo

__all__ = ["FittingInputError", "load_code_file", "load_target_embedding", "load_user_mask", "parse_gaze_targets"]


class FittingInputError(ValueError):
    """A user input the fit cannot use (a wrong argument or file: exit code 2). One-line message."""


def parse_gaze_targets(text: str | None) -> torch.Tensor:
    """``"p,y;p,y"`` (radians, camera frame, as the labels) -> (N, 2). Empty/None -> (0, 2).
    The named target ``camera`` ("look into the lens") is (0, 0)."""
    if not text or not text.strip():
        return torch.zeros(0, 2)
    out = []
    for part in text.split(";"):
        if not part.strip():
            continue
        if part.strip().lower() == "camera":
            out.append((0.0, 0.0))
            continue
        try:
            p, y = (float(v) for v in part.split(","))
        except ValueError:
            raise FittingInputError(f"--gaze_targets: {part.strip()!r} is not 'pitch,yaw' (radians), "
                                    "e.g. \"0.2,-0.3;0,0.4\"") from None
        if not (math.isfinite(p) and math.isfinite(y)):
            raise FittingInputError(f"--gaze_targets: {part.strip()!r}: angles must be finite numbers (radians)")
        if abs(p) > 1.2 or abs(y) > 1.2:
            raise FittingInputError(f"--gaze_targets: {part.strip()!r} is outside ±1.2 rad")
        out.append((p, y))
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 2)


def code_from_object(obj, path: str) -> torch.Tensor:
    if isinstance(obj, dict):
        for key in ("code", "latent_code"):
            if key in obj:
                return torch.as_tensor(obj[key], dtype=torch.float32).reshape(-1)
        raise FittingInputError(f"{path}: no 'code' entry")
    return torch.as_tensor(np.asarray(obj), dtype=torch.float32).reshape(-1)


def load_code_file(path: str, info: ModelInfo) -> torch.Tensor:
    """A (D,) latent code in the checkpoint's layout from .npy / .pt (tensor, or a dict with 'code', e.g. latent.pt)
    / .txt / .json (numbers)."""
    if not os.path.isfile(path):
        raise FittingInputError(f"{path}: code file not found")
    try:
        if path.endswith(".npy"):
            code = code_from_object(np.load(path, allow_pickle=False), path)
        elif path.endswith((".pt", ".pth")):
            code = code_from_object(torch.load(path, map_location="cpu", weights_only=True), path)
        elif path.endswith(".json"):
            with open(path) as f:
                code = code_from_object(json.load(f), path)
        else:
            code = torch.as_tensor(np.loadtxt(path, dtype=np.float32).reshape(-1))
    except FittingInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
        raise FittingInputError(f"{path}: cannot read a latent code ({str(exc).splitlines()[0][:160]})") from None
    if code.numel() != info.code_dim:
        raise FittingInputError(f"{path}: code has {code.numel()} values, the checkpoint's model takes {info.code_dim} "
                                f"({info.code_slices})")
    if not torch.isfinite(code).all():
        raise FittingInputError(f"{path}: code has non-finite values")
    return code


def load_target_embedding(spec: str, info: ModelInfo) -> dict:
    """``--target_embedding``: a ``latent.pt`` of an earlier fit, or a dataset row ``path/subjectXXXX.h5:ROW``.

    Returns {"shape_code" (1, Ds), "appearance_code" (1, Da), "source": str}.
    """
    path, row = spec, None
    if not os.path.isfile(spec) and ":" in spec:
        path, _, r = spec.rpartition(":")
        try:
            row = int(r)
        except ValueError:
            raise FittingInputError(f"--target_embedding: {spec!r}: the row after ':' must be an integer") from None
    if not os.path.isfile(path):
        raise FittingInputError(f"--target_embedding: {path}: file not found (give a latent.pt or FILE.h5:ROW)")
    if row is not None or path.endswith((".h5", ".hdf5")):
        try:
            with h5py.File(path, "r") as f:
                n = f["latent_code"].shape[0]
                row = 0 if row is None else row
                if not 0 <= row < n:
                    raise FittingInputError(f"--target_embedding: {path} has rows 0..{n - 1}, not {row}")
                code = torch.as_tensor(np.asarray(f["latent_code"][row], dtype=np.float32))
                slices = json.loads(f["latent_code"].attrs["code_slices"])
        except FittingInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
            raise FittingInputError(f"--target_embedding: {path}: not a processed dataset file "
                                    f"({str(exc).splitlines()[0][:160]})") from None
        if {k: list(v) for k, v in slices.items()} != info.code_slices:
            raise FittingInputError(f"--target_embedding: {path}: code layout {slices} differs from the checkpoint's "
                                    f"{info.code_slices}")
        shape, app = split_code(code, info.code_slices)
        return {"shape_code": shape[None], "appearance_code": app[None], "source": f"{path}:{row}"}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line
        raise FittingInputError(f"--target_embedding: {path}: not a latent.pt ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or "shape_code" not in obj or "appearance_code" not in obj:
        raise FittingInputError(f"--target_embedding: {path}: not a latent.pt (no shape_code / appearance_code)")
    shape = torch.as_tensor(obj["shape_code"], dtype=torch.float32).reshape(1, -1)
    app = torch.as_tensor(obj["appearance_code"], dtype=torch.float32).reshape(1, -1)
    if (shape.shape[1], app.shape[1]) != tuple(info.code_dims):
        raise FittingInputError(f"--target_embedding: {path}: codes of sizes {shape.shape[1]}+{app.shape[1]}, the "
                                f"checkpoint's model takes {info.code_dims[0]}+{info.code_dims[1]}")
    return {"shape_code": shape, "appearance_code": app, "source": path}


def load_user_mask(path: str, image_shape: tuple, face, size: int) -> np.ndarray:
    """A head mask of the photo (any image; >= 128 inside) warped into the normalised crop: (S, S) uint8 0/255."""
    import cv2  # heavy optional dependency: loaded when a user mask is given

    m = load_image_rgb(path).mean(-1)  # raises ImageReadError (one line)
    if m.shape[:2] != tuple(image_shape[:2]):
        raise FittingInputError(f"--mask: {path} is {m.shape[1]}x{m.shape[0]} px, the photo "
                                f"{image_shape[1]}x{image_shape[0]} px")
    warped = cv2.warpPerspective((m >= 128).astype(np.float32), warp_for_cv2(np.asarray(face.warp, np.float64)),
                                 (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return ((warped >= 0.5) * 255).astype(np.uint8)
