"""Inference backends: engine sidecar checks (no GPU needed), corrupt files, auto choice, light imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from madm_ros.backends import ModelMetadata, TensorSignature, check_batch, check_model_signature, load_backend
from madm_ros.backends.engine_info import (
    EngineInfo,
    check_engine_info,
    file_sha256,
    read_engine_info,
    sidecar_path,
    write_engine_info,
)
from madm_ros.errors import BackendError, ConfigError, InputError
from madm_ros.preprocessing import InputSpec

RUNNING = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}


@pytest.fixture
def engine(tmp_path):
    """A stand-in engine file with a sidecar describing it as built here, from ``model.onnx``."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx bytes")
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized plan")
    metadata = ModelMetadata("dsec11", InputSpec("events", 480, 640), 8, 8).to_json()
    info = EngineInfo(onnx_sha256=file_sha256(onnx), engine_sha256=file_sha256(path), precision="fp16", input_name="image",
                      min_shape=(1, 3, 480, 640), max_shape=(2, 3, 480, 640), outputs={"labels": "labels", "logits": "logits"},
                      metadata=metadata, **RUNNING)
    write_engine_info(path, info)
    return path, onnx, info


def test_sidecar_round_trips_and_a_matching_engine_is_accepted(engine):
    path, onnx, info = engine
    assert sidecar_path(path).name == "model.engine.json"
    assert read_engine_info(path) == info
    check_engine_info(info, engine=path, onnx=onnx, precision="fp16", input_shape=(2, 3, 480, 640), **RUNNING)


@pytest.mark.parametrize(("change", "message"), [
    ({"tensorrt_version": "11.4.0"}, "built with TensorRT 10.3.0, running 11.4.0"),
    ({"gpu_name": "NVIDIA H100"}, r"built for Orin \(sm 8.7\), running on NVIDIA H100"),
    ({"compute_capability": "9.0"}, "running on Orin"),
    ({"precision": "int8"}, "built for fp16, int8 requested"),
    ({"input_shape": (1, 3, 440, 640)}, r"input shape \(1, 3, 440, 640\) outside"),
    ({"input_shape": (3, 3, 480, 640)}, "outside the engine's"),
])
def test_an_engine_built_for_something_else_is_refused(engine, change, message):
    path, onnx, info = engine
    arguments = {**RUNNING, "onnx": onnx, "precision": "fp16", "input_shape": (1, 3, 480, 640), **change}
    with pytest.raises(BackendError, match=message):
        check_engine_info(info, engine=path, **arguments)


def test_an_engine_from_another_onnx_is_refused(engine):
    path, onnx, info = engine
    onnx.write_bytes(b"re-exported onnx")
    with pytest.raises(BackendError, match="built from another ONNX"):
        check_engine_info(info, engine=path, onnx=onnx, **RUNNING)


def test_a_truncated_engine_is_refused_by_its_checksum(engine):
    path, _, info = engine
    path.write_bytes(b"serialized")
    with pytest.raises(BackendError, match="checksum differs from its sidecar"):
        check_engine_info(info, engine=path, **RUNNING)


def test_every_problem_is_listed_at_once(engine):
    path, _, info = engine
    with pytest.raises(BackendError, match="TensorRT 10.3.0, running 11.0.0; built for Orin"):
        check_engine_info(info, engine=path, tensorrt_version="11.0.0", gpu_name="A100", compute_capability="8.0")


def test_missing_or_broken_sidecars_are_clear_errors(engine):
    path, _, info = engine
    sidecar_path(path).write_text("{not json")
    with pytest.raises(BackendError, match="cannot read engine sidecar"):
        read_engine_info(path)
    sidecar_path(path).write_text('{"format": "madm-engine/1", "precision": "fp16"}')
    with pytest.raises(BackendError, match="not a valid engine sidecar"):
        read_engine_info(path)
    write_engine_info(path, dataclasses.replace(info, precision="fp8"))
    with pytest.raises(BackendError, match="precision 'fp8'"):
        read_engine_info(path)
    sidecar_path(path).unlink()
    with pytest.raises(BackendError, match="has no sidecar"):
        load_backend(path.with_suffix(".onnx"), "tensorrt", engine=path)


