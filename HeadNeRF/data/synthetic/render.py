"""Rendering the synthetic heads with pytorch3d's mesh rasterizer (CPU, or CUDA when asked for).

Design decisions
----------------
* **Own projection, rasterizer core only.** Vertices are projected with OpenCV K, R, t
  (``HeadNeRF.geometry.cameras.project_points`` convention: pixel centres at +0.5) and handed
  to pytorch3d's compiled ``rasterize_meshes`` kernel directly in NDC. pytorch3d's NDC has +x
  left and +y up and puts pixel column ``i`` at ``x = 1 - (2i + 1) / W``; a continuous pixel
  coordinate ``u`` therefore maps to ``x_ndc = 1 - 2u / W`` (same for v). This is exactly what
  ``cameras_from_opencv_projection`` produces, without building camera objects per image.
* **Python-side screen tiling.** The CPU kernel has no coarse binning (cost ∝ pixels × faces).
  The image is cut into ``tile × tile`` tiles; every (view, tile) becomes its own "mesh" in one
  packed kernel call, holding only the faces whose projected bounding box touches the tile.
  The cost drops roughly by the number of tiles and all views of a frame share one call.
* **Own shader on the fragments.** The kernel returns the 3 nearest fragments per pixel. Skin
  fragments inside an eye opening are discarded (cut-out, see ``head_model``), the first
  remaining fragment is shaded: albedo from the head model evaluated at the interpolated
  head-frame position, Lambertian key + fill light + ambient from the illumination code,
  a Blinn specular (strong on the eyes: the catch-light), and a soft lid shadow on the eyeball.
  Skin seen from inside (through an opening at grazing angles) is shaded as a dark socket.
* **Gaze-independent work done once.** ``prepare_view`` rasterises and computes everything that
  does not depend on the gaze (normals, light, specular, lid shadow, masks, landmarks);
  ``shade_view`` colours the eyeballs for a gaze (``hm.eyeball_albedo`` on the eyeball fragments,
  the only place the gaze enters the image). ``render_view`` is the two in a row (bit-identical
  to the former single pass); the exact gaze readout (``HeadNeRF.evaluation.readout``) shades
  many gazes of one preparation with ``shade_eye_pixels``.
* **Anti-aliasing by supersampling** (``supersample=n``: render n× larger, box filter). Because the
  CPU kernel's cost is dominated by a per-face constant, 2× supersampling at 64² costs only
  ~1.5× (the dataset writer uses 2 by default).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from pytorch3d import _C

from HeadNeRF.geometry.cameras import (camera_center, intrinsics_matrix, normalized_camera_w2c, project_points,
                                       scale_intrinsics)
from HeadNeRF.geometry.gaze import pitch_yaw_to_vector, gaze_in_head_frame, vector_to_pitch_yaw, head_pose_from_rotation
from . import head_model as hm
from . import rig

__all__ = ["render_view", "render", "rasterize_views", "mesh_for_code", "default_tile_size", "prepare_view",
           "shade_view", "shade_image", "shade_eye_pixels"]

FACES_PER_PIXEL = 3
_MESH_CACHE: dict[bytes, hm.HeadMesh] = {}


def mesh_for_code(code: np.ndarray) -> hm.HeadMesh:
    """build_mesh with a small cache keyed by the code bytes (frames of one subject share a mesh)."""
    key = np.asarray(code, dtype=np.float32).tobytes()
    if key not in _MESH_CACHE:
        if len(_MESH_CACHE) > 16:
            _MESH_CACHE.clear()
        _MESH_CACHE[key] = hm.build_mesh(np.asarray(code, dtype=np.float32))
    return _MESH_CACHE[key]


def default_tile_size(image_size: int) -> int:
    """Tile edge in pixels (measured on 2 CPU cores: 16 px up to 128², 32 px above).

    pytorch3d's CPU kernel has a fixed cost of ~8 µs per packed face on top of the per-pixel
    tests, so tiles much smaller than this duplicate too many faces across tiles."""
    return 16 if image_size <= 128 else 32


def rasterize_views(verts: torch.Tensor, faces: torch.Tensor, R_w2c: torch.Tensor, t_w2c: torch.Tensor,
                    K: torch.Tensor, image_size: int, tile: int | None = None, faces_per_pixel: int = FACES_PER_PIXEL,
                    cull_normals: torch.Tensor | None = None):
    """Rasterize one mesh into B views with screen tiling.

    Args:
        verts (V, 3) world points, faces (F, 3) long, R_w2c (B, 3, 3), t_w2c (B, 3), K (B, 3, 3).
        cull_normals: optional (F, 3) outward face normals; faces pointing away from a view's camera
            are dropped (zero rows never are: use them for faces that must always be kept).
    Returns:
        pix_to_face (B, S, S, k) long, index into ``faces`` or -1; bary (B, S, S, k, 3); depth (B, S, S, k).
    """
    B, S, dev = R_w2c.shape[0], int(image_size), verts.device
    T = int(tile or default_tile_size(S))
    n_t = math.ceil(S / T)
    uv = project_points(verts.unsqueeze(0).expand(B, -1, -1), R_w2c, t_w2c, K)  # (B, V, 2)
    depth = (verts.unsqueeze(0) @ R_w2c.transpose(-1, -2) + t_w2c.unsqueeze(1))[..., 2]  # (B, V)
    fuv = uv[:, faces]  # (B, F, 3, 2)
    lo = torch.floor(fuv.amin(2) / T).long()  # (B, F, 2) tile range (conservative)
    hi = torch.floor(fuv.amax(2) / T).long()
    keep = (hi >= 0).all(-1) & (lo < n_t).all(-1) & (depth[:, faces].amin(-1) > 1e-3)
    if cull_normals is not None:  # back faces cost as much as front ones in the naive kernel
        to_cam = camera_center(R_w2c, t_w2c).unsqueeze(1) - verts[faces[:, 0]].unsqueeze(0)  # (B, F, 3)
        keep &= (to_cam * cull_normals.unsqueeze(0)).sum(-1) >= 0
    lo, hi = lo.clamp(0, n_t - 1), hi.clamp(0, n_t - 1)
    b_idx, f_idx = torch.nonzero(keep, as_tuple=True)
    lo, hi = lo[b_idx, f_idx], hi[b_idx, f_idx]
    span = hi - lo + 1  # (P, 2)
    count = span[:, 0] * span[:, 1]
    rep = torch.repeat_interleave(torch.arange(len(count), device=dev), count)
    first = torch.cumsum(count, 0) - count
    local = torch.arange(len(rep), device=dev) - first[rep]
    tx = lo[rep, 0] + local % span[rep, 0]
    ty = lo[rep, 1] + local // span[rep, 0]
    b_rep, f_rep = b_idx[rep], f_idx[rep]
    mesh_id = (b_rep * n_t + ty) * n_t + tx
    order = torch.argsort(mesh_id, stable=True)
    mesh_id, b_rep, f_rep, tx, ty = mesh_id[order], b_rep[order], f_rep[order], tx[order], ty[order]
    n_mesh = B * n_t * n_t
    num = torch.bincount(mesh_id, minlength=n_mesh)
    first_idx = torch.cumsum(num, 0) - num
    vids = faces[f_rep]  # (Q, 3)
    fv_uv = uv[b_rep.unsqueeze(1), vids]  # (Q, 3, 2)
    off = torch.stack((tx, ty), -1).unsqueeze(1).to(fv_uv.dtype) * T
    ndc = 1.0 - 2.0 * (fv_uv - off) / T
    fv = torch.cat((ndc, depth[b_rep.unsqueeze(1), vids].unsqueeze(-1)), -1).float().contiguous()
    neighbor = torch.full((fv.shape[0],), -1, dtype=torch.int64, device=dev)
    p2f, zbuf, bary, _ = _C.rasterize_meshes(fv, first_idx, num, neighbor, (T, T), 0.0, faces_per_pixel, 0, 0,
                                             True, False, False)
    # Packed face index -> original face id; reassemble the tiles into full images.
    valid = p2f >= 0
    p2f = torch.where(valid, f_rep[p2f.clamp(min=0)], torch.full_like(p2f, -1))
    k = faces_per_pixel

    def untile(x):
        x = x.reshape(B, n_t, n_t, T, T, *x.shape[3:]).transpose(2, 3)
        return x.reshape(B, n_t * T, n_t * T, *x.shape[5:])[:, :S, :S]

    return untile(p2f), untile(bary), untile(zbuf) if k else None


def _as_tensor(x, dtype=torch.float32, device="cpu"):
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype).to(device)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, S, S) bool -> dilated by a (2r+1)² square."""
    if radius <= 0:
        return mask
    m = torch.nn.functional.max_pool2d(mask.float().unsqueeze(1), 2 * radius + 1, stride=1, padding=radius)
    return m.squeeze(1) > 0.5


