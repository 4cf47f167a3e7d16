"""The eye-frame gaze input (ModelConfig.gaze_input = eye_frame) and the pixel-coordinate switch."""

import numpy as np
import pytest
import torch

from HeadNeRF.config import ConfigError, ModelConfig
from HeadNeRF.fields.encoding import encoding_dim
from HeadNeRF.fields.gaze import (EYE_RADIUS, MEAN_EYE_CENTERS, eye_frame_dim, eye_frame_encoding, eye_frame_points,
                                  gaze_input_dim)
from HeadNeRF.geometry.gaze import gaze_rotation
from tests.test_models import DA, DS, inputs, make


def random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=torch.float64))
    return q * torch.linalg.det(q).sign().view(n, 1, 1)  # proper rotations


def test_eye_frame_points_follow_the_eyeball_rotation():
    """A point fixed on a turning eyeball, c + r R(g) v, has the eye-frame coordinates v for every gaze g;
    a point fixed in the head does not (the input really depends on the gaze)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor(MEAN_EYE_CENTERS, dtype=torch.float64)  # (2, 3)
    v = torch.randn(5, 4, 2, 3, generator=g, dtype=torch.float64)  # (N, S, E, 3) eye-frame coordinates
    gazes = 0.5 * torch.randn(3, 5, 2, generator=g, dtype=torch.float64)  # (P, N, 2)
    R = gaze_rotation(gazes)  # (P, N, 3, 3)
    for p in range(3):
        # the same eyeball points, turned with the gaze of pass p (for one eye at a time: E=1)
        for e in range(2):
            world = centers[e] + EYE_RADIUS * (R[p, :, None] @ v[:, :, e, :, None]).squeeze(-1)  # (N, S, 3)
            got = eye_frame_points(world, centers[e:e + 1], R[p:p + 1])[0, :, :, 0]
            torch.testing.assert_close(got, v[:, :, e])
    head_point = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    a = eye_frame_points(head_point, centers, R[:1])
    b = eye_frame_points(head_point, centers, R[1:2])
    assert (a - b).abs().max() > 0.1


def test_eye_frame_points_are_equivariant():
    """Turning the eye by Q (gaze rotation R -> Q R) and the scene with it about the eye centre leaves the
    input unchanged; turning only the eye turns the input by Q^T: the gaze acts as a rotation."""
    g = torch.Generator().manual_seed(1)
    center = torch.tensor(MEAN_EYE_CENTERS[1], dtype=torch.float64).unsqueeze(0)  # (1, 3)
    points = torch.randn(6, 3, 3, generator=g, dtype=torch.float64)  # (N, S, 3)
    R = random_rotations(6, g).unsqueeze(0)  # (1, N, 3, 3)
    Q = random_rotations(6, g).unsqueeze(0)
    base = eye_frame_points(points, center, R)[..., 0, :]  # (1, N, S, 3)
    turned_points = center + (Q[0, :, None] @ (points - center).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(eye_frame_points(turned_points, center, Q @ R)[..., 0, :], base)
    eye_only = eye_frame_points(points, center, R @ Q)[..., 0, :]  # the eye turned by Q in its own frame
    torch.testing.assert_close(eye_only, (Q.transpose(-1, -2)[:, :, None] @ base.unsqueeze(-1)).squeeze(-1))


def test_eye_frame_encoding_shape_and_iris_centre():
    """Per eye: PE of the direction and tanh(|u| - 1); the iris centre (0, 0, -1) gives direction (0, 0, -1), radius 0."""
    u = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -3.0]]])  # (1, E=2, 3)
    enc = eye_frame_encoding(u, 2)
    assert enc.shape == (1, eye_frame_dim(2)) == (1, 2 * (3 * 5 + 1))
    first, second = enc[0, :16], enc[0, 16:]
    torch.testing.assert_close(first[:3], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(first[:15], second[:15])  # same direction, other distance
    assert first[15] == 0.0 and second[15] == pytest.approx(np.tanh(2.0))


def test_mean_eye_centres_match_the_synthetic_head_model():
    """The initial centres are the generator's: its subjects' eyeballs lie within a few cm of them, and
    the generator's iris centre reads (0, 0, -1) in the eye frame of its own centre for any gaze."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.data.synthetic.writer import subject_frames

    centers = []
    for subject in range(6):
        code, _, gazes = subject_frames(0, subject, 3)
        P = hm.build_mesh(code).params
        centers.append(np.asarray(P.eye_centers))
        gaze = torch.as_tensor(gazes, dtype=torch.float64)  # (3, 2) head frame
        iris = hm.iris_centers_3d(P, gaze).to(torch.float64)  # (3, 2, 3)
        eye_c = torch.tensor(P.eye_centers, dtype=torch.float64)
        for e in range(2):  # each iris in its own eye's frame; rays = the 3 gazes, one sample each
            u = eye_frame_points(iris[:, e:e + 1], eye_c[e:e + 1], gaze_rotation(gaze).unsqueeze(0))  # (1, 3, 1, 1, 3)
            torch.testing.assert_close(u.reshape(3, 3), torch.tensor([[0.0, 0.0, -1.0]] * 3, dtype=torch.float64),
                                       atol=1e-5, rtol=0)
    offset = np.abs(np.stack(centers) - np.asarray(MEAN_EYE_CENTERS))
    assert offset.max() < 0.06, offset.max()  # per-subject std 0.8-2.0 cm
    assert np.abs(np.stack(centers).mean(0) - np.asarray(MEAN_EYE_CENTERS)).max() < 0.03


