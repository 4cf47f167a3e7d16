"""The gaze MLP of HeadNeRF_Gaze, its per-ray inputs, and GazeNeRF's feature rotation.

Gaze MLP (seed §3.5, ``MLPforGaze``), per sample:

    input = [PE(x) (per sample), eye_mask (1), (pitch, yaw) × gaze_tile, col, row (per ray)]
    h_0 = ReLU(W_0 input); h_i = ReLU(W_i h_{i-1}); skip [input, h] into layer depth//2 + 1
    density_injection = h            (projected to the trunk width if the widths differ)
                                     enters the trunk only as w_sigma · injection
    colour_injection  = ReLU(W_c h)  (trunk colour width = mlp_width // 2)

Two opt-in per-ray inputs are appended by ``HeadNeRF_Gaze.render_fields`` (on in ``config/quickstart.yml``):
``gaze_appearance_input`` the image's appearance code, ``gaze_view_input`` a PE of the ray's direction (``gaze_view_freqs``).
Why: the synthetic generator's eyes carry a view-dependent highlight that greys the iris from turned cameras, and
irises differ in colour between subjects; the seed's gaze MLP saw neither (docs/evaluation.md, ninth round: +1.5 dB
eye-region PSNR and 1° less seen-face error, two seeds).

The seed's dead ``Gaze_RGB_layer_0`` is dropped. The eye mask is average-pooled to the
feature grid and lies in [0, 1] (the seed fed 0..255); the coordinates are the column and
the row of the feature pixel, each ``linspace(-1, 1)``.

``ModelConfig.gaze_input = "eye_frame"`` (opt-in) replaces the tiled angles by a geometric input:
per sample and per pass, the point in each eye's gaze-rotated frame ``u = R(gaze)^T (x - c_eye) / r``
(``eye_frame_points``; learnable centres ``c_eye`` started at the synthetic head model's mean,
``r`` its eyeball radius), encoded as the PE of ``u / |u|`` and ``tanh(|u| - 1)``
(``eye_frame_encoding``). A point fixed on a turning eyeball keeps its ``u``, so an iris moves as
a rotation of the sphere for every identity and view. This input depends on the pass's gaze
per sample, so it enters layer 0 and the skip layer as its own per-sample term
(``sample_inputs``). ``gaze_pixel_coords = False`` drops the (col, row) inputs.

Speed decisions:

* The per-ray inputs are constant along a ray, so their share of layer 0 and of the skip
  layer (``W_ray ray_inputs``) is computed once per ray (``(N, 1, W)``) and broadcast over
  the samples; only the point encoding is multiplied per sample.
* Without autograd the samples run in ray chunks (``trunk.ray_chunks``), so activations stay
  in cache between layers.
* Several gaze inputs for the same samples (HeadNeRF_Gaze's gaze and template passes) run
  as one stacked batch ``(P, N, S, ·)``: the per-sample share of layer 0 / the skip layer is
  computed once and shared, and the later layers are single larger GEMMs.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..rendering.rays import pixel_index_centers, pixel_strip
from .encoding import positional_encoding
from .trunk import add_relu, ray_chunks

__all__ = ["GazeMLP", "per_ray_gaze_inputs", "gaze_input_dim", "pool_eye_mask", "grid_coords", "rotate_feature_groups",
           "MEAN_EYE_CENTERS", "EYE_RADIUS", "EYE_CENTER_MAX_OFFSET", "eye_frame_points", "eye_offsets", "eye_reflection_encoding",
           "reflection_dim", "gaze_region_window", "eye_frame_encoding", "eye_frame_dim",
           "EyePolarTable"]

# The synthetic head model's eyeball centres [subject's right (x < 0), left], head frame, averaged over
# 40 sampled subjects (per-subject std 0.8 / 1.3 / 2.0 cm in x / y / z), and its eyeball radius. They
# initialise the learnable centres of the ``eye_frame`` gaze input (tests/test_synthetic.py checks them).
MEAN_EYE_CENTERS = ((-0.2812, -0.1191, -0.7308), (0.2812, -0.1191, -0.7308))
EYE_RADIUS = 0.165
EYE_CENTER_MAX_OFFSET = 0.05  # per-subject centre offsets from the shape code stay within ±5 cm (std ≤ 2 cm)


def gaze_input_dim(gaze_tile: int, pixel_coords: bool = True) -> int:
    """Per-ray input channels: eye mask (1) + tiled (pitch, yaw) (2 * gaze_tile) + coords (2, optional)."""
    return 1 + 2 * gaze_tile + (2 if pixel_coords else 0)


def eye_frame_points(points: torch.Tensor, eye_centers: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Sample points in each eye's gaze-rotated frame, in eyeball radii: ``R^T (x - c) / EYE_RADIUS``.

    An eyeball turning to a gaze is the rotation ``R = gaze_rotation(gaze)`` about its centre,
    so a point fixed on the eyeball (the iris centre ``c + r R (0, 0, -1)``) has the same
    coordinates ``(0, 0, -1)`` for every gaze: the input moves with the eye.

    Args:
        points: (N, S, 3) head frame.
        eye_centers: (E, 3) head frame, or (N, E, 3) per ray (e.g. each ray's subject's).
        rotation: (P, N, 3, 3) per pass and ray (head-frame gaze rotation).
    Returns:
        (P, N, S, E, 3).
    """
    # v R = (R^T v^T)^T: the rotation of each ray, broadcast over its samples and the eyes
    return torch.einsum("nsed,pndk->pnsek", eye_offsets(points, eye_centers), rotation)


