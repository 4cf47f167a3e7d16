"""A small parametric head model of our own (it plays the 3DMM's role for synthetic data).

Design decisions
----------------
* **Frame.** Everything lives in the head frame (``HeadNeRF.geometry.cameras``): head centre at
  the origin, +x towards the subject's left (image right of a frontal camera), +y down, +z from
  the face to the back of the head. The face looks towards -z. Head radius is about 1; the whole
  model (hair and ears included) stays inside radius 1.5, well within the NeRF's 1.6 sphere.
* **Geometry = star-shaped skin + two eyeball spheres.** The skin is a lat-long sphere whose
  pole sits at the front (-z) so the face gets the densest rings; every vertex is moved along
  its direction by an analytic radius (ellipsoid, jaw taper, nose, brows, cheeks, lips, chin,
  ears, hair volume). The eyeballs are separate UV spheres. Skin vertices that would poke into
  an eyeball are pushed out to ``eye_radius + LID_MARGIN`` from its centre, which also forms the
  eyelid bulge; so the eyeball is hidden everywhere except through the eye opening.
* **Appearance is evaluated per fragment, not per vertex.** The renderer interpolates the
  head-frame position of each visible surface point and calls :func:`skin_albedo` /
  :func:`eyeball_albedo`. Lips, brows, hairline, the almond eye opening, the lash line, the
  round iris and the pupil are therefore crisp at any resolution and the mesh can stay coarse
  (about 7.7k faces in total).
* **Eye openings are a cut-out, not a hole in the mesh.** A skin fragment whose (x, y) lies in
  the almond of an eye (and which is in front of the eye centre) is discarded by the renderer
  (:func:`in_eye_opening`); the next fragment along the ray (the eyeball) is shown instead.
  The eyelids never depend on gaze.
* **Gaze only changes colours.** An eyeball is a sphere, so rotating it about its centre leaves
  its geometry unchanged: gaze enters only through the optical axis used to colour
  iris/pupil/sclera. Both eyes are parallel and the gaze label is exactly the optical axis
  ``pitch_yaw_to_vector(gaze_head) = gaze_rotation(gaze_head) @ (0, 0, -1)``.
* **Latent code** (float32, about N(0, 1) per coefficient, clipped to ±2.5) with the blocks of
  ``HeadNeRF.data.layout.CODE_BLOCKS``; :func:`decode` maps it to physical parameters. The
  meaning and units of every coefficient are in ``docs/head_model.md``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from HeadNeRF.geometry.gaze import pitch_yaw_to_vector

__all__ = [
    "IDENTITY_NAMES", "EXPRESSION_NAMES", "ALBEDO_NAMES", "ILLUMINATION_NAMES",
    "CODE_SLICES", "CODE_DIM", "PART_SKIN", "PART_HAIR", "PART_RIGHT_EYE_REGION",
    "PART_LEFT_EYE_REGION", "PART_RIGHT_EYEBALL", "PART_LEFT_EYEBALL",
    "EYEBALL_SCLERA", "EYEBALL_IRIS", "EYEBALL_PUPIL", "FACE_CENTER", "HeadParams", "HeadMesh",
    "sample_code", "decode", "build_mesh", "skin_albedo", "eyeball_albedo", "eyeball_part",
    "in_eye_opening", "eye_region_weight", "landmarks_3d", "iris_centers_3d", "eyeball_face_part", "eyeball_centers",
    "eye_almond", "smoothstep", "skin_surface_at",
]

IDENTITY_NAMES = (
    "head_width", "head_height", "head_depth", "jaw_width", "chin_length", "nose_length",
    "nose_projection", "nose_width", "eye_spacing", "eye_height", "brow_ridge", "cheekbones",
    "lip_fullness", "mouth_width", "hairline_height", "hair_volume",
)
EXPRESSION_NAMES = ("smile", "mouth_open", "brow_raise", "eye_openness", "brow_frown", "cheek_puff")
ALBEDO_NAMES = (
    "skin_tone", "skin_warmth", "skin_redness", "hair_lightness", "hair_redness", "hair_grey",
    "iris_hue", "iris_lightness", "lip_redness", "brow_darkness", "blush", "sclera_tint",
)
ILLUMINATION_NAMES = (
    "light_azimuth", "light_elevation", "ambient", "diffuse", "light_warmth", "fill",
    "specular", "exposure", "fill_side",
)

CODE_SLICES: dict[str, tuple[int, int]] = {}
_start = 0
for _name, _names in (("identity", IDENTITY_NAMES), ("expression", EXPRESSION_NAMES),
                      ("albedo", ALBEDO_NAMES), ("illumination", ILLUMINATION_NAMES)):
    CODE_SLICES[_name] = (_start, _start + len(_names))
    _start += len(_names)
CODE_DIM = _start  # 43

# Face part labels (per face of HeadMesh.faces).
PART_SKIN, PART_HAIR, PART_RIGHT_EYE_REGION, PART_LEFT_EYE_REGION, PART_RIGHT_EYEBALL, PART_LEFT_EYEBALL = range(6)
# Eyeball parts (per fragment, see eyeball_part).
EYEBALL_SCLERA, EYEBALL_IRIS, EYEBALL_PUPIL = range(3)

# Point the normalised cameras look at: close to the head centre (slightly towards the face and
# the chin) so the whole head is centred in every view, as in processed ETH-XGaze patches.
FACE_CENTER = (0.0, 0.08, -0.25)
LID_MARGIN = 0.022  # skin stays this far outside an eyeball (lid thickness)

# Mesh resolution (lat-long around the -z axis): the face gets the densest rings.
_RINGS, _SEGMENTS, _EYE_RINGS, _EYE_SEGMENTS = 44, 80, 12, 20


@dataclasses.dataclass(frozen=True)
class HeadParams:
    """Physical parameters decoded from a latent code (head units, radians, linear RGB in [0, 1])."""

    ax: float; ay: float; az: float; jaw_taper: float; chin_y: float  # noqa: E702
    nose_top: float; nose_tip_y: float; nose_proj: float; nose_width: float  # noqa: E702
    eye_x: float; eye_y: float; eye_radius: float; iris_angle: float; pupil_angle: float  # noqa: E702
    eye_half_width: float; lid_upper: float; lid_lower: float; canthal_tilt: float  # noqa: E702
    brow_ridge: float; brow_y: float; brow_raise: float; brow_frown: float; cheekbones: float  # noqa: E702
    cheek_puff: float; mouth_y: float; mouth_half_width: float; lip_fullness: float  # noqa: E702
    smile: float; mouth_open: float; hairline_y: float; hair_thickness: float  # noqa: E702
    skin_rgb: tuple; hair_rgb: tuple; iris_rgb: tuple; lip_rgb: tuple; brow_rgb: tuple  # noqa: E702
    blush: float; sclera_rgb: tuple  # noqa: E702
    light_dir: tuple; fill_dir: tuple; ambient: float; diffuse: float; fill: float  # noqa: E702
    light_rgb: tuple; specular: float; exposure: float  # noqa: E702
    eye_centers: tuple = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # [subject's right (x<0), left (x>0)]


@dataclasses.dataclass
class HeadMesh:
    """Triangle mesh of one subject (gaze independent).

    verts (V, 3) float32 head frame; faces (F, 3) int64; normals (V, 3) float32 unit outward;
    face_part (F,) int64 PART_* labels; vert_part (V,) int64; params: the decoded HeadParams;
    cull_normals (F, 3) float32 outward face normals for back-face culling, zero for faces that must
    never be culled (periocular skin, whose inside can be seen through an eye opening).
    """

    verts: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    face_part: np.ndarray
    vert_part: np.ndarray
    params: HeadParams
    cull_normals: np.ndarray | None = None


def sample_code(rng: np.random.Generator) -> np.ndarray:
    """A plausible random subject: (CODE_DIM,) float32, each coefficient ~N(0, 0.8²) clipped to ±2.5.

    Expression is milder (most subjects near neutral) and the iris hue is drawn from a
    population-like mix (brown most common), so previews look like a varied set of people.
    """
    code = np.clip(rng.normal(0.0, 0.8, CODE_DIM), -2.5, 2.5)
    e0, e1 = CODE_SLICES["expression"]
    code[e0:e1] *= 0.6
    a0 = CODE_SLICES["albedo"][0]
    code[a0 + ALBEDO_NAMES.index("iris_hue")] = rng.choice([-1.6, -1.0, 0.0, 1.0, 1.8], p=[0.45, 0.15, 0.1, 0.1, 0.2]) \
        + rng.normal(0, 0.15)
    code[a0 + ALBEDO_NAMES.index("skin_tone")] = rng.uniform(-2.0, 2.0)
    code[a0 + ALBEDO_NAMES.index("hair_grey")] = min(code[a0 + ALBEDO_NAMES.index("hair_grey")], 0.5) - 0.8
    return code.astype(np.float32)


def _lerp(a, b, t):
    return tuple(float(x) for x in (np.asarray(a) * (1 - t) + np.asarray(b) * t))


def _palette(stops, t):
    """Piecewise-linear colour palette; stops a list of RGB, t in [0, 1]."""
    t = float(np.clip(t, 0.0, 1.0)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    return _lerp(stops[i], stops[i + 1], t - i)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def decode(code: np.ndarray) -> HeadParams:
    """Map a latent code (CODE_DIM,) to :class:`HeadParams` (see docs/head_model.md for units)."""
    code = np.asarray(code, dtype=np.float64)
    blocks = {name: code[s:e] for name, (s, e) in CODE_SLICES.items()}
    i = dict(zip(IDENTITY_NAMES, blocks["identity"]))
    e = dict(zip(EXPRESSION_NAMES, blocks["expression"]))
    a = dict(zip(ALBEDO_NAMES, blocks["albedo"]))
    l = dict(zip(ILLUMINATION_NAMES, blocks["illumination"]))  # noqa: E741

    skin = _palette([(0.96, 0.80, 0.69), (0.90, 0.70, 0.56), (0.76, 0.55, 0.40), (0.55, 0.36, 0.24),
                     (0.34, 0.21, 0.14)], (a["skin_tone"] + 2.0) / 4.0)
    skin = tuple(np.clip(np.asarray(skin) * (1 + 0.05 * np.array([a["skin_warmth"], 0.0, -a["skin_warmth"]]))
                         + 0.02 * np.array([a["skin_redness"], -0.5 * a["skin_redness"], 0.0]), 0, 1))
    hair = _palette([(0.05, 0.04, 0.035), (0.20, 0.12, 0.07), (0.42, 0.27, 0.14), (0.70, 0.55, 0.32),
                     (0.88, 0.78, 0.52)], _sig(1.3 * a["hair_lightness"] - 1.2))
    hair = np.asarray(hair) * (1 + 0.25 * np.array([max(a["hair_redness"], 0), -0.3 * max(a["hair_redness"], 0), -0.5 * max(a["hair_redness"], 0)]))
    grey = _sig(2.0 * a["hair_grey"] - 1.0) * 0.8
    hair = tuple(np.clip(hair * (1 - grey) + grey * np.array([0.62, 0.62, 0.62]), 0, 1))
    iris = _palette([(0.22, 0.12, 0.05), (0.38, 0.24, 0.10), (0.40, 0.42, 0.20), (0.30, 0.50, 0.38),
                     (0.32, 0.50, 0.72), (0.48, 0.62, 0.80)], (a["iris_hue"] + 2.0) / 4.0)
    iris = tuple(np.clip(np.asarray(iris) * (1 + 0.2 * np.tanh(a["iris_lightness"])), 0, 1))
    lip = tuple(np.clip(np.asarray(skin) * np.array([0.95, 0.62, 0.62]) + 0.06 * np.tanh(a["lip_redness"]) * np.array([1, -0.3, -0.2]), 0, 1))
    brow = tuple(np.asarray(hair) * (0.55 - 0.15 * np.tanh(a["brow_darkness"])) + np.asarray(skin) * 0.12)
    sclera = tuple(np.clip(np.array([0.93, 0.90, 0.87]) + 0.03 * np.tanh(a["sclera_tint"]) * np.array([0.3, -0.5, -0.8]), 0, 1))

    azim = 0.7 * np.tanh(l["light_azimuth"] / 1.5)  # radians, positive: light from the subject's left
    elev = 0.35 + 0.3 * np.tanh(l["light_elevation"] / 1.5)  # positive: from above
    light_dir = (np.sin(azim) * np.cos(elev), -np.sin(elev), -np.cos(azim) * np.cos(elev))
    fill_dir = (-np.sign(azim + 1e-6) * 0.8 * _sig(l["fill_side"]), -0.1, -0.6)
    fill_dir = tuple(np.asarray(fill_dir) / np.linalg.norm(fill_dir))
    warm = 0.06 * np.tanh(l["light_warmth"])
    light_rgb = (1.0 + warm, 1.0, 1.0 - warm)

    eye_x = 0.285 + 0.015 * np.tanh(i["eye_spacing"])
    eye_y = -0.12 + 0.02 * np.tanh(i["eye_height"])
    eye_radius = 0.165
    return HeadParams(
        ax=0.75 + 0.04 * np.tanh(i["head_width"]), ay=1.05 + 0.04 * np.tanh(i["head_height"]),
        az=0.98 + 0.04 * np.tanh(i["head_depth"]), jaw_taper=0.28 - 0.07 * np.tanh(i["jaw_width"]),
        chin_y=0.84 + 0.04 * np.tanh(i["chin_length"]),
        nose_top=-0.14, nose_tip_y=0.22 + 0.03 * np.tanh(i["nose_length"]),
        nose_proj=0.16 + 0.035 * np.tanh(i["nose_projection"]), nose_width=0.095 + 0.015 * np.tanh(i["nose_width"]),
        eye_x=eye_x, eye_y=eye_y, eye_radius=eye_radius,
        iris_angle=float(np.arcsin(0.097 / eye_radius)), pupil_angle=float(np.arcsin(0.040 / eye_radius)),
        eye_half_width=0.15, lid_upper=0.080 * (1 + 0.15 * np.tanh(e["eye_openness"])),
        lid_lower=0.052 * (1 + 0.1 * np.tanh(e["eye_openness"])), canthal_tilt=0.012,
        brow_ridge=0.045 + 0.015 * np.tanh(i["brow_ridge"]), brow_y=eye_y - 0.16,
        brow_raise=0.03 * np.tanh(e["brow_raise"]), brow_frown=0.02 * np.tanh(e["brow_frown"]),
        cheekbones=0.04 + 0.015 * np.tanh(i["cheekbones"]), cheek_puff=0.02 * np.tanh(e["cheek_puff"]),
        mouth_y=0.47 + 0.02 * np.tanh(i["nose_length"]), mouth_half_width=0.20 + 0.025 * np.tanh(i["mouth_width"]),
        lip_fullness=1.0 + 0.25 * np.tanh(i["lip_fullness"]), smile=0.035 * np.tanh(e["smile"]),
        mouth_open=0.035 * _sig(2.5 * e["mouth_open"] - 2.0),
        hairline_y=-0.56 + 0.06 * np.tanh(i["hairline_height"]), hair_thickness=0.07 + 0.035 * np.tanh(i["hair_volume"]),
        skin_rgb=skin, hair_rgb=hair, iris_rgb=iris, lip_rgb=lip, brow_rgb=brow,
        blush=0.05 + 0.04 * np.tanh(a["blush"]), sclera_rgb=sclera,
        light_dir=tuple(light_dir), fill_dir=fill_dir, ambient=0.45 + 0.1 * np.tanh(l["ambient"]),
        diffuse=0.62 + 0.12 * np.tanh(l["diffuse"]), fill=0.15 + 0.08 * np.tanh(l["fill"]), light_rgb=light_rgb,
        specular=0.25 + 0.1 * np.tanh(l["specular"]), exposure=1.0 + 0.08 * np.tanh(l["exposure"]),
    )


# ----------------------------------------------------------------------------------------------
# Geometry (numpy, float64)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(a, b, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _hair_weight(p: np.ndarray, P: HeadParams, ramp: float = 0.06) -> np.ndarray:
    """(N, 3) -> (N,) in [0, 1]: 1 on the hair cap. The hairline runs from the forehead
    (y = hairline_y) over the temples down to the nape (y ≈ 0.55). ``ramp``: width of the
    transition (the geometry uses a wide one so the coarse mesh shows no step at the hairline)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    # forehead -> temples -> sideburns in front of the ear -> above the ear -> down to the nape
    line = P.hairline_y + 0.36 * _smoothstep(-0.75, -0.45, z) \
        + 0.22 * _smoothstep(-0.42, -0.28, z) * (1 - _smoothstep(-0.2, -0.1, z)) + 0.75 * _smoothstep(0.14, 0.42, z)
    # A side parting / fringe wave so the hairline is not a perfect curve.
    line = line + 0.03 * np.sin(7.0 * x + 2.0 * z)
    return _smoothstep(0.0, ramp, line - y)


