"""Photo eye warp (HeadNeRF/eyewarp, issue 16): pixels outside the periocular region untouched, irises moved
the requested way on a real photo, refusals as one line, the synthetic pair evaluation able to say no."""

import json
import math
import os

import numpy as np
import pytest
import torch

from HeadNeRF.eyewarp import RedirectConfig, changed_region, prepare, redirect


@pytest.fixture(scope="module")
def astronaut():
    """skimage's astronaut (a real photo that ships in a package), its face analysis and normalised face."""
    import skimage.data

    from HeadNeRF.face import analyse_and_normalise

    img = skimage.data.astronaut()
    face, analysis = analyse_and_normalise(img, 64)
    return img, face, analysis


def _prepare(img, face, analysis, lm=None, R=None, config=None):
    return prepare(img, analysis.lm478 if lm is None else lm, face.K_image, face.R_image if R is None else R,
                   face.t_image, face.cam_R_w2c, config)


def test_outside_the_periocular_region_is_bit_identical(astronaut):
    img, face, analysis = astronaut
    red = _prepare(img, face, analysis)
    assert red.notes == [] and len(red.usable) == 2
    region = changed_region(img.shape, red)
    assert 0 < region.sum() < 0.02 * region.size  # two small ellipses
    for g in ((0.0, 0.3), (0.2, -0.2), (-0.25, 0.0)):
        out, note = redirect(img, red, np.array(g))
        assert note is None and out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out[~region], img[~region])
        assert np.abs(out[region].astype(int) - img[region]).max() > 40  # the eyes did change


def test_irises_move_the_requested_way_on_a_real_photo(astronaut):
    """mediapipe, run again on the output, finds the iris centres moved as the eye model predicts."""
    from HeadNeRF.eyewarp.eyeball import project
    from HeadNeRF.face import analyse_face
    from HeadNeRF.geometry.gaze import pitch_yaw_to_vector

    img, face, analysis = astronaut
    red = _prepare(img, face, analysis)
    iris0 = analyse_face(img).iris2d
    for g, axis, sign in (((0.0, 0.3), 0, -1), ((0.0, -0.3), 0, +1), ((-0.25, 0.0), 1, +1), ((0.25, 0.0), 1, -1)):
        out, _ = redirect(img, red, np.array(g))
        moved = analyse_face(out).iris2d - iris0  # (2 eyes, xy) px
        g_real = red.R_norm_to_real @ pitch_yaw_to_vector(torch.tensor(g, dtype=torch.float64)).numpy()
        for k, e in enumerate(red.eyes):
            expected = project(np.stack([e.centre + e.radius * g_real, e.centre + e.radius * e.gaze]), red.K)
            expected = expected[0] - expected[1]
            assert np.sign(expected[axis]) == sign  # +yaw = image left, +pitch = up
            assert np.sign(moved[k, axis]) == sign, (g, k, moved[k], expected)
            assert 0.4 * abs(expected[axis]) <= abs(moved[k, axis]) <= 2.0 * abs(expected[axis]) + 0.5, \
                (g, k, moved[k], expected)


def test_refusals_are_one_line_each(astronaut):
    img, face, analysis = astronaut
    lm = analysis.lm478.copy()
    # close the subject's right eye: the upper lid points onto the lower lid
    from HeadNeRF.face.landmarks68 import RIGHT_EYE_CONTOUR

    cont = list(RIGHT_EYE_CONTOUR)
    for up, low in zip(cont[1:8], cont[15:8:-1]):
        lm[up, :2] = lm[low, :2] - [0, 0.3]
    red = _prepare(img, face, analysis, lm=lm)
    assert [e.side for e in red.usable] == ["left"]
    assert any("right eye closed" in n for n in red.notes) and any("only the left eye" in n for n in red.notes)
    assert all("\n" not in n for n in red.notes)
    out, note = redirect(img, red, np.array([0.0, 0.3]))
    assert note is None
    right_box = (slice(int(lm[cont, 1].min()) - 3, int(lm[cont, 1].max()) + 4),
                 slice(int(lm[cont, 0].min()) - 3, int(lm[cont, 0].max()) + 4))
    assert np.array_equal(out[right_box], img[right_box])  # the refused eye is untouched

    # profile: the head turned 80 deg away -> both eyes hidden by the test's rotation, nothing written
    c, s = math.cos(math.radians(80)), math.sin(math.radians(80))
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ face.R_image
    red = _prepare(img, face, analysis, R=R)
    assert not red.usable and any("not visible" in n for n in red.notes)
    assert redirect(img, red, np.array([0.0, 0.0]))[0] is None

    # too small: the eyes shrunk to 4 px
    lm_small = analysis.lm478.copy()
    centre = lm_small[:, :2].mean(0)
    lm_small[:, :2] = centre + (lm_small[:, :2] - centre) * 0.2
    red = _prepare(img, face, analysis, lm=lm_small)
    assert not red.usable and all("too small" in n for n in red.notes[:2])

    # beyond the supported range: refused with a note, no image
    red = _prepare(img, face, analysis)
    out, note = redirect(img, red, np.array([0.9, 0.0]), label="far")
    assert out is None and "beyond" in note and "far" in note
    with pytest.raises(ValueError, match="anatomy"):
        RedirectConfig(anatomy="cat")


