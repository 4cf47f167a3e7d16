"""Eyeball centres of a shape code, read from the parametric head model (not learned).

``ModelConfig.eye_centers_from_head_model`` (gaze_input ``eye_frame``) places each image's eyeball centres
where the synthetic head model (``data/synthetic/head_model.py``) puts them for that image's shape code
(identity ⊕ expression). That code is the generator's exact parameter vector for synthetic data and the
head-model fit of preprocessing for ETH-XGaze files and photos (docs/data_format.md), so the centres
follow the person for every identity, also ones the NeRF never trained on. The learned alternative
(``eye_centers_from_code``: a linear map of the code fitted on the training subjects) has only as many
identities to learn from as the dataset has subjects (3 in the quickstart) and misplaced the unseen
subject's centres by 0.025 head units, 15 % of the eyeball radius, about 9° of apparent gaze.

The centres carry no gradient (the head model is numpy): in a codes fit they follow the code the fit is at.
"""

import functools

import numpy as np
import torch

__all__ = ["head_model_shape_dim", "head_model_eye_centers"]


def head_model_shape_dim() -> int:
    """Shape-code channels (identity ⊕ expression) of the synthetic head model's code layout."""
    from . import head_model as hm

    return hm.CODE_SLICES["expression"][1]


@functools.lru_cache(maxsize=4096)
def _centers_of(shape_code_bytes: bytes) -> np.ndarray:
    from . import head_model as hm

    shape = np.frombuffer(shape_code_bytes, dtype=np.float64)
    code = np.zeros(hm.CODE_DIM, np.float64)
    code[: shape.size] = shape  # identity | expression come first in the head model's layout
    return hm.eyeball_centers(hm.decode(code))


def head_model_eye_centers(shape_code: torch.Tensor) -> torch.Tensor:
    """(B, Ds) shape codes (identity ⊕ expression of the head model's layout) -> (B, 2, 3) eyeball centres,
    head frame, [subject's right (x < 0), left], float32 on the code's device, no gradient."""
    expected = head_model_shape_dim()
    if shape_code.dim() != 2 or shape_code.shape[1] != expected:
        raise ValueError(f"head_model_eye_centers: expected shape codes (B, {expected}) in the synthetic head model's "
                         f"layout, got {tuple(shape_code.shape)}")
    rows = shape_code.detach().to("cpu", torch.float64).numpy()
    centers = np.stack([_centers_of(np.ascontiguousarray(r).tobytes()) for r in rows])
    return torch.from_numpy(centers).to(shape_code.device, torch.float32)
