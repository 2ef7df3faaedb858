"""The models a run times: given on the command line, the built-in defaults, else a random-weight student."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any


def export_random_student(folder: Path, modality: str, channels: int, size_hw: tuple[int, int]) -> Path:
    """A random-weight DDRNet student exported as ``python -m madm_train export`` does (like tests/conftest.py)."""
    import torch

    from madm_ros.palettes import get_label_set
    from madm_ros.preprocessing import InputSpec
    from madm_train.deploy.export import ExportOptions, export
    from madm_train.models.student import DDRNetStudent, save_student

    torch.manual_seed(0)
    student = folder / f"{modality}_student"
    save_student(DDRNetStudent(get_label_set("dsec11").num_classes, channels=channels), student, label_set="dsec11",
                 input_spec=InputSpec(modality, *size_hw))
    with open(os.devnull, "w") as quiet:
        report = export(ExportOptions(student=student, out_dir=folder / modality, argmax_stride=1, simplify=False), log=quiet)
    return Path(report["onnx"]["static"])


def resolve_models(args: argparse.Namespace, temp: Path) -> dict[str, dict[str, Any]]:
    """Modality → {path, source, sha256}: --<modality>-model, --model-dir, the built-in defaults, else a random student."""
    from madm_ros.default_models import default_model_path
    from madm_ros.errors import ConfigError

    models = {}
    for modality in ("depth", "events"):
        explicit = getattr(args, f"{modality}_model")
        if explicit:
            path, source = Path(explicit), "--" + modality + "-model"
        elif args.model_dir:
            path, source = Path(args.model_dir) / f"{modality}_student.onnx", "--model-dir"
        else:
            try:
                path, source = default_model_path(modality), "built-in default model"
            except ConfigError:
                size = tuple(int(v) for v in args.fallback_size.split("x"))
                path = export_random_student(temp, modality, args.fallback_channels, size)  # type: ignore[arg-type]
                source = (f"random-weight DDRNet student (no default model found): channels {args.fallback_channels}, "
                          f"{args.fallback_size} input, arg-max stride 1, as scripts/make-default-models exports; "
                          f"speed does not depend on the weights")
        if not path.is_file():
            raise SystemExit(f"node_latency: model {path} not found")
        models[modality] = {"path": str(path), "source": source,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    return models
