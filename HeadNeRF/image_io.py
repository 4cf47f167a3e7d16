"""Output frames and their files: captioned uint8 frames, PNGs and looping animations, written atomically.

Used by the photo fit (``fitting``) and the photo eye warp (``eyewarp``). Reading photos is
``face.image_io``'s job; this module only writes.

Floor module: imports numpy, torch and ``atomic_io``; cv2 and imageio are loaded inside the
functions that need them (heavy optional dependencies, not needed to import the package).
"""

import numpy as np
import torch

from .atomic_io import atomic_write

__all__ = ["FRAME_SIZE", "label", "to_frame", "write_animation", "write_png"]

FRAME_SIZE = 256  # output frames are upscaled to this (pixel-exact nearest neighbour when S divides it)


def to_frame(image: torch.Tensor, size: int = FRAME_SIZE) -> np.ndarray:
    """(3, S, S) [0, 1] -> (size, size, 3) uint8, nearest-neighbour upscaled (pixels stay visible, pupils too)."""
    import cv2  # heavy optional dependency: loaded when a frame is made

    arr = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    if arr.shape[0] == size:
        return arr
    interp = cv2.INTER_NEAREST if size % arr.shape[0] == 0 else cv2.INTER_CUBIC
    return cv2.resize(arr, (size, size), interpolation=interp)


def label(frame: np.ndarray, text: str) -> np.ndarray:
    """A small caption at the bottom of a frame (white box, black text)."""
    import cv2  # heavy optional dependency: loaded when a frame is captioned

    frame = frame.copy()
    h = frame.shape[0]
    cv2.rectangle(frame, (0, h - 16), (frame.shape[1], h), (255, 255, 255), -1)
    cv2.putText(frame, text, (3, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return frame


def write_png(path: str, rgb: np.ndarray) -> None:
    """``rgb`` (H, W, 3) uint8 as a PNG, atomically."""
    import imageio.v2 as imageio  # optional dependency: loaded when a file is written

    atomic_write(path, lambda p: imageio.imwrite(p, rgb, format="png"))


def write_animation(stem: str, frames: list, fps: float = 8.0, mp4: bool = True) -> list:
    """``stem.gif`` (looping) and, with ``mp4``, ``stem.mp4`` (H.264 via imageio-ffmpeg). Returns the paths."""
    import imageio.v2 as imageio  # optional dependency: loaded when a file is written

    paths = [stem + ".gif"]
    atomic_write(paths[0], lambda p: imageio.mimsave(p, frames, format="gif", duration=1000.0 / fps, loop=0))
    if mp4:
        paths.append(stem + ".mp4")

        def write_mp4(p):
            with imageio.get_writer(p, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                    pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error") as w:
                for fr in frames:
                    w.append_data(fr)

        atomic_write(paths[1], write_mp4)
    return paths
