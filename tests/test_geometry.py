"""Cameras and gaze: exact values and round trips."""

import math

import torch

from HeadNeRF.geometry import (
    angular_error_deg,
    camera_center,
    gaze_rotation,
    head_pose_from_rotation,
    intrinsics_matrix,
    look_at_w2c,
    normalized_camera_w2c,
    pitch_yaw_to_vector,
    project_points,
    rotate_pitch_yaw,
    scale_intrinsics,
    vector_to_pitch_yaw,
)


def random_pitch_yaw(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([2.0, 3.0], dtype=torch.float64)


def test_pitch_yaw_known_values():
    v = pitch_yaw_to_vector(torch.tensor([[0.0, 0.0], [math.pi / 2, 0.0], [0.0, math.pi / 2]], dtype=torch.float64))
    expected = torch.tensor([[0, 0, -1], [0, -1, 0], [-1, 0, 0]], dtype=torch.float64)
    assert torch.allclose(v, expected, atol=1e-12)


def test_pitch_yaw_round_trip_and_rotation():
    g = random_pitch_yaw()
    assert torch.allclose(vector_to_pitch_yaw(pitch_yaw_to_vector(g)), g, atol=1e-10)
    R = gaze_rotation(g)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=g.dtype).expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(g), dtype=g.dtype))
    neutral = torch.tensor([0.0, 0.0, -1.0], dtype=g.dtype)
    assert torch.allclose(R @ neutral, pitch_yaw_to_vector(g), atol=1e-12)


def test_rotate_pitch_yaw_inverse_and_angular_error():
    g = random_pitch_yaw()
    R = gaze_rotation(random_pitch_yaw(seed=1))
    there = rotate_pitch_yaw(g, R)
    assert torch.allclose(rotate_pitch_yaw(there, R.transpose(-1, -2)), g, atol=1e-10)
    assert torch.allclose(angular_error_deg(g, g), torch.zeros(len(g), dtype=g.dtype), atol=1e-5)
    a = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, math.radians(10)]], dtype=torch.float64)
    assert torch.allclose(angular_error_deg(a, b), torch.tensor([10.0], dtype=torch.float64))


def test_head_pose_of_frontal_and_turned_camera():
    assert torch.allclose(head_pose_from_rotation(torch.eye(3)[None]), torch.zeros(1, 2))
    # A head turned by yaw about the camera's y axis.
    yaw = 0.4
    R = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])[None]
    assert torch.allclose(head_pose_from_rotation(R), torch.tensor([[0.0, yaw]]), atol=1e-6)


def test_look_at_and_projection():
    center = torch.tensor([[0.0, 0.0, -5.0]])
    R, t = look_at_w2c(center, torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.allclose(R, torch.eye(3)[None], atol=1e-6)
    assert torch.allclose(t, torch.tensor([[0.0, 0.0, 5.0]]))
    assert torch.allclose(camera_center(R, t), center)
    K = intrinsics_matrix(100.0, 64)
    uv = project_points(torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]]]), R, t, K)
    assert torch.allclose(uv, torch.tensor([[[32.0, 32.0], [52.0, 42.0]]]))
    # Resizing the image by 2 scales continuous pixel coordinates by 2 (pixel-centre convention).
    uv2 = project_points(torch.tensor([[[1.0, 0.5, 0.0]]]), R, t, scale_intrinsics(K, 2.0))
    assert torch.allclose(uv2, 2 * uv[:, 1:])


def test_normalized_camera_looks_at_face_without_roll():
    phys = torch.tensor([[3.0, -1.0, -4.0]])
    face = torch.tensor([[0.0, 0.1, -0.5]])
    head_x = torch.tensor([[1.0, 0.0, 0.0]])
    R, t = normalized_camera_w2c(phys, face, head_x, distance=5.0)
    cam_face = R @ face[0] + t[0]
    assert torch.allclose(cam_face, torch.tensor([0.0, 0.0, 5.0]), atol=1e-5)  # face centred at distance 5
    assert abs(float(R[0, 1] @ head_x[0])) < 1e-6  # camera y axis is perpendicular to the head x axis (no roll)
    direction = torch.nn.functional.normalize(face - phys, dim=-1)
    assert torch.allclose(R[0, 2], direction[0], atol=1e-6)


def test_gaze_in_head_frame_undoes_the_camera_rotation():
    from HeadNeRF.geometry.gaze import gaze_in_head_frame, rotate_pitch_yaw
    from pytorch3d.transforms import random_rotations

    torch.manual_seed(3)
    R = random_rotations(5, dtype=torch.float64)
    gaze_head = (torch.rand(5, 2, dtype=torch.float64) - 0.5)
    gaze_cam = rotate_pitch_yaw(gaze_head, R)  # head frame -> camera frame
    assert torch.allclose(gaze_in_head_frame(gaze_cam, R), gaze_head, atol=1e-9)
    assert gaze_in_head_frame(gaze_cam[0], R[0]).shape == (2,)
