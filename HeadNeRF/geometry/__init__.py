"""Camera and gaze geometry (pure tensor functions; conventions in docs/conventions.md).

Owns: ``cameras`` (intrinsics, world->camera, camera centres, projection, the normalised camera)
and ``gaze`` (pitch/yaw <-> vectors and rotations, the camera -> head frame change
``gaze_in_head_frame``, angular errors). The bottom floor: imports nothing of the package.
"""

from .cameras import (  # noqa: F401
    MM_PER_HEAD_UNIT,
    cam2world,
    camera_center,
    intrinsics_matrix,
    look_at_w2c,
    normalized_camera_w2c,
    project_points,
    scale_intrinsics,
)
from .gaze import (  # noqa: F401
    gaze_in_head_frame,
    angular_error_deg,
    gaze_rotation,
    head_pose_from_rotation,
    pitch_yaw_to_vector,
    rotate_pitch_yaw,
    vector_to_pitch_yaw,
)
