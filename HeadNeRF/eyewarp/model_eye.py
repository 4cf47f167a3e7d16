"""The current gaze of a synthetic head's eyes by analysis-by-synthesis with our own head model.

Why: on the synthetic heads (anatomy ``HEAD_MODEL``) the limbus-contrast fit of ``eyeball.py`` reads the
current gaze 4-5 deg off at 256 px and 15-20 deg off at 64 px, because (a) the eyeball centre comes from
the *mean* head placed by the PnP pose (off by a median 0.10 eyeball radii, ~5-6 deg of gaze) and (b)
mediapipe's lid contour misses the cartoon's almond opening, so the fit does not know which pixels
show the eyeball. Both are things the generator's own head model knows: the opening is an almond
fixed to the eyeball centre (``head_model.eye_almond``), the eyeball a sphere of a fixed radius, the
skin a smooth surface pushed out of a "lid sphere" around it. So this module draws the eye region of
the mean head at the PnP pose and fits what differs from the photo.

Model (per eye, head frame of the PnP pose, numpy):

* **Rays.** Every pixel of a box around the eye is cut into n x n sub-pixel rays (n = 2 for eyes of
  40 px and more, up to 6 for 8 px eyes; the generator itself renders at 2x and box-filters), so the
  model is anti-aliased like the image and the fit is smooth in sub-pixel shifts.
* **Skin hit.** Each ray is intersected once with the mean head's skin in front of that eye: the
  nearer of the smooth skin (a height field sampled from ``head_model.skin_surface_at(lids=False)``,
  marched) and the lid sphere (``eye_radius + LID_MARGIN``, analytic): the generator's mesh pushes
  the skin out of the eyeball to exactly that sphere.
* **Eyeball centre correction** ``delta`` (head-frame x, y, per eye): the subject's eye placement
  differs from the mean head's (``eye_x`` +-0.015, ``eye_y`` +-0.02 head units) and the PnP pose adds
  its own error. The almond opening and the eyeball move together by ``delta`` (the skin hit is
  kept: the skin barely moves). The opening's position in the image (bright sclera against skin,
  the dark lash line) pins the centre; the iris alone could not (iris position = centre + r x axis).
* **What a sub-pixel shows**: skin (times 0.25 on the lash line, 0.75 on the lid crease, as
  ``head_model.skin_albedo``) where the skin hit is outside the almond; else the eyeball (sphere hit at
  the corrected centre): pupil, iris (with the generator's radial texture and dark limbal ring) or
  sclera (darker away from the cornea), all times the lids' soft shadow. These are four basis maps.
* **Colours are solved, not searched**: per eye and candidate, the RGB of skin, sclera, iris and
  pupil is the least-squares fit of the four box-filtered basis maps to the image pixels (so skin tone,
  iris colour, sclera tint, exposure and light colour need no prior). The score is the residual.
  **Catch-light**: a fifth basis, the generator's ``(n . h)^120`` highlight for a key light picked among
  the generator's light directions (one light for both eyes; a coarse grid at the coarse gaze, a finer one
  once the eyes are in place); its direction and colour go to the warp, which keeps the highlight where
  it is. Lambert shading is not modelled (it is the residual floor).
* **Search** (coarse to fine, grids, no gradients: the residual is piecewise constant in sub-pixel
  steps): (1) one gaze for both eyes on a 0.05 rad grid over the whole gaze range, delta = 0; the light
  (8 x 4 directions); the gaze grid again with the catch-light; (2) per eye, a delta grid (+-0.04 head
  units, ~0.25 r, step 0.01; once more around a result on its edge) where each delta keeps the iris
  point of (1) (the axis through it, +-0.03 rad): a delta is judged by the opening, not by moving the
  iris; (3) a finer delta grid per eye (step 0.004); the light again (15 x 7); (4) one shared gaze (both
  eyes are parallel in the generator) on two finer grids (0.01, 0.002 rad) around the per-eye gazes.
  Tried first: a joint grid of delta x a 7 x 7 gaze window: 2.3 s per 64 px view instead of 0.6 s, for a
  current gaze 5.2 deg off instead of 5.6 on the 6 views below (one view's worth of difference).

Accuracy (current gaze against the label, the benchmark's 6 source views of the test subject): 1.9 deg
mean at 256 px (limbus fit 4.4), 5.6 deg at 64 px (limbus fit 15.0); with the true head pose instead of
PnP's, 1.2 (measured before the catch-light basis) and 2.3 deg: the PnP pose is what is left (``docs/photo_redirection.md``, "Measured").

Speed: eyes wider than 2 x ``work_eye_px`` (28 px) are searched on the image box-filtered by an integer
factor (eyes of 14-28 px), then the last shared-gaze grids run on the photo's pixels (box-filtered to
36-72 px eyes when wider). Measured on 2 shared cores: 0.6-0.9 s per view at 64 px, 1.0-1.4 s at 256 px,
1.1 s at 1024 px.

Returned: the optical axis and corrected centres in the camera frame, the fitted opening's 16-point
contour in pixels (the warp's lid opening), the light direction and the catch-light's colour.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from HeadNeRF.geometry.gaze import pitch_yaw_to_vector, vector_to_pitch_yaw

__all__ = ["EyeModelFit", "MeanEyes", "SPECULAR_EXPONENT", "catchlight", "fit_eye_model", "light_dirs", "mean_eyes",
           "subpixel_centres"]

# Box around each eyeball centre (head units, local x0, x1, y0, y1): the opening, lash line and lid crease.
BOX = (-0.23, 0.23, -0.13, 0.10)
DELTA_RANGE = 0.04  # eyeball-centre correction searched (head units, +-; the eyeball radius is 0.165)
_GRID_U = np.round(np.arange(-0.42, 0.4201, 0.01), 4)  # skin height field around each eye (local x)
_GRID_V = np.round(np.arange(-0.28, 0.2401, 0.01), 4)  # (local y)
SPECULAR_EXPONENT = 120  # the generator's eyeball highlight: 0.9 (n . h)^120 (data/synthetic/render.py)


@dataclasses.dataclass(frozen=True)
class MeanEyes:
    """The mean synthetic head around its eyes. params: HeadParams (eye_centers set); centres (2, 3)
    [right, left] head frame; radius, lid_radius (eyeball, lid sphere); skin_z (2, V, U) smooth skin depth
    relative to each centre on the local grid (_GRID_V, _GRID_U); local: HeadParams whose eye centres are 0
    (the almond in local coordinates); table: ``_eyeball_table``."""

    params: object
    local: object
    centres: np.ndarray
    radius: float
    lid_radius: float
    skin_z: np.ndarray
    table: np.ndarray


@dataclasses.dataclass
class EyeModelFit:
    """Result. gaze_head (3,) optical axis, head frame of the pose; gaze_cam (3,) the same in the camera frame;
    centres_head / centres_cam (2, 3) corrected eyeball centres (camera: head units); delta (2, 3);
    contours (2, 16, 2) fitted lid openings (px); residual: mean squared error per pixel and channel; sides:
    the eyes fitted (0 right, 1 left), the rows of the per-eye arrays; light_cam (3,) the key light's direction
    (camera frame) that places the catch-light; catchlight_rgb (2, 3) its solved colour per eye (0-1 scale)."""

    gaze_head: np.ndarray
    gaze_cam: np.ndarray
    centres_head: np.ndarray
    centres_cam: np.ndarray
    delta: np.ndarray
    contours: np.ndarray
    residual: float
    sides: tuple = (0, 1)
    light_cam: np.ndarray | None = None
    catchlight_rgb: np.ndarray | None = None


_MEAN: MeanEyes | None = None


def mean_eyes() -> MeanEyes:
    """The mean head's eye geometry (cached; ~0.1 s the first time)."""
    global _MEAN
    if _MEAN is None:
        from HeadNeRF.data.synthetic import head_model as hm  # lazy: data.synthetic loads pytorch3d's renderer

        P = hm.decode(np.zeros(hm.CODE_DIM, np.float32))
        c = np.asarray(hm.eyeball_centers(P), np.float64)
        P = dataclasses.replace(P, eye_centers=tuple(tuple(float(v) for v in ci) for ci in c))
        local = dataclasses.replace(P, eye_centers=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
        uu, vv = np.meshgrid(_GRID_U, _GRID_V)
        z = [hm.skin_surface_at(np.c_[uu.ravel() + c[k, 0], vv.ravel() + c[k, 1]], P, lids=False)[:, 2]
             .reshape(uu.shape) - c[k, 2] for k in range(2)]
        _MEAN = MeanEyes(P, local, c, float(P.eye_radius), float(P.eye_radius + hm.LID_MARGIN), np.stack(z),
                         _eyeball_table(P).astype(np.float32))
    return _MEAN


def _axes(pitch_yaw: np.ndarray) -> np.ndarray:
    """(..., 2) pitch/yaw (rad) -> (..., 3) unit optical axes: ``geometry.gaze.pitch_yaw_to_vector`` on numpy."""
    return pitch_yaw_to_vector(torch.from_numpy(np.asarray(pitch_yaw, np.float64))).numpy()


def _pitch_yaw(axes: np.ndarray) -> np.ndarray:
    """(..., 3) axes (any length) -> (..., 2) pitch/yaw (rad): ``geometry.gaze.vector_to_pitch_yaw`` on numpy."""
    return vector_to_pitch_yaw(torch.from_numpy(np.asarray(axes, np.float64))).numpy()


def subpixel_centres(x0: int, y0: int, x1: int, y1: int, n: int) -> np.ndarray:
    """(P * n * n, 2) (x, y) centres of the n x n sub-pixels of every pixel of the box [x0, x1) x [y0, y1): pixels
    row-major, each pixel's sub-pixels consecutive (rows of sub-pixels outer); pixel (x, y) spans [x, x + 1)."""
    sub = (np.arange(n) + 0.5) / n
    sy, sx = np.meshgrid(sub, sub, indexing="ij")
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.stack([(xs.reshape(-1, 1) + sx.reshape(1, -1)).reshape(-1),
                     (ys.reshape(-1, 1) + sy.reshape(1, -1)).reshape(-1)], -1)


def catchlight(normal: np.ndarray, to_camera: np.ndarray, light: np.ndarray) -> np.ndarray:
    """The generator's eyeball highlight shape ``(n . h)^SPECULAR_EXPONENT`` (colour left out).

    normal (..., 3) unit sphere normals; to_camera (..., 3) unit directions to the camera; light (3,) unit
    direction to the light; h is halfway between the light and the camera. Returns (...) in [0, 1]."""
    h = to_camera + light
    h = h / np.linalg.norm(h, axis=-1, keepdims=True)
    return np.clip(np.sum(normal * h, -1), 0.0, 1.0) ** SPECULAR_EXPONENT


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - a) / (b - a), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a (V, U) grid on (_GRID_V, _GRID_U) at local (u, v) (clamped to the grid)."""
    fu = np.clip((u - _GRID_U[0]) / 0.01, 0, len(_GRID_U) - 1.001)
    fv = np.clip((v - _GRID_V[0]) / 0.01, 0, len(_GRID_V) - 1.001)
    i, j = fv.astype(int), fu.astype(int)
    a, b = fv - i, fu - j
    return (grid[i, j] * (1 - a) * (1 - b) + grid[i, j + 1] * (1 - a) * b + grid[i + 1, j] * a * (1 - b)
            + grid[i + 1, j + 1] * a * b)


def _sphere_front(o: np.ndarray, d: np.ndarray, c: np.ndarray, radius: float):
    """Front hits of rays o + l d (d (..., N, 3) unit, o (3,)) with spheres centred at c (..., 1, 3):
    (l (..., N), hit (..., N) bool); a miss gets the closest approach's l."""
    oc = o - c
    b = np.sum(d * oc, -1)
    disc = b * b - (np.sum(oc * oc, -1) - radius * radius)
    hit = disc >= 0
    return -b - np.sqrt(np.maximum(disc, 0.0)), hit


