"""Data-set readers on fixture trees in the publishers' layouts, built from real samples where they exist."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.folder_layout import FolderMeta, write_image
from madm_ros.palettes import CITYSCAPES_19, DELIVER_25_NAMES, DSEC_11, label_mapping
from madm_ros.preprocessing import InputSpec, preprocess
from madm_train.config import load_config
from madm_train.data.augment import TrainAugmentation, resize_label
from madm_train.data.build import build_datasets
from madm_train.data.datasets import (
    CityscapesDataset,
    DeliverDepthDataset,
    DsecEdgeDataset,
    FmbInfraredDataset,
    FolderDataset,
    read_modality_file,
)
from tests.madm_train.tiny_runs import tiny_overrides

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


def write_deliver_frame(root, stored_ids):
    """One DELIVER test frame: a random 3-channel depth PNG and an RGB label whose R channel holds
    ``stored_ids`` (class + 1, 0 unlabelled, as DELIVER stores them) and whose G and B channels hold
    noise, which the reader must not look at. Returns the depth image (BGR, as written)."""
    depth_dir, label_dir = root / "depth/cloud/test/MAP_1", root / "semantic/cloud/test/MAP_1"
    depth_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 256, (*stored_ids.shape, 3), dtype=np.uint8)
    cv2.imwrite(str(depth_dir / "000001_depth_front.png"), depth)
    label = rng.integers(0, 256, (*stored_ids.shape, 3), dtype=np.uint8)
    label[:, :, 2] = stored_ids  # OpenCV writes BGR: index 2 is the R channel
    cv2.imwrite(str(label_dir / "000001_semantic_front.png"), label)
    return depth


def test_deliver_labels_are_shifted_by_one_and_mapped_to_11_classes(tmp_path):
    stored = np.array([0, 1, 7, 13, 10, 23] * 43, np.uint8)[:256].reshape(16, 16)
    depth = write_deliver_frame(tmp_path, stored)
    spec = InputSpec("depth", height=16, width=16)
    sample = DeliverDepthDataset(tmp_path, "test", spec, conditions=["cloud"])[0]
    # 0 → 255 ignore; 1 → Building; 7 → Road; 13 → Sky; 10 → Cars; 23 → Bus → car
    decode = {0: 255, 1: 1, 7: 5, 13: 0, 10: 8, 23: 8}
    np.testing.assert_array_equal(sample.label, np.vectorize(decode.get)(stored).astype(np.uint8))
    np.testing.assert_array_equal(sample.image, preprocess(depth[:, :, ::-1].copy(), "rgb8", spec))


def test_deliver_stored_255_stays_ignore(tmp_path):
    """MADM subtracts one from DELIVER labels except where they hold 255 (ignore already)."""
    terrain, truck = DELIVER_25_NAMES.index("Terrain") + 1, DELIVER_25_NAMES.index("Truck") + 1
    stored = np.array([[0, 255, 1, terrain], [truck, 255, 0, 13]], np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    write_deliver_frame(tmp_path, stored)
    spec = InputSpec("depth", height=8, width=16)
    label = DeliverDepthDataset(tmp_path, "test", spec, conditions=["cloud"])[0].label
    names = {value: DSEC_11.class_names.index(name) for value, name in
             ((1, "building"), (terrain, "vegetation"), (truck, "car"), (13, "sky"))}
    np.testing.assert_array_equal(label, np.vectorize(lambda v: names.get(v, 255))(stored).astype(np.uint8))
    assert (label[stored == 255] == 255).all() and (label[stored == 0] == 255).all()
    stored[0, 0] = 26  # one past the 25 classes: still refused, 255 is the only value let through
    write_deliver_frame(tmp_path, stored)
    with pytest.raises(InputError, match="semantic_front.png has values \\[25\\] outside the data set's 25 classes"):
        DeliverDepthDataset(tmp_path, "test", spec, conditions=["cloud"])[0]


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


def test_dsec_edge_frames_and_labels_of_other_sizes_are_each_resized(tmp_path):
    """MADM resizes a DSEC frame and its label to the network size each on its own (label nearest)."""
    (tmp_path / "69mask_test_edges/zurich_city_13_a").mkdir(parents=True)
    (tmp_path / "test_semantic_labels/zurich_city_13_a/11classes").mkdir(parents=True)
    rows = np.linspace(0, 255, 480).astype(np.uint8)  # edge frame 640×480, brightness grows downwards
    edges = np.repeat(rows[:, None], 640, axis=1)
    classes = (np.arange(440) * 11 // 440).astype(np.uint8)  # label 640×440, classes 0..10 downwards
    label = np.repeat(classes[:, None], 640, axis=1)
    cv2.imwrite(str(tmp_path / "69mask_test_edges/zurich_city_13_a/000000.png"), edges)
    cv2.imwrite(str(tmp_path / "test_semantic_labels/zurich_city_13_a/11classes/000000.png"), label)
    spec = InputSpec("events", height=512, width=512)
    sample = DsecEdgeDataset(tmp_path, "test", spec)[0]
    np.testing.assert_array_equal(sample.image, preprocess(edges, "mono8", spec))
    np.testing.assert_array_equal(sample.label, resize_label(label, (512, 512)))
    assert sample.meta["original_size"] == (480, 640)
    train = DsecEdgeDataset(tmp_path, "test", InputSpec("events", height=64, width=64),
                            augmentation=TrainAugmentation((128, 192), (64, 64)))
    for _ in range(5):
        crop = train[0]
        # both span the same scene top to bottom, so brightness and class still agree row by row
        expected = crop.image[0, :, 0] * 255 * 11 / 256
        assert crop.label.shape == (64, 64) and np.abs(crop.label[:, 0] - expected).max() < 1.2


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


def test_a_folder_source_in_the_target_modality_yields_its_labelled_modality_frames(synth_folder, tmp_path):
    whole = ["data.crop_hw=[64, 128]", "data.flip_probability=0"]  # the augmentation keeps the frame as it is
    yaml = Path(__file__).resolve().parents[2] / "config/train/synthetic_event_tiny.yaml"
    overrides = [*tiny_overrides(synth_folder, tmp_path / "run"), *whole]
    rgb_source = build_datasets(load_config(yaml, overrides))[0]
    source = build_datasets(load_config(yaml, [*overrides, "data.source_modality=events"]))[0]
    assert (rgb_source.spec.modality, source.spec.modality) == ("rgb", "events")
    assert [r.name for r in source.records] == [r.name for r in rgb_source.records]  # the same training split
    name = source.records[0].name
    events = FolderDataset(synth_folder, InputSpec("events", height=64, width=128), frames=[name])[0]
    sample = source[0]
    assert sample.modality == "events" and source.records[0].image_path.parent.name == "events"
    np.testing.assert_array_equal(sample.image, events.image)
    np.testing.assert_array_equal(sample.label, events.label)
    assert not np.array_equal(sample.image, rgb_source[0].image)


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


def write_dsec_sequence(root):
    """A DSEC-Semantic test sequence: 400 ms of random 640×480 events, four 640×440 labels (label k
    is all class k) 50 ms apart. Returns the events and the label time stamps."""
    from tests.madm_ros.events.test_event_files import make_events, write_dsec

    sequence = root / "test/zurich_city_13_a"
    (sequence / "events/left").mkdir(parents=True)
    (sequence / "semantic/left/11classes/data").mkdir(parents=True)
    t_offset = 5_000_000
    events = make_events(200_000, width=640, height=480, t0=t_offset, duration_us=400_000, seed=3)
    write_dsec(sequence / "events/left/events.h5", events, t_offset=t_offset, compress=False)
    stamps = [t_offset + 100_000, t_offset + 150_000, t_offset + 200_000, t_offset + 250_000]
    (sequence / "semantic/timestamps.txt").write_text("\n".join(map(str, stamps)) + "\n")
    for index in range(4):
        cv2.imwrite(str(sequence / f"semantic/left/11classes/data/{index:06d}.png"), np.full((440, 640), index, np.uint8))
    return events, stamps


def test_dsec_events_are_rendered_by_the_node_accumulator_at_each_label_time(tmp_path):
    from madm_ros.events.edge_frames import EdgeFrameConfig, accumulate
    from madm_train.data.datasets import DsecEventsDataset

    events, stamps = write_dsec_sequence(tmp_path)
    spec = InputSpec("events", height=440, width=640)
    data = DsecEventsDataset(tmp_path, "test", spec, events={"window_us": 30_000}, every=2)
    assert [s.meta["name"] for s in data] == ["zurich_city_13_a/000000", "zurich_city_13_a/000002"]
    sample = data[1]
    window = events[(events.t >= stamps[2] - 30_000) & (events.t < stamps[2])]
    frame = accumulate(window, EdgeFrameConfig(width=640, height=480, window_us=30_000, crop=(0, 0, 640, 440)))
    assert frame.shape == (440, 640) and frame.any()
    np.testing.assert_array_equal(sample.image, preprocess(frame, "mono8", spec))
    assert (sample.label == 2).all()


def test_dsec_events_rendered_at_another_size_than_the_labels_are_resized_each(tmp_path):
    from madm_train.data.datasets import DsecEventsDataset

    write_dsec_sequence(tmp_path)
    spec = InputSpec("events", height=64, width=64)
    uncropped = {"window_us": 30_000, "crop": None}  # whole 640×480 sensor against 640×440 labels
    sample = DsecEventsDataset(tmp_path, "test", spec, events=uncropped)[3]
    assert sample.meta["original_size"] == (480, 640) and sample.label.shape == (64, 64) and (sample.label == 3).all()
    crop = DsecEventsDataset(tmp_path, "test", spec, events=uncropped,
                             augmentation=TrainAugmentation((96, 128), (64, 64)))[1]
    assert crop.image.shape == (3, 64, 64) and (crop.label == 1).all()


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