def eye_offsets(points: torch.Tensor, eye_centers: torch.Tensor) -> torch.Tensor:
    """(N, S, 3) head-frame points, (E, 3) or per-ray (N, E, 3) centres -> (N, S, E, 3) ``(x - c) / EYE_RADIUS``
    (unrotated: their norms are the distances to each eye in eyeball radii)."""
    if eye_centers.dim() == 3:
        eye_centers = eye_centers.unsqueeze(1)  # (N, 1, E, 3): broadcast over the samples
    return (points.unsqueeze(-2) - eye_centers) / EYE_RADIUS


def eye_reflection_encoding(points: torch.Tensor, directions: torch.Tensor, eye_centers: torch.Tensor,
                            num_freqs: int) -> torch.Tensor:
    """Per sample, the ray mirrored on the nearer eyeball's sphere: what a glossy eye's highlight depends on.

    A highlight on a mirror-like sphere is a function of the reflected direction ``r = d - 2 (d · n) n`` (``n`` the
    sphere's normal at the sample, ``d`` the ray's direction) and of the light; a view-dependent input given this way
    needs no product of position and direction inside the MLP (the idea of Ref-NeRF's reflected direction).

    Args:
        points: (M, 3) head frame. directions: (M, 3) unit ray directions.
        eye_centers: (E, 3) or per sample (M, E, 3).
    Returns:
        (M, 3 (1 + 2 num_freqs) + 1): PE of ``r`` and ``d · n``.
    """
    offsets = eye_offsets(points.unsqueeze(1), eye_centers)[:, 0]  # (M, E, 3)
    nearer = offsets.norm(dim=-1).argmin(-1)  # (M,)
    normal = F.normalize(offsets[torch.arange(len(points), device=points.device), nearer], dim=-1)  # (M, 3)
    cos = (directions * normal).sum(-1, keepdim=True)
    reflected = directions - 2.0 * cos * normal
    return torch.cat((positional_encoding(reflected, num_freqs), cos), dim=-1)


def reflection_dim(num_freqs: int) -> int:
    """Channels of :func:`eye_reflection_encoding`."""
    return 3 * (1 + 2 * num_freqs) + 1


def gaze_region_window(radius: torch.Tensor, region_radius: float, fade: float = 0.5) -> torch.Tensor:
    """Weight of the gaze injections at ``radius`` eyeball radii from the nearer eye centre (any shape):
    1 up to ``region_radius - fade``, a smoothstep down to 0 at ``region_radius``, 0 beyond."""
    t = ((region_radius - radius) / fade).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def eye_frame_dim(num_freqs: int, num_eyes: int = 2) -> int:
    """Channels of ``eye_frame_encoding``: per eye, PE of the direction (3 (1 + 2F)) and the radius (1)."""
    return num_eyes * (3 * (1 + 2 * num_freqs) + 1)


