"""Synthetic multi-view gaze dataset (ETH-XGaze-like): parametric heads, a camera rig, a
tiled pytorch3d renderer and an HDF5 writer following ``HeadNeRF.data.layout``."""

from .head_model import CODE_DIM, CODE_SLICES, build_mesh, sample_code  # noqa: F401
from .render import render, render_view  # noqa: F401
from .writer import generate_dataset, render_preview_grid  # noqa: F401