def test_eye_frame_model_renders_trains_and_chunks(monkeypatch):
    import HeadNeRF.fields.trunk as trunk_module

    model = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2)
    assert model.gaze_mlp.ray_in.in_features == gaze_input_dim(0) == 3  # mask + coords: no tiled angles
    assert model.gaze_mlp.sample_in.in_features == eye_frame_dim(2)
    x = inputs()
    with torch.no_grad():
        a = model(**x, render_template=True)
        b = model(**{**x, "gaze_head": x["gaze_head"] + torch.tensor([0.4, -0.6])})["image"]
        monkeypatch.setattr(trunk_module, "EVAL_CHUNK_SAMPLES", 20)
        chunked = model(**x, render_template=True)
    assert (a["image"] - b).abs().max() > 1e-6
    for key in a:
        torch.testing.assert_close(chunked[key], a[key], atol=1e-5, rtol=1e-5)
    model.train()
    out = model(**x, training=True, render_template=True)
    (out["image"].square().mean() + out["template_image"].mean()).backward()
    assert model.eye_centers.grad is not None and model.eye_centers.grad.abs().sum() > 0
    assert model.gaze_mlp.sample_in.weight.grad.abs().sum() > 0


def test_tiled_default_is_unchanged_and_coords_can_be_left_out():
    plain = make("HeadNeRF_Gaze")
    assert plain.eye_centers is None and plain.gaze_mlp.sample_in is None
    assert plain.gaze_mlp.ray_in.in_features == gaze_input_dim(2) == 1 + 4 + 2
    no_coords = make("HeadNeRF_Gaze", gaze_pixel_coords=False)
    assert no_coords.gaze_mlp.ray_in.in_features == 1 + 4
    with torch.no_grad():
        assert no_coords(**inputs())["image"].shape == (2, 3, 16, 16)


def test_gaze_input_rejects_unknown_values():
    with pytest.raises(ConfigError, match="gaze_input"):
        ModelConfig(gaze_input="angles")
    with pytest.raises(ConfigError, match="eye_frame_freqs"):
        ModelConfig(eye_frame_freqs=-1)


def test_eye_centres_from_code_move_per_subject():
    """Zero-initialised: the same render as the shared centres; trained, each image's centres follow its code."""
    x = inputs()
    shared = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2)
    per_code = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2, eye_centers_from_code=True)
    with torch.no_grad():
        torch.testing.assert_close(per_code(**x)["image"], shared(**x)["image"])
    per_code.train()
    per_code(**x, training=True)["image"].square().mean().backward()
    assert per_code.eye_center_offset.weight.grad.abs().sum() > 0
    per_code.eval()
    with torch.no_grad():
        per_code.eye_center_offset.weight.normal_(0.0, 0.05)
        moved = per_code(**x)["image"]
        one = per_code(**{k: v[:1] for k, v in x.items()})["image"]
    assert (moved - shared(**x)["image"]).abs().max() > 1e-6
    torch.testing.assert_close(moved[:1], one)  # per image: the other image's code does not leak in