def test_photo_outputs_and_named_target(astronaut, tmp_path, capsys):
    import imageio.v2 as imageio

    from HeadNeRF.eyewarp.outputs import write_photo_redirection
    from HeadNeRF.fitting import parse_gaze_targets

    targets = parse_gaze_targets("camera; 0.1,-0.2 ;0.9,0")
    assert torch.equal(targets, torch.tensor([[0.0, 0.0], [0.1, -0.2], [0.9, 0.0]]))
    img, face, analysis = astronaut
    files, report = write_photo_redirection(str(tmp_path), img, analysis, face, targets.numpy(), mp4=False)
    assert "redirected/camera.png" in files and "redirected/gaze_p+0.10_y-0.20.png" in files
    assert not any("0.90" in f for f in files)  # beyond range: no image
    assert len(report["notes"]) == 1 and "beyond" in report["notes"][0]
    assert "[photo] target gaze_p+0.90_y+0.00" in capsys.readouterr().err
    assert imageio.imread(tmp_path / "redirected" / "camera.png").shape == img.shape  # original size
    assert len(imageio.mimread(tmp_path / "photo_gaze_sweep.gif")) >= 16
    assert imageio.imread(tmp_path / "photo_strip.png").shape[1] > 2 * imageio.imread(tmp_path / "photo_strip.png").shape[0]
    json.dumps(report)  # fit.json-ready


def test_synthetic_pair_warp_keeps_the_outside_and_copy_is_the_reference(tiny_dataset):
    """A 256 px pair of the tiny dataset's test subject: the warp leaves the outside untouched, the copy's eye PSNR is
    finite and the target against itself is perfect, so the metric can tell them apart."""
    from HeadNeRF.evaluation.photo_warp import eye_psnr, make_pairs, warp_pair

    with open(os.path.join(tiny_dataset, "split.json")) as f:
        assert json.load(f)["test_subjects"]
    pairs = make_pairs(tiny_dataset, 256, rows=[0], deltas_deg=[15.0], directions=1)
    assert len(pairs) == 1 and 14.0 < pairs[0].delta_deg < 16.0
    p = pairs[0]
    out, note, region = warp_pair(p)
    copy = eye_psnr(p.image_in, p.image_target, p.eye_mask)
    assert math.isfinite(copy) and eye_psnr(p.image_target, p.image_target, p.eye_mask) > copy + 30
    if out is not None:
        assert np.array_equal(out[~region], p.image_in[~region])
    else:
        assert note and "\n" not in note


def test_an_unexpected_failure_is_one_note_and_no_files(astronaut, tmp_path, capsys):
    from HeadNeRF.eyewarp.outputs import write_photo_redirection

    img, face, analysis = astronaut
    files, report = write_photo_redirection(str(tmp_path), img[..., :2], analysis, face, np.zeros((0, 2)), mp4=False)
    assert files == [] and len(report["notes"]) == 1 and report["notes"][0].startswith("photo redirection failed")
    assert capsys.readouterr().err.count("[photo] ") == 1


