"""Every top-level script answers --help (each script's own end-to-end tests live beside its module's tests)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = ["train_headnerf.py", "train_gaze_estimator.py", "Evaluation.py", "FittingSingleImage.py",
           "DataProcess/make_synthetic_dataset.py",
           "DataProcess/Gen_mask_lm_3DMM.py", "DataProcess/preview_grid.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    res = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr
