import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest

from madm_ros.errors import ConfigError
from madm_ros.folder_layout import MODALITY_ENCODINGS, THERMAL_COUNTS_PER_KELVIN, FolderMeta, read_image
from madm_ros.palettes import DSEC_11
from madm_ros.synthetic import SynthConfig, generate
from madm_ros.synthetic.generate import frame_time_us, sequence_scene, sequence_sensors
from madm_ros.synthetic.render import render
from madm_train.cli import main

SMALL = SynthConfig(frames=8, height=64, width=128, seed=5, frames_per_sequence=4)
CLASS = {name: index for index, name in enumerate(DSEC_11.class_names)}


# Seed 24 draws a curved street by day and a junction at night: the varied paths of the renderer.
VARIED = dataclasses.replace(SMALL, seed=24, scenes="varied")


@pytest.fixture(scope="module", params=[SMALL, VARIED], ids=["street", "varied"])
def config(request):
    """The small config in each scene set: labels must align with every modality in both."""
    return request.param


@pytest.fixture(scope="module")
def small(config, tmp_path_factory):
    return generate(config, tmp_path_factory.mktemp("synth") / config.scenes)


@pytest.fixture(scope="module")
def frames(small):
    meta = FolderMeta.read(small)
    return {
        name: {folder: read_image(small, folder, name) for folder in (*MODALITY_ENCODINGS, "labels")}
        for name in meta.frames
    }


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def boundaries(labels, width=1):
    """Pixels within ``width`` of a label change."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    return cv2.dilate(edge.astype(np.uint8), np.ones((2 * width - 1, 2 * width - 1), np.uint8)).astype(bool)


def test_the_same_seed_gives_byte_identical_files(config, small, tmp_path):
    again = generate(config, tmp_path / "again")
    assert files(again) == files(small)


def test_a_different_seed_gives_different_streets(small, tmp_path):
    config = SynthConfig(frames=2, height=64, width=128, seed=6, frames_per_sequence=4)
    other = generate(config, tmp_path / "other")
    for name in FolderMeta.read(other).frames:
        assert not np.array_equal(read_image(other, "labels", name), read_image(small, "labels", name))


def test_meta_lists_every_frame_and_round_trips(config, small):
    meta = FolderMeta.read(small)
    assert meta.frames == tuple(f"s{s:03d}_f{f:05d}" for s in range(2) for f in range(4))
    assert meta.stamps_us == (50_000, 250_000, 450_000, 650_000) * 2
    assert meta.modalities == MODALITY_ENCODINGS
    assert meta.label_set == "dsec11" and meta.class_names == DSEC_11.class_names
    assert meta.generator["config"]["seed"] == config.seed
    assert meta.edge_frame_config() == SMALL.edge_frame_config()
    assert FolderMeta.from_dict(meta.to_dict()) == meta
    for folder in (*MODALITY_ENCODINGS, "labels"):
        assert sorted(p.stem for p in (small / folder).iterdir()) == list(meta.frames)


def test_no_temporary_or_marker_files_are_left(small):
    assert [p.name for p in small.rglob(".*")] == []


def test_every_modality_has_the_labels_size_and_its_encoding(frames):
    dtypes = {
        "rgb": (np.uint8, 3),
        "depth": (np.uint16, 2),
        "thermal": (np.uint16, 2),
        "events": (np.uint8, 2),
        "labels": (np.uint8, 2),
    }
    for images in frames.values():
        for folder, image in images.items():
            assert image.shape[:2] == (64, 128), folder
            assert (image.dtype, image.ndim) == dtypes[folder], folder
        assert images["labels"].max() < 11  # every pixel has a class, none is ignore


def test_every_class_appears_with_sensible_pixel_fractions(config, frames):
    labels = np.stack([images["labels"] for images in frames.values()])
    fractions = np.bincount(labels.ravel(), minlength=11) / labels.size
    # two varied sequences need not show every class (an open area has no buildings): most, not all
    assert (fractions > 0).sum() >= (11 if config.scenes == "street" else 8), dict(zip(DSEC_11.class_names,
                                                                                        fractions.round(4)))
    assert fractions[CLASS["road"]] > 0.1 and fractions[CLASS["sky"]] > 0.03
    assert fractions[CLASS["pole"]] < 0.05 and fractions[CLASS["traffic sign"]] < 0.02


def test_depth_jumps_where_persons_and_cars_meet_their_background(frames):
    across, inside = [], []
    for images in frames.values():
        depth, labels = images["depth"].astype(np.float64), images["labels"]
        for a, b, la, lb in (
            (depth[:, 1:], depth[:, :-1], labels[:, 1:], labels[:, :-1]),
            (depth[1:], depth[:-1], labels[1:], labels[:-1]),
        ):
            valid = (a > 0) & (b > 0)
            step = np.abs(np.log(a + 1) - np.log(b + 1))
            object_edge = (
                (la != lb)
                & np.isin(la, [CLASS["person"], CLASS["car"]])
                & ~np.isin(lb, [CLASS["person"], CLASS["car"]])
            )
            across.append(step[valid & object_edge])
            inside.append(step[valid & (la == lb)])
    across, inside = np.concatenate(across), np.concatenate(inside)
    assert len(across) > 50
    assert np.median(across) > 5 * np.median(inside)


def test_rgb_edges_sit_on_label_boundaries(frames):
    near, far = [], []
    for images in frames.values():
        grey = cv2.cvtColor(images["rgb"], cv2.COLOR_RGB2GRAY).astype(np.float32)
        gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        edge = boundaries(images["labels"])
        near.append(gradient[edge].mean())
        far.append(gradient[~edge].mean())
    assert np.mean(near) > 2 * np.mean(far)


def test_events_fire_at_moving_label_boundaries_rather_than_uniformly(config, frames):
    near, far, flat = [], [], []
    for images in frames.values():
        fired = images["events"] > 0
        labels = images["labels"]
        edge = boundaries(labels, width=2)
        near.append(fired[edge].mean())
        far.append(fired[~edge].mean())
        flat.append(fired[~edge & np.isin(labels, [CLASS["sky"], CLASS["road"]])].mean())
    # Away from boundaries events still come from textures (windows, bricks) and swept object interiors.
    assert np.mean(near) > 2 * np.mean(far)
    assert np.mean(flat) < np.mean(near) / 4
    if config.scenes == "street":  # a varied camera may look steeply down on asphalt texture racing past
        assert np.mean(flat) < 0.05 < np.mean(near) / 4
    assert np.mean(flat) > 0  # background activity


def test_depth_has_holes_and_noise_that_grows_with_distance(config, frames):
    scene = sequence_scene(config, 0)
    reach = min(50, sequence_sensors(config, 0).depth_max_m)
    camera = config.camera()
    g = render(scene, camera, camera.rays(), frame_time_us(config, 0) * 1e-6)
    measured = frames["s000_f00000"]["depth"].astype(np.float64) / 1000
    truth = g.depth
    sky = ~np.isfinite(truth)
    assert (measured[sky] == 0).all()
    holes = (measured == 0) & ~sky & (truth < reach)
    assert 0.01 < holes.mean() < 0.4
    valid = (measured > 0) & ~sky
    error = np.abs(measured - truth)[valid]
    near = truth[valid] < 8
    farther = (truth[valid] > 15) & (truth[valid] < reach)
    assert 0 < np.median(error[near]) < np.median(error[farther])


def test_persons_are_warmer_than_the_road_at_night(tmp_path):
    night = SynthConfig(
        frames=3,
        height=64,
        width=128,
        seed=11,
        frames_per_sequence=3,
        night_probability=1.0,
        modalities=("rgb", "thermal"),
    )
    day = SynthConfig(
        frames=3,
        height=64,
        width=128,
        seed=11,
        frames_per_sequence=3,
        night_probability=0.0,
        modalities=("rgb", "thermal"),
    )
    generate(night, tmp_path / "night")
    generate(day, tmp_path / "day")
    person, road, brightness = [], [], {"night": [], "day": []}
    for name in FolderMeta.read(tmp_path / "night").frames:
        labels = read_image(tmp_path / "night", "labels", name)
        kelvin = read_image(tmp_path / "night", "thermal", name) / THERMAL_COUNTS_PER_KELVIN
        core = cv2.erode((labels == CLASS["person"]).astype(np.uint8), np.ones((3, 1), np.uint8)).astype(bool)
        person.append(kelvin[core])
        road.append(kelvin[labels == CLASS["road"]])
        for when in brightness:
            brightness[when].append(read_image(tmp_path / when, "rgb", name).mean())
    assert np.median(np.concatenate(person)) > np.median(np.concatenate(road)) + 3
    assert np.mean(brightness["night"]) < 0.75 * np.mean(brightness["day"])


def test_only_the_chosen_modalities_are_written(tmp_path):
    config = SynthConfig(frames=1, height=32, width=48, seed=1, modalities=("depth",))
    out = generate(config, tmp_path / "depth_only")
    assert sorted(p.name for p in out.iterdir()) == ["depth", "labels", "meta.json"]
    meta = FolderMeta.read(out)
    assert meta.modalities == {"depth": "16UC1"} and meta.events is None


def test_a_foreign_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    config = SynthConfig(frames=1, height=32, width=48, seed=1, modalities=("depth",))
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--overwrite"):
        generate(config, tmp_path)
    generate(config, tmp_path, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert FolderMeta.read(tmp_path).frames == ("s000_f00000",)


def test_rerunning_into_an_earlier_output_replaces_its_frames(tmp_path):
    generate(SynthConfig(frames=3, height=32, width=48, seed=1, frames_per_sequence=3, modalities=("depth",)), tmp_path)
    generate(SynthConfig(frames=1, height=32, width=48, seed=2, modalities=("depth",)), tmp_path)
    assert sorted(p.name for p in (tmp_path / "depth").iterdir()) == ["s000_f00000.png"]
    assert FolderMeta.read(tmp_path).generator["config"]["seed"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"height": 8}, "height"),
        ({"frames": 0}, "frames"),
        ({"event_window_us": 300_000}, "event_window_us"),
        ({"modalities": ("rgb", "lidar")}, "lidar"),
        ({"frames": 5000, "frames_per_sequence": 2}, "1000"),
        ({"night_probability": 2.0}, "night_probability"),
    ],
)
def test_bad_configs_are_refused_naming_the_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**overrides)


def test_cli_help_works():
    result = subprocess.run(
        [sys.executable, "-m", "madm_train", "synth", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--frames" in result.stdout and "--size" in result.stdout


def test_cli_bad_size_exits_2_naming_the_value(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--size", "256by512"]) == 2
    err = capsys.readouterr().err
    assert "'256by512'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_data_set(tmp_path):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "--frames",
                "2",
                "--size",
                "32x48",
                "--seed",
                "3",
                "--modalities",
                "rgb,events",
            ]
        )
        == 0
    )
    meta = FolderMeta.read(out)
    assert meta.frames == ("s000_f00000", "s000_f00001")
    assert set(meta.modalities) == {"rgb", "events"}
    assert meta.generator["config"]["height"] == 32 and meta.generator["config"]["seed"] == 3


def test_cli_writes_varied_scenes_on_request(tmp_path):
    out = tmp_path / "varied"
    assert main(["synth", "--out", str(out), "--frames", "2", "--size", "32x48", "--scenes", "varied",
                 "--modalities", "rgb"]) == 0
    assert FolderMeta.read(out).generator["config"]["scenes"] == "varied"


def test_generate_once_reuses_a_finished_output_and_refuses_one_of_other_settings(tmp_path):
    from madm_ros.synthetic.generate import generate_once

    config = SynthConfig(frames=1, height=32, width=48, seed=1, modalities=("depth",))
    folder = generate_once(config, tmp_path / "scenes")
    written = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert generate_once(config, folder) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == written  # nothing rendered again
    with pytest.raises(ConfigError, match=r"other settings .*'seed': 1.*; start afresh"):
        generate_once(dataclasses.replace(config, seed=2), folder, otherwise="start afresh")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == written