def test_eye_centre_offsets_are_bounded():
    """However large the code map's output, each centre moves at most EYE_CENTER_MAX_OFFSET per axis."""
    from HeadNeRF.fields.gaze import EYE_CENTER_MAX_OFFSET

    x = inputs()
    per_code = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2, eye_centers_from_code=True)
    shifted = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2)
    with torch.no_grad():
        per_code.eye_center_offset.bias.fill_(1e3)  # saturates the tanh
        shifted.eye_centers += EYE_CENTER_MAX_OFFSET
        torch.testing.assert_close(per_code(**x)["image"], shifted(**x)["image"])


def test_shipped_quickstart_is_the_tiled_config_with_the_eye_frame_input_polar_table_and_auto_precision():
    """config/quickstart.yml (the default) differs from config/quickstart_tiled.yml (the earlier default) only in the
    gaze input, the head-model eye centres, the gaze region, the polar table, the MLP precision (auto: bf16 on CPUs with native bf16),
    the samples per ray (12: the density grid places them), the gaze MLP's appearance-code and view-direction inputs,
    the steps (2300 on the 48-frame data since session 25) (and run dir), and builds that model (the full training path is the quickstart's, tests/test_training.py);
    config/quickstart_fp32.yml is the default with fp32 forced, nothing else changed."""
    import os

    from HeadNeRF.config import load_yaml, to_dict
    from HeadNeRF.models import build_model

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base, variant = (to_dict(load_yaml(os.path.join(root, "config", f"{n}.yml")))
                     for n in ("quickstart_tiled", "quickstart"))
    assert variant["model"].pop("gaze_input") == "eye_frame" and base["model"].pop("gaze_input") == "tiled"
    assert variant["model"].pop("eye_centers_from_head_model") and not base["model"].pop("eye_centers_from_head_model")
    assert variant["model"].pop("gaze_region_radius") == 3.0 and base["model"].pop("gaze_region_radius") == 0.0
    assert variant["model"].pop("eye_polar_cells") == 64 and base["model"].pop("eye_polar_cells") == 0
    assert variant["model"].pop("mlp_precision") == "auto" and base["model"].pop("mlp_precision") == "fp32"
    assert variant["model"].pop("num_samples") == 12 and base["model"].pop("num_samples") == 16
    assert variant["model"].pop("gaze_appearance_input") and not base["model"].pop("gaze_appearance_input")
    assert variant["model"].pop("gaze_view_input") and not base["model"].pop("gaze_view_input")
    assert variant.pop("steps") == 2300 and base.pop("steps") == 1550
    assert variant.pop("run_dir") != base.pop("run_dir")
    assert variant == base
    default, fp32 = (to_dict(load_yaml(os.path.join(root, "config", f"{n}.yml"))) for n in ("quickstart", "quickstart_fp32"))
    assert default["model"].pop("mlp_precision") == "auto" and fp32["model"].pop("mlp_precision") == "fp32"
    assert default.pop("run_dir") != fp32.pop("run_dir")
    assert default == fp32
    cfg = load_yaml(os.path.join(root, "config", "quickstart.yml")).model
    from HeadNeRF.data.synthetic.eye_centers import head_model_shape_dim

    model = build_model(cfg, head_model_shape_dim(), DA)
    assert model.centers_from_head_model and model.eye_centers is None and model.gaze_mlp.sample_in is not None
    assert model.eye_center_offset is None and model.eye_polar is not None
    assert model.gaze_mlp.ray_in.in_features == gaze_input_dim(0) + DA + encoding_dim(cfg.gaze_view_freqs)


def test_eye_polar_table_is_a_ring_function_on_the_shell():
    """Features depend only on the angle from the optical axis (rotations about it keep them) and fade off the sphere."""
    from HeadNeRF.fields.gaze import EyePolarTable

    table = EyePolarTable(cells=16, channels=3, shell_width=0.25)
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(50, 2, 3), dim=-1)
    a = 0.7  # a rotation about the optical axis (z)
    spin = torch.tensor([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)
    on_shell = table(u)
    assert on_shell.shape == (50, 2 * 3)
    torch.testing.assert_close(table(u @ spin.T), on_shell, atol=1e-5, rtol=1e-5)
    axis = table(torch.tensor([[[0.0, 0.0, -1.0]]]))
    torch.testing.assert_close(axis, table.table[0].reshape(1, 3))  # the iris centre reads the first cell
    far = table(3.0 * u)
    assert far.abs().max() < 1e-6 * max(1.0, on_shell.abs().max().item())
    with pytest.raises(ValueError, match="cells"):
        EyePolarTable(cells=1)


def test_eye_polar_model_trains_the_table_and_needs_the_eye_frame():
    with pytest.raises(ConfigError, match="eye_polar_cells"):
        ModelConfig(eye_polar_cells=32)  # tiled gaze input
    with pytest.raises(ConfigError, match="eye_polar_cells"):
        ModelConfig(gaze_input="eye_frame", eye_polar_cells=1)
    model = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2, eye_polar_cells=8)
    assert model.gaze_mlp.sample_in.in_features == eye_frame_dim(2) + 2 * 8
    x = inputs()
    model.train()
    model(**x, training=True)["image"].square().mean().backward()
    assert model.eye_polar.table.grad is not None and model.eye_polar.table.grad.abs().sum() > 0