def _skin_points(d: np.ndarray, P: HeadParams) -> np.ndarray:
    """Unit directions (N, 3) -> skin surface points (N, 3) before the eyeball push-out."""
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    lower = _smoothstep(0.12, 0.95, dy)
    ax = P.ax * (1.0 - P.jaw_taper * lower * _smoothstep(0.3, -0.6, dz))
    ay = np.where(dy > 0, P.ay * (P.chin_y / 0.84) * (1 - 0.05 * _smoothstep(-0.2, 0.6, dz)), P.ay)
    r = 1.0 / np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2 + (dz / P.az) ** 2)
    p = d * r[:, None]
    x, y = p[:, 0], p[:, 1]
    front = _smoothstep(-0.15, -0.6, dz)  # face features only on the front
    # Flatten the face a little (real faces are flatter than ellipsoids): pull the front forward
    # where the ellipsoid curves back at the sides of the eyes/cheeks.
    off = 0.06 * front * _smoothstep(0.0, 0.5, np.abs(x)) * (1 - _smoothstep(0.5, 0.8, np.abs(x))) * (1 - lower)
    # Nose: a ridge from between the eyes to the tip, widening downwards, plus tip and alae.
    t = np.clip((y - P.nose_top) / (P.nose_tip_y - P.nose_top), 0.0, 1.0)
    ridge = P.nose_proj * (0.3 + 0.7 * t ** 1.5) * (1 - _smoothstep(P.nose_tip_y - 0.03, P.nose_tip_y + 0.08, y)) \
        * _smoothstep(P.nose_top - 0.12, P.nose_top, y)
    width = 0.035 + (P.nose_width * 0.65) * t
    off += ridge * np.exp(-0.5 * (x / width) ** 2)
    off += 0.05 * _gauss(x, y, 0.0, P.nose_tip_y, 0.055, 0.045)
    for s in (-1, 1):
        off += 0.05 * _gauss(x, y, s * P.nose_width * 0.85, P.nose_tip_y + 0.035, 0.04, 0.03)
    # Brow ridge, eye sockets, cheekbones, cheeks.
    for s in (-1, 1):
        by = P.brow_y - P.brow_raise + P.brow_frown * _smoothstep(0.35, 0.1, np.abs(x))
        off += P.brow_ridge * np.exp(-0.5 * ((y - by) / 0.06) ** 2) * np.exp(-0.5 * ((s * x - 0.26) / 0.17) ** 2)
        off -= 0.035 * _gauss(x, y, s * P.eye_x, P.eye_y, 0.11, 0.075)
        off += P.cheekbones * _gauss(x, y, s * 0.42, 0.10, 0.12, 0.10)
        off += (0.03 + P.cheek_puff) * _gauss(x, y, s * 0.36, 0.35, 0.14, 0.12)
    # Lips (corners move up with a smile), chin.
    lip = P.lip_fullness
    off += 0.045 * lip * _gauss(x, y, 0.0, P.mouth_y - 0.035, P.mouth_half_width * 0.75, 0.03)
    off += 0.05 * lip * _gauss(x, y, 0.0, P.mouth_y + 0.045, P.mouth_half_width * 0.65, 0.035)
    off += 0.06 * _gauss(x, y, 0.0, P.mouth_y - 0.04, 0.26, 0.15)  # muzzle (fills the profile under the nose)
    off += 0.07 * _gauss(x, y, 0.0, P.chin_y - 0.13, 0.15, 0.09)
    p = p + d * (off * front)[:, None]
    # Mouth open: drop the lower face a little.
    p[:, 1] += P.mouth_open * front * _smoothstep(P.mouth_y, P.mouth_y + 0.1, p[:, 1])
    # Ears: bumps at the sides, behind the cheek.
    for s in (-1, 1):
        ear = np.exp(-0.5 * (((p[:, 1] + 0.0) / 0.16) ** 4 + ((p[:, 2] - 0.04) / 0.055) ** 2)) * (s * dx > 0.3)
        p += d * (0.15 * ear)[:, None]
    # Hair volume.
    p += d * (P.hair_thickness * _hair_weight(p, P, ramp=0.25))[:, None]
    return p


