"""Backward warp of one eye for a new gaze, on the photo's own pixels.

For every output pixel ``p`` of the eye's periocular ellipse:

1. **Lids.** A vertical (eye-frame) displacement field ``D(p)`` moves the upper and lower lid
   margins by ``upper/lower_lid_follow`` times the iris centre's vertical shift, decaying smoothly
   to zero before the ellipse's edge (and towards the corners); the skin is sampled at ``q = p - D(p)``.
2. **Eyeball.** Where ``q`` lies inside the input's lid opening the eyeball shows: the ray through
   ``p`` meets the sphere at ``X``; the rotation that takes the new optical axis to the current
   one maps ``X`` to ``X_src`` on the input's eyeball, projected back into the input.
3. **Revealed eyeball.** When ``X_src`` was behind a lid in the input (outside the opening shrunk
   by ``inset`` px, which keeps lashes out) there is nothing to sample: it is filled with the
   median colour of the brighter half of the visible sclera (or of the visible iris, if ``X_src``
   is within the iris cap), blended in by how far the source fell outside the opening. A sample that moves
   less than a pixel is filled only by what its source lost against the output pixel's own visibility
   (both against the shrunk opening; the two rules are mixed by the distance moved, 0-1 px), so a request
   for the current gaze returns the input: the margins were repainted with sclera before (24-28 dB against
   the input, 38 dB and more now), which cost 1-2 dB of eye PSNR at 64 px. Filling every margin pixel by its
   own visibility instead keeps more of the photo but leaves the old iris at the margins after larger turns
   (64 px gaze error 3.3 -> 4.9 deg), hence the mix.
3b. **Catch-light** (eyes with ``Eyeball.catchlight``, the synthetic heads' head-model fit): the eyeball is a
   sphere, so its specular highlight does not move when the eye turns, while a warp would carry it along
   with the iris (at 64 px it is a bright pixel on a 9 px eye, and it pulled the exact readout ~1 deg off even
   with the true current gaze). The highlight predicted from the fitted light is subtracted from the input
   box before sampling and added back at the same place in the output.
4. **Blend.** Eyeball and skin are mixed by the anti-aliased opening occupancy of ``q`` (a
   half-pixel ramp). The lid field is feathered: it fades out smoothly between 0.45 and
   ``FIELD_END`` of the periocular ellipse, so the warped region blends into the untouched skin
   without a seam. Pixels where nothing moves (outside the ellipse, and inside it wherever the field
   is zero and no eyeball shows) are the input's, bit for bit.

All maps are computed on the ellipse's bounding box only and applied with ``cv2.remap`` (bilinear).
"""

from __future__ import annotations

import math

import numpy as np

from .eyeball import Eyeball, pixel_rays, eye_frame, opening_occupancy, project, ray_sphere
from .model_eye import catchlight, subpixel_centres

__all__ = ["ELLIPSE_AXES", "periocular_mask", "rotation_between", "warp_eye"]

# Periocular ellipse semi-axes in units of the eye's corner-to-corner width (along the corners,
# across them), centred at the opening's centre. The lid field vanishes at 0.85 of it.
ELLIPSE_AXES = (0.95, 0.7)
FIELD_END = 0.85


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking unit vector ``a`` to unit vector ``b`` about their common normal (Rodrigues)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    s = float(np.linalg.norm(v))
    if s < 1e-12:
        return np.eye(3)
    k = v / s
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)


def _ellipse(xy: np.ndarray, eye: Eyeball) -> np.ndarray:
    """(..., 2) pixels -> (...) normalised ellipse radius (1 on the periocular ellipse's edge)."""
    o, e_s, e_t = eye_frame(eye.contour)
    c = eye.contour.mean(0)
    d = xy - c
    s, t = d @ e_s, d @ e_t
    a, b = ELLIPSE_AXES[0] * eye.width_px, ELLIPSE_AXES[1] * eye.width_px
    return np.sqrt((s / a) ** 2 + (t / b) ** 2)


