import json

import numpy as np
import pytest

from madm_ros.errors import InputError
from madm_ros.metrics import ConfusionMatrix
from madm_ros.palettes import DSEC_11
from madm_train.data.datasets import Sample
from madm_train.training.evaluate import evaluate

torch = pytest.importorskip("torch")


def make_samples(n=5, size=(8, 12), seed=0):
    rng = np.random.default_rng(seed)
    return [Sample(rng.random((3, *size)).astype(np.float32), rng.integers(0, 11, size, dtype=np.uint8), "depth",
                   {"name": f"seq/{i:03d}"}) for i in range(n)]


def oracle(samples):
    """A 'model' whose logits at half resolution put the true class on top."""
    lookup = {s.image.tobytes(): s.label for s in samples}

    def predict(images):
        labels = np.stack([lookup[i.numpy().tobytes()] for i in images])
        logits = torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), 11).permute(0, 3, 1, 2).float()
        return logits * 10

    return predict


def test_perfect_predictions_score_one_and_files_are_written(tmp_path):
    samples = make_samples()
    metrics = evaluate(oracle(samples), samples, DSEC_11, tmp_path, batch_size=2, qualitative=2)
    assert metrics["miou"] == 1.0 and metrics["images"] == 5
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["miou"] == 1.0 and set(on_disk["per_class_iou"]) == set(DSEC_11.class_names)
    assert sorted(p.name for p in (tmp_path / "qualitative").iterdir()) == ["seq_000.png", "seq_001.png"]
    assert "| **mean** | **100.00** |" in (tmp_path / "metrics.md").read_text()


def test_scores_equal_a_hand_accumulated_confusion_matrix():
    samples = make_samples(seed=1)

    def constant(images):
        logits = torch.zeros(len(images), 11, 4, 6)
        logits[:, 5] = 1.0  # always "road"
        return logits

    metrics = evaluate(constant, samples, DSEC_11, None, batch_size=3)
    matrix = ConfusionMatrix(11)
    for s in samples:
        matrix.update(np.full_like(s.label, 5), s.label)
    assert metrics["miou"] == pytest.approx(matrix.miou())
    assert metrics["confusion_matrix"] == matrix.matrix.tolist()


def test_unlabelled_splits_and_wrong_class_counts_are_refused():
    samples = make_samples(2)
    unlabelled = [Sample(s.image, None, s.modality, s.meta) for s in samples]
    with pytest.raises(InputError, match="no labelled images"):
        evaluate(oracle(samples), unlabelled, DSEC_11)
    with pytest.raises(InputError, match="predicts 19 classes but dsec11 has 11"):
        evaluate(lambda x: torch.zeros(len(x), 19, 8, 12), samples, DSEC_11)


def test_each_protocol_class_subset_adds_its_mean_iou():
    from madm_ros.palettes import CITYSCAPES_19, EVAL_CLASS_SUBSETS

    rng = np.random.default_rng(3)
    samples = [Sample(rng.random((3, 8, 12)).astype(np.float32), rng.integers(0, 19, (8, 12), dtype=np.uint8), "rgb",
                      {"name": f"s{i}"}) for i in range(4)]

    def road_everywhere(images):
        logits = torch.zeros(len(images), 19, 8, 12)
        logits[:, 0] = 1.0
        return logits

    metrics = evaluate(road_everywhere, samples, CITYSCAPES_19, None, eval_classes="synthia13")
    kept = [v for k, v in metrics["per_class_iou"].items() if k in EVAL_CLASS_SUBSETS["synthia13"] and v is not None]
    assert metrics["miou_synthia13"] == pytest.approx(np.mean(kept))
    assert metrics["miou_synthia13"] != pytest.approx(metrics["miou"])  # 13 of the 19 classes
    both = evaluate(road_everywhere, samples, CITYSCAPES_19, None, eval_classes=("synthia16", "synthia13"))
    kept = [v for k, v in both["per_class_iou"].items() if k in EVAL_CLASS_SUBSETS["synthia16"] and v is not None]
    assert both["miou_synthia16"] == pytest.approx(np.mean(kept))
    assert both["miou_synthia13"] == pytest.approx(metrics["miou_synthia13"])
    assert not any(k.startswith("miou_") for k in evaluate(road_everywhere, samples, CITYSCAPES_19, None))
