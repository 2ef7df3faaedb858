"""``python -m madm_train adapt --target-bag BAG --target-topic TOPIC [--target-label-topic TOPIC]`` end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from madm_ros.errors import ConfigError
from madm_ros.folder_layout import FolderMeta, read_image
from madm_ros.image_conversion import array_to_image_fields
from madm_train.cli import _bag_overrides, _parser, main
from madm_train.config import check_data_paths, load_config

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config/train/synthetic_depth_tiny.yaml"
BASE_US = 1_700_000_000_000_000  # a wall-clock-like header stamp, as a recording has
LABELLED = (1, 3, 5)  # frames of the bag that carry a label message


def write_bag(path, frames, *, label_offset_us=500, extra_string_topic=True):
    """A rosbag2 (sqlite3) with /camera/depth (16UC1), /camera/labels (mono8, some frames) and /chatter (String)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, String = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/String"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]

    def image(stamp_us, array, encoding):
        fields = array_to_image_fields(array, encoding)
        fields["data"] = np.frombuffer(fields["data"], np.uint8)
        header = Header(stamp=Time(sec=stamp_us // 1_000_000, nanosec=stamp_us % 1_000_000 * 1000), frame_id="cam")
        return store.serialize_cdr(Image(header=header, **fields), Image.__msgtype__)

    with Writer(path, version=8) as writer:
        depth = writer.add_connection("/camera/depth", Image.__msgtype__, typestore=store)
        labels = writer.add_connection("/camera/labels", Image.__msgtype__, typestore=store)
        if extra_string_topic:
            chatter = writer.add_connection("/chatter", String.__msgtype__, typestore=store)
            writer.write(chatter, BASE_US * 1000, store.serialize_cdr(String(data="hello"), String.__msgtype__))
        for index, frame in enumerate(frames):
            stamp = BASE_US + frame.stamp_us
            writer.write(depth, stamp * 1000, image(stamp, frame.images["depth"], "16UC1"))
            if index in LABELLED:  # a labelling tool's stamp: close to the frame's, not equal
                writer.write(labels, (stamp + label_offset_us) * 1000, image(stamp + label_offset_us, frame.label, "mono8"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A labelled RGB source folder and a depth bag of another street (seed), both 64×128."""
    from madm_ros.synthetic import SynthConfig, generate
    from madm_ros.synthetic.generate import render_sequence

    root = tmp_path_factory.mktemp("bagdata")
    generate(SynthConfig(frames=20, height=64, width=128, seed=3, modalities=("rgb",)), root / "source")
    frames = list(render_sequence(SynthConfig(frames=8, height=64, width=128, seed=11, frames_per_sequence=8,
                                              modalities=("depth",)), 0))
    write_bag(root / "bag", frames)
    return root, frames


def tiny(source, out_dir):
    """The overrides test_self_training uses for a seconds-long CPU run (64×64 crops, 3 iterations)."""
    return ["--set", f"data.source_root={source}", "--set", "data.source_resize_hw=[64, 128]",
            "--set", "data.target_resize_hw=[64, 128]", "--set", "data.crop_hw=[64, 64]", "--set", "data.batch_size=1",
            "--set", "data.rare_class_min_pixels=50", "--set", "optim.max_iter=3", "--set", "method.dplg.end_iter=2",
            "--set", f"run.out_dir={out_dir}", "--set", "run.log_every=1", "--set", "run.eval_every=0",
            "--set", "run.checkpoint_every=0"]


@pytest.mark.slow
def test_adapt_builds_the_target_set_from_the_bag_trains_on_it_and_evaluates_the_labelled_frames(synthetic, tmp_path):
    root, frames = synthetic
    out = tmp_path / "run"
    command = [sys.executable, "-m", "madm_train", "adapt", "--config", str(YAML), "--target-bag", str(root / "bag"),
               "--target-topic", "/camera/depth", "--target-label-topic", "/camera/labels", *tiny(root / "source", out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "target set: 5 frames of /camera/depth" in result.stderr
    assert "evaluation split: 3 frames labelled by /camera/labels" in result.stderr

    cache = out / "bag_target"
    target, test = FolderMeta.read(cache / "target"), FolderMeta.read(cache / "test")
    assert target.generator["config"]["bag"]["path"] == str((root / "bag").resolve())
    assert target.generator["config"]["topic"] == "/camera/depth" and target.modalities == {"depth": "16UC1"}
    assert target.stamps_us == tuple(BASE_US + f.stamp_us for i, f in enumerate(frames) if i not in LABELLED)
    assert test.has_labels and test.stamps_us == tuple(BASE_US + frames[i].stamp_us for i in LABELLED)
    for name, i in zip(test.frames, LABELLED):
        np.testing.assert_array_equal(read_image(cache / "test", "depth", name), frames[i].images["depth"])
        np.testing.assert_array_equal(read_image(cache / "test", "labels", name), frames[i].label)

    saved = json.loads((out / "config.json").read_text())["data"]
    assert saved["target_bag"] == str(root / "bag") and saved["target_label_topic"] == "/camera/labels"
    assert saved["target_root"] == str(cache / "target") and saved["test_root"] == str(cache / "test")
    assert [json.loads(line)["iteration"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    metrics = json.loads((out / "eval-final" / "metrics.json").read_text())
    assert metrics["images"] == len(LABELLED) and metrics["label_set"] == "dsec11"
    assert json.loads((out / "metrics.json").read_text())["images"] == len(LABELLED)
    assert (out / "model" / "model.safetensors").is_file()


def test_the_flags_are_the_config_keys_a_yaml_can_set(synthetic, tmp_path):
    root, _ = synthetic
    args = _parser().parse_args(["adapt", "--config", str(YAML), "--target-bag", str(root / "bag"), "--target-topic",
                                 "/camera/depth", "--target-label-topic", "/camera/labels"])
    run = f"run.out_dir={tmp_path / 'run'}"
    from_flags = load_config(YAML, [run, *_bag_overrides(args)])
    yaml_file = tmp_path / "mine.yaml"
    text = YAML.read_text().replace("data:\n", f"data:\n  target_bag: {root / 'bag'}\n  target_topic: /camera/depth\n"
                                    "  target_label_topic: /camera/labels\n", 1)
    yaml_file.write_text(text)
    assert load_config(yaml_file, [run]) == from_flags
    d, cache = from_flags.data, tmp_path / "run" / "bag_target"
    assert (d.target_kind, d.target_root, d.test_root) == ("folder", str(cache / "target"), str(cache / "test"))
    with pytest.raises(ConfigError, match=f"not extracted into {cache} yet"):
        check_data_paths(from_flags)  # a library caller that skipped prepare_bag_target is told, not misled


def adapt_cli(capsys, *args):
    code = main(["adapt", "--config", str(YAML), *args])
    return code, capsys.readouterr().err


def test_clear_errors_for_bag_topic_and_type(synthetic, tmp_path, capsys):
    root, _ = synthetic
    bag = str(root / "bag")
    out = ["--set", f"run.out_dir={tmp_path / 'run'}"]
    code, err = adapt_cli(capsys, "--target-bag", str(tmp_path / "nope"), "--target-topic", "/camera/depth", *out)
    assert code == 2 and "data.target_bag" in err and "not found (--target-bag)" in err
    code, err = adapt_cli(capsys, "--target-bag", bag, *out)
    assert code == 2 and "data.target_bag needs data.target_topic (--target-topic)" in err
    code, err = adapt_cli(capsys, "--target-bag", bag, "--target-topic", "/camera/dept", *out)
    assert code == 2 and ("has no topic '/camera/dept'; it has: /camera/depth (sensor_msgs/msg/Image), /camera/labels "
                          "(sensor_msgs/msg/Image), /chatter (std_msgs/msg/String)") in err
    code, err = adapt_cli(capsys, "--target-bag", bag, "--target-topic", "/chatter", *out)
    assert code == 2 and "topic '/chatter' is std_msgs/msg/String, not sensor_msgs/msg/Image" in err
    code, err = adapt_cli(capsys, "--target-bag", bag, "--target-topic", "/camera/depth", "--target-label-topic",
                          "/chatter", *out)
    assert code == 2 and "label topic /chatter is std_msgs/msg/String; labels must be sensor_msgs/msg/Image" in err
    code, err = adapt_cli(capsys, "--target-bag", bag, "--target-topic", "/camera/depth", "--target-label-topic",
                          "/camera/labels", "--set", "data.target_label_tolerance_ms=0.1", *out)
    assert code == 2 and "none of the 3 labels on '/camera/labels' lies within 0.1 ms of a frame" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "bag_target").exists()


def test_an_event_topic_needs_the_events_modality(event_bag, tmp_path, capsys):
    code, err = adapt_cli(capsys, "--target-bag", str(event_bag), "--target-topic", "/event_camera/events",
                          "--set", f"run.out_dir={tmp_path}")
    assert code == 2 and "is event_camera_msgs/msg/EventPacket, not sensor_msgs/msg/Image" in err


def test_without_a_label_topic_the_run_says_there_is_no_target_evaluation(synthetic, tmp_path, capsys, monkeypatch):
    import madm_train.training.trainer as trainer

    root, _ = synthetic
    seen = []
    monkeypatch.setattr(trainer, "train", lambda config, progress: seen.append(config) or tmp_path)
    code, err = adapt_cli(capsys, "--target-bag", str(root / "bag"), "--target-topic", "/camera/depth",
                          "--set", f"run.out_dir={tmp_path / 'run'}")
    assert code == 0 and "no label topic (--target-label-topic): no target evaluation" in err
    assert "target set: 8 frames of /camera/depth" in err
    (config,) = seen
    assert config.data.test_root == config.data.target_root == str(tmp_path / "run" / "bag_target" / "target")
