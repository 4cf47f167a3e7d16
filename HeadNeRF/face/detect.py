"""Face detection and 478 landmarks (mediapipe FaceMesh with iris refinement), offline.

Design decisions
----------------
* **One FaceMesh per process.** Building the graph costs ~100 ms, so :func:`_face_mesh` keeps one
  instance (static images, ``refine_landmarks=True``, up to ``MAX_FACES`` faces) in a module
  cache, guarded by a lock (a mediapipe graph is not re-entrant); it is closed at exit
  (``atexit``) or by :func:`close`.
* **Several faces**: the largest mesh (bounding-box area) is taken, or ``face_index`` (faces
  sorted by decreasing size); ``num_faces`` records how many were found.
* **Small faces in big photos.** mediapipe's built-in detector is short range: faces below
  ~15 % of the image are missed. When the full image gives nothing (or only faces smaller than
  ``SMALL_FACE`` of the image side, so that others may have been missed), face boxes are searched
  with dlib's HOG detector (upsampled once on a copy at most 1200 px wide) and then OpenCV's Haar
  cascade; the mesh is run on a square crop 2.2x the box around each, resized to 384 px, and
  mapped back to image pixels. The same crop pass refines small faces found by the full-image
  pass (the landmark model sees them at a useful resolution either way, but the detector's
  crop is better centred).
* Coordinates: mediapipe's normalised (x, y) times (W, H) are continuous pixel coordinates with
  pixel centres at +0.5 (docs/conventions.md); z is mediapipe's relative depth times W.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading

import numpy as np

from .errors import FaceIndexError, NoFaceError
from .landmarks68 import iris_from_mesh, landmarks68_from_mesh
from .image_io import to_rgb_uint8

__all__ = ["MAX_FACES", "FaceAnalysis", "analyse_face", "close", "detect_face_boxes"]

MAX_FACES = 6
CROP_SIZE = 384
CROP_SCALE = 2.2
SMALL_FACE = 0.2  # faces below this fraction of the image side also trigger the box-detector pass

_LOCK = threading.Lock()
_MESH = None
_DLIB = None
_HAAR = None


@dataclasses.dataclass
class FaceAnalysis:
    """One face, in pixel coordinates of the analysed image.

    lm478 (478, 3) float32: x, y px and z (mediapipe depth scaled to px); lm68 (68, 2) float32 iBUG;
    iris2d (2, 2) float32 [subject's right (image left), subject's left]; box (4,) x0, y0, x1, y1
    (extent of the mesh); num_faces: faces detected (the largest, or face_index, was taken).
    """

    lm478: np.ndarray
    lm68: np.ndarray
    iris2d: np.ndarray
    box: np.ndarray
    num_faces: int

    @classmethod
    def from_mesh(cls, lm478: np.ndarray, num_faces: int = 1) -> FaceAnalysis:
        lm478 = np.asarray(lm478, dtype=np.float32)
        box = np.concatenate([lm478[:, :2].min(0), lm478[:, :2].max(0)]).astype(np.float32)
        return cls(lm478, landmarks68_from_mesh(lm478), iris_from_mesh(lm478), box, int(num_faces))

    def transformed(self, H: np.ndarray) -> FaceAnalysis:
        """The same face after the image warp ``H`` (3, 3) (continuous pixel coordinates).

        z is scaled by the local zoom of the warp at the face (sqrt of the Jacobian determinant)."""
        H = np.asarray(H, dtype=np.float64)
        xy = apply_homography(H, self.lm478[:, :2])
        c = self.lm478[:, :2].mean(0)
        d = 1e-2
        J = (apply_homography(H, np.array([[c[0] + d, c[1]], [c[0], c[1] + d]])) - apply_homography(H, c[None])) / d
        zoom = float(np.sqrt(abs(np.linalg.det(J))))
        lm = np.concatenate([xy, self.lm478[:, 2:3] * zoom], 1)
        return FaceAnalysis.from_mesh(lm, self.num_faces)


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(3, 3) homography applied to (N, 2) points -> (N, 2) float32."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    q = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ np.asarray(H, dtype=np.float64).T
    return (q[:, :2] / q[:, 2:3]).astype(np.float32)


def _face_mesh():
    global _MESH
    if _MESH is None:
        import mediapipe as mp

        _MESH = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                                max_num_faces=MAX_FACES, min_detection_confidence=0.5)
        atexit.register(close)
    return _MESH


def close() -> None:
    """Release the cached FaceMesh (it is rebuilt on the next call)."""
    global _MESH
    with _LOCK:
        if _MESH is not None:
            try:
                _MESH.close()
            except Exception:
                pass
            _MESH = None


def run_mesh(image_rgb: np.ndarray) -> list[np.ndarray]:
    """All meshes (each (478, 3) float32 px) mediapipe finds in an RGB uint8 image."""
    img = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    H, W = img.shape[:2]
    with _LOCK:
        res = _face_mesh().process(img)
    out = []
    for face in res.multi_face_landmarks or []:
        a = np.array([(p.x * W, p.y * H, p.z * W) for p in face.landmark], dtype=np.float32)
        if a.shape == (478, 3):
            out.append(a)
    return out


def box_area(lm: np.ndarray) -> float:
    span = lm[:, :2].max(0) - lm[:, :2].min(0)
    return float(span[0] * span[1])


def detect_face_boxes(image_rgb: np.ndarray) -> list[np.ndarray]:
    """Face boxes (x0, y0, x1, y1) px, largest first, from dlib HOG (then OpenCV Haar if none)."""
    global _DLIB, _HAAR
    import cv2

    H, W = image_rgb.shape[:2]
    s = min(1.0, 1200.0 / max(H, W))
    small = cv2.resize(image_rgb, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA) if s < 1 else image_rgb
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    boxes = []
    try:
        import dlib

        if _DLIB is None:
            _DLIB = dlib.get_frontal_face_detector()
        up = 1 if max(small.shape[:2]) <= 800 else 0
        dets, scores, _ = _DLIB.run(grey, up, -0.2)
        boxes = [np.array([d.left(), d.top(), d.right() + 1, d.bottom() + 1], np.float32) / s
                 for d, sc in zip(dets, scores)]
    except ImportError:
        pass
    if not boxes:
        if _HAAR is None:
            _HAAR = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        for (x, y, w, h) in _HAAR.detectMultiScale(grey, 1.1, 5, minSize=(24, 24)):
            boxes.append(np.array([x, y, x + w, y + h], np.float32) / s)
    boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    return boxes


def _mesh_in_crop(image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Run the mesh on a square crop around ``box`` (CROP_SCALE x its size) -> (478, 3) px or None."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
    scale = CROP_SIZE / side
    # crop pixel = scale * (image pixel - corner); continuous coordinates, so the cv2 matrix
    # (pixel-index convention) is the same affine map shifted by 0.5 (scale - 1).
    x0, y0 = cx - side / 2, cy - side / 2
    A = np.array([[scale, 0, -scale * x0 + 0.5 * (scale - 1)], [0, scale, -scale * y0 + 0.5 * (scale - 1)]])
    crop = cv2.warpAffine(image_rgb, A, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    meshes = run_mesh(crop)
    if not meshes:
        return None
    # the mesh whose centre is closest to the crop centre
    m = min(meshes, key=lambda a: float(np.sum((a[:, :2].mean(0) - CROP_SIZE / 2) ** 2)))
    out = m.copy()
    out[:, 0] = m[:, 0] / scale + x0
    out[:, 1] = m[:, 1] / scale + y0
    out[:, 2] = m[:, 2] / scale
    return out


def analyse_face(image_rgb: np.ndarray, face_index: int | None = None, name: str = "image") -> FaceAnalysis:
    """Find the face and its landmarks in an (H, W, 3) uint8 RGB image.

    Args:
        image_rgb: (H, W, 3) uint8 RGB (grey, alpha, 16-bit or float arrays are converted as
            ``load_image_rgb`` does). face_index: which face (0 = largest) when there are several;
        None takes the largest. name: used in the NoFaceError message.
    Returns:
        :class:`FaceAnalysis` in pixel coordinates of ``image_rgb``.
    Raises:
        NoFaceError: no face. FaceIndexError: fewer than ``face_index + 1`` faces (names how many).
    """
    img = np.asarray(image_rgb)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 2, 3, 4)) or min(img.shape[:2]) < 1:
        raise ValueError(f"analyse_face expects an (H, W, 3) RGB image, got shape {img.shape}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:  # grey, alpha, 16-bit, float

        img = to_rgb_uint8(img)
    H, W = img.shape[:2]
    meshes = run_mesh(img)
    small = bool(meshes) and max(np.sqrt(box_area(m)) for m in meshes) < SMALL_FACE * min(H, W)
    if not meshes or small or (face_index is not None and face_index >= len(meshes)):
        # Small faces: boxes from a classic detector, then the mesh on a crop around each.
        found = []
        for box in detect_face_boxes(img)[:MAX_FACES]:
            m = _mesh_in_crop(img, box)
            if m is not None and not any(np.abs(m[:, :2].mean(0) - f[:, :2].mean(0)).max() < 0.3 * np.sqrt(box_area(f))
                                         for f in found + meshes):
                found.append(m)
        meshes = meshes + found
    if not meshes:
        raise NoFaceError(name)
    meshes.sort(key=lambda a: -box_area(a))
    k = 0 if face_index is None else int(face_index)
    if k < 0 or k >= len(meshes):
        raise FaceIndexError(name, k, len(meshes))
    lm = meshes[k]
    # A small face found on the full image: redo it on a centred, enlarged crop (better landmarks).
    span = float(max(lm[:, 0].max() - lm[:, 0].min(), lm[:, 1].max() - lm[:, 1].min()))
    if span < 0.25 * CROP_SIZE and max(H, W) > 2 * span * CROP_SCALE:
        box = np.concatenate([lm[:, :2].min(0), lm[:, :2].max(0)])
        refined = _mesh_in_crop(img, box)
        if refined is not None:
            lm = refined
    return FaceAnalysis.from_mesh(lm, num_faces=len(meshes))
