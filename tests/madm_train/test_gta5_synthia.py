"""GTA5, SYNTHIA and Cityscapes-19 (the DIFF/ICCLD benchmarks) on tiny trees in the publishers' layouts.

The label files are written the way the publishers ship them: GTA5's as 8-bit palette PNGs whose
indices are Cityscapes label ids (OpenCV would read them as colours), SYNTHIA's as 16-bit
three-channel PNGs with the class id in the first channel and an instance id in the second. The
expected train ids come from DAFormer's converters (tools/convert_datasets/{gta,synthia}.py),
written out here as independent tables.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import CITYSCAPES_19, EVAL_CLASS_SUBSETS, eval_class_names, subset_miou
from madm_ros.preprocessing import InputSpec, preprocess
from madm_train.config import load_config
from madm_train.data.augment import TrainAugmentation, resize_label
from madm_train.data.build import build_datasets
from madm_train.data.datasets import CityscapesDataset, Gta5Dataset, SynthiaDataset
from madm_train.data.rare_class import rare_class_sampler

CITY = "cityscapes_sample/labelled_256x128/frankfurt_000000_000294"

# DAFormer tools/convert_datasets/gta.py (= Cityscapes' labelId → trainId) and synthia.py, verbatim as tables.
GTA_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                   27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SYNTHIA_ID_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13, 18: 14,
                       19: 15, 20: 16, 12: 17, 11: 18}


def expected(stored: np.ndarray, table: dict[int, int]) -> np.ndarray:
    return np.vectorize(lambda v: table.get(int(v), 255))(stored).astype(np.uint8)


def write_palette_label(path: Path, ids: np.ndarray) -> None:
    """A GTA5 label: mode P, index = Cityscapes label id, palette = Cityscapes colours (as published)."""
    palette = [0] * 768
    for label_id, train_id in GTA_ID_TO_TRAIN.items():
        palette[3 * label_id: 3 * label_id + 3] = CITYSCAPES_19.colors[train_id]
    image = Image.fromarray(ids, mode="P")
    image.putpalette(palette)
    image.save(path)


def write_gta5(root: Path, ids: np.ndarray, name: str = "00001", image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """One GTA5 frame (random RGB) with a raw label; returns the image as written (BGR)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    height, width = image_hw or ids.shape
    bgr = np.random.default_rng(int(name)).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "images" / f"{name}.png"), bgr)
    write_palette_label(root / "labels" / f"{name}.png", ids)
    return bgr


def gta_ids(height: int = 32, width: int = 64) -> np.ndarray:
    """Stripes of raw ids: 0 unlabelled, 1 ego vehicle, 6 ground, 255, and train classes at both ends."""
    values = np.array([0, 7, 8, 26, 33, 255, 1, 6, 24, 11, 21, 23, 31, 17, 19, 20], np.uint8)
    return np.repeat(values, width // len(values))[None, :].repeat(height, axis=0)


def write_synthia(root: Path, ids: np.ndarray, name: str = "0000001") -> np.ndarray:
    """One SYNTHIA frame: RGB image and a 16-bit label with ids in the first channel, instances in the second."""
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT/LABELS").mkdir(parents=True, exist_ok=True)
    bgr = np.random.default_rng(5).integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "RGB" / f"{name}.png"), bgr)
    label = np.zeros((*ids.shape, 3), np.uint16)  # OpenCV order B, G, R: R = the file's first channel
    label[:, :, 2] = ids
    label[:, :, 1] = 1000 + np.arange(ids.size, dtype=np.uint16).reshape(ids.shape) % 7  # instance ids
    label[:, :, 0] = 40_000  # the third channel is not the class either
    cv2.imwrite(str(root / "GT/LABELS" / f"{name}.png"), label)
    return bgr


def test_gta5_raw_palette_labels_become_train_ids_with_unlabelled_and_255_ignored(tmp_path):
    ids = gta_ids()
    bgr = write_gta5(tmp_path, ids)
    spec = InputSpec("rgb", height=32, width=64)
    sample = Gta5Dataset(tmp_path, "train", spec)[0]
    np.testing.assert_array_equal(sample.label, expected(ids, GTA_ID_TO_TRAIN))
    assert (sample.label[ids == 0] == 255).all() and (sample.label[ids == 255] == 255).all()
    assert (sample.label[ids == 1] == 255).all() and (sample.label[ids == 33] == 18).all()
    np.testing.assert_array_equal(sample.image, preprocess(bgr, "bgr8", spec))
    assert sample.meta["name"] == "00001" and sample.modality == "rgb"