def _skin_hits(o: np.ndarray, d: np.ndarray, k: int, mean: MeanEyes) -> np.ndarray:
    """Where rays (origin o (3,), unit d (N, 3), local to eye k's centre) meet the skin: (N, 3) local points.

    The smooth skin height field is marched in 0.02 head-unit depth steps from 0.45 in front of the centre
    (first sign change, then linear interpolation); the lid sphere is hit analytically; the nearer wins."""
    zs = np.arange(-0.45, 0.0501, 0.02)
    lam = (zs[:, None] - o[2]) / d[None, :, 2]  # (M, N)
    pts = o + lam[..., None] * d
    gap = pts[..., 2] - _bilinear(mean.skin_z[k], pts[..., 0], pts[..., 1])  # > 0: behind the skin
    behind = gap > 0
    first = np.where(behind.any(0), behind.argmax(0), len(zs) - 1)
    prev = np.maximum(first - 1, 0)
    n = np.arange(d.shape[0])
    g0, g1 = gap[prev, n], gap[first, n]
    w = np.where(np.abs(g1 - g0) > 1e-9, -g0 / np.where(np.abs(g1 - g0) > 1e-9, g1 - g0, 1.0), 0.0)
    lam_skin = lam[prev, n] + np.clip(w, 0, 1) * (lam[first, n] - lam[prev, n])
    lam_lid, hit_lid = _sphere_front(o, d, np.zeros(3), mean.lid_radius)
    lam_hit = np.where(hit_lid & (lam_lid < lam_skin), lam_lid, lam_skin)
    return o + lam_hit[:, None] * d


