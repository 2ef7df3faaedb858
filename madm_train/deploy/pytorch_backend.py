"""PyTorch backend: runs a saved student or MADM teacher folder through the same graph that is exported.

Used where neither an engine nor an ONNX file exists yet (straight after ``distill``), to check
exports against, and for the MADM teacher itself. ``half=True`` runs FP16 on CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import BackendOutput, ModelMetadata, check_batch, require
from madm_ros.errors import BackendError, ConfigError
from madm_ros.preprocessing import InputSpec

__all__ = ["PyTorchBackend", "load_graph"]


def load_graph(path: str | Path, *, argmax_stride: int | None = None) -> tuple[Any, ModelMetadata]:
    """The :class:`~madm_train.deploy.graph.SegmentationGraph` (eval, CPU) of a saved student or MADM folder, and its metadata.

    ``argmax_stride`` applies to students (default :data:`~madm_train.deploy.graph.DEFAULT_ARGMAX_STRIDE`, as ``export``).

    Students carry their label set and input spec; a MADM teacher folder carries neither, so its
    metadata says ``unknown`` label set and an RGB spec of its logits size (the caller knows the task).
    """
    from madm_train.deploy.graph import DEFAULT_ARGMAX_STRIDE, SegmentationGraph
    from madm_train.models.student import OUTPUT_STRIDE, STUDENT_FORMAT, load_student

    path = Path(path)
    try:
        found = json.loads((path / "config.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError) as error:
        raise BackendError(f"{path} is not a saved model folder (config.json: {error})") from None
    try:
        if found == STUDENT_FORMAT:
            model, config = load_student(path)
            stride = argmax_stride or DEFAULT_ARGMAX_STRIDE
            metadata = ModelMetadata(config["label_set"], InputSpec.from_dict(config["input_spec"]), OUTPUT_STRIDE, stride)
            return SegmentationGraph(model, logits_stride=OUTPUT_STRIDE, argmax_stride=stride).eval(), metadata
        from madm_train.models.madm_model import MadmModel

        teacher = MadmModel.load(path).eval()
    except ConfigError as error:
        raise BackendError(str(error)) from None
    size = teacher.backbone.input_size or 512
    metadata = ModelMetadata("unknown", InputSpec("rgb", size, size), 1, 1)
    return SegmentationGraph(teacher, logits_stride=1, argmax_stride=1).eval(), metadata


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