def eyeball_centers(P: HeadParams) -> np.ndarray:
    """(2, 3) eyeball centres [subject's right (x<0), left], just behind the skin surface."""
    sides = np.array([[-P.eye_x, P.eye_y], [P.eye_x, P.eye_y]])
    q = _surface_point_xy(sides, P, push_out=False)  # both eyes in one fixed-point iteration (row-wise: the same values)
    return np.concatenate([sides, q[:, 2:3] + P.eye_radius + LID_MARGIN * 0.5], axis=1)


def skin_surface_at(xy: np.ndarray, P: HeadParams, lids: bool = True) -> np.ndarray:
    """The front skin surface point (N, 3) at head-frame (x, y) (N, 2): what covers the eyeball there.

    lids=True: with the skin pushed out of the eyeballs (the lids; the point then moves radially off the
    eyeball, so its (x, y) is no longer exactly the one asked for); lids=False: the smooth skin before the
    push-out, whose (x, y) is the one asked for (a height field z(x, y)). The photo eye model
    (``eyewarp.model_eye``) intersects camera rays with the smooth skin and the lid sphere (radius
    ``eye_radius + LID_MARGIN``) to know where the eyeball shows through the eye opening."""
    return _surface_point_xy(np.asarray(xy, np.float64).reshape(-1, 2), P, push_out=lids)


