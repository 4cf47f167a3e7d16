"""The three models, composed from the shared pieces, and ``redirect``.

Pipeline of every model (one ray per feature pixel, ``h = w = featmap_size``):

    camera -> rays through pixel centres (K rescaled to the feature grid)
           -> ray / bound-sphere intersection; only rays that hit are kept (flat (N,) index)
           -> S stratified samples on each kept ray's chord (or grid-guided ones) -> PE(points) (N, S, P)
           -> field(s) -> densities (N, S), features (N, S, C)
           -> volume rendering -> scattered back to (B, C, h, w) maps (zeros for missed rays)
           -> feature-space background compositing -> 2-D neural renderer -> (B, 3, S, S)

Models:

* ``HeadNeRF``: the conditional trunk alone; no gaze input (the baseline).
* ``HeadNeRF_Gaze`` (the seed's model): trunk + gaze MLP whose outputs are added to the
  trunk's density and colour states. A template pass (gaze = 0, + N(0, template_gaze_noise)
  on (pitch, yaw) while training) produces ``template_image``; ``feat_addition_alpha`` blends
  the gaze and template injections of the main image. The trunk does not depend on gaze, so
  both passes share one trunk evaluation; the gaze MLP runs its passes as one stacked batch.
  The template pass is only run when asked for, or when ``feat_addition_alpha < 1`` needs it.
* ``GazeNeRF`` (CVPR'23 two-stream design): a face stream and an eye stream, each a
  conditional trunk whose shape code is extended with the head-frame gaze (as in the
  released code). The eye stream's rendered feature map is rotated by
  ``gaze_rotation(gaze_head)`` in channel triplets, then merged with the face map by
  element-wise maximum. **Eye-region restriction**: with ``m`` the eye mask average-pooled
  to the feature grid, ``merged = face + m * (max(face, eye_rotated) - face)`` (the maximum
  inside the eyes, the face outside, a linear blend on mask borders; opacity is merged the
  same way). The eye stream is evaluated **only on rays with m > 0**, so its cost is
  proportional to the eye area; with no eye mask it is not run at all.

Speed decisions (measured in ``benchmarks/bench_render.py``):

* Empty space is skipped: samples lie only on each ray's chord through the bound sphere
  (``ModelConfig.bound_radius``), and rays that miss it are never evaluated: the hitting rays
  of the whole batch are gathered into one flat ``(N, S, ·)`` set, evaluated with
  channels-last ``nn.Linear`` layers, and scattered back (missed pixels get zero features,
  opacity and depth, i.e. pure background).
* With ``ModelConfig.density_grid_resolution`` > 0 a cached density grid
  (``rendering/density_grid.py``, filled from the training forwards' own samples) places
  the S samples where the rays stop, and rays that are empty in it are skipped like rays
  that miss the sphere.
* Without autograd the MLPs run in ray chunks that keep activations in cache
  (``fields/trunk.ray_chunks``).
* Per-image codes and per-ray gaze inputs enter through split first/skip layers computed
  once per image / ray (see ``fields/trunk.py`` and ``fields/gaze.py``).
* HeadNeRF_Gaze's template pass shares the trunk; only the gaze MLP and the two heads run
  again. Nothing is computed for the template unless it is rendered or blended.
* The background image is decoded only when ``render_background`` asks for it.
* Under bf16 MLPs the rays (and the gaze region's near-eye samples) are padded to recurring counts
  (``RAY_BUCKET``, ``GAZE_SAMPLE_BUCKET``): oneDNN compiles a bf16 GEMM for every new row count, and
  these counts change every training step (quickstart training 422 -> 296 s, README "Speed").

Point encoding: PE(points), optionally concatenated with learned tri-plane features
(``ModelConfig.triplane_resolution``, ``fields/triplane.py``) that every field reads.

Pixel subsets: when ``featmap_size == image_size`` the renderer is a per-pixel 1×1 conv, so
``forward(..., pixels=(B, K))`` renders only those pixels, as (B, ·, 1, K) strips, and gives
exactly the values of the whole-image render there. Training then spends its rays on many
images at full resolution instead of on whole low-resolution feature maps
(``TrainConfig.rays_per_image``).

Common forward signature: see ``GazeModelBase.forward``.
"""

import contextlib
import functools
import dataclasses

import torch
from torch import nn

from .config import ModelConfig
from .fields.encoding import encoding_dim, positional_encoding
from .fields.gaze import (EYE_CENTER_MAX_OFFSET, MEAN_EYE_CENTERS, EyePolarTable, GazeMLP, eye_frame_dim, eye_frame_encoding,
                          eye_reflection_encoding, reflection_dim,
                          eye_frame_points, eye_offsets, gaze_input_dim, gaze_region_window, grid_coords, per_ray_gaze_inputs,
                          pool_eye_mask, rotate_feature_groups)
from .fields.triplane import TriplaneEncoding
from .fields.trunk import ConditionalTrunk
from .geometry.cameras import scale_intrinsics
from .geometry.gaze import gaze_in_head_frame, gaze_rotation
from .neural_renderer import NeuralRenderer
from .rendering.density_grid import EMPTY_RAY_OPACITY, DensityGrid, grid_bin_weights, grid_guided_samples
from .rendering.rays import generate_rays, pixel_index_centers, ray_sphere_bounds, rays_through
from .rendering.sampling import stratified_samples
from .shapes import check_shape
from .rendering.volume import alpha_from_density, composite, depth_and_opacity, transmittance_weights

