"""Milliseconds per frame of the distilled student against the MADM teacher, per backend, in one run.

Student: :class:`madm_train.models.student.DDRNetStudent` (random weights; speed does not depend on them)
exported through ``madm_train.deploy.export`` exactly as ``python -m madm_train export`` does (static ONNX
per size, arg-max in the graph), timed at 480×640 (VGA cameras) and 440×640 (DSEC events):

- ONNX Runtime CPU with 1 and 2 intra-op threads (``madm_ros.backends.ort``, the node's CPU path);
- PyTorch eager on the CPU (2 threads);
- with a GPU: PyTorch CUDA FP16, ONNX Runtime CUDA / TensorRT execution providers and a TensorRT
  FP16 engine where those are installed.

Teacher: the MADM model through the same PyTorch graph at 512×512, the size MADM runs at (the
real backbone resizes every input to 512²; 480×640 is not even a valid tiny-backbone input, whose
sides must be multiples of 64). On the CPU only the ``tiny`` preset is practical
(Stable-Diffusion-size random weights take tens of seconds per frame there); the tiny teacher is
far *faster* than the real one, so the speed-up measured against it is a lower bound.

Default students (``models/*_student.onnx``, the ones a fresh install runs): the whole per-frame
path of a node, :meth:`madm_ros.segmenter.Segmenter.segment` on one 480×640 frame of the student's
modality (preprocess and resize to the student's input, ONNX Runtime CPU, mask back at 480×640),
with 1 and 2 threads; issue 19's budget is 50 ms with 2 threads.

Every figure is the median and p90 over ``--runs`` timed runs after ``--warmup`` untimed ones,
batch 1, input already preprocessed (``madm_ros.preprocessing`` output). Other processes' CPU use
during the run is recorded (``machine.load``, ``bench.machine``): on a shared CPU, timings are inflated.

    scripts/in-env python bench/inference.py --json bench/results/inference.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import LoadWatch, machine_info

REPO = Path(__file__).resolve().parents[1]
SIZES = ((480, 640), (440, 640))


def time_ms(run: Any, x: np.ndarray, runs: int, warmup: int) -> dict[str, float]:
    from madm_ros.metrics import latency_summary

    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append(1000 * (time.perf_counter() - start))
    summary = latency_summary(times)
    return {"median": round(summary["p50"], 2), "p90": round(summary["p90"], 2)}


def key(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def export_student(folder: Path, channels: int, argmax_stride: int) -> dict[str, Path]:
    """Save a random student and export one static ONNX per size; returns size key → ONNX path."""
    import torch

    from madm_ros.preprocessing import InputSpec
    from madm_train.deploy.export import export_onnx
    from madm_train.deploy.pytorch_backend import load_graph
    from madm_train.models.student import DDRNetStudent, save_student

    torch.manual_seed(0)
    student_dir = folder / f"student_c{channels}"
    save_student(DDRNetStudent(11, channels=channels), student_dir, label_set="dsec11", input_spec=InputSpec("events", 480, 640))
    graph, metadata = load_graph(student_dir, argmax_stride=argmax_stride)
    return {key(size): export_onnx(graph, metadata, folder / f"c{channels}_s{argmax_stride}_{key(size)}.onnx", size=size,
                                   dynamic=False) for size in SIZES} | {"folder": student_dir}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/inference.json")
    parser.add_argument("--channels", type=int, default=24, help="student width of the headline figures (default 24)")
    parser.add_argument("--argmax-stride", type=int, default=4, help="arg-max stride of the headline figures (default 4)")
    parser.add_argument("--variants", default="32:8,32:4,24:8,24:1",
                        help="extra channels:argmax_stride students timed with ORT 2 threads at 480x640")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--teacher-runs", type=int, default=5)
    args = parser.parse_args()

    import torch

    from madm_ros.backends import load_backend
    from madm_train.deploy.pytorch_backend import PyTorchBackend
    from madm_train.models.tiny_sd import build_tiny_model, build_tiny_sd

    watch = LoadWatch()
    rng = np.random.default_rng(0)
    inputs = {key(s): rng.random((1, 3, *s), dtype=np.float32) for s in SIZES}
    result: dict[str, Any] = {
        "machine": None,  # filled in at the end, with the load during the run
        "student": {"architecture": "DDRNet-23-slim-style dual-resolution CNN (madm_train.models.student)",
                    "channels": args.channels, "argmax_stride": args.argmax_stride, "classes": 11},
        "method": f"batch 1, median and p90 of {args.runs} runs after {args.warmup} warm-ups; preprocessed input",
    }
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        onnx = export_student(folder, args.channels, args.argmax_stride)
        student_torch = PyTorchBackend.load(onnx["folder"], device="cpu", threads=2)
        student_torch.graph.model.aux = None  # inference graph only (the auxiliary head never runs there)
        result["student"]["parameters_m"] = round(sum(p.numel() for p in student_torch.graph.parameters()) / 1e6, 2)
        result["student_ort_cpu_ms"] = {}
        result["student_torch_cpu_ms"] = {}
        for size in map(key, SIZES):
            result["student_ort_cpu_ms"][size] = {
                f"threads_{n}": time_ms(load_backend(onnx[size], "onnxruntime", providers="cpu", threads=n).infer,
                                        inputs[size], args.runs, args.warmup) for n in (1, 2)}
            result["student_torch_cpu_ms"][size] = {"threads_2": time_ms(student_torch.infer, inputs[size], args.runs,
                                                                         args.warmup)}
            print(size, "student ORT", result["student_ort_cpu_ms"][size], "torch", result["student_torch_cpu_ms"][size])
        result["variants_ort_cpu_2_threads_480x640_ms"] = {}
        for variant in filter(None, args.variants.split(",")):
            channels, stride = (int(v) for v in variant.split(":"))
            path = export_student(folder / variant.replace(":", "_"), channels, stride)["480x640"]
            result["variants_ort_cpu_2_threads_480x640_ms"][f"c{channels}_argmax{stride}"] = time_ms(
                load_backend(path, "onnxruntime", providers="cpu", threads=2).infer, inputs["480x640"], args.runs,
                args.warmup)
            print(variant, result["variants_ort_cpu_2_threads_480x640_ms"][f"c{channels}_argmax{stride}"])

        result["default_students_segment_480x640_ms"] = default_student_figures(args)

        build_tiny_sd(folder / "sd", seed=0)
        build_tiny_model(folder / "sd", 11).save(folder / "teacher")
        teacher = PyTorchBackend.load(folder / "teacher", device="cpu", threads=2)
        result["teacher_cpu_ms"] = {"preset": "tiny (SD-1.x-shaped, channels 32/64/64/64; Stable-Diffusion size is "
                                              "far slower on a CPU and was not run)", "backend": "pytorch, 2 threads"}
        result["teacher_cpu_ms"]["512x512"] = time_ms(teacher.infer, rng.random((1, 3, 512, 512), dtype=np.float32),
                                                      args.teacher_runs, 1)
        print("teacher", result["teacher_cpu_ms"])

        if torch.cuda.is_available():
            result["gpu"] = gpu_figures(onnx, inputs, args)

    ort_2 = result["student_ort_cpu_ms"]["480x640"]["threads_2"]["median"]
    # Per frame: the student at 480x640 (more pixels) against the tiny teacher at its 512x512.
    result["speedup_student_ort_2_threads_vs_tiny_teacher"] = round(result["teacher_cpu_ms"]["512x512"]["median"] / ort_2, 1)
    defaults = result["default_students_segment_480x640_ms"]
    result["targets"] = {"default_students_segment_480x640_2_threads_le_50_ms":
                         bool(defaults) and all(d["threads_2"]["median"] <= 50 for d in defaults.values()),
                         "student_ort_cpu_2_threads_480x640_le_50_ms": ort_2 <= 50,
                         "student_ge_50x_faster_than_teacher_cpu": result[
                             "speedup_student_ort_2_threads_vs_tiny_teacher"] >= 50}
    result["machine"] = machine_info(("torch", "onnxruntime"), watch)
    load, cpus = result["machine"]["load"], result["machine"]["cpus"]
    result["note"] = (f"other processes used {load['other_processes_cores_mean']:.2f} of {cpus} cores during the run: "
                      + ("figures from a busy machine are inflated and noisy" if load["contended"] else "a quiet machine"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["targets"]), "->", args.json)


FRAME_ENCODINGS = {"events": "mono8", "depth": "16UC1", "thermal": "mono16"}
"""The sensor encoding each default student is timed with (an edge frame, millimetres, raw counts)."""


def default_student_figures(args: argparse.Namespace) -> dict[str, Any]:
    """``Segmenter.segment`` of each committed default student on a 480×640 frame, ORT CPU, 1 and 2 threads."""
    from madm_ros.segmenter import Segmenter

    rng = np.random.default_rng(1)
    frames = {"mono8": (rng.random((480, 640)) < 0.1).astype(np.uint8) * 255,
              "16UC1": rng.integers(500, 20000, (480, 640), dtype=np.uint16),
              "mono16": rng.integers(7000, 9000, (480, 640), dtype=np.uint16)}
    figures: dict[str, Any] = {}
    for path in sorted((REPO / "models").glob("*_student.onnx")):
        modality = path.name.removesuffix("_student.onnx")
        encoding = FRAME_ENCODINGS[modality]
        figures[modality] = {"encoding": encoding}
        for n in (1, 2):
            segmenter = Segmenter.load(path, "onnxruntime", providers="cpu", threads=n)
            figures[modality]["input_hw"] = [segmenter.spec.height, segmenter.spec.width]
            figures[modality][f"threads_{n}"] = time_ms(lambda x, s=segmenter, e=encoding: s.segment(x, e),
                                                        frames[encoding], args.runs, args.warmup)
        print("default", modality, figures[modality])
    return figures


def gpu_figures(onnx: dict[str, Path], inputs: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """PyTorch CUDA FP16, ORT CUDA / TensorRT EPs and a TensorRT FP16 engine, where installed."""
    import importlib.util

    import onnxruntime
    import torch

    from madm_ros.backends import load_backend
    from madm_train.deploy.pytorch_backend import PyTorchBackend

    figures: dict[str, Any] = {"device": torch.cuda.get_device_name()}
    half = PyTorchBackend.load(onnx["folder"], device="cuda", half=True)
    figures["student_torch_cuda_fp16_ms"] = {size: time_ms(half.infer, inputs[size], args.runs, args.warmup)
                                             for size in map(key, SIZES)}
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if provider in onnxruntime.get_available_providers():
            backend = load_backend(onnx["480x640"], "onnxruntime", providers=[provider, "CPUExecutionProvider"])
            figures[f"student_ort_{provider.removesuffix('ExecutionProvider').lower()}_ms"] = {
                "480x640": time_ms(backend.infer, inputs["480x640"], args.runs, args.warmup)}
    if importlib.util.find_spec("tensorrt") is not None:
        from madm_ros.backends.tensorrt_build import build_engine

        shape = (1, 3, 480, 640)
        engine = onnx["480x640"].with_suffix(".engine")
        build_engine(onnx["480x640"], engine, precision="fp16", min_shape=shape, opt_shape=shape, max_shape=shape)
        backend = load_backend(onnx["480x640"], "tensorrt", engine=engine)
        figures["student_tensorrt_fp16_ms"] = {"480x640": time_ms(backend.infer, inputs["480x640"], args.runs,
                                                                  args.warmup)}
    return figures


if __name__ == "__main__":
    main()
