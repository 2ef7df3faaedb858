"""The layout-only baseline: the per-pixel mode of the training labels, scored like any model."""

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from madm_ros.errors import InputError  # noqa: E402
from madm_ros.folder_layout import write_image  # noqa: E402
from madm_ros.palettes import DSEC_11  # noqa: E402
from madm_train.config import load_config  # noqa: E402
from madm_train.data.build import split_folder_frames  # noqa: E402
from madm_train.data.datasets import Sample  # noqa: E402
from madm_train.training.evaluate import evaluate  # noqa: E402
from madm_train.training.layout_baseline import LayoutBaseline, fit_layout_baseline, score_layout_baseline  # noqa: E402
from tests.madm_train.tiny_runs import tiny_overrides  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
U = 255
# Three 4×4 training labels: (0, 0) ties 0 against 1 (one label ignores it), (2, 0) is ignored once, the last row never labelled.
LABELS = np.array([
    [[0, 0, 1, 1], [0, 0, 1, 1], [U, 2, 2, 2], [U, U, U, U]],
    [[1, 1, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [U, U, U, U]],
    [[U, 1, 1, 1], [0, 0, 1, 1], [2, 3, 3, 3], [U, U, U, U]],
], dtype=np.uint8)
MODE = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [U, U, U, U]], dtype=np.uint8)


def test_each_pixel_takes_the_most_frequent_training_class_and_unlabelled_pixels_give_255():
    baseline = LayoutBaseline.fit(LABELS, (4, 4), DSEC_11.num_classes)
    np.testing.assert_array_equal(baseline.class_map, MODE)  # ties go to the lower class id


def test_labels_of_another_size_are_resized_to_the_grid_with_nearest_neighbour():
    doubled = [np.kron(label, np.ones((2, 2), dtype=np.uint8)) for label in LABELS]  # 8×8, blocks of 2×2
    np.testing.assert_array_equal(LayoutBaseline.fit(doubled, (4, 4), DSEC_11.num_classes).class_map, MODE)


def test_the_same_map_is_predicted_for_every_image_whatever_it_shows():
    baseline = LayoutBaseline.fit(LABELS, (4, 4), DSEC_11.num_classes)
    ids = baseline.predict(torch.rand(3, 3, 4, 4))
    assert ids.shape == (3, 4, 4) and not torch.is_floating_point(ids)
    for prediction in ids:
        np.testing.assert_array_equal(prediction.numpy(), MODE)


def test_scored_through_evaluate_with_never_labelled_pixels_counted_as_misses(tmp_path):
    baseline = LayoutBaseline.fit(LABELS, (4, 4), DSEC_11.num_classes)
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [4, 4, 4, 4]], dtype=np.uint8)
    rng = np.random.default_rng(0)
    test = [Sample(rng.random((3, 4, 4)).astype(np.float32), truth, "events", {"name": f"t{i}"}) for i in range(2)]
    metrics = evaluate(baseline.predict, test, DSEC_11, tmp_path, batch_size=2)
    # IoU: class 0 3/4, class 1 4/5, class 2 2/4, class 3 0/2 (predicted only), class 4 0/4 (predicted 255)
    assert metrics["miou"] == pytest.approx((0.75 + 0.8 + 0.5 + 0 + 0) / 5)
    assert metrics["pixel_accuracy"] == pytest.approx(9 / 16) and metrics["images"] == 2
    assert (tmp_path / "metrics.json").exists()


def test_bad_labels_and_an_empty_training_set_are_refused():
    with pytest.raises(InputError, match=r"label ids must be in 0\.\.10 or 255, found \[11\]"):
        LayoutBaseline.fit([np.full((4, 4), 11, np.uint8)], (4, 4), DSEC_11.num_classes)
    with pytest.raises(InputError, match="at least one training label"):
        LayoutBaseline.fit([], (4, 4), DSEC_11.num_classes)


def test_evaluate_refuses_class_ids_of_the_wrong_rank_or_range():
    sample = Sample(np.zeros((3, 4, 4), np.float32), np.zeros((4, 4), np.uint8), "events", {"name": "t"})
    with pytest.raises(InputError, match="B×H×W"):
        evaluate(lambda images: torch.zeros(1, 1, 4, 4, dtype=torch.int64), [sample], DSEC_11)
    with pytest.raises(InputError, match=r"0\.\.255, got -1\.\.-1"):
        evaluate(lambda images: torch.full((1, 4, 4), -1, dtype=torch.int64), [sample], DSEC_11)


@pytest.fixture
def scenes(synth_folder, tmp_path):
    """A private copy of the synthetic folder (its labels are rewritten) and a config using it as source and target."""
    folder = tmp_path / "scenes"
    shutil.copytree(synth_folder, folder)
    config = load_config(REPO / "config/train/synthetic_event_tiny.yaml", tiny_overrides(folder, tmp_path / "run"))
    return folder, config


def test_only_the_training_labels_are_fitted_and_the_test_labels_are_scored(scenes):
    folder, config = scenes
    source_frames, _, test_frames = split_folder_frames(folder)
    fitted = fit_layout_baseline(config).class_map
    assert fitted.shape == (64, 64) and (fitted != U).all()  # the evaluation grid (crop_hw), every pixel labelled
    before = score_layout_baseline(config)

    for name in test_frames:  # other test labels: the same map, another score
        write_image(folder, "labels", name, np.full((64, 128), 5, np.uint8))
    np.testing.assert_array_equal(fit_layout_baseline(config).class_map, fitted)
    after = score_layout_baseline(config)
    assert after["miou"] != before["miou"] and after["images"] == before["images"] == len(test_frames)

    for name in source_frames:  # other training labels: another map
        write_image(folder, "labels", name, np.full((64, 128), 7, np.uint8))
    assert (fit_layout_baseline(config).class_map == 7).all()
