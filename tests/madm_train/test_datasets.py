"""Data-set readers on fixture trees in the publishers' layouts, built from real samples where they exist."""

import shutil

import cv2
import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.folder_layout import FolderMeta, write_image
from madm_ros.palettes import CITYSCAPES_19, DSEC_11, label_mapping
from madm_ros.preprocessing import InputSpec, preprocess
from madm_train.data.augment import TrainAugmentation
from madm_train.data.datasets import (
    CityscapesDataset,
    DeliverDepthDataset,
    DsecEdgeDataset,
    FmbInfraredDataset,
    FolderDataset,
    read_modality_file,
)
from madm_train.data.rare_class import RareClassSampler, rare_class_stats

CITY = "cityscapes_sample/labelled_256x128/frankfurt_000000_000294"
# CamVid's 11 classes → DSEC-11 (camvid_subset/README.md); bicyclist has no DSEC class → ignore.
CAMVID_TO_DSEC = np.full(256, 255, np.uint8)
for camvid, dsec in {0: "sky", 1: "building", 2: "pole", 3: "road", 4: "sidewalk", 5: "vegetation", 6: "traffic sign",
                     7: "fence", 8: "car", 9: "person"}.items():
    CAMVID_TO_DSEC[camvid] = DSEC_11.class_names.index(dsec)


@pytest.fixture
def cityscapes_root(tmp_path, shared_data):
    image_dir, label_dir = tmp_path / "leftImg8bit/val/frankfurt", tmp_path / "gtFine/val/frankfurt"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    shutil.copy(shared_data / f"{CITY}_leftImg8bit.png", image_dir / "frankfurt_000000_000294_leftImg8bit.png")
    shutil.copy(shared_data / f"{CITY}_gtFine_labelIds.png", label_dir / "frankfurt_000000_000294_gtFine_labelIds.png")
    return tmp_path


