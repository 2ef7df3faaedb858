import cv2
import numpy as np
import pytest

from madm_ros.errors import InputError
from madm_ros.metrics import ConfusionMatrix, latency_summary
from madm_ros.palettes import CITYSCAPES_19


def test_hand_computed_confusion_matrix_and_iou():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, label)
    # rows: gt 0,1,2; columns: pred 0,1,2,unlabelled. Ignored pixels (gt 255) are left out.
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0]]
    # IoU0 = 1/(2+2-1), IoU1 = 2/(2+3-2), IoU2 = 1/(2+1-1)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_classes_absent_from_both_are_excluded_but_false_positives_count():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 2, 2]), np.array([0, 0, 0, 0]))
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5)
    assert iou[2] == 0.0  # predicted, never present: IoU 0, counted
    assert np.isnan(iou[1]) and np.isnan(iou[3])  # absent from both: excluded
    assert cm.miou() == pytest.approx(0.25)


def test_unlabelled_predictions_are_misses_but_not_false_positives():
    cm = ConfusionMatrix(2)
    cm.update(np.array([255, 0, 1]), np.array([0, 0, 1]))
    np.testing.assert_allclose(cm.iou(), [0.5, 1.0])


def test_dataset_level_accumulation_differs_from_mean_of_images():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]))
    cm.update(np.array([1]), np.array([1]))
    # Dataset level: IoU0 = 3/4, IoU1 = 1/2 → 0.625 (per-image averaging would give another number).
    assert cm.miou() == pytest.approx(0.625)


def test_real_cityscapes_label_against_itself_and_all_road(shared_data):
    label = cv2.imread(
        str(shared_data / "cityscapes_sample/labelled_256x128/frankfurt_000000_000294_gtFine_labelTrainIds.png"),
        cv2.IMREAD_UNCHANGED,
    )
    perfect = ConfusionMatrix(19)
    perfect.update(label, label)
    assert perfect.miou() == 1.0
    assert np.isfinite(perfect.iou()).sum() == 10
    road = ConfusionMatrix(19)
    road.update(np.zeros_like(label), label)
    summary = road.as_dict(CITYSCAPES_19.class_names)
    assert summary["per_class_iou"]["road"] == pytest.approx(9737 / (128 * 256 - 3869))
    assert summary["per_class_iou"]["terrain"] is None
    assert "| road |" in road.table(CITYSCAPES_19.class_names)


def test_bad_ids_and_shapes_are_reported():
    cm = ConfusionMatrix(3)
    with pytest.raises(InputError, match="label ids must be in 0..2 or 255, found \\[7\\]"):
        cm.update(np.array([0]), np.array([7]))
    with pytest.raises(InputError, match="predicted ids must be in 0..2 or 255, found \\[9\\]"):
        cm.update(np.array([9]), np.array([0]))
    with pytest.raises(InputError, match="prediction shape \\(2,\\) differs from label shape \\(3,\\)"):
        cm.update(np.zeros(2), np.zeros(3))


def test_latency_summary_percentiles():
    summary = latency_summary(list(range(1, 101)))
    assert summary["count"] == 100 and summary["max"] == 100
    assert summary["p50"] == pytest.approx(50.5) and summary["p99"] == pytest.approx(99.01)
    assert latency_summary([])["count"] == 0
