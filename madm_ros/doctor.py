"""``python -m madm_ros.doctor``: check that this machine can run madm, and say what is missing.

It checks, in order: the core Python libraries, the ROS 2 client library and middleware (a real
publish/receive of the package's own event message between two nodes over the loopback), the
generated interfaces, and the optional back ends (numba, torch, diffusers, ONNX Runtime,
TensorRT). Each failure names the fix. ``--demo`` (what ``make demo`` runs) goes on to the event
segmentation demo (:mod:`madm_ros.demo`) when every required check passed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Check", "main", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def _version(module_name: str) -> str:
    module = importlib.import_module(module_name)
    return str(getattr(module, "__version__", "installed"))


def _import_check(name: str, module: str, hint: str, *, required: bool) -> Check:
    try:
        return Check(name, True, _version(module), required)
    except Exception as error:
        return Check(name, False, f"{type(error).__name__}: {error} → {hint}", required)


def _ros_roundtrip(timeout_s: float = 10.0) -> str:
    """Publish one PackedEvents message from one node and receive it in another; return a summary."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from madm_ros.msg import PackedEvents

    received: list[PackedEvents] = []
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        talker = rclpy.create_node("madm_doctor_talker", context=context)
        listener = rclpy.create_node("madm_doctor_listener", context=context)
        listener.create_subscription(PackedEvents, "madm_doctor/events", received.append, 10)
        publisher = talker.create_publisher(PackedEvents, "madm_doctor/events", 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(talker)
        executor.add_node(listener)
        message = PackedEvents(width=640, height=480)
        message.x = np.arange(100, dtype=np.uint16)
        message.y = np.arange(100, dtype=np.uint16)
        message.t = np.arange(100, dtype=np.int64)
        message.polarity = np.ones(100, dtype=np.uint8)
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            publisher.publish(message)
            executor.spin_once(timeout_sec=0.1)
        if not received:
            raise RuntimeError(f"no message came back within {timeout_s:.0f} s over the loopback")
        if list(received[0].x) != list(range(100)):
            raise RuntimeError("the received message differs from the one sent")
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    rmw = os.environ.get("RMW_IMPLEMENTATION", "default rmw")
    discovery = os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    return f"{rmw}, discovery {discovery}, domain {os.environ.get('ROS_DOMAIN_ID', '0')}"


def _interfaces() -> str:
    from madm_ros.msg import PackedEvents, SegmentationInfo

    return f"{PackedEvents.__name__}, {SegmentationInfo.__name__}"


def _ros_stages() -> None:
    """Child-process body: print one JSON line per ROS stage as it passes or fails."""
    import json

    stages: list[tuple[str, Callable[[], str]]] = [
        ("rclpy", lambda: _version("rclpy")),
        ("interfaces", _interfaces),
        ("middleware", _ros_roundtrip),
    ]
    for name, function in stages:
        try:
            print(json.dumps([name, True, function()]), flush=True)
        except Exception as error:
            print(json.dumps([name, False, f"{type(error).__name__}: {error}"]), flush=True)
            return


def _ros_checks() -> list[Check]:
    """rclpy, interfaces and middleware, checked in a child process.

    rcl terminates the whole process on some misconfigurations (an unknown RMW_IMPLEMENTATION
    exits with code 102 at import), so the report must not depend on surviving them.
    """
    import json
    import subprocess

    hints = {
        "rclpy": "run through scripts/in-env (it creates .venv) or source your ROS 2 setup.bash",
        "interfaces": "scripts/setup-env generates msg/ (or colcon build on a ROS 2 install)",
        "middleware": "check RMW_IMPLEMENTATION and LD_LIBRARY_PATH (scripts/in-env sets both)",
    }
    code = "from madm_ros.doctor import _ros_stages; _ros_stages()"
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        stdout, stderr, returncode = result.stdout, result.stderr, result.returncode
    except subprocess.TimeoutExpired as expired:  # a hung middleware is a finding, not a crash
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        stderr, returncode = "no answer within 60 s (hung DDS discovery or rcl)", None
    checks = []
    for line in stdout.splitlines():
        try:
            name, ok, detail = json.loads(line)
        except (ValueError, TypeError):
            continue  # a library printed to stdout; only our JSON lines are results
        checks.append(Check(name, ok, detail if ok else f"{detail} → {hints[name]}"))
    if len(checks) < len(hints) and (not checks or checks[-1].ok):
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {returncode}"
        name = list(hints)[len(checks)]
        checks.append(Check(name, False, f"process ended: {reason} → {hints[name]}"))
    return checks


def run_checks() -> list[Check]:
    """Every check, required ones first."""
    python_ok = sys.version_info >= (3, 10)
    checks = [
        Check("python", python_ok, sys.version.split()[0] + ("" if python_ok else " → need Python ≥ 3.10")),
        _import_check("numpy", "numpy", "pip install numpy", required=True),
        _import_check("opencv", "cv2", "pip install opencv-python-headless", required=True),
        _import_check("pyyaml", "yaml", "pip install pyyaml", required=True),
        _import_check("numba", "numba", "pip install numba (event decoding and accumulation kernels)", required=True),
        *_ros_checks(),
    ]
    optional = [
        ("rosbags", "rosbags", "pip install rosbags (bag replay and evaluation)"),
        ("torch", "torch", "pip install torch (training, PyTorch back end)"),
        ("diffusers", "diffusers", "pip install diffusers (MADM teacher)"),
        ("onnxruntime", "onnxruntime", "pip install onnxruntime (CPU inference)"),
        ("tensorrt", "tensorrt", "pip install tensorrt on a machine with an NVIDIA GPU (or use JetPack's)"),
    ]
    checks += [_import_check(n, m, h, required=False) for n, m, h in optional]
    return checks


def main(argv: list[str] | None = None) -> int:
    """Print the report; with ``--demo`` run the demo or name what it still lacks."""
    parser = argparse.ArgumentParser(prog="python -m madm_ros.doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true",
                        help="after the checks, run the event segmentation demo (python -m madm_ros.demo); "
                             "arguments after --demo go to the demo (e.g. --out DIR, --bag BAG)")
    args, demo_args = parser.parse_known_args(argv)
    if demo_args and not args.demo:
        parser.error(f"unrecognized arguments: {' '.join(demo_args)}")

    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for check in checks:
        status = "ok" if check.ok else ("FAIL" if check.required else "missing")
        print(f"{check.name:<{width}}  {status:<7}  {check.detail}")
    failed = [c.name for c in checks if c.required and not c.ok]
    if failed:
        print(f"\nmadm cannot run here: {', '.join(failed)} failed (fixes above).", file=sys.stderr)
        return 1
    print("\nEnvironment ready: ROS 2 middleware, interfaces and core libraries work.")
    if not args.demo:
        return 0
    from madm_ros.demo import main as demo_main

    print()
    return int(demo_main(demo_args))


if __name__ == "__main__":
    sys.exit(main())