def test_eye_centres_from_head_model_are_the_generators_for_every_subject():
    """eye_centers_from_head_model: each image's centres are the synthetic head model's eyeballs at its shape code
    (the generator's own, also for a code never trained on), fixed (no learned parameter), and a dataset with another code layout is refused at build time with the fix in the message."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.data.synthetic.eye_centers import head_model_shape_dim
    from HeadNeRF.models import build_model
    from tests.test_models import tiny_cfg

    ds = head_model_shape_dim()
    cfg = tiny_cfg(gaze_input="eye_frame", eye_frame_freqs=2, eye_centers_from_head_model=True)
    model = build_model(cfg, ds, DA).eval()
    rng = np.random.default_rng(3)
    codes = np.stack([hm.sample_code(rng) for _ in range(3)])
    got = model.image_eye_centers(torch.tensor(codes[:, :ds], dtype=torch.float32)).detach()
    assert got.shape == (3, 2, 3)
    for code, centres in zip(codes, got):
        np.testing.assert_allclose(centres.numpy(), hm.eyeball_centers(hm.decode(code)), atol=1e-5)
    assert (got[0] - got[1]).abs().max() > 2e-3  # the subjects' eyes really are in different places
    assert model.eye_centers is None and not any("eye_cent" in n for n, _ in model.named_parameters())  # fixed
    x = inputs()
    x["shape_code"] = torch.tensor(codes[:2, :ds], dtype=torch.float32)
    with torch.no_grad():
        assert torch.isfinite(model(**x)["image"]).all()
    with pytest.raises(ValueError, match="head model's code layout"):
        build_model(cfg, DS, DA)
    with pytest.raises(ConfigError, match="eye_centers_from_head_model"):
        ModelConfig(eye_centers_from_head_model=True)  # gaze_input tiled: there are no eye frames
    with pytest.raises(ConfigError, match="set one of them"):
        ModelConfig(gaze_input="eye_frame", eye_centers_from_head_model=True, eye_centers_from_code=True)


def test_gaze_region_runs_the_gaze_mlp_near_the_eyes_only():
    """gaze_region_radius: the injections equal the full gaze MLP's within region - 1/2 eyeball radius of an eye
    centre, are exactly 0 beyond the region (a gaze changes nothing there), and a region covering every sample
    renders the same image as the model without one."""
    from HeadNeRF.fields.gaze import gaze_region_window
    from HeadNeRF.models import build_model
    from tests.test_models import tiny_cfg

    r = torch.linspace(0.0, 3.0, 31)
    w = gaze_region_window(r, 2.0)
    assert (w[r <= 1.5] == 1).all() and (w[r >= 2.0] == 0).all() and (w[1:] <= w[:-1]).all()
    x = inputs()

    def build(**kw):
        torch.manual_seed(0)
        return build_model(tiny_cfg(gaze_input="eye_frame", eye_frame_freqs=2, eye_polar_cells=8, **kw), DS, DA).eval()

    full, everywhere, region = build(), build(gaze_region_radius=1e3), build(gaze_region_radius=2.0)
    with torch.no_grad():
        a, b = everywhere(**x, render_template=True), full(**x, render_template=True)
    for key in ("image", "template_image"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # the injections themselves, on samples spread around the eyes
    g = torch.Generator().manual_seed(4)
    N, S = 40, 6
    centres = torch.tensor(MEAN_EYE_CENTERS)
    points = centres[torch.randint(0, 2, (N, S), generator=g)] + 0.12 * torch.randn(N, S, 3, generator=g) * 3
    from HeadNeRF.fields.encoding import positional_encoding
    from HeadNeRF.models import RayBatch

    rays = RayBatch(2, (1, N), torch.arange(N), torch.arange(N) % 2, torch.rand(N, S), torch.rand(N, S),
                    positional_encoding(points, 4), None, points)
    gazes = [0.3 * torch.randn(2, 2, generator=g), torch.zeros(2, 2)]
    ray_inputs = torch.randn(2, N, region.gaze_mlp.ray_in.in_features, generator=g)
    with torch.no_grad():
        centres_of_rays = region.ray_eye_centers(x["shape_code"], rays.ray_image)
        hidden, colour = region.gaze_mlp(rays.points_pe, ray_inputs, region.eye_frame_inputs(rays, gazes, centres_of_rays))
        density = region.gaze_mlp.density_offset(hidden, region.trunk.density_head.weight)
        got_density, got_colour = region.gaze_injections_near_eyes(rays, ray_inputs, gazes, centres_of_rays)
    radius = (points.unsqueeze(-2) - centres).norm(dim=-1).amin(-1) / EYE_RADIUS  # (N, S)
    near, far = radius < 1.5, radius >= 2.0
    assert near.sum() > 10 and far.sum() > 10
    torch.testing.assert_close(got_density[:, near], density[:, near])
    torch.testing.assert_close(got_colour[:, near], colour[:, near])
    assert (got_density[:, far] == 0).all() and (got_colour[:, far] == 0).all()
    with pytest.raises(ConfigError, match="gaze_region_radius"):
        ModelConfig(gaze_region_radius=2.0)  # tiled: no eye centres
    with pytest.raises(ConfigError, match="gaze_region_radius"):
        ModelConfig(gaze_input="eye_frame", gaze_region_radius=0.5)


def test_given_eye_centres_replace_the_models_own():
    """forward(eye_centers=...): the model's own centres passed back render bit-identically, other centres move the
    eyes (and only near them, with a gaze region), a model without eye frames and a wrong shape are refused."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.data.synthetic.eye_centers import head_model_shape_dim
    from HeadNeRF.models import build_model
    from HeadNeRF.shapes import ShapeError
    from tests.test_models import tiny_cfg

    ds = head_model_shape_dim()
    torch.manual_seed(0)
    model = build_model(tiny_cfg(gaze_input="eye_frame", eye_frame_freqs=2, eye_centers_from_head_model=True,
                                 gaze_region_radius=3.0), ds, DA).eval()
    rng = np.random.default_rng(5)
    x = inputs()
    x["shape_code"] = torch.tensor(np.stack([hm.sample_code(rng)[:ds] for _ in range(2)]), dtype=torch.float32)
    own = model.image_eye_centers(x["shape_code"])
    with torch.no_grad():
        plain = model(**x)["image"]
        same = model(**x, eye_centers=own)["image"]
        moved = model(**x, eye_centers=own + torch.tensor([0.0, 0.05, 0.0]))["image"]
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    assert (moved - plain).abs().max() > 1e-4
    with pytest.raises(ShapeError, match="eye_centers"):
        model(**x, eye_centers=own[:, :1])
    with pytest.raises(ValueError, match="eye_frame"):
        make("HeadNeRF_Gaze")(**inputs(), eye_centers=own)


