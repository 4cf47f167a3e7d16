"""Face analysis (HeadNeRF.face): image reading, detection, 478->68 mapping, masks, PnP,
normalisation and the latent-code fit, checked against the synthetic generator's exact labels."""

import numpy as np
import pytest
import torch

from HeadNeRF.face import (
    ImageReadError,
    NoFaceError,
    analyse_face,
    default_intrinsics,
    face_masks,
    head_pose_pnp,
    load_image_rgb,
    normalise_face,
)
from HeadNeRF.face.accuracy import landmark_error_pct, mask_iou, rotation_error_deg

S = 224


@pytest.fixture(scope="module")
def renders():
    """Three synthetic normalised views (frontal, turned left, turned right) of one subject."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.data.synthetic import render

    code = hm.sample_code(np.random.default_rng(3))
    out = render(code, [0, 1, 2], np.zeros(2), np.array([0.05, -0.1]), S, supersample=1)
    return code, out


@pytest.fixture(scope="module")
def analyses(renders):
    _, out = renders
    return [analyse_face(out["image"][b], name=f"render{b}") for b in range(3)]


# ------------------------------------------------------------------ image reading


def test_load_image_variants(tmp_path):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    g = load_image_rgb(tmp_path / "grey.png")
    assert g.shape == (20, 30, 3) and g.dtype == np.uint8 and (g[..., 0] == rgb[..., 0]).all() and (g[..., 2] == g[..., 0]).all()
    rgba = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], 2)
    rgba[:10, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    a = load_image_rgb(tmp_path / "rgba.png")
    assert (a[:10] == rgb[:10]).all() and (a[10:] == 255).all()  # transparent -> white
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    b = load_image_rgb(tmp_path / "grey16.png")
    assert b.dtype == np.uint8 and np.abs(b[..., 0].astype(int) - rgb[..., 1]).max() <= 1
    # EXIF orientation 6 (rotate 90 deg clockwise for display): stored 20x30 -> shown 30x20
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    r = load_image_rgb(tmp_path / "rot.jpg")
    assert r.shape == (30, 20, 3)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageReadError) as e:
        load_image_rgb(tmp_path / "bad.jpg")
    assert "bad.jpg: cannot read image (" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError):
        load_image_rgb(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="no such file"):
        load_image_rgb(tmp_path / "missing.png")


# ------------------------------------------------------------------ detection and landmarks


def test_no_face():
    with pytest.raises(NoFaceError) as e:
        analyse_face(np.full((240, 320, 3), 255, np.uint8), name="blank.png")
    assert str(e.value) == "no face found in blank.png"
    with pytest.raises(NoFaceError):  # a greyscale array is accepted (converted), still no face
        analyse_face(np.zeros((60, 80), np.uint16), name="grey")


def test_real_photo_astronaut():
    """skimage's astronaut: a real ~91 px face in a 512 px photo."""
    from skimage import data

    img = data.astronaut()
    a = analyse_face(img)
    lm = a.lm68
    eyes_y = lm[36:48, 1].mean()
    assert eyes_y < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]  # eyes above nose tip above mouth above chin
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # subject's right eye on the image left
    for k, eye in enumerate((lm[36:42], lm[42:48])):  # iris centre inside its eye's box
        lo, hi = eye.min(0), eye.max(0)
        assert (a.iris2d[k] > lo - 2).all() and (a.iris2d[k] < hi + 2).all()
    iod = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    assert 30 < iod < 60 and 170 < a.box[0] < 200 and a.num_faces >= 1
    m = face_masks(img, a)
    assert m["mask"][int(lm[30, 1]), int(lm[30, 0])] == 255 and m["mask"][500, 10] == 0
    assert m["right_eye_mask"][int(a.iris2d[0, 1]), int(a.iris2d[0, 0])] == 255


def test_mapping_and_iris_on_synthetic(renders, analyses):
    _, out = renders
    for b, a in enumerate(analyses):
        err = landmark_error_pct(a.lm68, out["lm2d"][b])
        assert err < 12.0, (b, err)
        assert a.iris2d[0, 0] < a.iris2d[1, 0]  # [subject's right (image left), left]
        assert np.abs(a.iris2d - out["iris2d"][b]).max() < 0.25 * np.linalg.norm(out["iris2d"][b][0] - out["iris2d"][b][1])