def _almond(xy: np.ndarray, k: int, mean: MeanEyes, scale: float = 1.0):
    """The generator's almond for eye k in local coordinates: (inside, up, lo, s) arrays shaped like xy[..., 0]."""
    import torch

    from HeadNeRF.data.synthetic import head_model as hm  # lazy: data.synthetic loads pytorch3d's renderer

    shape = xy.shape[:-1]
    x = torch.from_numpy(np.ascontiguousarray(xy[..., 0]).reshape(-1))
    y = torch.from_numpy(np.ascontiguousarray(xy[..., 1]).reshape(-1))
    ins, up, lo, s = (a[k].numpy().reshape(shape) for a in hm.eye_almond(x, y, mean.local, scale))
    return ins, up, lo, s


@dataclasses.dataclass
class _Eye:
    """One eye's fixed data: k; target (P, 3) pixel colours in [0, 1]; n sub-pixels per side; o (3,) camera
    centre and d (P * n * n, 3) unit rays (head frame, local to the mean centre; the sub-pixels of a pixel are
    consecutive); skin (P * n * n, 3) local skin hits."""

    k: int
    target: np.ndarray
    n: int
    o: np.ndarray
    d: np.ndarray
    skin: np.ndarray


def _eye_data(image: np.ndarray, k: int, R: np.ndarray, t: np.ndarray, K: np.ndarray, mean: MeanEyes,
              n: int) -> _Eye | None:
    """The pixel box around eye k's model opening (grown by the delta range) and its sub-pixel rays."""
    c = mean.centres[k]
    g = DELTA_RANGE
    corners = np.array([[x, y, z] for x in (BOX[0] - g, BOX[1] + g) for y in (BOX[2] - g, BOX[3] + g)
                        for z in (-mean.lid_radius, 0.0)]) + c
    uv = (corners @ R.T + t) @ K.T
    uv = uv[:, :2] / uv[:, 2:3]
    H, W = image.shape[:2]
    x0, y0 = (max(int(math.floor(v)), 0) for v in uv.min(0))
    x1, y1 = min(int(math.ceil(uv[:, 0].max())), W), min(int(math.ceil(uv[:, 1].max())), H)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    target = image[y0:y1, x0:x1, :3].reshape(-1, 3).astype(np.float64) / 255.0
    xy = subpixel_centres(x0, y0, x1, y1, n)
    rays_cam = np.c_[xy, np.ones(len(xy))] @ np.linalg.inv(K).T
    d = rays_cam @ R  # camera -> head frame (R^T applied to each row)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = -R.T @ t - c
    return _Eye(k, target, n, o, d, _skin_hits(o, d, k, mean))


