"""Shared fixtures: one tiny synthetic dataset per test session, and a tiny training config."""

import os
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """2 subjects x 4 cameras x 3 frames at 64 px (1 train + 1 test subject)."""
    from HeadNeRF.data.synthetic import generate_dataset

    d = tmp_path_factory.mktemp("synthetic")
    generate_dataset(str(d), num_subjects=2, num_cameras=4, num_frames=3, image_size=64, seed=0, progress=False)
    return str(d)


def tiny_config_dict(dataset_dir: str, run_dir: str, model_name: str = "HeadNeRF_Gaze", steps: int = 4) -> dict:
    """A training config small enough to run a step in well under a second."""
    return {
        "run_dir": run_dir, "seed": 0, "device": "cpu", "steps": steps, "batch_size": 2,
        "init_lr": 0.003, "val_every": 2, "val_images": 2, "ckpt_every": 2, "log_every": 1, "image_every": 2,
        "model": {"model_name": model_name, "featmap_size": 8, "featmap_channels": 12, "image_size": 16,
                  "num_samples": 8, "pe_freqs": 4, "mlp_width": 32, "mlp_depth": 4, "skip_layer": 2,
                  "gaze_mlp_width": 16, "gaze_mlp_depth": 2, "gaze_tile": 2, "renderer_min_channels": 8},
        "loss_config": {"template": 0.5 if model_name == "HeadNeRF_Gaze" else 0.0},
        "data": {"dataset_dir": dataset_dir},
    }


@pytest.fixture
def write_config(tmp_path):
    def _write(cfg: dict, name: str = "cfg.yml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    return _write
