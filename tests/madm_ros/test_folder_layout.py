import json

import cv2
import numpy as np
import pytest

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, InputError
from madm_ros.folder_layout import (
    META_FILE,
    FolderMeta,
    frame_name,
    parse_frame_name,
    read_image,
    write_image,
)


def small_meta(**overrides):
    values = dict(
        frames=("s000_f00000", "s000_f00001"),
        modalities={"depth": "16UC1", "events": "mono8"},
        has_labels=True,
        label_set="dsec11",
        events={"width": 8, "height": 4, "window_us": 50_000, "contribution": 0.25},
        stamps_us=(50_000, 250_000),
        camera={"fx": 5.0, "fy": 5.0, "cx": 3.5, "cy": 1.5, "width": 8, "height": 4},
        notes={"depth": "mm"},
    )
    values.update(overrides)
    return FolderMeta(**values)


def test_frame_names_round_trip_and_malformed_names_are_refused():
    assert frame_name(3, 42) == "s003_f00042"
    assert parse_frame_name("s003_f00042") == (3, 42)
    with pytest.raises(InputError, match="s3_f42"):
        parse_frame_name("s3_f42")
    with pytest.raises(ConfigError, match="1000"):
        frame_name(1000, 0)


def test_meta_round_trips_through_json_and_fills_in_the_class_names(tmp_path):
    meta = small_meta()
    assert meta.class_names[5] == "road"
    meta.write(tmp_path)
    again = FolderMeta.read(tmp_path)
    assert again == meta
    assert FolderMeta.from_dict(json.loads((tmp_path / META_FILE).read_text())) == meta
    assert again.edge_frame_config().window_us == 50_000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modalities": {"sonar": "mono8"}}, "sonar"),
        ({"modalities": {"depth": "32FC1"}}, "16UC1"),
        ({"events": None}, "events"),
        ({"class_names": ("a", "b")}, "differ"),
        ({"label_set": None}, "label_set"),
        ({"stamps_us": (1,)}, "1 stamps for 2 frames"),
        ({"frames": ("s000_f00000", "s000_f00000"), "stamps_us": None}, "twice"),
    ],
)
def test_inconsistent_meta_is_refused_with_a_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_meta(**overrides)


def test_unknown_meta_keys_are_an_error_not_ignored():
    values = small_meta().to_dict()
    values["colour_space"] = "srgb"
    with pytest.raises(ConfigError, match="colour_space"):
        FolderMeta.from_dict(values)


def test_a_folder_without_meta_json_is_reported_as_incomplete(tmp_path):
    with pytest.raises(InputError, match="not a complete"):
        FolderMeta.read(tmp_path)


def test_images_round_trip_unchanged_and_rgb_is_stored_as_bgr(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        "rgb": rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
        "depth": rng.integers(0, 65536, (4, 6), dtype=np.uint16),
        "thermal": rng.integers(0, 65536, (4, 6), dtype=np.uint16),
        "events": rng.integers(0, 256, (4, 6), dtype=np.uint8),
        "labels": rng.integers(0, 256, (4, 6), dtype=np.uint8),
    }
    for folder, image in images.items():
        path = write_image(tmp_path, folder, "s001_f00002", image)
        assert path == tmp_path / folder / "s001_f00002.png"
        np.testing.assert_array_equal(read_image(tmp_path, folder, "s001_f00002"), image)
    on_disk = cv2.imread(str(tmp_path / "rgb" / "s001_f00002.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(on_disk, images["rgb"][:, :, ::-1])


def test_a_wrong_image_type_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="uint16"):
        write_image(tmp_path, "depth", "s000_f00000", np.zeros((4, 6), np.float32))
    with pytest.raises(ConfigError, match="sonar"):
        write_image(tmp_path, "sonar", "s000_f00000", np.zeros((4, 6), np.uint8))
    assert not (tmp_path / "depth").exists() or not any((tmp_path / "depth").iterdir())


def test_atomic_writes_leave_no_temporary_files_even_when_interrupted(tmp_path, monkeypatch):
    atomic_write_bytes(tmp_path / "a.bin", b"one")
    atomic_write_bytes(tmp_path / "a.bin", b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644  # readable like any other output

    def fail(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr("madm_ros.atomic_io.os.replace", fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "a.bin", b"three")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert (tmp_path / "a.bin").read_bytes() == b"two"