def test_cityscapes_reader_maps_label_ids_to_the_task_label_set(cityscapes_root, shared_data):
    spec = InputSpec("rgb", height=128, width=256)
    sample = CityscapesDataset(cityscapes_root, "val", spec, label_set="dsec11")[0]
    train_ids = cv2.imread(str(shared_data / f"{CITY}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    expected = label_mapping("cityscapes19", "dsec11")[train_ids]
    assert (sample.label == expected).mean() > 0.99
    assert sample.meta["name"] == "frankfurt_000000_000294" and sample.modality == "rgb"
    bgr = cv2.imread(str(shared_data / f"{CITY}_leftImg8bit.png"))
    np.testing.assert_array_equal(sample.image, preprocess(bgr, "bgr8", spec))  # the nodes' path, bit for bit


def test_cityscapes_prefers_train_id_files_and_keeps_19_classes(cityscapes_root, shared_data):
    shutil.copy(shared_data / f"{CITY}_gtFine_labelTrainIds.png",
                cityscapes_root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png")
    sample = CityscapesDataset(cityscapes_root, "val", InputSpec("rgb", height=128, width=256), label_set="cityscapes19")[0]
    train_ids = cv2.imread(str(shared_data / f"{CITY}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sample.label, train_ids)
    assert sample.label.max() < CITYSCAPES_19.num_classes or sample.label.max() == 255


def test_deliver_labels_are_shifted_by_one_and_mapped_to_11_classes(tmp_path):
    depth_dir, label_dir = tmp_path / "depth/cloud/test/MAP_1", tmp_path / "semantic/cloud/test/MAP_1"
    depth_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    depth = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(depth_dir / "000001_depth_front.png"), depth)
    raw = np.zeros((16, 16, 3), np.uint8)
    raw[:, :, 2] = np.array([0, 1, 7, 13, 10, 23] * 43)[:256].reshape(16, 16)  # R channel (RGB order) holds ids + 1
    cv2.imwrite(str(label_dir / "000001_semantic_front.png"), raw)
    sample = DeliverDepthDataset(tmp_path, "test", InputSpec("depth", height=16, width=16), conditions=["cloud"])[0]
    # 0 → 255 ignore; 1 → Building; 7 → Road; 13 → Sky; 10 → Cars; 23 → Bus → car
    decode = {0: 255, 1: 1, 7: 5, 13: 0, 10: 8, 23: 8}
    np.testing.assert_array_equal(sample.label, np.vectorize(decode.get)(raw[:, :, 2]).astype(np.uint8))
    spec = InputSpec("depth", height=16, width=16)
    np.testing.assert_array_equal(sample.image, preprocess(depth[:, :, ::-1].copy(), "rgb8", spec))


def test_fmb_reads_real_thermal_frames_and_maps_15_to_9_classes(tmp_path, shared_data):
    (tmp_path / "test/Infrared").mkdir(parents=True)
    (tmp_path / "test/Label").mkdir(parents=True)
    rgbt = cv2.imread(str(shared_data / "mfnet_rgbt/images/01477D.png"), cv2.IMREAD_UNCHANGED)
    thermal = np.ascontiguousarray(rgbt[:, :, 3])
    cv2.imwrite(str(tmp_path / "test/Infrared/01477D.png"), thermal)
    label = np.tile(np.arange(15, dtype=np.uint8), (480, 43))[:, :640]
    cv2.imwrite(str(tmp_path / "test/Label/01477D.png"), label)
    spec = InputSpec("thermal", height=480, width=640)
    sample = FmbInfraredDataset(tmp_path, "test", spec)[0]
    np.testing.assert_array_equal(sample.image, preprocess(thermal, "mono8", spec))
    np.testing.assert_array_equal(sample.label, label_mapping("fmb15", "fmb9")[label])


def test_dsec_edge_pngs_pair_with_their_test_labels(tmp_path):
    (tmp_path / "69mask_test_edges/zurich_city_13_a").mkdir(parents=True)
    (tmp_path / "test_semantic_labels/zurich_city_13_a/11classes").mkdir(parents=True)
    edges = (np.random.default_rng(1).random((440, 640)) < 0.1).astype(np.uint8) * 255
    cv2.imwrite(str(tmp_path / "69mask_test_edges/zurich_city_13_a/000000.png"), edges)
    cv2.imwrite(str(tmp_path / "69mask_test_edges/zurich_city_13_a/000001.png"), edges)
    cv2.imwrite(str(tmp_path / "test_semantic_labels/zurich_city_13_a/11classes/000000.png"), np.full((440, 640), 5, np.uint8))
    data = DsecEdgeDataset(tmp_path, "test", InputSpec("events", height=512, width=512))
    assert len(data) == 2
    assert data[0].label.shape == (512, 512) and (data[0].label == 5).all()  # resized for evaluation like MADM
    assert data[1].label is None and data[1].image.shape == (3, 512, 512)


def write_camvid_folder(root, shared_data, count=4):
    names = sorted(p.stem for p in (shared_data / "camvid_subset/test").glob("*.png"))[:count]
    frames = []
    for index, name in enumerate(names):
        frame = f"s000_f{index:05d}"
        rgb = cv2.imread(str(shared_data / f"camvid_subset/test/{name}.png"))[:, :, ::-1]
        label = cv2.imread(str(shared_data / f"camvid_subset/testannot/{name}.png"), cv2.IMREAD_UNCHANGED)
        write_image(root, "rgb", frame, np.ascontiguousarray(rgb))
        write_image(root, "labels", frame, CAMVID_TO_DSEC[label])
        frames.append(frame)
    FolderMeta(frames=tuple(frames), modalities={"rgb": "rgb8"}, has_labels=True, label_set="dsec11",
               class_names=DSEC_11.class_names).write(root)
    return frames


def test_folder_reader_on_real_camvid_frames(tmp_path, shared_data):
    frames = write_camvid_folder(tmp_path, shared_data)
    data = FolderDataset(tmp_path, InputSpec("rgb", height=360, width=480))
    assert len(data) == len(frames)
    sample = data[2]
    name = sorted(p.stem for p in (shared_data / "camvid_subset/test").glob("*.png"))[2]
    camvid = cv2.imread(str(shared_data / f"camvid_subset/testannot/{name}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sample.label, CAMVID_TO_DSEC[camvid])
    assert {"sky", "building", "road", "car"} <= {DSEC_11.class_names[c] for c in np.unique(sample.label) if c != 255}
    with pytest.raises(InputError, match="holds no depth frames \\(it has rgb\\)"):
        FolderDataset(tmp_path, InputSpec("depth"))


def test_real_16bit_depth_files_read_as_millimetres(shared_data):
    array, encoding = read_modality_file(shared_data / "depth_samples/esanet/sample_depth.png", "depth")
    assert encoding == "16UC1" and array.dtype == np.uint16 and array.shape == (424, 512)
    with pytest.raises(InputError, match="is not a rgb image this reader understands"):
        read_modality_file(shared_data / "depth_samples/esanet/sample_depth.png", "rgb")


def test_training_augmentation_crops_flips_and_keeps_pairs_aligned():
    image = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    label = image.copy()
    augmentation = TrainAugmentation(resize_hw=(32, 64), crop_hw=(16, 16), flip_probability=0.5)
    rng = np.random.default_rng(0)
    flipped = 0
    for _ in range(20):
        out_image, out_label = augmentation(image, label, rng)
        assert out_image.shape == (16, 16) and out_label.shape == (16, 16)
        np.testing.assert_array_equal(out_image, out_label)
        flipped += int(out_image[0, 0] > out_image[0, -1])
    assert 0 < flipped < 20


def test_required_class_steers_the_crop():
    label = np.zeros((64, 64), np.uint8)
    label[:16, :16] = 3  # a rare region in one corner: ~8 % of random crops show 10 pixels of it
    augmentation = TrainAugmentation(resize_hw=(64, 64), crop_hw=(16, 16), flip_probability=0, crop_tries=50)
    rng = np.random.default_rng(1)
    hits = sum(int((augmentation(label, label, rng, required_class=3, min_class_pixels=10)[1] == 3).sum() >= 10)
               for _ in range(20))
    blind = sum(int((augmentation(label, label, rng)[1] == 3).sum() >= 10) for _ in range(20))
    assert hits >= 18 and blind < hits


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


def test_bad_trees_and_labels_are_named(tmp_path, cityscapes_root):
    with pytest.raises(InputError, match="Cityscapes leftImg8bit folder .*train not found"):
        CityscapesDataset(tmp_path, "train", InputSpec("rgb"))
    with pytest.raises(ConfigError, match="unknown DELIVER conditions \\['snow'\\]"):
        DeliverDepthDataset(tmp_path, "test", InputSpec("depth"), conditions=["snow"])
    with pytest.raises(ConfigError, match="Cityscapes is an RGB data set"):
        CityscapesDataset(cityscapes_root, "val", InputSpec("depth"))
    with pytest.raises(ConfigError, match="augmentation crop \\(64, 64\\) must equal the network size \\(128, 256\\)"):
        CityscapesDataset(cityscapes_root, "val", InputSpec("rgb", height=128, width=256),
                          augmentation=TrainAugmentation((128, 256), (64, 64)))
    label = cityscapes_root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="label .*labelIds.png is 10×10 but its image .* is 256×128"):
        CityscapesDataset(cityscapes_root, "val", InputSpec("rgb", height=128, width=256))[0]
    (tmp_path / "test/Infrared").mkdir(parents=True)
    (tmp_path / "test/Label").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "test/Infrared/a.png"), np.zeros((4, 4), np.uint8))
    cv2.imwrite(str(tmp_path / "test/Label/a.png"), np.full((4, 4), 200, np.uint8))
    with pytest.raises(InputError, match="a.png has values \\[200\\] outside the data set's 15 classes"):
        FmbInfraredDataset(tmp_path, "test", InputSpec("thermal", height=4, width=4))[0]


def test_dsec_events_are_rendered_by_the_node_accumulator_at_each_label_time(tmp_path):
    from madm_ros.events.edge_frames import EdgeFrameConfig, accumulate
    from madm_train.data.datasets import DsecEventsDataset
    from tests.madm_ros.events.test_event_files import make_events, write_dsec

    sequence = tmp_path / "test/zurich_city_13_a"
    (sequence / "events/left").mkdir(parents=True)
    (sequence / "semantic/left/11classes/data").mkdir(parents=True)
    t_offset = 5_000_000
    events = make_events(200_000, width=640, height=480, t0=t_offset, duration_us=400_000, seed=3)
    write_dsec(sequence / "events/left/events.h5", events, t_offset=t_offset, compress=False)
    stamps = [t_offset + 100_000, t_offset + 150_000, t_offset + 200_000, t_offset + 250_000]
    (sequence / "semantic/timestamps.txt").write_text("\n".join(map(str, stamps)) + "\n")
    for index in range(4):
        cv2.imwrite(str(sequence / f"semantic/left/11classes/data/{index:06d}.png"), np.full((440, 640), index, np.uint8))
    spec = InputSpec("events", height=440, width=640)
    data = DsecEventsDataset(tmp_path, "test", spec, events={"window_us": 30_000}, every=2)
    assert [s.meta["name"] for s in data] == ["zurich_city_13_a/000000", "zurich_city_13_a/000002"]
    sample = data[1]
    window = events[(events.t >= stamps[2] - 30_000) & (events.t < stamps[2])]
    frame = accumulate(window, EdgeFrameConfig(width=640, height=480, window_us=30_000, crop=(0, 0, 640, 440)))
    assert frame.shape == (440, 640) and frame.any()
    np.testing.assert_array_equal(sample.image, preprocess(frame, "mono8", spec))
    assert (sample.label == 2).all()


def test_dsec_events_config_is_checked_when_the_data_set_is_made(tmp_path):
    from madm_train.data.datasets import DsecEventsDataset

    (tmp_path / "test/zurich_city_13_a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="unknown DSEC events config keys \\['window'\\]"):
        DsecEventsDataset(tmp_path, "test", InputSpec("events"), events={"window": 1})
    with pytest.raises(ConfigError, match="\\['mode'\\] do not apply"):
        DsecEventsDataset(tmp_path, "test", InputSpec("events"), events={"mode": "count"})
    with pytest.raises(InputError, match="timestamps.txt not found"):
        DsecEventsDataset(tmp_path, "test", InputSpec("events"))


def test_each_dataloader_worker_draws_its_own_crops(cityscapes_root):
    torch_data = pytest.importorskip("torch.utils.data")
    spec = InputSpec("rgb", height=64, width=64)
    data = CityscapesDataset(cityscapes_root, "val", spec, augmentation=TrainAugmentation((128, 256), (64, 64)))
    first = [s.image for s in (data[0], data[0])]
    assert not np.array_equal(*first)  # successive draws differ
    loader = torch_data.DataLoader(torch_data.Subset(data, [0, 0]), batch_size=None, num_workers=2,
                                   collate_fn=lambda s: s.image)
    a, b = list(loader)
    assert not np.array_equal(a, b)  # worker 0 and worker 1 do not repeat each other
