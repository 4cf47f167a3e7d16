"""The fixed 478 -> 68 landmark mapping: mediapipe FaceMesh points -> iBUG-68 (the layout's ``lm2d``).

Each iBUG point is the mean of one to three mediapipe mesh points (``MP_TO_IBUG68``). The layout's
``lm2d`` must mean the same thing for photos as for the synthetic data (PnP and the latent fit use
the synthetic head's ``landmarks_3d``), so the table was chosen on synthetic renders, whose exact
iBUG points are known: for each point, among the 12 mesh points closest to it on average, the
single point or mean of 2-3 points with the lowest median error over 106 renders
(``calibrate.choose_mapping``; a pair had to gain 0.3 % of the interocular distance, a triple 0.5 %).
This replaced the common one-point table (median error 10.9 % -> 7.2 %), mostly on the jaw, which
the synthetic model defines on the cheek/jaw surface rather than on the silhouette. Per-point
errors: ``docs/face_analysis.md``.

Orientation: mediapipe's "right" points (33, 133, 468, ...) are the subject's right, i.e. the
image left of a frontal, unmirrored photo, which is the iBUG order (jaw 0 at the subject's right
ear, right eye 36-41, left eye 42-47). Iris centres: 468 (subject's right) and 473 (left).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FACE_OVAL",
    "IBUG_GROUPS",
    "IRIS_CENTERS",
    "LEFT_EYE_CONTOUR",
    "LIPS_OUTER",
    "MP_TO_IBUG68",
    "RIGHT_EYE_CONTOUR",
    "iris_from_mesh",
    "landmarks68_from_mesh",
]

# iBUG index -> mediapipe indices (averaged).
MP_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16, subject's right ear -> chin -> left ear (the synthetic jaw points lie on the
    # cheek/jaw surface, inside the silhouette: the mean of 2-3 mesh points reproduces them)
    (127, 177), (177, 137, 132), (215, 177, 172), (58, 136), (136, 172), (150, 136), (150, 148), (149, 377),
    (148, 400), (378, 152), (378,), (379, 365), (397, 365), (397, 288), (361, 401, 397), (447, 288), (454, 366),
    # right brow 17-21 (outer -> inner), left brow 22-26 (inner -> outer)
    (70, 53), (53, 105), (52, 66), (107, 52), (107, 55, 65), (336, 285, 296), (295, 296), (296, 283), (283, 334),
    (300, 293),
    # nose bridge 27-30, nostrils 31-35
    (417, 6, 8), (122, 399), (363, 236), (19, 275), (241, 60), (125,), (274, 19), (461, 457), (309, 326),
    # right eye 36-41 (outer corner, upper lid, inner corner, lower lid)
    (130,), (160, 29), (157, 27), (244, 173), (23, 26), (24, 163),
    # left eye 42-47 (inner corner, upper lid, outer corner, lower lid)
    (414, 453), (386, 442, 384), (387, 259), (467, 261), (254, 373), (380, 374, 451),
    # outer lips 48-59
    (61,), (39, 74), (0, 39), (267, 72), (0, 269), (269, 304), (291,), (318, 406), (313, 317), (315, 84),
    (17, 180), (181, 91),
    # inner lips 60-67
    (184,), (38, 82, 178), (87, 268), (303, 14), (325, 408), (316, 317, 402), (87, 316), (87, 86, 81),
)
assert len(MP_TO_IBUG68) == 68

IRIS_CENTERS = (468, 473)  # [subject's right (image left), subject's left]

# Closed polygons (ordered), subject's right eye first.
RIGHT_EYE_CONTOUR = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_CONTOUR = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)

IBUG_GROUPS = {"jaw": range(17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
               "mouth": range(48, 68)}

_MATRIX = None


def _mapping_matrix() -> np.ndarray:
    """(68, 478) averaging matrix of MP_TO_IBUG68."""
    global _MATRIX
    if _MATRIX is None:
        m = np.zeros((68, 478), dtype=np.float64)
        for i, idx in enumerate(MP_TO_IBUG68):
            m[i, list(idx)] = 1.0 / len(idx)
        _MATRIX = m
    return _MATRIX


def landmarks68_from_mesh(lm478: np.ndarray) -> np.ndarray:
    """(478, 2|3) mediapipe points -> (68, 2) float32 iBUG landmarks (x, y)."""
    return (_mapping_matrix() @ np.asarray(lm478, dtype=np.float64)[:, :2]).astype(np.float32)


def iris_from_mesh(lm478: np.ndarray) -> np.ndarray:
    """(478, 2|3) -> (2, 2) float32 iris centres [subject's right, subject's left]."""
    return np.asarray(lm478, dtype=np.float32)[list(IRIS_CENTERS), :2].copy()
