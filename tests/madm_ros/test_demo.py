"""The README's main job: the event segmentation demo, run as a user runs it (a separate process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")


def run_demo(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "madm_ros.demo", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def read_rgb(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def read_grey_as_rgb(path):
    return np.repeat(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, None], 3, axis=2)


def colors_of(image):
    return set(map(tuple, image.reshape(-1, 3).tolist()))


def ids_of(colored, label_set):
    """colorize inverted: each class colour → its id, black (unlabelled) → 255; any other colour fails."""
    packed = colored.astype(np.int64) @ np.array([65536, 256, 1])
    ids = np.full(packed.shape, 255, np.uint8)
    for class_id, (r, g, b) in enumerate(label_set.colors):
        ids[packed == r * 65536 + g * 256 + b] = class_id
    assert np.all((ids != 255) | (packed == 0)), "a colour that is neither a class colour nor black"
    return ids


def panel_columns(panel, height, width):
    """The three images of a side-by-side panel, cut out at the documented offsets."""
    from madm_ros.eval_plots import PANEL_GAP, PANEL_TITLE_HEIGHT

    rows = slice(PANEL_TITLE_HEIGHT, PANEL_TITLE_HEIGHT + height)
    return [panel[rows, i * (width + PANEL_GAP): i * (width + PANEL_GAP) + width] for i in range(3)]


def assert_panel_shape(panel, height, width, label_set):
    from madm_ros.eval_plots import PANEL_GAP, PANEL_TITLE_HEIGHT, legend_height

    panel_width = 3 * width + 2 * PANEL_GAP
    assert panel.shape == (PANEL_TITLE_HEIGHT + height + legend_height(label_set.class_names, panel_width), panel_width, 3)


def assert_animation_shows(path, panels):
    """The GIF has one frame per panel, in order, each the panel (palette quantisation allowed)."""
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.n_frames == len(panels) and gif.is_animated
        for index in (0, len(panels) - 1):
            gif.seek(index)
            frame = np.asarray(gif.convert("RGB"), dtype=np.int16)
            assert frame.shape == panels[index].shape and np.abs(frame - panels[index]).mean() < 1.0


def test_the_synthetic_demo_leaves_masks_overlays_and_a_summary(ros_domain, tiny_onnx_models, tmp_path):
    from madm_ros.segmenter import Segmenter

    out = tmp_path / "demo_out"
    for name in ("masks/123.png", "panels/123.png", "edge_frames/123.png", "demo.gif", "masks/notes.txt", "mine.png"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"from before")  # an earlier demo's results, and the user's own files
    (out / "summary.json").write_text(json.dumps({"edge_frames": 1, "masks_out": 1, "images": {}}))  # the earlier demo's
    data = tmp_path / "dataset"  # a folder of someone's data, no demo summary: never touched
    (data / "masks").mkdir(parents=True)
    (data / "masks" / "000123.png").write_bytes(b"label")
    result = run_demo("--out", out, "--model", tiny_onnx_models["events"], "--seconds", 2.5, "--scene-frames", 4,
                      "--threads", 1, "--max-images", 100)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any((out / name).exists() for name in ("masks/123.png", "panels/123.png", "edge_frames/123.png"))
    assert (out / "masks/notes.txt").read_bytes() == (out / "mine.png").read_bytes() == b"from before"
    assert "replaced the earlier demo's results" in result.stderr
    from madm_ros.demo import _remove_earlier_results

    assert _remove_earlier_results(data) == 0 and (data / "masks" / "000123.png").read_bytes() == b"label"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "synthetic varied scenes, 192x256 event camera"  # no card: DEFAULT_SCENES
    assert summary["message_type"] == "event_packet"
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
        assert edge.shape == mask.shape == (192, 256)
        assert np.array_equal(mask, segmenter.segment(edge, "mono8").labels)
    assert_scores_relate(summary)
    assert_synthetic_panels(out, summary)


def assert_scores_relate(summary):
    """miou: every class in the ground truth or the prediction; miou_present: the ground truth's only."""
    iou, present = summary["per_class_iou"], summary["classes_present"]
    assert set(present) >= {"road", "car", "sky"}
    defined = {name: value for name, value in iou.items() if value is not None}
    assert set(present) <= set(defined)
    assert all(defined[name] == 0.0 for name in set(defined) - set(present))  # predicted, never shown: IoU 0
    assert summary["miou"] == pytest.approx(np.mean(list(defined.values())))
    assert summary["miou_present"] == pytest.approx(np.mean([iou[name] for name in present]))
    assert summary["miou_present"] >= summary["miou"]