def test_gta5_labels_map_to_the_task_label_set_and_rare_classes_count_in_19(tmp_path):
    from madm_ros.palettes import label_mapping

    ids = gta_ids()
    write_gta5(tmp_path, ids)
    data = Gta5Dataset(tmp_path, "train", InputSpec("rgb", height=32, width=64), label_set="dsec11")
    train_ids = expected(ids, GTA_ID_TO_TRAIN)
    np.testing.assert_array_equal(data[0].label, label_mapping("cityscapes19", "dsec11")[train_ids])
    sampler = rare_class_sampler(data, classes="source", temperature=0.01, min_pixels=1, seed=0)
    assert len(sampler.probabilities) == 19  # the 19 train ids, as for Cityscapes
    counted = {c for c, examples in enumerate(sampler.stats.examples) if examples}
    assert counted == set(np.unique(train_ids[train_ids != 255]).tolist())


def test_gta5_prefers_daformer_train_id_files(tmp_path):
    write_gta5(tmp_path, gta_ids())
    converted = np.full((32, 64), 13, np.uint8)
    converted[:, :8] = 255
    Image.fromarray(converted, mode="L").save(tmp_path / "labels/00001_labelTrainIds.png")
    data = Gta5Dataset(tmp_path, "train", InputSpec("rgb", height=32, width=64))
    assert len(data) == 1 and data.records[0].label_path.name == "00001_labelTrainIds.png"
    np.testing.assert_array_equal(data[0].label, converted)


def test_gta5_label_a_few_pixels_off_is_resized_like_daformer_and_a_large_mismatch_refused(tmp_path):
    truth = np.zeros((64, 128), np.uint8)
    truth[32:] = 7  # road in the bottom half
    truth[:, 96:] = 26  # car on the right
    label = resize_label(truth, (66, 127))  # a GTA5 quirk: label off its image by a few pixels
    write_gta5(tmp_path, label, image_hw=(64, 128))
    spec = InputSpec("rgb", height=32, width=64)
    sample = Gta5Dataset(tmp_path, "train", spec)[0]
    # the label is resized on its own to the network size (nearest), as the image is …
    np.testing.assert_array_equal(sample.label, resize_label(expected(label, GTA_ID_TO_TRAIN), (32, 64)))
    # … so it still covers the same scene: only pixels at class borders differ from the true layout
    assert (sample.label == resize_label(expected(truth, GTA_ID_TO_TRAIN), (32, 64))).mean() > 0.95
    crop = Gta5Dataset(tmp_path, "train", spec, augmentation=TrainAugmentation((64, 128), (32, 64)))[0]
    assert crop.label.shape == (32, 64) and crop.image.shape == (3, 32, 64)
    write_gta5(tmp_path, truth[:40], image_hw=(64, 128))  # 40 of 64 rows: a broken pair, not a quirk
    with pytest.raises(InputError, match=r"00001.png is 128×40 but its image .*00001.png is 128×64 \(more than the 5%"):
        Gta5Dataset(tmp_path, "train", spec)[0]