def _push_out(p: np.ndarray, eye_centers: np.ndarray, P: HeadParams) -> np.ndarray:
    """Move skin points inside an eyeball (+ margin) radially out of it (forms the lids)."""
    for c in eye_centers:
        v = p - c
        dist = np.linalg.norm(v, axis=-1, keepdims=True)
        need = P.eye_radius + LID_MARGIN
        inside = (dist < need) & (v[:, 2:3] < 0.05)
        p = np.where(inside, c + v / np.maximum(dist, 1e-9) * need, p)
    return p


def _surface_point_xy(xy: np.ndarray, P: HeadParams, push_out: bool = True, eye_centers=None) -> np.ndarray:
    """Front skin point (N, 3) with the given head-frame (x, y) (N, 2), by fixed-point iteration."""
    d = np.concatenate([xy, -np.ones((len(xy), 1))], axis=1)
    for _ in range(30):
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        p = _skin_points(d, P)
        # Move the direction so the surface point's xy approaches the target.
        d = d + np.concatenate([(xy - p[:, :2]) * 0.9, np.zeros((len(xy), 1))], axis=1)
    p = _skin_points(d / np.linalg.norm(d, axis=1, keepdims=True), P)
    if push_out:
        p = _push_out(p, eyeball_centers(P) if eye_centers is None else eye_centers, P)
    return p