def test_masks_on_synthetic(renders, analyses):
    _, out = renders
    for b, a in enumerate(analyses):
        m = face_masks(out["image"][b], a, K=out["cam_K"][b], patch_size=S)
        assert mask_iou(m["mask"], out["mask"][b]) > 0.85
        assert mask_iou(m["eye_mask"], out["eye_mask"][b]) > 0.4
        # eye masks: the right one is on the image left
        assert np.nonzero(m["right_eye_mask"])[1].mean() < np.nonzero(m["left_eye_mask"])[1].mean()


def test_pnp_rotation_on_synthetic(renders, analyses):
    _, out = renders
    errs, errs68 = [], []
    for b, a in enumerate(analyses):
        R, t = head_pose_pnp(a.lm68, out["cam_K"][b], lm478=a.lm478)  # dense PnP (the default path)
        errs.append(rotation_error_deg(R, out["cam_R_w2c"][b]))
        assert abs(np.linalg.norm(t) - np.linalg.norm(out["cam_t_w2c"][b])) < 0.6
        R68, _ = head_pose_pnp(a.lm68, out["cam_K"][b])  # 68 points against landmarks_3d
        errs68.append(rotation_error_deg(R68, out["cam_R_w2c"][b]))
    assert np.median(errs) < 6.0 and np.median(errs68) < 10.0, (errs, errs68)


def test_default_intrinsics():
    K = default_intrinsics(480, 640)
    assert K[0, 2] == 320 and K[1, 2] == 240 and K[0, 0] == K[1, 1] and 600 < K[0, 0] < 800


# ------------------------------------------------------------------ normalisation


def test_normalise_photo_matches_normalised_view(renders):
    """A 'photo' from a physical camera (other focal, face off-centre, rolled) normalised into the
    training framing matches the synthetic normalised view of the same head and camera."""
    from HeadNeRF.data.synthetic import rig
    from HeadNeRF.data.synthetic.head_model import FACE_CENTER
    from HeadNeRF.data.synthetic.render import render_view
    from HeadNeRF.geometry.cameras import look_at_w2c

    code, out = renders
    b = 1
    Rn, tn = torch.as_tensor(out["cam_R_w2c"][b:b + 1]), torch.as_tensor(out["cam_t_w2c"][b:b + 1])
    centre = -(Rn.transpose(1, 2) @ tn[..., None])[..., 0]
    fc = torch.tensor([FACE_CENTER])
    centre = fc + (centre - fc) * (rig.PHYSICAL_DISTANCE / rig.NORMALIZED_DISTANCE)  # physical camera
    roll = torch.tensor([[np.cos(0.2), np.sin(0.2), 0.0]], dtype=torch.float32)
    R, t = look_at_w2c(centre, fc + torch.tensor([[0.3, -0.2, 0.0]]), roll)
    P = 320
    K = torch.tensor([[[900.0, 0, P / 2], [0, 900.0, P / 2], [0, 0, 1]]])
    photo = render_view(code, R, t, K, P, torch.as_tensor(out["gaze_head"][b:b + 1]))["image"][0]
    a = analyse_face(photo)
    nf = normalise_face(photo, a, K[0].numpy(), S)
    assert nf.face_patch.shape == (S, S, 3) and nf.mask.shape == (S, S) and nf.lm2d.shape == (68, 2)
    # same framing: the normalised camera matches the rig's, landmarks and masks agree
    assert rotation_error_deg(nf.cam_R_w2c, out["cam_R_w2c"][b]) < 8.0
    assert landmark_error_pct(nf.lm2d, out["lm2d"][b]) < 25.0  # a 5 deg pose error shifts the patch ~5 px
    assert mask_iou(nf.mask, out["mask"][b]) > 0.8
    # the warp maps the photo's landmarks onto the patch's
    from HeadNeRF.face.detect import apply_homography

    assert np.allclose(apply_homography(nf.warp, a.lm68), nf.lm2d, atol=0.05)


