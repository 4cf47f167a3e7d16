"""Errors of the face-analysis package (one-line messages, meant to be printed without a traceback)."""

__all__ = ["FaceIndexError", "ImageReadError", "NoFaceError"]


class NoFaceError(ValueError):
    """No face was found. ``str(e) == f"no face found in {name}"``."""

    def __init__(self, name: str = "image"):
        self.name = str(name)
        super().__init__(f"no face found in {self.name}")


class FaceIndexError(ValueError):
    """``face_index`` names a face that is not there (a usage error, not a photo problem)."""

    def __init__(self, name: str, face_index: int, num_faces: int):
        self.name, self.face_index, self.num_faces = str(name), int(face_index), int(num_faces)
        super().__init__(f"--face_index {face_index}: {num_faces} face{'s' if num_faces != 1 else ''} found in "
                         f"{self.name} (valid: 0..{num_faces - 1}, 0 = the largest)")


class ImageReadError(ValueError):
    """An image file cannot be read. ``str(e) == f"{path}: cannot read image ({why})"`` (one line)."""

    def __init__(self, path, why: str):
        self.path, self.why = str(path), " ".join(str(why).split())
        super().__init__(f"{self.path}: cannot read image ({self.why})")