@dataclasses.dataclass
class _Layers:
    """The gaze-independent part of one eye for D centre corrections: skin (D, P) skin basis per pixel; pix (Pe,)
    pixels that show the eyeball for some correction; ndir (D, Pe, m, 3) unit eyeball directions of their m
    sub-pixels; weight (D, Pe, m) visible x lid shadow; vis (D, Pe, m) visible; view (Pe, m, 3) unit directions
    to the camera; spec (D, Pe) catch-light basis (zero until a light is set)."""

    skin: np.ndarray
    pix: np.ndarray
    ndir: np.ndarray
    weight: np.ndarray
    vis: np.ndarray
    view: np.ndarray
    spec: np.ndarray


def _layers(eye: _Eye, deltas: np.ndarray, mean: MeanEyes, light: np.ndarray | None = None) -> _Layers:
    """What a sub-pixel shows for D centre corrections (D, 3) (module docstring); ``light`` (3,): the catch-light."""
    m, D = eye.n * eye.n, len(deltas)
    xy = eye.skin[None, :, :2] - deltas[:, None, :2]  # (D, N, 2) skin hits relative to the moved centre
    inside, up, lo, s = _almond(xy, eye.k, mean)
    vis = inside & (eye.skin[None, :, 2] < deltas[:, None, 2])
    _, up15, _, _ = _almond(xy, eye.k, mean, 1.5)
    lash = (((up > -0.012) & (up < 0.0)) | ((lo > -0.005) & (lo < 0.0))) & (np.abs(s) < 1.05)
    crease = (np.abs(up15 + 0.003) < 0.006) & (np.abs(s) < 0.8)
    skin_f = np.where(lash, 0.25, np.where(crease, 0.75, 1.0))
    skin_b = ((~vis) * skin_f).reshape(D, -1, m).mean(-1)  # (D, P)
    pix = np.nonzero(vis.reshape(D, -1, m).any(2).any(0))[0]
    sel = (pix[:, None] * m + np.arange(m)[None]).reshape(-1)
    d = eye.d[sel]
    lam, _ = _sphere_front(eye.o, d[None], deltas[:, None], mean.radius)  # (D, Ns)
    p = eye.o + lam[..., None] * d[None]
    ndir = p - deltas[:, None]
    ndir /= np.linalg.norm(ndir, axis=-1, keepdims=True)
    _, up_e, _, _ = _almond(p[..., :2] - deltas[:, None, :2], eye.k, mean)
    weight = vis[:, sel] * (0.55 + 0.45 * _smoothstep(0.0, 0.03, up_e))
    lay = _Layers(skin_b, pix, ndir.reshape(D, len(pix), m, 3), weight.reshape(D, len(pix), m),
                  vis[:, sel].reshape(D, len(pix), m), -d.reshape(len(pix), m, 3), np.zeros((D, len(pix))))
    if light is not None:
        lay.spec = _spec(lay, light)
    return lay