def test_warp_pixel_centre_convention():
    """A pure zoom by 2 about the image centre maps pixel centres exactly (cv2's -0.5 shift)."""
    import cv2

    from HeadNeRF.face.normalise import warp_for_cv2

    img = np.zeros((8, 8), np.uint8)
    img[2, 5] = 255  # pixel centre (5.5, 2.5)
    W = np.array([[2.0, 0, -4.0], [0, 2.0, -4.0], [0, 0, 1]])  # continuous: u' = 2u - 4 (centre 4 -> 4)
    out = cv2.warpPerspective(img, warp_for_cv2(W), (8, 8), flags=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(out)
    # source pixel (5, 2) covers [5, 6) x [2, 3) -> [6, 8) x [0, 2)
    assert set(xs) == {6, 7} and set(ys) == {0, 1}


# ------------------------------------------------------------------ latent fit


def _faces_from_renders(out, lm2d):
    from HeadNeRF.face.normalise import NormalisedFace

    return [NormalisedFace(
        face_patch=out["image"][b], mask=out["mask"][b], eye_mask=out["eye_mask"][b],
        left_eye_mask=out["left_eye_mask"][b], right_eye_mask=out["right_eye_mask"][b], lm2d=lm2d[b],
        iris2d=out["iris2d"][b], cam_R_w2c=out["cam_R_w2c"][b], cam_t_w2c=out["cam_t_w2c"][b], cam_K=out["cam_K"][b],
        face_head_pose=out["face_head_pose"][b], warp=np.eye(3)) for b in range(len(lm2d))]


def test_fit_latent_codes(renders, analyses):
    """On exact landmarks the shape fit must explain them (and move identity towards the truth);
    on mediapipe's landmarks it must still lower the reprojection error; the colour fit must
    move the skin tone towards the truth."""
    from HeadNeRF.face.latent_fit import FitOptions, fit_latent_codes, landmark_error

    code, out = renders
    R, t, K = out["cam_R_w2c"], out["cam_t_w2c"], out["cam_K"]
    faces = _faces_from_renders(out, out["lm2d"])
    codes, (_, _, rms) = fit_latent_codes(faces, options=FitOptions(appearance_iters=1, appearance_rows=1),
                                            return_cameras=True)
    assert codes.shape == (3, 43) and codes.dtype == np.float32 and np.isfinite(codes).all()
    assert np.allclose(codes[:, :16], codes[0, :16])  # identity shared
    before = landmark_error(np.zeros((3, 22)), R, t, K, out["lm2d"])
    assert rms.mean() < 0.4 * before.mean(), (rms, before)
    assert np.abs(codes[0, :16] - code[:16]).mean() < np.abs(code[:16]).mean()
    assert abs(codes[0, 22] - code[22]) < abs(code[22]) + 0.2, (codes[0, 22], code[22])  # skin tone
    lm_mp = np.stack([a.lm68 for a in analyses])
    _, (_, _, rms_mp) = fit_latent_codes(_faces_from_renders(out, lm_mp), options=FitOptions(fit_appearance=False),
                                         return_cameras=True)
    assert rms_mp.mean() < landmark_error(np.zeros((3, 22)), R, t, K, lm_mp).mean()


def test_appearance_renderer_matches_render_view():
    """The fast re-shading used by the colour fit reproduces the synthetic renderer exactly."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.data.synthetic import render
    from HeadNeRF.data.synthetic.render import render_view
    from HeadNeRF.face.latent_fit import AppearanceRenderer

    rng = np.random.default_rng(5)
    code = hm.sample_code(rng)
    out = render(code, [0, 2], np.zeros(2), np.zeros(2), 48)
    model = AppearanceRenderer(code, out["cam_R_w2c"], out["cam_t_w2c"], out["cam_K"], 48, out["gaze_head"])
    other = code.copy()
    other[22:] = hm.sample_code(rng)[22:]
    ref = render_view(other, out["cam_R_w2c"], out["cam_t_w2c"], out["cam_K"], 48, out["gaze_head"])["image"]
    assert np.abs(model.images(other) * 255 - ref).max() < 0.01


def test_mesh_calibration_is_in_the_head_frame():
    """The packaged dense model points lie on the synthetic head with the right sides."""
    from HeadNeRF.face.pose import mesh_model_points

    C, sel = mesh_model_points()
    assert C.shape == (478, 3) and np.isfinite(C).all() and 200 < len(sel) <= 468
    assert C[33, 0] < -0.2 < 0.2 < C[263, 0]  # subject's right eye corner at x < 0
    assert C[1, 2] < C[33, 2] and C[1, 2] < -0.8  # nose tip in front of the eyes (face towards -z)
    assert C[10, 1] < C[33, 1] < C[1, 1] < C[152, 1]  # forehead, eyes, nose, chin from top to bottom