def _latlong_sphere(rings: int, segments: int, pole_axis: int = 2, sign: float = -1.0, warp: float = 1.0):
    """Unit UV sphere with its first pole at ``sign * axis``. Returns dirs (V, 3), faces (F, 3)."""
    theta = np.pi * (np.arange(1, rings) / rings) ** warp
    phi = 2 * np.pi * np.arange(segments) / segments
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    a, b = st * np.cos(phi)[None], st * np.sin(phi)[None]
    c = sign * np.broadcast_to(ct, a.shape)
    ring = np.stack([a, b, c], -1).reshape(-1, 3)
    if pole_axis == 2:
        ring = ring[:, [0, 1, 2]]
    pole0 = np.array([[0.0, 0.0, sign]])
    pole1 = np.array([[0.0, 0.0, -sign]])
    dirs = np.concatenate([pole0, ring, pole1])
    faces = []
    n_ring = rings - 1
    idx = lambda r, s: 1 + r * segments + (s % segments)  # noqa: E731
    for s in range(segments):
        faces.append((0, idx(0, s), idx(0, s + 1)))
        faces.append((len(dirs) - 1, idx(n_ring - 1, s + 1), idx(n_ring - 1, s)))
    for r in range(n_ring - 1):
        for s in range(segments):
            faces.append((idx(r, s), idx(r + 1, s), idx(r + 1, s + 1)))
            faces.append((idx(r, s), idx(r + 1, s + 1), idx(r, s + 1)))
    return dirs, np.asarray(faces, dtype=np.int64)


def _vertex_normals(verts: np.ndarray, faces: np.ndarray, outward_from: np.ndarray) -> np.ndarray:
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
    flip = np.sum(vn * (verts - outward_from), axis=1) < 0
    if flip.mean() > 0.5:  # face winding points inwards: flip all
        vn = -vn
    return vn


