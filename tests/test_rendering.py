"""Analytic-oracle tests of rays, sampling, volume rendering, encoding and gaze rotations."""

import math

import pytest
import torch

from HeadNeRF.fields.encoding import encoding_dim, positional_encoding
from HeadNeRF.fields.gaze import rotate_feature_groups
from HeadNeRF.geometry.cameras import intrinsics_matrix, look_at_w2c, project_points
from HeadNeRF.geometry.gaze import gaze_rotation, pitch_yaw_to_vector, rotate_pitch_yaw, vector_to_pitch_yaw
from HeadNeRF.rendering.rays import generate_rays, pixel_centers, ray_sphere_bounds
from HeadNeRF.rendering.sampling import stratified_samples
from HeadNeRF.rendering.volume import alpha_from_density, composite, depth_and_opacity, transmittance_weights



@pytest.fixture(autouse=True)
def _float64():
    """Exact-value tests run in float64; the global default is restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _orbit_cameras(B=3, distance=5.0):
    centers = torch.tensor([[0.0, 0.0, -distance], [2.0, -1.0, -4.0], [-3.0, 0.5, -3.5]])[:B]
    R, t = look_at_w2c(centers, torch.zeros(B, 3), torch.tensor([[1.0, 0.0, 0.0]]).expand(B, 3))
    return R, t


def test_pixel_centers_row_major():
    uv = pixel_centers(2, 3, dtype=torch.float64)
    assert uv.shape == (6, 2)
    assert torch.equal(uv[1], torch.tensor([1.5, 0.5]))  # second pixel of the first row
    assert torch.equal(uv[3], torch.tensor([0.5, 1.5]))  # first pixel of the second row


def test_rays_unit_and_through_pixel_centres():
    R, t = _orbit_cameras()
    K = intrinsics_matrix(20.0, 8, 3).double()
    K[1, 0, 2] = 3.3  # off-centre principal point
    origins, dirs = generate_rays(R, t, K, 6, 8)
    assert origins.shape == dirs.shape == (3, 48, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, 48), atol=1e-12, rtol=0)
    for depth in (0.5, 7.0):
        uv = project_points(origins + depth * dirs, R, t, K)
        torch.testing.assert_close(uv, pixel_centers(6, 8, dtype=torch.float64).expand(3, 48, 2), atol=1e-9, rtol=0)


def test_ray_sphere_bounds_exact():
    origins = torch.tensor([[[0.0, 0.0, -5.0], [0.0, 1.0, -5.0], [0.0, 2.0, -5.0], [0.0, 0.0, 0.5]]])
    dirs = torch.tensor([[[0.0, 0.0, 1.0]] * 4])
    near, far, hit = ray_sphere_bounds(origins, dirs, 1.6)
    assert hit.tolist() == [[True, True, False, True]]
    chord_half = math.sqrt(1.6**2 - 1.0)
    torch.testing.assert_close(near, torch.tensor([[3.4, 5.0 - chord_half, 0.0, 0.0]]))
    torch.testing.assert_close(far, torch.tensor([[6.6, 5.0 + chord_half, 0.0, 1.1]]))  # inside: near = 0


def test_ray_sphere_bounds_gradient_is_finite_for_missing_and_tangent_rays():
    """A camera refinement is fitted through these bounds: a missed ray must give zero gradient, not NaN."""
    origins = torch.tensor([[[0.0, 0.0, -5.0], [0.0, 2.0, -5.0], [0.0, 1.6, -5.0]]], requires_grad=True)
    dirs = torch.tensor([[[0.0, 0.0, 1.0]] * 3])
    near, far, hit = ray_sphere_bounds(origins, dirs, 1.6)
    (near.sum() + far.sum()).backward()
    assert hit.tolist() == [[True, False, False]]
    assert torch.isfinite(origins.grad).all()
    assert origins.grad[0, 1].abs().sum() == 0


def test_ray_behind_camera_misses():
    near, far, hit = ray_sphere_bounds(torch.tensor([[[0.0, 0.0, -5.0]]]), torch.tensor([[[0.0, 0.0, -1.0]]]), 1.6)
    assert not hit.any() and near.item() == 0 and far.item() == 0


def test_stratified_samples_layout():
    near, far = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 6.0]])
    depths, deltas = stratified_samples(near, far, 4)
    torch.testing.assert_close(depths[0, 0], torch.tensor([1.0, 1.5, 2.0, 2.5]))
    torch.testing.assert_close(deltas[0, 1], torch.ones(4))
    torch.testing.assert_close(deltas.sum(-1), far - near)  # last delta reaches far
    g = torch.Generator().manual_seed(0)
    jd, jdel = stratified_samples(near, far, 4, training=True, generator=g)
    edges = near.unsqueeze(-1) + (far - near).unsqueeze(-1) * torch.arange(5) / 4
    assert ((jd >= edges[..., :-1]) & (jd < edges[..., 1:])).all()  # one sample per bin
    assert not torch.equal(jd, depths)
    torch.testing.assert_close(jd[..., -1] + jdel[..., -1], far)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(stratified_samples(near, far, 4, training=True, generator=g2)[0], jd)


@pytest.mark.parametrize("d", [1.3, 2.05, 2.9])
def test_step_density_renders_its_depth(d):
    near, far = torch.full((1, 1), 1.0), torch.full((1, 1), 3.0)
    depths, deltas = stratified_samples(near, far, 64)
    density = torch.where(depths >= d, torch.tensor(1e10), torch.tensor(0.0))
    weights = transmittance_weights(alpha_from_density(density, deltas))
    depth, opacity = depth_and_opacity(weights, depths)
    assert opacity.item() == 1.0
    bin_width = 2.0 / 64
    assert 0 <= depth.item() - d < bin_width + 1e-12  # the first sample at or behind d
    values = torch.zeros(1, 1, 64, 2)
    values[..., 0] = 7.0
    values[..., 1] = depths
    torch.testing.assert_close(composite(weights, values), torch.stack((torch.tensor(7.0), depth[0, 0])).view(1, 1, 2))


def test_uniform_density_closed_form():
    near, far = torch.tensor([[0.5, 1.0]]), torch.tensor([[2.5, 1.5]])
    depths, deltas = stratified_samples(near, far, 16)
    sigma = 0.7
    weights = transmittance_weights(alpha_from_density(torch.full_like(depths, sigma), deltas))
    depth, opacity = depth_and_opacity(weights, depths)
    torch.testing.assert_close(opacity, 1 - torch.exp(-sigma * (far - near)))
    # Each weight is exactly exp(-sigma (t_i - near)) (1 - exp(-sigma delta)).
    expected_w = torch.exp(-sigma * (depths - near.unsqueeze(-1))) * (1 - torch.exp(-sigma * deltas))
    torch.testing.assert_close(weights, expected_w)
    torch.testing.assert_close(depth, (expected_w * depths).sum(-1))


def test_zero_density_is_transparent():
    depths, deltas = stratified_samples(torch.ones(2, 3), torch.full((2, 3), 2.0), 5)
    weights = transmittance_weights(alpha_from_density(torch.zeros_like(depths), deltas))
    assert torch.equal(weights, torch.zeros_like(weights))
    assert torch.equal(depth_and_opacity(weights, depths)[1], torch.zeros(2, 3))


def test_volume_gradients_finite_with_opaque_samples():
    density = torch.tensor([[0.0, 1e10, 3.0, 1e10]], requires_grad=True)
    weights = transmittance_weights(alpha_from_density(density, torch.full((1, 4), 0.1)))
    weights.sum().backward()
    assert torch.isfinite(density.grad).all()


def test_positional_encoding_known_values():
    assert encoding_dim(10) == 63 and encoding_dim(0) == 3
    pe = positional_encoding(torch.zeros(3), 2)
    assert torch.equal(pe, torch.tensor([0.0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]))
    x = torch.tensor([0.3, -1.0, 2.0])
    pe = positional_encoding(x, 3)
    assert torch.equal(pe[:3], x)
    torch.testing.assert_close(pe[3 + 6 * 2: 3 + 6 * 2 + 3], torch.sin(4 * x))  # sin(2^2 x), no pi
    torch.testing.assert_close(pe[-3:], torch.cos(4 * x))


def test_gaze_rotation_round_trips():
    g = torch.tensor([[0.0, 0.0], [0.3, -0.5], [-0.7, 1.2], [1.0, 2.5]])
    R = gaze_rotation(g)
    torch.testing.assert_close(R @ torch.tensor([0.0, 0.0, -1.0]), pitch_yaw_to_vector(g))
    torch.testing.assert_close(vector_to_pitch_yaw(pitch_yaw_to_vector(g)), g)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand(4, 3, 3))
    Rc, _ = _orbit_cameras(3)
    Rc = torch.cat((Rc, Rc[:1]))
    torch.testing.assert_close(rotate_pitch_yaw(rotate_pitch_yaw(g, Rc), Rc.transpose(-1, -2)), g)


def test_rotate_feature_groups():
    torch.manual_seed(0)
    feats = torch.randn(2, 7, 3, 4)  # 2 triplets + 1 plain channel
    R = gaze_rotation(torch.tensor([[0.2, -0.4], [0.0, 0.0]]))
    out = rotate_feature_groups(feats, R)
    torch.testing.assert_close(out[1], feats[1])  # identity rotation
    assert torch.equal(out[:, 6], feats[:, 6])  # remainder channel untouched
    v = feats[0, 3:6, 1, 2]
    torch.testing.assert_close(out[0, 3:6, 1, 2], R[0] @ v)
    torch.testing.assert_close(out[0, :6].reshape(2, 3, -1).norm(dim=1), feats[0, :6].reshape(2, 3, -1).norm(dim=1))


def test_bad_shapes_at_the_rendering_entry_points_name_expected_and_actual():
    from HeadNeRF.rendering.rays import rays_through
    from HeadNeRF.shapes import ShapeError

    R, t, K = torch.eye(3).expand(2, 3, 3), torch.tensor([[0.0, 0.0, 4.0]] * 2), torch.eye(3).expand(2, 3, 3)
    uv = torch.rand(2, 5, 2)
    assert rays_through(R, t, K, uv)[1].shape == (2, 5, 3)
    with pytest.raises(ShapeError, match=r"rays_through: K must be \(B=2, 3, 3\), got \(2, 3, 4\)"):
        rays_through(R, t, torch.zeros(2, 3, 4), uv)
    with pytest.raises(ShapeError, match=r"rays_through: t_w2c must be \(B=2, 3\), got \(1, 3\)"):
        rays_through(R, t[:1], K, uv)  # the batch must agree across the arguments
    with pytest.raises(ShapeError, match=r"generate_rays: R_w2c must be \(B, 3, 3\), got \(3, 3\)"):
        generate_rays(R[0], t, K, 2, 2)
    with pytest.raises(ShapeError, match=r"alpha_from_density: .*\(1, 2, 4\) and \(1, 2, 3\)"):
        alpha_from_density(torch.ones(1, 2, 4), torch.ones(1, 2, 3))
    with pytest.raises(ShapeError, match=r"composite: values must be weights' shape \(1, 2, 4\) \+ \(C,\), got \(1, 2, 3, 3\)"):
        composite(torch.ones(1, 2, 4), torch.ones(1, 2, 3, 3))
    with pytest.raises(ShapeError, match=r"depth_and_opacity: .*\(1, 2, 4\) and \(1, 4\)"):
        depth_and_opacity(torch.ones(1, 2, 4), torch.ones(1, 4))
