"""Training on random pixel subsets (``rays_per_image``) and the tri-plane point features.

The key property: rendering only some pixels gives exactly those pixels of the whole-image
render, for every model, so the losses on strips equal the losses on the full image restricted
to the drawn pixels.
"""

import pytest
import torch

from HeadNeRF.config import ConfigError, TrainConfig, from_dict
from HeadNeRF.fields.gaze import grid_coords, pool_eye_mask
from HeadNeRF.fields.triplane import TriplaneEncoding
from HeadNeRF.models import MODEL_CLASSES
from HeadNeRF.rendering.rays import generate_rays, pixel_index_centers, rays_through
from HeadNeRF.rendering.pixels import gather_pixels, sample_pixels
from HeadNeRF.training import train
from test_models import inputs, make
from conftest import tiny_config_dict


def test_rays_through_pixel_indices_match_the_grid():
    R = torch.eye(3).expand(2, 3, 3)
    t = torch.tensor([[0.1, -0.2, 5.0], [0.0, 0.3, 4.0]])
    K = torch.tensor([[20.0, 0, 8], [0, 21.0, 7.5], [0, 0, 1]]).expand(2, 3, 3)
    o, d = generate_rays(R, t, K, 16, 16)
    pixels = torch.tensor([[0, 17, 255], [3, 128, 200]])
    o2, d2 = rays_through(R, t, K, pixel_index_centers(pixels, 16))
    torch.testing.assert_close(d2, d.gather(1, pixels[..., None].expand(-1, -1, 3)))
    torch.testing.assert_close(o2, o[:, :3])


def test_grid_coords_of_pixels_match_the_grid():
    full = grid_coords(16)
    pixels = torch.tensor([[0, 15, 16, 255]])
    torch.testing.assert_close(grid_coords(16, pixels), full[pixels[0]][None])
    assert full[0].tolist() == [-1.0, -1.0] and full[-1].tolist() == [1.0, 1.0]


def test_pool_eye_mask_at_pixels_is_a_gather():
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    pixels = torch.tensor([[0, 5, 100], [7, 8, 255]])
    full = pool_eye_mask(mask, 2, 16, mask)
    strip = pool_eye_mask(mask, 2, 16, mask, pixels)
    assert strip.shape == (2, 1, 1, 3)
    torch.testing.assert_close(strip[:, 0, 0], full.flatten(1).gather(1, pixels))