def build_mesh(code: np.ndarray) -> HeadMesh:
    """Mesh of one subject from its latent code (gaze independent; see module docstring).

    Returns a :class:`HeadMesh` with skin (with hair cap) followed by the right and left eyeball.
    """
    P = decode(code)
    dirs, faces = _latlong_sphere(_RINGS, _SEGMENTS, warp=1.25)
    skin = _skin_points(dirs, P)
    eye_c = eyeball_centers(P)
    P = dataclasses.replace(P, eye_centers=tuple(tuple(float(v) for v in c) for c in eye_c))
    skin = _push_out(skin, eye_c, P)
    skin_n = _vertex_normals(skin, faces, np.zeros(3))
    hair = _hair_weight(skin, P) > 0.5
    vert_part = np.where(hair, PART_HAIR, PART_SKIN)
    for k, c in enumerate(eye_c):  # periocular skin region
        near = (np.abs(skin[:, 0] - c[0]) < P.eye_half_width * 1.5) & (np.abs(skin[:, 1] - c[1]) < 0.16) & (skin[:, 2] < 0)
        vert_part = np.where(near, PART_RIGHT_EYE_REGION + k, vert_part)
    verts, all_faces, normals, face_part, vparts = [skin], [faces], [skin_n], [vert_part[faces].max(1)], [vert_part]
    # max over a face's vertices: eye-region label wins over hair/skin, hair over skin.
    e_dirs, e_faces = _latlong_sphere(_EYE_RINGS, _EYE_SEGMENTS)
    offset = len(skin)
    for k, c in enumerate(eye_c):
        verts.append(c + P.eye_radius * e_dirs)
        all_faces.append(e_faces + offset)
        normals.append(e_dirs.copy())
        face_part.append(np.full(len(e_faces), PART_RIGHT_EYEBALL + k))
        vparts.append(np.full(len(e_dirs), PART_RIGHT_EYEBALL + k))
        offset += len(e_dirs)
    verts, all_faces = np.concatenate(verts), np.concatenate(all_faces)
    face_part = np.concatenate(face_part).astype(np.int64)
    fv = verts[all_faces]
    fn = np.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    centre = np.zeros_like(fn)  # skin is star-shaped around the origin, eyeballs around their centres
    for k, c in enumerate(eye_c):
        centre[face_part == PART_RIGHT_EYEBALL + k] = c
    fn *= np.sign(np.sum(fn * (fv.mean(1) - centre), axis=1, keepdims=True) + 1e-12)
    fn[(face_part == PART_RIGHT_EYE_REGION) | (face_part == PART_LEFT_EYE_REGION)] = 0.0
    return HeadMesh(
        verts=verts.astype(np.float32), faces=all_faces,
        normals=np.concatenate(normals).astype(np.float32), face_part=face_part,
        vert_part=np.concatenate(vparts).astype(np.int64), params=P, cull_normals=fn.astype(np.float32),
    )


# ----------------------------------------------------------------------------------------------
# Appearance (torch, per fragment). pos: (P, 3) head-frame points.


def _t(v, like):
    return torch.as_tensor(np.asarray(v, dtype=np.float32), dtype=like.dtype, device=like.device)


