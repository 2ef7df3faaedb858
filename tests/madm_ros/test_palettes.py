import cv2
import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import (
    CITYSCAPES_19,
    CITYSCAPES_LABELID_TO_TRAINID,
    DELIVER_25_NAMES,
    DSEC_11,
    FMB_9,
    colorize,
    get_label_set,
    label_mapping,
    remap_labels,
)

SAMPLE = "cityscapes_sample/labelled_256x128/frankfurt_000000_000294_gtFine_"


def test_label_ids_map_to_train_ids_on_the_real_cityscapes_sample(shared_data):
    label_ids = cv2.imread(str(shared_data / f"{SAMPLE}labelIds.png"), cv2.IMREAD_UNCHANGED)
    train_ids = cv2.imread(str(shared_data / f"{SAMPLE}labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    mapped = remap_labels(label_ids, CITYSCAPES_LABELID_TO_TRAINID)
    # Both files were downscaled separately with nearest neighbour, so a few boundary pixels differ.
    assert (mapped == train_ids).mean() >= 0.99
    assert set(np.unique(mapped)) == set(np.unique(train_ids))


def test_cityscapes_to_dsec11_follows_madm_label_convert():
    lut = label_mapping("cityscapes19", "dsec11")
    expected = {
        "road": "road", "sidewalk": "sidewalk", "building": "building", "wall": "wall", "fence": "fence",
        "pole": "pole", "traffic light": "traffic sign", "traffic sign": "traffic sign",
        "vegetation": "vegetation", "terrain": "vegetation", "sky": "sky", "person": "person", "rider": "person",
        "car": "car", "truck": "car", "bus": "car", "train": "car", "motorcycle": "car", "bicycle": "car",
    }
    got = {name: DSEC_11.class_names[lut[i]] for i, name in enumerate(CITYSCAPES_19.class_names)}
    assert got == expected
    assert lut[255] == 255


def test_cityscapes_to_fmb9_ignores_wall_and_fence():
    lut = label_mapping("cityscapes19", "fmb9")
    got = {name: (FMB_9.class_names[lut[i]] if lut[i] != 255 else None) for i, name in enumerate(CITYSCAPES_19.class_names)}
    assert got["wall"] is None and got["fence"] is None
    assert got["rider"] == "person" and got["bicycle"] == "car" and got["traffic light"] == "traffic sign"
    assert sorted(v for v in got.values() if v) == sorted(
        ["road", "sidewalk", "building", "pole", "traffic sign", "traffic sign", "vegetation", "vegetation", "sky",
         "person", "person", "car", "car", "car", "car", "car", "car"])


def test_dsec11_and_fmb9_use_madm_class_order_and_cityscapes_colours():
    assert DSEC_11.class_names == ("sky", "building", "fence", "person", "pole", "road", "sidewalk", "vegetation",
                                   "car", "wall", "traffic sign")
    assert FMB_9.class_names == ("sky", "building", "person", "pole", "road", "sidewalk", "vegetation", "car",
                                 "traffic sign")
    cityscapes = dict(zip(CITYSCAPES_19.class_names, CITYSCAPES_19.colors))
    for name, colour in zip(DSEC_11.class_names, DSEC_11.colors):
        assert colour == cityscapes["traffic light" if name == "traffic sign" else name]


def test_colorize_paints_classes_and_leaves_unlabelled_black():
    ids = np.array([[0, 5, 255]], dtype=np.uint8)
    rgb = colorize(ids, DSEC_11)
    assert rgb.tolist() == [[[70, 130, 180], [128, 64, 128], [0, 0, 0]]]


def test_unknown_label_set_and_mapping_are_named():
    with pytest.raises(ConfigError, match="unknown label set 'deliver25'.*cityscapes19"):
        get_label_set("deliver25")
    with pytest.raises(ConfigError, match="no label mapping from 'dsec11' to 'fmb9'"):
        label_mapping("dsec11", "fmb9")
    with pytest.raises(InputError, match="label images must be uint8, got int32"):
        remap_labels(np.zeros((2, 2), np.int32), CITYSCAPES_LABELID_TO_TRAINID)


def test_deliver25_and_fmb15_follow_madm_test_label_processing():
    deliver = label_mapping("deliver25", "dsec11")
    names = dict(zip(DELIVER_25_NAMES, (DSEC_11.class_names[v] if v != 255 else None for v in deliver[:25])))
    assert names["RoadLine"] == "road" and names["TrafficLight"] == "traffic sign" and names["Terrain"] == "vegetation"
    assert names["TwoWheeler"] == names["Bus"] == names["Truck"] == "car"
    assert [n for n, v in names.items() if v is None] == ["Other", "Ground", "Bridge", "RailTrack", "GroundRail",
                                                           "Static", "Dynamic", "Water"]
    fmb = label_mapping("fmb15", "fmb9")
    got = [FMB_9.class_names[v] if v != 255 else None for v in fmb[:15]]
    assert got == [None, "road", "sidewalk", "building", "traffic sign", "traffic sign", "vegetation", "sky", "person",
                   "car", "car", "car", "car", "car", "pole"]
