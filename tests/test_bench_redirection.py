"""benchmarks/bench_redirection.py: the breakdown helpers (gain of the drawn change, change bins)."""

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "bench_redirection", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_redirection.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _pairs(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    source = (torch.rand(n, 2, generator=g) - 0.5) * 0.6
    target = (torch.rand(n, 2, generator=g) - 0.5) * 0.6
    return source, target


def test_gain_fit_full_change_is_one_and_leaves_nothing():
    source, target = _pairs()
    g = bench.gain_fit(source, target, target.clone())
    assert g["gain_pitch"] == pytest.approx(1.0, abs=1e-5) and g["gain_yaw"] == pytest.approx(1.0, abs=1e-5)
    assert g["residual_deg_mean"] < 0.05  # float32 acos of equal vectors


def test_gain_fit_sees_under_rotation_and_a_gaze_blind_model():
    source, target = _pairs()
    half = bench.gain_fit(source, target, source + torch.tensor([0.5, 0.8]) * (target - source))
    assert half["gain_pitch"] == pytest.approx(0.5, abs=1e-4) and half["gain_yaw"] == pytest.approx(0.8, abs=1e-4)
    blind = bench.gain_fit(source, target, source.clone())  # draws A's gaze whatever is asked
    assert abs(blind["gain_pitch"]) < 1e-6 and abs(blind["gain_yaw"]) < 1e-6


def test_gain_fit_noise_shows_in_the_residual_not_the_gain():
    source, target = _pairs(400)
    noise = 0.05 * torch.randn(400, 2, generator=torch.Generator().manual_seed(1))
    g = bench.gain_fit(source, target, target + noise)
    assert g["gain_pitch"] == pytest.approx(1.0, abs=0.1) and g["gain_yaw"] == pytest.approx(1.0, abs=0.1)
    assert g["residual_deg_mean"] > 2.0  # 0.05 rad per component is ~3.6° of angular noise


def test_gain_fit_skips_unreadable_pairs():
    source, target = _pairs(10)
    read = target.clone()
    read[3] = float("nan")
    g = bench.gain_fit(source, target, read)
    assert g["gain_pitch"] == pytest.approx(1.0, abs=1e-5)


def test_magnitude_bins_cover_the_range():
    assert bench.magnitude_bin(0.0) == "change 0-10°"
    assert bench.magnitude_bin(15.0) == "change 10-20°"
    assert bench.magnitude_bin(45.0) == "change >30°"


def test_spread_over_views_covers_every_camera():
    from types import SimpleNamespace

    # frame-major rows (as the dataset orders them): 2 subjects x 4 frames x 7 cameras
    rows = [SimpleNamespace(subject=s, frame=f, cam=c) for s in range(2) for f in range(4) for c in range(7)]
    ds = SimpleNamespace(rows=rows)
    picked = bench.spread_over_views(ds, list(range(len(rows))), 7)
    assert sorted(rows[i].cam for i in picked) == list(range(7))
    assert bench.spread_over_views(ds, [3, 1], 7) == [1, 3]


def test_spread_over_views_covers_every_subject_too():
    from types import SimpleNamespace

    rows = [SimpleNamespace(subject=s, frame=f, cam=c) for s in range(3) for f in range(4) for c in range(7)]
    picked = bench.spread_over_views(SimpleNamespace(rows=rows), list(range(len(rows))), 7)
    assert {rows[i].subject for i in picked} == {0, 1, 2}
    assert len({rows[i].cam for i in picked}) == 7