def smoothstep(a, b, x):
    t = ((x - a) / (b - a)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def eye_almond(x, y, P: HeadParams, scale: float = 1.0):
    """Signed eye-opening coordinates for both eyes.

    Returns (inside (2, P) bool, upper_dist (2, P), lower_dist (2, P), s (2, P)): distances (head
    units) of the point below the upper lid edge / above the lower lid edge, and the normalised
    horizontal coordinate s in [-1, 1] across the opening.
    """
    ins, ups, los, ss = [], [], [], []
    for k, c in enumerate(P.eye_centers):
        side = -1.0 if k == 0 else 1.0
        s_all = (x - c[0]) / (P.eye_half_width * scale)
        up_all = torch.full_like(x, -1.0)
        lo_all = torch.full_like(x, -1.0)
        # Only points near the eye need the (pow-heavy) lid curves: a cheap box test first.
        box = (s_all.abs() < 1.05) & ((y - c[1]).abs() < 0.2 * scale)
        s, yb = s_all[box], y[box]
        outward = s * side  # +1 at the outer (temporal) corner
        shape = (1 - s * s).clamp(min=0.0)
        centre_y = c[1] - P.canthal_tilt * outward + 0.01
        y_up = centre_y - P.lid_upper * scale * shape ** 0.55 * (1 - 0.12 * outward)
        y_lo = centre_y + P.lid_lower * scale * shape ** 0.75
        up_all[box] = yb - y_up
        lo_all[box] = y_lo - yb
        ins.append((s_all.abs() < 1) & (up_all > 0) & (lo_all > 0))
        ups.append(up_all)
        los.append(lo_all)
        ss.append(s_all)
    return torch.stack(ins), torch.stack(ups), torch.stack(los), torch.stack(ss)


def in_eye_opening(pos: torch.Tensor, P: HeadParams) -> torch.Tensor:
    """(P, 3) skin points -> (P,) bool: the point lies in an eye opening (the renderer discards it)."""
    inside, _, _, _ = eye_almond(pos[:, 0], pos[:, 1], P)
    front = torch.stack([pos[:, 2] < c[2] for c in P.eye_centers])
    return (inside & front).any(0)


def eye_region_weight(pos: torch.Tensor, P: HeadParams) -> torch.Tensor:
    """(P, 3) -> (2, P) bool: periocular region (opening enlarged 1.5× plus the lids) of each eye."""
    inside, _, _, _ = eye_almond(pos[:, 0], pos[:, 1], P, scale=1.5)
    front = torch.stack([pos[:, 2] < c[2] + 0.05 for c in P.eye_centers])
    return inside & front


def skin_albedo(pos: torch.Tensor, P: HeadParams) -> torch.Tensor:
    """(P, 3) head-frame skin points -> (P, 3) albedo in [0, 1] (skin, hair, brows, lips, lash line)."""
    x, y, z = pos.unbind(-1)
    skin = _t(P.skin_rgb, pos).expand(len(pos), 3).clone()
    front = smoothstep(-0.2, -0.6, z)
    # Blush on the cheeks, slightly redder nose tip and ears.
    blush = sum(torch.exp(-0.5 * (((x - s * 0.38) / 0.12) ** 2 + ((y - 0.2) / 0.1) ** 2)) for s in (-1, 1)) * front
    blush = blush + 0.6 * torch.exp(-0.5 * ((x / 0.06) ** 2 + ((y - P.nose_tip_y) / 0.05) ** 2)) * front
    skin = skin * (1 - P.blush * blush[:, None] * _t((0.0, 0.45, 0.45), pos))
    # Lips: an upper and lower lip shape around a mouth line that curves up with a smile.
    mw = P.mouth_half_width
    u = (x / mw).clamp(-1.5, 1.5)
    line = P.mouth_y - P.smile * u ** 2 + 0.006 * torch.cos(u * 3.14)
    shape = (1 - u * u).clamp(min=0.0)
    up_top = line - 0.05 * P.lip_fullness * shape ** 0.5 * (1 - 0.35 * torch.exp(-(x / 0.03) ** 2))
    lo_bot = line + 0.065 * P.lip_fullness * shape ** 0.6
    lips = ((y > up_top) & (y < lo_bot) & (u.abs() < 1)).float() * front
    lips = lips * smoothstep(0.0, 0.01, torch.minimum(y - up_top, lo_bot - y))
    skin = skin * (1 - lips[:, None]) + _t(P.lip_rgb, pos) * lips[:, None]
    gap = 0.004 + P.mouth_open * shape
    mouth = (torch.abs(y - line - 0.3 * P.mouth_open) < gap) & (u.abs() < 1) & (front > 0.5)
    skin = torch.where(mouth[:, None], _t((0.18, 0.06, 0.06), pos), skin)
    # Nostrils.
    for s in (-1, 1):
        nos = ((x - s * P.nose_width * 0.5) / 0.028) ** 2 + ((y - P.nose_tip_y - 0.055) / 0.014) ** 2 < 1
        skin = torch.where((nos & (front > 0.5))[:, None], skin * 0.35, skin)
    # Eyebrows: an arched band above each eye.
    for k, c in enumerate(P.eye_centers):
        side = -1.0 if k == 0 else 1.0
        bu = (x - c[0]) * side / 0.17 + 0.15  # -1 inner end .. +1 outer end
        by = P.brow_y - P.brow_raise - 0.03 * (1 - bu * bu) + 0.02 * bu.clamp(min=0) + P.brow_frown * (bu < -0.3)
        thick = 0.028 * (1 - 0.5 * bu.clamp(min=0))
        brow = (torch.abs(y - by) < thick) & (bu.abs() < 1) & (front > 0.5)
        skin = torch.where(brow[:, None], _t(P.brow_rgb, pos), skin)
    # Lids: lash line (dark) at the edges of the opening, lid crease, slight periocular shadow.
    inside, up, lo, s = eye_almond(x, y, P)
    _, up15, _, _ = eye_almond(x, y, P, scale=1.5)
    for k in range(2):
        infront = z < P.eye_centers[k][2]
        lash = (((up[k] > -0.012) & (up[k] < 0.0)) | ((lo[k] > -0.005) & (lo[k] < 0.0))) & (s[k].abs() < 1.05) & infront
        skin = torch.where(lash[:, None], skin * 0.25, skin)
        crease = (torch.abs(up15[k] + 0.003) < 0.006) & (s[k].abs() < 0.8) & infront
        skin = torch.where(crease[:, None], skin * 0.75, skin)
    # Hair with a few strands of variation.
    hw = smoothstep(-0.01, 0.025, _hair_line(pos, P) - y)
    streak = 1 + 0.07 * torch.sin(90 * x + 20 * z) * torch.sin(60 * z - 25 * y)
    hair = _t(P.hair_rgb, pos) * streak[:, None]
    return (skin * (1 - hw[:, None]) + hair * hw[:, None]).clamp(0, 1)


def _hair_line(pos: torch.Tensor, P: HeadParams) -> torch.Tensor:
    """torch twin of _hair_weight's hairline (same formula) for per-fragment hair colour."""
    x, y, z = pos.unbind(-1)
    line = P.hairline_y + 0.36 * smoothstep(-0.75, -0.45, z) \
        + 0.22 * smoothstep(-0.42, -0.28, z) * (1 - smoothstep(-0.2, -0.1, z)) + 0.75 * smoothstep(0.14, 0.42, z)
    return line + 0.03 * torch.sin(7.0 * x + 2.0 * z)


def eyeball_part(pos: torch.Tensor, eye_center: torch.Tensor, optical_axis: torch.Tensor, P: HeadParams):
    """Per-fragment eyeball part. pos (P, 3), eye_center (P, 3), optical_axis (P, 3) unit, head frame.

    Returns (part (P,) EYEBALL_* labels, cos_angle (P,) between the point's direction and the axis).
    """
    d = torch.nn.functional.normalize(pos - eye_center, dim=-1)
    cos = (d * optical_axis).sum(-1)
    part = torch.full_like(cos, EYEBALL_SCLERA, dtype=torch.long)
    part = torch.where(cos > np.cos(P.iris_angle), EYEBALL_IRIS, part)
    part = torch.where(cos > np.cos(P.pupil_angle), EYEBALL_PUPIL, part)
    return part, cos


def eyeball_albedo(pos: torch.Tensor, eye_center: torch.Tensor, optical_axis: torch.Tensor, P: HeadParams) -> torch.Tensor:
    """(P, 3) eyeball points -> (P, 3) albedo: sclera, iris with radial texture and dark limbus, pupil."""
    part, cos = eyeball_part(pos, eye_center, optical_axis, P)
    ang = torch.acos(cos.clamp(-1, 1))
    r = (ang / P.iris_angle).clamp(0, 1)  # 0 at the pupil centre, 1 at the limbus
    sclera = _t(P.sclera_rgb, pos).expand(len(pos), 3)
    # Sclera gets slightly darker/pinker towards the corners (away from the cornea).
    sclera = sclera * (1 - 0.12 * smoothstep(0.9, 0.3, cos))[:, None]
    iris = _t(P.iris_rgb, pos) * (1.25 - 0.55 * r ** 2)[:, None]
    iris = iris * (1 - 0.45 * smoothstep(0.75, 1.0, r))[:, None]  # dark limbal ring
    out = torch.where((part == EYEBALL_SCLERA)[:, None], sclera, iris)
    out = torch.where((part == EYEBALL_PUPIL)[:, None], _t((0.02, 0.02, 0.025), pos), out)
    return out.clamp(0, 1)


def iris_centers_3d(P: HeadParams, gaze_head: torch.Tensor) -> torch.Tensor:
    """(..., 2) gaze (pitch, yaw) in the head frame -> (..., 2, 3) iris centres [right, left] on the eyeball surface."""
    axis = pitch_yaw_to_vector(gaze_head.to(torch.float32))
    centers = torch.tensor(P.eye_centers, dtype=torch.float32)
    return centers + P.eye_radius * axis.unsqueeze(-2)


def landmarks_3d(P: HeadParams) -> np.ndarray:
    """68 iBUG landmarks (68, 3) in the head frame, on the skin surface (gaze independent).

    Order: jaw 0-16 (subject's right ear to left), brows 17-26, nose 27-35, eyes 36-47 (right eye
    36-41 from the outer corner, left eye 42-47 from the inner corner), mouth 48-67.
    """
    xy = []
    a = np.linspace(-1, 1, 17) * np.pi * 0.48
    jw = P.ax * 0.93
    xy += [(jw * np.sin(t) * (1 - 0.25 * P.jaw_taper * np.cos(t)), -0.05 + (P.chin_y - 0.03 + 0.05) * np.cos(t) ** 0.9)
           for t in a]
    for side in (-1, 1):
        pts = [(side * (0.47 - 0.08 * i), P.brow_y - P.brow_raise - 0.03 * (1 - ((0.47 - 0.08 * i - P.eye_x) / 0.17) ** 2))
               for i in range(5)]
        xy += pts if side == -1 else pts[::-1]
    xy += [(0.0, P.nose_top + (P.nose_tip_y - P.nose_top) * i / 3) for i in range(4)]
    xy += [(dx * P.nose_width, P.nose_tip_y + 0.05 - 0.012 * (2 - abs(dx) * 2)) for dx in (-0.9, -0.45, 0, 0.45, 0.9)]
    for k, c in enumerate(P.eye_centers):
        side = -1.0 if k == 0 else 1.0
        w = P.eye_half_width * 0.98
        # s along the opening in image order for iBUG: right eye starts at its outer corner (x<0 side).
        ss_up = (-1.0, -1 / 3, 1 / 3, 1.0) if k == 0 else (-1.0, -1 / 3, 1 / 3, 1.0)
        pts = []
        for s in ss_up:
            outward = s * side
            cy = c[1] - P.canthal_tilt * outward + 0.01
            shape = max(1 - s * s, 0.0)
            pts.append((c[0] + s * w, cy - P.lid_upper * shape ** 0.55 * (1 - 0.12 * outward)))
        for s in (1 / 3, -1 / 3):
            outward = s * side
            cy = c[1] - P.canthal_tilt * outward + 0.01
            pts.append((c[0] + s * w, cy + P.lid_lower * (1 - s * s) ** 0.75))
        xy += pts
    mw = P.mouth_half_width
    line = lambda u: P.mouth_y - P.smile * u * u  # noqa: E731
    outer_up = [(u * mw, line(u) - 0.05 * P.lip_fullness * max(1 - u * u, 0) ** 0.5) for u in (-1, -0.6, -0.25, 0, 0.25, 0.6, 1)]
    outer_lo = [(u * mw, line(u) + 0.065 * P.lip_fullness * max(1 - u * u, 0) ** 0.6) for u in (0.6, 0.25, 0, -0.25, -0.6)]
    inner_up = [(u * mw, line(u) - 0.004) for u in (-0.85, -0.3, 0, 0.3, 0.85)]
    inner_lo = [(u * mw, line(u) + 0.004 + 2 * P.mouth_open) for u in (0.3, 0, -0.3)]
    xy += outer_up + outer_lo + inner_up + inner_lo
    xy = np.asarray(xy, dtype=np.float64)
    assert xy.shape == (68, 2), xy.shape
    return _surface_point_xy(xy, P, eye_centers=np.asarray(P.eye_centers))


def eyeball_face_part(mesh: HeadMesh, gaze_head) -> np.ndarray:
    """Per-face eyeball part for a gaze: (F,) int64, EYEBALL_* for eyeball faces, -1 elsewhere.

    Labels a face by its centroid (the renderer colours per fragment, so this is only a
    face-level summary, e.g. for statistics or debugging). gaze_head: (2,) pitch/yaw, head frame.
    """
    P = mesh.params
    axis = pitch_yaw_to_vector(torch.as_tensor(np.asarray(gaze_head, dtype=np.float32))).numpy()
    out = np.full(len(mesh.faces), -1, dtype=np.int64)
    centroid = mesh.verts[mesh.faces].mean(1)
    for k in range(2):
        sel = mesh.face_part == PART_RIGHT_EYEBALL + k
        d = centroid[sel] - np.asarray(P.eye_centers[k], dtype=np.float32)
        cos = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ axis
        out[sel] = np.where(cos > np.cos(P.pupil_angle), EYEBALL_PUPIL,
                            np.where(cos > np.cos(P.iris_angle), EYEBALL_IRIS, EYEBALL_SCLERA))
    return out