def test_small_eyes_are_fitted_on_an_upsampled_view_with_the_same_camera():
    """The analysis view of 10 px eyes: upsampled 4x around the contours, and a 3-D point projects onto the
    same image content in the view as in the photo (so fitted axes need no conversion)."""
    import cv2

    from HeadNeRF.eyewarp.eyeball import _analysis_view, _grey, project

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)  # smooth, so bicubic and bilinear agree closely
    contours = [np.array([[20.0, 30.0], [30.0, 30.0]]), np.array([[36.0, 31.0], [46.0, 31.0]])]
    K = np.array([[80.0, 0, 32.0], [0, 80.0, 32.0], [0, 0, 1]])
    grey, views, K_view = _analysis_view(image, contours, K, eye_width_px=10.0, analysis_width_px=32.0)
    f = views[0][1, 0] - views[0][0, 0]
    assert f == pytest.approx(40.0)  # 4x: ceil(32 / 10)
    assert grey.shape[0] < 4 * 64 and grey.shape[1] < 4 * 64  # a crop, not the whole photo
    X = np.array([[-0.5, -0.1, 4.0], [0.9, 0.05, 4.0]])
    uv, uv_view = project(X, K), project(X, K_view)
    for (u, v), (uu, vv) in zip(uv, uv_view):
        a, b = _grey(image)[int(v), int(u)], grey[int(vv), int(uu)]
        assert abs(a - b) < 8, (a, b)
    same, views1, K1 = _analysis_view(image, contours, K, eye_width_px=40.0, analysis_width_px=32.0)
    assert same.shape == image.shape[:2] and np.array_equal(K1, K)  # wide eyes: the photo itself


def _synthetic_view(size: int, gazes, seed: int = 3, head_pose=(0.08, -0.12)):
    """A random (non-mean) synthetic subject seen by the frontal rig camera at ``gazes`` (head frame, exact renders)."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.data.synthetic import rig
    from HeadNeRF.data.synthetic.render import render_view

    code = hm.sample_code(np.random.default_rng(seed))
    R, t, K = (x[0].numpy().astype(np.float64) for x in rig.normalized_cameras(np.array([0]), np.array([head_pose]), size))
    n = len(gazes)
    ren = render_view(code, np.repeat(R[None], n, 0), np.repeat(t[None], n, 0), np.repeat(K[None], n, 0), size,
                      np.asarray(gazes, np.float32), supersample=2)
    return code, R, t, K, ren["image"]


def _axis(pitch_yaw) -> np.ndarray:
    """(2,) pitch/yaw (rad) -> (3,) unit axis (``geometry.gaze.pitch_yaw_to_vector``)."""
    from HeadNeRF.geometry.gaze import pitch_yaw_to_vector

    return pitch_yaw_to_vector(torch.tensor(np.asarray(pitch_yaw, np.float64))).numpy()


def _angle_deg(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return math.degrees(math.acos(float(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_head_model_eye_fit_reads_the_current_gaze_and_the_eye_placement():
    """On exact renders of a subject whose eyes sit elsewhere than the mean head's, the head-model fit (given the
    true pose) reads the gaze labels within 4 deg (3 deg on average) and finds the subject's eyeball-centre offset."""
    from HeadNeRF.data.synthetic import head_model as hm
    from HeadNeRF.eyewarp.model_eye import fit_eye_model, mean_eyes

    gazes = [(0.2, -0.3), (-0.25, 0.2), (0.0, 0.05)]
    code, R, t, K, images = _synthetic_view(128, gazes)
    true_offset = hm.eyeball_centers(hm.decode(code)) - mean_eyes().centres
    errors = []
    for g, img in zip(gazes, images):
        fit = fit_eye_model(img, R, t, K)
        assert fit is not None and fit.sides == (0, 1)
        errors.append(_angle_deg(fit.gaze_head, _axis(g)))
        assert np.abs(fit.delta[:, :2] - true_offset[:, :2]).max() < 0.01, (fit.delta, true_offset)
        assert np.allclose(fit.gaze_cam, R @ fit.gaze_head)
    assert max(errors) < 4.0 and np.mean(errors) < 3.0, errors


