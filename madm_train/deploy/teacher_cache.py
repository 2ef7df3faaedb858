"""On-disk cache of teacher logits, so the MADM teacher runs once per frame however long the student trains.

Layout: ``<cache>/<teacher key>/<frame key>.npy``, one FP16 K×⌈H/s⌉×⌈W/s⌉ array per frame
(s = ``stride``; 11×128×128 FP16 ≈ 360 KB at 512², what reference/edge.md §7 recommends instead of
full-resolution float maps).

- The teacher key hashes the teacher's ``config.json`` and weights, and names the stride and how
  the logits are computed (``method``, :data:`~madm_train.models.saved.LOGITS_METHOD`): a
  retrained or different teacher, or the same teacher labelling frames another way, gets its own
  folder and can never be served other logits. Folders of older keys are left as they are (delete
  them to free the space; nothing reads them).
- The frame key hashes the network tensor itself (bytes, shape): a changed frame set, resolution
  or preprocessing misses the cache instead of reusing a wrong entry; identical frames share one.
- Entries are written atomically; an unreadable or mis-shaped entry is recomputed, not trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.backends.engine_info import folder_sha256

__all__ = ["TeacherCache"]


class TeacherCache:
    """Teacher logits by frame content.

    Args:
        root: Cache folder (created).
        teacher: Saved teacher folder (hashed into the key; not loaded here).
        num_classes: K, checked on every read.
        stride: Logits are stored at 1/stride of the network size.
        method: How the teacher's logits are computed (a name; another name is another folder).
    """

    def __init__(self, root: str | Path, teacher: str | Path, num_classes: int, stride: int = 4, *,
                 method: str) -> None:
        if not method or not all(c.isalnum() or c in "-_." for c in method):
            raise ValueError(f"method must be a non-empty name of letters, digits, '-', '_' or '.', got {method!r}")
        self.teacher_sha256 = folder_sha256(teacher)
        self.folder = Path(root) / f"{self.teacher_sha256[:16]}-s{stride}-{method}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.num_classes, self.stride = num_classes, stride
        manifest = self.folder / "teacher.json"
        if not manifest.exists():
            record = {"teacher": str(teacher), "teacher_sha256": self.teacher_sha256, "stride": stride,
                      "num_classes": num_classes, "method": method}
            atomic_write_bytes(manifest, json.dumps(record, indent=1).encode())

    @staticmethod
    def frame_key(image: np.ndarray) -> str:
        """Content key of one float32 3×H×W network tensor."""
        return hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()[:32]

    def shape_for(self, image: np.ndarray) -> tuple[int, int, int]:
        """K×⌈H/s⌉×⌈W/s⌉: the shape cached for a 3×H×W frame."""
        height, width = image.shape[-2:]
        return self.num_classes, -(-height // self.stride), -(-width // self.stride)

    def get(self, image: np.ndarray) -> np.ndarray | None:
        """Cached FP16 logits of ``image``, or None (missing, unreadable or of the wrong shape)."""
        path = self.folder / f"{self.frame_key(image)}.npy"
        try:
            logits = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return logits if logits.shape == self.shape_for(image) and logits.dtype == np.float16 else None

    def put(self, image: np.ndarray, logits: Any) -> np.ndarray:
        """Store teacher logits (any K×h×w float array; resized to the cache's size) for ``image``."""
        import torch
        import torch.nn.functional as F

        _, height, width = self.shape_for(image)
        small = F.interpolate(torch.as_tensor(logits)[None].float(), size=(height, width), mode="bilinear",
                              align_corners=False)[0].numpy().astype(np.float16)
        buffer = io.BytesIO()
        np.save(buffer, small, allow_pickle=False)
        atomic_write_bytes(self.folder / f"{self.frame_key(image)}.npy", buffer.getvalue())
        return small
