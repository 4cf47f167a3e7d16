"""Model-level tests on a tiny config: shapes, gradients, gaze (in)dependence, empty space,
batch independence, the split-layer trunk against a concatenating reference, and redirect()."""

import pytest
import torch
from torch.nn import functional as F

from HeadNeRF.config import ModelConfig
from HeadNeRF.fields.encoding import positional_encoding
from HeadNeRF.geometry.cameras import camera_center, intrinsics_matrix, look_at_w2c, scale_intrinsics
from HeadNeRF.geometry.gaze import head_pose_from_rotation, rotate_pitch_yaw
from HeadNeRF.models import MODEL_CLASSES, build_model, camera_for_head_pose, redirect
from HeadNeRF.neural_renderer import NeuralRenderer
from HeadNeRF.rendering.rays import generate_rays, ray_sphere_bounds

DS, DA = 5, 4  # tiny shape / appearance code sizes


def tiny_cfg(name="HeadNeRF_Gaze", **kw) -> ModelConfig:
    base = dict(model_name=name, featmap_size=8, featmap_channels=12, image_size=16, num_samples=8, pe_freqs=4,
                mlp_width=32, mlp_depth=4, skip_layer=2, gaze_mlp_width=32, gaze_mlp_depth=4, gaze_tile=2,
                renderer_min_channels=8)
    base.update(kw)
    return ModelConfig(**base)


def inputs(B=2, distance=5.0, focal=20.0, seed=0):
    """Codes, a frontal camera (the sphere covers the centre, the corners miss) and an eye mask."""
    g = torch.Generator().manual_seed(seed)
    R = torch.eye(3).expand(B, 3, 3).clone()
    t = torch.tensor([0.0, 0.0, distance]).expand(B, 3).clone()
    K = intrinsics_matrix(focal, 16, B)
    eye_mask = torch.zeros(B, 1, 32, 32)
    eye_mask[:, :, 10:18, 6:26] = 1.0
    return dict(shape_code=torch.randn(B, DS, generator=g), appearance_code=torch.randn(B, DA, generator=g),
                R_w2c=R, t_w2c=t, K=K, gaze_head=0.3 * torch.randn(B, 2, generator=g), eye_mask=eye_mask)


def make(name, **kw):
    torch.manual_seed(0)
    return build_model(tiny_cfg(name, **kw), DS, DA).eval()


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_builds_and_shapes(name):
    model = make(name)
    x = inputs()
    out = model(**x, training=True, render_template=True, render_background=True,
                generator=torch.Generator().manual_seed(1))
    assert out["image"].shape == (2, 3, 16, 16)
    assert out["opacity"].shape == out["depth"].shape == (2, 1, 8, 8)
    assert out["background_image"].shape == (1, 3, 16, 16)
    assert ("template_image" in out) == (name == "HeadNeRF_Gaze")
    if name == "HeadNeRF_Gaze":
        assert out["template_image"].shape == (2, 3, 16, 16)
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert 0 <= out["opacity"].min() and out["opacity"].max() <= 1 + 1e-6
    plain = model(**x)
    assert set(plain) == {"image", "opacity", "depth"}  # nothing extra unless asked