def test_head_model_redirection_reads_near_the_requested_gaze():
    """The whole synthetic path (mediapipe + PnP, ``anatomy="head_model"``, the warp) on a 128 px exact render: the
    exact readout reads the output within 4 deg of a request 12 deg away (the unchanged input reads 12 deg off)."""
    from HeadNeRF.evaluation.photo_warp import analyse_synthetic
    from HeadNeRF.evaluation.readout import GazeReadout
    from HeadNeRF.geometry.gaze import vector_to_pitch_yaw

    g_in, g_out = np.array([0.1, -0.15]), np.array([0.1 - 0.12, -0.15 + 0.16])
    code, R, t, K, images = _synthetic_view(128, [g_in])
    img = images[0]
    lm, R_pnp, t_pnp = analyse_synthetic(img, K)
    red = prepare(img, lm, K, R_pnp, t_pnp, R_pnp, RedirectConfig(anatomy="head_model"))
    assert len(red.usable) == 2
    a_in, a_out = (_axis(g) for g in (g_in, g_out))
    assert _angle_deg(R.T @ red.usable[0].gaze, a_in) < 5.0  # current gaze, through the PnP pose
    assert all(e.catchlight is not None for e in red.usable)
    request = vector_to_pitch_yaw(torch.tensor(R @ a_out)).numpy()  # camera frame = the image's normalised frame
    out, note = redirect(img, red, request)
    assert out is not None, note
    region = changed_region(img.shape, red)
    assert np.array_equal(out[~region], img[~region])
    reader = GazeReadout(code, R, t, K, 128, supersample=2)
    read = reader.read(out)["gaze_head"].numpy()
    copy = reader.read(img)["gaze_head"].numpy()
    requested = _angle_deg(a_in, a_out)
    assert 11.0 < requested < 13.0
    assert _angle_deg(_axis(read), a_out) < 4.0
    assert abs(_angle_deg(_axis(copy), a_out) - requested) < 1.0


def test_the_catchlight_sits_where_the_sphere_mirrors_the_light_into_the_camera():
    """warp._catchlight (the highlight the warp keeps in place): brightest where the sphere's normal is halfway
    between the light and the camera, nothing outside the lid opening, scaled by the fitted colour."""
    from HeadNeRF.eyewarp.eyeball import HEAD_MODEL, Eyeball, project
    from HeadNeRF.eyewarp.warp import _catchlight

    K = np.array([[400.0, 0, 64.0], [0, 400.0, 64.0], [0, 0, 1]])
    centre, radius = np.array([2.0, -1.0, 400.0]), 6.0  # pixel units: 1 unit = 1 px at the eye's depth
    light = np.array([0.4, -0.5, -0.77])
    light /= np.linalg.norm(light)
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    c2 = project(centre[None], K)[0]
    contour = (c2 + np.c_[9.0 * np.cos(ang), -4.5 * np.sin(ang)]).astype(np.float32)  # 0..8: the upper lid
    eye = Eyeball("right", contour, centre, radius, np.array([0.0, 0.0, -1.0]), HEAD_MODEL.iris_angle, 18.0, 9.0,
                  HEAD_MODEL, catchlight=(light, np.array([200.0, 210.0, 220.0])))
    spec = _catchlight(eye, (50, 50, 80, 80), K)
    assert spec.shape == (30, 30, 3) and spec.max() > 50
    y, x = np.unravel_index(int(np.argmax(spec[..., 0])), spec.shape[:2])
    half = light - centre / np.linalg.norm(centre)
    expected = project((centre + radius * half / np.linalg.norm(half))[None], K)[0] - [50, 50]
    assert np.hypot(x + 0.5 - expected[0], y + 0.5 - expected[1]) < 1.0
    np.testing.assert_allclose(spec[y, x] / spec[y, x, 0], [1.0, 1.05, 1.1], rtol=1e-5)
    eye.contour = (c2 + 0.2 * (contour - c2)).astype(np.float32)  # a slit that misses the highlight
    assert _catchlight(eye, (50, 50, 80, 80), K)[y, x].max() == 0.0