@pytest.mark.parametrize("name", list(MODEL_CLASSES))
@pytest.mark.parametrize("triplane", [0, 4])
def test_pixel_subset_equals_whole_image_pixels(name, triplane):
    model = make(name, featmap_size=16, triplane_resolution=triplane)  # per-pixel renderer
    assert model.renders_pixel_subsets
    x = inputs()
    pixels = torch.stack([torch.randperm(256, generator=torch.Generator().manual_seed(i))[:40] for i in range(2)])
    with torch.no_grad():
        full = model(**x, render_template=True)
        part = model(**x, render_template=True, pixels=pixels)
    assert part["image"].shape == (2, 3, 1, 40)
    for key in ("image", "template_image") if name == "HeadNeRF_Gaze" else ("image",):
        want = full[key].flatten(2).gather(2, pixels[:, None].expand(-1, 3, -1))
        torch.testing.assert_close(part[key][:, :, 0], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(part["opacity"][:, 0, 0], full["opacity"].flatten(1).gather(1, pixels), atol=1e-5,
                               rtol=0)


def test_pixel_subsets_refused_with_an_upsampling_renderer():
    model = make("HeadNeRF_Gaze")  # 8² features -> 16² image
    assert not model.renders_pixel_subsets
    with pytest.raises(ValueError, match="featmap_size == image_size"):
        model(**inputs(), pixels=torch.zeros(2, 4, dtype=torch.long))


def test_sample_pixels_distinct_in_range_and_eye_weighted():
    eye = torch.zeros(2, 1, 16, 16)
    eye[:, :, 4:6, 4:12] = 1.0  # 16 of 256 pixels
    g = torch.Generator().manual_seed(0)
    pixels = sample_pixels(eye, 64, 10.0, g)
    assert pixels.shape == (2, 64) and pixels.min() >= 0 and pixels.max() < 256
    assert all(len(set(row.tolist())) == 64 for row in pixels)
    eye_share = eye.flatten(1).gather(1, pixels).mean().item()
    uniform = eye.flatten(1).gather(1, sample_pixels(eye, 64, 1.0, g)).mean().item()
    # 16 eye pixels can be at most 16/64 of the draws; 10x weight takes nearly all of them, uniform ~1/16
    assert eye_share > 0.18 and uniform < 0.15
    again = sample_pixels(eye, 64, 10.0, torch.Generator().manual_seed(0))
    assert torch.equal(pixels, again)


def test_gather_pixels_makes_strips():
    batch = {"image": torch.arange(2 * 3 * 16).float().view(2, 3, 4, 4), "head_mask": torch.ones(2, 1, 4, 4),
             "K": torch.eye(3).expand(2, 3, 3)}
    out = gather_pixels(batch, torch.tensor([[0, 15], [1, 2]]))
    assert out["image"].shape == (2, 3, 1, 2) and out["head_mask"].shape == (2, 1, 1, 2)
    assert out["image"][0, :, 0].tolist() == [[0, 15], [16, 31], [32, 47]]
    assert out["K"] is batch["K"]


def test_triplane_reads_its_texels():
    enc = TriplaneEncoding(resolution=4, channels=2, bound_radius=2.0)
    # align_corners=False: texel (i, j) of a 4-texel plane over [-2, 2] is centred at -2 + (i + 0.5)
    point = torch.tensor([[-1.5, 0.5, 1.5]])  # x texel 0, y texel 2, z texel 3
    feats = enc(point)
    assert feats.shape == (1, 6)
    P = enc.planes.detach()
    # grid_sample's (x, y) index (width, height): plane xy -> P[0][:, y, x]
    torch.testing.assert_close(feats[0, 0:2], P[0, :, 2, 0])
    torch.testing.assert_close(feats[0, 2:4], P[1, :, 3, 0])
    torch.testing.assert_close(feats[0, 4:6], P[2, :, 3, 2])


def _subset_cfg(tiny_dataset, run_dir, **kw):
    d = tiny_config_dict(tiny_dataset, run_dir)
    d["model"].update(featmap_size=16, triplane_resolution=8)
    d.update(rays_per_image=32, eye_ray_weight=4.0, triplane_lr_scale=3.0)
    d.update(kw)
    return d


def test_config_checks_pixel_subsets(tiny_dataset):
    d = _subset_cfg(tiny_dataset, "unused")
    d["model"]["featmap_size"] = 8
    with pytest.raises(ConfigError, match="featmap_size"):
        from_dict(TrainConfig, d)
    d = _subset_cfg(tiny_dataset, "unused")
    d["loss_config"]["vgg"] = 1.0
    with pytest.raises(ConfigError, match="VGG"):
        from_dict(TrainConfig, d)
    with pytest.raises(ConfigError, match="rays_per_image"):
        from_dict(TrainConfig, _subset_cfg(tiny_dataset, "unused", rays_per_image=16 * 16 + 1))


def test_training_on_pixel_subsets_resumes_exactly(tiny_dataset, tmp_path, monkeypatch):
    import HeadNeRF.rendering.density_grid as density_grid
    from HeadNeRF.checkpoint import load_checkpoint

    # with a density grid that starts skipping empty rays after 2 records, i.e. across the resume
    monkeypatch.setattr(density_grid, "SKIP_AFTER_RECORDS", 2)

    def cfg(run_dir, **kw):
        d = _subset_cfg(tiny_dataset, str(tmp_path / run_dir), **kw)
        d["model"]["density_grid_resolution"] = 8
        return from_dict(TrainConfig, d)

    report = train(cfg("a"), progress=False)
    assert report["steps"] == 4 and report["psnr_head_heldout_frames"] > 0
    train(cfg("b", steps=2), progress=False)
    train(cfg("b"), resume=str(tmp_path / "b"), progress=False)
    a, b = load_checkpoint(str(tmp_path / "a")), load_checkpoint(str(tmp_path / "b"))
    groups = a["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(3.0 * groups[0]["lr"])  # the tri-plane group
    assert len(groups[1]["params"]) == 1
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6), k
    assert int(a["model"]["density_grid.num_records"]) == 4 and a["model"]["density_grid.density"].sum() > 0