def assert_synthetic_panels(out, summary):
    """Panels: edge frame | the node's colour mask | the label the score used, for every scored frame here."""
    from madm_ros.demo import ANIMATION_MAX_FRAMES, DEFAULT_SCENES
    from madm_ros.eval_plots import PANEL_TITLE_HEIGHT
    from madm_ros.metrics import ConfusionMatrix
    from madm_ros.palettes import DSEC_11

    height, width = DEFAULT_SCENES[0]  # the test's model has no card
    paths = sorted((out / "panels").glob("*.png"))
    assert summary["panels"] == len(paths) == min(100, summary["frames_scored"])
    panels = [read_rgb(path) for path in paths]
    matrix = ConfusionMatrix(DSEC_11.num_classes)
    for path, panel in zip(paths, panels):
        assert_panel_shape(panel, height, width, DSEC_11)
        edge, colored, truth = panel_columns(panel, height, width)
        assert np.array_equal(edge, read_grey_as_rgb(out / "edge_frames" / path.name))
        assert np.array_equal(colored, read_rgb(out / "colored" / path.name))  # same palette as the node's
        legend = panel[PANEL_TITLE_HEIGHT + height:]
        assert (colors_of(colored) | colors_of(truth)) - {(0, 0, 0)} <= colors_of(legend)
        matrix.update(cv2.imread(str(out / "masks" / path.name), cv2.IMREAD_UNCHANGED), ids_of(truth, DSEC_11))
    assert matrix.as_dict(DSEC_11.class_names)["miou"] == pytest.approx(summary["miou"])  # the score's own pairs
    assert summary["animation"] == "demo.gif"
    assert_animation_shows(out / "demo.gif", panels[:ANIMATION_MAX_FRAMES])


def test_the_summary_scores_absent_classes_only_in_miou():
    from madm_ros.demo import _score
    from madm_ros.palettes import DSEC_11

    def mask(nanosec, ids):
        ids = np.asarray(ids, np.uint8)
        return 0.0, SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=nanosec)),
                                    encoding="mono8", height=ids.shape[0], width=ids.shape[1], step=ids.shape[1],
                                    is_bigendian=False, data=ids.tobytes())

    sky, building, fence = 0, 1, 2
    masks = [mask(5, [[sky, fence], [building, building]]), mask(9, [[fence, fence], [fence, fence]])]
    labels = {5: np.array([[sky, sky], [building, building]], np.uint8)}  # the second mask is not scored
    scores = _score(masks, labels, DSEC_11)
    assert scores["classes_present"] == ["sky", "building"] and scores["frames_scored"] == 1
    assert scores["per_class_iou"]["fence"] == 0.0 and scores["per_class_iou"]["car"] is None
    assert scores["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # fence, predicted but absent, counts
    assert scores["miou_present"] == pytest.approx((0.5 + 1.0) / 2)


def test_the_demo_plays_a_real_bag_with_one_flag(ros_domain, tiny_onnx_models, event_bag, tmp_path):
    from madm_ros.palettes import DSEC_11

    out = tmp_path / "bag_out"
    result = run_demo("--out", out, "--bag", event_bag, "--model", tiny_onnx_models["events"], "--seconds", 10, "--threads", 1,
                      "--max-images", 4)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == str(event_bag) and summary["miou"] is None
    assert summary["events_in"] == 343_474  # every event of the bag (decode count checked in the event tests)
    assert 38 <= summary["edge_frames"] <= 42  # 2.08 s in 50 ms slices
    mask = cv2.imread(str(next((out / "masks").glob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (480, 640)
    paths = sorted((out / "panels").glob("*.png"))
    assert summary["panels"] == len(paths) == 4 and summary["animation"] == "demo.gif"
    panels = [read_rgb(path) for path in paths]
    assert_panel_shape(panels[0], 480, 640, DSEC_11)
    edge, colored, overlay = panel_columns(panels[0], 480, 640)  # no labels: edge frame | mask | overlay
    assert np.array_equal(edge, read_grey_as_rgb(out / "edge_frames" / paths[0].name))
    assert np.array_equal(colored, read_rgb(out / "colored" / paths[0].name))
    assert np.array_equal(overlay, read_rgb(out / "overlays" / paths[0].name))
    assert_animation_shows(out / "demo.gif", panels)


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "/nowhere/model.onnx"], "/nowhere/model.onnx"),
    (["--bag", "/nowhere/bag"], "/nowhere/bag"),
    (["--seconds", "0"], "--seconds must be positive"),
])
def test_bad_demo_input_is_one_clear_line_and_exit_2(ros_domain, tmp_path, args, message):
    result = run_demo("--out", tmp_path / "out", "--scene-frames", 1, *args, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_demo_renders_the_scenes_and_sensor_size_of_the_models_card(tmp_path):
    from madm_ros.demo import DEFAULT_SCENES, scene_settings

    model = tmp_path / "events_student.onnx"
    model.write_bytes(b"")  # only the card beside it is read
    assert scene_settings(str(model)) == DEFAULT_SCENES  # no card
    card = model.with_suffix(".json")
    card.write_text(json.dumps({"data": {"generate_hw": [480, 640], "scenes": "street"}}))
    assert scene_settings(str(model)) == ((480, 640), "street")
    card.write_text(json.dumps({"data": {"generate_hw": [480]}}))  # a broken card is no card
    assert scene_settings(str(model)) == DEFAULT_SCENES
    card.write_text("{not json")
    assert scene_settings(str(model)) == DEFAULT_SCENES
