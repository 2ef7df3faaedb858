"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Data goes to a temporary file in the destination folder, is flushed to disk, gets ordinary
permissions (``mkstemp`` creates 0600) and is renamed over the destination in one step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_png"]


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically; the folder must exist."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_png(path: Path | str, image: np.ndarray) -> Path:
    """Write an H×W (grey, uint8/uint16) or H×W×3 RGB image as PNG, atomically.

    Raises:
        InputError: the folder does not exist or OpenCV cannot encode the image.
    """
    import cv2

    from madm_ros.errors import InputError

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    pixels = image[:, :, ::-1] if image.ndim == 3 else image  # OpenCV writes BGR
    ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise InputError(f"{path}: OpenCV could not encode a PNG of shape {image.shape} {image.dtype}")
    return atomic_write_bytes(path, data.tobytes())
