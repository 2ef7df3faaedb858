"""PyTorch backend: runs any saved model folder (student or teacher) through the same graph that is exported.

Used where neither an engine nor an ONNX file exists yet (straight after ``distill``), to check
exports against, and for the MADM teacher itself. ``half=True`` runs FP16 on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import BackendOutput, ModelMetadata, check_batch, require
from madm_ros.errors import BackendError, ConfigError
from madm_ros.preprocessing import InputSpec

__all__ = ["PyTorchBackend", "load_graph"]


def load_graph(path: str | Path, *, argmax_stride: int | None = None) -> tuple[Any, ModelMetadata]:
    """The :class:`~madm_train.deploy.graph.SegmentationGraph` (eval, CPU) of any saved model folder, and its metadata.

    Loaded through :func:`madm_train.models.saved.load_saved`. ``argmax_stride`` applies to models
    with strided logits (default :data:`~madm_train.deploy.graph.DEFAULT_ARGMAX_STRIDE`, as ``export``).
    Students carry their label set and input spec; a teacher folder carries neither, so its
    metadata says ``unknown`` label set and an RGB spec of its input size (the caller knows the task).
    """
    from madm_train.deploy.graph import DEFAULT_ARGMAX_STRIDE, SegmentationGraph
    from madm_train.models.saved import load_saved

    try:
        loaded = load_saved(path)
    except ConfigError as error:
        raise BackendError(str(error)) from None
    stride = min(argmax_stride or DEFAULT_ARGMAX_STRIDE, loaded.logits_stride)
    size = loaded.input_size or 512
    spec = loaded.input_spec or InputSpec("rgb", size, size)
    metadata = ModelMetadata(loaded.label_set or "unknown", spec, loaded.logits_stride, stride)
    graph = SegmentationGraph(loaded.network, logits_stride=loaded.logits_stride, argmax_stride=stride).eval()
    return graph, metadata


class PyTorchBackend:
    """Eager PyTorch on the CPU or a CUDA device."""

    def __init__(self, graph: Any, path: Path, metadata: ModelMetadata, device: str, half: bool, threads: int) -> None:
        self.graph, self.path, self.metadata = graph, path, metadata
        self.device, self.half, self.threads = device, half, threads

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", half: bool = False, threads: int = 0) -> PyTorchBackend:
        """Load the folder ``path`` onto ``device`` (``auto``: CUDA if available); ``half`` needs CUDA.

        ``threads`` > 0 sets ``torch.set_num_threads`` (process-wide: PyTorch has no per-model setting).
        """
        torch = require("torch", "pip install torch")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but no CUDA device is available")
        if half and not device.startswith("cuda"):
            raise BackendError("half precision runs on CUDA only; use half=False on the CPU")
        if threads > 0:
            torch.set_num_threads(threads)
        graph, metadata = load_graph(path)
        graph = graph.to(device)
        if half:
            graph = graph.half()
        return cls(graph, Path(path), metadata, device, half, threads)

    def infer(self, images: np.ndarray) -> BackendOutput:
        """See :meth:`madm_ros.backends.Backend.infer`."""
        import torch

        x = torch.from_numpy(check_batch(images)).to(self.device)
        with torch.inference_mode():
            labels, logits = self.graph(x.half() if self.half else x)
        return BackendOutput(labels.cpu().numpy(), logits.float().cpu().numpy())

    def describe(self) -> dict[str, Any]:
        """See :meth:`madm_ros.backends.Backend.describe`."""
        return {"backend": "pytorch", "path": str(self.path), "device": self.device,
                "precision": "fp16" if self.half else "fp32", "threads": self.threads, "label_set": self.metadata.label_set}