def _bbox(eye: Eyeball, shape: tuple) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1) holding the periocular ellipse, clipped to the image."""
    c = eye.contour.mean(0)
    r = max(ELLIPSE_AXES) * eye.width_px + 2
    H, W = shape[:2]
    return (max(int(math.floor(c[0] - r)), 0), max(int(math.floor(c[1] - r)), 0),
            min(int(math.ceil(c[0] + r)), W), min(int(math.ceil(c[1] + r)), H))


def periocular_mask(shape: tuple, eyes: list[Eyeball]) -> np.ndarray:
    """(H, W) bool: pixels the warp of ``eyes`` may change (inside any warped eye's ellipse)."""
    H, W = shape[:2]
    mask = np.zeros((H, W), bool)
    for eye in eyes:
        x0, y0, x1, y1 = _bbox(eye, shape)
        ys, xs = np.mgrid[y0:y1, x0:x1]
        rho = _ellipse(np.stack([xs + 0.5, ys + 0.5], -1).astype(np.float64), eye)
        mask[y0:y1, x0:x1] |= rho < 1.0
    return mask


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _fill_colours(image: np.ndarray, eye: Eyeball, K: np.ndarray, inset: float):
    """Median RGB of the visible sclera and iris of ``eye`` ((3,), (3,) float32) from the input pixels."""
    x0, y0, x1, y1 = (int(v) for v in (*np.floor(eye.contour.min(0)), *np.ceil(eye.contour.max(0))))
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
    ys, xs = np.mgrid[y0:y1, x0:x1]
    xy = np.c_[xs.ravel() + 0.5, ys.ravel() + 0.5]
    inside = opening_occupancy(xy, eye.contour, inset=inset) > 0.5
    rgb = image[ys.ravel(), xs.ravel(), :3].astype(np.float32)
    if inside.sum() < 3:
        return np.full(3, 235.0, np.float32), np.full(3, 80.0, np.float32)
    pts, _ = ray_sphere(pixel_rays(xy[inside], K), eye.centre, eye.radius)
    cos = ((pts - eye.centre) / eye.radius) @ eye.gaze
    iris = cos > math.cos(eye.iris_angle)
    rgb_in = rgb[inside]
    sclera_px = rgb_in[~iris]
    if len(sclera_px) >= 3:  # the brighter half: lash shadows and corner skin are darker
        lum = sclera_px.mean(1)
        sclera = np.median(sclera_px[lum >= np.median(lum)], 0)
    else:
        sclera = np.full(3, 235.0, np.float32)
    iris_rgb = np.median(rgb_in[iris], 0) if iris.sum() >= 3 else np.full(3, 80.0, np.float32)
    return sclera.astype(np.float32), iris_rgb.astype(np.float32)


def _lid_field(p: np.ndarray, rho: np.ndarray, eye: Eyeball, g0: np.ndarray, g1: np.ndarray, K: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Step 1, the lids: (N, 2) output pixels -> (field (N,) eye-frame vertical shift, q (N, 2) skin samples).

    The upper / lower lid margins move by ``upper/lower_lid_follow`` times the iris centre's shift across
    the corners' axis (``g0`` -> ``g1``), interpolated between the lids, faded out by the ellipse radius ``rho``.
    """
    o, e_s, e_t = eye_frame(eye.contour)
    iris_img = project(np.stack([eye.centre + eye.radius * g0, eye.centre + eye.radius * g1]), K)
    shift = float((iris_img[1] - iris_img[0]) @ e_t)
    d_up, d_low = eye.anatomy.upper_lid_follow * shift, eye.anatomy.lower_lid_follow * shift
    c = eye.contour.astype(np.float64)
    rel = p - o
    s, t = rel @ e_s, rel @ e_t
    cs, ct = (c - o) @ e_s, (c - o) @ e_t
    up_i, low_i = np.arange(0, 9), np.r_[8:16, 0]
    iu, il = np.argsort(cs[up_i]), np.argsort(cs[low_i])
    t_up = np.interp(s, cs[up_i][iu], ct[up_i][iu])
    t_low = np.interp(s, cs[low_i][il], ct[low_i][il])
    w_between = np.clip((t - t_up) / np.maximum(t_low - t_up, 1e-3), 0.0, 1.0)
    field = (d_up * (1 - w_between) + d_low * w_between) * (1.0 - _smoothstep(0.45, FIELD_END, rho))
    return field, p - field[:, None] * e_t[None, :]


def _eyeball_sources(image: np.ndarray, eye: Eyeball, p: np.ndarray, q: np.ndarray, g0: np.ndarray,
                     g1: np.ndarray, K: np.ndarray, inset: float):
    """Steps 2-3, the eyeball: where each output pixel shows it and what it samples.

    Returns occ_out (N,) opening occupancy of ``q``; show (N,) bool; src (N, 2) input sample points
    (``q`` where no eyeball shows); fill (N,) float32, 1 where the colour is synthesised; fill_rgb (N, 3).
    """
    occ_out = opening_occupancy(q, eye.contour).astype(np.float64)
    show = occ_out > 0
    src = q.copy()
    fill = np.zeros(len(p), np.float32)
    fill_rgb = np.zeros((len(p), 3), np.float32)
    if show.any():
        X, _ = ray_sphere(pixel_rays(p[show], K), eye.centre, eye.radius)
        M = rotation_between(g1, g0)  # new axis -> current axis
        Xs = eye.centre + (X - eye.centre) @ M.T
        src_xy = project(Xs, K)
        facing = np.sum((Xs - eye.centre) * Xs, -1) < 0  # the source point faces the camera
        valid = np.where(facing, opening_occupancy(src_xy, eye.contour, inset=inset), 0.0)
        sclera, iris_rgb = _fill_colours(image, eye, K, inset)
        in_iris = ((Xs - eye.centre) / eye.radius) @ g0 > math.cos(eye.iris_angle)
        src[show] = np.where(valid[:, None] > 0, src_xy, p[show])
        # a sample that moves less than a pixel only loses what its source lost against the pixel's own
        # visibility (so no rotation changes nothing); one that moves farther is filled by its own visibility
        own = opening_occupancy(p[show], eye.contour, inset=inset)
        moved = np.clip(np.linalg.norm(src_xy - p[show], axis=1), 0.0, 1.0)
        fill[show] = (1.0 - moved) * np.clip(own - valid, 0.0, 1.0) + moved * (1.0 - valid)
        fill_rgb[show] = np.where(in_iris[:, None], iris_rgb[None], sclera[None])
    return occ_out, show, src, fill, fill_rgb


def _catchlight(eye: Eyeball, box: tuple, K: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32: the eyeball's specular highlight over the box (x0, y0, x1, y1), as the synthetic heads
    draw it: rgb x ``model_eye.catchlight`` (the sphere's normal against the light and the camera), averaged over
    sub-pixel rays (it is about a pixel wide on small eyes) that see the eyeball through the lid opening."""
    light, rgb = eye.catchlight
    x0, y0, x1, y1 = box
    n = int(np.clip(math.ceil(24.0 / max(eye.width_px, 1e-6)), 2, 4))
    xy = subpixel_centres(x0, y0, x1, y1, n)
    X, hit = ray_sphere(pixel_rays(xy, K), eye.centre, eye.radius)
    normal = (X - eye.centre) / eye.radius
    shine = catchlight(normal, -X / np.linalg.norm(X, axis=1, keepdims=True), light / np.linalg.norm(light))
    s = shine * hit * (opening_occupancy(xy, eye.contour) > 0.5)
    s = s.reshape(y1 - y0, x1 - x0, n * n).mean(-1)
    return (s[..., None] * np.asarray(rgb, np.float32)).astype(np.float32)


def warp_eye(image: np.ndarray, out: np.ndarray, eye: Eyeball, gaze_new: np.ndarray, K: np.ndarray,
             inset: float | None = None) -> None:
    """Redirect one eye of ``image`` to ``gaze_new`` and write the result into ``out`` (in place).

    Args:
        image: (H, W, 3) uint8 input photo (never modified). out: (H, W, 3) uint8, a copy of it,
            possibly with the other eye already done (the ellipses of two eyes do not overlap in
            practice; where they would, the later eye wins).
        eye: the eyeball (``status`` must be None). gaze_new: (3,) unit optical axis, camera frame.
        K: (3, 3) intrinsics. inset: opening shrink for valid samples (px; default 4 % of the width, >= 0.5).
    """
    import cv2

    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if eye.status is not None:
        raise ValueError(f"warp_eye: {eye.status}")
    g0 = eye.gaze / np.linalg.norm(eye.gaze)
    g1 = np.asarray(gaze_new, np.float64) / np.linalg.norm(gaze_new)
    if inset is None:
        inset = max(0.5, 0.04 * eye.width_px)
    x0, y0, x1, y1 = _bbox(eye, image.shape)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    p = np.stack([xs + 0.5, ys + 0.5], -1).reshape(-1, 2).astype(np.float64)  # continuous coordinates
    rho = _ellipse(p, eye)
    field, q = _lid_field(p, rho, eye, g0, g1, K)
    occ_out, show, src, fill, fill_rgb = _eyeball_sources(image, eye, p, q, g0, g1, K, inset)

    h, w = y1 - y0, x1 - x0
    # cv2.remap samples at pixel-index coordinates (centres at integers)
    skin_map = (q - 0.5 - [x0, y0]).reshape(h, w, 2).astype(np.float32)
    eye_map = (src - 0.5 - [x0, y0]).reshape(h, w, 2).astype(np.float32)
    crop = image[y0:y1, x0:x1, :3]
    spec = 0.0
    if eye.catchlight is not None:  # the highlight stays put: moved without it, put back where it was
        spec = _catchlight(eye, (x0, y0, x1, y1), K)
        crop = np.clip(crop.astype(np.float32) - spec, 0, 255)
    # a reflected border would bring eye pixels from outside the box; the box is larger than the field's support
    skin = cv2.remap(crop, skin_map[..., 0], skin_map[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ball = cv2.remap(crop, eye_map[..., 0], eye_map[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fill = fill.reshape(h, w, 1)
    ball = ball.astype(np.float32) * (1 - fill) + fill_rgb.reshape(h, w, 3) * fill
    a = occ_out.reshape(h, w, 1).astype(np.float32)
    result = np.clip(skin.astype(np.float32) * (1 - a) + ball * a + spec + 0.5, 0, 255).astype(np.uint8)
    region = (rho < 1.0).reshape(h, w)
    moved = region & ((np.abs(field) > 1e-6).reshape(h, w) | show.reshape(h, w))
    # pixels where nothing moves keep the input exactly (bilinear at integer positions is exact; this makes it certain)
    block = out[y0:y1, x0:x1, :3]
    block[moved] = result[moved]
