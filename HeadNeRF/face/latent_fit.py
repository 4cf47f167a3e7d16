"""The "3DMM" step: the synthetic head model's latent code fitted to normalised faces.

Design decisions
----------------
* **What is fitted.** The project's own parametric head (``data/synthetic/head_model.py``) plays
  the 3DMM: identity (16) is shared by all rows of a subject, expression (6) is per row, albedo
  (12) and illumination (9) come from the image colours and are shared (lighting is fixed in the
  head frame, like the synthetic data). The block order is ``head_model.CODE_SLICES``.
* **Shape from landmarks, Gauss-Newton with analytic Jacobians.** The 68 landmarks are a linear
  model in ``tanh(code)`` (``landmark_basis``), projected with each row's normalised camera
  refined by a small rotation + translation. The cost is
  ``sum ||(proj - lm2d) / (SIGMA_LM * iod)||² + sum (code / 0.8)²`` (the sampler's prior; jaw points
  weighted 0.5). Identity is fitted jointly on up to ``identity_rows`` rows (spread over the
  subject), then every row gets its expression + pose refinement with identity fixed (one batched
  12-unknown solve per row: cheap enough for thousands of rows).
* **Appearance by analysis-by-synthesis on region colours.** Mean colours of a few regions
  (cheeks, forehead, nose, chin, lips, brows, irises, hair) are measured on the photo and on
  renders of the fitted head (same cameras, ``appearance_size`` px), and the 21 albedo +
  illumination coefficients are fitted by Gauss-Newton with forward-difference Jacobians, with
  the same prior. The geometry is rasterised once (pytorch3d kernel, ``AppearanceRenderer``);
  each appearance code only re-shades the fragments, so one Jacobian (21 re-shadings of 2 small
  views) costs ~0.1 s. Finite differences rather than a differentiable renderer: the synthetic
  shader has hard region boundaries (lips, brows, iris) whose colours are what we match.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from HeadNeRF.data.synthetic import head_model as hm
from HeadNeRF.data.synthetic.head_model import CODE_DIM
from HeadNeRF.data.synthetic.render import mesh_for_code, rasterize_views, render_view, single_thread
from HeadNeRF.geometry.cameras import camera_center
from HeadNeRF.geometry.gaze import pitch_yaw_to_vector, vector_to_pitch_yaw

from .landmark_basis import landmark_basis, landmarks_linear

__all__ = ["FitOptions", "fit_latent_codes", "fit_shape", "landmark_error", "region_features", "region_masks",
           "AppearanceRenderer", "fit_appearance"]

SIGMA_LM = 0.08  # landmark noise, fraction of the interocular distance (mediapipe vs the synthetic definition)
PRIOR_STD = 0.8
JAW_WEIGHT = 0.5
COLOUR_SIGMA = 0.03  # colour noise of a region mean (fraction of full scale)
ILLUMINATION_PRIOR_STD = 0.4  # tighter than the sampler (0.8): colours barely separate light from albedo
CHUNK = 512  # rows per batched solve in the per-row stage


@dataclasses.dataclass
class FitOptions:
    identity_rows: int = 8  # rows used to fit the shared identity
    shape_iters: int = 6
    row_iters: int = 3
    appearance_rows: int = 2  # rows rendered for the colour fit
    appearance_size: int = 96
    appearance_iters: int = 3
    fit_appearance: bool = True


def _iod(lm: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...,) distance between the eye centres (px)."""
    return np.linalg.norm(lm[..., 36:42, :].mean(-2) - lm[..., 42:48, :].mean(-2), axis=-1)


def _skew(v):
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _rodrigues(w):
    """(..., 3) -> (..., 3, 3)."""
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    K = _skew(w / np.maximum(th[..., 0], 1e-12))
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * (K @ K)


def _project_jac(X, R, t, K):
    """Points X (N, 68, 3) with cameras R (N,3,3), t (N,3), K (N,3,3) ->
    uv (N, 68, 2), dP (N, 68, 2, 3) d uv / d P_cam, P_cam (N, 68, 3)."""
    P = X @ np.swapaxes(R, -1, -2) + t[:, None]
    z = np.maximum(P[..., 2], 1e-6)
    fx, fy = K[:, 0, 0][:, None], K[:, 1, 1][:, None]
    uv = np.stack([fx * P[..., 0] / z + K[:, 0, 2][:, None], fy * P[..., 1] / z + K[:, 1, 2][:, None]], -1)
    dP = np.zeros(P.shape[:-1] + (2, 3))
    dP[..., 0, 0] = fx / z
    dP[..., 0, 2] = -fx * P[..., 0] / z ** 2
    dP[..., 1, 1] = fy / z
    dP[..., 1, 2] = -fy * P[..., 1] / z ** 2
    return uv, dP, P


