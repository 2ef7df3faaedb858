"""The README's main job: the event segmentation demo, run as a user runs it (a separate process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")


def run_demo(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "madm_ros.demo", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def test_the_synthetic_demo_leaves_masks_overlays_and_a_summary(ros_domain, tiny_onnx_models, tmp_path):
    from madm_ros.segmenter import Segmenter

    out = tmp_path / "demo_out"
    result = run_demo("--out", out, "--model", tiny_onnx_models["events"], "--seconds", 2.5, "--scene-frames", 4,
                      "--threads", 1, "--max-images", 100)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "synthetic scenes" and summary["message_type"] == "event_packet"
    assert summary["events_in"] > 100_000 and summary["edge_frames"] >= 30  # 20 frames/s of 50 ms slices
    assert summary["masks_out"] >= 10
    assert summary["masks_out"] + summary["dropped_frames"] <= summary["frames_in"] == summary["edge_frames"]
    assert 0 < summary["latency_ms"]["p50"] < 5000 and summary["latency_ms"]["count"] == summary["masks_out"]
    assert 0.0 <= summary["miou"] <= 1.0 and summary["frames_scored"] >= summary["masks_out"] - 2  # windows tile the scenes
    assert set(summary["per_class_iou"]) >= {"road", "car", "sky"}
    assert "mIoU" in result.stdout and str(out / "summary.json") in result.stdout
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == summary["images"]["masks"] == min(100, summary["masks_out"])
    assert len(list((out / "overlays").glob("*.png"))) == len(list((out / "colored").glob("*.png"))) == len(masks)
    segmenter = Segmenter.load(tiny_onnx_models["events"], threads=1)
    for path in masks[:3]:  # each saved mask is the model's mask of the saved edge frame with the same stamp
        edge = cv2.imread(str(out / "edge_frames" / path.name), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert edge.shape == mask.shape == (128, 256)
        assert np.array_equal(mask, segmenter.segment(edge, "mono8").labels)


def test_the_demo_plays_a_real_bag_with_one_flag(ros_domain, tiny_onnx_models, event_bag, tmp_path):
    out = tmp_path / "bag_out"
    result = run_demo("--out", out, "--bag", event_bag, "--model", tiny_onnx_models["events"], "--seconds", 10, "--threads", 1)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == str(event_bag) and summary["miou"] is None
    assert summary["events_in"] == 343_474  # every event of the bag (decode count checked in the event tests)
    assert 38 <= summary["edge_frames"] <= 42  # 2.08 s in 50 ms slices
    mask = cv2.imread(str(next((out / "masks").glob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (480, 640)


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "/nowhere/model.onnx"], "/nowhere/model.onnx"),
    (["--bag", "/nowhere/bag"], "/nowhere/bag"),
    (["--seconds", "0"], "--seconds must be positive"),
])
def test_bad_demo_input_is_one_clear_line_and_exit_2(ros_domain, tmp_path, args, message):
    result = run_demo("--out", tmp_path / "out", "--scene-frames", 1, *args, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
