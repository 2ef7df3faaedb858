"""The committed default models (``models/*_student.onnx``, made by ``scripts/make-default-models``).

Each one must load through the runtime's own backend loader, match the sha256 and metadata of its
card (``models/<modality>_student.json``), and segment a few frames of *fresh* synthetic scenes
(a generator seed neither the benchmark's data nor its prior used) clearly better than any
constant prediction: a random-initialised or mis-wired student fails that.
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
FRAMES, FRAMES_PER_SEQUENCE = 12, 3
GENERATE_HW = (128, 256)
"""The benchmark's generation size; the model resizes to its own input size as in training."""
MARGIN_OVER_CONSTANT = 3.0
"""mIoU points the model must beat the best constant prediction by on the fresh frames."""
FRACTION_OF_CARD = 0.5
"""... and at least this fraction of the card's held-out mIoU (few frames of new scenes scatter widely)."""


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
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["onnx_sha256"], \
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
    # The card's numbers are the held-out split's, and the student stays near its teacher (the target).
    assert card["metrics"]["student"]["miou"] >= card["metrics"]["teacher"]["miou"] - 3.0


@pytest.fixture(scope="module")
def fresh_scenes(tmp_path_factory):
    """One small folder of fresh synthetic scenes with every committed model's modality (generated once)."""
    from madm_ros.synthetic import SynthConfig, generate

    modalities = tuple(sorted({modality_of(p) for p in ONNX_FILES}))
    if not modalities:
        pytest.skip("no default models in models/")
    folder = tmp_path_factory.mktemp("fresh_scenes")
    return generate(SynthConfig(frames=FRAMES, height=GENERATE_HW[0], width=GENERATE_HW[1], seed=FRESH_SEED,
                                frames_per_sequence=FRAMES_PER_SEQUENCE, modalities=modalities), folder)


def fresh_miou(backend, folder: Path) -> tuple[float, float]:
    """(mIoU of the model's ``labels`` output, best mIoU of a constant prediction) on the fresh frames, in %."""
    from madm_train.data.datasets import FolderDataset

    metadata = backend.metadata
    label_set = get_label_set(metadata.label_set)
    dataset = FolderDataset(folder, metadata.input_spec)  # the training path: madm_ros.preprocessing at the model's size
    samples = [dataset[i] for i in range(len(dataset))]
    labels = np.stack([s.label for s in samples])
    predictions = np.concatenate([backend.infer(s.image[None]).labels for s in samples])
    model = ConfusionMatrix(label_set.num_classes)
    model.update(predictions, labels)
    constant = []
    for k in range(label_set.num_classes):
        matrix = ConfusionMatrix(label_set.num_classes)
        matrix.update(np.full_like(labels, k), labels)
        constant.append(100 * matrix.miou())
    return 100 * model.miou(), max(constant)


@pytest.mark.parametrize("path", ONNX_FILES, ids=modality_of)
def test_a_default_model_segments_fresh_synthetic_scenes(path, fresh_scenes):
    card = card_of(path)
    backend = load_backend(path, "onnxruntime", providers="cpu", threads=1)
    miou, constant = fresh_miou(backend, fresh_scenes)
    floor = max(constant + MARGIN_OVER_CONSTANT, FRACTION_OF_CARD * card["metrics"]["student"]["miou"])
    assert miou > floor, (f"{path.name}: mIoU {miou:.1f} on {FRAMES} fresh frames is not above {floor:.1f} "
                          f"(best constant prediction {constant:.1f}, card {card['metrics']['student']['miou']:.1f})")
