"""Errors of the face-analysis package (one-line messages, meant to be printed without a traceback)."""

__all__ = ["ImageReadError", "NoFaceError"]


class NoFaceError(ValueError):
    """No face was found. ``str(e) == f"no face found in {name}"``."""

    def __init__(self, name: str = "image"):
        self.name = str(name)
        super().__init__(f"no face found in {self.name}")


class ImageReadError(ValueError):
    """An image file cannot be read. ``str(e) == f"{path}: cannot read image ({why})"`` (one line)."""

    def __init__(self, path, why: str):
        self.path, self.why = str(path), " ".join(str(why).split())
        super().__init__(f"{self.path}: cannot read image ({self.why})")