def test_ray_directions_are_the_rays_unit_directions():
    from HeadNeRF.models import ray_directions

    g = torch.Generator().manual_seed(6)
    origins, dirs = torch.randn(30, 3, generator=g), torch.nn.functional.normalize(torch.randn(30, 3, generator=g), dim=-1)
    depths = torch.sort(0.5 + 3 * torch.rand(30, 5, generator=g), dim=-1).values
    points = origins.unsqueeze(1) + dirs.unsqueeze(1) * depths.unsqueeze(-1)
    torch.testing.assert_close(ray_directions(points), dirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ray_directions(points).norm(dim=-1), torch.ones(30))


@pytest.mark.parametrize("flag, kw, width", [
    ("gaze_view_input", {"gaze_view_freqs": 4}, encoding_dim(4)),  # a PE of each ray's direction
    ("gaze_appearance_input", {}, DA),  # the image's appearance code
])
def test_per_ray_gaze_inputs_reach_the_gaze_mlp(flag, kw, width):
    """gaze_view_input / gaze_appearance_input: the ray's direction (a PE of it) or the appearance code is a per-ray
    input of the gaze MLP, after the mask and coords: its weights get a gradient and change the render; the config
    refuses it where no gaze MLP reads it (GazeNeRF)."""
    model = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2, **{flag: True}, **kw)
    assert model.gaze_mlp.ray_in.in_features == gaze_input_dim(0) + width
    x = inputs()
    model.train()
    out = model(**x, training=True, render_template=True)
    (out["image"].square().mean() + out["template_image"].mean()).backward()
    assert model.gaze_mlp.ray_in.weight.grad[:, gaze_input_dim(0):].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        before = model(**x)["image"]
        model.gaze_mlp.ray_in.weight[:, gaze_input_dim(0):] = 0
        after = model(**x)["image"]
    assert (before - after).abs().max() > 1e-6
    with pytest.raises(ConfigError, match=flag):
        ModelConfig(model_name="GazeNeRF", **{flag: True})