def test_layout_camera_is_the_rigs_normalised_camera():
    """layout_camera(head pose) reproduces the synthetic rig's normalised extrinsics for any rig camera, head pose
    and image size (the head pose alone fixes them); a wrong shape is a one-line error."""
    from HeadNeRF.data.synthetic import rig
    from HeadNeRF.evaluation.photo_warp import layout_camera
    from HeadNeRF.geometry.gaze import head_pose_from_rotation

    rng = np.random.default_rng(0)
    for cam, size in ((0, 64), (3, 256), (6, 96)):
        pose = rng.uniform(-0.3, 0.3, (1, 2))
        R, t, _ = (x[0].numpy().astype(np.float64) for x in rig.normalized_cameras(np.array([cam]), pose, size))
        R_out, t_out = layout_camera(head_pose_from_rotation(torch.tensor(R)))
        assert np.allclose(R_out, R, atol=1e-5) and np.allclose(t_out, t, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        layout_camera(torch.zeros(3))


def test_estimator_head_pose_is_the_layout_camera_of_its_reading():
    """estimator_head_pose resizes to the estimator's input size and returns the layout camera of the head pose
    the estimator reads from that resized image."""
    import cv2

    from HeadNeRF.estimator.model import GazeEstimator, estimate
    from HeadNeRF.evaluation.photo_warp import estimator_head_pose, layout_camera

    torch.manual_seed(0)
    model = GazeEstimator(18, 32, "standard").eval()
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    R, t = estimator_head_pose(model, img)
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
    hp = estimate(model, torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255)["head_pose"][0].double()
    R_ref, t_ref = layout_camera(hp)
    assert np.allclose(R, R_ref, atol=1e-9) and np.allclose(t, t_ref, atol=1e-9)
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and abs(np.linalg.det(R) - 1) < 1e-9


def test_synthetic_analysis_takes_the_head_pose_it_is_given(tiny_dataset):
    """analyse_synthetic(head_pose=...) uses that pose instead of the landmark PnP (the same landmarks either way),
    and evaluate_pairs asks it once per source view and warps with it beside the PnP warp."""
    from HeadNeRF.evaluation.photo_warp import analyse_synthetic, evaluate_pairs, make_pairs

    pairs = make_pairs(tiny_dataset, 128, rows=[0], deltas_deg=[10.0, 15.0], directions=1)
    assert len(pairs) == 2
    p = pairs[0]
    lm_pnp, R_pnp, _ = analyse_synthetic(p.image_in, p.K)
    lm, R, t = analyse_synthetic(p.image_in, p.K, head_pose=lambda image: (p.R, p.t))
    assert R is p.R and t is p.t and np.array_equal(lm, lm_pnp)
    assert not np.allclose(R_pnp, p.R, atol=1e-3)  # the PnP pose is another one, so the switch is visible
    calls = []

    def pose(image):
        calls.append(image)
        return p.R, p.t

    rows = evaluate_pairs(pairs, {}, readout=False, warps={"warp": None, "warp_given_pose": pose})
    assert len(calls) == 1 and np.array_equal(calls[0], p.image_in)
    for name in ("warp", "warp_given_pose"):
        warp = [r for r in rows if r["method"] == name]
        assert len(warp) == 2 and all(not r["refused"] and r["outside_identical"] for r in warp)
    assert [r["method"] for r in rows].count("copy") == 2  # one copy reference per pair, shared by the warps


def _current_gaze_request(red) -> np.ndarray:
    """The normalised-frame (pitch, yaw) of the eyes' mean current gaze: a request that asks for no change."""
    from HeadNeRF.geometry.gaze import vector_to_pitch_yaw

    g = np.mean([e.gaze for e in red.usable], 0)
    return vector_to_pitch_yaw(torch.tensor(red.R_norm_to_real.T @ (g / np.linalg.norm(g)))).numpy()


def test_asking_for_the_current_gaze_gives_back_the_input(astronaut):
    """No rotation, no change: the periocular region comes back within 35 dB PSNR of the input on a real photo and
    on synthetic views (before the revealed-sclera fill was measured against each pixel's own visibility, the
    lid margins were repainted with sclera: 24-28 dB)."""
    from HeadNeRF.evaluation.photo_warp import analyse_synthetic, eye_psnr

    img, face, analysis = astronaut
    views = [(img, _prepare(img, face, analysis))]
    for gaze in ((0.1, -0.15), (-0.4, 0.5)):
        code, R, t, K, images = _synthetic_view(96, [gaze])
        lm, _, _ = analyse_synthetic(images[0], K, head_pose=lambda image: (R, t))
        views.append((images[0], prepare(images[0], lm, K, R, t, R, RedirectConfig(anatomy="head_model"))))
    for image, red in views:
        assert len(red.usable) == 2
        out, note = redirect(image, red, _current_gaze_request(red))
        assert note is None
        assert eye_psnr(out, image, changed_region(image.shape, red)) > 35.0