def test_conftest_sized_config_builds():
    """Unequal gaze/trunk widths and a depth-2 gaze MLP (no skip) still work."""
    for name in MODEL_CLASSES:
        model = make(name, gaze_mlp_width=16, gaze_mlp_depth=2)
        assert model(**inputs(), render_template=True)["image"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("name,module", [("HeadNeRF_Gaze", "gaze_mlp"), ("GazeNeRF", "eye_stream")])
def test_gradients_reach_gaze_network(name, module):
    model = make(name).train()
    out = model(**inputs(), training=True, render_template=True)
    loss = out["image"].square().mean() + out.get("template_image", out["image"]).mean()
    loss.backward()
    for pname, p in getattr(model, module).named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert model.renderer.background.grad is not None


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
@pytest.mark.parametrize("key,bad,expected", [
    ("shape_code", torch.zeros(2, DS + 1), f"shape_code must be (B, {DS}), got (2, {DS + 1})"),
    ("K", torch.zeros(3, 3, 3), "K must be (B=2, 3, 3), got (3, 3, 3)"),
    ("gaze_head", torch.zeros(2, 3), "gaze_head must be (B=2, 2), got (2, 3)"),
    ("eye_mask", torch.zeros(2, 32, 32), "eye_mask must be (B=2, 1, H, H), got (2, 32, 32)"),
])
def test_forward_names_a_wrong_shape(name, key, bad, expected):
    from HeadNeRF.shapes import ShapeError
    x = inputs()
    x[key] = bad
    with pytest.raises(ShapeError) as err:
        make(name)(**x)
    assert str(err.value) == f"{name}.forward: {expected}"


def test_render_rays_names_a_wrong_shape():
    from HeadNeRF.models import render_rays
    from HeadNeRF.shapes import ShapeError

    class Rays:  # render_rays reads only deltas and depths before compositing
        deltas = depths = torch.ones(4, 3)
    with pytest.raises(ShapeError, match=r"render_rays: features must be \(N=4, S=3, \*\), got \(4, 2, 5\)"):
        render_rays(Rays(), torch.zeros(4, 2, 5), torch.zeros(4, 3))


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_gaze_changes_image_only_for_gaze_models(name):
    model = make(name)
    x = inputs()
    with torch.no_grad():
        a = model(**x)["image"]
        x["gaze_head"] = x["gaze_head"] + torch.tensor([0.4, -0.6])
        b = model(**x)["image"]
    if name == "HeadNeRF":
        assert torch.equal(a, b)
    else:
        assert (a - b).abs().max() > 1e-6


def test_template_is_the_zero_gaze_render():
    model = make("HeadNeRF_Gaze")
    x = inputs()
    with torch.no_grad():
        out = model(**x, render_template=True)  # eval: no template noise
        plain = model(**x)
        zero = model(**{**x, "gaze_head": torch.zeros(2, 2)})
    torch.testing.assert_close(out["image"], plain["image"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["template_image"], zero["image"], atol=1e-6, rtol=0)


def test_feat_addition_alpha_zero_ignores_gaze():
    model = make("HeadNeRF_Gaze", feat_addition_alpha=0.0)
    x = inputs()
    with torch.no_grad():
        a = model(**x)["image"]
        b = model(**{**x, "gaze_head": torch.zeros(2, 2)})["image"]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_empty_scene_renders_background(name):
    """A camera looking away from the head: no ray hits the sphere, the image is the background."""
    model = make(name)
    x = inputs()
    x["t_w2c"] = torch.tensor([0.0, 0.0, -5.0]).expand(2, 3)  # centre (0, 0, 5), looking along +z, away
    with torch.no_grad():
        out = model(**x, render_background=True)
        bg = model.renderer.decode(model.renderer.background)
        bg2 = model.renderer.decode(model.renderer.background.expand(2, -1, -1, -1))  # same conv batch size
    assert torch.equal(out["opacity"], torch.zeros(2, 1, 8, 8))
    assert torch.equal(out["image"], bg2)
    assert torch.equal(out["background_image"], bg)


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_rays_missing_the_sphere_are_transparent(name):
    model = make(name)
    x = inputs()
    with torch.no_grad():
        out = model(**x)
    K_feat = scale_intrinsics(x["K"], 8 / 16)
    _, _, hit = ray_sphere_bounds(*generate_rays(x["R_w2c"], x["t_w2c"], K_feat, 8, 8), 1.6)
    hit = hit.view(2, 1, 8, 8)
    assert hit.any() and (~hit).any()  # the fixture camera has both kinds
    assert torch.equal(out["opacity"][~hit], torch.zeros(int((~hit).sum())))
    assert (out["opacity"][hit] > 0).all()
    assert torch.equal(out["depth"][~hit], torch.zeros(int((~hit).sum())))


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_batch_items_are_independent(name):
    """Gathering hit rays across the batch and scattering back must not mix images."""
    model = make(name)
    x = inputs()
    x["t_w2c"] = torch.tensor([[0.0, 0.0, 5.0], [0.3, -0.2, 4.0]])  # different hit sets per image
    with torch.no_grad():
        both = model(**x)["image"]
        first = model(**{k: v[:1] for k, v in x.items()})["image"]
        second = model(**{k: v[1:] for k, v in x.items()})["image"]
    torch.testing.assert_close(both, torch.cat((first, second)), atol=1e-5, rtol=0)


def test_split_trunk_matches_concatenating_reference():
    """The per-image/per-sample split layers equal the seed's concat-then-Linear computation."""
    model = make("HeadNeRF")
    trunk = model.trunk
    torch.manual_seed(3)
    pts = torch.randn(6, 5, 3)
    pe = positional_encoding(pts, 4)
    shape, app = torch.randn(2, DS), torch.randn(2, DA)
    ray_image = torch.tensor([0, 0, 1, 1, 1, 0])
    feats, density = trunk(pe, shape, app, ray_image)
    vp = torch.cat((pe, shape[ray_image].unsqueeze(1).expand(6, 5, DS)), -1)  # code on every sample
    h = F.relu(vp @ torch.cat((trunk.layers[0].weight, trunk.shape_in.weight), 1).T + trunk.layers[0].bias)
    for i in range(1, trunk.depth):
        if i == trunk.skip_into:
            W = torch.cat((trunk.layers[i].weight, trunk.skip_point.weight, trunk.skip_shape.weight), 1)
            h = F.relu(torch.cat((h, vp), -1) @ W.T + trunk.layers[i].bias)
        else:
            h = F.relu(trunk.layers[i](h))
    vd = torch.cat((h, app[ray_image].unsqueeze(1).expand(6, 5, DA)), -1)
    colour = F.relu(vd @ torch.cat((trunk.colour_layer.weight, trunk.appearance_in.weight), 1).T
                    + trunk.colour_layer.bias)
    torch.testing.assert_close(feats, trunk.feature_head(colour))
    torch.testing.assert_close(density, F.softplus(trunk.density_head(h)).squeeze(-1))


def test_renderer_without_upsampling():
    renderer = NeuralRenderer(8, 6, 8, 4)
    img = renderer(torch.zeros(2, 6, 8, 8), torch.zeros(2, 1, 8, 8))
    assert img.shape == (2, 3, 8, 8)
    torch.testing.assert_close(img, renderer.render_background().expand(2, 3, 8, 8))
    w, b = renderer.to_rgb_in.weight.sum((1, 2, 3)), renderer.to_rgb_in.bias  # 1x1 conv of a ones map
    torch.testing.assert_close(img[0, :, 3, 3], torch.sigmoid(w + b))


def test_renderer_channel_schedule():
    renderer = NeuralRenderer(4, 64, 64, 8)  # 4 blocks: 64 -> 32 -> 16 -> 8 -> 8
    assert [c.out_channels for c in renderer.convs] == [32, 16, 8, 8]
    assert renderer(torch.zeros(1, 64, 4, 4), torch.ones(1, 1, 4, 4)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("head_pose", [(0.0, 0.0), (0.3, -0.5), (-0.4, 0.8)])
def test_camera_for_head_pose(head_pose):
    centre = torch.tensor([[1.0, -0.5, -4.0]])
    R, t = look_at_w2c(centre, torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))
    hp = torch.tensor([head_pose])
    R_new, t_new = camera_for_head_pose(R, t, hp)
    torch.testing.assert_close(head_pose_from_rotation(R_new), hp)
    torch.testing.assert_close(R_new @ R_new.transpose(-1, -2), torch.eye(3)[None])
    assert torch.linalg.det(R_new).item() == pytest.approx(1.0)
    torch.testing.assert_close(camera_center(R_new, t_new).norm(), camera_center(R, t).norm())  # same distance
    # It looks at the head origin (t was (0, 0, d)), and its y axis has no head-x part (no roll).
    torch.testing.assert_close(camera_center(R_new, t_new)[0] / camera_center(R_new, t_new).norm(), -R_new[0, 2])
    assert abs(R_new[0, 1, 0].item()) < 1e-7


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_redirect(name):
    model = make(name).train()
    x = inputs(B=1)
    codes = {"shape_code": x["shape_code"], "appearance_code": x["appearance_code"]}
    camera = {"R_w2c": x["R_w2c"], "t_w2c": x["t_w2c"], "K": x["K"]}
    gaze_cam = torch.tensor([[0.1, 0.2]])
    hp = torch.tensor([[0.2, -0.3]])
    img = redirect(model, codes, camera, gaze_cam, head_pose=hp, eye_mask=x["eye_mask"])
    assert model.training  # mode restored
    R_new, t_new = camera_for_head_pose(x["R_w2c"], x["t_w2c"], hp)
    with torch.no_grad():
        ref = model.eval()(x["shape_code"], x["appearance_code"], R_new, t_new, x["K"],
                           gaze_head=rotate_pitch_yaw(gaze_cam, R_new.transpose(-1, -2)), eye_mask=x["eye_mask"])
    assert torch.equal(img, ref["image"])
    assert img.shape == (1, 3, 16, 16)
    # Without head_pose the camera is kept: the frontal camera's gaze is the head-frame gaze.
    img2 = redirect(model, codes, camera, gaze_cam, eye_mask=x["eye_mask"])
    with torch.no_grad():
        ref2 = model(**{**x, "gaze_head": rotate_pitch_yaw(gaze_cam, torch.eye(3)[None])})["image"]
    torch.testing.assert_close(img2, ref2, atol=1e-6, rtol=0)


@pytest.mark.parametrize("gaze_width", [32, 16])  # equal to the trunk width (identity) and projected
def test_gaze_density_offset_is_the_injection_through_the_density_head(gaze_width):
    model = make("HeadNeRF_Gaze", gaze_mlp_width=gaze_width)
    gaze, trunk = model.gaze_mlp, model.trunk
    h_gaze = torch.randn(2, 3, 5, gaze_width)
    h = torch.randn(2, 3, 5, trunk.width)
    injection = gaze.density_out(h_gaze)  # (P, N, S, trunk_width): what the seed adds to the trunk state
    offset = gaze.density_offset(h_gaze, trunk.density_head.weight)
    assert offset.shape == (2, 3, 5)
    logit = trunk.density_head(h).squeeze(-1)
    torch.testing.assert_close(trunk.density_from_logit(logit, offset),
                               F.softplus(trunk.density_head(h + injection)).squeeze(-1))


def test_fused_trunk_heads_equal_the_separate_heads():
    """``trunk.heads`` (colour layer + density head in one product) gives what the two layers give separately
    (colour: ReLU(W_c h + b_c + W_a appearance); density: softplus(w · h + b + offset)); also the gradients."""
    trunk = make("HeadNeRF_Gaze").trunk
    g = torch.Generator().manual_seed(2)
    h = torch.randn(6, 5, trunk.width, generator=g, requires_grad=True)
    app, ray_image = torch.randn(2, DA, generator=g), torch.arange(6) % 2
    offset = torch.randn(6, 5, generator=g)
    colour, logit = trunk.heads(h, app, ray_image)
    fused = colour.sum() + 2 * trunk.density_from_logit(logit, offset).sum()
    colour_ref = F.relu(trunk.colour_layer(h) + trunk.appearance_in(app)[ray_image].unsqueeze(1))
    density_ref = F.softplus(trunk.density_head(h).squeeze(-1) + offset)
    torch.testing.assert_close(colour, colour_ref)
    torch.testing.assert_close(trunk.density_from_logit(logit, offset), density_ref)
    grad, = torch.autograd.grad(fused, h)
    grad_ref, = torch.autograd.grad(colour_ref.sum() + 2 * density_ref.sum(), h)
    torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_chunked_evaluation_equals_one_pass(name, monkeypatch):
    import HeadNeRF.fields.trunk as trunk_module

    model = make(name)
    x = inputs()
    with torch.no_grad():
        whole = model(**x, render_template=True)
        monkeypatch.setattr(trunk_module, "EVAL_CHUNK_SAMPLES", 20)  # a few rays per chunk, ragged last chunk
        assert len(trunk_module.ray_chunks(50, 3)) == 9  # 6 rays (18 samples) per chunk
        chunked = model(**x, render_template=True)
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], atol=1e-5, rtol=1e-5)