def _spec(lay: _Layers, light: np.ndarray) -> np.ndarray:
    """(D, Pe) the generator's eyeball catch-light (``catchlight``), box-filtered; its colour is solved with the
    others."""
    return (lay.vis * catchlight(lay.ndir, lay.view[None], light)).mean(-1)


def light_dirs(n_az: int = 8, n_el: int = 4) -> np.ndarray:
    """(L, 3) candidate key-light directions (head frame): the generator's ranges (``head_model.decode``), azimuth
    -0.7..0.7 rad in ``n_az`` steps x elevation 0.05..0.65 rad in ``n_el``."""
    az, el = np.meshgrid(np.linspace(-0.7, 0.7, n_az), np.linspace(0.05, 0.65, n_el), indexing="ij")
    az, el = az.ravel(), el.ravel()
    return np.stack([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)], 1)


_TABLE_BINS = 4096


def _eyeball_table(P) -> np.ndarray:
    """(_TABLE_BINS, 3) sclera, iris and pupil basis values as functions of cos(angle to the optical axis)
    (the generator's ``eyeball_albedo`` shapes, colours left out): looked up instead of computed per candidate."""
    cos = np.linspace(-1.0, 1.0, _TABLE_BINS)
    r = np.arccos(cos) / P.iris_angle
    iris = cos > math.cos(P.iris_angle)
    pupil = cos > math.cos(P.pupil_angle)
    sclera_b = np.where(iris, 0.0, 1 - 0.12 * _smoothstep(0.9, 0.3, cos))
    iris_b = np.where(iris & ~pupil, (1.25 - 0.55 * r * r) * (1 - 0.45 * _smoothstep(0.75, 1.0, r)), 0.0)
    return np.stack([sclera_b, iris_b, pupil.astype(np.float64)], 1)


