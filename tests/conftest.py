"""Shared fixtures: the real sample data beside the checkout, and a private ROS 2 domain."""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Intel MKL (PyTorch's CPU BLAS) picks kernels by data alignment and, with MKL_DYNAMIC, its thread count by
# machine load, so two identical CPU training runs can differ in the last bits on a busy machine (up to ~2e-5
# after 4 tiny iterations, measured). Its conditional numerical reproducibility mode makes them bit-identical,
# which the resume tests rely on; set here, before anything loads torch (and inherited by subprocesses).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real recordings and labels for tests; never copied into the repository).

    Set ``MADM_SHARED_DATA`` to use another location; tests that need it are skipped where it is absent.
    """
    path = Path(os.environ.get("MADM_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"sample data folder {path} not found (set MADM_SHARED_DATA)")
    return path


def _sample(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def event_bag(shared_data: Path) -> Path:
    """The real EVT3 ROS 2 bag (EventPacket on ``/event_camera/events``, 343,474 CD events)."""
    return _sample(shared_data, "event_camera/ros2_bags/test_events_1")


@pytest.fixture(scope="session")
def evt2_raw(shared_data: Path) -> Path:
    """The real Prophesee Gen3 EVT 2.0 RAW file (640×480)."""
    return _sample(shared_data, "event_camera/files/prophesee_gen3_640x480_evt2.raw")


@pytest.fixture
def ros_domain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """A ROS domain id private to this test, with DDS discovery limited to the loopback.

    The id is derived from the test name and the process id so that parallel runs on one machine
    do not see each other; child processes inherit it through the environment.
    """
    domain = 1 + zlib.crc32(f"{request.node.nodeid}:{os.getpid()}".encode()) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain


@pytest.fixture
def ros(ros_domain: int) -> Iterator[object]:
    """rclpy initialised in the test's private domain, and a probe node for test publishers and collectors."""
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    probe = rclpy.create_node("probe")
    yield probe
    probe.destroy_node()
    rclpy.shutdown()


TINY_MODEL_LABEL_SETS = {"events": "dsec11", "depth": "dsec11", "thermal": "fmb9"}
TINY_MODEL_SIZE = (64, 128)  # (height, width) of the static ONNX input


class _TinyOnnxModels(Mapping[str, Path]):
    """Modality → static ONNX of a tiny random student, exported on first access (about 6 s each)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._paths: dict[str, Path] = {}

    def __getitem__(self, modality: str) -> Path:
        if modality not in TINY_MODEL_LABEL_SETS:
            raise KeyError(modality)
        if modality not in self._paths:
            import torch

            from madm_ros.palettes import get_label_set
            from madm_ros.preprocessing import InputSpec
            from madm_train.deploy.export import ExportOptions, export
            from madm_train.models.student import DDRNetStudent, save_student

            labels = TINY_MODEL_LABEL_SETS[modality]
            torch.manual_seed(0)
            folder = self._root / f"{modality}_student"
            save_student(DDRNetStudent(get_label_set(labels).num_classes, channels=8), folder, label_set=labels,
                         input_spec=InputSpec(modality, *TINY_MODEL_SIZE))
            with open(os.devnull, "w") as quiet:
                report = export(ExportOptions(student=folder, out_dir=self._root / modality, argmax_stride=4, simplify=False),
                                log=quiet)
            self._paths[modality] = Path(report["onnx"]["static"])
        return self._paths[modality]

    def __iter__(self) -> Iterator[str]:
        return iter(TINY_MODEL_LABEL_SETS)

    def __len__(self) -> int:
        return len(TINY_MODEL_LABEL_SETS)


@pytest.fixture(scope="session")
def tiny_onnx_models(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Path]:
    """Modality (``events``, ``depth``, ``thermal``) → a static 64×128 ONNX of a tiny random DDRNet student.

    Made through the project's own save and export code (labels: DSEC-11 for events and depth,
    FMB-9 for thermal), each on first use; skipped where torch, onnx or onnxruntime is missing.
    """
    for module in ("torch", "onnx", "onnxruntime"):
        pytest.importorskip(module)
    return _TinyOnnxModels(tmp_path_factory.mktemp("tiny_onnx_models"))
