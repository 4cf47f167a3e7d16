"""Statistics of a training dataset that a trained model carries in its checkpoint (for single-photo fitting)."""

import h5py
import numpy as np
import torch

from .dataset import GazeDataset
from .synthetic.head_model import FACE_CENTER

__all__ = ["data_metadata"]


def data_metadata(dataset: GazeDataset) -> dict:
    """What single-photo fitting needs to know about the training data, saved in every checkpoint.

    * ``camera_convention``: ``{"focal_factor": median K00 / S, "distance": median distance of the
      camera centre from the point the normalised cameras look at (head_model.FACE_CENTER),
      "t_norm": median |t_w2c|}`` over the rows, so a photo is normalised the way the training
      images were (``HeadNeRF.face.normalise_face(..., focal_factor, distance)``).
    * ``code_mean``: (D,) float32 mean latent code of the rows (code_slices order), the
      initialisation when a photo's codes cannot be fitted in this code layout.
    """
    focal, dist, tnorm, codes = [], [], [], []
    by_subject: dict = {}
    for ref in dataset.rows:
        by_subject.setdefault(ref.subject, []).append(ref.row)
    for sid, rows in by_subject.items():
        rows = sorted(set(rows))  # h5py reads increasing index lists
        with h5py.File(dataset.paths[sid], "r") as f:
            S = f["face_patch"].shape[1]
            K = np.asarray(f["cam_K"][rows], dtype=np.float64)
            R = np.asarray(f["cam_R_w2c"][rows], dtype=np.float64)
            t = np.asarray(f["cam_t_w2c"][rows], dtype=np.float64)
            codes.append(np.asarray(f["latent_code"][rows], dtype=np.float64))
        centre = -np.einsum("nji,nj->ni", R, t)  # camera centres in the head frame
        focal.append(K[:, 0, 0] / S)
        dist.append(np.linalg.norm(centre - np.asarray(FACE_CENTER), axis=1))
        tnorm.append(np.linalg.norm(t, axis=1))
    return {"camera_convention": {"focal_factor": float(np.median(np.concatenate(focal))),
                                  "distance": float(np.median(np.concatenate(dist))),
                                  "t_norm": float(np.median(np.concatenate(tnorm)))},
            "code_mean": torch.as_tensor(np.concatenate(codes).mean(0), dtype=torch.float32)}