def test_chunked_bf16_evaluation_keeps_bf16_states_and_equals_one_pass(monkeypatch):
    """Under mlp_precision bf16 the chunked evaluation gathers its chunks in their own dtype (no fp32 round
    trip that every consumer casts back), and renders what the one-pass bf16 evaluation renders."""
    import HeadNeRF.fields.trunk as trunk_module

    model = make("HeadNeRF_Gaze", mlp_precision="bf16")
    x = inputs()
    with torch.no_grad():
        whole = model(**x, render_template=True)
        monkeypatch.setattr(trunk_module, "EVAL_CHUNK_SAMPLES", 20)
        chunked = model(**x, render_template=True)
        assert len(trunk_module.ray_chunks(50, 3)) > 1
        pe = torch.randn(50, 3, model.point_dim)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = model.trunk.hidden(pe, x["shape_code"], torch.zeros(50, dtype=torch.long))
            gaze_in = torch.randn(2, 50, model.gaze_mlp.ray_in.in_features)
            sample_in = (torch.randn(2, 50, 3, model.gaze_mlp.sample_in.in_features)
                         if model.gaze_mlp.sample_in is not None else None)
            g_h, g_colour = model.gaze_mlp(pe, gaze_in, sample_in)
    assert h.dtype == g_h.dtype == g_colour.dtype == torch.bfloat16
    for key in whole:
        assert chunked[key].dtype == whole[key].dtype == torch.float32
        torch.testing.assert_close(chunked[key], whole[key], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_mlp_precision_bf16_is_close_to_fp32_and_trains(name):
    """The opt-in bf16 MLPs: same weights give an fp32 image close to the fp32 model's (but not
    equal: the autocast is really on), and gradients reach the MLP weights, finite."""
    ref = make(name)
    fast = make(name, mlp_precision="bf16")
    fast.load_state_dict(ref.state_dict())
    x = inputs()
    with torch.no_grad():
        a, b = ref(**x), fast(**x)
    assert b["image"].dtype == b["opacity"].dtype == torch.float32
    err = (a["image"] - b["image"]).abs().max().item()
    assert 0 < err < 0.05, err
    assert (a["opacity"] - b["opacity"]).abs().max().item() < 0.05
    out = fast.train()(**x, training=True, generator=torch.Generator().manual_seed(1))
    out["image"].mean().backward()
    grads = [p.grad for p in fast.parameters() if p.grad is not None]
    assert len(grads) > 4 and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in fast.parameters())


def test_mlp_precision_rejects_unknown_values():
    from HeadNeRF.config import ConfigError

    with pytest.raises(ConfigError, match="mlp_precision"):
        tiny_cfg(mlp_precision="fp16")


def test_mlp_precision_auto_is_bf16_only_on_cpus_with_native_bf16(tmp_path):
    from HeadNeRF.models import native_bf16_cpu, resolve_mlp_precision

    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_tile\n")
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert native_bf16_cpu(str(with_bf16)) and not native_bf16_cpu(str(without))
    assert not native_bf16_cpu(str(tmp_path / "missing"))
    assert resolve_mlp_precision("auto", "cuda") == "fp32"
    assert resolve_mlp_precision("auto", "cpu") == ("bf16" if native_bf16_cpu() else "fp32")
    assert resolve_mlp_precision("fp32", "cpu") == "fp32" and resolve_mlp_precision("bf16", "cpu") == "bf16"
    tiny_cfg(mlp_precision="auto")  # accepted by the config
