"""Export: ONNX parity with PyTorch at camera size, reduced-precision ONNX, clear CLI errors, TensorRT on a GPU."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from madm_ros.backends import load_backend  # noqa: E402
from madm_ros.backends.ort import OnnxRuntimeBackend  # noqa: E402
from madm_ros.errors import ConfigError  # noqa: E402
from madm_ros.preprocessing import InputSpec  # noqa: E402
from madm_train import cli  # noqa: E402
from madm_train.deploy.export import ExportOptions, export  # noqa: E402
from madm_train.deploy.pytorch_backend import PyTorchBackend  # noqa: E402
from madm_train.models.student import DDRNetStudent, save_student  # noqa: E402

HEIGHT, WIDTH = 480, 640


@pytest.fixture(scope="module")
def real_frames(tmp_path_factory):
    """Two synthetic event edge frames at camera size, through the training data path."""
    from madm_ros.synthetic import SynthConfig, generate
    from madm_train.data.datasets import FolderDataset

    folder = tmp_path_factory.mktemp("frames")
    generate(SynthConfig(frames=2, height=HEIGHT, width=WIDTH, seed=5, frames_per_sequence=2, modalities=("events",)), folder)
    frames = FolderDataset(folder, InputSpec("events", HEIGHT, WIDTH))
    return np.stack([frames[i].image for i in range(len(frames))])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, real_frames):
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    save_student(DDRNetStudent(11, channels=8), folder / "student", label_set="dsec11",
                 input_spec=InputSpec("events", HEIGHT, WIDTH))
    report = export(ExportOptions(student=folder / "student", out_dir=folder / "out", argmax_stride=4, frames=real_frames))
    return folder, report


def test_onnx_runtime_matches_pytorch_on_random_and_real_camera_size_inputs(exported):
    _, report = exported
    assert set(report["parity"]) == {"static_random", "dynamic_random", "static_real", "dynamic_real"}
    for values in report["parity"].values():
        assert values["pixels"] >= 2 * HEIGHT * WIDTH
        assert values["argmax_agreement"] >= 0.999
        assert values["max_abs_logit_error"] < 1e-2


def test_exported_files_describe_themselves_and_run_at_other_sizes(exported, caplog):
    folder, report = exported
    static = OnnxRuntimeBackend.load(report["onnx"]["static"], threads=1)
    assert static.metadata.label_set == "dsec11" and static.metadata.argmax_stride == 4
    assert static.metadata.input_spec == InputSpec("events", HEIGHT, WIDTH)
    assert json.loads((folder / "out" / "export.json").read_text())["opset"] == 17
    model = onnx.load(report["onnx"]["dynamic"])
    assert model.opset_import[0].version >= 17
    with caplog.at_level("INFO", logger="madm_ros.backends"):
        backend = load_backend(report["onnx"]["dynamic"])
    assert "backend auto: using onnxruntime" in caplog.text
    out = backend.infer(np.random.default_rng(0).random((2, 3, 440, 640), np.float32))
    assert out.labels.shape == (2, 440, 640) and out.labels.dtype == np.uint8
    assert out.logits.shape == (2, 11, 55, 80) and out.labels.max() < 11


def test_pytorch_backend_runs_the_same_graph(exported, real_frames):
    folder, report = exported
    ort_out = load_backend(report["onnx"]["static"]).infer(real_frames[:1])
    torch_out = PyTorchBackend.load(folder / "student", device="cpu").infer(real_frames[:1])
    assert (torch_out.labels == ort_out.labels).mean() >= 0.999  # both arg-max at the default 1/4
    np.testing.assert_allclose(torch_out.logits, ort_out.logits, atol=1e-2)


def test_int8_qdq_and_fp16_onnx_for_strongly_typed_tensorrt(exported, real_frames, tmp_path):
    from madm_ros.backends.onnx_precision import convert_fp16, quantize_int8_qdq

    _, report = exported
    source = report["onnx"]["static"]
    qdq = quantize_int8_qdq(source, tmp_path / "int8.onnx", real_frames)
    nodes = onnx.load(str(qdq)).graph
    quantizer_zero_points = {n.input[2] for n in nodes.node if n.op_type == "QuantizeLinear"}
    zero_points = [i for i in nodes.initializer if i.name in quantizer_zero_points]
    assert sum(n.op_type == "QuantizeLinear" for n in nodes.node) > 10
    assert zero_points and all(onnx.numpy_helper.to_array(z).dtype == np.int8 and not onnx.numpy_helper.to_array(z).any()
                               for z in zero_points)  # symmetric INT8: what TensorRT's explicit quantisation wants
    fp32 = load_backend(source).infer(real_frames[:1])
    int8 = load_backend(qdq).infer(real_frames[:1])
    assert (fp32.labels == int8.labels).mean() > 0.9
    half = onnx.load(str(convert_fp16(source, tmp_path / "fp16.onnx")))
    conv_weights = {n.input[1] for n in half.graph.node if n.op_type == "Conv"}
    assert {i.data_type for i in half.graph.initializer if i.name in conv_weights} == {onnx.TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_export_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="opset must be ≥ 17"):
        ExportOptions(student=tmp_path, out_dir=tmp_path, opset=13)
    with pytest.raises(ConfigError, match="int8 engines need calibration frames"):
        ExportOptions(student=tmp_path, out_dir=tmp_path, tensorrt=("int8",))
    with pytest.raises(ConfigError, match="unknown TensorRT precisions"):
        ExportOptions(student=tmp_path, out_dir=tmp_path, tensorrt=("fp64",))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_request_without_tensorrt_is_one_line_and_exit_2(exported, capsys, tmp_path):
    folder, _ = exported
    code = cli.main(["export", "--student", str(folder / "student"), "--out", str(tmp_path / "o"), "--tensorrt", "fp16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "tensorrt is not installed" in err
    assert not (tmp_path / "o").exists()  # refused before exporting anything


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_builds_validates_and_agrees_with_onnx_runtime(exported, real_frames, precision, tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from madm_ros.backends.tensorrt_build import build_engine

    _, report = exported
    shape = (1, 3, HEIGHT, WIDTH)
    engine = tmp_path / f"s_{precision}.engine"
    build_engine(report["onnx"]["static"], engine, precision=precision, min_shape=shape, opt_shape=shape, max_shape=shape,
                 calibration=real_frames)
    trt_out = load_backend(report["onnx"]["static"], "tensorrt", engine=engine, precision=precision).infer(real_frames[:1])
    ort_out = load_backend(report["onnx"]["static"], "onnxruntime", providers="cpu").infer(real_frames[:1])
    assert (trt_out.labels == ort_out.labels).mean() > (0.99 if precision == "fp32" else 0.9)


def test_export_reports_to_the_stderr_of_the_moment(exported, tmp_path, monkeypatch):
    import io

    folder, _ = exported
    stream = io.StringIO()  # as a caller (or pytest) that replaced sys.stderr after madm_train was imported
    monkeypatch.setattr("sys.stderr", stream)
    export(ExportOptions(student=folder / "student", out_dir=tmp_path, argmax_stride=4))
    assert "export: wrote" in stream.getvalue()


def test_an_export_at_another_size_describes_that_size_and_loads(exported, tmp_path):
    folder, _ = exported
    report = export(ExportOptions(student=folder / "student", out_dir=tmp_path, size=(240, 320), argmax_stride=4))
    backend = OnnxRuntimeBackend.load(report["onnx"]["static"], threads=1)  # checked against its metadata at load
    assert (backend.metadata.input_spec.height, backend.metadata.input_spec.width) == (240, 320)
    assert backend.infer(np.zeros((1, 3, 240, 320), np.float32)).labels.shape == (1, 240, 320)
