"""The committed default models (``models/*_student.onnx``, made by ``scripts/make-default-models``).

Each one must load through the runtime's own backend loader, match the sha256 and metadata of its
card (``models/<modality>_student.json``), and segment a few frames of *fresh* synthetic scenes
(a generator seed neither the benchmark's data nor its prior used, the card's scene set and size)
clearly better than any constant prediction: a random-initialised or mis-wired student fails that.
Against the layout-only baseline (the committed ``models/layout_baseline.png``, fitted on the
training labels) each must keep, on those fresh frames, the margin its card claims, within a
tolerance for so few frames.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from madm_ros.backends import load_backend
from madm_ros.metrics import ConfusionMatrix
from madm_ros.palettes import get_label_set

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
ONNX_FILES = sorted(MODELS.glob("*_student.onnx"))
FRESH_SEED = 7
"""Generator seed of the test scenes: the benchmark's data uses seed 0 and its prior's data seed 1."""
FRAMES, FRAMES_PER_SEQUENCE = 24, 3
MARGIN_OVER_CONSTANT = 3.0
"""mIoU points the model must beat the best constant prediction by on the fresh frames."""
FRACTION_OF_CARD = 0.5
"""... and at least this fraction of the card's held-out mIoU (few frames of new scenes scatter widely)."""
LAYOUT_TOLERANCE = 5.0
"""mIoU points by which the fresh frames' student − layout-only margin may fall short of the card's."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_of(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))


def modality_of(path: Path) -> str:
    return path.name.removesuffix("_student.onnx")


def test_the_demo_default_event_model_is_committed():
    assert (MODELS / "events_student.onnx").is_file(), "run scripts/make-default-models --modalities events"
    assert (MODELS / "events_student.json").is_file()
    assert (MODELS / "README.md").is_file()


@pytest.mark.parametrize("path", ONNX_FILES, ids=modality_of)
def test_a_default_model_loads_and_matches_its_card(path):
    card = card_of(path)
    assert sha256(path) == card["onnx_sha256"], \
        f"{path.name} differs from its card: regenerate both with scripts/make-default-models"
    backend = load_backend(path, "onnxruntime", providers="cpu", threads=1)
    metadata = backend.metadata
    spec = metadata.input_spec
    assert spec.modality == modality_of(path) == card["modality"]
    assert metadata.label_set == card["label_set"]
    assert list(get_label_set(metadata.label_set).class_names) == card["class_names"]
    assert [1, 3, spec.height, spec.width] == card["input"]["shape"]
    assert backend.describe()["backend"] == "onnxruntime"
    out = backend.infer(np.zeros((1, 3, spec.height, spec.width), np.float32))
    assert out.labels.shape == (1, spec.height, spec.width) and out.labels.dtype == np.uint8
    assert out.logits.shape[1] == len(card["class_names"])
    # The card's headline numbers are its held-out split's, and its targets say truly whether they hold.
    metrics, targets = card["metrics"], card["targets"]
    assert card["miou"] == metrics["student"]["miou"]
    assert card["layout_baseline_miou"] == metrics["layout_baseline"]["miou"]
    assert targets["student_within_3_of_teacher"] == (
        card["miou"] >= metrics["teacher"]["miou"] - targets["max_points_below_teacher"])
    assert targets["student_15_above_layout_baseline"] == (
        card["miou"] >= card["layout_baseline_miou"] + targets["min_points_above_layout"])
    # Distillation keeps the teacher's quality (issue 19's first target holds for every committed student).
    assert targets["student_within_3_of_teacher"]
    assert sha256(MODELS / metrics["layout_baseline"]["class_map"]) == metrics["layout_baseline"]["class_map_sha256"]


@pytest.fixture(scope="module")
def fresh_scenes(tmp_path_factory):
    """One small folder of fresh synthetic scenes like the cards' data, with every committed model's modality."""
    from madm_ros.synthetic import SynthConfig, generate

    if not ONNX_FILES:
        pytest.skip("no default models in models/")
    data = card_of(ONNX_FILES[0])["data"]
    assert all(card_of(p)["data"]["generate_hw"] == data["generate_hw"] for p in ONNX_FILES)
    modalities = tuple(sorted({modality_of(p) for p in ONNX_FILES}))
    folder = tmp_path_factory.mktemp("fresh_scenes")
    return generate(SynthConfig(frames=FRAMES, height=data["generate_hw"][0], width=data["generate_hw"][1],
                                seed=FRESH_SEED, frames_per_sequence=FRAMES_PER_SEQUENCE, modalities=modalities,
                                scenes=data["scenes"]), folder)


def miou(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    matrix = ConfusionMatrix(num_classes)
    matrix.update(predictions, labels)
    return 100 * matrix.miou()


def fresh_scores(backend, folder: Path) -> dict[str, float]:
    """mIoU (%) on the fresh frames: the model's ``labels`` output, the best constant prediction, the layout map."""
    import cv2

    from madm_train.data.datasets import FolderDataset

    metadata = backend.metadata
    num_classes = get_label_set(metadata.label_set).num_classes
    dataset = FolderDataset(folder, metadata.input_spec)  # the training path: madm_ros.preprocessing at the model's size
    samples = [dataset[i] for i in range(len(dataset))]
    labels = np.stack([s.label for s in samples])
    predictions = np.concatenate([backend.infer(s.image[None]).labels for s in samples])
    layout = cv2.imread(str(MODELS / "layout_baseline.png"), cv2.IMREAD_UNCHANGED)
    layout = cv2.resize(layout, labels.shape[:0:-1], interpolation=cv2.INTER_NEAREST)
    return {"model": miou(predictions, labels, num_classes),
            "constant": max(miou(np.full_like(labels, k), labels, num_classes) for k in range(num_classes)),
            "layout": miou(np.repeat(layout[None], len(labels), axis=0), labels, num_classes)}


@pytest.mark.parametrize("path", ONNX_FILES, ids=modality_of)
def test_a_default_model_segments_fresh_synthetic_scenes(path, fresh_scenes):
    card = card_of(path)
    backend = load_backend(path, "onnxruntime", providers="cpu", threads=1)
    scores = fresh_scores(backend, fresh_scenes)
    floor = max(scores["constant"] + MARGIN_OVER_CONSTANT, FRACTION_OF_CARD * card["miou"])
    assert scores["model"] > floor, (f"{path.name}: mIoU {scores['model']:.1f} on {FRAMES} fresh frames is not above "
                                     f"{floor:.1f} (best constant prediction {scores['constant']:.1f}, card {card['miou']:.1f})")
    claimed = card["miou"] - card["layout_baseline_miou"]
    margin = scores["model"] - scores["layout"]
    assert margin >= claimed - LAYOUT_TOLERANCE, (
        f"{path.name}: {margin:+.1f} mIoU points against the layout-only map on {FRAMES} fresh frames, the card claims "
        f"{claimed:+.1f} on its held-out split")