def _residuals(eye: _Eye, lay: _Layers, axes: np.ndarray, mean: MeanEyes, colours: bool = False):
    """(D, G) least-squares residual (sum over pixels and channels) of each centre correction x gaze axis.

    axes: (G, 3) shared by all corrections, or (D, G, 3) per correction. Bases: skin, catch-light, sclera, iris,
    pupil (colours solved per candidate; pixels outside ``lay.pix`` have the skin basis only). colours=True: also
    the solved colours (D, G, 5, 3), in that order, 0-1 scale."""
    D, Pe, m = lay.weight.shape
    axes = np.broadcast_to(axes, (D,) + axes.shape[-2:])
    G = axes.shape[1]
    cos = lay.ndir.reshape(D, Pe * m, 3) @ axes.transpose(0, 2, 1)  # (D, Pe*m, G)
    idx = np.clip(((cos + 1.0) * (0.5 * (_TABLE_BINS - 1)) + 0.5).astype(np.int32), 0, _TABLE_BINS - 1)
    w = lay.weight.reshape(D, Pe * m, 1).astype(np.float32)
    E = np.stack([(w * mean.table[:, j][idx]).reshape(D, Pe, m, G).mean(2) for j in range(3)], -1)  # (D, Pe, G, 3)
    B = np.concatenate([np.broadcast_to(lay.skin[:, lay.pix, None, None], (D, Pe, G, 1)),
                        np.broadcast_to(lay.spec[:, :, None, None], (D, Pe, G, 1)), E], -1)
    B = B.transpose(0, 2, 1, 3).astype(np.float64)  # (D, G, Pe, 5)
    img = eye.target
    rest = np.ones(len(img), bool)
    rest[lay.pix] = False
    A = np.einsum("dgpi,dgpj->dgij", B, B)
    A[..., 0, 0] += (lay.skin[:, rest] ** 2).sum(-1)[:, None]
    b = np.einsum("dgpj,pc->dgjc", B, img[lay.pix])
    b[..., 0, :] += (lay.skin[:, rest] @ img[rest])[:, None]
    A += np.eye(5) * (1e-4 * (1.0 + np.diagonal(A, axis1=-2, axis2=-1)))[..., None]
    x = np.linalg.solve(A, b)
    total = float((img * img).sum())
    res = total - np.sum(b * x, axis=(-2, -1))
    # Free colours could swap roles (an "iris" on white sclera, a dark "sclera"): the iris must be darker.
    lum = x @ np.array([0.299, 0.587, 0.114])  # (D, G, 5): skin, catch-light, sclera, iris, pupil
    res = np.where(lum[..., 3] > lum[..., 2] - 0.05, res + total, res)
    return (res, x) if colours else res


