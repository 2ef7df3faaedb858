"""Rare-class sampling: statistics in the source's 19 Cityscapes classes (as MADM) or in the merged task classes."""

import shutil

import cv2
import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.folder_layout import FolderMeta, write_image
from madm_ros.palettes import CITYSCAPES_19, DSEC_11, label_mapping
from madm_ros.preprocessing import InputSpec
from madm_train.data.augment import TrainAugmentation
from madm_train.data.datasets import CityscapesDataset, FolderDataset
from madm_train.data.rare_class import RareClassSampler, rare_class_sampler, rare_class_stats

CITY = "cityscapes_sample/labelled_256x128/frankfurt_000000_000294"
BUS, CAR = CITYSCAPES_19.class_names.index("bus"), DSEC_11.class_names.index("car")
SPEC = InputSpec("rgb", height=128, width=256)


def write_cityscapes_frame(root, stem, image, train_ids):
    image_dir, label_dir = root / "leftImg8bit/train/frankfurt", root / "gtFine/train/frankfurt"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        cv2.imwrite(str(image_dir / f"{stem}_leftImg8bit.png"), image)
    else:
        shutil.copy(image, image_dir / f"{stem}_leftImg8bit.png")
    cv2.imwrite(str(label_dir / f"{stem}_gtFine_labelTrainIds.png"), train_ids)