REFLECTION_PE_FREQS = 3  # PE frequencies of the mirrored ray (ModelConfig.gaze_reflection_input)
EYE_POLAR_CHANNELS = 8  # features per eye of the optional eye polar table (ModelConfig.eye_polar_cells)

__all__ = ["HeadNeRF", "HeadNeRF_Gaze", "GazeNeRF", "MODEL_CLASSES", "build_model", "redirect",
           "camera_for_head_pose", "RayBatch", "eval_mode", "mlp_autocast", "native_bf16_cpu", "resolve_mlp_precision"]


def _head_model_eyes():
    """``data.synthetic.eye_centers``, imported when a model needs it (the package imports pytorch3d's renderer)."""
    from .data.synthetic import eye_centers

    return eye_centers


# Under bf16 field MLPs the rows of every MLP product are rounded up to these multiples (``pad_rows``): oneDNN builds
# (JIT-compiles) a bf16 GEMM for each new row count, ~0.7 ms for a (24k, 128) @ (128, 128) product, and the hit-ray and
# near-eye sample counts change every training step, so without buckets each of a step's ~70 products paid it (a
# quickstart step: 202 -> 180 ms with the shapes seen before; measured 2026-12-03). fp32 products (MKL) do not care.
RAY_BUCKET = 64  # rays (x S samples per ray)
GAZE_SAMPLE_BUCKET = 256  # near-eye samples of the gaze MLP (``HeadNeRF_Gaze.gaze_injections_near_eyes``)