class single_thread:
    """Run torch ops single-threaded: on this 2-core machine the intra-op thread pool made small
    ops (argsort, gathers) 100× slower under load, and rendering is many small ops."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def render_view(code, R_w2c, t_w2c, K, image_size: int, gaze_head, device: str = "cpu",
                tile: int | None = None, supersample: int = 1) -> dict:
    """Render B views of one subject; see :func:`_render_view` for arguments and outputs.

    ``supersample = n > 1`` renders at ``n*S`` (K scaled, pixel-centre exact) and box-filters the
    image down (anti-aliasing). Masks are then max-pooled (a pixel is in the head / eye mask when
    any of its sub-pixels is), so "non-white ⊂ mask" and "gaze changes ⊂ eye mask" still hold.
    Landmarks are always projected with the given K. Runs single-threaded on CPU.
    """
    n = int(supersample)
    if n < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    K_t = _as_tensor(K).reshape(-1, 3, 3)
    with contextlib.nullcontext() if str(device).startswith("cuda") else single_thread():
        out = _render_view(code, R_w2c, t_w2c, scale_intrinsics(K_t, n) if n > 1 else K_t, image_size * n,
                           gaze_head, device, tile)
        if n == 1:
            return out
        img = torch.from_numpy(out["image"]).float().permute(0, 3, 1, 2)
        out["image"] = (torch.nn.functional.avg_pool2d(img, n) + 0.5).clamp(0, 255).to(torch.uint8) \
            .permute(0, 2, 3, 1).numpy()
        for key in ("mask", "left_eye_mask", "right_eye_mask", "eye_mask"):
            m = torch.from_numpy(out[key]).float().unsqueeze(1)
            out[key] = torch.nn.functional.max_pool2d(m, n).squeeze(1).to(torch.uint8).numpy()
        out["lm2d"] = out["lm2d"] / n
        out["iris2d"] = out["iris2d"] / n
        return out


def _render_view(code, R_w2c, t_w2c, K, image_size: int, gaze_head, device: str = "cpu",
                 tile: int | None = None) -> dict:
    """Render B views of one subject (gaze and lighting fixed per view).

    Args:
        code: (D,) latent code. R_w2c (B, 3, 3), t_w2c (B, 3): head frame → camera. K (B, 3, 3) px.
        image_size: S. gaze_head: (2,) or (B, 2) gaze (pitch, yaw) in the head frame.
    Returns dict of numpy arrays: image (B, S, S, 3) uint8 RGB (white background), mask,
        left_eye_mask, right_eye_mask, eye_mask (B, S, S) uint8 0/255, lm2d (B, 68, 2) float32,
        iris2d (B, 2, 2) float32 [subject's right, left] in pixels.
    """
    return shade_view(prepare_view(code, R_w2c, t_w2c, K, image_size, device, tile), gaze_head)


def prepare_view(code, R_w2c, t_w2c, K, image_size: int, device: str = "cpu", tile: int | None = None) -> dict:
    """Everything of B views of one subject that does not depend on the gaze (no supersampling here).

    Gaze enters the image only through the eyeball albedo (``hm.eyeball_albedo``) of the eyeball
    fragments, so rasterisation, normals, lighting, specular and masks are done once here and
    :func:`shade_view` colours the eyeballs for any gaze (the exact readout shades many gazes).

    Args: as :func:`_render_view` without the gaze.
    Returns a dict of tensors; per foreground pixel (N of them, in ``fg`` order): ``pos`` (N, 3) head-frame
        point, ``is_eye`` (N,) bool eyeball fragment, ``eye_k`` (N,) 0 right / 1 left eyeball,
        ``albedo`` (N, 3) skin albedo, ``shade`` (N,), ``spec`` (N,), ``interior`` (N,) bool; ``fg``
        (B, S, S) bool, ``b_of_pix`` (N,), ``params`` (HeadParams), ``R``, ``t``, ``K``, ``light_rgb`` (3,),
        the masks and ``lm2d`` as in the output of :func:`_render_view`.
    """
    mesh = mesh_for_code(code)
    P = mesh.params
    S = int(image_size)
    R = _as_tensor(R_w2c, device=device).reshape(-1, 3, 3)
    t = _as_tensor(t_w2c, device=device).reshape(-1, 3)
    K = _as_tensor(K, device=device).reshape(-1, 3, 3)
    B = R.shape[0]
    verts = torch.from_numpy(mesh.verts).to(device)
    faces = torch.from_numpy(mesh.faces).to(device)
    normals = torch.from_numpy(mesh.normals).to(device)
    face_part = torch.from_numpy(mesh.face_part).to(device)

    p2f, bary, _ = rasterize_views(verts, faces, R, t, K, S, tile, cull_normals=torch.from_numpy(mesh.cull_normals).to(device))
    fg = p2f[..., 0] >= 0  # (B, S, S)
    b_of_pix = torch.arange(B, device=device).view(B, 1, 1).expand(B, S, S)[fg]  # (N,)
    f = p2f[fg]  # (N, k)
    w = bary[fg]  # (N, k, 3)
    fc = f.clamp(min=0)
    pos = (verts[faces[fc]] * w.unsqueeze(-1)).sum(-2)  # (N, k, 3)
    part = torch.where(f >= 0, face_part[fc], torch.full_like(f, -1))
    is_skin = (part >= 0) & (part <= hm.PART_LEFT_EYE_REGION)
    cut = is_skin & hm.in_eye_opening(pos.reshape(-1, 3), P).view_as(is_skin)
    usable = (f >= 0) & ~cut
    # First usable fragment; if none (rare, grazing views through an opening) take the last one.
    first = torch.where(usable.any(1), usable.float().argmax(1), torch.full_like(f[:, 0], f.shape[1] - 1))
    sel = lambda x: x.gather(1, first.view(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])).squeeze(1)  # noqa: E731
    f1, w1, pos1, part1 = sel(fc), sel(w), sel(pos), sel(part)
    n1 = torch.nn.functional.normalize((normals[faces[f1]] * w1.unsqueeze(-1)).sum(-2), dim=-1)

    cam_c = camera_center(R, t)[b_of_pix]  # (N, 3)
    view = torch.nn.functional.normalize(cam_c - pos1, dim=-1)
    is_eye = part1 >= hm.PART_RIGHT_EYEBALL
    eye_k = (part1 - hm.PART_RIGHT_EYEBALL).clamp(0, 1)
    albedo = hm.skin_albedo(pos1, P)  # eyeball fragments get their (gaze-dependent) albedo in shade_view
    inside_view = (n1 * view).sum(-1) < -0.05
    interior = ~is_eye & (inside_view | ~usable.any(1))
    light = torch.tensor(P.light_dir, dtype=torch.float32, device=device)
    fill = torch.tensor(P.fill_dir, dtype=torch.float32, device=device)
    lam = (n1 @ light).clamp(min=0)
    shade = P.ambient + P.diffuse * lam + P.fill * (n1 @ fill).clamp(min=0)
    half = torch.nn.functional.normalize(light + view, dim=-1)
    nh = (n1 * half).sum(-1).clamp(min=0)
    # The skin branch reads the skin albedo only; eyeball fragments take the first branch.
    spec = torch.where(is_eye, 0.9 * nh ** 120, P.specular * 0.25 * nh ** 16 * (1 - albedo.mean(-1)))
    # Lids cast a soft shadow on the top of the eyeball.
    if is_eye.any():
        _, up, _, _ = hm.eye_almond(pos1[:, 0], pos1[:, 1], P)
        up_k = up.gather(0, eye_k.view(1, -1)).squeeze(0)
        shade = torch.where(is_eye, shade * (0.55 + 0.45 * hm.smoothstep(0.0, 0.03, up_k)), shade)

    # Periocular masks: eyeball pixels and skin in the enlarged eye region, dilated a little.
    region = hm.eye_region_weight(pos1, P)  # (2, N)
    radius = max(2, S // 40)
    eye_masks = []
    for k in range(2):
        m_pix = (is_eye & (eye_k == k)) | (~is_eye & region[k]) | (cut[:, :].any(1) & region[k])
        m = torch.zeros(B, S, S, dtype=torch.bool, device=device)
        m[fg] = m_pix
        eye_masks.append(_dilate(m, radius))
    lm3d = torch.from_numpy(hm.landmarks_3d(P)).float().to(device)
    lm2d = project_points(lm3d.unsqueeze(0).expand(B, -1, -1), R, t, K)
    return {"params": P, "B": B, "S": S, "device": device, "R": R, "t": t, "K": K, "fg": fg, "b_of_pix": b_of_pix,
            "pos": pos1, "is_eye": is_eye, "eye_k": eye_k, "albedo": albedo, "shade": shade, "spec": spec,
            "interior": interior, "light_rgb": torch.tensor(P.light_rgb, dtype=torch.float32, device=device),
            "right_eye_mask": eye_masks[0], "left_eye_mask": eye_masks[1], "lm2d": lm2d}


def shade_eye_pixels(prep: dict, gaze_head: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Linear RGB (before clipping) of eyeball pixels of a prepared view at given gazes.

    Args:
        prep: :func:`prepare_view`'s dict. index: (E,) indices into its foreground pixels, all eyeball
            pixels (default: every eyeball pixel). gaze_head: (E, 2) gaze (pitch, yaw), head frame, one per
            pixel, or (G, E, 2) for G gazes at once.
    Returns:
        (E, 3) or (G, E, 3) float: exactly the values :func:`shade_view` gives those pixels (same op order).
    """
    P = prep["params"]
    if index is None:
        index = torch.nonzero(prep["is_eye"], as_tuple=True)[0]
    lead = gaze_head.shape[:-1]
    pos = prep["pos"][index].expand(*lead, 3).reshape(-1, 3)
    eye_c = torch.tensor(P.eye_centers, dtype=torch.float32, device=pos.device)[prep["eye_k"][index]]
    eye_c = eye_c.expand(*lead, 3).reshape(-1, 3)
    axis = pitch_yaw_to_vector(gaze_head.reshape(-1, 2))
    albedo = hm.eyeball_albedo(pos, eye_c, axis, P).reshape(*lead, 3)
    return albedo * prep["shade"][index].unsqueeze(-1) * prep["light_rgb"] * P.exposure + prep["spec"][index].unsqueeze(-1)


def shade_image(prep: dict, gaze_head) -> torch.Tensor:
    """(B, S, S, 3) float image in [0, 1] (white background) of a :func:`prepare_view` at one gaze per view.

    Args: prep from :func:`prepare_view`; gaze_head (2,) or (B, 2) gaze (pitch, yaw) in the head frame.
    """
    P, B, S, device = prep["params"], prep["B"], prep["S"], prep["device"]
    gaze = _as_tensor(gaze_head, device=device).reshape(-1, 2).expand(B, 2)
    is_eye, b_of_pix = prep["is_eye"], prep["b_of_pix"]
    axis = pitch_yaw_to_vector(gaze)[b_of_pix]  # (N, 3) optical axis, head frame
    eye_c = torch.tensor(P.eye_centers, dtype=torch.float32, device=device)
    albedo = prep["albedo"].clone()
    if is_eye.any():
        pos_e = prep["pos"][is_eye]
        albedo[is_eye] = hm.eyeball_albedo(pos_e, eye_c[prep["eye_k"][is_eye]], axis[is_eye], P)
    rgb = albedo * prep["shade"].unsqueeze(-1) * prep["light_rgb"] * P.exposure + prep["spec"].unsqueeze(-1)
    rgb = torch.where(prep["interior"].unsqueeze(-1), albedo * 0.12, rgb)
    image = torch.ones(B, S, S, 3, device=device)
    image[prep["fg"]] = rgb.clamp(0, 1)
    return image


def shade_view(prep: dict, gaze_head) -> dict:
    """The images of a :func:`prepare_view` at one gaze per view: :func:`_render_view`'s output.

    Args: prep from :func:`prepare_view`; gaze_head (2,) or (B, 2) gaze (pitch, yaw) in the head frame.
    """
    P, B, device = prep["params"], prep["B"], prep["device"]
    gaze = _as_tensor(gaze_head, device=device).reshape(-1, 2).expand(B, 2)
    image_u8 = (shade_image(prep, gaze) * 255.0 + 0.5).to(torch.uint8)
    R, t, K = prep["R"], prep["t"], prep["K"]
    iris3d = hm.iris_centers_3d(P, gaze.cpu()).to(device)  # (B, 2, 3)
    iris2d = project_points(iris3d, R, t, K)
    u8 = lambda m: (m.to(torch.uint8) * 255).cpu().numpy()  # noqa: E731
    return {
        "image": image_u8.cpu().numpy(),
        "mask": u8(prep["fg"]),
        "right_eye_mask": u8(prep["right_eye_mask"]),
        "left_eye_mask": u8(prep["left_eye_mask"]),
        "eye_mask": u8(prep["right_eye_mask"] | prep["left_eye_mask"]),
        "lm2d": prep["lm2d"].cpu().numpy().astype(np.float32),
        "iris2d": iris2d.cpu().numpy().astype(np.float32),
    }


def render(code, camera, gaze, head_pose, image_size: int = 128, device: str = "cpu", supersample: int = 1) -> dict:
    """Ground-truth render of a subject for any gaze: the package's ``render(subject, camera, gaze, head_pose)``.

    Args:
        code: (D,) latent code of the subject.
        camera: rig camera index (``rig.CAMERA_ANGLES_DEG``), int or (B,) ints.
        gaze: (2,) or (B, 2) gaze (pitch, yaw) in the **normalised camera frame** of that view
            (the convention of the ``face_gaze`` labels).
        head_pose: (2,) or (B, 2) head rotation (pitch, yaw) in the rig (``rig.head_rotation``).
        image_size: S. supersample: anti-aliasing factor (use the dataset's, 2 by default there).
    Returns:
        render_view's dict plus face_gaze (B, 2), face_head_pose (B, 2), gaze_head (B, 2),
        cam_R_w2c (B, 3, 3), cam_t_w2c (B, 3), cam_K (B, 3, 3) (float32 numpy).
    """
    cams = np.atleast_1d(np.asarray(camera, dtype=np.int64))
    head = np.asarray(head_pose, dtype=np.float32).reshape(-1, 2)
    gaze_cam = torch.as_tensor(np.asarray(gaze, dtype=np.float32).reshape(-1, 2))
    B = max(len(cams), len(head), len(gaze_cam))
    cams, head = np.broadcast_to(cams, (B,)), np.broadcast_to(head, (B, 2))
    R, t, K = rig.normalized_cameras(cams, head, image_size)
    gaze_head = gaze_in_head_frame(gaze_cam.expand(B, 2), R)
    out = render_view(code, R, t, K, image_size, gaze_head, device=device, supersample=supersample)
    axis = pitch_yaw_to_vector(gaze_head)
    out.update(
        face_gaze=vector_to_pitch_yaw((R @ axis.unsqueeze(-1)).squeeze(-1)).numpy(),
        face_head_pose=head_pose_from_rotation(R).numpy(),
        gaze_head=gaze_head.numpy(), cam_R_w2c=R.numpy(), cam_t_w2c=t.numpy(), cam_K=K.numpy(),
    )
    return out


# Re-exported for callers building cameras by hand.
_ = (intrinsics_matrix, normalized_camera_w2c)