def eye_frame_encoding(eye_points: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """(..., E, 3) eye-frame points -> (..., E * (3 (1 + 2F) + 1)) gaze-MLP inputs.

    Per eye: PE of the unit direction from the centre (what the iris pattern depends on: bounded,
    so the PE is well scaled everywhere) and ``tanh(|u| - 1)`` (0 on the eyeball surface).
    """
    radius = eye_points.norm(dim=-1, keepdim=True)  # (..., E, 1)
    direction = eye_points / radius.clamp_min(1e-6)
    per_eye = torch.cat((positional_encoding(direction, num_freqs), torch.tanh(radius - 1.0)), dim=-1)
    return per_eye.flatten(-2)


class EyePolarTable(nn.Module):
    """Learned features over each eye's polar angle from its optical axis, on the eyeball's shell.

    An iris, a limbus and a pupil are rings about the optical axis: functions of the polar angle
    ``theta = atan2(|u_xy|, -u_z)`` of the eye-frame point ``u`` (the axis is ``(0, 0, -1)``), with sharp
    steps at the limbus and the pupil's edge. A PE of the direction needs high frequencies for such a
    step; a table over ``theta`` (``cells`` entries, linear interpolation) can hold it at any sharpness.
    Both eyes read the same table (the same iris). The features fade off the sphere's surface with
    ``exp(-((|u| - 1) / shell_width)^2)``, so they do not paint the skin around the eye.

    ``ModelConfig.eye_polar_cells`` (opt-in, needs ``gaze_input: eye_frame``); the table takes the
    tri-plane's learning rate (``training.make_optimizer``).
    """

    def __init__(self, cells: int, channels: int = 8, shell_width: float = 0.25):
        super().__init__()
        if cells < 2:
            raise ValueError(f"EyePolarTable: cells must be >= 2, got {cells}")
        self.shell_width = shell_width
        self.table = nn.Parameter(0.1 * torch.randn(cells, channels))

    @property
    def channels(self) -> int:
        return self.table.shape[1]

    def forward(self, eye_points: torch.Tensor) -> torch.Tensor:
        """(..., E, 3) eye-frame points -> (..., E * channels) features."""
        if eye_points.shape[-1] != 3:
            raise ValueError(f"EyePolarTable: expected eye-frame points (..., E, 3), got {tuple(eye_points.shape)}")
        radius = eye_points.norm(dim=-1)  # (..., E)
        theta = torch.atan2(eye_points[..., :2].norm(dim=-1), -eye_points[..., 2])  # (..., E) in [0, pi]
        cells = self.table.shape[0]
        pos = (theta * ((cells - 1) / torch.pi)).clamp(0, cells - 1)
        lo = pos.floor().clamp(max=cells - 2)
        frac = (pos - lo).unsqueeze(-1)
        lo = lo.long()
        feats = self.table[lo] * (1 - frac) + self.table[lo + 1] * frac  # (..., E, C)
        window = torch.exp(-((radius - 1.0) / self.shell_width) ** 2).unsqueeze(-1)
        return (feats * window).flatten(-2)


def pool_eye_mask(eye_mask: torch.Tensor | None, batch: int, size: int, like: torch.Tensor,
                  pixels: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) mask in [0, 1] (any H = W) or None -> (B, 1, size, size) area-averaged mask.

    Uses adaptive average pooling, which is the exact block average when H is a multiple of
    ``size`` (the seed hard-coded a 16×16 kernel). None gives zeros (no eye region).
    With ``pixels (B, K)`` (row-major indices into the ``size × size`` grid) only those
    pixels are returned, as a ``(B, 1, 1, K)`` strip.
    """
    if eye_mask is None:
        pooled = like.new_zeros(batch, 1, size, size)
    else:
        pooled = F.adaptive_avg_pool2d(eye_mask.to(like.dtype), size)
    if pixels is None:
        return pooled
    return pixel_strip(pooled, pixels)


def grid_coords(size: int, pixels: torch.Tensor | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised (col, row) coordinates, each ``linspace(-1, 1, size)`` over the grid.

    Returns (size*size, 2) row-major for the whole grid, or (B, K, 2) for ``pixels (B, K)``.
    """
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else None
    step = 2.0 / max(size - 1, 1)
    if pixels is not None:
        return (pixel_index_centers(pixels, size, dtype) - 0.5) * step - 1.0
    axis = torch.linspace(-1, 1, size, device=device, dtype=dtype)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack((cols.reshape(-1), rows.reshape(-1)), dim=-1)


def per_ray_gaze_inputs(pooled_eye_mask: torch.Tensor, gaze: torch.Tensor, gaze_tile: int,
                        coords: torch.Tensor | None = None, pixel_coords: bool = True) -> torch.Tensor:
    """Per-ray gaze-MLP inputs of every feature pixel.

    Args:
        pooled_eye_mask: (B, 1, h, w) in [0, 1].
        gaze: (B, 2) head-frame (pitch, yaw) in radians.
        coords: (B, h*w, 2) normalised (col, row) of each ray's pixel, or None for the full
            ``h × w`` grid (``grid_coords(h)``).
        pixel_coords: False leaves the coordinates out (``gaze_tile = 0`` leaves the gaze out).
    Returns:
        (B, h*w, 1 + 2*gaze_tile + 2): [mask, p, y, p, y, ..., col, row], rays row-major.
    """
    B, _, h, w = pooled_eye_mask.shape
    mask = pooled_eye_mask.reshape(B, h * w, 1)
    tiled = gaze.repeat(1, gaze_tile).unsqueeze(1).expand(B, h * w, 2 * gaze_tile)
    if not pixel_coords:
        return torch.cat((mask, tiled), dim=-1)
    if coords is None:
        coords = grid_coords(h, like=gaze).expand(B, h * w, 2)
    return torch.cat((mask, tiled, coords.to(gaze.dtype)), dim=-1)


class GazeMLP(nn.Module):
    """Per-sample gaze MLP producing additive injections for the trunk (see module docstring).

    Args:
        point_dim: channels of the encoded point.
        ray_input_dim: ``gaze_input_dim(gaze_tile)``.
        width, depth: ``ModelConfig.gaze_mlp_width / gaze_mlp_depth``.
        trunk_width, trunk_colour_width: widths of the trunk states the injections are added to.
    """

    def __init__(self, point_dim: int, ray_input_dim: int, width: int, depth: int, trunk_width: int,
                 trunk_colour_width: int, sample_input_dim: int = 0):
        super().__init__()
        self.depth = depth
        skip_after = depth // 2  # the seed's layer 4 of 8
        self.skip_into = skip_after + 1 if skip_after + 1 < depth else None
        self.layers = nn.ModuleList([nn.Linear(point_dim, width)] + [nn.Linear(width, width) for _ in range(depth - 1)])
        self.ray_in = nn.Linear(ray_input_dim, width, bias=False)
        if self.skip_into is not None:
            self.skip_point = nn.Linear(point_dim, width, bias=False)
            self.skip_ray = nn.Linear(ray_input_dim, width, bias=False)
        # Per-pass per-sample inputs (the eye-frame encoding): enter layer 0 and the skip layer.
        self.sample_in = nn.Linear(sample_input_dim, width, bias=False) if sample_input_dim else None
        self.skip_sample = (nn.Linear(sample_input_dim, width, bias=False)
                            if sample_input_dim and self.skip_into is not None else None)
        # The seed adds h (width 384) to the trunk's 384-d state; a projection only if widths differ.
        self.density_out = nn.Identity() if width == trunk_width else nn.Linear(width, trunk_width)
        self.colour_out = nn.Linear(width, trunk_colour_width)

    def density_offset(self, h: torch.Tensor, density_head_weight: torch.Tensor) -> torch.Tensor:
        """(…, S, W) gaze hidden state, (1, trunk_width) trunk density-head weight -> (…, S) logit offset.

        ``w · density_out(h)`` with the projection folded into the weight (``w P``, ``w · b``):
        a ``W -> 1`` product per sample instead of building the (…, S, trunk_width) injection.
        """
        if isinstance(self.density_out, nn.Identity):
            return F.linear(h, density_head_weight).squeeze(-1)
        weight = density_head_weight @ self.density_out.weight  # (1, W)
        return F.linear(h, weight, density_head_weight @ self.density_out.bias).squeeze(-1)

    def forward(self, points_pe: torch.Tensor, ray_inputs: torch.Tensor, sample_inputs: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states and colour injections for P sets of per-ray inputs over the same samples.

        Args:
            points_pe: (N, S, Pd) encoded sample points.
            ray_inputs: (P, N, F) per-ray inputs (P passes, e.g. gaze and template).
            sample_inputs: (P, N, S, E) per-pass per-sample inputs, needed iff built with
                ``sample_input_dim > 0``.
        Returns:
            h (P, N, S, width): gives the density injection through ``density_offset``;
            colour_injection (P, N, S, trunk_colour_width).
        """
        chunks = ray_chunks(points_pe.shape[0], points_pe.shape[1] * ray_inputs.shape[0])
        if (sample_inputs is None) != (self.sample_in is None):
            raise ValueError("sample_inputs: given iff the gaze MLP was built with sample_input_dim > 0 "
                             f"(built with {0 if self.sample_in is None else self.sample_in.in_features}, "
                             f"got {None if sample_inputs is None else tuple(sample_inputs.shape)})")
        if len(chunks) <= 1:  # one pass (also no rays at all: no chunk)
            return self._forward(points_pe, ray_inputs, sample_inputs)
        P, N, S = ray_inputs.shape[0], points_pe.shape[0], points_pe.shape[1]
        h = colour = None
        for c in chunks:
            h_c, colour_c = self._forward(points_pe[c], ray_inputs[:, c],
                                          None if sample_inputs is None else sample_inputs[:, c])
            if h is None:  # the chunks' own dtype (bf16 under mlp_precision bf16): no fp32 round trip
                h = h_c.new_empty(P, N, S, h_c.shape[-1])
                colour = colour_c.new_empty(P, N, S, colour_c.shape[-1])
            h[:, c], colour[:, c] = h_c, colour_c
        return h, colour

    def _forward(self, points_pe, ray_inputs, sample_inputs=None):
        point_term = flat_linear(self.layers[0], points_pe)  # (N, S, W), shared by the P passes
        h = point_term + flat_linear(self.ray_in, ray_inputs).unsqueeze(2)  # (P, N, S, W)
        if sample_inputs is not None:
            h = h + flat_linear(self.sample_in, sample_inputs)
        h = F.relu_(h)
        skips = []
        if self.skip_into is not None:
            skips = [flat_linear(self.skip_point, points_pe),
                     flat_linear(self.skip_ray, ray_inputs).unsqueeze(2)]  # (N, S, W), (P, N, 1, W)
            if sample_inputs is not None:
                skips.append(flat_linear(self.skip_sample, sample_inputs))  # (P, N, S, W)
        for i in range(1, self.depth):
            out = flat_linear(self.layers[i], h)
            h = add_relu(out, *skips) if i == self.skip_into else add_relu(out)
        return h, F.relu(flat_linear(self.colour_out, h))


def flat_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for (..., in) ``x`` as one 2-D product: (..., out).

    Why not ``layer(x)``: for a ≥ 4-D input whose leading size-1 dimension has a stride that does not
    match (a chunk sliced out of a (1, M, 1, F) tensor, as the chunked whole-image renders and the gaze
    region's one-sample rays make), ``torch.matmul`` does not fold the input to 2-D; it expands a frozen
    weight to an (M, in, out) batch and runs ``bmm``, a 75 MB copy per layer at M = 4096 (38 ms against
    1.4 ms under bf16 autocast, measured 2026-12-02). ``reshape`` is a view there."""
    return layer(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], layer.out_features)


def rotate_feature_groups(features: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """GazeNeRF's rigid "eyeball" rotation of a feature map, acting on channel triplets.

    Channels ``[3g, 3g+1, 3g+2]`` form a 3-vector that is multiplied by ``R``; with C not a
    multiple of 3 the last ``C % 3`` channels are passed through unrotated (the default 256
    channels give 85 rotated triplets + 1 plain channel).

    Args:
        features: (B, C, h, w).
        R: (B, 3, 3), e.g. ``gaze_rotation(gaze_head)``.
    Returns:
        (B, C, h, w).
    """
    B, C, h, w = features.shape
    G = C // 3
    groups = features[:, : 3 * G].reshape(B, G, 3, h * w)
    rotated = (R.unsqueeze(1) @ groups).reshape(B, 3 * G, h, w)  # (B, G, 3, 3) @ (B, G, 3, hw)
    return torch.cat((rotated, features[:, 3 * G:]), dim=1)