def test_a_corrupt_onnx_file_is_a_backend_error(tmp_path):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    with pytest.raises(BackendError, match="cannot load ONNX model .*broken.onnx"):
        load_backend(bad, "onnxruntime")
    with pytest.raises(BackendError, match="not found"):
        load_backend(tmp_path / "missing.onnx", "onnxruntime")


def test_auto_without_any_usable_file_says_what_it_needs(tmp_path):
    with pytest.raises(BackendError, match="no installed backend can run"):
        load_backend(tmp_path / "model.bin")
    with pytest.raises(BackendError, match="unknown backend 'openvino'"):
        load_backend(tmp_path / "model.onnx", "openvino")


def test_batches_must_be_float32_nchw_with_three_channels():
    assert check_batch(np.zeros((1, 3, 4, 4), np.float32)).flags.c_contiguous
    for bad in (np.zeros((3, 4, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 3, 4, 4), np.float64)):
        with pytest.raises(InputError, match="float32 N×3×H×W"):
            check_batch(bad)


def test_importing_the_backends_loads_no_inference_library():
    code = ("import sys, madm_ros.backends, madm_ros.backends.engine_info, madm_ros.backends.ort, "
            "madm_ros.backends.tensorrt_engine, madm_ros.backends.onnx_precision\n"
            "print(sorted(m for m in ('torch', 'tensorrt', 'onnxruntime', 'onnx', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def hand_built_onnx(path, image_shape, classes, *, label_set="dsec11", spec=None, labels_type=None):
    """A tiny madm-shaped ONNX (``image`` → 1×1 Conv ``logits`` → ArgMax ``labels``) with metadata.

    ``image_shape`` may have rank 3 (unsqueezed to one channel inside) and strings for dynamic
    dimensions; ``classes`` is the number of logits channels.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    spec = spec or InputSpec("depth", 64, 128)
    nodes, first = [], "image"
    if len(image_shape) == 3:
        nodes.append(helper.make_node("Unsqueeze", ["image", "axis1"], ["image4"]))
        first = "image4"
    channels = 1 if len(image_shape) == 3 else image_shape[1]
    weights = helper.make_tensor("weights", TensorProto.FLOAT, [classes, channels, 1, 1],
                                 np.random.default_rng(0).normal(size=classes * channels).tolist())
    axis1 = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    nodes += [helper.make_node("Conv", [first, "weights"], ["logits"]),
              helper.make_node("ArgMax", ["logits"], ["ids"], axis=1, keepdims=0),
              helper.make_node("Cast", ["ids"], ["labels"], to=labels_type or TensorProto.UINT8)]
    batch, height, width = image_shape[0], image_shape[-2], image_shape[-1]
    graph = helper.make_graph(
        nodes, "hand_built", [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(image_shape))],
        [helper.make_tensor_value_info("labels", labels_type or TensorProto.UINT8, [batch, height, width]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes, height, width])],
        initializer=[weights, axis1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"madm": ModelMetadata(label_set, spec, 1, 1).to_json()})
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("image_shape", [(1, 3, 64, 128), ("batch", 3, "height", "width"), (1, 3, 64, "width")])
def test_a_model_that_fits_its_metadata_loads_and_runs(tmp_path, image_shape):
    pytest.importorskip("onnxruntime")
    backend = load_backend(hand_built_onnx(tmp_path / "good.onnx", image_shape, 11), "onnxruntime", threads=1)
    output = backend.infer(np.random.default_rng(0).random((1, 3, 64, 128), dtype=np.float32))
    assert output.labels.shape == (1, 64, 128) and output.labels.dtype == np.uint8
    assert output.logits.shape == (1, 11, 64, 128)


@pytest.mark.parametrize(("image_shape", "classes", "message"), [
    ((1, 32, 32), 11, r"refusing model .*small\.onnx: input is 1×32×32 float32; madm expects N×3×64×128 float32"),
    ((1, 5, 64, 128), 11, r"input is 1×5×64×128 float32; madm expects N×3×64×128 float32 \(3 channels"),
    ((1, 1, 64, 128), 11, r"input is 1×1×64×128 float32; madm expects N×3×64×128"),
    ((1, 3, 32, 32), 11, r"input is 1×3×32×32 float32; madm expects N×3×64×128 .*as its metadata's input_spec"),
    ((2, 3, 64, 128), 11, r"input is 2×3×64×128 float32; .*batch 1 or dynamic"),
    ((1, 3, 64, 128), 19, r"its logits have 19 channels but its label set 'dsec11' has 11 classes"),
    ((1, 3, 64, 128), 9, r"its logits have 9 channels but its label set 'dsec11' has 11 classes"),
])
def test_a_model_that_does_not_fit_its_metadata_is_refused_at_load(tmp_path, image_shape, classes, message):
    pytest.importorskip("onnxruntime")
    path = hand_built_onnx(tmp_path / "small.onnx", image_shape, classes)
    with pytest.raises(BackendError, match=message):
        load_backend(path, "onnxruntime", threads=1)


def test_every_signature_problem_is_listed_with_the_model_name(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto

    path = hand_built_onnx(tmp_path / "bad.onnx", (1, 5, 32, 32), 19, label_set="cityscapes19",
                           labels_type=TensorProto.INT64)
    with pytest.raises(BackendError, match=r"bad\.onnx: input is 1×5×32×32 .*; output 'labels' is 1×32×32 int64; "
                                           r"madm expects N×64×128 uint8 class ids\. Re-export"):
        load_backend(path, "onnxruntime", threads=1)
    unknown = hand_built_onnx(tmp_path / "unknown.onnx", (1, 3, 64, 128), 11, label_set="ade20k")
    with pytest.raises(BackendError, match="its metadata names unknown label set 'ade20k'"):
        load_backend(unknown, "onnxruntime", threads=1)


def test_metadata_with_impossible_strides_is_refused():
    with pytest.raises(ConfigError, match="logits_stride must be a positive integer, got 0"):
        ModelMetadata("dsec11", InputSpec("depth"), 0, 1)
    text = ModelMetadata("dsec11", InputSpec("depth"), 8, 4).to_json().replace('"argmax_stride": 4', '"argmax_stride": -4')
    with pytest.raises(BackendError, match=r"model\.onnx: unreadable madm metadata \(ModelMetadata.argmax_stride"):
        ModelMetadata.from_json(text, "model.onnx")


def test_signatures_describe_dynamic_dimensions():
    assert TensorSignature((None, 3, 64, None), "float32").describe() == "?×3×64×? float32"
    check_model_signature("m.onnx", ModelMetadata("fmb9", InputSpec("thermal", 64, 128), 8, 8),
                          image=TensorSignature((None, 3, None, None), "float32"),
                          labels=TensorSignature((None, None, None), "uint8"),
                          logits=TensorSignature((None, None, None, None), "float32"))


def test_auto_gives_onnx_runtime_its_threads_and_tensorrt_none(tmp_path, monkeypatch):
    """A node's ``threads`` (an ONNX Runtime setting) must not reach TensorRT's loader when ``auto`` picks an engine."""
    import inspect

    import madm_ros.backends as backends
    from madm_ros.backends.ort import OnnxRuntimeBackend
    from madm_ros.backends.tensorrt_engine import TensorRTBackend

    calls = []

    def fake(real):
        class Fake:
            @classmethod
            def load(cls, *args, **kwargs):
                inspect.signature(real.load).bind(*args, **kwargs)  # raises TypeError as the real loader would
                calls.append((real.__name__, kwargs))
                return cls

            @staticmethod
            def describe():
                return {}
        return Fake

    classes = {"tensorrt": fake(TensorRTBackend), "onnxruntime": fake(OnnxRuntimeBackend)}
    monkeypatch.setattr(backends, "_backend_class", classes.__getitem__)
    engine = tmp_path / "model.engine"
    for kind in ("tensorrt", "onnxruntime"):
        monkeypatch.setattr(backends, "_auto_kind", lambda model, engine, kind=kind: kind)
        backends.load_backend(tmp_path / "model.onnx", "auto", engine=engine, threads=2)
    assert calls == [("TensorRTBackend", {"onnx": tmp_path / "model.onnx"}), ("OnnxRuntimeBackend", {"threads": 2})]
