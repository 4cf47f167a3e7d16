"""What a fit fits: :class:`FitTarget`, one image with its masks, camera and initial codes.

Built from a dataset row (``target_from_dataset_row``: its label gaze, its stored or a given code)
or from a normalised photo (``target_from_normalised_face``: gaze unknown, the fit estimates it).
"""

import dataclasses

import numpy as np
import torch

from ..data.codes import split_code
from .model_io import ModelInfo

__all__ = ["FitTarget", "target_from_dataset_row", "target_from_normalised_face"]


@dataclasses.dataclass
class FitTarget:
    """One image to fit, at the model's image size S (batch of 1).

    image (1,3,S,S) RGB [0,1]; head_mask, eye_mask (1,1,S,S) {0,1}; R_w2c (1,3,3), t_w2c (1,3),
    K (1,3,3) in pixels of S; shape_code (1,Ds), appearance_code (1,Da): the initial codes;
    gaze (1,2) camera-frame (pitch, yaw) (the label, or 0 when unknown: ``gaze_known=False``
    lets the fit estimate it); ``code_init`` names where the codes came from; ``warp`` (3,3) maps
    the original photo's pixels to the S-image (identity for dataset rows); ``eye_centers`` (1,2,3), when
    given, are the eyeball centres an eye_frame model renders with (else ``FitConfig.eye_centers`` decides).
    """

    image: torch.Tensor
    head_mask: torch.Tensor
    eye_mask: torch.Tensor
    R_w2c: torch.Tensor
    t_w2c: torch.Tensor
    K: torch.Tensor
    shape_code: torch.Tensor
    appearance_code: torch.Tensor
    gaze: torch.Tensor
    gaze_known: bool = True
    code_init: str = "dataset"
    warp: torch.Tensor | None = None
    name: str = "image"
    eye_centers: torch.Tensor | None = None  # (1,2,3) eyeball centres to hold fixed (a later stage of the same fit)

    def to(self, device) -> "FitTarget":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if torch.is_tensor(getattr(self, f.name))})


def target_from_dataset_row(dataset, index: int, code: torch.Tensor | None = None, code_init: str = "dataset"
                            ) -> FitTarget:
    """A FitTarget from ``GazeDataset`` item ``index`` (its label gaze; its stored code unless ``code (D,)`` is given)."""
    item = dataset[index]
    shape_code, app_code = item["shape_code"], item["appearance_code"]
    if code is not None:
        shape_code, app_code = split_code(torch.as_tensor(code, dtype=torch.float32), dataset.code_slices)
    sid, row = dataset.rows[index][:2]
    return FitTarget(image=item["image"][None], head_mask=item["head_mask"][None], eye_mask=item["eye_mask"][None],
                     R_w2c=item["R_w2c"][None], t_w2c=item["t_w2c"][None], K=item["K"][None],
                     shape_code=shape_code[None], appearance_code=app_code[None], gaze=item["gaze"][None],
                     gaze_known=True, code_init=code_init, warp=torch.eye(3),
                     name=f"subject{sid:04d}.h5:{row}")


def target_from_normalised_face(face, code, info: ModelInfo, name: str = "image", code_init: str = "face") -> FitTarget:
    """A FitTarget from a ``HeadNeRF.face.NormalisedFace`` (already at ``info.image_size``) and a (D,) code.

    The gaze is unknown (0, ``gaze_known=False``): the fit estimates it.
    """
    S = info.image_size
    patch = np.asarray(face.face_patch)
    if patch.shape[:2] != (S, S):
        raise ValueError(f"normalised face is {patch.shape[0]} px, the model needs {S} px")

    def f32(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    def mask(m):
        return (f32(m) >= 128).float()[None, None]

    code = f32(code).reshape(-1)
    shape_code, app_code = split_code(code, info.code_slices)
    return FitTarget(image=f32(patch).permute(2, 0, 1)[None] / 255.0, head_mask=mask(face.mask),
                     eye_mask=mask(face.eye_mask), R_w2c=f32(face.cam_R_w2c)[None], t_w2c=f32(face.cam_t_w2c)[None],
                     K=f32(face.cam_K)[None], shape_code=shape_code[None], appearance_code=app_code[None],
                     gaze=torch.zeros(1, 2), gaze_known=False, code_init=code_init, warp=f32(face.warp), name=name)


class TargetShapeError(ValueError):
    """A FitTarget whose tensors do not have the shapes of one image (one line naming expected and actual)."""


def check_target_shapes(target: FitTarget) -> None:
    """Raise :class:`TargetShapeError` unless ``target`` holds one S x S image with matching masks and camera."""
    S = target.image.shape[-1] if target.image.dim() == 4 else -1
    expected = {"image": (1, 3, S, S), "head_mask": (1, 1, S, S), "eye_mask": (1, 1, S, S), "R_w2c": (1, 3, 3),
                "t_w2c": (1, 3), "K": (1, 3, 3), "gaze": (1, 2),
                "shape_code": (1, target.shape_code.shape[-1]), "appearance_code": (1, target.appearance_code.shape[-1])}
    if target.eye_centers is not None:
        expected["eye_centers"] = (1, 2, 3)
    for name, shape in expected.items():
        actual = tuple(getattr(target, name).shape)
        if actual != shape or S < 1:
            want = "(1, 3, S, S)" if name == "image" else str(shape)
            raise TargetShapeError(f"fit target {target.name!r}: {name} has shape {actual}, expected {want}")
