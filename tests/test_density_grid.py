"""The cached density grid and the samples it guides (HeadNeRF/rendering/density_grid.py)."""

import pytest
import torch

from HeadNeRF.models import MODEL_CLASSES
from HeadNeRF.rendering.density_grid import DensityGrid, grid_bin_weights, grid_guided_samples, pdf_samples
from test_models import inputs, make


def _rays(n=4):
    origins = torch.tensor([[0.0, 0.0, -3.0]]).repeat(n, 1)
    directions = torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)
    return origins, directions, torch.full((n,), 2.0), torch.full((n,), 4.0)


def test_pdf_samples_of_equal_weights_are_the_bin_centres():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    depths, deltas = pdf_samples(near, far, torch.ones(2, 7), 4)
    torch.testing.assert_close(depths[0], torch.tensor([1.25, 1.75, 2.25, 2.75]))
    torch.testing.assert_close(depths[1], torch.tensor([2.5, 3.5, 4.5, 5.5]))
    torch.testing.assert_close(deltas[1], torch.tensor([1.0, 1.0, 1.0, 0.5]))


def test_pdf_samples_jittered_stay_in_their_strata_and_increase():
    near, far = torch.zeros(500), torch.full((500,), 2.0)
    g = torch.Generator().manual_seed(0)
    depths, deltas = pdf_samples(near, far, torch.ones(500, 16), 8, training=True, generator=g)
    strata = torch.arange(8) * 0.25
    assert ((depths >= strata) & (depths <= strata + 0.25)).all()
    assert (deltas >= 0).all()
    torch.testing.assert_close(deltas.sum(-1), far - depths[:, 0])
    # uniform inside each stratum: the mean offset is about half a stratum
    assert abs((depths - strata).mean().item() - 0.125) < 0.01


def test_pdf_samples_follow_the_weights():
    near, far = torch.zeros(3), torch.ones(3)
    w = torch.zeros(3, 10)
    w[:, 6] = 1.0  # all mass in [0.6, 0.7)
    depths, _ = pdf_samples(near, far, w, 5, training=True, generator=torch.Generator().manual_seed(1))
    assert ((depths >= 0.6) & (depths <= 0.7)).all()


def test_grid_records_decaying_maxima_at_lattice_nodes():
    grid = DensityGrid(resolution=5, radius=1.0, decay=0.5)  # nodes at -1, -0.5, 0, 0.5, 1
    node = torch.tensor([[0.5, 0.0, -0.5]])
    grid.record(node.repeat(3, 1), torch.tensor([1.0, 4.0, 2.0]))
    torch.testing.assert_close(grid.query(node), torch.tensor([4.0]))
    assert grid.density.sum().item() == 4.0  # one node written
    grid.record(node, torch.tensor([1.0]))
    torch.testing.assert_close(grid.query(node), torch.tensor([2.0]))  # max(0.5 * 4, 1)
    # halfway between two nodes: linear interpolation; outside the cube: zero; far points not recorded
    torch.testing.assert_close(grid.query(torch.tensor([[0.25, 0.0, -0.5]])), torch.tensor([1.0]))
    grid.record(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([9.0]))
    assert grid.density.max().item() == 1.0
    assert grid.query(torch.tensor([[3.0, 0.0, 0.0]])).item() == 0.0


def test_empty_grid_gives_uniform_samples_and_a_blob_attracts_them():
    grid = DensityGrid(resolution=9, radius=1.0)
    o, d, near, far = _rays()
    weights, opacity = grid_bin_weights(grid, o, d, near, far)
    depths, _ = grid_guided_samples(weights, near, far, 8)
    assert (opacity == 0).all()
    torch.testing.assert_close(depths, pdf_samples(near, far, torch.ones(4, 8), 8)[0])
    grid.record(torch.zeros(1, 3), torch.tensor([100.0]))  # an opaque blob at the origin (depth 3)
    weights, opacity = grid_bin_weights(grid, o, d, near, far)
    depths, _ = grid_guided_samples(weights, near, far, 16, uniform_fraction=0.25)
    assert (opacity > 0.99).all()
    near_blob = ((depths - 3.0).abs() < 0.3).float().mean().item()
    assert near_blob >= 0.7  # uniform alone would put 30% there
    assert (depths < 2.7).any() and (depths > 3.3).any()  # the uniform share still reaches the rest


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_pixel_subset_equals_whole_image_with_a_grid(name):
    model = make(name, featmap_size=16, density_grid_resolution=8)
    x = inputs()
    with torch.no_grad():
        model.density_grid.record(torch.randn(200, 3) * 0.5, torch.rand(200) * 20)
        full = model(**x)
        pixels = torch.stack([torch.randperm(256, generator=torch.Generator().manual_seed(i))[:40] for i in range(2)])
        part = model(**x, pixels=pixels)
    want = full["image"].flatten(2).gather(2, pixels[:, None].expand(-1, 3, -1))
    torch.testing.assert_close(part["image"][:, :, 0], want, atol=1e-5, rtol=0)


def test_training_forwards_fill_the_grid_and_evaluation_leaves_it():
    model = make("HeadNeRF_Gaze", density_grid_resolution=8)
    x = inputs()
    with torch.no_grad():
        model(**x)
    assert model.density_grid.density.abs().sum().item() == 0.0
    model(**x, training=True, generator=torch.Generator().manual_seed(0))
    filled = model.density_grid.density.clone()
    assert filled.sum().item() > 0
    with torch.no_grad():
        model(**x)
    assert torch.equal(model.density_grid.density, filled)
    assert "density_grid.density" in model.state_dict()


def _blob_model(name, ready: bool):
    model = make(name, featmap_size=16, density_grid_resolution=9)
    model.density_grid.record(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([30.0]))  # an opaque blob at the centre
    model.density_grid.num_records.fill_(1000 if ready else 1)
    return model


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_rays_empty_in_a_ready_grid_are_skipped_and_render_background(name):
    x = inputs()
    with torch.no_grad():
        full = _blob_model(name, ready=False)(**x)  # not ready yet: every ray is evaluated
        model = _blob_model(name, ready=True)
        skipped = model(**x)
        rays = model.make_rays(x["R_w2c"], x["t_w2c"], x["K"], training=False)
    kept = torch.zeros(2 * 16 * 16, dtype=torch.bool)
    kept[rays.ray_index] = True
    kept = kept.view(2, 1, 16, 16)
    assert 0 < kept.sum() < 0.5 * kept.numel()  # the blob covers the centre only
    # kept rays render exactly as without skipping; skipped ones are pure background (opacity 0)
    torch.testing.assert_close(skipped["opacity"][kept], full["opacity"][kept])
    assert (skipped["opacity"][~kept] == 0).all() and (full["opacity"][~kept] > 0).any()
    background = model.renderer(torch.zeros(2, model.cfg.featmap_channels, 16, 16), torch.zeros(2, 1, 16, 16))
    torch.testing.assert_close(skipped["image"][~kept.expand(-1, 3, -1, -1)],
                               background[~kept.expand(-1, 3, -1, -1)])


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
def test_a_ready_empty_grid_renders_background_and_trains_without_error(name):
    model = make(name, featmap_size=16, density_grid_resolution=8)
    model.density_grid.num_records.fill_(1000)  # ready, but nothing recorded: every ray is empty
    out = model(**inputs(), training=True, render_template=True, render_background=True,
                generator=torch.Generator().manual_seed(0))
    assert (out["opacity"] == 0).all()
    out["image"].mean().backward()  # no rays, no crash
