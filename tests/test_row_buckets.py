"""Row buckets (``models.RAY_BUCKET``, ``GAZE_SAMPLE_BUCKET``): under bf16 the rays and the near-eye samples are
padded to recurring counts so oneDNN reuses its compiled GEMMs. Padding must change nothing: same images, same
gradients, same density-grid records as without it (checked in fp32, to rounding: a product over more rows may
block differently)."""

import pytest
import torch

from HeadNeRF.models import GAZE_SAMPLE_BUCKET, MODEL_CLASSES, RAY_BUCKET, build_model, pad_rows, padded_count
from tests.test_models import DA, DS, inputs, tiny_cfg


def test_padded_count_and_rows():
    assert padded_count(0, 64) == 0 and padded_count(5, 0) == 5
    assert padded_count(1, 64) == 64 and padded_count(63, 64) == 64 and padded_count(64, 64) == 128  # >= 1 extra
    rows = pad_rows(3, 4)
    assert rows.tolist() == [0, 1, 2, 0]


def _models(name, **kw):
    cfg = tiny_cfg(name, density_grid_resolution=8, **kw)
    torch.manual_seed(0)
    plain = build_model(cfg, DS, DA)
    padded = build_model(cfg, DS, DA)
    padded.load_state_dict(plain.state_dict())
    plain.bucket_rows, padded.bucket_rows = False, True
    return plain, padded


CASES = [(name, {}) for name in MODEL_CLASSES] + [
    ("HeadNeRF_Gaze", dict(gaze_input="eye_frame", eye_frame_freqs=2, eye_polar_cells=8, gaze_region_radius=2.0))]


@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] + ("_region" if c[1] else "") for c in CASES])
def test_padding_rows_changes_no_output_gradient_or_grid_record(name, kw, monkeypatch):
    plain, padded = _models(name, **kw)
    x = inputs()
    rays = padded.make_rays(x["R_w2c"], x["t_w2c"], x["K"], training=False)
    assert rays.padded and rays.ray_index.shape[0] % RAY_BUCKET == 0
    assert rays.count == plain.make_rays(x["R_w2c"], x["t_w2c"], x["K"], training=False).ray_index.shape[0]
    gaze_rows = []
    if kw:
        forward = padded.gaze_mlp.forward
        monkeypatch.setattr(padded.gaze_mlp, "forward",
                            lambda pe, *a: gaze_rows.append(pe.shape[0]) or forward(pe, *a))
    outs = []
    for model in (plain, padded):
        out = model(**x, training=True, render_template=name == "HeadNeRF_Gaze",
                    generator=torch.Generator().manual_seed(3))
        loss = sum(v.square().mean() for v in out.values())
        loss.backward()
        outs.append((out, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
                     model.density_grid.density.clone()))
    (out_a, grad_a, grid_a), (out_b, grad_b, grid_b) = outs
    assert out_a.keys() == out_b.keys()
    for key in out_a:
        torch.testing.assert_close(out_b[key], out_a[key])
    assert grad_a.keys() == grad_b.keys() and len(grad_a) > 5
    for key in grad_a:
        torch.testing.assert_close(grad_b[key], grad_a[key], msg=key)
    torch.testing.assert_close(grid_b, grid_a)  # fp32 rounding: a product of other rows may block differently
    if kw:  # the gaze MLP ran on a bucketed sample count
        assert gaze_rows and all(n % GAZE_SAMPLE_BUCKET == 0 for n in gaze_rows)


def test_bf16_models_pad_and_fp32_models_do_not():
    x = inputs()
    images = {}
    for precision, expect in (("bf16", True), ("fp32", False)):
        torch.manual_seed(0)
        model = build_model(tiny_cfg(mlp_precision=precision), DS, DA)
        rays = model.make_rays(x["R_w2c"], x["t_w2c"], x["K"], training=False)
        assert rays.padded == expect
        with torch.no_grad():
            images[precision] = model(**x)["image"]
    # the padded bf16 render is the fp32 one within bf16's precision (the padding rays reach no pixel)
    torch.testing.assert_close(images["bf16"], images["fp32"], rtol=0, atol=0.03)