def padded_count(count: int, bucket: int) -> int:
    """``count`` rounded up to the next multiple of ``bucket`` strictly above it (at least one padding row: a slot
    whose output is thrown away); ``count`` itself when ``bucket <= 0`` or ``count == 0``."""
    if bucket <= 0 or count == 0:
        return count
    return (count // bucket + 1) * bucket


def pad_rows(count: int, bucket: int, device=None) -> torch.Tensor:
    """Row index ``(padded_count,)``: rows ``0..count-1``, then copies of row 0."""
    index = torch.arange(count, device=device)
    return torch.cat((index, index.new_zeros(padded_count(count, bucket) - count)))


def ray_directions(points: torch.Tensor) -> torch.Tensor:
    """(N, S >= 2, 3) samples along each ray, nearest first -> (N, 3) unit ray directions (from its first to last sample)."""
    return nn.functional.normalize((points[:, -1] - points[:, 0]).float(), dim=-1)


@dataclasses.dataclass
class RayBatch:
    """The rays of a batch that hit the bound sphere, flattened.

    ``ray_index (N,)`` indexes the flat ``(B * h * w)`` ray grid (``h, w = grid``); ``ray_image (N,)`` is the
    image of each ray; ``depths, deltas (N, S)``; ``points_pe (N, S, P)``.

    ``num_rays``: the real rays are the first ``num_rays``; the rest (``RAY_BUCKET`` padding under bf16, copies of
    ray 0) only give the MLP products a recurring row count: ``render_rays`` drops them, so they reach no output
    and get no gradient. None: every ray is real.
    """

    batch: int
    grid: tuple[int, int]  # (h, w) of the ray grid: the feature map, or (1, K) for a pixel subset
    ray_index: torch.Tensor
    ray_image: torch.Tensor
    depths: torch.Tensor
    deltas: torch.Tensor
    points_pe: torch.Tensor
    pixels: torch.Tensor | None = None  # (B, K) output-image pixel indices when rendering a subset
    points: torch.Tensor | None = None  # (N, S, 3) sample positions (head frame)
    num_rays: int | None = None

    @property
    def count(self) -> int:
        """The number of real rays (the leading ``count`` of the N)."""
        return self.ray_index.shape[0] if self.num_rays is None else self.num_rays

    @property
    def padded(self) -> bool:
        """True when padding rays follow the real ones (then at least one: ``pad_rows``)."""
        return self.count < self.ray_index.shape[0]

    def subset(self, keep: torch.Tensor) -> "RayBatch":
        """The real rays where ``keep (N,)`` is True (no padding)."""
        sel = keep[: self.count].nonzero().squeeze(1)
        return RayBatch(self.batch, self.grid, self.ray_index[sel], self.ray_image[sel], self.depths[sel],
                        self.deltas[sel], self.points_pe[sel], self.pixels,
                        None if self.points is None else self.points[sel])

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """(count, C) values of the real rays -> (B, C, h, w) map, zero where rays missed."""
        h, w = self.grid
        full = values.new_zeros(self.batch * h * w, values.shape[-1])
        full = full.index_copy(0, self.ray_index[: self.count], values)
        # contiguous NCHW: the renderer's convs then see one memory format whatever the hit set
        return full.view(self.batch, h, w, -1).permute(0, 3, 1, 2).contiguous()


def mlp_autocast(precision: str, device_type: str):
    """The context the field MLPs run in: nothing for ``"fp32"``; bf16 autocast for ``"bf16"``.

    ``ModelConfig.mlp_precision = "bf16"`` is an opt-in speed-up, not bit-identical: the Linear
    layers' products run in bfloat16 (fp32 accumulation, fp32 master weights), while
    ``render_rays`` composites in fp32 and the 2-D renderer runs outside the context. Measured
    on this VM's AVX512-BF16 CPU, 1 thread: a 57 344 × 384 @ 384 × 384 product 86 -> 280
    GFLOP/s; a quickstart train step (2 × 1024 pixels) 402 -> 210 ms of CPU, and 300 such steps
    reached 21.8 dB held-out head PSNR against 22.1 in fp32 (one run each, same seed);
    benchmarks/bench_render.py prints both modes. Off by default: the renderer tests pin fp32
    outputs, and the quality of a whole quickstart in bf16 is not measured yet.
    """
    if resolve_mlp_precision(precision, device_type) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


@functools.lru_cache(maxsize=None)  # read once per process: mlp_autocast asks on every forward
def native_bf16_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 flags; Linux's cpuinfo).

    Elsewhere (no cpuinfo, or only AVX2/AVX512 without them) bf16 autocast is emulated and slower
    than fp32, so ``auto`` stays fp32 there."""
    try:
        with open(cpuinfo) as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mlp_precision(precision: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` on a CPU with native bf16, else ``fp32`` (and fp32 on CUDA); other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cpu" and native_bf16_cpu() else "fp32"


def render_rays(rays: RayBatch, features: torch.Tensor, density: torch.Tensor) -> dict:
    """Volume-render one field over ``rays``.

    Args:
        features: (N, S, C); density: (N, S) >= 0.
    Returns:
        dict of (B, ·, h, w) maps: "features" (pre-multiplied), "opacity", "depth"; and
        "sample_density" (count, S), the real rays' densities themselves (for the density grid).
    """
    dims = check_shape("render_rays", "density", density, ("N", "S"))
    check_shape("render_rays", "features", features, ("N", "S", None), dims)
    check_shape("render_rays", "rays.deltas", rays.deltas, ("N", "S"), dims)
    n = rays.count  # padding rays (RayBatch.num_rays) stop here: no output, no gradient
    with torch.autocast(rays.depths.device.type, enabled=False):  # fp32 compositing, also under mlp_precision bf16
        features, density = features[:n].float(), density[:n].float()
        weights = transmittance_weights(alpha_from_density(density, rays.deltas[:n]))  # (n, S)
        feat = composite(weights, features)  # (n, C)
        depth, opacity = depth_and_opacity(weights, rays.depths[:n])  # (n,), (n,)
    return {"features": rays.scatter(feat), "opacity": rays.scatter(opacity.unsqueeze(-1)),
            "depth": rays.scatter(depth.unsqueeze(-1)), "sample_density": density}


class GazeModelBase(nn.Module):
    """Shared ray set-up, renderer and output assembly. Subclasses implement ``render_fields``."""

    def __init__(self, cfg: ModelConfig, shape_code_dim: int, appearance_code_dim: int):
        super().__init__()
        self.cfg = cfg
        self.shape_code_dim, self.appearance_code_dim = shape_code_dim, appearance_code_dim
        self.point_dim = encoding_dim(cfg.pe_freqs)
        self.triplane = None
        if cfg.triplane_resolution:
            self.triplane = TriplaneEncoding(cfg.triplane_resolution, cfg.triplane_channels, cfg.bound_radius)
            self.point_dim += self.triplane.out_dim
        self.density_grid = None
        if cfg.density_grid_resolution:
            self.density_grid = DensityGrid(cfg.density_grid_resolution, cfg.bound_radius)
        self.renderer = NeuralRenderer(cfg.featmap_size, cfg.featmap_channels, cfg.image_size, cfg.renderer_min_channels)
        self.bucket_rows: bool | None = None  # None: pad the MLPs' row counts under bf16 only (``ray_bucket``)

    def make_rays(self, R_w2c, t_w2c, K, training: bool, generator=None, pixels=None) -> RayBatch:
        """Rays of the feature grid (or of ``pixels (B, K)``) that hit the bound sphere, with their samples."""
        cfg = self.cfg
        if pixels is None:
            K_feat = scale_intrinsics(K, cfg.featmap_size / cfg.image_size)
            origins, directions = generate_rays(R_w2c, t_w2c, K_feat, cfg.featmap_size, cfg.featmap_size)  # (B, R, 3)
            grid = (cfg.featmap_size, cfg.featmap_size)
        else:
            origins, directions = rays_through(R_w2c, t_w2c, K, pixel_index_centers(pixels, cfg.image_size, K.dtype))
            grid = (1, pixels.shape[1])
        near, far, hit = ray_sphere_bounds(origins, directions, cfg.bound_radius)
        ray_index = hit.reshape(-1).nonzero().squeeze(1)  # (N,)
        R = grid[0] * grid[1]
        o = origins.reshape(-1, 3)[ray_index]
        d = directions.reshape(-1, 3)[ray_index]
        near, far = near.reshape(-1)[ray_index], far.reshape(-1)[ray_index]
        if self.density_grid is None:
            depths, deltas = stratified_samples(near, far, cfg.num_samples, training, generator)  # (N, S)
        else:  # concentrated where the rays stop in the union of the heads seen so far
            # Where the samples go is a sampling decision, not a quantity to differentiate: the grid is a cache with
            # no gradient, and a fit that refines the camera would otherwise backpropagate through the grid's
            # trilinear reads and the inverse CDF of every ray (the depths still follow the camera via near / far).
            with torch.no_grad():
                weights, grid_opacity = grid_bin_weights(self.density_grid, o, d, near, far)
            # Drawn for every ray before skipping, so the jitter stream does not depend on the grid's verdicts
            # (the sampling itself is a few ms; the MLPs are what skipping saves).
            depths, deltas = grid_guided_samples(weights, near, far, cfg.num_samples, training=training,
                                                 generator=generator)
            if self.density_grid.ready:  # rays through empty cells are not evaluated: they render as background
                keep = (grid_opacity >= EMPTY_RAY_OPACITY).nonzero().squeeze(1)
                ray_index, o, d, depths, deltas = (x[keep] for x in (ray_index, o, d, depths, deltas))
        num_rays = ray_index.shape[0]
        rows = pad_rows(num_rays, self.ray_bucket(o.device.type), o.device)  # bf16: a recurring row count
        if rows.shape[0] > num_rays:
            ray_index, o, d, depths, deltas = (x[rows] for x in (ray_index, o, d, depths, deltas))
        points = o.unsqueeze(1) + d.unsqueeze(1) * depths.unsqueeze(-1)  # (N, S, 3)
        encoded = positional_encoding(points, cfg.pe_freqs)
        if self.triplane is not None:
            encoded = torch.cat((encoded, self.triplane(points)), dim=-1)
        return RayBatch(R_w2c.shape[0], grid, ray_index, torch.div(ray_index, R, rounding_mode="floor"),
                        depths, deltas, encoded, pixels, points, num_rays)

    def ray_bucket(self, device_type: str) -> int:
        """Rays are padded to multiples of this (``pad_rows``): ``RAY_BUCKET`` when the field MLPs run in bf16 (oneDNN
        compiles a GEMM per row count), else 0. ``self.bucket_rows`` = True / False forces it on / off (tests)."""
        on = self.bucket_rows
        if on is None:
            on = resolve_mlp_precision(self.cfg.mlp_precision, device_type) == "bf16"
        return RAY_BUCKET if on else 0

    def render_fields(self, rays, shape_code, appearance_code, gaze_head, pooled_eye_mask, training, render_template,
                      generator, eye_centers=None) -> tuple[dict, dict | None]:
        """-> (main maps, template maps or None), each from ``render_rays``. ``eye_centers``: ``forward``'s."""
        raise NotImplementedError

    @property
    def renders_pixel_subsets(self) -> bool:
        """True when ``forward`` accepts ``pixels``: the renderer is per-pixel (featmap_size == image_size)."""
        return self.renderer.pointwise

    def check_inputs(self, shape_code, appearance_code, R_w2c, t_w2c, K, gaze_head, eye_mask, pixels,
                     eye_centers=None) -> int:
        """Raise one :class:`~HeadNeRF.shapes.ShapeError` naming the argument, expected and actual shape; return B."""
        where = f"{type(self).__name__}.forward"
        dims = check_shape(where, "shape_code", shape_code, ("B", self.shape_code_dim))
        check_shape(where, "appearance_code", appearance_code, ("B", self.appearance_code_dim), dims)
        check_shape(where, "R_w2c", R_w2c, ("B", 3, 3), dims)
        check_shape(where, "t_w2c", t_w2c, ("B", 3), dims)
        check_shape(where, "K", K, ("B", 3, 3), dims)
        if gaze_head is not None:
            check_shape(where, "gaze_head", gaze_head, ("B", 2), dims)
        if eye_mask is not None:
            check_shape(where, "eye_mask", eye_mask, ("B", 1, "H", "H"), dims)
        if pixels is not None:
            check_shape(where, "pixels", pixels, ("B", None), dims)
        if eye_centers is not None:
            if not getattr(self, "eye_frame", False):
                raise ValueError(f"{where}: eye_centers is for eye_frame models (gaze_input: eye_frame); this model "
                                 "has no eyeball frame")
            check_shape(where, "eye_centers", eye_centers, ("B", 2, 3), dims)
        return dims["B"]

    def forward(self, shape_code, appearance_code, R_w2c, t_w2c, K, gaze_head=None, eye_mask=None,
                training: bool = False, render_template: bool = False, render_background: bool = False,
                generator=None, pixels: torch.Tensor | None = None, eye_centers: torch.Tensor | None = None) -> dict:
        """Render images.

        Args:
            shape_code: (B, Ds); appearance_code: (B, Da).
            R_w2c (B, 3, 3), t_w2c (B, 3): world(head)→camera extrinsics.
            K: (B, 3, 3) in pixels of the output image (``cfg.image_size``).
            gaze_head: (B, 2) head-frame (pitch, yaw) in radians, or None (= 0). HeadNeRF ignores it.
            eye_mask: (B, 1, H, W) in [0, 1] at any H = W, or None (= no eye region).
            training: stratified jitter and template-gaze noise.
            render_template: also return "template_image" (HeadNeRF_Gaze only).
            render_background: also return "background_image" (1, 3, S, S).
            generator: optional torch.Generator for the jitter and the noise.
            pixels: (B, K) long row-major indices into the S × S output image: render only those
                pixels (training on pixel subsets). Needs a per-pixel renderer
                (``renders_pixel_subsets``); the image maps are then (B, ·, 1, K) strips.
            eye_centers: (B, 2, 3) head-frame eyeball centres [subject's right, left] to use instead of the
                model's own (``image_eye_centers`` of the shape code); eye_frame models only. A fit passes the
                centres of its starting code so that they stay put while the code moves (``FitConfig.eye_centers``).
        Returns:
            dict: "image" (B, 3, S, S) in [0, 1], "opacity" (B, 1, h, w), "depth" (B, 1, h, w),
            optionally "template_image" (B, 3, S, S) and "background_image" (1, 3, S, S).
        """
        B = self.check_inputs(shape_code, appearance_code, R_w2c, t_w2c, K, gaze_head, eye_mask, pixels, eye_centers)
        if pixels is not None and not self.renders_pixel_subsets:
            raise ValueError("pixels: rendering a pixel subset needs featmap_size == image_size (a per-pixel "
                             f"renderer); this model renders {self.cfg.featmap_size}² features to "
                             f"{self.cfg.image_size}² images")
        rays = self.make_rays(R_w2c, t_w2c, K, training, generator, pixels)
        if gaze_head is None:
            gaze_head = shape_code.new_zeros(B, 2)
        pooled = pool_eye_mask(eye_mask, B, self.cfg.featmap_size, shape_code, pixels)  # (B, 1, h, w)
        with mlp_autocast(self.cfg.mlp_precision, shape_code.device.type):
            main, template = self.render_fields(rays, shape_code, appearance_code, gaze_head, pooled, training,
                                                render_template, generator, eye_centers)
        if training and self.density_grid is not None:
            self.density_grid.record(rays.points[: rays.count], main["sample_density"])
        out = {"image": self.renderer(main["features"], main["opacity"], pixels), "opacity": main["opacity"],
               "depth": main["depth"]}
        if template is not None:
            out["template_image"] = self.renderer(template["features"], template["opacity"], pixels)
        if render_background:
            out["background_image"] = self.renderer.render_background()
        return out


class HeadNeRF(GazeModelBase):
    """The baseline conditional head NeRF; gaze is accepted and ignored."""

    def __init__(self, cfg: ModelConfig, shape_code_dim: int, appearance_code_dim: int):
        super().__init__(cfg, shape_code_dim, appearance_code_dim)
        self.trunk = ConditionalTrunk(self.point_dim, shape_code_dim, appearance_code_dim, cfg.mlp_width,
                                      cfg.mlp_depth, cfg.skip_layer, cfg.featmap_channels)

    def render_fields(self, rays, shape_code, appearance_code, gaze_head, pooled_eye_mask, training, render_template,
                      generator, eye_centers=None):
        features, density = self.trunk(rays.points_pe, shape_code, appearance_code, rays.ray_image)
        return render_rays(rays, features, density), None


class HeadNeRF_Gaze(GazeModelBase):
    """Trunk + additive gaze MLP + template pass (the seed's model)."""

    def __init__(self, cfg: ModelConfig, shape_code_dim: int, appearance_code_dim: int):
        super().__init__(cfg, shape_code_dim, appearance_code_dim)
        self.trunk = ConditionalTrunk(self.point_dim, shape_code_dim, appearance_code_dim, cfg.mlp_width,
                                      cfg.mlp_depth, cfg.skip_layer, cfg.featmap_channels)
        eye_frame = cfg.gaze_input == "eye_frame"
        # eye_frame: the gaze enters only through the eye-frame points (no tiled angles)
        self.ray_gaze_tile = 0 if eye_frame else cfg.gaze_tile
        self.gaze_mlp = GazeMLP(self.point_dim, gaze_input_dim(self.ray_gaze_tile, cfg.gaze_pixel_coords)
                                + (appearance_code_dim if cfg.gaze_appearance_input else 0)
                                + (encoding_dim(cfg.gaze_view_freqs) if cfg.gaze_view_input else 0),
                                cfg.gaze_mlp_width, cfg.gaze_mlp_depth, cfg.mlp_width, self.trunk.colour_width,
                                (eye_frame_dim(cfg.eye_frame_freqs) + 2 * EYE_POLAR_CHANNELS * (cfg.eye_polar_cells > 0)
                                 + (reflection_dim(REFLECTION_PE_FREQS) if cfg.gaze_reflection_input else 0))
                                if eye_frame else 0)
        # optional learned iris/limbus profile over the angle from each optical axis (fields/gaze.py EyePolarTable)
        self.eye_polar = EyePolarTable(cfg.eye_polar_cells, EYE_POLAR_CHANNELS) if cfg.eye_polar_cells else None
        # learnable eyeball centres (2, 3), head frame, started at the synthetic head model's mean; with
        # eye_centers_from_code a zero-initialised linear map of the shape code moves them per subject, bounded
        # (EYE_CENTER_MAX_OFFSET tanh): unbounded, the map drove the centres a metre away within 3000 steps
        # eye_centers_from_head_model: each image's centres are its head-model centres (data/synthetic/eye_centers.py), fixed:
        # no learned parameter, so the backward does not run through the eye-frame geometry (a shared learned
        # correction moved at most 0.008 head units in a quickstart run, and its gradient cost that backward)
        self.eye_frame = eye_frame
        self.centers_from_head_model = eye_frame and cfg.eye_centers_from_head_model
        if self.centers_from_head_model and shape_code_dim != (expected := _head_model_eyes().head_model_shape_dim()):
            raise ValueError(f"eye_centers_from_head_model needs the synthetic head model's code layout (shape code = "
                             f"identity ⊕ expression, {expected} channels); this dataset's shape code has "
                             f"{shape_code_dim}. Set eye_centers_from_head_model: false (or eye_centers_from_code: true).")
        self.eye_centers = None
        if eye_frame and not self.centers_from_head_model:
            self.eye_centers = nn.Parameter(torch.tensor(MEAN_EYE_CENTERS))
        self.eye_center_offset = None
        if eye_frame and cfg.eye_centers_from_code:
            self.eye_center_offset = nn.Linear(shape_code_dim, 6)
            nn.init.zeros_(self.eye_center_offset.weight)
            nn.init.zeros_(self.eye_center_offset.bias)

    def image_eye_centers(self, shape_code: torch.Tensor) -> torch.Tensor:
        """(B, Ds) shape codes -> (B, 2, 3) head-frame eyeball centres of each image (eye_frame models only)."""
        if self.centers_from_head_model:
            return _head_model_eyes().head_model_eye_centers(shape_code)
        centers = self.eye_centers.float().expand(shape_code.shape[0], 2, 3)
        if self.eye_center_offset is not None:
            centers = centers + EYE_CENTER_MAX_OFFSET * torch.tanh(self.eye_center_offset(shape_code.float())).view(-1, 2, 3)
        return centers

    def ray_eye_centers(self, shape_code: torch.Tensor, ray_image: torch.Tensor,
                        image_centers: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Ds) codes, (N,) image of each ray -> (N, 2, 3) eyeball centres per ray, or (2, 3) when shared.
        ``image_centers`` (B, 2, 3): given centres (``forward``'s ``eye_centers``) instead of the model's."""
        if image_centers is not None:
            return image_centers.float().index_select(0, ray_image)
        if self.centers_from_head_model or self.eye_center_offset is not None:
            return self.image_eye_centers(shape_code).index_select(0, ray_image)
        return self.eye_centers.float()

    def eye_frame_inputs(self, rays: RayBatch, gazes: list[torch.Tensor], centers: torch.Tensor | None
                         ) -> torch.Tensor | None:
        """(P, N, S, eye_frame_dim) encoded eye-frame points of every pass's gaze; None for ``tiled``.
        ``centers``: the rays' ``ray_eye_centers``."""
        if not self.eye_frame:
            return None
        with torch.autocast(rays.depths.device.type, enabled=False):  # geometry in fp32 also under bf16
            rotation = gaze_rotation(torch.stack(gazes).float()).index_select(1, rays.ray_image)  # (P, N, 3, 3)
            points = eye_frame_points(rays.points.float(), centers, rotation)
            encoded = eye_frame_encoding(points, self.cfg.eye_frame_freqs)
            if self.eye_polar is None:
                return encoded
            return torch.cat((encoded, self.eye_polar(points)), dim=-1)

    def gaze_injections_near_eyes(self, rays: RayBatch, ray_inputs: torch.Tensor, gazes: list[torch.Tensor],
                                  centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gaze MLP on the samples near an eyeball only (``ModelConfig.gaze_region_radius``).

        A gaze moves the eyeballs and the lids on them, nothing else, so the injections are 0 beyond
        ``gaze_region_radius`` eyeball radii from both centres and fade to 0 over the last half radius before
        it (``gaze_region_window``: no step in the field). Only the samples inside are gathered and run.

        Args: ray_inputs (P, N, F); gazes: P (B, 2); centers: ``ray_eye_centers``. Returns: density offset (P, N, S), colour injection
        (P, N, S, trunk colour width), zero outside the region.
        """
        N, S = rays.points.shape[:2]
        P = ray_inputs.shape[0]
        with torch.no_grad(), torch.autocast(rays.depths.device.type, enabled=False):
            radius = eye_offsets(rays.points.float(), centers).norm(dim=-1).amin(-1)  # (N, S) to the nearer eye, in radii
            # (M,) flat indices of the real rays' samples inside (they lead the flat order: padding rays come last)
            inside = (radius[: rays.count] < self.cfg.gaze_region_radius).reshape(-1).nonzero().squeeze(1)
        colour_width = self.gaze_mlp.colour_out.out_features
        density_off = rays.depths.new_zeros(P, N * S)
        if inside.numel() == 0:
            return density_off.view(P, N, S), rays.depths.new_zeros(P, N, S, colour_width)
        if rays.padded:  # bf16: a recurring row count for the gaze MLP too; the added rows read and write the last
            # padding ray's last sample, whose outputs render_rays drops (duplicate writes there are harmless)
            extra = padded_count(inside.shape[0], GAZE_SAMPLE_BUCKET) - inside.shape[0]
            inside = torch.cat((inside, inside.new_full((extra,), N * S - 1)))
        ray_of = inside // S  # (M,) the ray of each inside sample: each becomes a one-sample ray
        sub = RayBatch(rays.batch, rays.grid, rays.ray_index[ray_of], rays.ray_image[ray_of],
                       rays.depths.reshape(-1, 1)[inside], rays.deltas.reshape(-1, 1)[inside],
                       rays.points_pe.reshape(N * S, 1, -1)[inside], rays.pixels, rays.points.reshape(-1, 1, 3)[inside])
        sub_centers = centers.index_select(0, ray_of) if centers.dim() == 3 else centers  # per ray, or shared (2, 3)
        sample_inputs = self.eye_frame_inputs(sub, gazes, sub_centers)  # (P, M, 1, ·)
        if self.cfg.gaze_reflection_input:  # the same for every pass: the sphere's normal does not turn with the gaze
            with torch.autocast(rays.depths.device.type, enabled=False):
                mirrored = eye_reflection_encoding(sub.points[:, 0].float(), ray_directions(rays.points).index_select(
                    0, ray_of), sub_centers, REFLECTION_PE_FREQS)  # (M, D)
            sample_inputs = torch.cat((sample_inputs, mirrored.to(sample_inputs.dtype).expand(P, -1, -1).unsqueeze(2)), -1)
        hidden, colour = self.gaze_mlp(sub.points_pe, ray_inputs.index_select(1, ray_of), sample_inputs)
        window = gaze_region_window(radius.reshape(-1)[inside], self.cfg.gaze_region_radius)  # (M,)
        offset = self.gaze_mlp.density_offset(hidden, self.trunk.density_head.weight)[..., 0] * window  # (P, M)
        density_off = density_off.index_copy(1, inside, offset.to(density_off.dtype))
        # in the gaze MLP's output dtype (bf16 under mlp_precision bf16): the trunk's colour state it is added to
        # has that dtype too, so the (P, N*S, W/2) injection is neither written nor read back in fp32
        colour_inj = colour.new_zeros(P, N * S, colour_width).index_copy(
            1, inside, (colour[:, :, 0] * window.unsqueeze(-1).to(colour.dtype)))
        return density_off.view(P, N, S), colour_inj.view(P, N, S, colour_width)

    def render_fields(self, rays, shape_code, appearance_code, gaze_head, pooled_eye_mask, training, render_template,
                      generator, eye_centers=None):
        cfg = self.cfg
        alpha = cfg.feat_addition_alpha
        gazes = [gaze_head]
        with_template = render_template or alpha < 1.0
        if with_template:
            template_gaze = torch.zeros_like(gaze_head)
            if training and cfg.template_gaze_noise > 0:
                template_gaze = cfg.template_gaze_noise * torch.randn(
                    gaze_head.shape, generator=generator, device=gaze_head.device, dtype=gaze_head.dtype)
            gazes.append(template_gaze)
        coords = None if rays.pixels is None else grid_coords(cfg.image_size, rays.pixels, gaze_head)
        ray_inputs = torch.stack([per_ray_gaze_inputs(pooled_eye_mask, g, self.ray_gaze_tile, coords,
                                                      cfg.gaze_pixel_coords) for g in gazes])  # (P, B, R, F)
        ray_inputs = ray_inputs.flatten(1, 2).index_select(1, rays.ray_index)  # (P, N, F)
        shared = []  # per-ray inputs the same for every pass, each (N, ·)
        if cfg.gaze_appearance_input:
            shared.append(appearance_code.to(ray_inputs.dtype).index_select(0, rays.ray_image))
        if cfg.gaze_view_input:
            shared.append(positional_encoding(ray_directions(rays.points), cfg.gaze_view_freqs).to(ray_inputs.dtype))
        if shared:
            per_ray = torch.cat(shared, dim=-1)
            ray_inputs = torch.cat((ray_inputs, per_ray.expand(len(gazes), *per_ray.shape)), dim=-1)  # (P, N, F + ...)
        centers = self.ray_eye_centers(shape_code, rays.ray_image, eye_centers) if self.eye_frame else None
        if cfg.gaze_region_radius > 0:
            density_off, colour_inj = self.gaze_injections_near_eyes(rays, ray_inputs, gazes, centers)
        else:
            gaze_hidden, colour_inj = self.gaze_mlp(rays.points_pe, ray_inputs, self.eye_frame_inputs(
                rays, gazes, centers))  # (P, N, S, Wg), (P, N, S, W/2)
            density_off = self.gaze_mlp.density_offset(gaze_hidden, self.trunk.density_head.weight)  # (P, N, S)

        # The trunk is gaze-independent: one evaluation shared by the gaze and template passes.
        h = self.trunk.hidden(rays.points_pe, shape_code, rays.ray_image)
        colour, logit = self.trunk.heads(h, appearance_code, rays.ray_image)
        main_d, main_c = density_off[0], colour_inj[0]
        if alpha < 1.0:
            main_d = alpha * main_d + (1 - alpha) * density_off[1]
            main_c = alpha * main_c + (1 - alpha) * colour_inj[1]
        main = render_rays(rays, self.trunk.features(colour, main_c), self.trunk.density_from_logit(logit, main_d))
        template = None
        if render_template:
            template = render_rays(rays, self.trunk.features(colour, colour_inj[1]),
                                   self.trunk.density_from_logit(logit, density_off[1]))
        return main, template


class GazeNeRF(GazeModelBase):
    """Two conditional streams (face, eyes); the eye map is gaze-rotated and max-merged in the eyes."""

    def __init__(self, cfg: ModelConfig, shape_code_dim: int, appearance_code_dim: int):
        super().__init__(cfg, shape_code_dim, appearance_code_dim)
        self.face_stream = ConditionalTrunk(self.point_dim, shape_code_dim + 2, appearance_code_dim, cfg.mlp_width,
                                            cfg.mlp_depth, cfg.skip_layer, cfg.featmap_channels)
        self.eye_stream = ConditionalTrunk(self.point_dim, shape_code_dim + 2, appearance_code_dim,
                                           cfg.gaze_mlp_width, cfg.gaze_mlp_depth,
                                           min(cfg.gaze_mlp_depth // 2, cfg.gaze_mlp_depth - 1), cfg.featmap_channels)

    def render_fields(self, rays, shape_code, appearance_code, gaze_head, pooled_eye_mask, training, render_template,
                      generator, eye_centers=None):
        code = torch.cat((shape_code, gaze_head), dim=-1)  # (B, Ds + 2)
        face = render_rays(rays, *self.face_stream(rays.points_pe, code, appearance_code, rays.ray_image))
        eye_rays = rays.subset(pooled_eye_mask.reshape(-1)[rays.ray_index] > 0)
        if eye_rays.ray_index.numel() == 0:
            return face, None  # no eye pixel hit: m = 0 everywhere, the merge is the face map
        eye = render_rays(eye_rays, *self.eye_stream(eye_rays.points_pe, code, appearance_code, eye_rays.ray_image))
        eye_features = rotate_feature_groups(eye["features"], gaze_rotation(gaze_head))
        m = pooled_eye_mask
        merged = {
            "features": face["features"] + m * (torch.maximum(face["features"], eye_features) - face["features"]),
            "opacity": face["opacity"] + m * (torch.maximum(face["opacity"], eye["opacity"]) - face["opacity"]),
            "depth": face["depth"],
            "sample_density": face["sample_density"],
        }
        return merged, None


MODEL_CLASSES = {"HeadNeRF": HeadNeRF, "HeadNeRF_Gaze": HeadNeRF_Gaze, "GazeNeRF": GazeNeRF}


def build_model(cfg: ModelConfig, shape_code_dim: int, appearance_code_dim: int) -> nn.Module:
    """The model named by ``cfg.model_name``, for codes of the given sizes."""
    return MODEL_CLASSES[cfg.model_name](cfg, shape_code_dim, appearance_code_dim)


def camera_for_head_pose(R_w2c: torch.Tensor, t_w2c: torch.Tensor, head_pose: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate a camera about the head origin so that it sees the head at ``head_pose``.

    The new rotation is ETH-XGaze-normalised (built like ``look_at_w2c`` towards the head
    origin with the head's +x as right hint: the camera's y axis is orthogonal to the head's
    x axis, i.e. no roll relative to the head) and satisfies ``head_pose_from_rotation(R_new) == head_pose`` for
    ``|pitch|, |yaw| < π/2``. ``t_w2c`` is kept, so the head origin keeps its position in the
    camera frame (same distance, same place in the image).

    With the camera's optical axis ``z_c = (a, b, c)`` in head coordinates and its x axis
    from ``look_at`` with the head's +x as right hint, the head pose is
    ``sin(pitch) = -b / sqrt(b² + c²)``, ``tan(yaw) = -a / sqrt(b² + c²)``, solved by
    ``z_c = (-sin yaw, -sin pitch cos yaw, cos pitch cos yaw)``.

    Args:
        R_w2c (B, 3, 3), t_w2c (B, 3): the current camera.
        head_pose: (B, 2) requested head (pitch, yaw) in radians.
    Returns:
        R_w2c_new (B, 3, 3), t_w2c_new (B, 3).
    """
    pitch, yaw = head_pose.unbind(-1)
    z = torch.stack((-torch.sin(yaw), -torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch) * torch.cos(yaw)), -1)
    right_hint = torch.zeros_like(z)
    right_hint[..., 0] = 1.0
    y = torch.nn.functional.normalize(torch.cross(z, right_hint, dim=-1), dim=-1)
    x = torch.cross(y, z, dim=-1)
    R_new = torch.stack((x, y, z), dim=-2)  # rows: camera axes in head coordinates
    return R_new, t_w2c.clone()


def redirect(model: nn.Module, codes: dict, camera: dict, gaze: torch.Tensor, head_pose: torch.Tensor | None = None,
             eye_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Render a subject with a new gaze (and optionally a new head pose), in eval mode.

    Args:
        codes: {"shape_code" (B, Ds), "appearance_code" (B, Da)}.
        camera: {"R_w2c" (B, 3, 3), "t_w2c" (B, 3), "K" (B, 3, 3) in output-image pixels}.
        gaze: (B, 2) (pitch, yaw) in the **camera** frame, like the dataset labels.
        head_pose: (B, 2) ETH-XGaze head (pitch, yaw) seen by the camera, or None (keep the camera).
        eye_mask: (B, 1, H, W) in [0, 1], or None.
    Returns:
        image (B, 3, S, S) in [0, 1].
    """
    R, t = camera["R_w2c"], camera["t_w2c"]
    if head_pose is not None:
        R, t = camera_for_head_pose(R, t, head_pose)
    gaze_head = gaze_in_head_frame(gaze, R)
    with eval_mode(model):
        out = model(codes["shape_code"], codes["appearance_code"], R, t, camera["K"], gaze_head=gaze_head,
                    eye_mask=eye_mask)
    return out["image"]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode and no autograd inside the block; the model's previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