def test_gta5_refuses_unknown_ids_missing_labels_and_other_splits(tmp_path):
    ids = gta_ids()
    ids[0, 0] = 34
    write_gta5(tmp_path, ids)
    spec = InputSpec("rgb", height=32, width=64)
    with pytest.raises(InputError, match=r"labels/00001.png has values \[34\] outside the data set's 34 classes"):
        Gta5Dataset(tmp_path, "train", spec)[0]
    cv2.imwrite(str(tmp_path / "images/00002.png"), np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(InputError, match=r"1 GTA5 image\(s\) have no label in .*labels \(e\.g\. 00002\.png\)"):
        Gta5Dataset(tmp_path, "train", spec)
    with pytest.raises(ConfigError, match=r"GTA5 has no 'val' split.*--set data\.source_split=train"):
        Gta5Dataset(tmp_path, "val", spec)
    cv2.imwrite(str(tmp_path / "labels/00002.png"), np.zeros((32, 64, 3), np.uint8))  # a colour label
    with pytest.raises(InputError, match="00002.png: a label must be an 8-bit palette or grey PNG.*PIL mode RGB"):
        Gta5Dataset(tmp_path, "train", spec)[1]


def test_synthia_16bit_labels_use_the_first_channel_and_daformers_mapping(tmp_path):
    ids = np.tile(np.arange(23, dtype=np.uint16), (8, 3))[:, :64]
    bgr = write_synthia(tmp_path, ids)
    spec = InputSpec("rgb", height=8, width=64)
    sample = SynthiaDataset(tmp_path, "train", spec)[0]
    np.testing.assert_array_equal(sample.label, expected(ids, SYNTHIA_ID_TO_TRAIN))
    np.testing.assert_array_equal(sample.image, preprocess(bgr, "bgr8", spec))
    # every id 0..22 was written, so all 19 train ids occur (terrain, truck, train: defined, never used by SYNTHIA)
    assert set(np.unique(sample.label).tolist()) == set(range(19)) | {255}
    assert (sample.label[ids == 10] == CITYSCAPES_19.class_names.index("person")).all()  # pedestrian
    assert (sample.label[ids == 22] == 255).all()  # lane marking is ignore, not road, in DAFormer's mapping


def test_synthia_prefers_train_id_files_and_refuses_ids_beyond_22(tmp_path):
    ids = np.full((8, 16), 3, np.uint16)
    write_synthia(tmp_path, ids)
    spec = InputSpec("rgb", height=8, width=16)
    converted = np.full((8, 16), 10, np.uint8)
    cv2.imwrite(str(tmp_path / "GT/LABELS/0000001_labelTrainIds.png"), converted)
    np.testing.assert_array_equal(SynthiaDataset(tmp_path, "train", spec)[0].label, converted)
    (tmp_path / "GT/LABELS/0000001_labelTrainIds.png").unlink()
    ids[0, 0] = 300
    write_synthia(tmp_path, ids)
    with pytest.raises(InputError, match=r"class ids \[300\] beyond SYNTHIA's 0\.\.22 in its first channel"):
        SynthiaDataset(tmp_path, "train", spec)[0]
    (tmp_path / "elsewhere/RGB").mkdir(parents=True)
    with pytest.raises(InputError, match="SYNTHIA GT/LABELS folder .*elsewhere/GT/LABELS not found"):
        SynthiaDataset(tmp_path / "elsewhere", "train", spec)


@pytest.fixture
def cityscapes_root(tmp_path, shared_data):
    root = tmp_path / "cityscapes"
    for split in ("train", "val"):
        (root / f"leftImg8bit/{split}/frankfurt").mkdir(parents=True)
        shutil.copy(shared_data / f"{CITY}_leftImg8bit.png",
                    root / f"leftImg8bit/{split}/frankfurt/frankfurt_000000_000294_leftImg8bit.png")
        (root / f"gtFine/{split}/frankfurt").mkdir(parents=True)
        shutil.copy(shared_data / f"{CITY}_gtFine_labelIds.png",
                    root / f"gtFine/{split}/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png")
    return root


def test_cityscapes_val_as_a_19_class_test_set_and_train_as_an_unlabelled_target(cityscapes_root, shared_data):
    spec = InputSpec("rgb", height=64, width=128)  # DIFF's 1024×512 at the sample's 1/8 scale, halved
    test = CityscapesDataset(cityscapes_root, "val", spec, label_set="cityscapes19")[0]
    train_ids = cv2.imread(str(shared_data / f"{CITY}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    assert test.label.shape == (64, 128) and test.image.shape == (3, 64, 128)
    assert (test.label == resize_label(train_ids, (64, 128))).mean() > 0.99
    target = CityscapesDataset(cityscapes_root, "train", spec, label_set="cityscapes19", labelled=False)
    assert target.records[0].label_path is None and target[0].label is None


def rgb_config(gta_root: Path, city_root: Path, *overrides: str):
    """Task ``rgb`` (a YAML holding only ``task: rgb``) on the test trees, at toy sizes."""
    path = gta_root.parent / "rgb.yaml"
    path.write_text("task: rgb\n")
    return load_config(path, [
        f"data.source_root={gta_root}", f"data.target_root={city_root}", "data.source_resize_hw=[64, 128]",
        "data.crop_hw=[64, 64]", "data.target_resize_hw=[64, 128]", "data.test_resize_hw=[64, 128]", *overrides])


def test_build_datasets_for_task_rgb_reads_gta5_into_cityscapes(tmp_path, cityscapes_root):
    for index in range(2):
        write_gta5(tmp_path / "GTA5", gta_ids(), name=f"{index + 1:05d}")
    config = rgb_config(tmp_path / "GTA5", cityscapes_root)
    assert (config.task, config.data.source_kind, config.data.target_kind) == ("rgb", "gta5", "cityscapes")
    source, target, test = build_datasets(config)
    assert isinstance(source, Gta5Dataset) and len(source) == 2
    crop = source[0]
    assert crop.image.shape == (3, 64, 64) and crop.label.shape == (64, 64)
    assert set(np.unique(crop.label).tolist()) <= set(GTA_ID_TO_TRAIN.values()) | {255}
    assert isinstance(target, CityscapesDataset) and target[0].label is None and target[0].image.shape == (3, 64, 64)
    sample = test[0]
    assert sample.image.shape == (3, 64, 128) and sample.label.shape == (64, 128)  # whole image at test_resize_hw
    assert test.label_set.name == "cityscapes19" and source.label_set.name == "cityscapes19"


def test_build_datasets_names_the_key_of_a_missing_folder(tmp_path, cityscapes_root):
    (tmp_path / "GTA5/images").mkdir(parents=True)  # the root exists, its labels do not
    with pytest.raises(InputError, match=r"GTA5 labels folder .*GTA5/labels not found.*data\.source_root = .*GTA5"
                                         r".*--set data\.source_root=PATH"):
        build_datasets(rgb_config(tmp_path / "GTA5", cityscapes_root))
    write_gta5(tmp_path / "GTA5", gta_ids())
    with pytest.raises(InputError, match=r"leftImg8bit folder .*leftImg8bit/train not found.*--set data\.target_root=PATH"):
        build_datasets(rgb_config(tmp_path / "GTA5", tmp_path / "GTA5"))
    with pytest.raises(InputError, match=r"leftImg8bit folder .*nowhere/leftImg8bit/val not found.*data\.test_root = "):
        build_datasets(rgb_config(tmp_path / "GTA5", cityscapes_root, f"data.test_root={tmp_path / 'nowhere'}"))
    with pytest.raises(InputError, match=r"SYNTHIA RGB folder .*RGB not found.*--set data\.source_root=PATH"):
        build_datasets(rgb_config(tmp_path / "GTA5", cityscapes_root, "data.source_kind=synthia"))


def test_synthia_scoring_subsets_are_the_16_and_13_classes_of_the_benchmark():
    assert set(CITYSCAPES_19.class_names) - set(EVAL_CLASS_SUBSETS["synthia16"]) == {"terrain", "truck", "train"}
    assert set(EVAL_CLASS_SUBSETS["synthia16"]) - set(EVAL_CLASS_SUBSETS["synthia13"]) == {"wall", "fence", "pole"}
    indices = [CITYSCAPES_19.class_names.index(n) for n in eval_class_names("cityscapes19", "synthia13")]
    assert indices == [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]  # the synthia_set_13 of the UDA literature
    assert eval_class_names("cityscapes19", "all") == CITYSCAPES_19.class_names
    with pytest.raises(ConfigError, match=r"names classes \['traffic light', 'rider', .*--set data\.label_set=cityscapes19"):
        eval_class_names("dsec11", "synthia16")


def test_subset_miou_averages_the_named_classes_and_skips_undefined_ones():
    iou = {name: 0.5 for name in CITYSCAPES_19.class_names} | {"terrain": 0.0, "truck": 0.0, "train": 0.0}
    names16 = eval_class_names("cityscapes19", "synthia16")
    assert subset_miou(iou, names16) == pytest.approx(0.5)
    mean19 = subset_miou(iou, CITYSCAPES_19.class_names)
    assert mean19 * 19 / 16 == pytest.approx(subset_miou(iou, names16))  # MIC's mIoU16 = mIoU19 · 19/16 when the 3 are 0
    assert subset_miou(iou | {"wall": None}, names16) == pytest.approx(0.5)  # undefined: left out (nanmean)
    assert subset_miou({"road": None}, ["road"]) is None
    with pytest.raises(InputError, match=r"classes \['sky'\] have no IoU here"):
        subset_miou({"road": 1.0}, ["road", "sky"])
