"""Exact gaze readout of images of known synthetic rows: which gaze does the generator need to draw this?

For a synthetic row the generator's code, camera, image size and supersampling are known, so the
gaze of *any* image of that row (a model render, a fitted render, the unchanged input, the dataset
image) can be read by finding the eye-in-head gaze whose generator render best matches the image
in the eye region. No learned estimator is involved, so the readout has no training bias; its only
error is its floor, measured below.

Method
------
* **Rasterise once per view.** In the generator (``HeadNeRF.data.synthetic.render``) gaze changes
  only the albedo of the eyeball fragments (``head_model.eyeball_albedo``): the rasterisation,
  normals, light, specular, lid shadow and masks do not depend on it. ``GazeReadout`` calls
  ``render.prepare_view`` once at ``supersample × image_size`` and keeps, per eyeball sub-pixel,
  its head-frame point and shading; a gaze candidate then costs one ``eyeball_albedo`` call on
  those points (a few hundred at 64 px) plus a scatter-add into the low-resolution pixels they
  fall in (the box filter of ``render_view``). Only those "eye pixels" change with gaze, so only
  they are compared. ``render(gaze)`` reproduces ``render_view``'s uint8 image exactly.
* **Comparison.** Per eye, the mean colour of the eye pixels is subtracted from both the image
  and the candidate (``normalize="mean"``, robust to a model's colour bias; ``"none"`` compares
  raw colours), then the squared difference is summed over all eye pixels of both eyes, so each
  eye counts in proportion to its visible area (a half-hidden eye weighs less, a hidden one not at
  all). An optional (S, S) weight multiplies the per-pixel terms.
* **Search.** The two eyes share one gaze (the generator's ``gaze_head`` is one pitch/yaw). A
  coarse grid (``coarse_step``, 0.04 rad ≈ 2.3°) over the gaze box (the dataset's ranges
  ±0.45 / ±0.6 rad widened by ``range_margin``), then a beam search from the ``starts`` best
  distinct coarse cells: each level evaluates a dense 9×9 window around each kept point, keeps
  the best distinct ones and narrows 4× (5 levels: cells of ≈ 0.05°). The residual is rough at
  small scales (iris edges cross sub-pixel centres one at a time), so following a local slope
  (tried first: 3×3 descent) got stuck 1-6° away on ~5% of reads. Views with one eye hidden get
  more starts.
* **Blur.** A model's render is softer than the generator's; compared sharp, a 3×3 box blur read
  8.6° off on average. Candidates are also seen through Gaussian blurs (``blur_sigmas``, a linear
  map of the eye-pixel values onto the eye pixels and a ring around them); the blur that fits an
  image best (on every other coarse candidate) is used for its search.
* **Large images** (above ``max_work_size``) are compared box-filtered by f, against candidates
  drawn with supersample n·f (the same sub-pixels, so the same filter): the compared pixels and
  the blur maps shrink f² times.

Floor and speed
---------------
``readout_floor``: exact renders (uint8, as stored) at random gazes in the dataset's box, read
back against their labels. On the quickstart dataset (64 px, supersample 2; 64 random views of
its 4 subjects × 8 cameras × 24 frames, 3 gazes each, all with both eyes visible):

=====================  =====  =========  ========  ======
view (camera |yaw|)    reads  mean (°)   median    max
=====================  =====  =========  ========  ======
0-20°                  84     0.043      0.044     0.11
20-45°                 72     0.049      0.044     0.14
>45°                   36     0.087      0.063     0.31
=====================  =====  =========  ========  ======

Views with one eye hidden (rig cameras at ±55-65° with the head turned away, 75-85° from the
face; 5 such views, 30 reads): 1.08° mean, 0.28° median, 12° max: the visible eye is a sliver
of a few sub-pixels, and several gazes draw it identically (the residual at the found gaze
equals the one at the label), so this is the readout's real floor there, not a search failure.

A colour bias (0.85·x + 0.08) reads within ~1°, a 3×3 box blur within ~1° mean (8.6° without
the candidate blurs). Time (one thread, busy 2-core machine): 64 px 0.15-0.3 s per read after
0.15-0.35 s preparation per view; 256 px (compared at 128) 1.3-1.8 s per read after 1-2 s
preparation; ``read_batch`` shares the coarse candidates between the images of one view.

What it reads as gaze (48-frame data, mean ° by view 0-20° / 20-45° / > 45°): a Gaussian blur of
σ 1.0 px 2.5 / 3.6 / 7.7; a **whole image shifted by 1 px** 13.6 / 13.8 / 18.3 (the iris moves
against the eye pixels). A face drawn a pixel off therefore reads as a turned gaze. Registering the
image first on the gaze-independent band around the eyes was tried and not kept: on a trained
model's seen pairs it changed nothing in turned views and added resampling blur elsewhere
(docs/evaluation.md, eleventh round).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from HeadNeRF.data.dataset import GazeDataset
from HeadNeRF.data.layout import read_row
from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF.data.synthetic import rig
from HeadNeRF.data.synthetic.render import single_thread, prepare_view, shade_eye_pixels, shade_image
from HeadNeRF.geometry.cameras import camera_center, scale_intrinsics
from HeadNeRF.geometry.gaze import angular_error_deg, vector_to_pitch_yaw

__all__ = ["GazeReadout", "ReadoutConfig", "read_gaze", "readout_floor", "view_yaw_deg", "view_bin",
           "views_from_dataset", "VIEW_BINS_DEG", "summarise_errors", "readout_errors_deg",
           "redirection_readout_summary"]

# View bins by the camera's yaw seen from the face (degrees): frontal, moderate, turned.
VIEW_BINS_DEG = ((0.0, 20.0), (20.0, 45.0), (45.0, 180.0))


@dataclass(frozen=True)
class ReadoutConfig:
    """Search and comparison settings of :class:`GazeReadout` (the defaults are the measured ones)."""

    normalize: str = "mean"  # "mean": subtract each eye's mean colour (robust to colour bias); "none": raw colours
    coarse_step: float = 0.04  # rad, coarse grid step
    range_margin: float = 1.3  # the coarse grid spans the dataset's gaze box times this
    refine_levels: int = 5  # dense local grids, each (refine_points - 1) / 4 times finer
    refine_points: int = 9  # points per side of a local grid
    starts: int = 3  # best distinct coarse cells refined (both eyes visible)
    starts_one_eye: int = 6  # ... when one eye is hidden
    blur_sigmas: tuple = (0.0, 0.5, 0.8, 1.2)  # px at 64 px (scaled with the size): candidate blurs tried
    min_eye_pixels: float = 1.5  # an eye is "visible" with at least this many low-res pixels' worth of eyeball
    max_work_size: int = 128  # larger images are compared at S / f <= this (box filter of the image and candidates)
    max_chunk: int = 400_000  # candidate-pixels per albedo call (memory bound at 256 px)

    def __post_init__(self):
        if self.normalize not in ("mean", "none"):
            raise ValueError(f"normalize: 'mean' or 'none', got {self.normalize!r}")
        if self.refine_points < 3:
            raise ValueError(f"refine_points must be >= 3, got {self.refine_points}")
        if not self.blur_sigmas or min(self.blur_sigmas) < 0:
            raise ValueError(f"blur_sigmas: one or more values >= 0, got {self.blur_sigmas!r}")
        if self.coarse_step <= 0 or self.range_margin <= 0 or self.refine_levels < 0 or self.starts < 1:
            raise ValueError("coarse_step, range_margin > 0, refine_levels >= 0 and starts >= 1 required")


def _work_factor(S: int, max_work_size: int) -> int:
    """Smallest integer f dividing S with S / f <= max_work_size (1 when S is small or nothing divides)."""
    for f in range(max(1, math.ceil(S / max(max_work_size, 1))), S + 1):
        if S % f == 0:
            return f if S // f >= 16 else 1  # an eye needs pixels: never read below 16 px
    return 1


def _shape_error(name: str, expected: str, actual) -> ValueError:
    return ValueError(f"{name}: expected shape {expected}, got {tuple(actual)}")


def _tensor(x, name: str, shape: tuple) -> torch.Tensor:
    """float32 CPU tensor of exactly ``shape`` (a leading batch of 1 is squeezed), else a clear ValueError."""
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().float().cpu()
    if t.dim() == len(shape) + 1 and t.shape[0] == 1:
        t = t[0]
    if tuple(t.shape) != shape:
        raise _shape_error(name, str(shape), t.shape)
    return t


def view_yaw_deg(R_w2c, t_w2c) -> torch.Tensor:
    """(..., 3, 3), (..., 3) head→camera -> (...,) |yaw| in degrees of the camera seen from the face centre.

    0 for the frontal camera, 90 for a camera at the side of the head (head-frame gaze convention).
    """
    R, t = torch.as_tensor(R_w2c, dtype=torch.float32), torch.as_tensor(t_w2c, dtype=torch.float32)
    centre = camera_center(R.reshape(-1, 3, 3), t.reshape(-1, 3)) - torch.tensor(hm.FACE_CENTER)
    return torch.rad2deg(vector_to_pitch_yaw(centre)[:, 1].abs()).reshape(R.shape[:-2])


def view_bin(yaw_deg: float) -> str:
    """Name of the :data:`VIEW_BINS_DEG` bin of a camera yaw, e.g. ``"view |yaw| 0-20°"``."""
    for lo, hi in VIEW_BINS_DEG:
        if lo <= abs(float(yaw_deg)) < hi:
            return f"view |yaw| {lo:g}-{hi:g}°" if hi < 180 else f"view |yaw| >{lo:g}°"
    return "view |yaw| >180°"


class GazeReadout:
    """Exact gaze readout for one view of one synthetic subject (see the module docstring).

    Args:
        code: (D,) latent code of the synthetic subject. R_w2c (3, 3), t_w2c (3,): head frame → camera.
        K: (3, 3) intrinsics in pixels at ``image_size``. image_size: S. supersample: the anti-aliasing factor
            of the images to read (the dataset's ``supersample`` attribute, 2 for the synthetic dataset).
        config: :class:`ReadoutConfig`; keyword overrides of its fields are accepted too.
    """

    def __init__(self, code, R_w2c, t_w2c, K, image_size: int, supersample: int = 2,
                 config: ReadoutConfig | None = None, **overrides):
        self.config = config or ReadoutConfig()
        if overrides:
            self.config = ReadoutConfig(**{**self.config.__dict__, **overrides})
        code_t = torch.as_tensor(np.asarray(code) if not torch.is_tensor(code) else code).float().cpu()
        if code_t.dim() != 1:
            raise _shape_error("code", "(D,)", code_t.shape)
        R, t, K = _tensor(R_w2c, "R_w2c", (3, 3)), _tensor(t_w2c, "t_w2c", (3,)), _tensor(K, "K", (3, 3))
        S, n = int(image_size), int(supersample)
        if S < 1 or n < 1:
            raise ValueError(f"image_size and supersample must be >= 1, got {image_size}, {supersample}")
        self.S, self.n, self.code, self.R, self.t, self.K = S, n, code_t.numpy(), R, t, K
        self.work_factor = _work_factor(S, self.config.max_work_size)
        if self.work_factor > 1:
            # Large images are read at S / f (their box filter), drawn by the generator at that size: the
            # candidates' cost grows with the eyeball sub-pixels. .render prepares the full size on demand.
            f = self.work_factor
            self._work = GazeReadout(self.code, R, t, scale_intrinsics(K[None], 1.0 / f)[0], S // f, n * f,
                                     config=self.config)  # n*f: the same sub-pixels, so the same box filter
            self._full: GazeReadout | None = None
            self.eye_visible, self.prepare_seconds = self._work.eye_visible, self._work.prepare_seconds
            return
        t0 = time.perf_counter()
        with single_thread():
            prep = prepare_view(self.code, R[None], t[None], scale_intrinsics(K[None], n), S * n)
            self._prep = prep
            self._eye_idx = torch.nonzero(prep["is_eye"], as_tuple=True)[0]  # (E,) into the foreground pixels
            yx = torch.nonzero(prep["fg"][0])[self._eye_idx]  # (E, 2) hi-res (y, x); same order as fg indexing
            lo_pix = (yx[:, 0] // n) * S + yx[:, 1] // n  # low-res pixel of each eyeball sub-pixel
            self.eye_pixels, self._sub_to_pix = torch.unique(lo_pix, return_inverse=True)  # (M,), (E,)
            M = len(self.eye_pixels)
            eye_k = prep["eye_k"][self._eye_idx]
            # Each low-res eye pixel belongs to the eye most of its eyeball sub-pixels belong to.
            left = torch.zeros(M).index_add_(0, self._sub_to_pix, eye_k.float())
            total = torch.zeros(M).index_add_(0, self._sub_to_pix, torch.ones(len(eye_k)))
            self._pix_eye = (left * 2 > total).long()  # (M,) 0 right, 1 left
            sub_per_eye = torch.bincount(eye_k, minlength=2).float()
            self.eye_visible = sub_per_eye >= self.config.min_eye_pixels * n * n  # (2,)
            # Gaze-independent parts: every sub-pixel but the eyeball ones, box-summed (float and uint8 versions).
            hi = shade_image(prep, torch.zeros(2))[0]  # (nS, nS, 3)
            eye_hi = torch.zeros(S * n, S * n, dtype=torch.bool)
            eye_hi[yx[:, 0], yx[:, 1]] = True
            hi_q = torch.floor(hi * 255.0 + 0.5)
            self._base_f = self._box_sum(torch.where(eye_hi[..., None], 0.0, hi))  # (S, S, 3)
            self._base_q = self._box_sum(torch.where(eye_hi[..., None], 0.0, hi_q))
            self._build_compare_operators()
        self.prepare_seconds = time.perf_counter() - t0

    def _build_compare_operators(self) -> None:
        """Compared pixels (the eye pixels and a ring as wide as the largest blur) and, per candidate blur,
        the linear map eye-pixel values -> blurred values there: ``const (C, 3) + W (C, M) @ values``."""
        S = self.S
        sigmas = [float(x) * S / 64.0 for x in self.config.blur_sigmas]
        ring = math.ceil(2 * max(sigmas))
        eye_map = torch.full((S * S,), -1, dtype=torch.long)
        eye_map[self.eye_pixels] = self._pix_eye
        grids = []
        for k in range(2):
            m = (eye_map == k).float().reshape(1, 1, S, S)
            grids.append(torch.nn.functional.max_pool2d(m, 2 * ring + 1, 1, ring).reshape(-1) > 0 if ring else
                         m.reshape(-1) > 0)
        self.compare_pixels = torch.nonzero(grids[0] | grids[1], as_tuple=True)[0]  # (C,)
        ys, xs = self.compare_pixels // S, self.compare_pixels % S
        my, mx = self.eye_pixels // S, self.eye_pixels % S
        # A ring pixel belongs to the eye of its nearest eye pixel.
        d2 = (ys[:, None] - my[None]).float().square() + (xs[:, None] - mx[None]).float().square()  # (C, M)
        self._cmp_eye = self._pix_eye[d2.argmin(1)]
        masked = (self._base_f / (self.n * self.n)).reshape(-1, 3).clone()
        masked[self.eye_pixels] = 0.0  # the eye pixels' values come from the candidates
        masked = masked.reshape(S, S, 3).permute(2, 0, 1)[None]  # (1, 3, S, S)
        dy, dx = (ys[:, None] - my[None]).float(), (xs[:, None] - mx[None]).float()
        self._ops = []
        for sigma in sigmas:
            if sigma == 0:
                W = ((dy == 0) & (dx == 0)).float()
                const = masked[0].permute(1, 2, 0).reshape(-1, 3)[self.compare_pixels]
            else:
                r = math.ceil(3 * sigma)
                taps = torch.exp(-0.5 * (torch.arange(-r, r + 1).float() / sigma) ** 2)
                taps = taps / taps.sum()
                pad = torch.nn.functional.pad(masked, (r, r, r, r), mode="replicate")
                blurred = torch.nn.functional.conv2d(pad, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
                blurred = torch.nn.functional.conv2d(blurred, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
                const = blurred[0].permute(1, 2, 0).reshape(-1, 3)[self.compare_pixels]
                inside = (dy.abs() <= r) & (dx.abs() <= r)
                W = torch.where(inside, taps[(dy + r).clamp(0, 2 * r).long()] * taps[(dx + r).clamp(0, 2 * r).long()],
                                torch.zeros(()))
            self._ops.append((const, W))

    # ------------------------------------------------------------------ rendering candidates

    def _box_sum(self, hi: torch.Tensor) -> torch.Tensor:
        """(nS, nS, 3) -> (S, S, 3) sums over the n×n sub-pixels of each pixel."""
        S, n = self.S, self.n
        return hi.reshape(S, n, S, n, 3).sum((1, 3))

    def _eye_values(self, gazes: torch.Tensor, quantize: bool) -> torch.Tensor:
        """(G, 2) gazes -> (G, M, 3) eye-pixel values in [0, 1] (box filter of the sub-pixels)."""
        G, E, M = len(gazes), len(self._eye_idx), len(self.eye_pixels)
        out = torch.empty(G, M, 3)
        base = (self._base_q if quantize else self._base_f).reshape(-1, 3)[self.eye_pixels]  # (M, 3)
        step = max(1, self.config.max_chunk // max(E, 1))
        for a in range(0, G, step):
            g = gazes[a:a + step]
            sub = shade_eye_pixels(self._prep, g[:, None, :].expand(len(g), E, 2), self._eye_idx).clamp(0, 1)
            if quantize:
                sub = torch.floor(sub * 255.0 + 0.5)
            acc = base.expand(len(g), M, 3).clone().index_add_(1, self._sub_to_pix, sub)
            acc = acc / (self.n * self.n)
            out[a:a + step] = torch.floor(acc + 0.5) / 255.0 if quantize else acc
        return out

    def render(self, gaze_head, quantize: bool = True) -> torch.Tensor:
        """(G, 2) or (2,) eye-in-head gazes (pitch, yaw) rad -> (G, S, S, 3) float [0, 1] generator images.

        ``quantize=True`` reproduces ``render_view(..., supersample)``'s uint8 image exactly (/255)."""
        if self.work_factor > 1:
            if self._full is None:
                full_cfg = replace(self.config, max_work_size=self.S)
                self._full = GazeReadout(self.code, self.R, self.t, self.K, self.S, self.n, config=full_cfg)
            return self._full.render(gaze_head, quantize)
        g = torch.as_tensor(gaze_head, dtype=torch.float32).reshape(-1, 2) if not torch.is_tensor(gaze_head) \
            else gaze_head.detach().float().cpu().reshape(-1, 2)
        with single_thread():
            base = self._base_q if quantize else self._base_f
            full = base / (self.n * self.n)
            full = torch.floor(full + 0.5) / 255.0 if quantize else full
            images = full.reshape(1, -1, 3).repeat(len(g), 1, 1)
            images[:, self.eye_pixels] = self._eye_values(g, quantize)
        return images.reshape(len(g), self.S, self.S, 3)

    # ------------------------------------------------------------------ reading

    def _as_image(self, image, name: str = "image") -> torch.Tensor:
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 or torch.is_tensor(image) and image.dtype == torch.uint8:
            img = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image).float() / 255.0
        else:
            img = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image.detach()).float()
        if tuple(img.shape) != (self.S, self.S, 3):
            raise _shape_error(name, f"({self.S}, {self.S}, 3) (H, W, RGB; float in [0, 1] or uint8)", img.shape)
        return img.cpu()

    def _check_weight(self, weight) -> torch.Tensor:
        wt = torch.as_tensor(np.asarray(weight) if not torch.is_tensor(weight) else weight.detach()).float().cpu()
        if tuple(wt.shape) != (self.S, self.S):
            raise _shape_error("weight", f"({self.S}, {self.S})", wt.shape)
        return wt

    def _pixel_weight(self, weight) -> torch.Tensor:
        """(C,) weight of the compared pixels: 0 for pixels of a hidden eye, times the caller's (S, S) weight."""
        w = self.eye_visible[self._cmp_eye].float()
        if weight is not None:
            w = w * self._check_weight(weight).reshape(-1)[self.compare_pixels]
        return w

    def _normalise(self, values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(..., C, 3) -> the same with each eye's weighted mean colour subtracted (``normalize="mean"``)."""
        if self.config.normalize == "none":
            return values
        out = values.clone()
        for k in range(2):
            sel = self._cmp_eye == k
            wk = w[sel]
            if wk.sum() > 0:
                mean = (values[..., sel, :] * wk[:, None]).sum(-2, keepdim=True) / wk.sum()
                out[..., sel, :] = values[..., sel, :] - mean
        return out

    def _residuals(self, targets: torch.Tensor, w: torch.Tensor, eye_values: torch.Tensor, blur: int) -> torch.Tensor:
        """targets (N, C, 3) normalised, w (N, C), eye_values (G, M, 3) -> (N, G) weighted mean squared
        differences with the candidates seen through candidate blur number ``blur``."""
        const, W = self._ops[blur]
        cand = const + torch.einsum("cm,gmk->gck", W, eye_values)  # (G, C, 3)
        res = torch.empty(len(targets), len(eye_values))
        for i in range(len(targets)):
            c = self._normalise(cand, w[i])
            res[i] = ((c - targets[i]).square().sum(-1) * w[i]).sum(-1) / (3 * w[i].sum()).clamp_min(1e-12)
        return res

    def _coarse_grid(self) -> torch.Tensor:
        m, h = self.config.range_margin, self.config.coarse_step
        pitch = torch.arange(-rig.GAZE_PITCH_RANGE * m, rig.GAZE_PITCH_RANGE * m + 1e-6, h)
        yaw = torch.arange(-rig.GAZE_YAW_RANGE * m, rig.GAZE_YAW_RANGE * m + 1e-6, h)
        return torch.cartesian_prod(pitch, yaw)  # (G, 2)

    def read(self, image, weight=None) -> dict:
        """Gaze of one image of this view.

        Args:
            image: (S, S, 3) float in [0, 1] or uint8 (numpy or torch), RGB. weight: optional (S, S) per-pixel weight.
        Returns:
            {"gaze_head": (2,) float32 tensor, pitch/yaw rad in the head frame (``render_view``'s ``gaze_head``),
             "residual": float, weighted mean squared colour difference at that gaze (after normalisation),
             "eyes_visible": int 0..2, "blur_px": the candidate blur (px) that matched best};
            gaze and residual NaN when no eye is visible.
        """
        return self.read_batch([image], None if weight is None else [weight])[0]

    def read_batch(self, images, weights=None) -> list[dict]:
        """:meth:`read` of several images of this view (the coarse candidates are rendered once). images: a
        sequence of (S, S, 3) or an (N, S, S, 3) array/tensor; weights: None or one (S, S) per image."""
        imgs = [self._as_image(im, f"images[{i}]") for i, im in enumerate(images)]
        if weights is not None and len(weights) != len(imgs):
            raise ValueError(f"weights: expected {len(imgs)} (one per image), got {len(weights)}")
        if self.work_factor > 1:
            f, s = self.work_factor, self.S // self.work_factor
            small = [im.reshape(s, f, s, f, 3).mean((1, 3)) for im in imgs]
            small_w = None if weights is None else [
                self._check_weight(wt).reshape(s, f, s, f).mean((1, 3)) for wt in weights]
            reads = self._work.read_batch(small, small_w)
            for r in reads:
                r["blur_px"] = r["blur_px"] * f
            return reads
        visible = int(self.eye_visible.sum())
        if visible == 0 or not imgs:
            return [{"gaze_head": torch.full((2,), math.nan), "residual": math.nan, "eyes_visible": visible,
                     "blur_px": math.nan} for _ in imgs]
        with single_thread():
            w = torch.stack([self._pixel_weight(None if weights is None else weights[i]) for i in range(len(imgs))])
            targets = torch.stack([self._normalise(im.reshape(-1, 3)[self.compare_pixels], w[i])
                                   for i, im in enumerate(imgs)])  # (N, C, 3)
            grid = self._coarse_grid()
            grid_values = self._eye_values(grid, quantize=False)
            # The candidate blur that fits each image best, chosen on every other coarse candidate.
            sparse = torch.arange(0, len(grid), 2)
            blur_fit = torch.stack([self._residuals(targets, w, grid_values[sparse], b).min(1).values
                                    for b in range(len(self._ops))])  # (B, N)
            blurs = blur_fit.argmin(0).tolist()
            coarse = {b: self._residuals(targets, w, grid_values, b) for b in set(blurs)}  # (N, G) each
            starts = self.config.starts if visible == 2 else self.config.starts_one_eye
            out = []
            for i in range(len(imgs)):
                blur = blurs[i]
                picked = _distinct_best(grid, coarse[blur][i], starts, 1.5 * self.config.coarse_step)
                best_g, best_r = self._refine(targets[i:i + 1], w[i:i + 1], picked, blur)
                out.append({"gaze_head": best_g.clone(), "residual": float(best_r), "eyes_visible": visible,
                            "blur_px": float(self.config.blur_sigmas[blur]) * self.S / 64.0})
        return out

    def _refine(self, target: torch.Tensor, w: torch.Tensor, starts: list, blur: int) -> tuple[torch.Tensor, float]:
        """Beam search of dense local grids: each level evaluates a window around each of the ``len(starts)``
        best points so far, keeps the best distinct ones, and narrows the windows to two cells.

        The residual is rough at small scales (iris and pupil edges cross sub-pixel centres one at a
        time), so whole windows are evaluated and several basins kept, not one local slope followed."""
        points, best, best_r = list(starts), starts[0].clone(), math.inf
        half, k = 1.5 * self.config.coarse_step, self.config.refine_points
        ticks01 = torch.linspace(-1.0, 1.0, k)
        window = torch.cartesian_prod(ticks01, ticks01)  # (k², 2)
        for _ in range(self.config.refine_levels):
            cand = torch.cat([p + half * window for p in points])
            r = self._residuals(target, w, self._eye_values(cand, False), blur)[0]
            j = int(torch.argmin(r))
            if float(r[j]) < best_r:
                best, best_r = cand[j].clone(), float(r[j])
            cell = 2 * half / (k - 1)
            points = _distinct_best(cand, r, len(starts), cell)
            half = 2 * cell  # the next windows span two cells of this level on each side
        return best, best_r


def _distinct_best(points: torch.Tensor, residuals: torch.Tensor, count: int, min_sep: float) -> list:
    """The ``count`` lowest-residual points of (G, 2) ``points`` that are more than ``min_sep`` apart (max-norm)."""
    picked: list[torch.Tensor] = []
    for j in torch.argsort(residuals).tolist():
        if all(float((points[j] - p).abs().max()) > min_sep for p in picked):
            picked.append(points[j])
            if len(picked) == count:
                break
    return picked


def read_gaze(image, code, R_w2c, t_w2c, K, supersample: int = 2, **options) -> dict:
    """:meth:`GazeReadout.read` of one image (the image size is the image's). Builds the readout each call:
    for several images of one view, build one :class:`GazeReadout` and use ``read_batch``."""
    shape = tuple(np.shape(image))
    if len(shape) != 3 or shape[-1] != 3 or shape[0] != shape[1]:
        raise _shape_error("image", "(S, S, 3)", shape)
    return GazeReadout(code, R_w2c, t_w2c, K, shape[0], supersample, **options).read(image)


# ---------------------------------------------------------------------------------------------- redirection


def readout_errors_deg(readout: GazeReadout, images: torch.Tensor, target_gazes: torch.Tensor) -> list[float]:
    """Exact-readout gaze errors (degrees) of images of one view against requested gazes.

    Args:
        images: (n, 3, S, S) float renders, one per request, or (1, 3, S, S): one image standing for every
            request (the unchanged input, a model not redirected). target_gazes: (n, 2) requested eye-in-head
            gazes (pitch, yaw) rad.
    Returns: n errors (NaN where no eye is visible).
    """
    n = len(target_gazes)
    if images.dim() != 4 or images.shape[1] != 3 or len(images) not in (1, n):
        raise _shape_error("images", f"({n} or 1, 3, S, S)", images.shape)
    reads = readout.read_batch(images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu())
    read = torch.stack([r["gaze_head"] for r in reads]).expand(n, 2)
    return angular_error_deg(read, torch.as_tensor(target_gazes).detach().float().cpu()).tolist()


def redirection_readout_summary(errors: dict) -> dict:
    """Mean/median degrees per reading and the check of a redirection.

    Args: errors {"model": [...], "copy_input": [...], "no_redirection": [...], "floor": [...]} (deg per pair;
        "no_redirection" is the model rendered at the input's own gaze, optional).
    Returns: ``gaze_error_deg_<name>_mean`` / ``_median``, ``unreadable_<name>`` (NaN count), ``check`` (one line)
        and ``check_met``: the model's mean error at most half of each "ignore the request" reference present
        (a gaze-blind model's error equals its no-redirection error, whatever the copy baseline is).
    """
    out: dict = {}
    for name, e in errors.items():
        e = np.asarray(e, dtype=np.float64)
        ok = e[np.isfinite(e)]
        out[f"gaze_error_deg_{name}_mean"] = float(ok.mean()) if len(ok) else math.nan
        out[f"gaze_error_deg_{name}_median"] = float(np.median(ok)) if len(ok) else math.nan
        out[f"unreadable_{name}"] = int(len(e) - len(ok))  # no eye visible in that view
    m = out["gaze_error_deg_model_mean"]
    refs = {k: out[f"gaze_error_deg_{k}_mean"] for k in ("copy_input", "no_redirection") if k in errors}
    met = all(m <= 0.5 * v for v in refs.values())  # NaN compares False: unreadable is not met
    names = {"copy_input": "copy-input", "no_redirection": "the model not redirected"}
    f = out.get("gaze_error_deg_floor_mean", math.nan)
    out["check"] = (f"{'met' if met else 'NOT met'}: redirection gaze error {m:.2f}° vs "
                    + " and ".join(f"{names[k]} {v:.2f}°" for k, v in refs.items())
                    + f" (needs ≤ 0.5 × {'both' if len(refs) > 1 else 'it'}; readout floor {f:.2f}°)")
    out["check_met"] = bool(met)
    return out


# ---------------------------------------------------------------------------------------------- floor


def summarise_errors(errors) -> dict:
    """{"n", "mean_deg", "median_deg", "p90_deg", "max_deg"} of a list of angular errors (NaN entries counted
    as failures in ``n_failed``, left out of the statistics)."""
    e = np.asarray(list(errors), dtype=np.float64)
    ok = e[np.isfinite(e)]
    if not len(ok):
        return {"n": 0, "n_failed": int(len(e))}
    return {"n": int(len(ok)), "n_failed": int(len(e) - len(ok)), "mean_deg": float(ok.mean()),
            "median_deg": float(np.median(ok)), "p90_deg": float(np.percentile(ok, 90)), "max_deg": float(ok.max())}


def readout_floor(views, image_size: int, gazes_per_view: int = 8, supersample: int = 2, seed: int = 0,
                  config: ReadoutConfig | None = None) -> dict:
    """The readout's floor: exact renders (uint8, as stored) at random gazes read back against their labels.

    Args:
        views: iterable of (code (D,), R_w2c (3, 3), t_w2c (3,), K (3, 3)) at ``image_size``.
        gazes_per_view: random gazes per view, uniform in the dataset's box (±GAZE_PITCH_RANGE, ±GAZE_YAW_RANGE).
    Returns:
        {"all": summary, "by_view": {bin name: summary}, "by_eyes_visible": {"2 eyes": summary, ...},
         "seconds_per_read": mean read time, "seconds_prepare": mean per-view preparation time}
        (summaries from :func:`summarise_errors`).
    """
    gen = torch.Generator().manual_seed(int(seed))
    half = torch.tensor([rig.GAZE_PITCH_RANGE, rig.GAZE_YAW_RANGE])
    errors: list[float] = []
    by_view: dict[str, list] = {}
    by_eyes: dict[str, list] = {}
    t_read, t_prep, n_read, n_views = 0.0, 0.0, 0, 0
    for code, R, t, K in views:
        ro = GazeReadout(code, R, t, K, image_size, supersample, config=config)
        t_prep += ro.prepare_seconds
        n_views += 1
        labels = (torch.rand(gazes_per_view, 2, generator=gen) * 2 - 1) * half
        images = ro.render(labels)  # == render_view's uint8 image / 255
        t0 = time.perf_counter()
        reads = ro.read_batch(images)
        t_read += time.perf_counter() - t0
        n_read += len(reads)
        bin_name = view_bin(float(view_yaw_deg(ro.R, ro.t)))
        for lab, r in zip(labels, reads):
            e = float(angular_error_deg(r["gaze_head"], lab)) if r["eyes_visible"] else math.nan
            errors.append(e)
            by_view.setdefault(bin_name, []).append(e)
            by_eyes.setdefault(f"{r['eyes_visible']} eyes visible", []).append(e)
    return {"all": summarise_errors(errors),
            "by_view": {k: summarise_errors(v) for k, v in sorted(by_view.items())},
            "by_eyes_visible": {k: summarise_errors(v) for k, v in sorted(by_eyes.items())},
            "seconds_per_read": t_read / max(n_read, 1), "seconds_prepare": t_prep / max(n_views, 1)}


def views_from_dataset(dataset_dir: str, split: str = "test", max_views: int | None = None,
                       cams: list[int] | None = None) -> tuple[list, int, int]:
    """Views (code, R_w2c, t_w2c, K) of a synthetic dataset's split (``max_views``: a fixed random subset).

    Returns (views, image_size, supersample). Raises ValueError when the dataset is not synthetic.
    """
    ds = GazeDataset(dataset_dir, split)
    rows = [r for r in ds.rows if cams is None or r.cam in cams]
    if max_views is not None and len(rows) > max_views:  # a fixed random subset: rows are frame-major, a stride
        keep = np.sort(np.random.default_rng(0).permutation(len(rows))[:max_views])  # would pick one camera
        rows = [rows[i] for i in keep]
    views, image_size, supersample = [], None, None
    for r in rows:
        keys = ("latent_code", "cam_R_w2c", "cam_t_w2c", "cam_K")
        stored = read_row(ds.paths[r.subject], r.row, keys)
        if stored["source"] != "synthetic":
            raise ValueError(f"{ds.paths[r.subject]}: the exact readout needs synthetic data "
                             f"(source {stored['source']!r})")
        supersample, image_size = stored["supersample"], stored["image_size"]
        views.append(tuple(stored[k] for k in keys))
    return views, image_size, supersample
