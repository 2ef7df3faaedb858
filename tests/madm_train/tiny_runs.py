"""Helpers of the end-to-end training tests: tiny-run overrides and what a finished run folder holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def tiny_overrides(folder: Path, out_dir: Path, **extra: Any) -> list[str]:
    """``--set`` values for a 4-iteration run on 64×64 crops of the synthetic folder, checkpoints every 2."""
    return [
        f"data.source_root={folder}", f"data.target_root={folder}", "data.source_resize_hw=[64, 128]",
        "data.target_resize_hw=[64, 128]", "data.crop_hw=[64, 64]", "data.batch_size=1", "data.rare_class_min_pixels=50",
        "optim.max_iter=4", f"run.out_dir={out_dir}", "run.log_every=1", "run.eval_every=0",
        "run.checkpoint_every=2", "run.checkpoints_total_limit=3",
    ] + [f"{k}={v}" for k, v in extra.items()]


def weights(run_dir: Path) -> dict[str, Any]:
    """The saved model's tensors."""
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


def log_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The run's log.jsonl records."""
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def distil_and_export(teacher: Path, yaml: Path, folder: Path, out: Path) -> dict[str, Any]:
    """``distill`` a saved teacher into a tiny student (2 iterations) and ``export`` it; returns distill.json.

    Asserts both commands exit 0 and an ONNX file is written; the caller checks what is particular to its teacher.
    """
    from madm_train.cli import main

    config = out / "teacher.yaml"
    config.write_text(yaml.read_text())
    code = main(["distill", "--teacher", str(teacher), "--config", str(config), "--set",
                 *tiny_overrides(folder, out / "unused"), "--out", str(out / "distil"),
                 "--iterations", "2", "--device", "cpu", "--channels", "8"])
    assert code == 0
    code = main(["export", "--student", str(out / "distil" / "student"), "--out", str(out / "export"),
                 "--size", "64x64", "--frames", "2"])
    assert code == 0 and list((out / "export").glob("*.onnx"))
    return json.loads((out / "distil" / "distill.json").read_text())