def _weights(lm2d):
    w = np.ones(68)
    w[:17] = JAW_WEIGHT
    return w[None, :, None] / (SIGMA_LM * _iod(lm2d))[:, None, None]  # (N, 68, 1)


def _identity_stage_system(r, Jc, Jp, ident, expression):
    """Gauss-Newton normal equations (H, g) of the identity stage, with the code prior.

    Unknowns: the shared identity (n_id) then, per row, its expression (6) and pose update (6).
    Args: r (n, 68, 2) weighted residuals; Jc (n, 68, 2, n_id + 6) and Jp (n, 68, 2, 6) their Jacobians;
        ident (n_id,) the current identity; expression (n, 6) the rows' current expression codes.
    Returns: H (dim, dim), g (dim,) with dim = n_id + 12 n.
    """
    n, n_id = len(r), len(ident)
    dim = n_id + n * 12
    H = np.zeros((dim, dim))
    g = np.zeros(dim)
    for i in range(n):
        Ji = np.zeros((136, dim))
        Ji[:, :n_id] = Jc[i, ..., :n_id].reshape(136, n_id)
        o = n_id + 12 * i
        Ji[:, o:o + 6] = Jc[i, ..., n_id:].reshape(136, -1)
        Ji[:, o + 6:o + 12] = Jp[i].reshape(136, 6)
        H += Ji.T @ Ji
        g += Ji.T @ r[i].reshape(136)
    prior = np.zeros(dim)
    prior[:n_id] = ident
    for i in range(n):
        prior[n_id + 12 * i:n_id + 12 * i + 6] = expression[i]
    pw = np.zeros(dim)
    pw[:n_id] = 1.0 / PRIOR_STD ** 2
    for i in range(n):
        pw[n_id + 12 * i:n_id + 12 * i + 6] = 1.0 / PRIOR_STD ** 2
    H += np.diag(pw) + 1e-6 * np.eye(dim)
    g += pw * prior
    return H, g


