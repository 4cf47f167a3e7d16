"""Exact-render measurements (HeadNeRF.evaluation.exact_render): the generator's own renders of a requested gaze
score a high eye-region gain and meet the readout check; a gaze-blind model scores no gain and fails it."""

import h5py
import pytest

from HeadNeRF.data.dataset import GazeDataset
from HeadNeRF.evaluation.exact_render import exact_renders, redirection_measurement, same_camera_targets
from HeadNeRF.evaluation.readout import redirection_readout_summary
from HeadNeRF.geometry.gaze import gaze_in_head_frame

S = 32


@pytest.fixture(scope="module")
def source(tiny_dataset):
    """A test-subject row, its generator code and the head-frame gazes of its camera's other frames."""
    ds = GazeDataset(tiny_dataset, "test", image_size=S)
    sid, row, cam, frame, _ = ds.rows[0]
    code, gaze_head = same_camera_targets(ds.paths[sid], row, cam, frame, set(ds.split.heldout_frames))
    with h5py.File(ds.paths[sid], "r") as f:
        supersample = int(f.attrs.get("supersample", 1))
    return ds[0], code, gaze_head, supersample


def _gain(m: dict) -> float:
    return float((m["model_psnr"] - m["copy_psnr"]).mean())


def test_exact_renders_gain_and_meet_while_a_gaze_blind_model_does_not(source):
    item, code, gaze_head, ss = source
    own = gaze_in_head_frame(item["gaze"][None], item["R_w2c"][None])
    assert (gaze_head - own).abs().max() > 0.1  # the requests do ask for other gazes

    def exact(g):  # the generator's own render of each requested gaze: a perfect redirector
        return exact_renders(code, item, g, S, ss, "cpu")[0]

    def blind(g):  # the same subject drawn at its own gaze whatever is asked
        return exact_renders(code, item, own.expand(len(g), 2), S, ss, "cpu")[0]

    good = redirection_measurement(exact, item, code, gaze_head, S, ss, "cpu")
    bad = redirection_measurement(blind, item, code, gaze_head, S, ss, "cpu")
    good_check, bad_check = redirection_readout_summary(good["errors"]), redirection_readout_summary(bad["errors"])
    print(f"eye-region gain: exact renders {_gain(good):.1f} dB, gaze-blind {_gain(bad):.2f} dB; "
          f"readout error: exact {good_check['gaze_error_deg_model_mean']:.2f}°, "
          f"blind {bad_check['gaze_error_deg_model_mean']:.1f}° (copy {bad_check['gaze_error_deg_copy_input_mean']:.1f}°)")
    assert _gain(good) > 15.0 and abs(_gain(bad)) < 2.0
    assert good_check["check_met"] is True and good_check["gaze_error_deg_model_mean"] < 1.0
    assert bad_check["check_met"] is False and bad_check["check"].startswith("NOT met")
    assert bad_check["gaze_error_deg_model_mean"] > 5.0
    assert len(good["model_psnr"]) == len(gaze_head) == len(good["errors"]["floor"])