def test_gaze_view_input_needs_a_ray_direction_and_valid_frequencies():
    with pytest.raises(ConfigError, match="gaze_view_input"):
        ModelConfig(num_samples=1, gaze_view_input=True)  # one sample per ray: no direction to read
    with pytest.raises(ConfigError, match="gaze_view_freqs"):
        ModelConfig(gaze_view_input=True, gaze_view_freqs=-1)


def test_eye_reflection_encoding_mirrors_the_ray_on_the_nearer_eyeball():
    """eye_reflection_encoding: PE(r) with r = d - 2 (d · n) n on the nearer eye's sphere, and d · n: a ray straight at
    the centre comes back (r = -d, d · n = -1), a tangent ray passes (r = d), r stays a unit vector."""
    from HeadNeRF.fields.gaze import eye_reflection_encoding, reflection_dim

    centres = torch.tensor(MEAN_EYE_CENTERS)
    g = torch.Generator().manual_seed(7)
    M = 50
    which = torch.randint(0, 2, (M,), generator=g)
    normal = torch.nn.functional.normalize(torch.randn(M, 3, generator=g), dim=-1)
    points = centres[which] + EYE_RADIUS * normal  # on the surface of one eye (the other is 3.4 radii away)
    tangent = torch.nn.functional.normalize(torch.linalg.cross(normal, torch.randn(M, 3, generator=g)), dim=-1)
    for d, expected_r, expected_cos in ((-normal, normal, -1.0), (tangent, tangent, 0.0)):
        enc = eye_reflection_encoding(points, d, centres, 2)
        assert enc.shape == (M, reflection_dim(2))
        torch.testing.assert_close(enc[:, :3], expected_r, atol=1e-5, rtol=0)
        torch.testing.assert_close(enc[:, -1], torch.full((M,), expected_cos), atol=1e-5, rtol=0)
    oblique = torch.nn.functional.normalize(torch.randn(M, 3, generator=g), dim=-1)
    enc = eye_reflection_encoding(points, oblique, centres.expand(M, 2, 3), 0)  # per-sample centres, no PE
    torch.testing.assert_close(enc[:, :3].norm(dim=-1), torch.ones(M))
    torch.testing.assert_close((enc[:, :3] * normal).sum(-1), -(oblique * normal).sum(-1), atol=1e-5, rtol=0)


def test_gaze_reflection_input_reaches_the_gaze_mlp_and_needs_the_gaze_region():
    from HeadNeRF.fields.gaze import reflection_dim
    from HeadNeRF.models import REFLECTION_PE_FREQS

    base = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2, gaze_region_radius=3.0)
    model = make("HeadNeRF_Gaze", gaze_input="eye_frame", eye_frame_freqs=2, gaze_region_radius=3.0,
                 gaze_reflection_input=True)
    extra = reflection_dim(REFLECTION_PE_FREQS)
    assert model.gaze_mlp.sample_in.in_features == base.gaze_mlp.sample_in.in_features + extra
    x = inputs()
    model.train()
    out = model(**x, training=True, render_template=True)
    (out["image"].square().mean() + out["template_image"].mean()).backward()
    assert model.gaze_mlp.sample_in.weight.grad[:, -extra:].abs().sum() > 0
    with pytest.raises(ConfigError, match="gaze_reflection_input"):
        ModelConfig(gaze_input="eye_frame", gaze_reflection_input=True)  # no gaze region
