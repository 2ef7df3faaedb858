"""The two packagings of one code base: a colcon build on ROS 2, and the light pip/venv import."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("package.xml", "CMakeLists.txt", "setup.py", "msg", "madm_ros", "madm_train", "launch", "config", "models")


def cmake_executables() -> list[str]:
    block = re.search(r"set\(MADM_EXECUTABLES(.*?)\)", (REPO / "CMakeLists.txt").read_text(), re.S)
    assert block, "MADM_EXECUTABLES list not found in CMakeLists.txt"
    return re.findall(r'"([^"]+)"', block.group(1))


def setup_py_console_scripts() -> list[str]:
    block = re.search(r'"console_scripts": \[(.*?)\]', (REPO / "setup.py").read_text(), re.S)
    assert block, "console_scripts not found in setup.py"
    return re.findall(r'"([^"]+)"', block.group(1))


def test_importing_the_packages_loads_no_heavy_library():
    code = (
        "import sys, madm_ros, madm_train, madm_ros.palettes, madm_ros.preprocessing, madm_ros.metrics, "
        "madm_ros.errors, madm_ros.events, madm_ros.doctor\n"
        "print(sorted(m for m in ('rclpy', 'torch', 'diffusers', 'tensorrt', 'onnxruntime', 'transformers', 'cv2') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_ros_executables_and_console_scripts_agree():
    assert cmake_executables() == setup_py_console_scripts()
    assert cmake_executables(), "at least one executable is registered"


@pytest.mark.slow
@pytest.mark.ros
def test_colcon_builds_and_installs_the_package(tmp_path):
    if shutil.which("colcon") is None:
        pytest.skip("colcon not installed (scripts/in-env provides it)")
    package = tmp_path / "src" / "madm_ros"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, package / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            package.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, package / name)
    build = subprocess.run(["colcon", "build", "--event-handlers", "console_cohesion-"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    prefix = tmp_path / "install" / "madm_ros"
    share = prefix / "share" / "madm_ros"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert (share / "package.xml").is_file()
    for folder in ("launch", "config", "models"):
        installed = sorted(p.name for p in (share / folder).iterdir())
        assert installed == sorted(p.name for p in (REPO / folder).iterdir() if p.name != "__pycache__")
    assert (share / "msg" / "PackedEvents.msg").is_file() and (share / "msg" / "SegmentationInfo.msg").is_file()
    for module in ("madm_ros/palettes.py", "madm_ros/preprocessing.py", "madm_ros/msg/_packed_events.py",
                   "madm_ros/msg/_segmentation_info.py", "madm_train/__init__.py"):
        assert (site / module).is_file(), module
    for entry in cmake_executables():
        executable = prefix / "lib" / "madm_ros" / entry.split("=")[0]
        assert executable.is_file() and os.access(executable, os.X_OK), executable

    # As a user would: source the workspace, import from it (not from this checkout), run an executable.
    probe = (
        "import madm_ros, madm_ros.msg, madm_train; from madm_ros.msg import PackedEvents; PackedEvents(); "
        "print(madm_ros.__file__); print(madm_ros.msg.__file__); print(madm_train.__file__)"
    )
    script = f"source install/setup.bash && cd / && python -c '{probe}' && install/madm_ros/lib/madm_ros/madm_doctor"
    script = script.replace("install/madm_ros/lib", str(prefix / "lib"))
    used = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert used.returncode == 0, used.stdout + used.stderr
    files = used.stdout.splitlines()[:3]
    assert all(f.startswith(str(site)) for f in files), files
    assert "Environment ready" in used.stdout


def test_the_runtime_never_imports_the_training_package():
    """madm_ros runs exported files; whatever it needs from training travels in the files' metadata."""
    import ast

    offenders = []
    for path in sorted((REPO / "madm_ros").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [node.args[0].value for node in [node] if isinstance(node, ast.Call) and getattr(node.func, "attr", "")
                      == "import_module" and node.args and isinstance(node.args[0], ast.Constant)]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "madm_train"]
    assert offenders == []