def _gaze_grid(pitch, yaw, span: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Square pitch/yaw grids around (pitch, yaw) (scalars, or (D,) arrays): (..., G, 2) candidates, (..., G, 3) axes."""
    a = np.arange(-span, span + 1e-9, step)
    dp, dy = (v.ravel() for v in np.meshgrid(a, a, indexing="ij"))
    py = np.stack([np.asarray(pitch)[..., None] + dp, np.asarray(yaw)[..., None] + dy], -1)
    return py, _axes(py)


def _delta_grid(centre: np.ndarray, span: float, step: float) -> np.ndarray:
    a = np.arange(-span, span + 1e-9, step)
    dx, dy = np.meshgrid(a, a, indexing="ij")
    return np.c_[dx.ravel(), dy.ravel(), np.zeros(dx.size)] + centre


def _refine_eye(eye: _Eye, mean: MeanEyes, iris: np.ndarray, delta: np.ndarray, light: np.ndarray, d_span: float,
                d_step: float, g_step: float):
    """One eye: a grid of centre corrections around ``delta``; for each, the axes through the same iris point
    ``iris`` (local, (3,)) +-1 ``g_step`` (so the correction is judged by the opening, the iris staying put).
    Returns (best delta (3,), its axis (3,), iris point (3,))."""
    dg = _delta_grid(delta, d_span, d_step)
    base = iris[None] - dg
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    py = _pitch_yaw(base)
    _, axes = _gaze_grid(py[:, 0], py[:, 1], g_step, g_step)  # (D, 9, 3)
    res = _residuals(eye, _layers(eye, dg, mean, light), axes, mean)
    i, j = np.unravel_index(int(np.argmin(res)), res.shape)
    return dg[i], axes[i, j], dg[i] + mean.radius * axes[i, j]


def _coarse_gaze(eyes: list[_Eye], layers: list[_Layers], mean: MeanEyes, gaze_box: tuple[float, float]):
    """The best axis (3,) of a 0.05 rad grid over the gaze box (both eyes, one axis)."""
    py, axes = _gaze_grid(0.0, 0.0, 1.0, 0.05)
    ok = (np.abs(py[:, 0]) <= gaze_box[0]) & (np.abs(py[:, 1]) <= gaze_box[1])
    axes = axes[ok]
    return axes[int(np.argmin(sum(_residuals(e, lay, axes, mean)[0] for e, lay in zip(eyes, layers))))]


def _pick_light(eyes: list[_Eye], layers: list[_Layers], axis: np.ndarray, mean: MeanEyes, lights: np.ndarray
                ) -> np.ndarray:
    """The candidate light (3,) whose catch-light fits both eyes best at one correction each and the axis (3,)."""
    score = np.zeros(len(lights))
    for e, lay in zip(eyes, layers):
        for i, light in enumerate(lights):
            lay.spec = _spec(lay, light)
            score[i] += _residuals(e, lay, axis[None], mean)[0, 0]
    return lights[int(np.argmin(score))]


def _search(eyes: list[_Eye], mean: MeanEyes, gaze_box: tuple[float, float]):
    """Coarse-to-fine search (module docstring): -> (pitch, yaw) shared, deltas (per eye (3,)), light (3,), residual.

    The catch-light's direction (one light for both eyes) is picked among ``light_dirs()`` at the coarse gaze,
    which is then searched again with it."""
    layers = [_layers(e, np.zeros((1, 3)), mean) for e in eyes]
    axis0 = _coarse_gaze(eyes, layers, mean, gaze_box)
    light = _pick_light(eyes, layers, axis0, mean, light_dirs())
    for lay in layers:
        lay.spec = _spec(lay, light)
    axis0 = _coarse_gaze(eyes, layers, mean, gaze_box)
    deltas, gazes = [], []
    for e in eyes:
        delta, axis, iris = np.zeros(3), axis0, mean.radius * axis0
        for _ in range(2):  # a correction on the grid's edge: once more around it (a poor PnP pose, side views)
            centre = delta
            delta, axis, iris = _refine_eye(e, mean, iris, centre, light, DELTA_RANGE, 0.01, 0.03)
            if np.abs(delta[:2] - centre[:2]).max() < DELTA_RANGE - 1e-9:
                break
        delta, axis, iris = _refine_eye(e, mean, iris, delta, light, 0.008, 0.004, 0.012)
        deltas.append(delta)
        gazes.append(axis)
    axis = np.mean(gazes, 0)  # the light again, now that the eyes are in place: it decides where the highlight is
    light = _pick_light(eyes, [_layers(e, d[None], mean) for e, d in zip(eyes, deltas)], axis / np.linalg.norm(axis),
                        mean, light_dirs(15, 7))
    g, res = _shared_gaze(eyes, mean, deltas, light, _pitch_yaw(np.mean(gazes, 0)),
                          ((0.05, 0.01), (0.008, 0.002)))
    return g, deltas, light, res


def _shared_gaze(eyes: list[_Eye], mean: MeanEyes, deltas: list[np.ndarray], light: np.ndarray, g, grids
                 ) -> tuple[np.ndarray, float]:
    """One (pitch, yaw) for both eyes at fixed centre corrections: square grids ((span, step), ...) in turn."""
    layers = [_layers(e, d[None], mean, light) for e, d in zip(eyes, deltas)]
    for span, step in grids:
        gpy, gax = _gaze_grid(g[0], g[1], span, step)
        res = sum(_residuals(e, lay, gax, mean)[0] for e, lay in zip(eyes, layers))
        g = gpy[int(np.argmin(res))]
    return g, float(res.min())


def _contour(eye_k: int, delta: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray, mean: MeanEyes
             ) -> np.ndarray:
    """(16, 2) px: the fitted almond's edge on the skin, mediapipe's order (0 and 8 the corners, 0..8 upper lid)."""
    hw = mean.params.eye_half_width
    s = np.r_[np.linspace(-1, 1, 9), np.linspace(1, -1, 9)[1:-1]]
    _, up, lo, _ = _almond(np.c_[s * hw, np.zeros(len(s))], eye_k, mean)
    y = np.where(np.arange(16) <= 8, -up, lo)  # up = 0 - y_upper, lo = y_lower - 0 at y = 0
    xy = np.c_[s * hw, y] + delta[:2]  # local to the mean centre
    z = _bilinear(mean.skin_z[eye_k], xy[:, 0], xy[:, 1])
    rho2 = np.sum(xy * xy, 1)
    z_lid = -np.sqrt(np.maximum(mean.lid_radius ** 2 - rho2, 0.0))
    z = np.where(rho2 < mean.lid_radius ** 2, np.minimum(z, z_lid), z)
    X = np.c_[xy, z] + mean.centres[eye_k]
    uv = (X @ R.T + t) @ K.T
    return uv[:, :2] / uv[:, 2:3]


def _box_filtered(image: np.ndarray, K: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """The image box-filtered by an integer factor f and its camera (u' = u / f, pixel centres stay centres),
    as the generator's own supersampling; f = 1: the image itself."""
    if f <= 1:
        return image, K
    H, W = (v // f * f for v in image.shape[:2])
    small = image[:H, :W, :3].reshape(H // f, f, W // f, f, 3).mean((1, 3))
    return small, np.diag([1.0 / f, 1.0 / f, 1.0]) @ K


def fit_eye_model(image: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray, sides=(0, 1),
                  gaze_box: tuple[float, float] = (0.6, 0.75), work_eye_px: float = 14.0) -> EyeModelFit | None:
    """Fit the mean head's eyes (gaze shared by both, a centre correction per eye) to a photo of a synthetic head.

    Args:
        image: (H, W, 3) uint8. R (3, 3), t (3,): head frame -> camera (the PnP pose). K: (3, 3) intrinsics.
        sides: the eyes to fit (0 subject's right, 1 left). gaze_box: +-(pitch, yaw) searched (rad, head frame).
        work_eye_px: eyes wider than twice this are fitted on the image box-filtered by an integer factor (speed).
    Returns:
        EyeModelFit (rows of centres / delta / contours: ``fit.sides``, the eyes whose box lies in the image), or
        None when none does.
    """
    mean = mean_eyes()
    R = np.asarray(R, np.float64).reshape(3, 3)
    t = np.asarray(t, np.float64).reshape(3)
    K = np.asarray(K, np.float64).reshape(3, 3)
    depth = float((R @ mean.centres.mean(0) + t)[2])
    width_px = 2 * mean.params.eye_half_width * math.sqrt(K[0, 0] * K[1, 1]) / depth
    image = np.asarray(image)
    f = max(1, int(width_px // work_eye_px))
    work, K_work = _box_filtered(image, K, f)
    n = int(np.clip(math.ceil(40.0 * f / max(width_px, 1e-6)), 2, 6))
    eyes = [e for e in (_eye_data(work, k, R, t, K_work, mean, n) for k in sides) if e is not None]
    if not eyes:
        return None
    g, deltas, light, res = _search(eyes, mean, gaze_box)
    f_last = max(1, int(width_px // 36.0))
    if f > f_last:  # the last gaze steps on the photo's own pixels (eyes up to 72 px wide; larger ones at 36-72 px)
        img_last, K_last = _box_filtered(image, K, f_last)
        eyes = [_eye_data(img_last, e.k, R, t, K_last, mean, 2) for e in eyes]
        g, res = _shared_gaze(eyes, mean, deltas, light, g, ((0.05, 0.01), (0.01, 0.002)))
    axis = _axes(g)
    catch = np.stack([np.clip(_residuals(e, _layers(e, d[None], mean, light), axis[None], mean, colours=True)[1][0, 0, 1],
                              0.0, None) for e, d in zip(eyes, deltas)])
    deltas = np.stack(deltas)
    ks = [e.k for e in eyes]
    centres = mean.centres[ks] + deltas
    contours = np.stack([_contour(k, d, R, t, K, mean) for k, d in zip(ks, deltas)])
    n_px = sum(len(e.target) for e in eyes)
    return EyeModelFit(axis, R @ axis, centres, centres @ R.T + t, deltas, contours, res / (3 * n_px),
                       tuple(ks), R @ light, catch)