def fit_shape(lm2d, R, t, K, identity_rows: int = 8, shape_iters: int = 6, row_iters: int = 3):
    """Identity (shared) + expression and camera refinement (per row) from 2-D landmarks.

    Args: lm2d (N, 68, 2) px; R (N, 3, 3), t (N, 3), K (N, 3, 3) the rows' cameras (head frame -> camera).
    Returns: shape (N, 22) identity ⊕ expression codes, R (N, 3, 3), t (N, 3) refined cameras,
        rms (N,) landmark reprojection error in px.
    """

    L0, B = landmark_basis()
    lm2d, R, t, K = (np.asarray(a, np.float64) for a in (lm2d, R, t, K))
    N = len(lm2d)
    n_id = 16
    n_sh = B.shape[0]
    W = _weights(lm2d)
    code = np.zeros((N, n_sh))
    R, t = R.copy(), t.copy()

    def residual_and_jac(rows, code_rows, ks=slice(None)):
        """Residuals (n, 68, 2) and Jacobians wrt the code columns ``ks`` and the pose (weighted)."""
        u = np.tanh(code_rows)
        X = L0 + np.einsum("nk,kpc->npc", u, B)
        uv, dP, P = _project_jac(X, R[rows], t[rows], K[rows])
        r = (uv - lm2d[rows]) * W[rows]  # (n, 68, 2)
        RB = np.einsum("nij,kpj->nkpi", R[rows], B[ks]) * (1 - u[:, ks] ** 2)[:, :, None, None]  # d P / d c
        Jc = np.einsum("npab,nkpb->npak", dP, RB)  # (n, 68, 2, 22)
        Jw = np.einsum("npab,npbc->npac", dP, -_skew(P))  # P' = Exp(w) P + dt: rotation about the camera origin
        Jt = dP
        Jpose = np.concatenate([Jw, Jt], -1)  # (n, 68, 2, 6)
        return r, Jc * W[rows][..., None], Jpose * W[rows][..., None]

    def update_pose(rows, dpose):
        Rw = _rodrigues(dpose[:, :3])
        R[rows] = Rw @ R[rows]
        t[rows] = np.einsum("nij,nj->ni", Rw, t[rows]) + dpose[:, 3:]

    # Stage 1: identity + per-row expression/pose on a subset.
    sub = np.unique(np.linspace(0, N - 1, min(identity_rows, N)).round().astype(int))
    n = len(sub)
    ident = np.zeros(n_id)
    for _ in range(shape_iters):
        cr = np.concatenate([np.broadcast_to(ident, (n, n_id)), code[sub, n_id:]], 1)
        H, g = _identity_stage_system(*residual_and_jac(sub, cr), ident, code[sub, n_id:])
        d = -np.linalg.solve(H, g)
        ident = np.clip(ident + d[:n_id], -2.5, 2.5)
        for i in range(n):
            o = n_id + 12 * i
            code[sub[i], n_id:] = np.clip(code[sub[i], n_id:] + d[o:o + 6], -2.5, 2.5)
        update_pose(sub, d[n_id:].reshape(n, 12)[:, 6:])
    code[:, :n_id] = ident
    # Stage 2: every row's expression + pose with identity fixed (batched 12x12 solves, in chunks
    # of CHUNK rows so that a 10K-row subject stays within a few tens of MB).
    pw = np.r_[np.full(6, 1.0 / PRIOR_STD ** 2), np.zeros(6)]
    rms = np.zeros(N)
    for c0 in range(0, N, CHUNK):
        rows = np.arange(c0, min(N, c0 + CHUNK))
        n = len(rows)
        for _ in range(row_iters):
            r, Jc, Jp = residual_and_jac(rows, code[rows], slice(n_id, n_sh))
            J = np.concatenate([Jc, Jp], -1).reshape(n, 136, 12)
            H = np.einsum("nri,nrj->nij", J, J) + np.diag(pw) + 1e-6 * np.eye(12)
            g = np.einsum("nri,nr->ni", J, r.reshape(n, 136)) + pw * np.concatenate([code[rows, n_id:], np.zeros((n, 6))], 1)
            d = -np.linalg.solve(H, g[..., None])[..., 0]
            code[rows, n_id:] = np.clip(code[rows, n_id:] + d[:, :6], -2.5, 2.5)
            update_pose(rows, d[:, 6:])
        r, _, _ = residual_and_jac(rows, code[rows], slice(0, 0))
        rms[rows] = np.sqrt(np.mean(np.sum((r / W[rows]) ** 2, -1), -1))
    return code, R, t, rms


def landmark_error(code_shape, R, t, K, lm2d) -> np.ndarray:
    """(N,) RMS reprojection error (px) of the linear landmark model for (N, 22) shape codes."""

    X = landmarks_linear(code_shape)
    uv, _, _ = _project_jac(X, np.asarray(R, np.float64), np.asarray(t, np.float64), np.asarray(K, np.float64))
    return np.sqrt(np.mean(np.sum((uv - lm2d) ** 2, -1), -1))


# ------------------------------------------------------------------------------------------------
# Appearance


def _disk(shape, c, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (xx + 0.5 - c[0]) ** 2 + (yy + 0.5 - c[1]) ** 2 <= r * r


def _poly_mask(shape, pts):
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round((np.asarray(pts) - 0.5) * 16).astype(np.int32)], 1, shift=4)
    return m > 0


def _line_mask(shape, pts, width):
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.polylines(m, [np.round((np.asarray(pts) - 0.5) * 16).astype(np.int32)], False, 1,
                  thickness=max(1, int(round(width))), shift=4)
    return m > 0


REGIONS = ("cheek_right", "cheek_left", "forehead", "nose_ridge", "nose_tip", "chin", "lips", "brows", "iris", "hair")


