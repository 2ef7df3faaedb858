"""Distillation: a tiny MADM teacher taught to a student on synthetic event frames, on the CPU; teacher-logit cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_ros.preprocessing import InputSpec  # noqa: E402
from madm_train import cli  # noqa: E402
from madm_train.data.datasets import FolderDataset  # noqa: E402
from madm_train.deploy.distill import DistillOptions, distill  # noqa: E402
from madm_train.deploy.teacher_cache import TeacherCache  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPEC = InputSpec("events", 64, 128)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP barriers make two threads many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny random MADM teacher whose classifier is sharpened (so its arg-max depends on the frame) and 12 frames."""
    from madm_ros.synthetic import SynthConfig, generate
    from madm_train.models.tiny_sd import build_tiny_model, build_tiny_sd

    folder = tmp_path_factory.mktemp("distill")
    build_tiny_sd(folder / "sd", seed=0)
    torch.manual_seed(0)
    teacher = build_tiny_model(folder / "sd", 11)
    with torch.no_grad():
        teacher.head.classifier.weight.mul_(30)
    teacher.save(folder / "teacher")
    generate(SynthConfig(frames=12, height=64, width=128, seed=3, frames_per_sequence=4, modalities=("rgb", "events")),
             folder / "synth")
    return folder


def options(world, out, **extra):
    values = {"teacher": world / "teacher", "out_dir": out, "label_set": "dsec11", "input_spec": SPEC, "channels": 8,
              "iterations": 40, "batch_size": 4, "lr": 5e-3, "log_every": 10, **extra}
    return DistillOptions(**values)


@pytest.fixture(scope="module")
def report(world):
    return distill(options(world, world / "run"), FolderDataset(world / "synth", SPEC))


@pytest.mark.slow
def test_distillation_brings_the_student_closer_to_the_teacher(report):
    initial, final = report["initial"], report["final"]
    assert final["teacher_agreement"] > initial["teacher_agreement"] + 0.1
    assert final["teacher_kl"] < initial["teacher_kl"] / 10


@pytest.mark.slow
def test_a_run_writes_a_loadable_student_log_and_report(world, report):
    from madm_train.models.student import load_student

    run = world / "run"
    student, config = load_student(run / "student")
    assert config["label_set"] == "dsec11" and InputSpec.from_dict(config["input_spec"]) == SPEC
    assert config["distill"]["teacher"] == str(world / "teacher")
    assert student(torch.rand(1, 3, 64, 128)).shape == (1, 11, 8, 16)
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [10, 20, 30, 40]
    assert lines[-1]["kd"] < lines[0]["kd"]
    assert json.loads((run / "distill.json").read_text())["final"] == report["final"]


@pytest.mark.slow
def test_the_teacher_runs_once_per_frame(world, report, capsys):
    distill(options(world, world / "run2", iterations=1, cache_dir=world / "run" / "teacher_cache"),
            FolderDataset(world / "synth", SPEC))
    assert "12 cached, 0 to compute" in capsys.readouterr().err


def test_the_cache_is_keyed_by_teacher_and_frame_content_and_recovers_from_corruption(world, tmp_path):
    frame = np.random.default_rng(0).random((3, 64, 128), dtype=np.float32)
    cache = TeacherCache(tmp_path, world / "teacher", 11, stride=4, method="windowed-1")
    assert cache.get(frame) is None
    stored = cache.put(frame, torch.randn(11, 64, 128))
    assert stored.shape == (11, 16, 32) and stored.dtype == np.float16
    np.testing.assert_array_equal(cache.get(frame), stored)
    assert cache.get(frame[:, :, ::-1].copy()) is None  # another frame (or view) is another entry
    assert TeacherCache(tmp_path, world / "teacher", 11, stride=8, method="windowed-1").folder != cache.folder
    # the same teacher labelling frames another way (padding, not windows) never sees the old logits
    assert TeacherCache(tmp_path, world / "teacher", 11, stride=4, method="padded-0").get(frame) is None
    with pytest.raises(ValueError, match="method"):
        TeacherCache(tmp_path, world / "teacher", 11, method="../x")
    other = tmp_path / "other_teacher"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        data = (world / "teacher" / name).read_bytes()
        (other / name).write_bytes(data + (b" " if name == "config.json" else b""))
    # a changed teacher never sees the old logits
    assert TeacherCache(tmp_path, other, 11, method="windowed-1").get(frame) is None
    (cache.folder / f"{cache.frame_key(frame)}.npy").write_bytes(b"truncated")
    assert cache.get(frame) is None


def test_bad_options_are_refused(world, tmp_path):
    with pytest.raises(ConfigError, match="not a saved model folder"):
        options(world, tmp_path, teacher=tmp_path)
    with pytest.raises(ConfigError, match="both 0"):
        options(world, tmp_path, kd_weight=0.0, ce_weight=0.0)
    with pytest.raises(ConfigError, match="source_weight > 0 needs labelled source frames"):
        distill(options(world, tmp_path, source_weight=1.0), FolderDataset(world / "synth", SPEC))
    run = tmp_path / "adapt_run"  # an adaptation run's folder given as --out: its log.jsonl would be replaced
    (run / "model").mkdir(parents=True)
    (run / "log.jsonl").write_text('{"iteration": 1}\n')
    with pytest.raises(ConfigError, match=r"holds files distill does not write \(model\); give a new or empty folder"):
        distill(options(world, run), FolderDataset(world / "synth", SPEC))
    assert (run / "log.jsonl").read_text() == '{"iteration": 1}\n'


@pytest.mark.slow
def test_distill_and_export_commands_end_to_end(world, tmp_path, capsys):
    common = ["--config", str(REPO / "config/train/synthetic_event_tiny.yaml"),
              "--set", f"data.source_root={world / 'synth'}", "--set", f"data.target_root={world / 'synth'}",
              "--set", "data.synthetic_frames=0"]
    code = cli.main(["distill", "--teacher", str(world / "teacher"), *common, "--out", str(tmp_path / "run"),
                     "--size", "64x128", "--channels", "8", "--iterations", "2", "--batch-size", "2",
                     "--cache", str(world / "run" / "teacher_cache"), "--source-weight", "0.5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "teacher agreement" in err and "test mIoU" in err
    code = cli.main(["export", "--student", str(tmp_path / "run" / "student"), "--out", str(tmp_path / "export"),
                     *common, "--frames", "2", "--argmax-stride", "2"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "export" / "export.json").read_text())
    assert report["parity"]["static_real"]["argmax_agreement"] >= 0.999 and report["size"] == [64, 128]