@pytest.fixture
def bus_in_one_frame(tmp_path, shared_data):
    """Three copies of the real labelled frame; in the second, a 10×16 patch of road is a bus.

    The bus is the rarest 19-class class that reaches the minimum pixel count, while in DSEC-11 it
    is part of "car", which every frame holds ~1800 pixels of.
    """
    train_ids = cv2.imread(str(shared_data / f"{CITY}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    labels = [train_ids, train_ids.copy(), train_ids]
    labels[1][100:110, 100:116] = BUS
    assert (train_ids[100:110, 100:116] == CITYSCAPES_19.class_names.index("road")).all()
    for index, label in enumerate(labels):
        write_cityscapes_frame(tmp_path, f"frankfurt_000000_00000{index}", shared_data / f"{CITY}_leftImg8bit.png", label)
    return tmp_path, labels


def softmax_of_rarity(labels, num_classes, min_pixels, temperature):
    """P(c) = softmax((1 − f_c)/T) over the classes some label holds ≥ min_pixels of (DAFormer's RCS)."""
    counts = np.stack([np.bincount(label.reshape(-1), minlength=256)[:num_classes] for label in labels])
    frequency = counts.sum(0) / counts.sum()
    logits = np.where((counts >= min_pixels).any(0), (1 - frequency) / temperature, -np.inf)
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def assert_same_stats(a, b):
    np.testing.assert_array_equal(a.frequency, b.frequency)
    assert (a.examples, a.min_pixels) == (b.examples, b.min_pixels)


def test_source_statistics_count_the_19_cityscapes_classes(bus_in_one_frame):
    root, labels = bus_in_one_frame
    data = CityscapesDataset(root, "train", SPEC, label_set="dsec11")
    sampler = rare_class_sampler(data, classes="source", temperature=0.002, min_pixels=150, seed=0)
    assert sampler.classes == "source" and sampler.stats.examples[BUS] == (1,)
    np.testing.assert_allclose(sampler.probabilities, softmax_of_rarity(labels, 19, 150, 0.002))
    assert sampler.probabilities.argmax() == BUS and sampler.probabilities[BUS] > 0.8
    draws = [sampler.sample() for _ in range(300)]
    assert sum(d == (1, BUS) for d in draws) > 0.7 * len(draws)  # the bus frame, for its bus


def test_merged_statistics_see_the_bus_only_as_car_as_before(bus_in_one_frame):
    root, labels = bus_in_one_frame
    data = CityscapesDataset(root, "train", SPEC, label_set="dsec11")
    sampler = rare_class_sampler(data, classes="merged", temperature=0.002, min_pixels=150, seed=0)
    merged = [label_mapping("cityscapes19", "dsec11")[label] for label in labels]
    np.testing.assert_allclose(sampler.probabilities, softmax_of_rarity(merged, 11, 150, 0.002))
    assert sampler.classes == "merged" and sampler.probabilities[CAR] < 1e-3
    draws = [sampler.sample() for _ in range(300)]
    assert sum(i == 1 for i, _ in draws) < 0.5 * len(draws)  # the bus frame is one frame of three
    # what the trainer did before: statistics over the data set's labels in the task's classes
    stats = rare_class_stats((data.label_reader(r.label_path) for r in data.records), 11, min_pixels=150)
    before = RareClassSampler(stats, temperature=0.002, seed=0)
    assert_same_stats(sampler.stats, stats)
    assert draws == [before.sample() for _ in range(300)]


def test_the_crop_looks_for_the_class_in_the_space_it_was_drawn_in(tmp_path):
    """A bus corner on a road image: asked for the 19-class bus, crops find it and come back as car."""
    train_ids = np.zeros((64, 64), np.uint8)  # road
    train_ids[:16, :16] = BUS
    write_cityscapes_frame(tmp_path, "frankfurt_000000_000000", np.zeros((64, 64, 3), np.uint8), train_ids)
    data = CityscapesDataset(tmp_path, "train", InputSpec("rgb", height=16, width=16), label_set="dsec11",
                             augmentation=TrainAugmentation((64, 64), (16, 16), flip_probability=0, crop_tries=50))

    def hits(**required):
        crops = [data.load(0, min_class_pixels=10, **required).label for _ in range(20)]
        assert all(set(np.unique(c)) <= {CAR, DSEC_11.class_names.index("road")} for c in crops)  # always DSEC-11
        return sum(int((c == CAR).sum() >= 10) for c in crops)

    assert hits(required_class=BUS, classes="source") >= 18
    assert hits(required_class=CAR, classes="merged") >= 18
    assert hits() < 10  # ~8 % of unsteered crops show the corner


def test_a_source_labelled_in_the_task_classes_counts_in_them_either_way(tmp_path):
    label = np.full((32, 32), DSEC_11.class_names.index("road"), np.uint8)
    for index in range(3):
        label[:4, : 4 * index] = CAR
        write_image(tmp_path, "rgb", f"s000_f{index:05d}", np.zeros((32, 32, 3), np.uint8))
        write_image(tmp_path, "labels", f"s000_f{index:05d}", label)
    FolderMeta(frames=tuple(f"s000_f{i:05d}" for i in range(3)), modalities={"rgb": "rgb8"}, has_labels=True,
               label_set="dsec11", class_names=DSEC_11.class_names).write(tmp_path)
    data = FolderDataset(tmp_path, InputSpec("rgb", height=32, width=32))
    source, merged = (rare_class_sampler(data, classes=c, temperature=0.01, min_pixels=8, seed=0)
                      for c in ("source", "merged"))
    assert_same_stats(source.stats, merged.stats)
    assert source.stats.frequency.shape == (11,)
    assert source.stats.examples[CAR] == (1, 2)
    np.testing.assert_array_equal(data.load(2, classes="source").label, data.load(2).label)
    FolderMeta(frames=tuple(f"s000_f{i:05d}" for i in range(3)), modalities={"rgb": "rgb8"}).write(tmp_path)
    with pytest.raises(ConfigError, match="rgb data set is unlabelled, .* needs a labelled source"):
        rare_class_sampler(FolderDataset(tmp_path, InputSpec("rgb", height=32, width=32)), classes="source",
                           temperature=0.01, min_pixels=8, seed=0)


def test_rare_classes_are_sampled_far_more_often_than_their_pixel_share():
    labels = [np.zeros((50, 50), np.uint8) for _ in range(10)]
    labels[3][:10, :10] = 1  # class 1: 100 of 25 000 pixels, in example 3 only
    stats = rare_class_stats(labels, num_classes=2, min_pixels=50)
    assert stats.frequency[1] == pytest.approx(100 / 25000)
    assert stats.examples == (tuple(range(10)), (3,))
    sampler = RareClassSampler(stats, temperature=0.01, seed=0)
    draws = [sampler.sample() for _ in range(200)]
    assert sum(c == 1 for _, c in draws) > 150  # exp(99.6) vs exp(0.4): almost always the rare class
    assert all(i == 3 for i, c in draws if c == 1)


def test_bad_class_spaces_and_unlabelled_sources_are_named(bus_in_one_frame):
    root, _ = bus_in_one_frame
    data = CityscapesDataset(root, "train", SPEC, label_set="dsec11")
    with pytest.raises(ConfigError, match="classes must be one of \\('source', 'merged'\\), got 'fine'"):
        rare_class_sampler(data, classes="fine", temperature=0.01, min_pixels=150, seed=0)
    with pytest.raises(ConfigError, match="classes must be one of .* got 'sources'"):
        data.load(0, classes="sources")
    (root / "gtFine/train/frankfurt/frankfurt_000000_000002_gtFine_labelTrainIds.png").unlink()
    unlabelled = CityscapesDataset(root, "train", SPEC, label_set="dsec11")
    with pytest.raises(InputError, match="needs a label for every source example, but 1 have none "
                                         "\\(first: frankfurt_000000_000002\\)"):
        rare_class_sampler(unlabelled, classes="source", temperature=0.01, min_pixels=150, seed=0)
