"""``SynthConfig(scenes=...)``: "street" files unchanged, "varied" scenes that the label layout alone cannot predict."""

import dataclasses
from collections import defaultdict

import numpy as np
import pytest

from madm_ros.backends.engine_info import folder_sha256
from madm_ros.errors import ConfigError
from madm_ros.folder_layout import THERMAL_COUNTS_PER_KELVIN, FolderMeta, read_image
from madm_ros.metrics import ConfusionMatrix
from madm_ros.palettes import DSEC_11
from madm_ros.synthetic import SynthConfig, generate
from madm_ros.synthetic.generate import frame_time_us, sequence_length, sequence_scene
from madm_ros.synthetic.render import render

SKY, BUILDING, ROAD = (DSEC_11.class_names.index(name) for name in ("sky", "building", "road"))
# 20 sequences of 2 frames: the first 14 fit the layout baseline, the last 6 score it.
LAYOUT = SynthConfig(frames=40, height=64, width=128, seed=0, frames_per_sequence=2)
TRAIN_SEQUENCES = 14


def sequence_labels(config):
    """Label images per sequence, rendered without the sensors (the labels are what the layout is made of)."""
    camera = config.camera()
    rays = camera.rays()
    out = []
    for seq in range(config.sequences):
        scene = sequence_scene(config, seq)
        times = [frame_time_us(config, k) * 1e-6 for k in range(sequence_length(config, seq))]
        out.append([render(scene, camera, rays, t).label for t in times])
    return out


@pytest.fixture(scope="module")
def varied_folder(tmp_path_factory):
    """16 one-frame varied sequences (RGB and thermal), small enough to be cheap."""
    config = SynthConfig(frames=16, height=32, width=64, seed=0, frames_per_sequence=1, modalities=("rgb", "thermal"),
                         scenes="varied")
    return generate(config, tmp_path_factory.mktemp("synth") / "varied")


@pytest.fixture(scope="module")
def labels():
    return {scenes: sequence_labels(dataclasses.replace(LAYOUT, scenes=scenes)) for scenes in ("street", "varied")}


def lowest_sky_row(label):
    """The lowest row showing sky in the 8 centre columns (the horizon, where nothing stands in front of it); None without sky."""
    centre = label[:, label.shape[1] // 2 - 4 : label.shape[1] // 2 + 4]
    rows = np.flatnonzero((centre == SKY).any(axis=1))
    return int(rows[-1]) if len(rows) else None


def layout_baseline_scores(sequences):
    """Pixel accuracy and mIoU of the per-pixel most frequent training class (madm_train's layout-only baseline)."""
    train = np.stack([label for seq in sequences[:TRAIN_SEQUENCES] for label in seq])
    counts = np.stack([(train == c).sum(axis=0) for c in range(DSEC_11.num_classes)])
    class_map = counts.argmax(axis=0).astype(np.uint8)
    matrix = ConfusionMatrix(DSEC_11.num_classes)
    for seq in sequences[TRAIN_SEQUENCES:]:
        for label in seq:
            matrix.update(class_map, label)
    return matrix.pixel_accuracy(), matrix.miou()


def test_street_files_are_byte_identical_to_before_the_scenes_field(tmp_path):
    # Digest of this config's folder measured before `scenes` existed (the benchmark data depends on it).
    config = SynthConfig(frames=12, height=64, width=128, seed=0, frames_per_sequence=4)
    assert config.scenes == "street"
    out = generate(config, tmp_path / "street")
    assert folder_sha256(out) == "cde0ab0fc25601befc82e898f6a6791efcd13fbec7864f0c7a626a0b23640f7e"
    assert "scenes" not in FolderMeta.read(out).generator["config"]


def test_the_horizon_moves_between_varied_sequences(labels):
    spread = {}
    for scenes, sequences in labels.items():
        rows = [lowest_sky_row(seq[0]) for seq in sequences]
        spread[scenes] = np.std([row for row in rows if row is not None])
    # Measured (64 rows; 2 of the 20 varied views show no sky at the centre): street 1.1 rows, varied 8.7 rows.
    assert spread["street"] < 3
    assert spread["varied"] > 6


def test_the_layout_alone_predicts_varied_scenes_much_worse(labels):
    street_accuracy, street_miou = layout_baseline_scores(labels["street"])
    varied_accuracy, varied_miou = layout_baseline_scores(labels["varied"])
    # Measured: street accuracy 0.722, mIoU 0.243; varied accuracy 0.490, mIoU 0.119.
    assert street_accuracy > 0.65
    assert varied_accuracy < street_accuracy - 0.15
    assert varied_miou < 0.7 * street_miou


def test_every_scene_kind_occurs_and_is_recorded_per_sequence(varied_folder):
    meta = FolderMeta.read(varied_folder)
    config = SynthConfig(**meta.generator["config"])
    assert config.scenes == "varied"
    records = meta.generator["sequences"]
    assert [r["sequence"] for r in records] == list(range(16))
    assert {r["scene"] for r in records} == {"street", "junction", "open"}
    assert all((r["junction_z_m"] is not None) == (r["scene"] == "junction") for r in records)
    assert all(r["scene"] == sequence_scene(config, r["sequence"]).kind for r in records)
    assert all(-8 <= r["camera_roll_deg"] <= 8 and 0.8 <= r["camera_height_m"] <= 3.2 for r in records)
    assert len({r["sensors"]["event_threshold"] for r in records}) == 16
    assert all(20 <= r["sensors"]["depth_max_m"] <= 100 for r in records)


def test_time_of_day_shows_in_rgb_and_thermal(varied_folder):
    meta = FolderMeta.read(varied_folder)
    brightness, road_minus_air = defaultdict(list), defaultdict(list)
    for name, record in zip(meta.frames, meta.generator["sequences"]):
        labels = read_image(varied_folder, "labels", name)
        kelvin = read_image(varied_folder, "thermal", name) / THERMAL_COUNTS_PER_KELVIN
        when = record["time_of_day"]
        brightness[when].append(read_image(varied_folder, "rgb", name).mean())
        road_minus_air[when].append(np.median(kelvin[labels == ROAD]) - record["air_temperature_k"])
    assert set(brightness) == {"day", "dusk", "night"}
    bright = {when: np.mean(values) for when, values in brightness.items()}
    warm = {when: np.mean(values) for when, values in road_minus_air.items()}
    # Measured: mean grey day 85.7, dusk 55.8, night 57.4 (exposure adapts); road above air day 6.5 K, dusk 0.0 K.
    assert bright["day"] > bright["dusk"] + 15 and bright["day"] > bright["night"] + 15
    assert warm["day"] > warm["dusk"] + 3  # the sun heats the road by day


def test_open_areas_have_no_facades_and_more_sky(labels):
    config = dataclasses.replace(LAYOUT, scenes="varied")
    fractions = {"open": [], "built": []}
    for seq, frames in enumerate(labels["varied"]):
        kind = "open" if sequence_scene(config, seq).kind == "open" else "built"
        fractions[kind].append(np.bincount(frames[0].ravel(), minlength=DSEC_11.num_classes) / frames[0].size)
    open_area, built = np.mean(fractions["open"], axis=0), np.mean(fractions["built"], axis=0)
    # Measured: open sky 0.34, building 0; streets and junctions sky 0.07, building 0.20.
    assert open_area[BUILDING] == 0 and built[BUILDING] > 0.1
    assert open_area[SKY] > 2 * built[SKY]


def test_scenes_must_name_a_known_set():
    with pytest.raises(ConfigError, match=r"scenes must be one of street, varied, got 'city'"):
        SynthConfig(scenes="city")