def region_masks(shape, lm68: np.ndarray, iris2d: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(len(REGIONS), H, W) bool masks of REGIONS from the landmarks (68, 2), irises (2, 2) and head mask (H, W)."""
    lm = np.asarray(lm68, np.float64)
    iod = float(_iod(lm))
    up = lm[27] - lm[30]
    up = up / max(np.linalg.norm(up), 1e-6)
    r = 0.14 * iod
    regions = {
        "cheek_right": _disk(shape, (lm[41] + lm[48] + lm[2]) / 3, r),
        "cheek_left": _disk(shape, (lm[46] + lm[54] + lm[14]) / 3, r),
        "forehead": _disk(shape, (lm[21] + lm[22]) / 2 + 0.35 * iod * up, r),
        "nose_ridge": _disk(shape, lm[28], 0.08 * iod),
        "nose_tip": _disk(shape, lm[30], 0.08 * iod),
        "chin": _disk(shape, (lm[8] + lm[57]) / 2, 0.1 * iod),
        "lips": _poly_mask(shape, lm[48:60]) & ~_poly_mask(shape, lm[60:68]),
        "brows": _line_mask(shape, lm[17:22], 0.06 * iod) | _line_mask(shape, lm[22:27], 0.06 * iod),
        "iris": _disk(shape, iris2d[0], 0.07 * iod) | _disk(shape, iris2d[1], 0.07 * iod),
    }
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    brow_c = lm[17:27].mean(0)
    height = (xx + 0.5 - brow_c[0]) * up[0] + (yy + 0.5 - brow_c[1]) * up[1]
    regions["hair"] = height > 0.9 * iod  # head-mask pixels well above the brows
    return np.stack([regions[name] & mask for name in REGIONS])


def region_features(image: np.ndarray, masks: np.ndarray):
    """Mean colours of the regions. image (H, W, 3) float [0, 1]; masks (R, H, W) bool from region_masks.
    Returns (R, 3) float64 and (R,) bool valid (at least 2 pixels)."""
    count = masks.reshape(len(masks), -1).sum(1)
    sums = masks.reshape(len(masks), -1).astype(np.float64) @ image.reshape(-1, 3)
    return sums / np.maximum(count, 1)[:, None], count >= 2


class AppearanceRenderer:
    """Fast re-shading of fixed geometry: renders of one shape code under many appearance codes.

    The synthetic renderer (``render_view``) rebuilds the mesh and the landmarks for every new code
    (~0.4 s), too slow for finite differences. Geometry does not depend on albedo/illumination, so
    the fragments are rasterised once (``render.rasterize_views``, same cameras and pixel
    convention) and each appearance code only re-evaluates the head model's own albedo functions
    (``head_model.skin_albedo`` / ``eyeball_albedo``) and the renderer's shading formula
    (Lambert key + fill + ambient, Blinn specular, lid shadow, dark socket), restated here.
    ``tests/test_face.py`` checks the images against ``render_view`` (same code, same cameras).
    """

    def __init__(self, code, R, t, K, size: int, gaze_head):
        import torch

        self.hm = hm
        code = np.asarray(code, np.float32)
        R, t, K = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (R, t, K))
        gaze = torch.as_tensor(np.asarray(gaze_head), dtype=torch.float32).reshape(-1, 2).expand(len(R), 2)
        ref = render_view(code, R, t, K, size, gaze)  # landmarks, masks and a reference image
        self.reference, self.lm2d, self.iris2d, self.mask = ref["image"], ref["lm2d"], ref["iris2d"], ref["mask"] > 127
        mesh = mesh_for_code(code)
        self.eye_centers = mesh.params.eye_centers
        P = mesh.params
        verts, faces = torch.from_numpy(mesh.verts), torch.from_numpy(mesh.faces)
        normals, face_part = torch.from_numpy(mesh.normals), torch.from_numpy(mesh.face_part)
        B, S = len(R), int(size)
        with single_thread():
            p2f, bary, _ = rasterize_views(verts, faces, R, t, K, S, cull_normals=torch.from_numpy(mesh.cull_normals))
            fg = p2f[..., 0] >= 0
            b_of_pix = torch.arange(B).view(B, 1, 1).expand(B, S, S)[fg]
            f, w = p2f[fg], bary[fg]
            fc = f.clamp(min=0)
            pos = (verts[faces[fc]] * w.unsqueeze(-1)).sum(-2)
            part = torch.where(f >= 0, face_part[fc], torch.full_like(f, -1))
            is_skin = (part >= 0) & (part <= hm.PART_LEFT_EYE_REGION)
            cut = is_skin & hm.in_eye_opening(pos.reshape(-1, 3), P).view_as(is_skin)
            usable = (f >= 0) & ~cut
            first = torch.where(usable.any(1), usable.float().argmax(1), torch.full_like(f[:, 0], f.shape[1] - 1))

            def sel(x):
                return x.gather(1, first.view(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])).squeeze(1)

            f1, w1, pos1, part1 = sel(fc), sel(w), sel(pos), sel(part)
            n1 = torch.nn.functional.normalize((normals[faces[f1]] * w1.unsqueeze(-1)).sum(-2), dim=-1)
            view = torch.nn.functional.normalize(camera_center(R, t)[b_of_pix] - pos1, dim=-1)
            self.axis = pitch_yaw_to_vector(gaze)[b_of_pix]
            self.is_eye = part1 >= hm.PART_RIGHT_EYEBALL
            self.eye_k = (part1 - hm.PART_RIGHT_EYEBALL).clamp(0, 1)
            self.interior = ~self.is_eye & (((n1 * view).sum(-1) < -0.05) | ~usable.any(1))
            lid = torch.ones_like(pos1[:, 0])
            if self.is_eye.any():
                _, up, _, _ = hm.eye_almond(pos1[:, 0], pos1[:, 1], P)
                up_k = up.gather(0, self.eye_k.view(1, -1)).squeeze(0)
                lid = torch.where(self.is_eye, 0.55 + 0.45 * hm.smoothstep(0.0, 0.03, up_k), lid)
        self.pos, self.n, self.view, self.lid, self.fg, self.B, self.S = pos1, n1, view, lid, fg, B, S
        self.regions = [region_masks((S, S), self.lm2d[b], self.iris2d[b], self.mask[b]) for b in range(B)]

    def images(self, code) -> np.ndarray:
        """(B, S, S, 3) float64 images in [0, 1] of the geometry under ``code``'s appearance."""
        import dataclasses

        import torch

        hm = self.hm
        P = dataclasses.replace(hm.decode(np.asarray(code, np.float64)), eye_centers=self.eye_centers)
        eye_c = torch.tensor(P.eye_centers, dtype=torch.float32)
        albedo = hm.skin_albedo(self.pos, P)
        if self.is_eye.any():
            albedo[self.is_eye] = hm.eyeball_albedo(self.pos[self.is_eye], eye_c[self.eye_k[self.is_eye]],
                                                    self.axis[self.is_eye], P)
        light = torch.tensor(P.light_dir, dtype=torch.float32)
        fill = torch.tensor(P.fill_dir, dtype=torch.float32)
        shade = P.ambient + P.diffuse * (self.n @ light).clamp(min=0) + P.fill * (self.n @ fill).clamp(min=0)
        nh = (self.n * torch.nn.functional.normalize(light + self.view, dim=-1)).sum(-1).clamp(min=0)
        spec = torch.where(self.is_eye, 0.9 * nh ** 120, P.specular * 0.25 * nh ** 16 * (1 - albedo.mean(-1)))
        shade = shade * self.lid
        rgb = albedo * shade.unsqueeze(-1) * torch.tensor(P.light_rgb, dtype=torch.float32) * P.exposure + spec.unsqueeze(-1)
        rgb = torch.where(self.interior.unsqueeze(-1), albedo * 0.12, rgb)
        img = torch.ones(self.B, self.S, self.S, 3)
        img[self.fg] = rgb.clamp(0, 1)
        return ((img * 255.0 + 0.5).floor() / 255.0).double().numpy()

    def features(self, code):
        """Region features (B, R, 3) and validity (B, R) of the images under ``code``."""
        imgs = self.images(code)
        out = [region_features(imgs[b], self.regions[b]) for b in range(self.B)]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def _with_appearance(code_shape_full, app):
    c = np.array(code_shape_full, np.float32)
    c[22:] = app
    return c


def fit_appearance(faces, code: np.ndarray, R, t, rows, size: int = 64, iters: int = 3):
    """Albedo + illumination (21,) fitted to region colours of ``faces[rows]`` (see module docstring)."""
    import cv2
    import torch

    targets, tvalid, Ks, gazes = [], [], [], []
    for i in rows:
        f = faces[i]
        S = f.face_patch.shape[0]
        s = size / S
        img = cv2.resize(f.face_patch, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
        m = cv2.resize(f.mask, (size, size), interpolation=cv2.INTER_AREA) > 127
        ft, v = region_features(img, region_masks((size, size), np.asarray(f.lm2d) * s, np.asarray(f.iris2d) * s, m))
        targets.append(ft)
        tvalid.append(v)
        K = np.asarray(f.cam_K, np.float64).copy()
        K[:2] *= s
        Ks.append(K)
        # head-frame gaze: unknown here; the eyes look at the camera (the iris is then centred)
        cam_c = -np.asarray(R[i]).T @ np.asarray(t[i])
        eye_mid = np.array([0.0, -0.12, -0.75])
        gazes.append(vector_to_pitch_yaw(torch.tensor(cam_c - eye_mid, dtype=torch.float32)).numpy())
    T, TV = np.stack(targets), np.stack(tvalid)
    model = AppearanceRenderer(code, np.asarray(R)[rows], np.asarray(t)[rows], np.stack(Ks), size, np.stack(gazes))
    a0, a1 = 22, len(code)
    app = np.zeros(a1 - a0)
    eps = 0.2
    for _ in range(iters):
        F0, V0 = model.features(_with_appearance(code, app))
        valid = (TV & V0)[..., None]
        r0 = ((F0 - T) * valid).reshape(-1)
        J = np.zeros((len(r0), len(app)))
        for k in range(len(app)):
            a = app.copy()
            a[k] += eps
            Fk, _ = model.features(_with_appearance(code, a))
            J[:, k] = ((Fk - F0) * valid).reshape(-1) / eps
        prior = np.r_[np.full(12, 1.0 / PRIOR_STD ** 2), np.full(len(app) - 12, 1.0 / ILLUMINATION_PRIOR_STD ** 2)]
        H = J.T @ J / COLOUR_SIGMA ** 2 + np.diag(prior)
        g = J.T @ r0 / COLOUR_SIGMA ** 2 + app * prior
        step = -np.linalg.solve(H, g)
        app = np.clip(app + np.clip(step, -1.0, 1.0), -2.5, 2.5)
    return app


def fit_latent_codes(faces, code_dim_layout: str = "synthetic", options: FitOptions | None = None,
                     return_cameras: bool = False):
    """Latent codes (N, 43) float32 of the synthetic head model for the rows of one subject.

    Args:
        faces: list of NormalisedFace (same person). code_dim_layout: only "synthetic" (the
            project's head model, ``head_model.CODE_SLICES``).
        options: FitOptions. return_cameras: also return the refined (R (N,3,3), t (N,3)) and the
            landmark RMS (N,) px.
    """
    if code_dim_layout != "synthetic":
        raise ValueError(f"unknown code_dim_layout {code_dim_layout!r} (only 'synthetic')")

    opt = options or FitOptions()
    if len(faces) == 0:
        return np.zeros((0, CODE_DIM), np.float32)
    lm = np.stack([np.asarray(f.lm2d, np.float64) for f in faces])
    R = np.stack([np.asarray(f.cam_R_w2c, np.float64) for f in faces])
    t = np.stack([np.asarray(f.cam_t_w2c, np.float64) for f in faces])
    K = np.stack([np.asarray(f.cam_K, np.float64) for f in faces])
    shape, Rf, tf, rms = fit_shape(lm, R, t, K, opt.identity_rows, opt.shape_iters, opt.row_iters)
    codes = np.zeros((len(faces), CODE_DIM), np.float32)
    codes[:, :22] = shape
    rows = np.zeros(0, np.int64)
    if opt.fit_appearance:
        # the most frontal rows (by |face_head_pose|, stable order) that still carry their image
        hp = np.stack([np.asarray(f.face_head_pose, np.float64) for f in faces])
        order = [i for i in np.argsort(np.abs(hp).sum(1), kind="stable") if faces[i].face_patch is not None
                 and faces[i].mask is not None]
        rows = np.asarray(order[:max(1, opt.appearance_rows)], dtype=np.int64)
    if opt.fit_appearance and len(rows):
        mean_shape = shape[rows].mean(0)
        base = np.zeros(CODE_DIM, np.float32)
        base[:22] = mean_shape
        codes[:, 22:] = fit_appearance(faces, base, Rf, tf, rows, opt.appearance_size, opt.appearance_iters)
    if return_cameras:
        return codes, (Rf, tf, rms)
    return codes
